"""Padding-free LM passes: a batch's samples concatenated into a few rows ("packing").

A Pengi training batch is ``[prefix | target]`` per sample, right-padded to the longest target.
On the embedded default's mix (one-word labels beside 30-token captions), a third of the LM
positions of a batch of 8 are padding, and the frozen LM's forward and backward cost is
proportional to positions. Packing puts each sample's real positions one after another into
rows of at most ``capacity`` positions; position ids restart at 0 for every sample, and
transformers' mask builder (``masking_utils.find_packed_sequence_indices``; flash attention's
variable-length path) turns the restarts into a block-diagonal causal mask, so every sample
attends only to itself, at the positions it had alone. The loss is taken at the packed position
of each target token's predecessor, which is the position that predicted it in the padded
batch: the same logits, the same loss (tests compare both passes' losses and gradients).

The plan is built on the host from lengths the collator knows (no device-to-host sync in the
training step): :func:`plan_packing`. Rows are rounded up to a multiple of :data:`ROW_MULTIPLE`
positions: with exact widths every batch had a shape of its own, and on the 2-core CPU the
train loop slowed from 0.40 to 0.47 s/step over 600 steps; rounded, it held 0.38-0.40 s/step
(bench/RESULTS.md section 3c). Compiled graphs (``torch.compile``) likewise see a few widths.

Packing needs an LM whose logits are its output embedding applied to the last hidden states
(GPT-2, Llama/SmolLM2 and most causal LMs; soft-capped or scaled logits are refused) and an
attention implementation that honours transformers' packed-sequence masks (eager, SDPA, flex;
flash attention through its variable-length path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Packed rows are this many positions wide or a multiple of it (see plan_packing's ``multiple``).
ROW_MULTIPLE = 16


@dataclass
class PackPlan:
    """Where each real position of a ``(B, L)`` padded batch goes in ``(R, C)`` packed rows.

    ``index`` (R*C,): flat index into the padded batch's ``(B*L)`` positions, ``B*L`` (one past
    the end: a zero embedding) for the padding at the end of a row. ``positions`` (R, C): each
    sample's positions 0..n-1 (a row's trailing padding is a segment of its own). ``predictor``
    (N,): for each real target token, in (sample, position) order, the packed flat position
    that predicts it; ``target_index`` (N,): that token's flat index in the ``(B*Lt)`` targets;
    ``sample`` (N,): its sample; ``sample_weight`` (N,): ``1 / (B x the sample's target
    tokens)``, so that ``(token_loss * sample_weight).sum()`` is the mean over samples of each
    sample's mean token loss (no scatter on the device).
    """

    index: torch.Tensor
    positions: torch.Tensor
    predictor: torch.Tensor
    target_index: torch.Tensor
    sample: torch.Tensor
    sample_weight: torch.Tensor
    rows: int
    width: int
    real_positions: int

    TENSORS = ("index", "positions", "predictor", "target_index", "sample", "sample_weight")

    def to(self, device: torch.device | str) -> PackPlan:
        moved = {k: getattr(self, k).to(device, non_blocking=True) for k in self.TENSORS}
        return PackPlan(**moved, rows=self.rows, width=self.width, real_positions=self.real_positions)

    @property
    def fill(self) -> float:
        """Real positions / packed positions."""
        return self.real_positions / (self.rows * self.width)


def plan_packing(real: np.ndarray | torch.Tensor, n_context: int, capacity: int, multiple: int = 1) -> PackPlan:
    """Plan the packing of a padded batch.

    Args:
        real: (B, L) bool, True on the real positions: each sample's context positions
            (``[:n_context]``: prefix, extra text) and targets (``[n_context:]``). A sample's
            real positions are packed in order, so the padding may sit anywhere.
        n_context: positions before the targets.
        capacity: positions per packed row; a sample longer than that gets a row of its own.
            Samples fill rows in batch order (no sorting: the rows' contents do not depend on
            lengths, and the plan is deterministic).
        multiple: the rows' width is rounded up to a multiple of this, so that batches share
            a few shapes (kernel caches, compiled graphs) instead of one per total length.
    """
    real = np.asarray(real.cpu() if isinstance(real, torch.Tensor) else real, dtype=bool)
    B, L = real.shape
    n = real.sum(axis=1)  # (B,)
    if (real[:, n_context:].sum(axis=1) == 0).any():
        raise ValueError("every sample needs at least one real target token")
    cap = max(int(capacity), int(n.max()))
    row = np.empty(B, dtype=np.int64)
    offset = np.empty(B, dtype=np.int64)
    r, fill = 0, 0
    for b in range(B):
        if fill + n[b] > cap:
            r, fill = r + 1, 0
        row[b], offset[b] = r, fill
        fill += n[b]
    rows = r + 1
    fills = np.bincount(row, weights=n, minlength=rows).astype(np.int64)
    width = -(-int(fills.max()) // multiple) * multiple
    bi, li = np.nonzero(real)  # real positions, sample-major, in order
    rank = (np.cumsum(real, axis=1) - 1)[bi, li]  # position of each inside its sample
    packed = row[bi] * width + offset[bi] + rank  # (M,) packed flat position
    index = np.full(rows * width, B * L, dtype=np.int64)
    index[packed] = bi * L + li
    positions = np.empty((rows, width), dtype=np.int64)
    for q in range(rows):  # samples' own positions; a row's tail padding restarts at 0
        tail = width - fills[q]
        positions[q, fills[q] :] = np.arange(tail)
    positions.reshape(-1)[packed] = rank
    is_target = li >= n_context
    predictor = packed[is_target] - 1
    if (rank[is_target] == 0).any():
        raise ValueError("a target token has no context before it")
    target_index = bi[is_target] * (L - n_context) + (li[is_target] - n_context)
    per_sample = real[:, n_context:].sum(axis=1)  # (B,) target tokens
    sample_weight = 1.0 / (B * per_sample[bi[is_target]])
    return PackPlan(
        index=torch.from_numpy(index),
        positions=torch.from_numpy(positions),
        predictor=torch.from_numpy(predictor),
        target_index=torch.from_numpy(target_index),
        sample=torch.from_numpy(bi[is_target]),
        sample_weight=torch.from_numpy(sample_weight.astype(np.float32)),
        rows=rows,
        width=width,
        real_positions=int(n.sum()),
    )
