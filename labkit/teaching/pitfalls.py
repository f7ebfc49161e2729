"""The course's known pitfalls, each injected into a copy of the function it affects.

Notebook 06 measures every bug against the correct code with the same trained model, the same
test images and masks, and the same seed. The numbers are the course's ("Known pitfalls in
student solutions"), so any notebook can point at "notebook 06, pitfall 5".

Each variant is a subclass that overrides one method, calls the correct method for the rest,
and marks its wrong line with ``# BUG:``; ``labkit.core.maskgit`` itself is never changed. The
variants build on the correct methods through ``super()``, so in the student edition they
inject the bug into the student's own code. Wrap a trained model with ``inject``: the
variant shares its VQGAN and transformer weights.

    buggy = inject(CountFromCurrent, maskgit)
    trace = buggy.inpaint_tokens(z_indices, token_mask, generator=torch.Generator().manual_seed(0))

=========  ==============================================  =========================================
pitfall    variant                                         what is wrong
=========  ==============================================  =========================================
1          ``InvertedTrainingMask``                        training hides N - ceil(gamma(r) N) tokens
2          ``FixedHalfTrainingMask``                       training hides N / 2 tokens, whatever r
3          ``SquareTimesTwo``, ``SquareAsSqrt``            "square" as 1 - 2r, or as 1 - sqrt(r)
4          ``TemperatureGrows``, ``NoiseOnProbabilities``  Gumbel noise scaled by tau t/T, or added
                                                           to the probability, not the log-probability
5          ``CountFromCurrent``                            m_t counted from m_(t-1), not from n0
6          ``KnownNotPinned``                              known tokens replaced by the model's guess
7          ``MaskIdInSoftmax`` (a transformer)             logits over K + 1 ids: [MASK] can be chosen
=========  ==============================================  =========================================

Pitfalls 8 (learning-rate decay), 9 (which tokens the loss counts) and 10 (more iterations are
not always better) need no code here: notebook 06 says where they are measured.
"""

from __future__ import annotations

import copy
import math
import textwrap
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from ..core.maskgit import DecodeSettings, MaskGit
from ..eval.metrics import masked_l1, masked_token_accuracy
from .plots import _to_hwc, mask_overlay
from ..lab.progress import tqdm
from ..core.train import make_optimizer, mvtm_step
from ..core.transformer import BidirectionalTransformer
from ..eval.verdicts import Estimate, finite_pairs, paired_difference

# Fine-tuning steps per arm of the training-mask experiment (pitfalls 1 and 2), per profile:
# a short budget, the same for the correct mask and the buggy ones.
FINE_TUNE_STEPS = {"smoke": 3, "cpu": 40, "gpu": 200}


def inject(variant: type, maskgit: MaskGit, transformer: nn.Module | None = None) -> MaskGit:
    """A ``variant`` (a subclass of MaskGit, or MaskGit itself) around ``maskgit``'s VQGAN and
    transformer (or ``transformer``): the same weights, no copy. In eval mode."""
    return variant(maskgit.config, maskgit.vqgan, transformer or maskgit.transformer,
                   maskgit.training_holes).eval()


# ----------------------------------------------------------------------------- 1, 2: training masks

class InvertedTrainingMask(MaskGit):
    """Pitfall 1: the training mask is inverted: it hides the tokens it should keep."""

    def random_token_mask(self, batch, generator=None, gamma=None):
        return ~super().random_token_mask(batch, generator, gamma)   # BUG: hides N - ceil(gamma(r) N)


class FixedHalfTrainingMask(MaskGit):
    """Pitfall 2: every training grid has half of its tokens masked; r ~ U(0, 1) is drawn and
    ignored. Train with it only: it is ``gamma_func`` that is wrong, so decoding would be too."""

    def gamma_func(self, mode=None):
        return lambda r: r * 0 + 0.5             # BUG: a fixed ratio of 50 %, not gamma(r)


# ----------------------------------------------------------------------------- 3: the square schedule

def square_times_two(r):
    return 1 - r * 2                             # BUG: 1 - 2r (r*2), not 1 - r^2 (r**2)


