"""Mask schedules, MVTM masking and every rule of iterative decoding, on random models."""

import math

import numpy as np
import pytest
import torch

import labkit.core.maskgit as maskgit_module
from labkit import SCHEDULES, MaskGit, gamma_func, get_config, mvtm_loss
from labkit.data.datasets import split_seed
from labkit.data.holes import make_masks
from labkit.core.masks import pixel_to_token_mask, smooth_fill
from labkit.core.schedules import FORMULAS
from labkit.data.holes import TRAINING_HOLES
from labkit.config import MAX_CHOICE_TEMPERATURE
from labkit.lab.training import build_maskgit

CFG = get_config("smoke", train_mask="random", condition=())   # the course's training masks, no condition


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MaskGit(CFG).eval()


def random_problem(batch=6, seed=0, min_masked=0):
    g = torch.Generator().manual_seed(seed)
    n = CFG.num_image_tokens
    z = torch.randint(0, CFG.num_codebook_vectors, (batch, n), generator=g)
    ratios = torch.rand(batch, 1, generator=g)
    token_mask = torch.rand(batch, n, generator=g) < ratios
    token_mask[:min_masked, : n // 2] = True   # some images with a large hole
    token_mask[-1] = False                     # one image with nothing to fill
    return z, token_mask


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize("mode,r,expected", [
    ("linear", 0.25, 0.75), ("linear", 0.5, 0.5),
    ("cosine", 0.5, math.cos(math.pi / 4)), ("cosine", 1 / 3, math.sqrt(3) / 2),
    ("square", 0.5, 0.75), ("square", 0.25, 0.9375),
    ("cubic", 0.5, 0.875), ("sqrt", 0.25, 0.5),
])
def test_gamma_known_values(mode, r, expected):
    assert gamma_func(mode)(r) == pytest.approx(expected)


@pytest.mark.parametrize("mode", SCHEDULES)
def test_gamma_endpoints_monotone_and_types(mode):
    gamma = gamma_func(mode)
    assert gamma(0.0) == pytest.approx(1.0)
    assert gamma(1.0) == pytest.approx(0.0, abs=1e-12)
    grid = np.linspace(0, 1, 101)
    values = gamma(grid)
    assert isinstance(values, np.ndarray) and np.all(np.diff(values) <= 1e-12)
    tensor_values = gamma(torch.tensor(grid))
    assert isinstance(tensor_values, torch.Tensor)
    np.testing.assert_allclose(tensor_values.numpy(), values, atol=1e-12)
    assert isinstance(gamma(0.3), float)


def test_square_is_not_one_of_the_common_mistakes():
    square = gamma_func("square")
    assert square(0.5) != pytest.approx(1 - 2 * 0.5)         # pitfall: 1 - 2r
    assert square(0.5) != pytest.approx(1 - math.sqrt(0.5))  # pitfall: 1 - sqrt(r)


def test_one_registry_gives_the_names_and_the_formulas():
    assert SCHEDULES == tuple(FORMULAS) and MaskGit.gamma_func(MaskGit(CFG), "square")(0.5) == 0.75
    assert maskgit_module.gamma_func is gamma_func


def test_unknown_schedule_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        gamma_func("cosin")
    for name in SCHEDULES:
        assert name in str(info.value)


# ---------------------------------------------------------------- MVTM training forward
def test_training_mask_counts_follow_gamma_of_a_per_image_ratio(model):
    batch, n = 64, CFG.num_image_tokens
    mask = model.random_token_mask(batch, torch.Generator().manual_seed(5))
    r = torch.rand(batch, generator=torch.Generator().manual_seed(5))   # the same first draw
    expected = torch.ceil(gamma_func(CFG.train_gamma)(r) * n).long().clamp(1, n)
    assert torch.equal(mask.sum(1), expected)
    assert mask.sum(1).min() >= 1
    # per-image ratios, not one 50 % mask for all (pitfall 2), and not inverted (pitfall 1)
    assert mask.sum(1).float().std() > 0.15 * n


def test_hole_training_masks_stay_inside_brush_strokes_like_the_tests():
    cfg = CFG.replace(train_mask="holes")
    holes_model = build_maskgit(cfg)
    mask = holes_model.random_token_mask(256, torch.Generator().manual_seed(1))
    bank = holes_model.training_holes
    assert bank.shape == (TRAINING_HOLES, cfg.num_image_tokens)
    # every masked token lies in one of the bank's holes, and only a share gamma(r) of it
    inside = (mask[:, None, :] & ~bank[None]).sum(-1) == 0        # (B, bank): mask within hole k
    assert inside.any(dim=1).all()
    assert mask.sum(1).min() >= 1
    assert mask.float().mean() < 0.5 * bank.float().mean() + 0.2
    # the training strokes are not the test masks (another random stream), but look like them
    test = pixel_to_token_mask(torch.from_numpy(make_masks(split_seed(cfg.data_seed, "test"), 64,
                                                           cfg.image_size)), cfg.downsample)
    assert not (bank[:, None, :] == test[None]).all(-1).any()
    assert abs(bank.float().mean() - test.float().mean()) < 0.1
    # "mixed": some images are masked outside any hole (random_token_mask's masks)
    mixed = build_maskgit(CFG.replace(train_mask="mixed")).random_token_mask(256, torch.Generator().manual_seed(1))
    outside = ~((mixed[:, None, :] & ~bank[None]).sum(-1) == 0).any(dim=1)
    assert 0.2 < outside.float().mean() < 0.8


def test_forward_tokens_masks_inputs_and_returns_targets(model):
    z, _ = random_problem(4)
    calls = []
    original = model.transformer.forward

    def spy(ids, *args, **kwargs):
        calls.append(ids.clone())
        return original(ids, *args, **kwargs)

    model.transformer.forward = spy
    try:
        logits, targets, mask = model.forward_tokens(z, torch.Generator().manual_seed(0))
    finally:
        del model.transformer.forward
    seen = calls[0]
    assert torch.equal(targets, z)
    assert logits.shape == (4, CFG.num_image_tokens, CFG.num_codebook_vectors)
    assert torch.all(seen[mask] == CFG.mask_token_id)
    assert torch.equal(seen[~mask], z[~mask])


def test_loss_variants():
    logits = torch.zeros(1, 4, 3)
    logits[0, :2, 0] = 10.0                            # confident and right on the first two
    z = torch.zeros(1, 4, dtype=torch.long)
    mask = torch.tensor([[False, False, True, True]])  # ...which are the visible ones
    masked = mvtm_loss(logits, z, mask, "masked")
    full = mvtm_loss(logits, z, mask, "full")
    assert masked.item() == pytest.approx(math.log(3), rel=1e-5)
    assert full.item() < masked.item()                 # visible tokens make "full" look better
    smoothed = mvtm_loss(logits, z, mask, "masked", label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(math.log(3), rel=1e-5)  # uniform logits: no change
    with pytest.raises(ValueError, match="variant='all': expected 'masked'"):
        mvtm_loss(logits, z, mask, "all")


# ---------------------------------------------------------------- decoding rules
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("total_iter", [1, 3, 8, 12])
def test_decoding_rules(model, schedule, total_iter):
    z, token_mask = random_problem(seed=total_iter, min_masked=2)
    gen = torch.Generator().manual_seed(1)
    trace = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma=schedule, total_iter=total_iter, choice_temperature=4.5, sample=True), gen)
    assert trace.predictions.shape == (total_iter, *z.shape)
    assert trace.still_masked.shape == (total_iter, *z.shape)
    gamma = gamma_func(schedule)
    n0 = token_mask.sum(1)
    m_prev = n0.clone()
    previous_mask = token_mask
    previous_prediction = None
    for t in range(1, total_iter + 1):
        prediction, still = trace.predictions[t - 1], trace.still_masked[t - 1]
        # the mask id is never predicted
        assert prediction.max() < CFG.num_codebook_vectors and prediction.min() >= 0
        # known tokens never change
        assert torch.equal(prediction[~token_mask], z[~token_mask])
        # a token once revealed stays (masked set only shrinks, revealed values frozen)
        assert not torch.any(still & ~previous_mask)
        if previous_prediction is not None:
            revealed = ~previous_mask
            assert torch.equal(prediction[revealed], previous_prediction[revealed])
        # exactly m_t = min(floor(gamma(t/T) n0), max(m_{t-1} - 1, 0)) stay masked
        expected = torch.minimum(torch.floor(gamma(t / total_iter) * n0.double()).long(),
                                 (m_prev - 1).clamp(min=0))
        assert torch.equal(still.sum(1), expected)
        m_prev, previous_mask, previous_prediction = expected, still, prediction
    assert not trace.still_masked[-1].any()                   # everything revealed at t = T
    assert torch.equal(trace.masked_counts()[0], n0)


