"""The injected pitfalls (labkit.teaching.pitfalls, notebook 06): each buggy copy shows the symptom the
course describes, and the correct code next to it does not."""

import copy
import math

import pytest
import torch
from torch import nn

from labkit import MaskGit, gamma_func, get_config
from labkit.lab.training import build_maskgit
from labkit.teaching import pitfalls

T = 8


@pytest.fixture(scope="module")
def cfg():
    """The course's training masks (random, anywhere) and no condition: the pitfalls as the course has them."""
    return get_config("smoke", train_mask="random", condition=())


@pytest.fixture(scope="module")
def maskgit(cfg):
    torch.manual_seed(0)
    return build_maskgit(cfg).eval()


class FixedLogits(nn.Module):
    """A stand-in transformer: at position i the most likely token is 0, with probability
    ``probs[i]``; the other K - 1 tokens share the rest. token_ids (B, N) -> logits (B, N, K)."""

    def __init__(self, probs: torch.Tensor, num_codes: int):
        super().__init__()
        rest = (1 - probs) / (num_codes - 1)
        self.log_probs = torch.cat([probs[:, None], rest[:, None].expand(-1, num_codes - 1)], 1).log()

    def forward(self, token_ids):
        return self.log_probs.expand(token_ids.shape[0], -1, -1).clone()


def hole_of(cfg, batch=3, start=0, stop=None):
    """z_indices (B, N) and a hole (B, N) bool over positions [start, stop)."""
    generator = torch.Generator().manual_seed(1)
    z = torch.randint(1, cfg.num_codebook_vectors, (batch, cfg.num_image_tokens), generator=generator)
    hole = torch.zeros(batch, cfg.num_image_tokens, dtype=torch.bool)
    hole[:, start:stop] = True
    return z, hole


# ----------------------------------------------------------------------------- 1, 2: training masks

def test_inverted_training_mask_hides_the_tokens_the_correct_one_keeps(maskgit, cfg):
    n = cfg.num_image_tokens
    good = maskgit.random_token_mask(2000, torch.Generator().manual_seed(3))
    bad = pitfalls.inject(pitfalls.InvertedTrainingMask, maskgit).random_token_mask(
        2000, torch.Generator().manual_seed(3))
    assert torch.equal(bad, ~good)                                  # N - n hidden instead of n
    assert torch.equal(bad.sum(1), n - good.sum(1))
    assert bool((good.sum(1) >= 1).all())                           # the correct mask hides at least one
    assert bool((bad.sum(1) == 0).any())                            # the inverted one sometimes hides none
    # through the cosine schedule the correct mask hides more than half on average, the inverted less
    assert good.float().mean() > 0.55 > 0.45 > bad.float().mean()


def test_fixed_half_mask_hides_exactly_half_whatever_r(maskgit, cfg):
    shares = pitfalls.training_mask_shares(pitfalls.inject(pitfalls.FixedHalfTrainingMask, maskgit), 500, 0)
    assert bool((shares == 0.5).all())
    correct = pitfalls.training_mask_shares(maskgit, 500, 0)
    assert len(set(correct.tolist())) > 10                          # the correct share varies with r


def test_fine_tuning_gives_every_mask_the_same_draws_and_leaves_the_model_alone(maskgit, cfg):
    tokens = torch.randint(0, cfg.num_codebook_vectors, (40, cfg.num_image_tokens),
                           generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in maskgit.transformer.state_dict().items()}
    good, good_log = pitfalls.fine_tune(maskgit, MaskGit, tokens, 3, seed=5, batch_size=8, progress=False)
    bad, bad_log = pitfalls.fine_tune(maskgit, pitfalls.InvertedTrainingMask, tokens, 3, seed=5, batch_size=8,
                                      progress=False)
    assert all(torch.equal(before[k], v) for k, v in maskgit.transformer.state_dict().items())
    assert type(good) is MaskGit and type(bad) is MaskGit                  # scored with the correct code
    assert good.transformer is not maskgit.transformer
    assert not torch.equal(good.transformer.bias, bad.transformer.bias)    # the masks made a difference
    # the inverted mask is the complement of the correct one, step for step
    for g, b in zip(good_log, bad_log):
        assert g["masked_share"] + b["masked_share"] == pytest.approx(1.0)
    again, again_log = pitfalls.fine_tune(maskgit, MaskGit, tokens, 3, seed=5, batch_size=8, progress=False)
    assert [e["loss"] for e in again_log] == [e["loss"] for e in good_log]


