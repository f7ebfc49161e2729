"""MaskGIT: masked visual token modelling (MVTM) and iterative decoding.

Data flow (shapes for the course sizes)::

    image (B, 3, 64, 64) in [0, 1]
      -- VQGAN encoder + quantiser -->  z_indices (B, 256) in [0, K)        encode_to_z
      -- MVTM (training): mask ceil(gamma(r) * n) tokens per image, r ~ U(0, 1),
         replace them by the [MASK] id K, predict the originals -> logits   forward_tokens
      -- decoding: the hole's tokens set to [MASK]; over T iterations,
         reveal the most confident predictions                             inpainting, inpaint_tokens
      -- VQGAN decoder --> image (B, 3, 64, 64)                             inpaint

The schedules gamma are ``labkit.core.schedules``; how a decoding run is set (schedule, T,
t*, choice temperature, sampling, the hole's fill) is one ``DecodeSettings``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CONDITION_VALUES, LabConfig, check_field, check_sweet_spot
from .checks import check_generator, check_images_and_masks, check_token_grids
from .masks import paste_known, pixel_to_token_mask, smooth_fill
from .schedules import gamma_func
from .transformer import BidirectionalTransformer
from .vqgan import VQGAN


def mvtm_loss(logits: torch.Tensor, z_indices: torch.Tensor, mask: torch.Tensor,
              variant: str = "masked", label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the predicted tokens.

    logits: (B, N, K); z_indices: (B, N); mask: (B, N) bool, True where the input was [MASK].
    ``variant="masked"`` averages over masked positions only (the MaskGIT paper);
    ``variant="full"`` over all positions, where visible tokens are trivially copied.
    """
    check_field("loss", variant, "variant")
    losses = F.cross_entropy(logits.flatten(0, 1).float(), z_indices.flatten(),
                             reduction="none", label_smoothing=label_smoothing).view_as(z_indices)
    if variant == "masked":
        return (losses * mask).sum() / mask.sum().clamp(min=1)
    return losses.mean()