def square_as_sqrt(r):
    return 1 - r ** 0.5                          # BUG: 1 - sqrt(r), the sqrt schedule, not 1 - r^2


class SquareTimesTwo(MaskGit):
    """Pitfall 3: the schedule named "square" computes ``formula`` (here 1 - 2r)."""

    formula = staticmethod(square_times_two)

    def gamma_func(self, mode=None):
        if (mode or self.config.gamma_type) == "square":
            return self.formula
        return super().gamma_func(mode)


class SquareAsSqrt(SquareTimesTwo):
    """Pitfall 3, the other spelling: "square" computes 1 - sqrt(r)."""

    formula = staticmethod(square_as_sqrt)


# ----------------------------------------------------------------------------- 4: the Gumbel noise

class _Confidences(nn.Module):
    """A transformer stand-in for one iteration: logits whose argmax is that of ``log_probs``
    (B, N, K) and whose log-softmax there is ``score`` (B, N), less one constant when a score
    is above 0 (so the positions rank as ``score`` does): the rest of the mass is spread evenly
    over the other K - 1 tokens. The argmax stays while the shifted score is >= -log K: a
    log-probability of the argmax is, and so is a probability minus 1."""

    def __init__(self, log_probs: torch.Tensor, score: torch.Tensor):
        super().__init__()
        K = log_probs.shape[-1]
        shifted = score - score.max().clamp(min=0)                          # <= 0
        if (shifted < -math.log(K) - 1e-6).any():
            raise ValueError("the scores spread over more than log K: the argmax would change")
        rest = torch.log1p(-shifted.exp()) - math.log(K - 1)                # each other token
        chosen = log_probs.argmax(dim=-1, keepdim=True)
        self.logits = rest[..., None].expand_as(log_probs).scatter(-1, chosen, shifted[..., None])

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.logits


class Reranked(MaskGit):
    """Decoding whose confidence is score(log-probability of the chosen token) +
    temperature(tau, t/T) * Gumbel noise; as it stands, the correct ones.

    It runs the correct iteration (your ``MaskGit.inpainting``) on logits rebuilt so that its
    log-probabilities rank like ``score`` (``_Confidences``), with the choice temperature that
    makes its noise scale tau (1 - t/T) equal to ``temperature``: the two subclasses below
    change one line. Argmax decoding (``sample=False``).
    """

    def score(self, log_prob: torch.Tensor) -> torch.Tensor:
        return log_prob

    def temperature(self, choice_temperature: float, ratio: float) -> float:
        return choice_temperature * (1 - ratio)

    def inpainting(self, token_ids, still_masked, n0, m_prev, t, settings, generator=None):
        log_probs = self.transformer(token_ids).float().log_softmax(dim=-1)      # (B, N, K)
        ratio = t / settings.total_iter
        scale = self.temperature(settings.choice_temperature, ratio)
        # at t = T nothing is left to rank (m_T = 0): no noise needed
        tau = scale / (1 - ratio) if ratio < 1 else 0.0
        score = self.score(log_probs.max(dim=-1).values)
        correct = inject(MaskGit, self, _Confidences(log_probs, score))
        return MaskGit.inpainting(correct, token_ids, still_masked, n0, m_prev, t,
                                  replace(settings, choice_temperature=tau), generator)


class TemperatureGrows(Reranked):
    """Pitfall 4: the noise scale is annealed the wrong way: it grows over the iterations."""

    def temperature(self, choice_temperature, ratio):
        return choice_temperature * ratio        # BUG: tau * t/T grows; it should be tau * (1 - t/T)


class NoiseOnProbabilities(Reranked):
    """Pitfall 4, the other half: the Gumbel noise is added to the probability of the chosen
    token instead of its log-probability."""

    def score(self, log_prob):
        return log_prob.exp()                    # BUG: a probability in [0, 1], not a log-probability


# ----------------------------------------------------------------------------- 5, 6: counts and pinning

class CountFromCurrent(MaskGit):
    """Pitfall 5: m_t is computed from the current count m_(t-1) instead of n0."""

    def inpainting(self, token_ids, still_masked, n0, m_prev, *args, **kwargs):
        return super().inpainting(token_ids, still_masked, m_prev, m_prev,   # BUG: m_prev passed as n0
                                  *args, **kwargs)


