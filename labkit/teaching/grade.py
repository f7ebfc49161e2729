"""The grader: checks each exercise (``labkit.teaching.exercises``) by CALLING the student's code on
tiny inputs, on the CPU, in seconds. It never reads the source text.

    python -m labkit grade                 # every exercise; exit 1 while one is not done or wrong
    python -m labkit grade gamma_func      # one (or a few) by name
    python -m labkit grade --class submissions/   # a class: one copy per sub-folder, CSV + feedback
    import labkit; labkit.grade("gamma_func")     # in a notebook: prints, raises if not done
    from labkit.teaching.grade import require; require("04")     # a notebook's gate

Each exercise is "done", "not yet" (its stub still raises NotImplementedError, or an exercise
it builds on is not done) or "wrong", with a diagnosis of the likely bug. The checks are
properties and known values (schedule values at known points, masked counts, pinned tokens,
agreement with ``nn.MultiheadAttention`` given the same weights), not a hidden copy of the
solutions, so the grader works the same in the student copy.
"""

from __future__ import annotations

import math
import os
import traceback
from pathlib import Path

import torch
from torch import nn

from .exercises import BY_NAME, EXERCISES, needed_by

DONE, NOT_YET, WRONG = "done", "not yet", "wrong"
# exercises a check calls through: not graded before these are done
NEEDS = {"forward": ("gamma_func",), "train_step": ("gamma_func", "forward"),
         "inpainting": ("gamma_func",)}


class Wrong(Exception):
    """A check's diagnosis."""


def _tiny_config(**overrides):
    """The smoke profile's sizes, with the course's training masks and no condition."""
    from ..config import get_config
    return get_config("smoke", **{"train_mask": "random", "condition": (), **overrides})


# ----------------------------------------------------------------------------- TODO1

def check_attention() -> None:
    from ..core.attention import MultiHeadAttention

    torch.manual_seed(0)
    dim, heads, tokens = 32, 4, 10
    layer = MultiHeadAttention(dim=dim, num_heads=heads, attn_drop=0.0).eval()
    x = torch.randn(2, tokens, dim)
    with torch.no_grad():
        out = layer(x)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, tokens, dim):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise Wrong(f"forward(x) returned {shape} for x of shape (B, N, D) = (2, {tokens}, {dim}); "
                    "expected (B, N, D): merge the heads back and apply out_linear")

    def torch_attention(scale_q: float = 1.0):
        return _torch_attention(layer, x, scale_q)[0]

    d_k = dim // heads
    if torch.allclose(out, torch_attention(), atol=1e-5):
        with torch.no_grad():
            returned = layer(x, return_attention=True)
        weights = returned[1] if isinstance(returned, tuple) and len(returned) == 2 else None
        if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (2, heads, tokens, tokens):
            raise Wrong("the output is right, but forward(x, return_attention=True) must also return the "
                        "attention weights (B, H, N, N): return (out, attention)")
        if not torch.allclose(weights, _torch_attention(layer, x)[1], atol=1e-5):
            raise Wrong("the output is right, but the attention weights returned are not "
                        "softmax(Q K^T / sqrt(d_k)) over the keys: return the weights the softmax gives, "
                        "before dropout")
        _check_attention_dropout(x, heads)
        return
    # scores without 1/sqrt(d_k) are nn.MultiheadAttention's with q scaled by sqrt(d_k)
    if torch.allclose(out, torch_attention(math.sqrt(d_k)), atol=1e-5):
        raise Wrong("the output matches attention WITHOUT the 1/sqrt(d_k) scale: divide the scores "
                    "q k^T by sqrt(d_k) (d_k = head_dim), or the softmax saturates")
    if torch.allclose(out, torch_attention(1 / math.sqrt(d_k)), atol=1e-5):
        raise Wrong("the output matches scores divided by d_k instead of sqrt(d_k)")
    # heads split with a plain view (B, N, D) -> (B, H, N, d_k), without the transpose
    with torch.no_grad():
        q, k, v = (lin(x).reshape(2, heads, tokens, d_k) for lin in (layer.q_linear, layer.k_linear, layer.v_linear))
        context = nn.functional.scaled_dot_product_attention(q, k, v)
        for merged in (context.reshape(2, tokens, dim), context.transpose(1, 2).reshape(2, tokens, dim)):
            if torch.allclose(out, layer.out_linear(merged), atol=1e-5):
                raise Wrong("the heads are split with a plain view (B, N, D) -> (B, H, N, d_k), which "
                            "mixes tokens across heads: view as (B, N, H, d_k), then transpose(1, 2)")
    raise Wrong(f"the output differs from nn.MultiheadAttention with the same weights (largest "
                f"difference {(out - torch_attention()).abs().max():.3g}): check the softmax axis "
                "(the keys, dim=-1), the head split/merge and the output projection")


def _torch_attention(layer, x: torch.Tensor, scale_q: float = 1.0):
    """(output (B, N, D), attention weights (B, H, N, N)) of ``nn.MultiheadAttention`` holding
    ``layer``'s weights (its queries scaled by ``scale_q``), without dropout."""
    reference = nn.MultiheadAttention(layer.dim, layer.num_heads, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([layer.q_linear.weight * scale_q,
                                                  layer.k_linear.weight, layer.v_linear.weight]))
        reference.in_proj_bias.copy_(torch.cat([layer.q_linear.bias * scale_q,
                                                layer.k_linear.bias, layer.v_linear.bias]))
        reference.out_proj.weight.copy_(layer.out_linear.weight)
        reference.out_proj.bias.copy_(layer.out_linear.bias)
        return reference(x, x, x, need_weights=True, average_attn_weights=False)