def test_mask_count_is_taken_from_n0_not_the_current_count(model):
    # pitfall 5: with linear and T = 4, n0 = 100 gives 75, 50, 25, 0 (not 75, 56, 42...)
    n = CFG.num_image_tokens
    z = torch.zeros(1, n, dtype=torch.long)
    token_mask = torch.zeros(1, n, dtype=torch.bool)
    token_mask[0, :40] = True
    trace = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="linear", total_iter=4, choice_temperature=0.0))
    assert trace.masked_counts()[:, 0].tolist() == [40, 30, 20, 10, 0]


def test_gumbel_noise_is_scaled_by_temperature_times_one_minus_t_over_T(monkeypatch):
    """Noise that ranks opposite to the model wins early and is annealed away (pitfall 4)."""
    n = CFG.num_image_tokens
    model_preference = torch.linspace(0.0, 1.0, n)         # the model is surer of later positions
    noise_preference = -2 * torch.linspace(0.0, 1.0, n)    # the noise prefers earlier positions

    class FixedModel(torch.nn.Module):
        def forward(self, ids):
            logits = torch.zeros(1, n, CFG.num_codebook_vectors)
            logits[0, :, 0] = 5.0 * model_preference        # log p(argmax) grows with position
            return logits

    monkeypatch.setattr(maskgit_module, "gumbel_noise", lambda shape, g, device: noise_preference.expand(shape))
    model = MaskGit(CFG, transformer=FixedModel())
    token_ids = torch.full((1, n), CFG.mask_token_id)
    still = torch.ones(1, n, dtype=torch.bool)
    log_p = FixedModel()(token_ids).log_softmax(-1)[..., 0]
    total_iter, temperature = 4, 4.5
    masks = {}
    for t in range(1, total_iter + 1):
        _, new_mask, m_t = model.inpainting(token_ids, still, torch.tensor([n]), torch.tensor([n]), t, model.decode_settings(gamma="linear", total_iter=total_iter, choice_temperature=temperature))
        score = log_p + temperature * (1 - t / total_iter) * noise_preference
        expected = torch.zeros(1, n, dtype=torch.bool)
        expected[0, score[0].argsort()[: m_t.item()]] = True   # the least confident stay masked
        assert torch.equal(new_mask, expected), t
        masks[t] = new_mask[0]
    # early on the noise dominates: the earliest positions are revealed first...
    assert not masks[1][: n // 4].any() and masks[1][n // 4:].all()
    # ...late in decoding it has been annealed away and the model's choice wins
    assert masks[3][0] and not masks[3][-1]


def test_temperature_zero_ignores_the_generator_and_noise_changes_the_order(model):
    z, token_mask = random_problem(seed=3, min_masked=3)
    a = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="cosine", total_iter=6, choice_temperature=0.0), torch.Generator().manual_seed(1))
    b = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="cosine", total_iter=6, choice_temperature=0.0), torch.Generator().manual_seed(2))
    assert torch.equal(a.still_masked, b.still_masked) and torch.equal(a.predictions, b.predictions)
    c = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="cosine", total_iter=6, choice_temperature=4.5), torch.Generator().manual_seed(1))
    d = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="cosine", total_iter=6, choice_temperature=4.5), torch.Generator().manual_seed(2))
    assert not torch.equal(c.still_masked, d.still_masked)


