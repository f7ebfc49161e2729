"""The stage-2 bidirectional transformer: token ids in, logits over the codebook out.

Input ids live in a vocabulary of ``num_codebook_vectors + 1``: the codebook entries
0..K-1 and the ``[MASK]`` id K. The output layer is tied to the first K rows of the token
embedding (plus a bias), so the logits have K entries and the mask id can never be
predicted (pitfall 7 of the course, measured in notebook 06: leaving index 1024 in the softmax).

Blocks are pre-LayerNorm (more stable to train at small sizes than the post-LN BERT
blocks of the original MaskGIT); attention is ``labkit.MultiHeadAttention``.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadAttention
from ..config import LabConfig


class Block(nn.Module):
    """Pre-LN block: x + attention(LN(x)), then x + MLP(LN(x)). (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float, attn_drop: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, attn_drop)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the fused kernel is the fast path; the hand-written one gives the same numbers
        attend = self.attn.forward_fused if self.attn.fused else self.attn
        x = x + self.drop(attend(self.ln1(x)))
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x


class BidirectionalTransformer(nn.Module):
    def __init__(self, cfg: LabConfig):
        super().__init__()
        self.num_codebook_vectors = cfg.num_codebook_vectors
        self.num_image_tokens = cfg.num_image_tokens
        self.tok_emb = nn.Embedding(cfg.num_codebook_vectors + 1, cfg.dim)   # +1: [MASK]
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.num_image_tokens, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.num_heads, cfg.mlp_dim, cfg.dropout, cfg.attn_drop)
            for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.bias = nn.Parameter(torch.zeros(cfg.num_codebook_vectors))
        self.apply(self._init_weights)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def set_fused(self, fused: bool) -> "BidirectionalTransformer":
        """Switch every attention layer between the fused kernel and the hand-written path."""
        for block in self.blocks:
            block.attn.fused = fused
        return self

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids: (B, N) in [0, K] -> token + position embeddings (B, N, D)."""
        return self.drop(self.tok_emb(token_ids) + self.pos_emb)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids: (B, N) in [0, K] -> logits (B, N, K)."""
        x = self.embed(token_ids)                                          # (B, N, D)
        for block in self.blocks:
            x = block(x)
        h = self.ln_f(x)
        codebook = self.tok_emb.weight[: self.num_codebook_vectors]       # (K, D), no [MASK] row
        return h @ codebook.t() + self.bias                                # (B, N, K)

    def attention_maps(self, token_ids: torch.Tensor) -> list[torch.Tensor]:
        """token_ids: (B, N) -> one attention map (B, H, N, N) per layer, first layer first."""
        x = self.embed(token_ids)
        maps = []
        for block in self.blocks:
            maps.append(block.attn.attention_maps(block.ln1(x)))
            x = block(x)
        return maps