def gumbel_noise(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel noise, drawn from ``generator`` when given (on its device)."""
    if generator is None:
        uniform = torch.rand(shape, device=device)
    else:
        uniform = torch.rand(shape, generator=generator, device=generator.device).to(device)
    uniform = uniform.clamp(1e-20, 1 - 1e-7)
    return -torch.log(-torch.log(uniform))


@dataclass(frozen=True)
class DecodeSettings:
    """How a decoding run is set: schedule gamma, T iterations, stopped after t* = sweet_spot,
    the choice temperature, sampled tokens (else the most likely one), what the hole holds
    when the image is encoded (a grey level, as the course's masked images, or "smooth"), and
    the classifier-free guidance of a conditioned generation (``MaskGit.generate``).
    Made by ``MaskGit.decode_settings``, which checks every value."""
    gamma: str
    total_iter: int
    sweet_spot: int
    choice_temperature: float
    sample: bool = False
    fill: float | str = 0.5
    guidance: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        stop = "" if self.sweet_spot == self.total_iter else f", stopped at t*={self.sweet_spot}"
        fill = "" if self.fill == 0.5 else f", hole filled {self.fill}"
        guided = f", guidance {self.guidance:g}" if self.guidance else ""
        return (f"{self.gamma}, T={self.total_iter}{stop}, choice temperature {self.choice_temperature:g}, "
                f"{'sampled' if self.sample else 'argmax'} tokens{fill}{guided}")


@dataclass
class DecodeTrace:
    """What iterative decoding did, per iteration t = 1..t* (t* = T unless stopped early).

    predictions: (t*, B, N) the full token prediction after iteration t (known tokens included)
    still_masked: (t*, B, N) bool, the tokens still masked after iteration t
    initial_mask: (B, N) bool, the tokens masked before decoding (the hole)
    settings: the decoding settings that produced it
    """
    predictions: torch.Tensor
    still_masked: torch.Tensor
    initial_mask: torch.Tensor
    settings: DecodeSettings

    def __len__(self) -> int:
        return self.predictions.shape[0]

    def masked_counts(self) -> torch.Tensor:
        """(T + 1, B): m_0 = n0, then m_t after each iteration."""
        return torch.cat([self.initial_mask.sum(1)[None], self.still_masked.sum(2)])


@dataclass
class InpaintResult:
    """Pixels of an inpainting run.

    masked_input: (B, 3, H, W) the input as encoded: the hole filled grey (or smoothly)
    pixel_mask: (B, 1, H, W) bool, True = missing; original: (B, 3, H, W) the images given
    raw_steps: (t*, B, 3, H, W) the decoded prediction after each iteration 1..t*
               ((1, B, 3, H, W), the last one only, with ``decode_every_step=False``)
    trace: the token-level ``DecodeTrace``
    composite: whether ``images`` / ``steps`` paste the known pixels back
    """
    masked_input: torch.Tensor
    pixel_mask: torch.Tensor
    raw_steps: torch.Tensor
    trace: DecodeTrace
    original: torch.Tensor
    composite: bool = True

    def steps(self, composite: bool | None = None) -> torch.Tensor:
        composite = self.composite if composite is None else composite
        if not composite:
            return self.raw_steps
        return paste_known(self.raw_steps, self.original, self.pixel_mask)

    @property
    def images(self) -> torch.Tensor:
        """(B, 3, H, W) the result at the last decoded iteration (the sweet spot if given)."""
        return self.steps()[-1]

    @property
    def settings(self) -> DecodeSettings:
        return self.trace.settings


class Guided(nn.Module):
    """The transformer asked for ``condition`` (B, A): token_ids (B, N) -> logits (B, N, K).

    With ``guidance`` w > 0, classifier-free guidance: the conditional and the unconditional
    logits of the same input (``unknown``: every attribute unknown), in one batch, combined as
    cond + w (cond - uncond), which pushes the prediction further towards what the condition
    changes. Made by ``MaskGit.conditioned``.
    """

    def __init__(self, transformer: nn.Module, condition: torch.Tensor, unknown: torch.Tensor,
                 guidance: float = 0.0):
        super().__init__()
        self.transformer, self.guidance = transformer, guidance
        self.condition, self.unknown = condition, unknown

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        if not self.guidance:
            return self.transformer(token_ids, self.condition)
        logits = self.transformer(torch.cat([token_ids, token_ids]), torch.cat([self.condition, self.unknown]))
        cond, uncond = logits.chunk(2)
        return cond + self.guidance * (cond - uncond)


class MaskGit(nn.Module):
    """The course's ``MaskGit``: a VQGAN tokenizer plus a bidirectional transformer.

    training_holes: (n, N) bool token grids, the holes that ``train_mask`` "holes" and "mixed"
    hide tokens in (``labkit.lab.training.build_maskgit`` draws them); None for "random".
    """

    def __init__(self, config: LabConfig, vqgan: VQGAN | None = None,
                 transformer: BidirectionalTransformer | None = None,
                 training_holes: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.vqgan = vqgan if vqgan is not None else VQGAN(config)
        self.transformer = transformer if transformer is not None else BidirectionalTransformer(config)
        self.training_holes = training_holes
        self.num_image_tokens = config.num_image_tokens
        self.num_codebook_vectors = config.num_codebook_vectors
        self.mask_token_id = config.mask_token_id

    @property
    def device(self) -> torch.device:
        return self.vqgan.quantizer.codebook.device

    def gamma_func(self, mode: str | None = None):
        return gamma_func(mode or self.config.gamma_type)

    @torch.no_grad()
    def encode_to_z(self, x: torch.Tensor):
        """x: (B, 3, H, W) in [0, 1] -> z_q (B, C, h, w), z_indices (B, h * w)."""
        # BEGIN SOLUTION TODO2 step1-1
        # HINT: the VQGAN (self.vqgan, see VQGAN.encode) turns x into quantised latents z_q (B, C, h, w)
        # HINT: and a grid of codebook indices (B, h, w); return z_q and one row of h * w token ids per image
        z_q, z_indices, _ = self.vqgan.encode(x)
        return z_q, z_indices.reshape(x.shape[0], -1)
        # END SOLUTION

    # ------------------------------------------------------------------ training (MVTM)
    def training_region(self, batch: int, generator: torch.Generator | None = None):
        """(B, N) bool, where each training grid may hide tokens: None (anywhere: the course's
        ``train_mask="random"``), else a hole drawn from ``training_holes`` per grid ("holes"),
        or the whole grid for a coin flip's half of them ("mixed")."""
        cfg = self.config
        if cfg.train_mask == "random":
            return None
        if self.training_holes is None:
            raise ValueError(f"train_mask={cfg.train_mask!r} hides tokens inside a bank of training "
                             "holes, and this MaskGit holds none: build it with "
                             "labkit.lab.training.build_maskgit(cfg, vqgan) (train_mvtm and load_maskgit "
                             "do), or pass training_holes=..., or use train_mask='random'")
        device = generator.device if generator is not None else self.device
        pick = torch.randint(0, len(self.training_holes), (batch,), generator=generator, device=device)
        region = self.training_holes.to(device)[pick]                          # (B, N)
        if cfg.train_mask == "mixed":
            anywhere = torch.rand(batch, generator=generator, device=device) < 0.5
            region = region | anywhere[:, None]
        return region

    def random_token_mask(self, batch: int, generator: torch.Generator | None = None,
                          gamma: str | None = None) -> torch.Tensor:
        """(B, N) bool: per image, r ~ U(0, 1) and ceil(gamma(r) * n) of its n hideable tokens
        masked at random: all N tokens in the course, the tokens of its ``training_region``
        with the config's ``train_mask`` "holes" or "mixed"."""
        region = self.training_region(batch, generator)
        gamma = self.gamma_func(gamma or self.config.train_gamma)
        device = generator.device if generator is not None else self.device
        n = self.num_image_tokens
        # BEGIN SOLUTION TODO2 step1-3
        # HINT: per image draw r ~ U(0, 1) from generator (on its device); the tokens that may be
        # HINT: hidden are all N, or those of region (B, N) bool when it is not None (n_hideable per image);
        # HINT: mask n_masked = ceil(gamma(r) * n_hideable) of them (at least 1), chosen at random by
        # HINT: ranking random scores (set above 1 outside the region): mask (B, N) bool, True = hidden
        r = torch.rand(batch, generator=generator, device=device)              # one ratio per image
        hideable = n if region is None else region.sum(dim=1)
        n_masked = torch.ceil(gamma(r) * hideable).long().clamp(1, n)          # (B,), at least one
        scores = torch.rand(batch, n, generator=generator, device=device)
        if region is not None:
            scores = scores.masked_fill(~region, 2.0)                          # ranked after the region
        ranks = scores.argsort(dim=1).argsort(dim=1)                           # a random order
        mask = ranks < n_masked[:, None]                                       # mask the first n_masked
        # END SOLUTION
        return mask.to(self.device)

    def forward_tokens(self, z_indices: torch.Tensor, generator: torch.Generator | None = None):
        """MVTM on token grids (the fast path: tokens extracted once).

        z_indices: (B, N) -> logits (B, N, K), z_indices (B, N), mask (B, N) bool.
        """
        # BEGIN SOLUTION TODO2 step1-3
        # HINT: draw the training mask (B, N) with random_token_mask; replace the hidden ids by
        # HINT: the [MASK] id; the transformer predicts logits (B, N, K) at every position
        mask = self.random_token_mask(z_indices.shape[0], generator)
        masked_ids = z_indices.masked_fill(mask, self.mask_token_id)           # hide the chosen tokens
        logits = self.transformer(masked_ids)                                  # predict all N
        # END SOLUTION
        return logits, z_indices, mask

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """The course's training forward: x (B, 3, H, W) -> (logits, z_indices, mask)."""
        _, z_indices = self.encode_to_z(x)
        return self.forward_tokens(z_indices, generator)

    def loss(self, logits, z_indices, mask, variant: str | None = None,
             label_smoothing: float | None = None) -> torch.Tensor:
        return mvtm_loss(logits, z_indices, mask,
                         variant or self.config.loss,
                         self.config.label_smoothing if label_smoothing is None else label_smoothing)

    # ------------------------------------------------------------------ conditioning
    def unknown_condition(self, batch: int) -> torch.Tensor:
        """(B, A) on the model's device: every attribute of ``config.condition`` unknown."""
        sizes = [CONDITION_VALUES[name] for name in self.config.condition]
        return torch.tensor(sizes, dtype=torch.long, device=self.device).expand(batch, -1)

    def conditioned(self, condition: torch.Tensor, guidance: float = 0.0) -> "MaskGit":
        """This MaskGit asked for ``condition`` (B, A) value ids of ``config.condition`` (an
        attribute's number of values: unknown), with classifier-free guidance ``guidance``: the
        same weights, its transformer a ``Guided`` one. Training and ``generate`` use it."""
        if not self.config.condition:
            raise ValueError("this model has no condition (config.condition is empty): train one "
                             "with condition=(...) to ask for attributes, or generate unconditionally")
        condition = torch.as_tensor(condition, device=self.device).long()
        unknown = self.unknown_condition(len(condition))
        if condition.shape != unknown.shape or (condition < 0).any() or (condition > unknown).any():
            raise ValueError(f"condition must be (B, {unknown.shape[1]}) value ids of {self.config.condition}, "
                             f"each at most its number of values {unknown[0].tolist()} (= unknown); "
                             f"got {tuple(condition.shape)}")
        guided = Guided(self.transformer, condition, unknown, guidance)
        return type(self)(self.config, self.vqgan, guided, self.training_holes)

    def training_condition(self, condition: torch.Tensor, generator: torch.Generator | None = None):
        """condition (B, A) -> the same with conditions dropped for training: the whole of it for
        a share ``config.condition_dropout`` of the grids, else each attribute with probability
        ``config.attribute_dropout``, so one model learns to predict with all, some or none."""
        cfg = self.config
        device = generator.device if generator is not None else condition.device
        drop_all = torch.rand(len(condition), generator=generator, device=device) < cfg.condition_dropout
        drop_one = torch.rand(condition.shape, generator=generator, device=device) < cfg.attribute_dropout
        dropped = (drop_all[:, None] | drop_one).to(condition.device)
        return torch.where(dropped, self.unknown_condition(len(condition)).to(condition.device), condition)

    # ------------------------------------------------------------------ decoding
    def decode_settings(self, gamma: str | None = None, total_iter: int | None = None,
                        choice_temperature: float | None = None, sweet_spot: int | None = None,
                        sample: bool = False, fill: float | str = 0.5,
                        guidance: float | None = None) -> DecodeSettings:
        """The settings of a decoding run: each one given, else the config's (``gamma_type``,
        ``total_iter``, ``choice_temperature``, ``sweet_spot``, ``guidance``), checked by the
        config's rules.

        The config's sweet spot belongs to the config's T: with another ``total_iter`` and no
        ``sweet_spot`` the run goes to t* = T. ``fill="smooth"`` encodes the hole filled from its
        edges (``labkit.core.masks.smooth_fill``) instead of grey, so less grey leaks into the
        tokens around it.
        """
        cfg = self.config
        gamma = cfg.gamma_type if gamma is None else gamma
        check_field("gamma_type", gamma, "gamma")
        if total_iter is None:
            total_iter = cfg.total_iter
            if sweet_spot is None:
                sweet_spot = cfg.sweet_spot
        check_field("total_iter", total_iter)
        check_field("sweet_spot", sweet_spot)
        check_sweet_spot(sweet_spot, total_iter)
        choice_temperature = cfg.choice_temperature if choice_temperature is None else choice_temperature
        check_field("choice_temperature", choice_temperature)
        if fill != "smooth" and (isinstance(fill, bool) or not isinstance(fill, Real) or not 0 <= fill <= 1):
            raise ValueError(f"fill={fill!r}: expected the grey level of the hole, a number in [0, 1], "
                             "or \"smooth\"")
        guidance = cfg.guidance if guidance is None else guidance
        check_field("guidance", guidance)
        return DecodeSettings(gamma, int(total_iter), int(sweet_spot or total_iter),
                              float(choice_temperature), bool(sample), fill, float(guidance))

    def inpainting(self, token_ids: torch.Tensor, still_masked: torch.Tensor, n0: torch.Tensor,
                   m_prev: torch.Tensor, t: int, settings: DecodeSettings,
                   generator: torch.Generator | None = None):
        """Iteration t of T = settings.total_iter, for a batch of images at once (the course's method).

        token_ids: (B, N) current ids, [MASK] where still masked; still_masked: (B, N) bool;
        n0, m_prev: (B,) initially / currently masked counts; settings: the schedule
        (settings.gamma), T, the choice temperature and whether tokens are sampled.
        Returns prediction (B, N), new still-masked mask (B, N) and m_t (B,).
        """
        # BEGIN SOLUTION TODO3
        # HINT: log_probs = log_softmax of self.transformer(token_ids): (B, N, K); chosen = argmax
        # HINT: (or argmax of log_probs + Gumbel noise when settings.sample); prediction keeps token_ids
        # HINT: where not still_masked; confidence = log-prob of the chosen token + Gumbel noise scaled by
        # HINT: settings.choice_temperature * (1 - t / T), +inf where not still_masked;
        # HINT: m_t = floor(gamma(t / T) * n0) counted from n0 (never m_prev), at most m_prev - 1;
        # HINT: new mask = the m_t least confident positions: (B, N) bool
        log_probs = self.transformer(token_ids).float().log_softmax(dim=-1)    # (B, N, K), no [MASK]
        if settings.sample:
            noise = gumbel_noise(log_probs.shape, generator, log_probs.device)
            chosen = (log_probs + noise).argmax(dim=-1)                        # a sample per token
        else:
            chosen = log_probs.argmax(dim=-1)
        prediction = torch.where(still_masked, chosen, token_ids)              # known/revealed stay
        confidence = log_probs.gather(-1, chosen[..., None]).squeeze(-1)       # (B, N)
        ratio = t / settings.total_iter
        temperature = settings.choice_temperature * (1 - ratio)                # anneals to 0
        if temperature > 0:
            confidence = confidence + temperature * gumbel_noise(confidence.shape, generator,
                                                                 confidence.device)
        confidence = confidence.masked_fill(~still_masked, math.inf)           # never re-mask those
        # count from n0, never from the current count; reveal at least one per step
        m_t = torch.floor(self.gamma_func(settings.gamma)(ratio) * n0.double()).long()
        m_t = torch.minimum(m_t, (m_prev - 1).clamp(min=0))
        ranks = confidence.argsort(dim=1).argsort(dim=1)                       # 0 = least confident
        new_mask = ranks < m_t[:, None]
        # END SOLUTION
        return prediction, new_mask, m_t

    @torch.no_grad()
    def inpaint_tokens(self, z_indices: torch.Tensor, token_mask: torch.Tensor,
                       settings: DecodeSettings | None = None,
                       generator: torch.Generator | None = None) -> DecodeTrace:
        """Iterative decoding of a batch of token grids: ``inpainting`` for t = 1..t* of T.

        z_indices: (B, N) tokens of the (masked) images; token_mask: (B, N) bool, True = unknown;
        settings: ``decode_settings(...)`` (None: the config's).
        """
        settings = settings or self.decode_settings()
        z_indices, token_mask = check_token_grids(z_indices, token_mask, self.config)
        check_generator(generator)
        device = self.device
        z_indices = z_indices.to(device)
        still_masked = token_mask.to(device)
        n0 = still_masked.sum(dim=1)
        m_prev = n0.clone()
        token_ids = z_indices.masked_fill(still_masked, self.mask_token_id)
        predictions, masks = [], []
        for t in range(1, settings.sweet_spot + 1):
            prediction, still_masked, m_prev = self.inpainting(token_ids, still_masked, n0, m_prev, t,
                                                               settings, generator)
            token_ids = prediction.masked_fill(still_masked, self.mask_token_id)
            predictions.append(prediction)
            masks.append(still_masked)
        return DecodeTrace(torch.stack(predictions), torch.stack(masks), token_mask.to(device).bool(),
                           settings)

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, pixel_masks: torch.Tensor,
                settings: DecodeSettings | None = None, generator: torch.Generator | None = None,
                composite: bool = True, decode_every_step: bool = True) -> InpaintResult:
        """Inpaint a batch of images.

        images: (B, 3, H, W) in [0, 1] (pixels under the hole are ignored); pixel_masks:
        (B, H, W) or (B, 1, H, W), True / 1 = missing; settings: ``decode_settings(...)`` (None:
        the config's). The hole is filled (``settings.fill``), encoded, its tokens set to [MASK]
        and decoded for t* iterations of T; every iteration's prediction is decoded to pixels
        (only the last one with ``decode_every_step=False``). With ``composite`` the known
        pixels are pasted back.
        """
        settings = settings or self.decode_settings()
        images, pixel_masks = check_images_and_masks(images, pixel_masks, self.config.image_size)
        images = images.to(self.device)
        pixel_masks = pixel_masks.to(self.device)
        masked_input = (smooth_fill(images, pixel_masks) if settings.fill == "smooth" else
                        torch.where(pixel_masks, torch.full_like(images, settings.fill), images))
        _, z_indices = self.encode_to_z(masked_input)
        token_mask = pixel_to_token_mask(pixel_masks, self.config.downsample)
        trace = self.inpaint_tokens(z_indices, token_mask, settings, generator)
        predictions = trace.predictions if decode_every_step else trace.predictions[-1:]
        steps, batch = predictions.shape[:2]
        flat = predictions.flatten(0, 1)                                       # (steps B, N)
        decoded = torch.cat([self.vqgan.decode_indices(chunk)
                             for chunk in flat.split(DECODE_BATCH)])           # (steps B, 3, H, W)
        raw_steps = decoded.view(steps, batch, *decoded.shape[1:])
        return InpaintResult(masked_input, pixel_masks, raw_steps, trace, images, composite)


    @torch.no_grad()
    def generate(self, batch: int, settings: DecodeSettings | None = None,
                 generator: torch.Generator | None = None, condition: torch.Tensor | None = None,
                 decode_every_step: bool = True) -> InpaintResult:
        """``batch`` new images from an empty grid: every token [MASK], then the T iterations of
        ``inpainting`` that fill a hole (the whole image is the hole). condition: (B, A) value ids
        to ask for (``conditioned``), with ``settings.guidance``; None: unconditional.
        Returns an ``InpaintResult`` whose hole is the whole image (``images``: (B, 3, H, W))."""
        settings = settings or self.decode_settings()
        if condition is None and settings.guidance:
            raise ValueError(f"guidance={settings.guidance:g} needs a condition to guide towards: pass "
                             "condition=..., or guidance=0 for unconditional samples")
        model = self if condition is None else self.conditioned(condition, settings.guidance)
        n, size = self.num_image_tokens, self.config.image_size
        z_indices = torch.zeros(batch, n, dtype=torch.long, device=self.device)
        trace = model.inpaint_tokens(z_indices, torch.ones_like(z_indices, dtype=torch.bool), settings, generator)
        predictions = trace.predictions if decode_every_step else trace.predictions[-1:]
        decoded = torch.cat([self.vqgan.decode_indices(chunk) for chunk in predictions.flatten(0, 1).split(DECODE_BATCH)])
        grey = torch.full((batch, 3, size, size), 0.5, device=self.device)
        hole = torch.ones(batch, 1, size, size, dtype=torch.bool, device=self.device)
        return InpaintResult(grey, hole, decoded.view(len(predictions), batch, *decoded.shape[1:]), trace, grey)


DECODE_BATCH = 256   # token grids decoded to pixels at a time


__all__ = ["mvtm_loss", "gumbel_noise", "DecodeSettings", "DecodeTrace", "InpaintResult", "Guided",
           "MaskGit", "DECODE_BATCH"]