@pytest.mark.parametrize("sample", [False, True])
def test_same_seed_same_result(model, sample):
    z, token_mask = random_problem(seed=4, min_masked=3)
    runs = [model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="cosine", total_iter=8, choice_temperature=4.5, sample=sample), torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0].predictions, runs[1].predictions)
    assert torch.equal(runs[0].still_masked, runs[1].still_masked)


def test_batched_equals_one_image_at_a_time_without_noise(model):
    z, token_mask = random_problem(seed=5, min_masked=3)
    batched = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="square", total_iter=6, choice_temperature=0.0))
    for i in range(z.shape[0]):
        single = model.inpaint_tokens(z[i:i + 1], token_mask[i:i + 1], model.decode_settings(gamma="square", total_iter=6, choice_temperature=0.0))
        assert torch.equal(single.predictions[:, 0], batched.predictions[:, i])
        assert torch.equal(single.still_masked[:, 0], batched.still_masked[:, i])


def test_sweet_spot_is_a_prefix_of_the_full_run(model):
    z, token_mask = random_problem(seed=6, min_masked=3)
    full = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="cosine", total_iter=8, choice_temperature=0.0))
    early = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="cosine", total_iter=8, choice_temperature=0.0, sweet_spot=3))
    assert len(early) == 3
    assert torch.equal(early.predictions, full.predictions[:3])


