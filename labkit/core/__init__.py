"""The lesson: MaskGIT as a student reads it, importing nothing of labkit but itself and the config.

    attention.py    multi-head self-attention, by hand (the course's TODO1) and fused
    transformer.py  the bidirectional transformer: token ids -> logits over the codebook
    vqgan.py        stage 1, the tokenizer: image -> token grid -> image
    schedules.py    the mask schedules gamma(r)
    masks.py        pixel masks, their token grid, the composite, a smooth fill of the hole
    maskgit.py      MaskGit: encode, MVTM masking and loss, one decoding iteration, the decoding loop
    train.py        the learning rate, the optimizer, the training step and loop of both stages
    frechet.py      the Fréchet distance, written out, and its batched form
    checks.py       the checks of the core's inputs (images, masks, token grids)
"""
