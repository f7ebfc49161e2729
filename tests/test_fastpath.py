"""The fast path computes what the hand-written, course-template way computes.

Fused attention vs hand-written attention, cached tokens vs encoding every batch, batched
decoding vs one image at a time, labkit vs the benchmark's template reference; plus the
benchmark's FLOP formula and its CPU memory meter.
"""

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from labkit import MaskGit, get_config, mvtm_loss
from labkit.data.holes import make_masks

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from template_reference import TemplateMaskGit  # noqa: E402

CFG = get_config("smoke", train_mask="random", condition=())   # the course's training masks, no condition


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_speed", BENCHMARKS / "bench_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def maskgit():
    torch.manual_seed(0)
    return MaskGit(CFG).eval()


def random_images(batch, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, CFG.image_size, CFG.image_size, generator=generator)


def random_token_batch(batch=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z_indices = torch.randint(0, CFG.num_codebook_vectors, (batch, CFG.num_image_tokens),
                              generator=generator)
    token_mask = torch.rand(batch, CFG.num_image_tokens, generator=generator) < 0.5
    token_mask[0] = False                       # nothing to fill
    token_mask[1, : CFG.num_image_tokens // 2] = True   # a large hole
    return z_indices, token_mask


# ---------------------------------------------------------------- fused vs hand-written
def test_fused_and_handwritten_transformer_agree_on_logits_and_gradients(maskgit):
    fused = copy.deepcopy(maskgit.transformer).train().set_fused(True)
    manual = copy.deepcopy(maskgit.transformer).train().set_fused(False)
    z_indices, token_mask = random_token_batch()
    token_ids = z_indices.masked_fill(token_mask, CFG.mask_token_id)
    logits = {}
    for name, model in (("fused", fused), ("manual", manual)):
        logits[name] = model(token_ids)
        mvtm_loss(logits[name], z_indices, token_mask, "masked", 0.1).backward()
    torch.testing.assert_close(logits["fused"], logits["manual"], rtol=1e-5, atol=1e-5)
    for (name, p_fused), (_, p_manual) in zip(fused.named_parameters(), manual.named_parameters()):
        torch.testing.assert_close(p_fused.grad, p_manual.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_template_reference_holds_the_same_weights_with_handwritten_attention(maskgit):
    template = TemplateMaskGit(CFG, maskgit.vqgan, maskgit.transformer)
    assert all(not block.attn.fused for block in template.transformer.blocks)
    assert all(block.attn.fused for block in maskgit.transformer.blocks)   # the original untouched
    for (name, ours), (_, theirs) in zip(maskgit.transformer.state_dict().items(),
                                         template.transformer.state_dict().items()):
        assert torch.equal(ours, theirs), name


# ---------------------------------------------------------------- cached tokens
def test_cached_tokens_give_the_same_loss_as_encoding_every_batch(maskgit):
    images = random_images(8)
    _, cached = maskgit.encode_to_z(images)                    # extracted once, reused every epoch
    on_the_fly = maskgit.forward(images, generator=torch.Generator().manual_seed(5))
    from_cache = maskgit.forward_tokens(cached, generator=torch.Generator().manual_seed(5))
    for a, b in zip(on_the_fly, from_cache):
        assert torch.equal(a, b)
    assert torch.equal(maskgit.loss(*on_the_fly), maskgit.loss(*from_cache))


def test_template_and_labkit_agree_on_the_loss_with_a_shared_mask_ratio(maskgit, monkeypatch):
    template = TemplateMaskGit(CFG, maskgit.vqgan, maskgit.transformer).eval()
    images = random_images(8, seed=1)
    mask = template.batch_mask(8, torch.Generator().manual_seed(2))
    assert len(set(mask.sum(1).tolist())) == 1                  # one ratio for the whole batch
    monkeypatch.setattr(maskgit, "random_token_mask", lambda batch, generator=None: mask)
    logits, z_indices, labkit_mask = maskgit.forward(images)
    template_logits, template_z, _ = template(images, mask=mask)
    assert torch.equal(labkit_mask, mask) and torch.equal(z_indices, template_z)
    torch.testing.assert_close(mvtm_loss(logits, z_indices, mask, "full", 0.0),
                               template.loss(template_logits, template_z), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- batched decoding
def test_batched_decoding_equals_one_image_at_a_time_without_noise(maskgit):
    z_indices, token_mask = random_token_batch(batch=6, seed=3)
    settings = maskgit.decode_settings(gamma="cosine", total_iter=6, choice_temperature=0.0, sample=False)
    batched = maskgit.inpaint_tokens(z_indices, token_mask, settings)
    for i in range(len(z_indices)):
        single = maskgit.inpaint_tokens(z_indices[i:i + 1], token_mask[i:i + 1], settings)
        assert torch.equal(batched.predictions[:, i], single.predictions[:, 0])
        assert torch.equal(batched.still_masked[:, i], single.still_masked[:, 0])


def test_batched_inpaint_equals_per_image_and_the_template_loop_in_pixels(maskgit):
    images = random_images(4, seed=4)
    masks = torch.from_numpy(make_masks(seed=0, n=4, size=CFG.image_size))
    options = dict(gamma="cosine", total_iter=4, choice_temperature=0.0)
    batched = maskgit.inpaint(images, masks, maskgit.decode_settings(**options))
    template = TemplateMaskGit(CFG, maskgit.vqgan, maskgit.transformer).eval()
    for i in range(len(images)):
        single = maskgit.inpaint(images[i:i + 1], masks[i:i + 1], maskgit.decode_settings(**options))
        assert torch.equal(batched.trace.predictions[:, i], single.trace.predictions[:, 0])
        torch.testing.assert_close(batched.steps()[:, i], single.steps()[:, 0], rtol=0, atol=1e-5)
        course_steps = template.inpaint_one(images[i], masks[i], **options)   # (T, 3, H, W)
        torch.testing.assert_close(batched.steps()[:, i], course_steps, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the benchmark's meters
def test_training_flop_formula_matches_the_flop_counter(maskgit):
    bench = load_bench()
    manual = copy.deepcopy(maskgit.transformer).train().set_fused(False)
    z_indices, token_mask = random_token_batch(batch=3)
    with FlopCounterMode(display=False) as counter:
        logits = manual(z_indices.masked_fill(token_mask, CFG.mask_token_id))
        mvtm_loss(logits, z_indices, token_mask).backward()
    assert counter.get_total_flops() == 3 * bench.training_flops_per_image(CFG)


def test_cpu_memory_meter_counts_live_tensors_at_their_peak():
    bench = load_bench()
    with bench.PeakMemory(torch.device("cpu")) as memory:
        first = torch.empty(1000, dtype=torch.float32)     # 4,000 bytes
        second = torch.empty(1000, dtype=torch.float64)    # 8,000 bytes, both alive: 12,000
        del first
        second.view(10, 100)                               # a view allocates nothing
        torch.empty(2000, dtype=torch.uint8)               # 8,000 + 2,000: below the peak
    assert memory.bytes == 12_000