# ---------------------------------------------------------------- pixels
def test_inpaint_pixels_composite_and_shapes(model):
    g = torch.Generator().manual_seed(0)
    size = CFG.image_size
    images = torch.rand(3, 3, size, size, generator=g)
    masks = torch.zeros(3, size, size, dtype=torch.bool)
    masks[:, 4:13, 6:20] = True
    result = model.inpaint(images, masks, model.decode_settings(gamma="cosine", total_iter=4, sweet_spot=2))
    assert result.raw_steps.shape == (2, 3, 3, size, size)
    out = result.images
    keep = ~masks[:, None].expand_as(images)
    assert torch.equal(out[keep], images[keep])                      # known pixels pasted back
    assert torch.equal(out[~keep], result.raw_steps[-1][~keep])
    assert torch.all(result.masked_input[~keep] == 0.5)              # the grey hole
    assert result.raw_steps.min() >= 0 and result.raw_steps.max() <= 1
    # tokens of a patch touching the hole are masked, others are known
    assert result.trace.initial_mask.sum(1).tolist() == [3 * 4] * 3   # rows 1-3, cols 1-4


def test_decoding_only_the_last_step_gives_the_same_final_image(model):
    size = CFG.image_size
    images = torch.rand(5, 3, size, size, generator=torch.Generator().manual_seed(1))
    masks = torch.zeros(5, size, size, dtype=torch.bool)
    masks[:, 8:24, 4:16] = True
    every = model.inpaint(images, masks, model.decode_settings(gamma="cosine", total_iter=4, choice_temperature=0.0))
    last = model.inpaint(images, masks, model.decode_settings(gamma="cosine", total_iter=4, choice_temperature=0.0), decode_every_step=False)
    assert last.raw_steps.shape == (1, 5, 3, size, size)
    torch.testing.assert_close(last.images, every.images)


def test_inpainting_is_one_iteration_of_inpaint_tokens(model):
    z, token_mask = random_problem(seed=8, min_masked=3)
    trace = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="square", total_iter=5, choice_temperature=4.5, sample=True), torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    still = token_mask.clone()
    n0 = still.sum(1)
    m_prev, ids = n0.clone(), z.masked_fill(token_mask, CFG.mask_token_id)
    for t in range(1, 6):
        prediction, still, m_prev = model.inpainting(ids, still, n0, m_prev, t, model.decode_settings(gamma="square", total_iter=5, choice_temperature=4.5, sample=True), generator)
        assert torch.equal(prediction, trace.predictions[t - 1])
        assert torch.equal(still, trace.still_masked[t - 1])
        assert torch.equal(m_prev, still.sum(1))
        ids = prediction.masked_fill(still, CFG.mask_token_id)


# ---------------------------------------------------------------- settings come from the config
def test_decoding_defaults_are_the_configs_and_are_recorded():
    torch.manual_seed(0)
    cfg = CFG.replace(gamma_type="linear", total_iter=5, choice_temperature=2.0, sweet_spot=3)
    model = MaskGit(cfg).eval()
    z, token_mask = random_problem(seed=9, min_masked=3)
    trace = model.inpaint_tokens(z, token_mask, generator=torch.Generator().manual_seed(1))
    assert len(trace) == 3
    assert trace.settings.to_dict() == dict(gamma="linear", total_iter=5, sweet_spot=3,
                                            choice_temperature=2.0, sample=False, fill=0.5, guidance=0.0)
    explicit = model.inpaint_tokens(z, token_mask, model.decode_settings(gamma="linear", total_iter=5, choice_temperature=2.0, sweet_spot=3), torch.Generator().manual_seed(1))
    assert torch.equal(trace.predictions, explicit.predictions)
    # the config's t* belongs to its T: another T runs to its end unless t* is given
    assert model.decode_settings(total_iter=8).sweet_spot == 8
    assert model.decode_settings(total_iter=8, sweet_spot=2).sweet_spot == 2
    assert "linear, T=5, stopped at t*=3" in str(trace.settings)