def _check_attention_dropout(x: torch.Tensor, heads: int) -> None:
    """In training mode dropout acts on the attention weights, after the softmax: the same
    seed gives the same dropout mask as F.dropout on nn.MultiheadAttention's weights."""
    from ..core.attention import MultiHeadAttention

    dim, p = x.shape[-1], 0.5
    layer = MultiHeadAttention(dim=dim, num_heads=heads, attn_drop=p).train()
    with torch.no_grad():
        torch.manual_seed(7)
        out, weights = layer(x, return_attention=True)
        undropped, attention = _torch_attention(layer, x)
        torch.manual_seed(7)
        dropped = nn.functional.dropout(attention, p, training=True)
        want = layer.out_linear(layer.merge_heads(dropped @ layer.split_heads(layer.v_linear(x))))
    if not torch.allclose(weights, attention, atol=1e-5):
        if torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5):
            raise Wrong("in training mode (attn_drop=0.5) the attention weights are a softmax of other "
                        "scores: dropout is applied to the scores BEFORE the softmax; apply self.dropout "
                        "to the attention weights the softmax gives, then multiply them by V")
        raise Wrong("in training mode (attn_drop=0.5) the attention weights returned do not sum to 1 over "
                    "the keys: return the softmax weights, before dropout")
    if torch.allclose(out, undropped, atol=1e-5):
        raise Wrong("in training mode (attn_drop=0.5) no dropout is applied: "
                    "apply self.dropout to the attention weights, then multiply them by V")
    if not torch.allclose(out, want, atol=1e-5):
        raise Wrong("in training mode (attn_drop=0.5) the output is not out_linear(merge(dropout(attention) @ V)): "
                    "apply self.dropout once, to the attention weights after the softmax")


# ----------------------------------------------------------------------------- TODO2 step1-1

def check_encode_to_z() -> None:
    from ..core.maskgit import MaskGit

    cfg = _tiny_config()
    torch.manual_seed(0)
    model = MaskGit(cfg).eval()
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    result = model.encode_to_z(x)
    if not isinstance(result, tuple) or len(result) != 2:
        raise Wrong("encode_to_z must return two things: z_q (B, C, h, w) and z_indices (B, h * w)")
    z_q, z_indices = result
    with torch.no_grad():
        want_q, want_indices, _ = model.vqgan.encode(x)
    n = cfg.num_image_tokens
    if tuple(z_indices.shape) != (2, n):
        hint = (" (B, h, w): flatten the grid to one row per image, reshape(B, -1)"
                if tuple(z_indices.shape) == tuple(want_indices.shape) else "")
        raise Wrong(f"z_indices has shape {tuple(z_indices.shape)}{hint}; expected (B, h * w) = (2, {n})")
    if tuple(z_q.shape) != tuple(want_q.shape):
        raise Wrong(f"z_q has shape {tuple(z_q.shape)}; expected the quantised latents "
                    f"(B, C, h, w) = {tuple(want_q.shape)} from self.vqgan.encode")
    if z_indices.is_floating_point() or not torch.equal(z_indices, want_indices.reshape(2, -1)):
        raise Wrong("z_indices are not the codebook indices of self.vqgan.encode(x), row by row")


# ----------------------------------------------------------------------------- TODO2 step1-2

KNOWN_POINTS = (0.0, 0.25, 0.5, 0.75, 1.0)
KNOWN_VALUES = {          # gamma at KNOWN_POINTS
    "linear": (1.0, 0.75, 0.5, 0.25, 0.0),
    "cosine": (1.0, 0.9238795325, 0.7071067812, 0.3826834324, 0.0),
    "square": (1.0, 0.9375, 0.75, 0.4375, 0.0),
    "cubic": (1.0, 0.984375, 0.875, 0.578125, 0.0),
    "sqrt": (1.0, 0.5, 0.2928932188, 0.1339745962, 0.0),
}


def _close(a, b) -> bool:
    return all(abs(x - y) < 1e-6 for x, y in zip(a, b))


