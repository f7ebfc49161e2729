"""The hand-written attention equals torch's reference and the fused kernel."""

import math

import pytest
import torch
from torch import nn

from labkit import BidirectionalTransformer, MultiHeadAttention, get_config
from labkit.config import CONDITION_VALUES


def reference_from(module: MultiHeadAttention) -> nn.MultiheadAttention:
    """An nn.MultiheadAttention holding exactly the weights of ``module``."""
    ref = nn.MultiheadAttention(module.dim, module.num_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([module.q_linear.weight, module.k_linear.weight,
                                            module.v_linear.weight]))
        ref.in_proj_bias.copy_(torch.cat([module.q_linear.bias, module.k_linear.bias,
                                          module.v_linear.bias]))
        ref.out_proj.weight.copy_(module.out_linear.weight)
        ref.out_proj.bias.copy_(module.out_linear.bias)
    return ref.eval()


@pytest.mark.parametrize("dim,heads,tokens", [(48, 4, 17), (96, 16, 64), (32, 1, 5)])
def test_manual_matches_torch_multihead_attention(dim, heads, tokens):
    torch.manual_seed(0)
    module = MultiHeadAttention(dim, heads, attn_drop=0.1).eval()
    x = torch.randn(3, tokens, dim)
    expected, expected_maps = reference_from(module)(x, x, x, average_attn_weights=False)
    out, maps = module(x), module.attention_maps(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps, expected_maps, atol=1e-6, rtol=1e-5)


def test_fused_path_matches_manual_path_forward_and_backward():
    torch.manual_seed(1)
    module = MultiHeadAttention(64, 8, attn_drop=0.0)
    x = torch.randn(2, 33, 64, requires_grad=True)
    manual = module(x)
    grads_manual = torch.autograd.grad(manual.square().sum(), [x, module.q_linear.weight])
    fused = module.forward_fused(x)
    grads_fused = torch.autograd.grad(fused.square().sum(), [x, module.q_linear.weight])
    torch.testing.assert_close(fused, manual, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_fused, grads_manual):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_course_shapes_and_attention_rows_sum_to_one():
    module = MultiHeadAttention(768, 16, attn_drop=0.1).eval()
    x = torch.randn(2, 256, 768)
    assert module.split_heads(module.q_linear(x)).shape == (2, 16, 256, 48)
    out, maps = module(x), module.attention_maps(x)
    assert out.shape == (2, 256, 768)
    assert maps.shape == (2, 16, 256, 256)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 16, 256))


def test_dropout_only_in_training_mode():
    torch.manual_seed(2)
    module = MultiHeadAttention(32, 4, attn_drop=0.5)
    x = torch.randn(1, 10, 32)
    module.eval()
    torch.testing.assert_close(module(x), module(x))
    module.train()
    assert not torch.allclose(module(x), module(x))


def test_scaling_keeps_score_variance_near_one():
    # Why divide by sqrt(d_k): q.k of unit-variance vectors has variance d_k.
    torch.manual_seed(3)
    d_k = 64
    q, k = torch.randn(4096, d_k), torch.randn(4096, d_k)
    raw = (q * k).sum(-1)
    assert raw.var().item() == pytest.approx(d_k, rel=0.1)
    assert (raw / math.sqrt(d_k)).var().item() == pytest.approx(1.0, rel=0.1)


def test_rejects_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(50, 16)


def test_the_block_chooses_the_kernel_and_both_give_the_same_logits():
    torch.manual_seed(4)
    model = BidirectionalTransformer(get_config("smoke")).eval()
    ids = torch.randint(0, 33, (2, model.num_image_tokens))
    calls = []
    for block in model.blocks:
        block.attn.forward_fused = lambda x, attn=block.attn: calls.append("fused") or type(attn).forward_fused(attn, x)
    fused = model(ids)
    assert calls == ["fused"] * len(model.blocks)
    manual = model.set_fused(False)(ids)
    assert calls == ["fused"] * len(model.blocks)          # the hand-written forward this time
    torch.testing.assert_close(fused, manual, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("condition", [(), tuple(CONDITION_VALUES)], ids=["course", "conditioned"])
def test_transformer_attention_maps_are_each_layers_forward_maps(condition):
    torch.manual_seed(5)
    cfg = get_config("smoke", condition=condition)
    model = BidirectionalTransformer(cfg).eval()
    ids = torch.randint(0, cfg.num_codebook_vectors + 1, (3, cfg.num_image_tokens))
    maps = model.attention_maps(ids)
    n, skip = cfg.num_image_tokens, len(condition)
    assert len(maps) == cfg.num_layers and all(m.shape == (3, cfg.num_heads, n, n) for m in maps)
    x = model.embed(ids)
    if skip:                        # the condition tokens (all unknown) stand in front of the image's
        x = torch.cat([model.embed_condition(None, len(x)), x], dim=1)
    for block, layer_maps in zip(model.blocks, maps):      # layer l sees the output of layer l - 1
        h = block.ln1(x)
        a = block.attn
        weights = reference_from(a)(h, h, h, need_weights=True, average_attn_weights=False)[1]
        torch.testing.assert_close(layer_maps, weights[..., skip:, skip:])
        x = block(x)
