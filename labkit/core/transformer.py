"""The stage-2 bidirectional transformer: token ids in, logits over the codebook out.

Input ids live in a vocabulary of ``num_codebook_vectors + 1``: the codebook entries
0..K-1 and the ``[MASK]`` id K. The output layer is tied to the first K rows of the token
embedding (plus a bias), so the logits have K entries and the mask id can never be
predicted (pitfall 7 of the course, measured in notebook 06: leaving index 1024 in the softmax).

Blocks are pre-LayerNorm (more stable to train at small sizes than the post-LN BERT
blocks of the original MaskGIT); attention is ``labkit.MultiHeadAttention``.

Conditioning (``cfg.condition``, e.g. the toy cats' fur colour and pattern), as MaskGIT
conditions on a class: one token per attribute is put in front of the image tokens, the
embedding of its value or of "unknown" (one more id per attribute), so every image token can
attend to what was asked for. Training drops conditions (``MaskGit.training_condition``), so
the same model also predicts unconditionally: the condition left out means all unknown.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadAttention
from ..config import CONDITION_VALUES, LabConfig


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
        self.condition_sizes = tuple(CONDITION_VALUES[name] for name in cfg.condition)
        if self.condition_sizes:          # ids of each attribute: its values, then "unknown"
            starts = torch.tensor((0,) + self.condition_sizes[:-1]).cumsum(0) + torch.arange(len(self.condition_sizes))
            self.register_buffer("condition_starts", starts, persistent=False)
            self.cond_emb = nn.Embedding(sum(self.condition_sizes) + len(self.condition_sizes), cfg.dim)
            self.cond_pos = nn.Parameter(torch.zeros(1, len(self.condition_sizes), cfg.dim))
        self.apply(self._init_weights)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)
        if self.condition_sizes:
            nn.init.trunc_normal_(self.cond_pos, std=0.02)

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

    def unknown_condition(self, batch: int) -> torch.Tensor:
        """(B, A): every attribute "unknown" (its id is its number of values)."""
        sizes = torch.tensor(self.condition_sizes, device=self.bias.device)
        return sizes.expand(batch, -1)

    def embed_condition(self, condition: torch.Tensor | None, batch: int) -> torch.Tensor:
        """condition: (B, A) value ids per attribute (its number of values: unknown), or None
        (all unknown) -> the condition tokens (B, A, D)."""
        if condition is None:
            condition = self.unknown_condition(batch)
        return self.drop(self.cond_emb(condition.to(self.bias.device) + self.condition_starts) + self.cond_pos)

    def hidden(self, token_ids: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """token_ids: (B, N) in [0, K] -> the last block's normalised output (B, N, D) at the
        image positions (after the condition tokens, when the model has some)."""
        x = self.embed(token_ids)                                          # (B, N, D)
        if self.condition_sizes:
            x = torch.cat([self.embed_condition(condition, len(x)), x], dim=1)   # (B, A + N, D)
        for block in self.blocks:
            x = block(x)
        if self.condition_sizes:
            x = x[:, len(self.condition_sizes):]
        return self.ln_f(x)

    def forward(self, token_ids: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """token_ids: (B, N) in [0, K], condition: (B, A) or None -> logits (B, N, K)."""
        h = self.hidden(token_ids, condition)
        codebook = self.tok_emb.weight[: self.num_codebook_vectors]       # (K, D), no [MASK] row
        return h @ codebook.t() + self.bias                                # (B, N, K)

    def attention_maps(self, token_ids: torch.Tensor) -> list[torch.Tensor]:
        """token_ids: (B, N) -> one attention map (B, H, N, N) per layer, first layer first:
        the image tokens' weights on the image tokens (unconditioned)."""
        x = self.embed(token_ids)
        skip = len(self.condition_sizes)
        if skip:
            x = torch.cat([self.embed_condition(None, len(x)), x], dim=1)
        maps = []
        for block in self.blocks:
            maps.append(block.attn.attention_maps(block.ln1(x))[..., skip:, skip:])
            x = block(x)
        return maps