def _check_schedule(name: str) -> str | None:
    from ..core.schedules import gamma_func

    gamma = gamma_func(name)
    values = tuple(float(gamma(r)) for r in KNOWN_POINTS)
    label = f"gamma_{name}"
    if _close(values, KNOWN_VALUES[name]):
        tensor = gamma(torch.tensor(KNOWN_POINTS, dtype=torch.float64))
        if not isinstance(tensor, torch.Tensor) or tensor.shape != (5,):
            return f"{label} of a torch tensor must return a tensor of the same shape (use xp, not math)"
        return None
    shown = ", ".join(f"{r:g}: {v:.4g}" for r, v in zip(KNOWN_POINTS, values))
    if not all(math.isfinite(v) for v in values):
        r, v = next((r, v) for r, v in zip(KNOWN_POINTS, values) if not math.isfinite(v))
        return (f"{label}({r:g}) = {v}: not finite ({shown}); look for a division by zero, a log "
                "of 0 or a square root of a negative number")
    if name == "cosine" and _close(values, [math.cos(math.pi * r) for r in KNOWN_POINTS]):
        return (f"{label} is cos(pi r) ({shown}): it goes below 0 after r = 0.5 and reaches -1; "
                "the cosine schedule is cos(pi r / 2), 1 at r = 0 and 0 at r = 1")
    if name == "square" and abs(values[3] + 0.5) < 1e-6:
        return (f"{label}(0.75) = -0.5: a mask ratio can't be negative; did you write 1 - r*2 "
                "instead of 1 - r**2?")
    for other, known in KNOWN_VALUES.items():
        if other != name and _close(values, known):
            return f"{label} gives the {other} schedule's values ({shown}): which formula is {name}?"
    if any(v < -1e-9 or v > 1 + 1e-9 for v in values):
        r, v = next((r, v) for r, v in zip(KNOWN_POINTS, values) if v < -1e-9 or v > 1 + 1e-9)
        return (f"{label}({r:g}) = {v:.4g} ({shown}): a mask ratio is a share of the tokens, "
                "it must stay in [0, 1] and decrease from 1 to 0")
    if abs(values[0] - 1) > 1e-6:
        return f"{label}(0) = {values[0]:.4g}: at r = 0 everything is masked, gamma(0) must be 1"
    if abs(values[-1]) > 1e-6:
        return f"{label}(1) = {values[-1]:.4g}: at r = 1 nothing is masked, gamma(1) must be 0"
    if any(b > a + 1e-9 for a, b in zip(values, values[1:])):
        return f"{label} must decrease from 1 to 0, got {shown}"
    return f"{label} has the right ends but wrong values in between ({shown})"


def check_gamma_func() -> None:
    from ..core.schedules import SCHEDULES

    problems = [problem for problem in map(_check_schedule, SCHEDULES) if problem]
    if problems:
        raise Wrong("; ".join(problems))


# ----------------------------------------------------------------------------- TODO2 step1-3

class _Spy(nn.Module):
    """A transformer stand-in: remembers its input, returns fixed logits (B, N, K)."""

    def __init__(self, logits_for):
        super().__init__()
        self.logits_for = logits_for
        self.inputs = []
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, token_ids):
        self.inputs.append(token_ids.clone())
        return self.logits_for(token_ids) + self.weight


