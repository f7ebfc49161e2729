"""Multi-head self-attention, written by hand as the course asks, with a fused fast path.

Scaled dot-product attention for one head, with queries Q, keys K and values V of
shape (N, d_k):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Multi-head attention projects the input x: (B, N, D) to Q, K, V, splits D into H heads of
d_k = D / H, attends in each head independently, concatenates the heads and projects back.
With the course sizes: (B, 256, 768) -> (B, 16, 256, 48) per head -> (B, 256, 768).

Two paths share the same four ``nn.Linear(dim, dim)`` parameters:

- ``forward``: the hand-written path a student writes (softmax of a materialised
  (B, H, N, N) score matrix); ``forward(x, return_attention=True)`` also returns those
  weights, for plotting (``attention_maps``).
- ``forward_fused``: ``F.scaled_dot_product_attention``, which never materialises the score
  matrix and dispatches to flash / memory-efficient kernels on GPUs. Same numbers in fp32.

The transformer block chooses: ``forward_fused`` when the module's ``fused`` flag is set (the
default; ``BidirectionalTransformer.set_fused`` switches every layer), else ``forward``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int = 768, num_heads: int = 16, attn_drop: float = 0.1, fused: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.fused = fused          # read by the transformer block: forward_fused when True
        self.q_linear = nn.Linear(dim, dim)
        self.k_linear = nn.Linear(dim, dim)
        self.v_linear = nn.Linear(dim, dim)
        self.out_linear = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(attn_drop)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, H, N, d_k)"""
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, N, d_k) -> (B, N, D)"""
        batch, _, tokens, _ = x.shape
        return x.transpose(1, 2).reshape(batch, tokens, self.dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """x: (B, N, D) -> (B, N, D), the hand-written course path; with ``return_attention``
        also the attention weights (B, H, N, N), each row summing to 1 (before dropout)."""
        # BEGIN SOLUTION TODO1
        # HINT: project x to queries, keys and values, each split into heads: (B, H, N, d_k);
        # HINT: scores = Q K^T / sqrt(d_k): (B, H, N, N); attention = softmax over the keys (the last dim);
        # HINT: dropout(attention) times V: (B, H, N, d_k); merge the heads, project -> out (B, N, D)
        q = self.split_heads(self.q_linear(x))                        # (B, H, N, d_k)
        k = self.split_heads(self.k_linear(x))                        # (B, H, N, d_k)
        v = self.split_heads(self.v_linear(x))                        # (B, H, N, d_k)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)   # (B, H, N, N)
        attention = scores.softmax(dim=-1)                            # rows sum to 1
        context = self.dropout(attention) @ v                         # (B, H, N, d_k)
        out = self.out_linear(self.merge_heads(context))              # (B, N, D)
        # END SOLUTION
        return (out, attention) if return_attention else out

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) -> (B, N, D), the same maths in one fused kernel."""
        q = self.split_heads(self.q_linear(x))
        k = self.split_heads(self.k_linear(x))
        v = self.split_heads(self.v_linear(x))
        context = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.out_linear(self.merge_heads(context))

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) -> the attention weights (B, H, N, N) of ``forward``, rows summing to 1."""
        return self.forward(x, return_attention=True)[1]
