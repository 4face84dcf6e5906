"""Projections and the mapping networks m1/m2 (ClipCap-style, as in the authors' ``decoder.py``).

* :class:`Projection`: ``h = W1 x``; ``LN(h + Dropout(W2 GELU(h)))`` (no biases), the CLAP projection.
* :class:`TransformerMapper`: an embedding (or a sequence of embeddings) plus ``prefix_length``
  learned constants through pre-LN transformer layers; the outputs at the constant positions
  are the prefix. Parameter names follow the reference so official weights map one to one.
* :class:`MLPMapper`: ClipCap's MLP alternative (``mapping_type: mlp``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pengi.config import MapperConfig


class Projection(nn.Module):
    """CLAP projection head: ``(B, d_in) -> (B, d_out)``."""

    def __init__(self, d_in: int, d_out: int, p: float = 0.5) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x)
        return self.layer_norm(h + self.drop(self.linear2(F.gelu(h))))


class MultiHeadAttention(nn.Module):
    """Self-attention with no bias on q/kv; the kv projection holds keys then values."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"mapper width {dim} is not divisible by mapper.num_heads {num_heads}")
        self.num_heads = num_heads
        self.to_queries = nn.Linear(dim, dim, bias=False)
        self.to_keys_values = nn.Linear(dim, 2 * dim, bias=False)
        self.project = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        h = self.num_heads
        q = self.to_queries(x).view(B, N, h, C // h).transpose(1, 2)  # (B, h, N, hd)
        kv = self.to_keys_values(x).view(B, N, 2, h, C // h).permute(2, 0, 3, 1, 4)  # (2, B, h, N, hd)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (B, h, N, hd); scale hd ** -0.5
        return self.project(out.transpose(1, 2).reshape(B, N, C))


class MlpBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class TransformerLayer(nn.Module):
    """Pre-LN: ``x + attn(LN x)``, then ``x + MLP(LN x)`` (MLP ratio 2, ReLU)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MlpBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, num_heads) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class TransformerMapper(nn.Module):
    """Embedding -> ``prefix_length`` LM input vectors.

    With ``d_in`` set, a Linear expands the ``(B, d_in)`` embedding into ``clip_length`` tokens
    (the reference's ``TransformerMapper``). With ``d_in=None`` the input is already a sequence
    ``(B, L, dim)`` (the reference's ``TransformerMapperSeq``, used for LM-embedded prompts).
    """

    def __init__(self, d_in: int | None, dim: int, cfg: MapperConfig) -> None:
        super().__init__()
        self.clip_length = cfg.clip_length
        self.linear = nn.Linear(d_in, cfg.clip_length * dim) if d_in is not None else None
        self.prefix_const = nn.Parameter(torch.randn(cfg.prefix_length, dim))
        self.transformer = Transformer(dim, cfg.num_heads, cfg.num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_in) or (B, L, dim) -> (B, prefix_length, dim)."""
        if self.linear is not None:
            x = self.linear(x).view(x.shape[0], self.clip_length, -1)  # (B, clip_length, dim)
        const = self.prefix_const.unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, prefix_length, dim)
        out = self.transformer(torch.cat([x, const], dim=1))
        return out[:, x.shape[1] :]  # the outputs at the constant positions


class MLPMapper(nn.Module):
    """ClipCap's MLP mapper: ``d_in -> k*dim/2 -> tanh -> k*dim``, viewed as k tokens."""

    def __init__(self, d_in: int, dim: int, cfg: MapperConfig) -> None:
        super().__init__()
        self.prefix_length = cfg.prefix_length
        hidden = dim * cfg.prefix_length // 2
        self.model = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, dim * cfg.prefix_length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError("the MLP mapper maps one embedding per item, (B, d_in)")
        return self.model(x).view(x.shape[0], self.prefix_length, -1)  # (B, k, dim)


def build_mapper(d_in: int | None, dim: int, cfg: MapperConfig) -> nn.Module:
    """The mapper ``cfg.kind`` names; ``d_in=None`` means a sequence input (transformer only)."""
    if cfg.kind == "transformer":
        return TransformerMapper(d_in, dim, cfg)
    if d_in is None:
        raise ValueError("mapper.kind 'mlp' cannot map an LM-embedded prompt sequence (text.kind 'lm_embed')")
    return MLPMapper(d_in, dim, cfg)
