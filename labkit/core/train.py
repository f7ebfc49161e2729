"""The training of both stages: the learning rate, the optimizer, one step, the loop.

    vqgan_loop(run, cfg, vqgan, images, batch_rng)                # stage 1: the tokenizer
    mvtm_loop(run, cfg, maskgit, tokens, batch_rng, val_tokens)   # stage 2: the transformer
    mvtm_step(maskgit, optimizer, z, generator, grad_clip, check_finite)   # TODO2 step2

Each loop is a plain ``while`` loop, read top to bottom: learning rate -> batch -> loss ->
backward -> clip -> step -> log. What goes on around it (resume and checkpoints, Ctrl-C, the
NaN watch, the log and the progress bar, several GPUs) is the ``run`` it is handed, a
``labkit.lab.run.TrainingRun``; ``labkit.lab.training.train_vqgan`` / ``train_mvtm`` build it
and call these loops. The run's methods used here: ``more``, ``set_lr``, ``share`` (this
process's rows of the global batch: all of them in one process), ``stream`` (the generator
this process draws its masks from), ``check_finite``, ``count_step``, ``log_due``, ``log``,
``show``, ``end_step``, ``gather`` and ``first_compiled_step``.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from ..config import LabConfig
from .maskgit import MaskGit
from .vqgan import VQGAN, codebook_usage

MIN_LR_RATIO = 0.1


def lr_at(step: int, peak: float, warmup: int, total: int, floor: float = MIN_LR_RATIO,
          hold: float = 0.0) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then a cosine from
    ``peak`` down to ``floor * peak`` at the last step (floor 1: constant after the warmup).
    ``hold`` > 0 keeps the peak for that share of the steps after the warmup first and fits
    the whole cosine into the rest (warmup, plateau, decay)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    after = max(1, total - warmup)
    plateau = hold * after
    if step - warmup < plateau:
        return peak
    progress = (step - warmup - plateau) / max(1.0, after - plateau)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: nn.Module, lr: float, cfg: LabConfig, device: torch.device):
    """AdamW with weight decay on the weights of linear and conv layers only.

    Biases, norm gains and embeddings are not decayed: the token embedding doubles as the
    transformer's output layer, so decaying it would shrink every logit. On CUDA the fused
    kernel updates all parameters in one launch; on the CPU the default keeps runs bit-identical.
    """
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in decayed], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), fused=device.type == "cuda")


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the fast path); a no-op elsewhere, so CPU numbers stay fp32."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def masked_token_hits(logits: torch.Tensor, z_indices: torch.Tensor, mask: torch.Tensor):
    """(hits, count) as 0-d tensors: masked positions whose most likely token is the true one,
    and masked positions. Reading neither back, the loop need not wait for a GPU."""
    hits = ((logits.argmax(dim=-1) == z_indices) & mask).sum()
    return hits, mask.sum()


# ----------------------------------------------------------------------------- stage 1

def vqgan_loop(run, cfg: LabConfig, vqgan: VQGAN, images: torch.Tensor, batch_rng: torch.Generator) -> None:
    """Train the tokenizer on ``images`` (n, 3, S, S) in [0, 1] until the run ends.

    Loss = L1 + MSE of the reconstruction + the commitment term; the codebook itself follows
    an EMA of the encoder outputs assigned to it (``VectorQuantizer``).
    """
    model, optimizer = run.parallel(vqgan), run.optimizer
    part = run.share(cfg.vq_batch_size)
    vqgan.train()
    with run:
        while run.more():
            lr = run.set_lr(lr_at(run.step, cfg.vq_lr, cfg.warmup_steps, run.total))
            # batch: B random images, each mirrored left-right with probability 1/2
            index = torch.randint(0, len(images), (cfg.vq_batch_size,), generator=batch_rng)
            flip = torch.rand(cfg.vq_batch_size, generator=batch_rng) < 0.5
            x = images[index[part]]
            x = torch.where(flip[part, None, None, None], x.flip(-1), x).to(run.device)
            # loss = |x_rec - x| + (x_rec - x)^2 + beta ||z_e - sg(z_q)||^2   (means)
            with autocast(run.device):
                x_rec, indices, commit = model(x)
            x_rec = x_rec.float()
            l1 = (x_rec - x).abs().mean()
            mse = (x_rec - x).pow(2).mean()
            loss = l1 + mse + commit
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(vqgan.parameters(), cfg.grad_clip)
            run.check_finite(loss, grad_norm)
            optimizer.step()
            run.count_step(loss=loss, l1=l1, mse=mse, commit=commit)
            if run.log_due():
                usage = codebook_usage(run.gather(indices), cfg.num_codebook_vectors)
                entry = run.log(lr, used_fraction=usage["used_fraction"], perplexity=usage["perplexity"])
                run.show(loss=f"{entry['loss']:.4f}", codes=f"{usage['used_fraction']:.0%}")
            run.end_step()


# ----------------------------------------------------------------------------- stage 2

def mvtm_step(maskgit: MaskGit, optimizer: torch.optim.Optimizer, z: torch.Tensor,
              generator: torch.Generator | None, grad_clip: float, check_finite) -> tuple:
    """One MVTM training step on the token grids z: (B, N) (the course's stage-2 loop body).

    Masks, predicts and scores with ``maskgit.forward_tokens`` and ``maskgit.loss`` (under
    ``autocast``), back-propagates, clips the gradient norm of the transformer to
    ``grad_clip``, calls ``check_finite(loss, grad_norm)`` (the run's NaN watch) and
    updates the weights. Returns (loss, logits (B, N, K), z (B, N), mask (B, N) bool).
    """
    # BEGIN SOLUTION TODO2 step2
    # HINT: mask and predict with the MVTM forward (under autocast of the model's device):
    # HINT: logits (B, N, K), z (B, N), mask (B, N); loss = the MVTM cross-entropy (maskgit.loss);
    # HINT: clear the old gradients, back-propagate, clip the transformer's gradient norm to
    # HINT: grad_clip, give (loss, grad_norm) to check_finite BEFORE the optimizer's step
    with autocast(maskgit.device):
        logits, z, mask = maskgit.forward_tokens(z, generator)
        loss = maskgit.loss(logits, z, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(maskgit.transformer.parameters(), grad_clip)
    check_finite(loss, grad_norm)
    optimizer.step()
    # END SOLUTION
    return loss, logits, z, mask


def mvtm_loop(run, cfg: LabConfig, maskgit: MaskGit, tokens: torch.Tensor, batch_rng: torch.Generator,
              val_tokens: torch.Tensor | None = None, trainer: MaskGit | None = None,
              conditions: torch.Tensor | None = None) -> None:
    """Train ``maskgit``'s transformer on ``tokens`` (n, N) until the run ends.

    ``trainer`` computes the steps: a MaskGit holding the same transformer compiled or spread
    over several GPUs (default ``maskgit`` itself); ``maskgit`` scores ``val_tokens``.
    conditions: (n, A) the attribute value ids of each grid, for a model with ``cfg.condition``.
    """
    trainer = trainer or maskgit
    part = run.share(cfg.mvtm_batch_size)
    maskgit.train()
    maskgit.vqgan.eval()
    with run:
        while run.more():
            lr = run.set_lr(lr_at(run.step, cfg.mvtm_lr, cfg.warmup_steps, run.total,
                                  cfg.mvtm_lr_floor, cfg.mvtm_lr_hold))
            # batch: B random token grids, drawn on the device where the tokens live
            index = torch.randint(0, len(tokens), (cfg.mvtm_batch_size,), generator=batch_rng,
                                  device=batch_rng.device)
            z = tokens[index[part].to(run.device)]
            stream = run.stream(batch_rng)
            model = trainer                      # asked for the grids' attributes, some dropped
            if conditions is not None:
                condition = conditions[index[part].to(conditions.device)]
                model = trainer.conditioned(maskgit.training_condition(condition, stream))
            # mask ceil(gamma(r) N) tokens, r ~ U(0, 1); loss = CE(logits, z) on the masked
            # tokens (cfg.loss="masked") or on all of them ("full")
            with run.first_compiled_step():      # compiles the graphs, the first time
                loss, logits, z, mask = mvtm_step(model, run.optimizer, z, stream, cfg.grad_clip,
                                                  run.check_finite)
            hits, count = masked_token_hits(logits, z, mask)
            run.count_step(loss=loss.detach(), accuracy=hits.double() / count.double())
            if run.log_due():
                val = evaluate_mvtm(maskgit, val_tokens, cfg) if val_tokens is not None and run.is_main else {}
                entry = run.log(lr, **val)
                run.show(loss=f"{entry['loss']:.3f}", acc=f"{entry['accuracy']:.1%}")
            run.end_step()


@torch.no_grad()
def evaluate_mvtm(maskgit: MaskGit, tokens: torch.Tensor, cfg: LabConfig, batch_size: int = 64) -> dict:
    """MVTM loss and masked-token accuracy on ``tokens`` (n, N), with the same random masks at
    every call (a generator seeded with ``cfg.seed + 1``)."""
    was_training = maskgit.training
    maskgit.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    losses, correct, counted = [], 0.0, 0
    for begin in range(0, len(tokens), batch_size):
        z = tokens[begin:begin + batch_size].to(maskgit.device)
        with autocast(maskgit.device):
            logits, z, mask = maskgit.forward_tokens(z, generator)
        losses.append(float(maskgit.loss(logits, z, mask)) * len(z))
        hits, count = masked_token_hits(logits, z, mask)
        correct += float(hits)
        counted += int(count)
    maskgit.train(was_training)
    return {"val_loss": sum(losses) / len(tokens), "val_accuracy": correct / max(counted, 1)}


__all__ = ["MIN_LR_RATIO", "lr_at", "make_optimizer", "autocast", "masked_token_hits", "vqgan_loop",
           "mvtm_step", "mvtm_loop", "evaluate_mvtm"]
