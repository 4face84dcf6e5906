"""KV caches for decoding many continuations of one prefix: reserved capacity, shared prefix.

Beam search (K beams per clip) and log-likelihood ranking (N candidates per clip) both run
several rows after one prefix. transformers' ``DynamicCache`` holds the prefix's keys and values
once per *row*: ``batch_repeat_interleave`` copies them K (or N) times, every attention step
reads all the copies, and every beam reorder (``index_select``) copies the whole cache again. On
an H100 at batch 1,024 x beam 5 those copies were most of the device time
(bench/RESULTS_generation.md).

:class:`SharedPrefixLayer` keeps the prefix once per clip (``(A, Hkv, P, D)``) beside a buffer
for the rows' own positions (``(A*G, Hkv, capacity, D)``, G rows per clip, filled in place). A
beam reorder copies only the rows' own positions, and the attention function registered here
(:func:`shared_prefix_attention`) attends to the two parts with one softmax over both, which is
exactly attention over their concatenation. :func:`shared_prefix_decoding` switches an LM to
that attention for the decode steps only and back afterwards.

Requirements: transformers' per-layer caches (``transformers.cache_utils.DynamicLayer``; run
with 5.17 and 5.24) and the functional attention interface (``set_attn_implementation``);
where either is missing the callers keep transformers' own cache. Not thread-safe for one LM object: the
switch changes its config for the duration of a call.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from typing import Any

import torch

ATTN_NAME = "pengi_shared_prefix"
_ACTIVE: contextvars.ContextVar[Any] = contextvars.ContextVar("pengi_shared_prefix_cache", default=None)


# --------------------------------------------------------------------------------------------
# Reserved capacity (one copy of the prefix per row, appends without torch.cat)
# --------------------------------------------------------------------------------------------


@functools.cache
def reserved_layer_class() -> type | None:
    """A ``DynamicLayer`` that appends into reserved capacity; None where transformers has no
    per-layer cache classes (older releases keep working with their own cache)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class ReservedDynamicLayer(DynamicLayer):
        """``keys`` / ``values`` are views ``[..., :n, :]`` of buffers with room for more positions."""

        def _set(self, bk: torch.Tensor, bv: torch.Tensor, n: int) -> None:
            self._bk, self._bv, self._n = bk, bv, n
            self.keys, self.values = bk[..., :n, :], bv[..., :n, :]

        def reserve(self, extra: int) -> None:
            n = self.keys.shape[-2]
            bk = self.keys.new_empty(*self.keys.shape[:-2], n + extra, self.keys.shape[-1])
            bv = self.values.new_empty(*self.values.shape[:-2], n + extra, self.values.shape[-1])
            bk[..., :n, :], bv[..., :n, :] = self.keys, self.values
            self._set(bk, bv, n)

        def update(self, key_states, value_states, *args, **kwargs):
            n, m = self._n, key_states.shape[-2]
            if n + m > self._bk.shape[-2]:  # out of room: grow (not reached by beam_search)
                self.reserve(max(m, n))
            self._bk[..., n : n + m, :] = key_states
            self._bv[..., n : n + m, :] = value_states
            self._set(self._bk, self._bv, n + m)
            return self.keys, self.values

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            # only the filled positions are copied, into a buffer of the same capacity
            idx = beam_idx.to(self._bk.device)
            self._set(_gather_rows(self._bk, idx, self._n), _gather_rows(self._bv, idx, self._n), self._n)

        def batch_repeat_interleave(self, repeats: int) -> None:
            self._set(self._bk.repeat_interleave(repeats, 0), self._bv.repeat_interleave(repeats, 0), self._n)

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._set(self._bk[indices], self._bv[indices], self._n)

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)
            if self.is_initialized:
                self._set(self._bk, self._bv, self.keys.shape[-2])

    return ReservedDynamicLayer