def test_the_smoke_profiles_total_iter_has_effect(model):
    size = CFG.image_size
    result = model.inpaint(torch.rand(2, 3, size, size), torch.ones(2, size, size, dtype=torch.bool))
    assert CFG.total_iter == 4 and result.raw_steps.shape[0] == 4
    assert result.settings == model.decode_settings()


@pytest.mark.parametrize("kwargs,match", [
    (dict(total_iter=0), r"total_iter=0: expected an integer >= 1"),
    (dict(total_iter=2.5), r"total_iter=2.5: expected an integer >= 1"),
    (dict(total_iter=4, sweet_spot=5), r"sweet_spot=5 is after the last iteration total_iter=4"),
    (dict(total_iter=4, sweet_spot=0), r"sweet_spot=0: expected None or an integer >= 1"),
    (dict(gamma="exp2"), r"gamma='exp2': expected a mask schedule, one of linear, cosine"),
    (dict(gamma=gamma_func("cosine")), r"gamma=<function .*: expected a mask schedule"),
    (dict(choice_temperature=float("nan")), r"choice_temperature=nan: expected a finite number >= 0"),
    (dict(choice_temperature=-1.0), r"choice_temperature=-1.0: expected a finite number >= 0"),
    (dict(choice_temperature=1e300), r"choice_temperature=1e\+300: expected a finite number >= 0 and "
                                     r"at most 1e\+06"),
    (dict(fill=1.5), r"fill=1.5: expected .* in \[0, 1\]"),
    (dict(fill=float("nan")), r"fill=nan"),
    (dict(fill="blur"), r"fill='blur': expected .* or \"smooth\""),
])
def test_bad_decoding_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model.decode_settings(**kwargs)


@pytest.mark.parametrize("sample", [False, True])
def test_the_largest_choice_temperature_still_pins_every_known_token(model, sample):
    z, token_mask = random_problem(seed=4, min_masked=3)
    settings = model.decode_settings(choice_temperature=MAX_CHOICE_TEMPERATURE, sample=sample)
    trace = model.inpaint_tokens(z, token_mask, settings, torch.Generator().manual_seed(0))
    assert torch.equal(trace.predictions[:, ~token_mask], z[~token_mask].expand(len(trace), -1))
    assert (trace.still_masked[-1] == 0).all() and not (trace.still_masked & ~token_mask).any()


@pytest.mark.parametrize("change, error, match", [
    (dict(generator=123), TypeError, r"generator=123: expected a torch.Generator or None"),
    (dict(z_indices=CFG.num_codebook_vectors + 3), ValueError,
     rf"z_indices hold the id {CFG.num_codebook_vectors + 3} at a known position: token ids are the "
     rf"codebook's, 0\.\.{CFG.num_codebook_vectors - 1}"),
    (dict(z_indices=-1), ValueError, r"hold the id -1 at a known position"),
    (dict(token_mask=0.5), ValueError, r"token_mask must be boolean or 0/1 \(1 = unknown\), got values such as 0.5"),
    (dict(z_indices=0.5), TypeError, r"z_indices must be integer token ids, got dtype torch.float32"),
], ids=["generator an int", "id beyond the codebook", "negative id", "fractional mask", "float ids"])
def test_decoding_inputs_of_the_wrong_kind_are_refused(model, change, error, match):
    z, token_mask = random_problem(seed=5)
    generator = change.get("generator", torch.Generator().manual_seed(0))
    if "z_indices" in change:
        z = z.to(torch.float32) if isinstance(change["z_indices"], float) else z
        z[0, ~token_mask[0]] = torch.tensor(change["z_indices"], dtype=z.dtype)
    if "token_mask" in change:
        token_mask = token_mask.float() * change["token_mask"]
    with pytest.raises(error, match=match):
        model.inpaint_tokens(z, token_mask, generator=generator)