def check_forward() -> None:
    from ..core.maskgit import MaskGit

    cfg = _tiny_config()
    model = MaskGit(cfg)
    n, draws = cfg.num_image_tokens, 4000
    share = {}
    for gamma in ("cosine", "square"):
        mask = model.random_token_mask(draws, torch.Generator().manual_seed(0), gamma=gamma)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (draws, n) or mask.dtype != torch.bool:
            raise Wrong(f"random_token_mask(B) must return a (B, N) = ({draws}, {n}) bool tensor, got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
        again = model.random_token_mask(draws, torch.Generator().manual_seed(0), gamma=gamma)
        if not torch.equal(mask, again):
            raise Wrong("random_token_mask draws different masks from the same generator: draw every "
                        "random number with generator=generator (training resumes exactly)")
        share[gamma] = mask.float().mean(1)
    cos = share["cosine"]
    # E[ceil(gamma(r) N) / N] for r ~ U(0, 1): 2/pi (cosine), 2/3 (square), plus about 1/(2N)
    if cos.std() < 0.02 and abs(cos.mean() - 0.5) < 0.05:
        raise Wrong("every grid hides about 50 % of its tokens: draw r ~ U(0, 1) per image and "
                    "mask ceil(gamma(r) * N) tokens, not a fixed half")
    if abs(cos.mean() - (1 - 2 / math.pi)) < 0.03:
        raise Wrong(f"the cosine schedule hides {cos.mean():.0%} of the tokens on average instead of "
                    "about 64 %: the mask is inverted, it KEEPS ceil(gamma(r) N) tokens instead of "
                    "masking them")
    if abs(cos.mean() - 2 / math.pi) > 0.03:
        raise Wrong(f"the cosine schedule hides {cos.mean():.0%} of the tokens on average; "
                    "r ~ U(0, 1) through gamma gives about 64 %")
    if abs(share["square"].mean() - 2 / 3) > 0.03:
        raise Wrong("random_token_mask ignores its gamma argument: gamma='square' should hide "
                    f"about 67 % of the tokens, got {share['square'].mean():.0%}")
    if int(torch.stack(list(share.values())).min() * n) < 1:
        raise Wrong("some grids have no masked token: mask at least one (clamp the count to >= 1)")

    # train_mask="holes" (the cpu profile's): the tokens are hidden inside each grid's region only
    holes = torch.zeros(3, n, dtype=torch.bool)
    holes[0, :n // 2], holes[1, n // 4:], holes[2, ::2] = True, True, True
    holed = MaskGit(_tiny_config(train_mask="holes"), training_holes=holes)
    mask = holed.random_token_mask(draws, torch.Generator().manual_seed(3), gamma="cosine")
    region = holed.training_region(draws, torch.Generator().manual_seed(3))
    outside = (mask & ~region).any(1)
    too_many = mask.sum(1) > region.sum(1)
    if (outside & ~too_many).any():
        raise Wrong("with a training region (train_mask='holes', the cpu profile's) tokens outside the "
                    "region were hidden: rank the random scores so the region's tokens come first "
                    "(scores above 1 outside it) and hide only the first n_masked")
    inside = (mask.sum(1).float() / region.sum(1).float()).mean()
    # E[ceil(gamma(r) n) / n] for r ~ U(0, 1), averaged over the three region sizes n
    r = torch.linspace(0, 1, 10001, dtype=torch.float64)[:-1] + 0.5e-4
    expected = torch.stack([torch.ceil(torch.cos(r * math.pi / 2) * size).clamp(min=1) / size
                            for size in holes.sum(1).double()]).mean()
    if too_many.any() or abs(inside - expected) > 0.02:
        raise Wrong(f"with a training region the cosine schedule hides {inside:.0%} of the region's tokens "
                    f"on average instead of about {expected:.0%}: count ceil(gamma(r) * n) from the "
                    "region's n tokens (region.sum(1)), not from all N")

    # forward_tokens: the masked ids go in, the original ids come back as targets
    K = cfg.num_codebook_vectors
    spy = _Spy(lambda ids: torch.zeros(*ids.shape, K))
    model.transformer = spy
    z = torch.randint(0, K, (8, n), generator=torch.Generator().manual_seed(1))
    logits, targets, mask = model.forward_tokens(z.clone(), torch.Generator().manual_seed(2))
    if not spy.inputs:
        raise Wrong("forward_tokens never calls self.transformer")
    seen = spy.inputs[-1]
    if tuple(logits.shape) != (8, n, K):
        raise Wrong(f"logits have shape {tuple(logits.shape)}; expected (B, N, K) = (8, {n}, {K})")
    if not torch.equal(targets, z):
        raise Wrong("forward_tokens must return the ORIGINAL ids as targets, not the masked ones")
    if not mask.any(1).all():
        raise Wrong("some grids came back with no masked token")
    if (seen == cfg.mask_token_id).sum() == 0:
        raise Wrong(f"the transformer never sees the [MASK] id {cfg.mask_token_id}: replace the masked "
                    "tokens with z.masked_fill(mask, self.mask_token_id)")
    if not torch.equal(seen, z.masked_fill(mask, cfg.mask_token_id)):
        raise Wrong("the transformer's input must be z with exactly the returned mask's positions set "
                    "to [MASK] (the mask returned is the one applied)")


# ----------------------------------------------------------------------------- TODO2 step2

def _run_train_step(cfg):
    """One call of the student's mvtm_step on a fresh tiny model whose transformer holds stale
    gradients; returns (result, model, events, stale, before, clip)."""
    from ..core.maskgit import MaskGit
    from ..core.train import mvtm_step

    torch.manual_seed(0)
    model = MaskGit(cfg)
    params = list(model.transformer.parameters())
    noise = torch.Generator().manual_seed(5)
    stale = [100 * torch.randn(p.shape, generator=noise) for p in params]   # "the last step's"
    for p, g in zip(params, stale):
        p.grad = g.clone()
    events = []

    class Optimizer(torch.optim.SGD):
        def step(self, closure=None):
            grads = [p.grad for p in params]
            events.append(("step", None if any(g is None for g in grads)
                           else torch.cat([g.flatten() for g in grads]).clone()))
            return super().step(closure)

    optimizer = Optimizer(params, lr=0.1)
    clip = 1e-3
    z = torch.randint(0, cfg.num_codebook_vectors, (4, cfg.num_image_tokens),
                      generator=torch.Generator().manual_seed(1))
    before = [p.detach().clone() for p in params]
    result = mvtm_step(model, optimizer, z, torch.Generator().manual_seed(2), clip,
                       lambda loss, grad_norm: events.append(("check", float(loss.detach()))))
    return result, model, events, torch.cat([g.flatten() for g in stale]), before, clip


def check_train_step() -> None:
    from ..core.maskgit import mvtm_loss

    # the course's loss, then config.loss="full": the step must follow the config's loss
    for cfg in (_tiny_config(), _tiny_config(loss="full", label_smoothing=0.1)):
        result, model, events, stale, before, clip = _run_train_step(cfg)
        if not isinstance(result, tuple) or len(result) != 4:
            raise Wrong("mvtm_step must return (loss, logits, z, mask)")
        loss, logits, targets, mask = result
        steps = [e for e in events if e[0] == "step"]
        if len(steps) != 1:
            raise Wrong(f"optimizer.step() was called {len(steps)} times; once per training step")
        grads = steps[0][1]
        if grads is None or float(grads.norm()) == 0:
            raise Wrong("no gradients when optimizer.step() runs: zero_grad after loss.backward() wipes "
                        "them; call zero_grad BEFORE backward")
        if float(nn.functional.cosine_similarity(grads, stale, dim=0)) > 0.5:
            raise Wrong("the gradients at optimizer.step() still hold the last step's: clear them "
                        "before loss.backward() (optimizer.zero_grad() or maskgit.zero_grad()), or "
                        "gradients accumulate across steps")
        if float(grads.norm()) > clip * 1.01:
            raise Wrong(f"the gradient norm at optimizer.step() is {float(grads.norm()):.3g} with "
                        f"grad_clip={clip}: clip the transformer's gradient norm to grad_clip with "
                        "nn.utils.clip_grad_norm_ after backward, before step")
        checks = [i for i, e in enumerate(events) if e[0] == "check"]
        if not checks or checks[0] > events.index(steps[0]):
            raise Wrong("call check_finite(loss, grad_norm) before optimizer.step(): a NaN step must "
                        "stop the run before it spoils the weights")
        if all(torch.equal(a, b.detach()) for a, b in zip(before, model.transformer.parameters())):
            raise Wrong("the transformer's weights did not change")
        got = float(loss.detach())
        with torch.no_grad():
            logits, targets = logits.detach().float(), targets
            want = float(model.loss(logits, targets, mask))
            masked_only = {float(mvtm_loss(logits, targets, mask, "masked", smoothing)) for smoothing in (0.0, 0.1)}
        if abs(got - want) > 1e-4:
            if any(abs(got - value) < 1e-4 for value in masked_only):
                raise Wrong(f"the returned loss {got:.4f} is the masked-only cross-entropy written by hand, "
                            f"not maskgit.loss(logits, z, mask) = {want:.4f} with config.loss={cfg.loss!r}, "
                            f"label_smoothing={cfg.label_smoothing}: call maskgit.loss, which follows the config")
            raise Wrong(f"the returned loss {got:.4f} is not maskgit.loss(logits, z, mask) = {want:.4f} "
                        f"(config.loss={cfg.loss!r}, label_smoothing={cfg.label_smoothing}): call maskgit.loss")


# ----------------------------------------------------------------------------- TODO3

def _decoding_model(negative_schedule: bool = False):
    """A MaskGit of the tiny config whose transformer returns fixed logits: for each position n,
    ``top[n]`` on token ``n % K`` and 0 elsewhere, so the chosen token and its confidence are
    known. With ``negative_schedule`` its gamma_func gives 1 - 2r (pitfall 3): m_t < 0 late."""
    from ..core.maskgit import MaskGit

    class NegativeSchedule(MaskGit):
        def gamma_func(self, mode=None):
            return lambda r: 1 - 2 * r

    cfg = _tiny_config()
    model = (NegativeSchedule if negative_schedule else MaskGit)(cfg)
    n, K = cfg.num_image_tokens, cfg.num_codebook_vectors
    top = torch.full((n,), 12.0)

    def logits_for(ids):
        logits = torch.zeros(*ids.shape, K)
        logits[..., torch.arange(n), torch.arange(n) % K] = top
        return logits

    model.transformer = _Spy(logits_for)
    return model, cfg, top


def _settings(gamma: str, total_iter: int, choice_temperature: float, sample: bool = False):
    from ..core.maskgit import DecodeSettings
    return DecodeSettings(gamma, total_iter, total_iter, choice_temperature, sample)


def _holes(n: int, *spans) -> torch.Tensor:
    """(B, N) bool still-masked grids, one per (start, stop) span."""
    still = torch.zeros(len(spans), n, dtype=torch.bool)
    for row, (start, stop) in enumerate(spans):
        still[row, start:stop] = True
    return still


def _iteration(model, known, still, n0, m_prev, t, settings, seed):
    """The student's inpainting on [MASK]ed ``known``; checks that it returned three things and
    left its inputs alone. Returns (prediction, new_mask, m_t as a (B,) long tensor)."""
    ids = known.masked_fill(still, model.mask_token_id)
    inputs = {"token_ids": ids, "still_masked": still, "n0": n0, "m_prev": m_prev}
    copies = {name: value.clone() for name, value in inputs.items()}
    with torch.no_grad():
        out = model.inpainting(ids, still, n0, m_prev, t, settings, torch.Generator().manual_seed(seed))
    changed = [name for name, value in inputs.items() if not torch.equal(value, copies[name])]
    if changed:
        raise Wrong(f"inpainting changed its input {', '.join(changed)} in place (a method ending in _ "
                    "or an assignment into it): the decoding loop keeps the previous masks, so build "
                    "new tensors (torch.where, masked_fill, zeros_like) and return them")
    if not isinstance(out, tuple) or len(out) != 3:
        raise Wrong("inpainting must return (prediction (B, N), new still-masked mask (B, N), m_t (B,))")
    prediction, new_mask, m_t = out
    B, n = known.shape
    if tuple(prediction.shape) != (B, n) or tuple(new_mask.shape) != (B, n):
        raise Wrong(f"prediction and mask must be (B, N) = ({B}, {n}); got {tuple(prediction.shape)}, "
                    f"{tuple(new_mask.shape)}")
    return prediction, new_mask.bool(), torch.as_tensor(m_t).long().reshape(-1).expand(B)


def check_inpainting() -> None:
    model, cfg, top = _decoding_model()
    n, K, mask_id = cfg.num_image_tokens, cfg.num_codebook_vectors, cfg.mask_token_id
    known = torch.randint(0, K, (2, n), generator=torch.Generator().manual_seed(0))
    best = torch.arange(n).expand(2, n) % K                        # the argmax at each position

    # iteration 1 of 8, cosine, n0 = 40 in both images
    still = _holes(n, (10, 50), (10, 50))
    n0 = still.sum(1)
    prediction, new_mask, m_t = _iteration(model, known, still, n0, n0.clone(), 1,
                                           _settings("cosine", 8, 4.5), 1)
    if (prediction[still] == mask_id).all() and torch.equal(prediction[~still], best[~still]):
        raise Wrong("the prediction keeps [MASK] where tokens are missing and the model's guess where they "
                    "are known: the arguments of torch.where are swapped; "
                    "the chosen token goes where still_masked is True, token_ids elsewhere")
    if (prediction == mask_id).any():
        raise Wrong(f"the prediction holds the [MASK] id {mask_id}: the mask id must never "
                    "be predicted (every masked position takes the chosen token, leave the id out of the argmax)")
    if not torch.equal(prediction[~still], known[~still]):
        raise Wrong("known tokens are not pinned: where still_masked is False the prediction must keep "
                    "token_ids (torch.where with still_masked)")
    if not torch.equal(prediction[still], best[still]):
        raise Wrong("with settings.sample False each masked position must take its most likely token (argmax)")
    want = torch.floor(torch.tensor(math.cos(math.pi / 16)) * n0.double()).long()
    if not torch.equal(m_t, want):
        raise Wrong(f"m_1 = {m_t.tolist()}, expected floor(gamma(1/8) n0) = {want.tolist()}")
    leaked = (new_mask & ~still).sum(1)
    if (leaked == (~still).sum(1)).all():
        raise Wrong("the new mask holds every known token (confidence +inf): the positions are ranked "
                    "the wrong way, the MOST confident are masked; sort ascending (0 = least confident) "
                    "and keep the m_t least confident masked")
    if leaked.any():
        raise Wrong("a known (or revealed) token was masked again: give the positions that are not "
                    "still masked confidence +inf before ranking")
    if not torch.equal(new_mask.sum(1), want):
        raise Wrong(f"the new mask hides {new_mask.sum(1).tolist()} tokens, but m_t = {want.tolist()}")

    _check_counts(model, known, n)
    _check_randomness(model, known, n, best, top)


def _check_counts(model, known, n) -> None:
    """m_t = min(floor(gamma(t/T) n0), m_prev - 1), per image, and m_t <= 0 masks nothing."""
    still = _holes(n, (10, 50), (10, 41))                          # n0 = 40 and 31
    n0 = still.sum(1)
    # linear, T = 3, t = 1: gamma = 2/3, 2/3 n0 = 26.7 and 20.7 (not integers)
    _, _, m_t = _iteration(model, known, still, n0, n0.clone(), 1, _settings("linear", 3, 0.0), 1)
    got, floor = m_t.tolist(), [26, 20]
    if got == [39, 30]:
        raise Wrong(f"m_1 = {got} = m_prev - 1 for n0 = {n0.tolist()}, as if gamma were read at 0: the "
                    "schedule is read at (t - 1)/T; iteration t (1..T) reads it at ratio = t/T, "
                    "here gamma(1/3) = 2/3 gives floor(2/3 n0) = [26, 20]")
    if got == [floor[0]] * 2:
        raise Wrong(f"m_1 = {got} for two images with n0 = {n0.tolist()}: every image's count comes from "
                    "the first image's n0 (n0[0]); use the whole (B,) tensor n0, one count per image")
    if got == [27, 21]:
        raise Wrong(f"m_1 = {got}, expected floor(gamma(1/3) n0) = {floor} for n0 = {n0.tolist()} "
                    "(gamma(1/3) n0 = 26.7 and 20.7, linear, T = 3): round down with floor, not ceil or round")
    if got != floor:
        raise Wrong(f"m_1 = {got}, expected floor(gamma(1/3) n0) = {floor} for n0 = {n0.tolist()} "
                    "(linear schedule, T = 3)")
    # linear, T = 4, t = 2: gamma(2/4) n0 = 20 and 15.5, after m_1 = 30 and 23
    m_prev = torch.tensor([30, 23])
    still2 = _holes(n, (10, 40), (10, 33))
    _, mask2, m_t = _iteration(model, known, still2, n0, m_prev, 2, _settings("linear", 4, 0.0), 1)
    got = m_t.tolist()
    if got == [29, 22]:
        raise Wrong(f"m_2 = {got}, expected floor(gamma(2/4) n0) = [20, 15]: the schedule is read at "
                    "(t - 1)/T; iteration t (1..T) reads it at ratio = t/T")
    if got == [math.floor(0.5 * 30), math.floor(0.5 * 23)]:
        raise Wrong(f"m_2 = {got} = floor(gamma(2/4) m_prev): the count is taken from the current count "
                    "instead of n0, so the mask shrinks geometrically; use floor(gamma(t/T) n0)")
    if got != [20, 15] or mask2.sum(1).tolist() != [20, 15]:
        raise Wrong(f"m_2 = {got} masking {mask2.sum(1).tolist()}, expected floor(gamma(2/4) n0) = [20, 15] "
                    "for n0 = [40, 31] (linear schedule, T = 4)")
    # the count from n0 but at most m_prev - 1: iteration 2 of 8 with 35 still masked, n0 = 40
    still3 = _holes(n, (15, 50), (15, 50))
    n40 = torch.tensor([40, 40])
    _, _, m_t = _iteration(model, known, still3, n40, still3.sum(1), 2, _settings("cosine", 8, 4.5), 1)
    got = m_t.tolist()
    if got == [math.floor(math.cos(math.pi / 8) * 35)] * 2:
        raise Wrong(f"m_2 = {got[0]} = floor(gamma(2/8) * 35): the count is taken from the current count "
                    "instead of n0 = 40, so the mask shrinks geometrically; use floor(gamma(t/T) n0)")
    if got != [34, 34]:
        raise Wrong(f"m_2 = {got}, expected min(floor(gamma(2/8) n0), m_prev - 1) = min(36, 34) = 34: "
                    "count from n0 and reveal at least one token per iteration")
    # m_t <= 0: the last iteration (gamma(1) = 0), an image with nothing left (m_prev = 0), and
    # a schedule that goes negative (notebook 06, pitfall 3): nothing masked
    last = _holes(n, (10, 11), (0, 0))
    _, mask4, m_t = _iteration(model, known, last, n40, last.sum(1), 8, _settings("cosine", 8, 4.5), 1)
    if mask4.any():
        raise Wrong(f"with m_t = {m_t.tolist()} (the last iteration, and an image with no token left, "
                    f"m_prev = 0) the new mask hides {mask4.sum(1).tolist()} tokens instead of none: a "
                    "slice order[:m_t] with m_t < 0 keeps all but |m_t| tokens; clamp m_prev - 1 at 0 "
                    "and mask the positions whose rank is < m_t")
    negative, _, _ = _decoding_model(negative_schedule=True)
    still5 = _holes(n, (10, 30), (10, 30))
    _, mask5, m_t = _iteration(negative, known, still5, n40, still5.sum(1), 6, _settings("cosine", 8, 4.5), 1)
    if (m_t < 0).all() and mask5.any():
        raise Wrong(f"with a schedule that goes negative (gamma(6/8) = -0.5, notebook 06's pitfall 3) "
                    f"m_t = {m_t.tolist()} and the new mask hides {mask5.sum(1).tolist()} tokens instead of "
                    "none: a slice order[:m_t] with m_t < 0 keeps all but |m_t|; mask the positions whose "
                    "rank is < m_t (or clamp m_t at 0 first)")


def _check_randomness(model, known, n, best, top) -> None:
    """The Gumbel noise: from the generator, annealed to 0 on the log-probabilities; sampling."""
    still = _holes(n, (10, 50), (10, 50))
    n0 = still.sum(1)
    settings = _settings("cosine", 8, 4.5)
    first = _iteration(model, known, still, n0, n0.clone(), 1, settings, 11)
    torch.manual_seed(123)                                          # the global RNG moves on
    torch.rand(10)
    again = _iteration(model, known, still, n0, n0.clone(), 1, settings, 11)
    if not torch.equal(first[1], again[1]):
        raise Wrong("the same generator gave different masks: draw the Gumbel noise with "
                    "generator=generator (gumbel_noise(shape, generator, device)), not the global RNG")
    if len({tuple(_iteration(model, known, still, n0, n0.clone(), 1, settings, seed)[1].flatten().tolist())
            for seed in range(8)}) == 1:
        raise Wrong("at iteration 1 the choice of the re-masked tokens never changes with the "
                    "generator: add Gumbel noise scaled by choice_temperature * (1 - t/T) to the "
                    "confidences (drawn with the generator)")

    # 20 masked positions; ``low`` of them have log p = -log K (every logit 0), the others log p ~ 0.
    # With the right noise scale, tau (1 - t/T) = 0.25 here, the ranking is all but certain; on
    # probabilities (a gap of 0.97 instead of log K = 3.5) or with tau t/T it is not.
    still = _holes(n, (10, 30), (10, 30))
    n0 = still.sum(1)

    def always_right(low_span, t, tau, expect):
        top[:] = 12.0
        top[low_span[0]:low_span[1]] = 0.0
        try:
            for seed in range(20):
                _, mask, m_t = _iteration(model, known, still, n0, n0.clone(), t, _settings("linear", 8, tau), seed)
                if not torch.equal(mask.sum(1), torch.tensor([expect] * 2)):
                    raise Wrong(f"m_{t} = {m_t.tolist()}, expected floor(gamma({t}/8) * 20) = {expect}")
                low = torch.zeros(n, dtype=torch.bool)
                low[low_span[0]:low_span[1]] = True
                if not torch.equal(mask, still & low.expand_as(still)):
                    return False
            return True
        finally:
            top[:] = 12.0

    late = always_right((10, 12), 7, 2.0, 2)                       # tau (1 - 7/8) = 0.25
    early = always_right((10, 27), 1, 2 / 7, 17)                   # tau (1 - 1/8) = 0.25
    if not late and early:
        raise Wrong("at iteration 7 of 8 the least confident tokens did not always stay masked: the "
                    "Gumbel temperature must anneal to 0, choice_temperature * (1 - t/T), not grow with t")
    if not (late and early):
        raise Wrong("with the noise scale choice_temperature * (1 - t/T) = 0.25 the least confident "
                    "tokens did not always stay masked: the noise must go on the log-probability of the "
                    "chosen token (log_softmax), not on its probability")

    # sampling: the top token has probability 1/2 at every position
    top[:] = math.log(model.num_codebook_vectors - 1)
    try:
        sampled = [_iteration(model, known, still, n0, n0.clone(), 1, _settings("cosine", 8, 4.5, sample=True),
                              seed)[0] for seed in (3, 3)]
    finally:
        top[:] = 12.0
    share = float((sampled[0][still] == best[still]).float().mean())
    if share == 1.0:
        raise Wrong("with settings.sample True every masked position still takes its most likely token: "
                    "sample it, argmax(log_probs + Gumbel noise drawn with the generator)")
    if not torch.equal(sampled[0], sampled[1]):
        raise Wrong("with settings.sample True the same generator gave different tokens: draw the "
                    "sampling noise with generator=generator")
    if not 0.25 < share < 0.75:
        raise Wrong(f"with settings.sample True the most likely token (probability 1/2) was chosen at "
                    f"{share:.0%} of the positions: sample from softmax(logits), "
                    "argmax(log_probs + Gumbel noise)")


CHECKS = {"attention": check_attention, "encode_to_z": check_encode_to_z,
          "gamma_func": check_gamma_func, "forward": check_forward,
          "train_step": check_train_step, "inpainting": check_inpainting}


def _crash_site(error: Exception) -> str:
    """Where ``error`` was raised in the lab's code, as "labkit/core/maskgit.py:362 (`line`)":
    the innermost frame in labkit/core (the student's files), else the innermost frame."""
    frames = traceback.extract_tb(error.__traceback__)
    core = [frame for frame in frames if f"labkit{os.sep}core{os.sep}" in frame.filename]
    frame = (core or frames)[-1]
    path = Path(frame.filename)
    shown = path.as_posix()
    if "labkit" in path.parts:
        shown = Path(*path.parts[len(path.parts) - path.parts[::-1].index("labkit") - 1:]).as_posix()
    return f"{shown}:{frame.lineno}" + (f" (`{frame.line.strip()}`)" if frame.line else "")


def grade_one(name: str, _seen: dict | None = None) -> tuple[str, str]:
    """(status, message) of exercise ``name``: status is "done", "not yet" or "wrong"; the
    message names the file and the function to edit."""
    if name not in CHECKS:
        raise ValueError(f"no exercise named {name!r}; choose one of {', '.join(CHECKS)}")
    for needed in NEEDS.get(name, ()):
        status, _ = grade_one(needed)
        if status != DONE:
            first = BY_NAME[needed]
            return NOT_YET, f"needs {first.todo} ({needed}, in {first.where}) first"
    where = BY_NAME[name].where
    try:
        CHECKS[name]()
    except NotImplementedError as error:
        text = str(error).splitlines()[0] if str(error) else "not written yet"
        return NOT_YET, f"write it in {where}: {text}"
    except Wrong as error:
        return WRONG, f"in {where}: {error}"
    except Exception as error:                       # the student's code crashed: say where
        return WRONG, f"{type(error).__name__} at {_crash_site(error)}: {error} (edit {where})"
    return DONE, ""


class ExerciseMissing(RuntimeError):
    """A notebook needs exercises that are not done yet; shown in a notebook as its message only."""

    def _render_traceback_(self) -> list[str]:
        return [f"ExerciseMissing: {self}"]


def require(notebook: str) -> None:
    """Raise ``ExerciseMissing`` naming the unfinished exercises that ``notebook`` needs from
    earlier notebooks (checked by calling them: ``labkit.grade``); nothing when all are done.
    The notebook's own exercises are checked by the check cell after each exercise cell."""
    missing = []
    for exercise in needed_by(notebook):
        status, message = grade_one(exercise.name)
        if status != "done":
            missing.append(f"  {exercise.todo} ({exercise.name}, {exercise.where}): {status}"
                           + (f" - {message}" if status == "wrong" else ""))
    if missing:
        raise ExerciseMissing(
            f"notebook {notebook} needs these exercises first:\n" + "\n".join(missing)
            + "\nWrite them, check with labkit.grade(\"NAME\") or `python -m labkit grade`, "
              "then run this notebook again.")


class GradeFailed(AssertionError):
    """Some graded exercises are not done; a notebook shows only the report."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


def report(results: dict) -> str:
    lines = []
    for name, (status, message) in results.items():
        exercise = BY_NAME[name]
        lines.append(f"{exercise.todo:<14} {name:<12} {status}" + (f": {message}" if message else ""))
    return "\n".join(lines)


def grade(*names: str, raise_if_not_done: bool = True) -> dict:
    """Grade exercises ``names`` (all when none), print one line each, and return
    {name: (status, message)}; raise ``GradeFailed`` (a short message in a notebook) when one
    is not done, unless ``raise_if_not_done=False``."""
    names = names or tuple(exercise.name for exercise in EXERCISES)
    results = {name: grade_one(name) for name in names}
    text = report(results)
    if raise_if_not_done and any(status != DONE for status, _ in results.values()):
        raise GradeFailed(text)
    print(text)
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m labkit grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"exercises to grade (default all): {', '.join(CHECKS)}")
    parser.add_argument("--class", dest="class_root", metavar="FOLDER",
                        help="grade a class: one student copy per sub-folder of FOLDER, each exercise in "
                             "its own process (labkit.teaching.classroom)")
    parser.add_argument("--out", default=None, help="with --class: where grades.csv and feedback/ go "
                                                    "(default: FOLDER/../grades)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="with --class: seconds per exercise before it counts as wrong (default 120)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="with --class: exercises graded at once (default: the CPU count)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in CHECKS]
    if unknown:
        parser.error(f"unknown exercise {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    if args.class_root is not None:
        from .classroom import DEFAULT_TIMEOUT, grade_class
        if args.timeout is not None and not args.timeout > 0:
            parser.error(f"--timeout {args.timeout:g}: give a number of seconds > 0")
        root = Path(args.class_root)
        try:
            grade_class(root, args.out or root.resolve().parent / "grades", args.names,
                        args.timeout or DEFAULT_TIMEOUT, jobs=args.jobs if args.jobs is not None else os.cpu_count() or 1)
        except ValueError as error:
            parser.error(str(error))
        return 0
    if args.out is not None or args.timeout is not None or args.jobs is not None:
        parser.error("--out, --timeout and --jobs go with --class FOLDER (grading a class)")
    results = grade(*args.names, raise_if_not_done=False)
    return 0 if all(status == DONE for status, _ in results.values()) else 1


__all__ = ["grade", "grade_one", "require", "ExerciseMissing", "main", "CHECKS", "NEEDS", "GradeFailed", "DONE", "NOT_YET", "WRONG"]
