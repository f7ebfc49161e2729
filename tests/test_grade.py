"""The grader: the reference solutions are "done", and each known bug, injected by
monkeypatching, gets its named diagnosis (mutation tests). Instructor-only: the student copy
does not ship this file (its buggy versions are near the solutions)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import labkit
from labkit.teaching import grade as grade_module
from labkit.core import schedules
from labkit.core.attention import MultiHeadAttention
from labkit.teaching.exercises import EXERCISES, needed_by
from labkit.teaching.grade import ExerciseMissing, grade_one, require
from labkit.core.maskgit import MaskGit


def test_reference_solutions_are_done():
    for exercise in EXERCISES:
        assert grade_one(exercise.name) == ("done", ""), exercise.name


def test_cli_exit_code_and_notebook_call(capsys, monkeypatch):
    assert grade_module.main(["gamma_func"]) == 0
    assert "gamma_func   done" in capsys.readouterr().out
    monkeypatch.setitem(schedules.FORMULAS, "square", lambda r, xp: 1 - r * 2)
    assert grade_module.main(["gamma_func"]) == 1
    with pytest.raises(grade_module.GradeFailed) as caught:
        labkit.grade("gamma_func")                       # the notebooks' check cell
    assert caught.value._render_traceback_()[0].startswith("TODO2 step1-2  gamma_func   wrong")


def diagnosis(name):
    status, message = grade_one(name)
    assert status == "wrong", (status, message)
    return message


# ---- TODO2 step1-2: schedules

def test_square_written_1_minus_r_times_2(monkeypatch):
    monkeypatch.setitem(schedules.FORMULAS, "square", lambda r, xp: 1 - r * 2)
    assert ("gamma_square(0.75) = -0.5: a mask ratio can't be negative; did you write 1 - r*2 "
            "instead of 1 - r**2?") in diagnosis("gamma_func")


def test_square_written_1_minus_sqrt(monkeypatch):
    monkeypatch.setitem(schedules.FORMULAS, "square", lambda r, xp: 1 - xp.sqrt(r))
    assert "gamma_square gives the sqrt schedule's values" in diagnosis("gamma_func")


def test_schedule_ends_and_order(monkeypatch):
    monkeypatch.setitem(schedules.FORMULAS, "cosine", lambda r, xp: 0.9 * xp.cos(r * math.pi / 2))
    assert "gamma_cosine(0) = 0.9" in diagnosis("gamma_func")
    monkeypatch.setitem(schedules.FORMULAS, "cosine", lambda r, xp: xp.cos(r * math.pi / 2) + 0.1 * r)
    assert "gamma(1) must be 0" in diagnosis("gamma_func")
    monkeypatch.setitem(schedules.FORMULAS, "cosine", lambda r, xp: np.where(r == 0.5, 0.95, 1 - r ** 2))
    assert "gamma_cosine must decrease" in diagnosis("gamma_func")


def test_later_exercises_wait_for_the_schedules(monkeypatch):
    def stub(r, xp):
        raise NotImplementedError("TODO2 step1-2: hint")
    monkeypatch.setitem(schedules.FORMULAS, "linear", stub)
    assert grade_one("gamma_func") == ("not yet", "write it in labkit/core/schedules.py: linear, cosine, "
                                                  "square, cubic, sqrt: TODO2 step1-2: hint")
    assert grade_one("inpainting") == ("not yet", "needs TODO2 step1-2 (gamma_func, in "
                                                  "labkit/core/schedules.py: linear, cosine, square, cubic, sqrt) first")


# ---- TODO1: attention

def buggy_attention(scale=True, transpose=True):
    def forward(self, x):
        batch, tokens, _ = x.shape
        if transpose:
            split = self.split_heads
        else:
            def split(t):
                return t.reshape(batch, self.num_heads, tokens, self.head_dim)
        q, k, v = split(self.q_linear(x)), split(self.k_linear(x)), split(self.v_linear(x))
        scores = q @ k.transpose(-2, -1) / (math.sqrt(self.head_dim) if scale else 1.0)
        return self.out_linear(self.merge_heads(self.dropout(scores.softmax(-1)) @ v))
    return forward


def test_attention_without_scale(monkeypatch):
    monkeypatch.setattr(MultiHeadAttention, "forward", buggy_attention(scale=False))
    assert "WITHOUT the 1/sqrt(d_k) scale" in diagnosis("attention")


def test_attention_heads_split_without_transpose(monkeypatch):
    monkeypatch.setattr(MultiHeadAttention, "forward", buggy_attention(transpose=False))
    assert "split with a plain view" in diagnosis("attention")


# ---- TODO2 step1-1: encode_to_z

def test_encode_to_z_grid_shape(monkeypatch):
    original = MaskGit.encode_to_z

    def unflattened(self, x):
        z_q, z = original(self, x)
        return z_q, z.view(x.shape[0], z_q.shape[2], z_q.shape[3])
    monkeypatch.setattr(MaskGit, "encode_to_z", unflattened)
    assert "(B, h, w): flatten the grid" in diagnosis("encode_to_z")


# ---- TODO2 step1-3: training mask and forward

def test_inverted_training_mask(monkeypatch):
    original = MaskGit.random_token_mask
    monkeypatch.setattr(MaskGit, "random_token_mask",
                        lambda self, batch, generator=None, gamma=None: ~original(self, batch, generator, gamma))
    assert "the mask is inverted" in diagnosis("forward")


def test_fixed_half_training_mask(monkeypatch):
    def half(self, batch, generator=None, gamma=None):
        scores = torch.rand(batch, self.num_image_tokens, generator=generator)
        return scores.argsort(1).argsort(1) < self.num_image_tokens // 2
    monkeypatch.setattr(MaskGit, "random_token_mask", half)
    assert "not a fixed half" in diagnosis("forward")


def test_forward_returning_masked_targets(monkeypatch):
    original = MaskGit.forward_tokens

    def masked_targets(self, z, generator=None):
        logits, z, mask = original(self, z, generator)
        return logits, z.masked_fill(mask, self.mask_token_id), mask
    monkeypatch.setattr(MaskGit, "forward_tokens", masked_targets)
    assert "ORIGINAL ids as targets" in diagnosis("forward")


def region_mask(count_from_all: bool, outside: bool):
    """random_token_mask with one of two bugs of the training region (the cpu profile's holes)."""
    def random_token_mask(self, batch, generator=None, gamma=None):
        region = self.training_region(batch, generator)
        gamma = self.gamma_func(gamma or self.config.train_gamma)
        n = self.num_image_tokens
        r = torch.rand(batch, generator=generator)
        hideable = n if region is None or count_from_all else region.sum(1)
        n_masked = torch.ceil(gamma(r) * hideable).long().clamp(1, n)
        scores = torch.rand(batch, n, generator=generator)
        if region is not None and not outside:
            scores = scores.masked_fill(~region, 2.0)
        return scores.argsort(1).argsort(1) < n_masked[:, None]
    return random_token_mask


def test_region_counted_from_all_tokens(monkeypatch):
    monkeypatch.setattr(MaskGit, "random_token_mask", region_mask(count_from_all=True, outside=False))
    assert "from the region's n tokens" in diagnosis("forward")


def test_tokens_hidden_outside_the_region(monkeypatch):
    monkeypatch.setattr(MaskGit, "random_token_mask", region_mask(count_from_all=False, outside=True))
    assert "tokens outside the region were hidden" in diagnosis("forward")


# ---- TODO2 step2: the training step

def buggy_step(zero_grad=True, clip=True):
    def step(maskgit, optimizer, z, generator, grad_clip, check_finite):
        logits, z, mask = maskgit.forward_tokens(z, generator)
        loss = maskgit.loss(logits, z, mask)
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(maskgit.transformer.parameters(),
                                              grad_clip if clip else math.inf)
        check_finite(loss, norm)
        optimizer.step()
        return loss, logits, z, mask
    return step


def test_step_without_zero_grad(monkeypatch):
    monkeypatch.setattr("labkit.core.train.mvtm_step", buggy_step(zero_grad=False))
    assert "gradients accumulate" in diagnosis("train_step")


def test_step_without_clipping(monkeypatch):
    monkeypatch.setattr("labkit.core.train.mvtm_step", buggy_step(clip=False))
    assert "clip the transformer's gradient norm to grad_clip" in diagnosis("train_step")


# ---- TODO3: one decoding iteration

def wrap_inpainting(monkeypatch, change):
    original = MaskGit.inpainting

    def wrapped(self, token_ids, still_masked, n0, m_prev, t, settings, generator=None):
        return change(original, self, token_ids, still_masked, n0, m_prev, t, settings, generator)
    monkeypatch.setattr(MaskGit, "inpainting", wrapped)


def test_temperature_annealed_the_wrong_way(monkeypatch):
    def growing(original, self, ids, still, n0, m_prev, t, settings, gen):
        ratio = t / settings.total_iter                 # noise scaled by tau * t/T
        tau = settings.choice_temperature * ratio / max(1 - ratio, 1e-9)
        return original(self, ids, still, n0, m_prev, t, replace(settings, choice_temperature=tau), gen)
    wrap_inpainting(monkeypatch, growing)
    assert "must anneal to 0" in diagnosis("inpainting")


def test_no_gumbel_noise(monkeypatch):
    wrap_inpainting(monkeypatch, lambda original, self, ids, still, n0, m_prev, t, settings, gen:
                    original(self, ids, still, n0, m_prev, t, replace(settings, choice_temperature=0.0), gen))
    assert "add Gumbel noise" in diagnosis("inpainting")


def test_count_from_the_current_count(monkeypatch):
    wrap_inpainting(monkeypatch, lambda original, self, ids, still, n0, m_prev, t, settings, gen:
                    original(self, ids, still, m_prev, m_prev, t, settings, gen))
    assert "the count is taken from the current count instead of n0" in diagnosis("inpainting")


def test_known_tokens_not_pinned(monkeypatch):
    def drifting(original, self, ids, still, *rest):
        prediction, mask, m_t = original(self, ids, still, *rest)
        return self.transformer(ids).argmax(-1), mask, m_t
    wrap_inpainting(monkeypatch, drifting)
    assert "known tokens are not pinned" in diagnosis("inpainting")


def test_mask_id_predicted(monkeypatch):
    def predicts_mask(original, self, ids, still, *rest):
        prediction, mask, m_t = original(self, ids, still, *rest)
        return prediction.masked_fill(still & (torch.arange(ids.shape[1]) % 7 == 0), self.mask_token_id), mask, m_t
    wrap_inpainting(monkeypatch, predicts_mask)
    assert "the mask id must never be predicted" in diagnosis("inpainting")


# ---- the gate

def test_require_names_the_missing_exercise(monkeypatch):
    assert [e.name for e in needed_by("04_inpaint")] == ["attention", "encode_to_z", "gamma_func",
                                                         "forward", "train_step"]
    require("04")                                          # all done: nothing
    monkeypatch.setitem(schedules.FORMULAS, "square", lambda r, xp: 1 - r * 2)
    with pytest.raises(ExerciseMissing) as caught:
        require("04")
    lines = caught.value._render_traceback_()
    assert len(lines) == 1 and "TODO2 step1-2 (gamma_func, labkit/core/schedules.py" in lines[0]
    assert "1 - r*2" in lines[0]


# ---- issue 24: the grader is exact on behaviour (each wrong variant "wrong" by name, each
# right variant "done"); the variants are whole iterations written as a student writes them

def student_inpainting(ratio_at_prev=False, ceil=False, first_n0=False, ignore_sample=False,
                       global_noise=False, slice_order=False, descending=False, probabilities=False,
                       swapped_where=False, in_place=False, clamp_last=True,
                       clamp_slice=True):
    """MaskGit.inpainting written per image with a slice (slice_order) or with ranks, with one
    of the known bugs switched on."""
    from labkit.core.maskgit import gumbel_noise

    def inpainting(self, token_ids, still_masked, n0, m_prev, t, settings, generator=None):
        log_probs = self.transformer(token_ids).float().log_softmax(dim=-1)
        draw = (lambda shape: gumbel_noise(shape, None, log_probs.device)) if global_noise else \
            (lambda shape: gumbel_noise(shape, generator, log_probs.device))
        if settings.sample and not ignore_sample:
            chosen = (log_probs + draw(log_probs.shape)).argmax(dim=-1)
        else:
            chosen = log_probs.argmax(dim=-1)
        if swapped_where:
            prediction = torch.where(still_masked, token_ids, chosen)
        elif in_place:
            prediction = token_ids
            prediction[still_masked] = chosen[still_masked]
        else:
            prediction = torch.where(still_masked, chosen, token_ids)
        confidence = log_probs.gather(-1, chosen[..., None]).squeeze(-1)
        if probabilities:
            confidence = confidence.exp()
        ratio = (t - 1 if ratio_at_prev else t) / settings.total_iter
        temperature = settings.choice_temperature * (1 - ratio)
        if temperature > 0:
            confidence = confidence + temperature * draw(confidence.shape)
        confidence = confidence.masked_fill(~still_masked, math.inf)
        counts = (n0[:1] if first_n0 else n0).double() * self.gamma_func(settings.gamma)(ratio)
        m_t = (torch.ceil(counts) if ceil else torch.floor(counts)).long().expand(len(n0))
        m_t = torch.minimum(m_t, (m_prev - 1).clamp(min=0) if clamp_last else m_prev - 1)
        if slice_order:
            new_mask = torch.zeros_like(still_masked)
            for b in range(len(m_t)):
                order = confidence[b].argsort(descending=descending)
                count = max(int(m_t[b]), 0) if clamp_slice else int(m_t[b])
                new_mask[b, order[:count]] = True
        else:
            ranks = confidence.argsort(dim=1, descending=descending).argsort(dim=1)
            new_mask = ranks < m_t[:, None]
        return prediction, new_mask, m_t
    return inpainting


def test_right_inpainting_variants_are_done(monkeypatch):
    for variant in (student_inpainting(), student_inpainting(slice_order=True)):
        monkeypatch.setattr(MaskGit, "inpainting", variant)
        assert grade_one("inpainting") == ("done", "")


WRONG_INPAINTING = {
    "ratio_at_prev": "the schedule is read at (t - 1)/T",
    "ceil": "round down with floor, not ceil or round",
    "first_n0": "the first image's n0 (n0[0])",
    "ignore_sample": "with settings.sample True every masked position still takes its most likely token",
    "global_noise": "draw the Gumbel noise with generator=generator",
    "descending": "the MOST confident are masked; sort ascending",
    "probabilities": "on the log-probability of the chosen token (log_softmax), not on its probability",
    "swapped_where": "the arguments of torch.where are swapped",
    "in_place": "inpainting changed its input token_ids in place",
}


@pytest.mark.parametrize("bug", list(WRONG_INPAINTING))
def test_wrong_inpainting_named(monkeypatch, bug):
    monkeypatch.setattr(MaskGit, "inpainting", student_inpainting(**{bug: True}))
    assert WRONG_INPAINTING[bug] in diagnosis("inpainting")


def test_negative_count_sliced_masks_none(monkeypatch):
    monkeypatch.setattr(MaskGit, "inpainting", student_inpainting(slice_order=True, clamp_last=False,
                                                                  clamp_slice=False))
    assert "a slice order[:m_t] with m_t < 0 keeps all but |m_t|" in diagnosis("inpainting")
    # clamped m_prev - 1, but a schedule that goes negative (pitfall 3): the same slice
    monkeypatch.setattr(MaskGit, "inpainting", student_inpainting(slice_order=True, clamp_slice=False))
    assert "a schedule that goes negative" in diagnosis("inpainting")


def test_decoding_messages_use_the_profiles_mask_id(monkeypatch):
    def predicts_mask(original, self, ids, still, *rest):
        prediction, mask, m_t = original(self, ids, still, *rest)
        return prediction.masked_fill(still, self.mask_token_id), mask, m_t
    wrap_inpainting(monkeypatch, predicts_mask)
    message = diagnosis("inpainting")
    assert "[MASK] id 32:" in message and "1024" not in message
    assert message.startswith("in labkit/core/maskgit.py: MaskGit.inpainting: ")


def test_crash_names_the_line(monkeypatch):
    def crashing(self, token_ids, still_masked, n0, m_prev, t, settings, generator=None):
        return token_ids @ still_masked
    monkeypatch.setattr(MaskGit, "inpainting", crashing)
    message = diagnosis("inpainting")
    assert message.startswith("RuntimeError at tests/test_grade.py:") or "test_grade.py:" in message
    assert "`return token_ids @ still_masked`" in message and "(edit labkit/core/maskgit.py" in message


def test_not_yet_names_the_file(monkeypatch):
    def stub(self, *args, **kwargs):
        raise NotImplementedError("TODO3: hint")
    monkeypatch.setattr(MaskGit, "inpainting", stub)
    assert grade_one("inpainting") == ("not yet", "write it in labkit/core/maskgit.py: MaskGit.inpainting: TODO3: hint")


# ---- schedules: the look-alikes

def test_cosine_of_pi_r(monkeypatch):
    monkeypatch.setitem(schedules.FORMULAS, "cosine", lambda r, xp: xp.cos(r * math.pi))
    assert "gamma_cosine is cos(pi r)" in diagnosis("gamma_func")


def test_schedule_not_finite(monkeypatch):
    monkeypatch.setitem(schedules.FORMULAS, "sqrt", lambda r, xp: 1 - r / xp.sqrt(r))
    message = diagnosis("gamma_func")
    assert "gamma_sqrt(0) = nan: not finite" in message and "in between" not in message


# ---- attention: dropout

def test_dropout_on_the_scores(monkeypatch):
    def forward(self, x, return_attention=False):
        q, k, v = (self.split_heads(lin(x)) for lin in (self.q_linear, self.k_linear, self.v_linear))
        scores = self.dropout(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim))
        attention = scores.softmax(dim=-1)
        out = self.out_linear(self.merge_heads(attention @ v))
        return (out, attention) if return_attention else out
    monkeypatch.setattr(MultiHeadAttention, "forward", forward)
    assert "dropout is applied to the scores BEFORE the softmax" in diagnosis("attention")