def test_ids_under_the_mask_and_a_0_1_mask_are_fine(model):
    z, token_mask = random_problem(seed=6, min_masked=2)
    expected = model.inpaint_tokens(z, token_mask, generator=torch.Generator().manual_seed(0))
    masked_any = z.masked_fill(token_mask, CFG.mask_token_id)              # [MASK] under the mask
    again = model.inpaint_tokens(masked_any, token_mask.int(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(expected.predictions, again.predictions)


def test_a_model_trained_on_holes_needs_its_holes():
    with pytest.raises(ValueError, match="build_maskgit"):
        MaskGit(CFG.replace(train_mask="holes")).random_token_mask(4)


def test_a_smooth_fill_is_what_gets_encoded(model):
    size = CFG.image_size
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[:, 5:12, :] = True
    generator = torch.Generator().manual_seed(0)
    result = model.inpaint(images, masks, model.decode_settings(fill="smooth"), generator)
    filled = smooth_fill(images, masks)
    assert torch.equal(result.masked_input, filled)
    expected = model.inpaint_tokens(model.encode_to_z(filled)[1], pixel_to_token_mask(masks, CFG.downsample),
                                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.trace.predictions, expected.predictions)
    grey = model.inpaint(images, masks, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(grey.masked_input, result.masked_input)
    known = ~masks[:, None].expand_as(images)
    assert torch.equal(result.images[known], images[known])                   # still pasted back


def test_non_finite_pixels_are_refused_naming_the_image(model):
    images = torch.rand(4, 3, 32, 32)
    images[2, 1, 5, 5] = float("nan")
    images[3, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"images \[2, 3\] hold NaN or infinite pixels"):
        model.inpaint(images, torch.zeros(4, 32, 32, dtype=torch.bool))


def test_an_empty_batch_is_refused(model):
    with pytest.raises(ValueError, match="empty batch"):
        model.inpaint(torch.rand(0, 3, 32, 32), torch.zeros(0, 32, 32, dtype=torch.bool))


def test_float64_images_numpy_or_torch_give_the_float32_result(model):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, 8:20, 8:20] = True
    expected = model.inpaint(images, masks, model.decode_settings(choice_temperature=0.0)).images
    for doubles in (images.double(), images.double().numpy()):
        result = model.inpaint(doubles, masks, model.decode_settings(choice_temperature=0.0))
        assert result.images.dtype == torch.float32
        torch.testing.assert_close(result.images, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("images,masks,match", [
    (torch.rand(2, 3, 32, 32), torch.zeros(3, 32, 32, dtype=torch.bool), "3 masks for 2 images"),
    (torch.rand(2, 3, 32, 32), torch.zeros(2, 16, 16, dtype=torch.bool), "same size"),
    (torch.rand(2, 3, 48, 48), torch.zeros(2, 48, 48, dtype=torch.bool), "resize"),
    (torch.rand(2, 1, 32, 32), torch.zeros(2, 32, 32, dtype=torch.bool), "RGB"),
    (torch.rand(2, 3, 32, 32) * 255, torch.zeros(2, 32, 32, dtype=torch.bool), r"\[0, 1\]"),
    (torch.rand(2, 3, 32, 32), torch.full((2, 32, 32), 3), "0/1"),
    (torch.rand(2, 3, 32, 32), torch.full((2, 32, 32), float("nan")), "0/1"),
])
def test_bad_images_and_masks(model, images, masks, match):
    with pytest.raises((ValueError, TypeError), match=match):
        model.inpaint(images, masks)


def test_the_decoding_figure_draws_the_schedule_the_result_was_decoded_with(model):
    from labkit.teaching.plots import plot_decoding_step

    size = CFG.image_size
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[:, 4:20, 4:20] = True
    result = model.inpaint(torch.rand(2, 3, size, size), masks, model.decode_settings(gamma="square", total_iter=6, sweet_spot=4))
    fig = plot_decoding_step(result, 2, index=1)
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert "floor(gamma(t/T) n0), square" in labels