def _gather_rows(buf: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """A new buffer of ``buf``'s capacity whose rows are ``buf[idx]``, copying only the first
    ``n`` positions (``index_select`` into a strided view: one copy)."""
    out = buf.new_empty(idx.numel(), *buf.shape[1:])
    if n:
        src, dst = buf[..., :n, :], out[..., :n, :]
        if src.requires_grad and torch.is_grad_enabled():
            dst.copy_(src.index_select(0, idx))  # out= does not record gradients
        else:
            torch.index_select(src, 0, idx, out=dst)
    return out


def reserve(cache: Any, extra: int) -> bool:
    """Give every plain ``DynamicLayer`` of ``cache`` room for ``extra`` more positions.

    Returns whether the cache was converted (False: not a per-layer dynamic cache)."""
    cls = reserved_layer_class()
    layers = _plain_layers(cache, cls)
    if layers is None or extra < 1:
        return False
    for layer in layers:
        layer.__class__ = cls
        layer.reserve(extra)
    return True


def _plain_layers(cache: Any, cls: type | None) -> list | None:
    """The cache's layers if every one is an initialised, non-empty plain ``DynamicLayer``."""
    if cls is None:
        return None
    layers = list(getattr(cache, "layers", ()) or ())
    if not layers or any(
        type(lay) is not cls.__base__ or not lay.is_initialized or not lay.keys.numel() for lay in layers
    ):
        return None
    return layers


# --------------------------------------------------------------------------------------------
# Shared prefix (one copy of the prefix per clip, G rows per clip)
# --------------------------------------------------------------------------------------------


@functools.cache
def shared_layer_class() -> type | None:
    """The shared-prefix layer class; None where transformers has no per-layer cache classes."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class SharedPrefixLayer(DynamicLayer):
        """Prefix keys/values ``pk, pv (A, Hkv, P, D)`` once per clip; the rows' own positions in
        ``gk, gv (A*G, Hkv, capacity, D)``, row ``a*G + g`` belonging to clip ``a``.

        ``keys`` / ``values`` are the rows' own filled positions (what ``update`` returns to the
        attention function); the sequence length the LM sees is ``P + filled``."""

        def share(self, group: int, extra: int) -> None:
            self.pk, self.pv = self.keys, self.values
            self.group = group
            A, H, _, D = self.pk.shape
            gk = self.pk.new_empty(A * group, H, max(extra, 1), D)
            self._set(gk, torch.empty_like(gk), 0)

        def _set(self, gk: torch.Tensor, gv: torch.Tensor, t: int) -> None:
            self.gk, self.gv, self.t = gk, gv, t
            self.keys, self.values = gk[..., :t, :], gv[..., :t, :]

        def get_seq_length(self) -> int:
            return self.pk.shape[-2] + self.t

        def update(self, key_states, value_states, *args, **kwargs):
            t, m = self.t, key_states.shape[-2]
            if t + m > self.gk.shape[-2]:  # out of room: grow
                cap = max(t + m, 2 * self.gk.shape[-2])
                gk = self.gk.new_empty(*self.gk.shape[:-2], cap, self.gk.shape[-1])
                gv = torch.empty_like(gk)
                gk[..., :t, :], gv[..., :t, :] = self.keys, self.values
                self._set(gk, gv, t)
            self.gk[..., t : t + m, :] = key_states
            self.gv[..., t : t + m, :] = value_states
            self._set(self.gk, self.gv, t + m)
            return self.keys, self.values

        def reorder_rows(self, rows: torch.Tensor) -> None:
            """Row ``j`` takes row ``rows[j]``'s own positions; every row stays with its clip
            (beam reorder). Copies the filled positions only; the prefix is not touched."""
            self._set(_gather_rows(self.gk, rows, self.t), _gather_rows(self.gv, rows, self.t), self.t)

        def select_clips(self, clips: torch.Tensor) -> None:
            """Keep clips ``clips`` (indices into the current clips) with all their rows."""
            G = self.group
            rows = (clips[:, None] * G + torch.arange(G, device=clips.device)).reshape(-1)
            self.pk, self.pv = self.pk.index_select(0, clips), self.pv.index_select(0, clips)
            self._set(_gather_rows(self.gk, rows, self.t), _gather_rows(self.gv, rows, self.t), self.t)

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            raise NotImplementedError("a shared-prefix cache reorders with reorder_rows (within clips) or select_clips")

        def batch_repeat_interleave(self, repeats: int) -> None:
            raise NotImplementedError("a shared-prefix cache is already shared by its rows")

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            raise NotImplementedError("a shared-prefix cache selects whole clips with select_clips")

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("a shared-prefix cache does not crop")

    return SharedPrefixLayer


def shareable(cache: Any) -> bool:
    """Whether :func:`share_prefix` can convert ``cache``."""
    return _plain_layers(cache, shared_layer_class()) is not None


def share_prefix(cache: Any, group: int, extra: int) -> bool:
    """Turn a freshly filled prefix cache (one row per clip) into a shared-prefix cache for
    ``group`` rows per clip with room for ``extra`` positions of their own.

    Returns False (cache untouched) where the cache is not a per-layer dynamic cache."""
    cls = shared_layer_class()
    layers = _plain_layers(cache, cls)
    if layers is None:
        return False
    for layer in layers:
        layer.__class__ = cls
        layer.share(group, extra)
    return True


def reorder_rows(cache: Any, rows: torch.Tensor) -> None:
    """Beam reorder of a shared-prefix cache (row ``j`` takes row ``rows[j]``, same clip)."""
    for layer in cache.layers:
        layer.reorder_rows(rows)


def select_clips(cache: Any, clips: torch.Tensor) -> None:
    """Keep the given clips (indices into the current clips) of a shared-prefix cache."""
    for layer in cache.layers:
        layer.select_clips(clips)


# --------------------------------------------------------------------------------------------
# Attention over [shared prefix | own positions]
# --------------------------------------------------------------------------------------------


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: softmax over the clip's prefix and the row's own keys.

    ``query (R, H, L, D)``, ``key``/``value (R, Hkv, t, D)`` (the row's own positions, from
    :class:`SharedPrefixLayer`), the prefix from the active cache's layer ``module.layer_idx``;
    ``attention_mask`` ``(R, 1, L, P + t)`` boolean (True = attend) or additive, or None.
    Returns ``(R, L, H, D)`` as transformers' SDPA function does. Without an active
    shared-prefix cache it is transformers' SDPA attention."""
    cache = _ACTIVE.get()
    layer = None if cache is None else cache.layers[module.layer_idx]
    if layer is None or not hasattr(layer, "pk"):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            scaling=scaling,
            dropout=dropout,
            **kwargs,
        )
    pk, pv, G = layer.pk, layer.pv, layer.group
    R, H, L, D = query.shape
    A, Hkv, P, _ = pk.shape
    t = key.shape[-2]
    rep = H // Hkv
    scale = D**-0.5 if scaling is None else scaling
    q = (query * scale).view(A, G, Hkv, rep, L, D)
    s_pre = torch.einsum("agkrld,akpd->agkrlp", q, pk)  # (A, G, Hkv, rep, L, P)
    s_own = q @ key.view(A, G, Hkv, 1, t, D).transpose(-1, -2)  # (A, G, Hkv, rep, L, t)
    scores = torch.cat([s_pre, s_own], dim=-1).float()
    if attention_mask is None and L > 1:  # no mask given: causal among the new positions
        i = torch.arange(L, device=query.device)[:, None]
        own = torch.arange(t, device=query.device)[None, :] <= i + (t - L)
        attention_mask = torch.cat([own.new_ones(L, P), own], dim=1)[None, None].expand(R, 1, L, P + t)
    if attention_mask is not None:
        m = attention_mask.reshape(A, G, 1, 1, L, P + t)  # broadcast over heads
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, float("-inf"))
        else:
            scores = scores + m.float()
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.einsum("agkrlp,akpd->agkrld", probs[..., :P], pv)
    out = out + probs[..., P:] @ value.view(A, G, Hkv, 1, t, D)
    return out.reshape(R, H, L, D).transpose(1, 2).contiguous(), None


@functools.cache
def _register() -> bool:
    """Register the attention function (and SDPA's mask format for it) with transformers."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    AttentionInterface.register(ATTN_NAME, shared_prefix_attention)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    return True


@contextlib.contextmanager
def shared_prefix_decoding(lm: torch.nn.Module, cache: Any) -> Iterator[bool]:
    """Switch ``lm`` to :func:`shared_prefix_attention` with ``cache`` active, and back after.

    Yields whether the switch happened (False: the LM or transformers cannot switch attention
    functions, and the caller must keep a per-row cache)."""
    config = getattr(lm, "config", None)
    original = getattr(config, "_attn_implementation", None)
    switched = False
    if original is not None and hasattr(lm, "set_attn_implementation") and _register():
        try:
            lm.set_attn_implementation(ATTN_NAME)
            switched = config._attn_implementation == ATTN_NAME
        except (ValueError, ImportError):
            switched = False
    token = _ACTIVE.set(cache if switched else None)
    try:
        yield switched
    finally:
        _ACTIVE.reset(token)
        if switched:
            lm.set_attn_implementation(original)