# ---- the training step: zero_grad anywhere, and the config's loss

def student_step(clear="optimizer", hand_written_loss=False):
    def step(maskgit, optimizer, z, generator, grad_clip, check_finite):
        logits, z, mask = maskgit.forward_tokens(z, generator)
        if hand_written_loss:
            loss = torch.nn.functional.cross_entropy(logits[mask], z[mask])
        else:
            loss = maskgit.loss(logits, z, mask)
        {"optimizer": lambda: optimizer.zero_grad(),
         "maskgit": lambda: maskgit.zero_grad(set_to_none=True),
         "transformer": lambda: maskgit.transformer.zero_grad(set_to_none=False)}[clear]()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(maskgit.transformer.parameters(), grad_clip)
        check_finite(loss, norm)
        optimizer.step()
        return loss, logits, z, mask
    return step


@pytest.mark.parametrize("clear", ["optimizer", "maskgit", "transformer"])
def test_zero_grad_on_the_module_or_the_optimizer(monkeypatch, clear):
    monkeypatch.setattr("labkit.core.train.mvtm_step", student_step(clear))
    assert grade_one("train_step") == ("done", "")


def test_hand_written_masked_loss(monkeypatch):
    monkeypatch.setattr("labkit.core.train.mvtm_step", student_step(hand_written_loss=True))
    assert "is the masked-only cross-entropy" in diagnosis("train_step")