# ----------------------------------------------------------------------------- 3: the square schedule

def test_wrong_squares_give_negative_or_sqrt_ratios():
    assert gamma_func("square")(0.75) == pytest.approx(0.4375)
    assert pitfalls.square_times_two(0.75) == pytest.approx(-0.5)          # a ratio cannot be negative
    assert pitfalls.square_as_sqrt(0.25) == pytest.approx(gamma_func("sqrt")(0.25)) == pytest.approx(0.5)
    r = torch.linspace(0, 1, 11)
    assert torch.allclose(pitfalls.square_as_sqrt(r), gamma_func("sqrt")(r))


def test_decoding_with_the_wrong_square_reveals_the_hole_by_half_time(maskgit, cfg):
    z, hole = hole_of(cfg)
    counts = {variant: pitfalls.inject(variant, maskgit).inpaint_tokens(z, hole, pitfalls.inject(variant, maskgit).decode_settings(gamma="square", total_iter=T))
              .masked_counts()[:, 0].tolist() for variant in (MaskGit, pitfalls.SquareTimesTwo, pitfalls.SquareAsSqrt)}
    n0 = int(hole[0].sum())
    assert counts[MaskGit][T // 2] == math.floor((1 - 0.25) * n0) > 0
    assert counts[pitfalls.SquareTimesTwo][T // 2:] == [0] * (T // 2 + 1)  # nothing left after t = T/2
    assert counts[pitfalls.SquareTimesTwo][1] == math.floor((1 - 2 / T) * n0)
    assert counts[pitfalls.SquareAsSqrt][1] == math.floor((1 - math.sqrt(1 / T)) * n0) < counts[MaskGit][1]
    # other schedules are left alone
    other = pitfalls.inject(pitfalls.SquareTimesTwo, maskgit).inpaint_tokens(z, hole, pitfalls.inject(pitfalls.SquareTimesTwo, maskgit).decode_settings(gamma="cosine", total_iter=T))
    assert torch.equal(other.masked_counts(), maskgit.inpaint_tokens(z, hole, maskgit.decode_settings(gamma="cosine", total_iter=T)).masked_counts())


# ----------------------------------------------------------------------------- 4: the Gumbel noise

@pytest.fixture()
def confident(maskgit, cfg):
    """A model whose confidence in its choice grows with the position (0.1 .. 0.99)."""
    probs = torch.linspace(0.1, 0.99, cfg.num_image_tokens)
    return FixedLogits(probs, cfg.num_codebook_vectors), probs.log()


def one_iteration(model, cfg, t, total_iter, temperature):
    z, hole = hole_of(cfg, batch=1)
    n0 = hole.sum(1)
    ids = z.masked_fill(hole, cfg.mask_token_id)
    return model.inpainting(ids, hole, n0, n0, t, model.decode_settings(gamma="linear", total_iter=total_iter, choice_temperature=temperature), torch.Generator().manual_seed(0))


def revealed_most_confident(new_mask):
    """True when the revealed positions are the highest ones (the most confident here)."""
    revealed = (~new_mask[0]).nonzero().flatten()
    k = len(revealed)
    return k > 0 and revealed.tolist() == list(range(new_mask.shape[1] - k, new_mask.shape[1]))


def test_reranked_without_a_bug_decodes_like_the_correct_code(maskgit, cfg):
    z, hole = hole_of(cfg, start=10, stop=50)
    plain = maskgit.inpaint_tokens(z, hole, maskgit.decode_settings(total_iter=T, choice_temperature=0))
    again = pitfalls.inject(pitfalls.Reranked, maskgit).inpaint_tokens(z, hole, pitfalls.inject(pitfalls.Reranked, maskgit).decode_settings(total_iter=T, choice_temperature=0))
    assert torch.equal(plain.still_masked, again.still_masked)
    assert torch.equal(plain.predictions, again.predictions)


def test_temperature_that_grows_scrambles_the_last_choices_not_the_first(maskgit, cfg, confident, monkeypatch):
    transformer, log_probs = confident
    # noise that reverses the ranking once its scale passes 1: confidence = (1 - scale) log p
    monkeypatch.setattr("labkit.core.maskgit.gumbel_noise", lambda shape, generator, device: -log_probs.expand(shape))
    good = pitfalls.inject(pitfalls.Reranked, maskgit, transformer)
    bad = pitfalls.inject(pitfalls.TemperatureGrows, maskgit, transformer)
    tau, total = 2.0, 4                       # correct scale 1.5, 1.0, 0.5; growing 0.5, 1.0, 1.5
    assert not revealed_most_confident(one_iteration(good, cfg, 1, total, tau)[1])    # explores early
    assert revealed_most_confident(one_iteration(good, cfg, 3, total, tau)[1])        # follows the model late
    assert revealed_most_confident(one_iteration(bad, cfg, 1, total, tau)[1])
    assert not revealed_most_confident(one_iteration(bad, cfg, 3, total, tau)[1])
    assert [bad.temperature(tau, t / total) for t in (1, 2, 3)] == [0.5, 1.0, 1.5]
    assert [good.temperature(tau, t / total) for t in (1, 2, 3)] == [1.5, 1.0, 0.5]


def test_noise_on_probabilities_breaks_a_ranking_that_log_probabilities_keep(maskgit, cfg, confident, monkeypatch):
    transformer, log_probs = confident
    # noise -0.5 log p: log p - 0.5 log p keeps the order; p - 0.5 log p is not monotone in p
    monkeypatch.setattr("labkit.core.maskgit.gumbel_noise", lambda shape, generator, device: -log_probs.expand(shape))
    good = pitfalls.inject(pitfalls.Reranked, maskgit, transformer)
    bad = pitfalls.inject(pitfalls.NoiseOnProbabilities, maskgit, transformer)
    tau, total, t = 1.0, 2, 1                 # scale tau (1 - t/T) = 0.5
    assert revealed_most_confident(one_iteration(good, cfg, t, total, tau)[1])
    assert not revealed_most_confident(one_iteration(bad, cfg, t, total, tau)[1])
    # without noise, probabilities rank like log-probabilities: the bug needs the noise to show
    assert revealed_most_confident(one_iteration(bad, cfg, t, total, 0.0)[1])


# ----------------------------------------------------------------------------- 5: the count

def expected_counts(n0, schedule, total_iter, from_current):
    counts = [n0]
    for t in range(1, total_iter + 1):
        base = counts[-1] if from_current else n0
        counts.append(min(math.floor(schedule(t / total_iter) * base), max(counts[-1] - 1, 0)))
    return counts


@pytest.mark.parametrize("gamma", ["cosine", "linear"])
def test_counting_from_the_current_count_shrinks_geometrically(maskgit, cfg, gamma):
    z, hole = hole_of(cfg)
    n0 = int(hole[0].sum())
    schedule = gamma_func(gamma)
    good = maskgit.inpaint_tokens(z, hole, maskgit.decode_settings(gamma=gamma, total_iter=T)).masked_counts()[:, 0].tolist()
    bad = pitfalls.inject(pitfalls.CountFromCurrent, maskgit).inpaint_tokens(z, hole, pitfalls.inject(pitfalls.CountFromCurrent, maskgit).decode_settings(gamma=gamma, total_iter=T)).masked_counts()[:, 0].tolist()
    assert good == expected_counts(n0, schedule, T, from_current=False)
    assert bad == expected_counts(n0, schedule, T, from_current=True)
    assert bad != good
    assert all(b <= g for b, g in zip(bad, good)) and bad[T // 2] < good[T // 2]   # reveals too early


# ----------------------------------------------------------------------------- 6: pinning

def test_unpinned_known_tokens_drift_and_pinned_ones_never_do(maskgit, cfg, confident):
    transformer, _ = confident                # always guesses token 0, which z never holds
    z, hole = hole_of(cfg, start=20, stop=40)
    good = pitfalls.inject(MaskGit, maskgit, transformer).inpaint_tokens(z, hole, pitfalls.inject(MaskGit, maskgit, transformer).decode_settings(total_iter=T))
    bad = pitfalls.inject(pitfalls.KnownNotPinned, maskgit, transformer).inpaint_tokens(z, hole, pitfalls.inject(pitfalls.KnownNotPinned, maskgit, transformer).decode_settings(total_iter=T))
    assert torch.equal(pitfalls.known_tokens_changed(good, z), torch.zeros(T, dtype=torch.float64))
    assert bool((pitfalls.known_tokens_changed(bad, z) == 1).all())     # every known token overwritten
    assert torch.equal(bad.masked_counts(), good.masked_counts())        # the counts are not the bug
    # with the real (random) model too: the correct decoder keeps every known token, at every t
    real = maskgit.inpaint_tokens(z, hole, maskgit.decode_settings(total_iter=T))
    assert bool((real.predictions[:, ~hole] == z[~hole]).all())


# ----------------------------------------------------------------------------- 7: the mask id

def test_mask_id_in_the_softmax_can_be_chosen_and_breaks_the_decoder(maskgit, cfg):
    z, hole = hole_of(cfg, start=0, stop=30)
    buggy = pitfalls.with_mask_id_in_softmax(maskgit)
    ids = z.masked_fill(hole, cfg.mask_token_id)
    logits = buggy.transformer(ids)
    assert logits.shape[-1] == cfg.num_codebook_vectors + 1
    assert torch.allclose(logits[..., :-1], maskgit.transformer(ids), atol=1e-5)   # the same weights
    probability = pitfalls.mask_id_probability(buggy.transformer, ids, hole, cfg.mask_token_id)
    assert probability.shape == (int(hole.sum()),) and bool((probability > 0).all())

    # make [MASK] the most likely id: a trained model can put enough mass there to be sampled
    strong = MaskGit(cfg, maskgit.vqgan, pitfalls.MaskIdInSoftmax(_copy_with_bias(maskgit.transformer, -1e4)))
    trace = strong.inpaint_tokens(z, hole, strong.decode_settings(total_iter=4))
    final = trace.predictions[-1]
    assert bool((final[hole] == cfg.mask_token_id).all())
    assert "IndexError" in pitfalls.decode_error(maskgit, final)
    marked = pitfalls.decode_marking_mask_ids(maskgit, final)
    patch = cfg.downsample
    assert torch.allclose(marked[0, :, :patch, :patch], torch.tensor([1.0, 0.0, 1.0])[:, None, None].expand(3, patch, patch))
    # the correct output layer never offers the mask id, whatever the weights
    plain = MaskGit(cfg, maskgit.vqgan, _copy_with_bias(maskgit.transformer, -1e4))
    correct = plain.inpaint_tokens(z, hole, plain.decode_settings(total_iter=4))
    assert bool((correct.predictions < cfg.num_codebook_vectors).all())
    assert pitfalls.decode_error(maskgit, correct.predictions[-1]) is None


def test_the_mask_id_pitfall_wraps_a_conditioned_transformer_too():
    """The cpu profile's transformer has condition tokens in front: the buggy output layer
    keeps the image positions, with the same weights."""
    cfg = get_config("smoke")
    assert cfg.condition
    torch.manual_seed(0)
    model = build_maskgit(cfg).eval()
    ids = torch.randint(0, cfg.num_codebook_vectors, (2, cfg.num_image_tokens))
    logits = pitfalls.with_mask_id_in_softmax(model).transformer(ids)
    assert logits.shape == (2, cfg.num_image_tokens, cfg.num_codebook_vectors + 1)
    assert torch.allclose(logits[..., :-1], model.transformer(ids), atol=1e-5)


def _copy_with_bias(transformer, value):
    clone = copy.deepcopy(transformer)
    with torch.no_grad():
        clone.bias.fill_(value)
    return clone


# ----------------------------------------------------------------------------- measuring

def test_paired_comparison_says_worse_better_or_within_noise():
    correct = torch.linspace(0.1, 0.2, 50)
    noise = torch.sin(torch.arange(50.0))                    # mean about 0, spread about 0.7
    assert pitfalls.paired(correct + 0.05 + 0.001 * noise, correct).verdict == "worse"
    assert pitfalls.paired(correct - 0.05 + 0.001 * noise, correct).verdict == "better"
    assert pitfalls.paired(correct + 0.05 + 0.001 * noise, correct, higher_is_worse=False).verdict == "better"
    result = pitfalls.paired(correct + 0.01 * noise, correct)
    assert result.verdict == "within noise" and abs(result.mean) <= result.threshold
    assert "within noise" in result.sentence("hole L1")
    assert pitfalls.paired(correct + 0.05, correct).sentence("hole L1").endswith("the bug makes it worse")


def test_greedy_agreement_is_one_without_noise_and_chance_is_below_one(maskgit, cfg):
    z, hole = hole_of(cfg, start=5, stop=45)
    trace = maskgit.inpaint_tokens(z, hole, maskgit.decode_settings(total_iter=T, choice_temperature=0))
    agreement, chance = pitfalls.greedy_agreement(maskgit, trace, z)
    assert agreement.shape == chance.shape == (T, len(z))
    assert torch.equal(agreement, torch.ones_like(agreement))
    assert bool((chance[:-1] < 1).all()) and bool((chance[-1] == 1).all())   # at t = T all are revealed
    noisy = maskgit.inpaint_tokens(z, hole, maskgit.decode_settings(total_iter=T, choice_temperature=50), torch.Generator().manual_seed(0))
    assert pitfalls.greedy_agreement(maskgit, noisy, z)[0][:-1].mean() < 0.9


def test_fixed_ratio_masks_hide_exactly_that_share_and_repeat():
    masks = pitfalls.fixed_ratio_masks(20, 64, 0.3, seed=4)
    assert bool((masks.sum(1) == round(0.3 * 64)).all())
    assert torch.equal(masks, pitfalls.fixed_ratio_masks(20, 64, 0.3, seed=4))
    assert not torch.equal(masks, pitfalls.fixed_ratio_masks(20, 64, 0.3, seed=5))


def test_loss_by_position_splits_masked_and_visible(maskgit, cfg, confident):
    transformer, log_probs = confident
    model = pitfalls.inject(MaskGit, maskgit, transformer)
    tokens = torch.zeros(6, cfg.num_image_tokens, dtype=torch.long)        # the model's guess everywhere
    split = pitfalls.loss_by_position(model, tokens, 0.5, seed=0)
    mask = pitfalls.fixed_ratio_masks(6, cfg.num_image_tokens, 0.5, seed=0)
    assert split["masked_accuracy"] == split["visible_accuracy"] == 1.0
    assert split["masked_loss"] == pytest.approx(float(-log_probs.expand(6, -1)[mask].mean()), rel=1e-5)
    assert split["visible_loss"] == pytest.approx(float(-log_probs.expand(6, -1)[~mask].mean()), rel=1e-5)
    assert split["full_loss"] == pytest.approx(float(-log_probs.mean()), rel=1e-5)
