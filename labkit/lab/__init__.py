"""The plumbing around the lesson: runs, checkpoints, devices, command lines and notebooks.

    training.py   train_vqgan / train_mvtm / extract_tokens / load_*: the core's loops with checkpoints
    run.py        what every training loop shares: resume, checkpoints, Ctrl-C, the NaN watch, the log
    checkpoint.py the one checkpoint format (safetensors, atomic writes)
    distributed.py  several GPUs under torchrun
    utils.py      the device and seed helpers, where runs live, atomic writes, fingerprints
    progress.py   progress bars that end as one line of text
    cli.py, command.py  ``python -m labkit ...`` and how a command meets a mistake
    params.py, notebook.py, notebook_runner.py  the notebooks' parameters, setup line and series
    pipeline.py   the main job: data -> stage 1 -> tokens -> stage 2 -> inpainting
"""