class KnownNotPinned(MaskGit):
    """Pitfall 6: the prediction keeps the model's guess at every position, so the known (and
    the already revealed) tokens are overwritten at each iteration. (Argmax decoding.)"""

    def inpainting(self, token_ids, still_masked, *args, **kwargs):
        prediction, new_mask, m_t = super().inpainting(token_ids, still_masked, *args, **kwargs)
        guess = self.transformer(token_ids).argmax(dim=-1)                       # (B, N), everywhere
        return torch.where(still_masked, prediction, guess), new_mask, m_t     # BUG: known not kept


# ----------------------------------------------------------------------------- 7: the mask id

class MaskIdInSoftmax(nn.Module):
    """Pitfall 7: a trained transformer whose output layer spans all K + 1 rows of the token
    embedding, the [MASK] id K included, so decoding can choose [MASK] as a token.

    The lab's transformer ties its logits to the first K rows only (``BidirectionalTransformer``);
    this wraps one with the same weights. token_ids (B, N) -> logits (B, N, K + 1).
    """

    def __init__(self, transformer: BidirectionalTransformer):
        super().__init__()
        self.base = transformer

    def forward(self, token_ids: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        base = self.base
        hidden = base.hidden(token_ids, condition)                                # (B, N, D)
        bias = F.pad(base.bias, (0, 1))                                           # no bias for [MASK]
        return hidden @ base.tok_emb.weight.t() + bias   # BUG: all K + 1 rows, [MASK] included


def with_mask_id_in_softmax(maskgit: MaskGit) -> MaskGit:
    """``maskgit`` decoding over K + 1 ids (pitfall 7), the same weights."""
    return inject(MaskGit, maskgit, MaskIdInSoftmax(maskgit.transformer))


def decode_error(maskgit: MaskGit, token_ids: torch.Tensor) -> str | None:
    """What the VQGAN decoder says about ``token_ids`` (B, N): the error message, or None."""
    try:
        maskgit.vqgan.decode_indices(token_ids.to(maskgit.device))
    except (IndexError, RuntimeError) as error:
        return f"{type(error).__name__}: {error}"
    return None


@torch.no_grad()
def decode_marking_mask_ids(maskgit: MaskGit, token_ids: torch.Tensor,
                            colour=(1.0, 0.0, 1.0)) -> torch.Tensor:
    """Decode ``token_ids`` (B, N) where [MASK] ids (K) are replaced by token 0, then paint their
    patches ``colour`` (magenta): (B, 3, H, W)."""
    is_mask = token_ids == maskgit.mask_token_id
    images = maskgit.vqgan.decode_indices(token_ids.masked_fill(is_mask, 0).to(maskgit.device)).cpu()
    return mask_overlay(images, is_mask.cpu(), maskgit.config.downsample, colour=colour, alpha=1.0)


@torch.no_grad()
def mask_id_probability(transformer: nn.Module, token_ids: torch.Tensor, positions: torch.Tensor,
                        mask_token_id: int) -> torch.Tensor:
    """Probability the K + 1 softmax gives [MASK], at ``positions`` (B, N) bool -> (n,) values."""
    probs = transformer(token_ids).float().softmax(dim=-1)                      # (B, N, K + 1)
    return probs[..., mask_token_id][positions]


# ----------------------------------------------------------------------------- measuring

@dataclass
class Paired:
    """A per-image score of a buggy run against the correct run on the same images.

    mean: mean of (buggy - correct); se: its standard error over the images; n: images.
    ``verdict``: "worse" / "better" when |mean| exceeds the 95 % threshold t(n - 1) * se of
    ``labkit.eval.verdicts`` (``higher_is_worse`` tells which), else "within noise".
    """
    buggy: float
    correct: float
    mean: float
    se: float
    n: int
    higher_is_worse: bool = True

    @property
    def threshold(self) -> float:
        return Estimate(self.mean, self.se, self.n).threshold

    @property
    def verdict(self) -> str:
        if not Estimate(self.mean, self.se, self.n).significant:
            return "within noise"
        return "worse" if (self.mean > 0) == self.higher_is_worse else "better"

    def brief(self, digits: int = 4) -> str:
        """'+0.0123 ± 0.0080, worse': the difference, the 95 % threshold and the verdict."""
        f = f"{{:+.{digits}f}}"
        return f"{f.format(self.mean)} ± {self.threshold:.{digits}f}, {self.verdict}"

    def sentence(self, what: str, digits: int = 4) -> str:
        f = f"{{:.{digits}f}}"
        difference = f"{'+' if self.mean >= 0 else ''}{f.format(self.mean)} ± {f.format(self.threshold)}"
        verdict = ("the difference is within noise: no effect shown on these images"
                   if self.verdict == "within noise" else f"the bug makes it {self.verdict}")
        return (f"{what}: {f.format(self.buggy)} with the bug vs {f.format(self.correct)} correct, "
                f"difference {difference} (95 % threshold, {self.n} images, paired): {verdict}")


def paired(buggy: torch.Tensor, correct: torch.Tensor, higher_is_worse: bool = True) -> Paired:
    """Compare per-image scores (n,) of a buggy and the correct run on the same n images
    (images where either score is not finite are left out)."""
    buggy, correct = finite_pairs(buggy, correct)
    difference = paired_difference(buggy, correct)
    se = difference.se if difference.n > 1 else float("inf")
    return Paired(float(buggy.mean()), float(correct.mean()), difference.value, se, difference.n,
                  higher_is_worse)


@torch.no_grad()
def run_decoding(maskgit: MaskGit, images: torch.Tensor, masks: torch.Tensor, seed: int,
                 settings: DecodeSettings | None = None):
    """Inpaint ``images`` in their ``masks`` with a generator seeded ``seed`` (the same draws for
    every variant), decoding only the last iteration to pixels; ``settings``: the decoding's
    (``maskgit.decode_settings(...)``, None: the config's)."""
    generator = torch.Generator().manual_seed(seed)
    return maskgit.inpaint(images, masks, settings, generator, decode_every_step=False)


def hole_l1(result, images: torch.Tensor, masks: torch.Tensor, composite: bool = True) -> torch.Tensor:
    """(B,) hole L1 of the last decoded iteration of an ``InpaintResult``."""
    return masked_l1(result.steps(composite)[-1].cpu(), images, masks)


def known_l1(result, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) L1 of the raw decoder output against the ground truth outside the hole (the known
    pixels, which the course scored unpasted)."""
    return masked_l1(result.steps(composite=False)[-1].cpu(), images, ~masks.bool())


def known_tokens_changed(trace, z_indices: torch.Tensor) -> torch.Tensor:
    """(t*,) share of the known tokens (outside the hole, all images) whose prediction after
    iteration t differs from the input token ``z_indices`` (B, N). 0 for a correct decoder."""
    known = ~trace.initial_mask.cpu()
    changed = trace.predictions.cpu() != z_indices.cpu()[None]
    return (changed & known).flatten(1).sum(1).double() / known.sum().clamp(min=1)


@torch.no_grad()
def greedy_agreement(maskgit: MaskGit, trace, z_indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far the tokens revealed at each iteration follow the model's noise-free confidence.

    For iteration t and each image: of the k tokens revealed, the share among the k most
    confident still-masked candidates (log-probability of the chosen token under
    ``maskgit``'s transformer, without noise); and k / (candidates), the share a random choice
    of k would get on average. Returns (agreement (t*, B), random (t*, B)); NaN where nothing
    was revealed.
    """
    device = maskgit.device
    before = trace.initial_mask.to(device)
    token_ids = z_indices.to(device).masked_fill(before, maskgit.mask_token_id)
    agreement, chance = [], []
    for t in range(len(trace)):
        prediction, after = trace.predictions[t].to(device), trace.still_masked[t].to(device)
        log_probs = maskgit.transformer(token_ids).float().log_softmax(dim=-1)
        confidence = log_probs.gather(-1, prediction[..., None]).squeeze(-1).masked_fill(~before, -math.inf)
        revealed = before & ~after
        k = revealed.sum(1).double()
        ranks = (-confidence).argsort(dim=1).argsort(dim=1)                    # 0 = most confident
        greedy = (ranks < k[:, None]) & before
        agreement.append((revealed & greedy).sum(1) / k)                       # NaN when k = 0
        chance.append(k / before.sum(1).clamp(min=1))
        token_ids = prediction.masked_fill(after, maskgit.mask_token_id)
        before = after
    return torch.stack(agreement).cpu(), torch.stack(chance).cpu()


def training_mask_shares(maskgit: MaskGit, n_grids: int, seed: int) -> torch.Tensor:
    """(n_grids,) share of the N tokens that ``maskgit.random_token_mask`` hides per grid."""
    generator = torch.Generator().manual_seed(seed)
    return maskgit.random_token_mask(n_grids, generator).float().mean(dim=1).cpu()


def fixed_ratio_masks(n_grids: int, n_tokens: int, ratio: float, seed: int) -> torch.Tensor:
    """(n_grids, n_tokens) bool: exactly round(ratio * n_tokens) (at least 1) random tokens
    masked per grid, the same for every call with the same seed."""
    generator = torch.Generator().manual_seed(seed)
    n_masked = max(1, round(ratio * n_tokens))
    ranks = torch.rand(n_grids, n_tokens, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < n_masked


@torch.no_grad()
def accuracy_by_ratio(maskgit: MaskGit, tokens: torch.Tensor, ratios, seed: int) -> torch.Tensor:
    """(len(ratios), n) masked-token accuracy of ``maskgit`` on each grid of ``tokens`` (n, N)
    with exactly ratio * N tokens masked (the same masks for every model with the same seed)."""
    maskgit.eval()
    tokens = tokens.to(maskgit.device)
    scores = []
    for ratio in ratios:
        mask = fixed_ratio_masks(len(tokens), tokens.shape[1], ratio, seed).to(maskgit.device)
        logits = maskgit.transformer(tokens.masked_fill(mask, maskgit.mask_token_id))
        hits = (logits.argmax(dim=-1) == tokens) & mask
        scores.append(hits.sum(1).double() / mask.sum(1))
    return torch.stack(scores).cpu()


@torch.no_grad()
def loss_by_position(maskgit: MaskGit, tokens: torch.Tensor, ratio: float, seed: int) -> dict:
    """Cross-entropy (no label smoothing) and accuracy of ``maskgit`` on ``tokens`` (n, N) with
    ratio * N tokens masked, split by position: {"masked_loss", "visible_loss", "full_loss",
    "masked_accuracy", "visible_accuracy"}. "full" averages over all N positions."""
    maskgit.eval()
    tokens = tokens.to(maskgit.device)
    mask = fixed_ratio_masks(len(tokens), tokens.shape[1], ratio, seed).to(maskgit.device)
    logits = maskgit.transformer(tokens.masked_fill(mask, maskgit.mask_token_id)).float()
    losses = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view_as(tokens)
    hits = logits.argmax(dim=-1) == tokens
    return {"masked_loss": float(losses[mask].mean()), "visible_loss": float(losses[~mask].mean()),
            "full_loss": float(losses.mean()), "masked_accuracy": float(hits[mask].double().mean()),
            "visible_accuracy": float(hits[~mask].double().mean())}


def fine_tune(maskgit: MaskGit, variant: type, tokens: torch.Tensor, steps: int, seed: int,
              lr: float | None = None, batch_size: int | None = None, progress: bool = True):
    """Train a copy of ``maskgit``'s transformer for ``steps`` MVTM steps with the training
    mask of ``variant`` (MaskGit itself: the correct one); ``maskgit`` is left unchanged.

    Every variant gets the same batches, the same random draws for its masks (the inverted
    mask is the complement of the correct one, step for step) and the same dropout, from
    ``seed``; AdamW at a constant ``lr`` (default: the config's ``mvtm_lr``) and the config's
    batch size. Returns (a correct ``MaskGit`` around the fine-tuned copy, in eval mode;
    history: one dict per step with the loss, the masked-token accuracy and the share of
    tokens masked, as a training log would show them).
    """
    cfg = maskgit.config
    lr = cfg.mvtm_lr if lr is None else lr
    batch_size = batch_size or cfg.mvtm_batch_size
    trainee = inject(variant, maskgit, copy.deepcopy(maskgit.transformer)).train()
    trainee.vqgan.eval()
    optimizer = make_optimizer(trainee.transformer, lr, cfg, trainee.device)
    generator = torch.Generator().manual_seed(seed)                # batches and masks
    torch.manual_seed(seed)                                       # dropout
    tokens = tokens.to(trainee.device)
    history = []
    for step in tqdm(range(steps), desc=f"fine-tune ({variant.__name__})", disable=not progress):
        index = torch.randint(0, len(tokens), (batch_size,), generator=generator)
        loss, logits, z, mask = mvtm_step(trainee, optimizer, tokens[index.to(trainee.device)], generator,
                                          cfg.grad_clip, _check_finite)
        history.append({"step": step + 1, "loss": float(loss.detach()),
                        "accuracy": masked_token_accuracy(logits, z, mask),
                        "masked_share": float(mask.float().mean())})
    return inject(MaskGit, trainee), history


def _check_finite(loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        raise FloatingPointError(f"fine-tuning diverged: loss {float(loss)}, gradient norm {float(grad_norm)}")


# ----------------------------------------------------------------------------- figures

def pitfall_figure(title: str, panels=(), images: dict | None = None, col_titles=None,
                   cell_size: float = 1.15) -> Figure:
    """One pitfall's figure: curve ``panels`` on the left, each (title, {label: (x, y) or
    (x, y, error bar)}, xlabel, ylabel), and ``images`` {row label: (B, 3, H, W)} as a grid on the right (when given)."""
    panels = list(panels)
    n_cols = max((len(row) for row in (images or {}).values()), default=0)
    grid_width = cell_size * n_cols + 1.0 if images else 0
    height = max(3.0, cell_size * len(images or {}) + 0.6)
    fig = Figure(figsize=(4.3 * len(panels) + grid_width, height), layout="constrained")
    widths = [4.3] * len(panels) + ([grid_width] if images else [])
    subfigures = fig.subfigures(1, len(widths), squeeze=False, width_ratios=widths)[0]
    for subfigure, (panel_title, curves, xlabel, ylabel) in zip(subfigures, panels):
        ax = subfigure.subplots()
        for label, (x, y, *error) in curves.items():
            x, y = [float(v) for v in x], [float(v) for v in y]
            style = "o-" if len(x) <= 60 else "-"             # a marker per point only where they can be told apart
            if error:
                ax.errorbar(x, y, yerr=[float(v) for v in error[0]], fmt=style, ms=3.5, capsize=3, label=label)
            else:
                ax.plot(x, y, style, ms=3.5, label=label)
        ax.set(title=panel_title, xlabel=xlabel, ylabel=ylabel)
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if images:
        axes = subfigures[-1].subplots(len(images), n_cols, squeeze=False)
        for r, (label, row) in enumerate(images.items()):
            for c in range(n_cols):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.imshow(_to_hwc(row[c]), interpolation="nearest")
                if c == 0:                                    # wrapped, so long labels don't overlap
                    ax.set_ylabel("\n".join(textwrap.wrap(label, 16)), fontsize=7.5)
                if r == 0 and col_titles is not None:
                    ax.set_title(col_titles[c], fontsize=8)
    fig.suptitle(title)
    return fig


__all__ = ["FINE_TUNE_STEPS", "inject", "InvertedTrainingMask", "FixedHalfTrainingMask",
           "square_times_two", "square_as_sqrt", "SquareTimesTwo", "SquareAsSqrt", "Reranked",
           "TemperatureGrows", "NoiseOnProbabilities", "CountFromCurrent", "KnownNotPinned",
           "MaskIdInSoftmax", "with_mask_id_in_softmax", "decode_error", "decode_marking_mask_ids",
           "mask_id_probability", "Paired", "paired", "run_decoding", "hole_l1", "known_l1", "known_tokens_changed",
           "greedy_agreement", "training_mask_shares", "fixed_ratio_masks", "accuracy_by_ratio",
           "loss_by_position", "fine_tune", "pitfall_figure"]
