"""Datasets and loaders over the triples and the audio store.

* :func:`load_triples` reads ``data/triples/<split>.parquet`` and keeps the rows whose clip is
  usable in the store (clips quarantined by the store are excluded with a logged count and
  returned in the report; a clip missing from the store is an error: the store is stale).
* :class:`TripleDataset` yields one example per triple: a fixed-length audio crop plus the
  prompt and target text. Training crops are random; the randomness of sample ``i`` in
  epoch ``e`` comes from ``numpy.random.default_rng((seed, e, i))``, a pure function of the
  seed and the data position. So the crop generator's state *is* the checkpointed data
  position (epoch, batch): a resumed run draws exactly the crops an uninterrupted one would,
  whatever the number of DataLoader workers. Outside training the crop is deterministic.
* :class:`ResumableBatchSampler` shuffles per epoch with its own seeded generator, shards like
  ``torch.utils.data.DistributedSampler`` (``rank::world_size``) and can start mid-epoch.
* :class:`Collator` pads audio, tokenizes targets for the LM (``target + eos``; labels ``-100``
  on padding) and maps prompts to indices into a fixed prompt vocabulary (for cached prompt
  embeddings).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from pengi.audio_store import AudioStore, crop

log = logging.getLogger(__name__)

TRIPLE_COLUMNS = ("triple_id", "source", "clip_id", "audio_uri", "task", "prompt", "target")
IGNORE_INDEX = -100  # label value that the LM loss skips (prefix, padding)


@dataclass
class TripleTable:
    """Columns of a triples table (plain lists), plus what was excluded and why."""

    columns: dict[str, list[str]]
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> rows

    def __len__(self) -> int:
        return len(self.columns["triple_id"])

    def unique_prompts(self) -> list[str]:
        """Distinct prompts, sorted (a stable vocabulary for the prompt-embedding cache)."""
        return sorted(set(self.columns["prompt"]))


def load_triples(path: str | Path, store: AudioStore | None = None, tasks: Sequence[str] = ()) -> TripleTable:
    """Read a triples Parquet file, keeping rows usable for training.

    Args:
        path: ``train.parquet`` / ``val.parquet`` with :data:`TRIPLE_COLUMNS`.
        store: when given, rows whose clip the store quarantined are excluded (counted, logged).
        tasks: keep only these task names (empty = all); others are excluded (counted).

    Raises:
        ValueError: a column is missing, or a clip is absent from the store (stale store).
    """
    table = pq.read_table(path)
    missing = [c for c in TRIPLE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: triples lack columns {missing} (have {table.column_names})")
    cols = {c: table.column(c).to_pylist() for c in TRIPLE_COLUMNS}
    n = len(cols["triple_id"])
    keep = [True] * n
    excluded: dict[str, int] = {}
    if tasks:
        wanted = set(tasks)
        unknown = wanted - set(cols["task"])
        if unknown:
            log.warning("%s: no triples of task(s) %s", path, sorted(unknown))
        for i, t in enumerate(cols["task"]):
            if t not in wanted:
                keep[i] = False
                excluded["task not selected"] = excluded.get("task not selected", 0) + 1
    if store is not None:
        absent = sorted({u for u in cols["audio_uri"] if u not in store and u not in store.quarantined})
        if absent:
            raise ValueError(
                f"{path}: {len(absent)} clip(s) are not in the audio store {store.path} "
                f"(e.g. {absent[0]!r}); rebuild it with the audio-store stage"
            )
        for i, u in enumerate(cols["audio_uri"]):
            if keep[i] and u in store.quarantined:
                keep[i] = False
                excluded["audio quarantined"] = excluded.get("audio quarantined", 0) + 1
    for reason, count in excluded.items():
        log.warning("%s: excluded %d of %d triples: %s", path, count, n, reason)
    cols = {c: [v for v, k in zip(vals, keep, strict=True) if k] for c, vals in cols.items()}
    return TripleTable(cols, excluded)


def clap_pairs(triples: TripleTable) -> TripleTable:
    """The CLAP training pairs: distinct (clip, target text) pairs of the triples.

    The paper trains CLAP "on the same audio-text pairs collected for Pengi"; the text of a
    pair is the triple's *target* (the caption, label list, answer...), since the prompt is a
    task template that says nothing about the clip. A clip rendered with the same target by
    several templates would otherwise appear several times per epoch, so pairs are deduplicated
    (first triple kept, in table order).
    """
    seen: set[tuple[str, str]] = set()
    keep = []
    for i, key in enumerate(zip(triples.columns["audio_uri"], triples.columns["target"], strict=True)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    cols = {c: [vals[i] for i in keep] for c, vals in triples.columns.items()}
    excluded = dict(triples.excluded)
    if len(keep) < len(triples):
        excluded["duplicate (clip, target) pair"] = len(triples) - len(keep)
    return TripleTable(cols, excluded)


class TripleDataset(torch.utils.data.Dataset):
    """One example per row: ``{"audio", "audio_length", "prompt", "target", "triple_id"}``.

    Indexed by ``(index, epoch)`` pairs (what :class:`ResumableBatchSampler` yields) or by a
    plain index (epoch 0). ``audio`` is ``(clip_samples,)`` float32, or float16 with
    ``audio_dtype=np.float16`` (the stored samples, unconverted: half the bytes through worker
    IPC and host-to-device copies; the training steps upcast on the device), zero-padded at
    the end for short clips; ``audio_length`` is the number of real samples.
    """

    def __init__(
        self,
        triples: TripleTable,
        store: AudioStore,
        clip_samples: int,
        train: bool,
        seed: int = 0,
        audio_dtype: np.dtype = np.float32,
    ):
        self.triples = triples
        self.store = store
        self.clip_samples = int(clip_samples)
        self.train = train
        self.seed = int(seed)
        self.audio_dtype = np.dtype(audio_dtype)

    def __len__(self) -> int:
        return len(self.triples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        cols = self.triples.columns
        uri = cols["audio_uri"][index]
        if self.train:
            rng = np.random.default_rng((self.seed, epoch, index))  # a pure function of the data position
            wave, length = crop(self.store, uri, self.clip_samples, "random", rng, self.audio_dtype)
        else:
            wave, length = crop(self.store, uri, self.clip_samples, "start", None, self.audio_dtype)
        return {
            "audio": torch.from_numpy(wave),
            "audio_length": length,
            "prompt": cols["prompt"][index],
            "target": cols["target"][index],
            "triple_id": cols["triple_id"][index],
        }


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(index, epoch)`` for one rank; shuffled per epoch; can start mid-epoch.

    Sharding follows ``DistributedSampler``: the epoch's permutation (generator seeded with
    ``seed + epoch``, the same on every rank) is split ``rank::world_size``. With ``drop_last``
    the permutation is cut to a multiple of ``world_size * batch_size`` so every rank sees the
    same number of full batches (contrastive losses want a fixed batch); without it, no sample
    is dropped or repeated and ranks may differ by one batch (fine for validation, whose sums
    are all-reduced).

    With ``lengths`` (one cost per sample, e.g. its target's token count) batches are grouped
    by length, as ``group_by_length`` does in transformers' Trainer: the epoch's permutation is
    cut into groups of ``group_batches`` global batches, each group is sorted by length (stable)
    and cut into global batches, and the order of those batches is shuffled with the same
    generator. Padding then costs little, and every batch is still a pure function of
    ``(seed, epoch, batch)``, so resuming mid-epoch stays exact.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        lengths: Sequence[int] | None = None,
        group_batches: int = 32,
    ):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or group_batches < 1:
            raise ValueError(f"bad sampler arguments: batch_size={batch_size} rank={rank} world_size={world_size}")
        if lengths is not None and len(lengths) != num_samples:
            raise ValueError(f"{len(lengths)} lengths for {num_samples} samples")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.lengths = list(lengths) if lengths is not None else None
        self.group_batches = group_batches
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (reshuffles) and the first batch to yield (resume mid-epoch)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def batches_per_epoch(self) -> int:
        if self.drop_last:
            return self.num_samples // (self.batch_size * self.world_size)
        per_rank = len(range(self.rank, self.num_samples, self.world_size))
        return math.ceil(per_rank / self.batch_size)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        if self.drop_last:
            order = order[: self.batches_per_epoch() * self.batch_size * self.world_size]
        if self.lengths is not None:
            order = self._group_by_length(order, g)
        mine = order[self.rank :: self.world_size]
        for b in range(self.start_batch, self.batches_per_epoch()):
            chunk = mine[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(i, self.epoch) for i in chunk]

    def _group_by_length(self, order: list[int], g: torch.Generator) -> list[int]:
        """Sort groups of global batches by length, then shuffle the global batches' order
        (a trailing partial global batch, only without ``drop_last``, stays last)."""
        lengths = self.lengths
        gb = self.batch_size * self.world_size  # one global batch: every rank's micro-batch
        span = gb * self.group_batches
        grouped: list[int] = []
        for start in range(0, len(order), span):
            grouped += sorted(order[start : start + span], key=lambda i: lengths[i])
        n_full = len(grouped) // gb
        perm = torch.randperm(n_full, generator=g).tolist() if self.shuffle else list(range(n_full))
        return [i for b in perm for i in grouped[b * gb : (b + 1) * gb]] + grouped[n_full * gb :]


def _stack_audio(waves: list[torch.Tensor]) -> torch.Tensor:
    """(B, S) batch of equal-length clips, built with ``np.stack`` (~60x faster than
    ``torch.stack`` for long clips on a small CPU, measured) straight into shared memory when
    running in a DataLoader worker, so the batch is not copied again on its way to the trainer."""
    shape = (len(waves), *waves[0].shape)
    if torch.utils.data.get_worker_info() is not None:
        # allocated in shared memory, as torch's default_collate does
        storage = waves[0]._typed_storage()._new_shared(math.prod(shape), device=waves[0].device)
        out = waves[0].new(storage).resize_(shape)
    else:
        out = torch.empty(shape, dtype=waves[0].dtype)
    np.stack([w.numpy() for w in waves], out=out.numpy())
    return out


class Collator:
    """Batch examples for training.

    Output keys: ``audio`` (B, S) float32, ``audio_length`` (B,), ``prompt``/``target``/
    ``triple_id`` (lists of str); with ``lm_tokenizer``: ``input_ids``, ``attention_mask``,
    ``labels`` (B, T) for the target (``target + eos``, truncated to ``max_target_tokens``
    including the eos; ``labels`` is ``-100`` on padding) and ``target_lengths`` (a list of B
    ints: the real tokens per row, on the host); with ``prompt_vocab``:
    ``prompt_index`` (B,) into that list; with ``text_tokenizer``: ``text_input_ids`` and
    ``text_attention_mask`` for the target text (CLAP); with ``text_vocab``: ``text_index``
    (B,) of the target text in that list (CLAP with cached text features).
    """

    def __init__(
        self,
        lm_tokenizer: Any = None,
        max_target_tokens: int = 40,
        prompt_vocab: Sequence[str] | None = None,
        text_tokenizer: Callable[[list[str]], dict[str, torch.Tensor]] | None = None,
        text_vocab: Sequence[str] | None = None,
    ):
        self.lm_tokenizer = lm_tokenizer
        self.max_target_tokens = max_target_tokens
        self.prompt_to_index = None if prompt_vocab is None else {p: i for i, p in enumerate(prompt_vocab)}
        self.text_tokenizer = text_tokenizer
        self.text_to_index = None if text_vocab is None else {t: i for i, t in enumerate(text_vocab)}
        if lm_tokenizer is not None:
            if lm_tokenizer.eos_token_id is None:
                raise ValueError("the LM tokenizer has no eos token")
            pad = lm_tokenizer.pad_token_id
            self.pad_id = lm_tokenizer.eos_token_id if pad is None else pad

    def tokenize_targets(self, targets: list[str]) -> dict[str, torch.Tensor]:
        """``target + eos`` token ids, right-padded; labels ``-100`` on the padding."""
        tok = self.lm_tokenizer
        ids = tok(targets, add_special_tokens=False)["input_ids"]
        ids = [seq[: self.max_target_tokens - 1] + [tok.eos_token_id] for seq in ids]
        width = max(len(s) for s in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(ids), width), dtype=torch.long)  # (B, T)
        for b, seq in enumerate(ids):
            input_ids[b, : len(seq)] = torch.tensor(seq)
            labels[b, : len(seq)] = torch.tensor(seq)
            mask[b, : len(seq)] = 1
        # the lengths as a host-side list too: packing plans from them without reading the mask back
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "target_lengths": [len(s) for s in ids]}

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "audio": _stack_audio([e["audio"] for e in examples]),  # (B, S)
            "audio_length": torch.tensor([e["audio_length"] for e in examples], dtype=torch.long),  # (B,)
            "prompt": [e["prompt"] for e in examples],
            "target": [e["target"] for e in examples],
            "triple_id": [e["triple_id"] for e in examples],
        }
        if self.lm_tokenizer is not None:
            batch.update(self.tokenize_targets(batch["target"]))
        if self.prompt_to_index is not None:
            try:
                batch["prompt_index"] = torch.tensor([self.prompt_to_index[p] for p in batch["prompt"]])  # (B,)
            except KeyError as exc:
                raise KeyError(f"prompt {exc.args[0]!r} is not in the prompt vocabulary") from None
        if self.text_to_index is not None:
            batch["text_index"] = torch.tensor([self.text_to_index[t] for t in batch["target"]])  # (B,)
        if self.text_tokenizer is not None:
            enc = self.text_tokenizer(batch["target"])
            batch["text_input_ids"] = enc["input_ids"]
            batch["text_attention_mask"] = enc["attention_mask"]
        return batch


def make_loader(
    dataset: torch.utils.data.Dataset,
    sampler: ResumableBatchSampler,
    collate_fn: Callable,
    num_workers: int,
    seed: int = 0,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``sampler``'s batches.

    It gets its own generator (seeded per epoch by the caller through ``seed``) so creating
    the iterator never consumes the global torch RNG, which the model's dropout uses and a
    checkpoint restores: otherwise a resumed run would diverge from an uninterrupted one.
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
        # the default 2 batches per worker: long-audio batches are large (32 x 7 s = 40 MB)
        prefetch_factor=2 if num_workers > 0 else None,
    )
