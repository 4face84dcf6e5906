"""Synthetic manifests for the data-stage benchmarks (``render_1m.py``, ``validate_1m.py``).

Builds ``n`` rows spread over sources that exercise every template, in the exact
``MANIFEST_SCHEMA``, vectorised (numpy/polars; no per-row Python), and writes them as
``<dir>/<source>.parquet``. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from pengi.manifest import MANIFEST_SCHEMA, write_parquet_atomic
from pengi.tasks import EVAL_TASKS

# source -> (share of rows, kind); kinds decide which columns are filled.
MIX = {
    "clotho": (0.25, "captions"),
    "audiocaps": (0.15, "captions"),
    "fsd50k": (0.15, "labels"),
    "clotho_aqa": (0.05, "qa"),
    "meld": (0.10, "emotion"),
    "nsynth": (0.10, "note"),
    "fma": (0.05, "music"),
    "wavcaps": (0.15, "metadata"),
}
EVAL_SOURCES = {"esc50": 2000, "urbansound8k": 8732}
WORDS = np.array("dog bark rain car engine bird music speech wind door water people crowd bell".split())


def _lists(rng: np.random.Generator, n: int, k: int, prefix: str) -> pa.ListArray:
    """``n`` lists of ``k`` short random strings (vectorised)."""
    words = WORDS[rng.integers(0, len(WORDS), size=n * k)].astype(object)
    if prefix:
        words = prefix + " " + words
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k), pa.int32()), pa.array(words, pa.string()))


def _frame(source: str, kind: str, n: int, rng: np.random.Generator, role: str = "train") -> pa.Table:
    ids = pl.Series("clip_id", np.char.add(f"{source}-", np.arange(n).astype(str)))
    split_draw = rng.random(n)
    split = np.where(split_draw < 0.8, "train", np.where(split_draw < 0.9, "val", "test")) if role == "train" else np.full(n, "test")
    quarantined = rng.random(n) < 0.01
    df = pl.DataFrame(
        {
            "source": [source] * n,
            "clip_id": ids,
            "split": split,
            "audio_uri": np.char.add(f"s3://bucket/{source}/", np.arange(n).astype(str)),
            "duration_s": rng.uniform(1.0, 30.0, n),
            "sample_rate": np.full(n, 44100, np.int32),
            "channels": np.ones(n, np.int16),
            "status": np.where(quarantined, "quarantined", "ok"),
            "reason": pl.Series(np.where(quarantined, "undecodable:synthetic", ""), dtype=pl.String).replace("", None),
        }
    )
    empty = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1), pa.int32()), pa.array([], pa.string()))
    captions = labels = empty
    qa = pa.ListArray.from_arrays(
        pa.array(np.zeros(n + 1), pa.int32()), pa.array([], pa.struct([("question", pa.string()), ("answer", pa.string())]))
    )
    attrs: dict[str, np.ndarray] = {}
    if kind in ("captions", "metadata"):
        captions = _lists(rng, n, 5 if kind == "captions" else 1, "a sound of")
    if kind in ("labels", "metadata", "emotion", "note", "music"):
        labels = _lists(rng, n, 3 if kind in ("labels", "metadata") else 1, "")
    if kind == "qa":
        q, a = _lists(rng, n, 2, "is there a"), _lists(rng, n, 2, "")
        qa = pa.ListArray.from_arrays(
            pa.array(np.arange(0, 2 * n + 1, 2), pa.int32()),
            pa.StructArray.from_arrays([q.flatten(), a.flatten()], names=["question", "answer"]),
        )
    if kind == "emotion":
        attrs = {"emotion": WORDS[rng.integers(0, 5, n)], "sentiment": np.array(["positive", "negative", "neutral"])[rng.integers(0, 3, n)]}
    if kind == "note":
        attrs = {"pitch": rng.integers(21, 108, n).astype(str), "velocity": np.array(["25", "50", "75", "100", "127"])[rng.integers(0, 5, n)],
                 "instrument_source": np.array(["acoustic", "electronic", "synthetic"])[rng.integers(0, 3, n)],
                 "qualities": np.array(["", "bright", "dark,reverb"])[rng.integers(0, 3, n)]}  # fmt: skip
    if kind == "music":
        attrs = {"genre": WORDS[rng.integers(0, 8, n)]}
    if role != "train":  # an evaluation set: one official class per clip, and folds
        vocab = np.array(EVAL_TASKS[source].vocabulary, dtype=object)
        labels = pa.ListArray.from_arrays(pa.array(np.arange(n + 1), pa.int32()), pa.array(vocab[rng.integers(0, len(vocab), n)], pa.string()))
        attrs = {"fold": (rng.integers(1, 6, n)).astype(str)}
    keys = list(attrs)
    if keys:
        offsets = pa.array(np.arange(0, len(keys) * n + 1, len(keys)), pa.int32())
        kv_keys = pa.array(np.tile(np.array(keys, dtype=object), n), pa.string())
        kv_vals = pa.array(np.stack([attrs[k] for k in keys], axis=1).reshape(-1).astype(object), pa.string())
    else:
        offsets, kv_keys, kv_vals = pa.array(np.zeros(n + 1), pa.int32()), pa.array([], pa.string()), pa.array([], pa.string())
    attr_arr = pa.MapArray.from_arrays(offsets, kv_keys, kv_vals)
    # Freesound-like identity keys drawn from a shared id space, so some rows overlap the eval sets.
    identity = pa.ListArray.from_arrays(
        pa.array(np.arange(n + 1), pa.int32()), pa.array(np.char.add("freesound:", rng.integers(0, 400_000, n).astype(str)).astype(object))
    )
    table = pa.table(
        {
            **{c: df.get_column(c).to_arrow() for c in ("source", "clip_id", "split", "audio_uri", "duration_s", "sample_rate", "channels")},
            "captions": captions,
            "labels": labels,
            "qa": qa,
            "attrs": attr_arr,
            "identity": identity,
            "status": df.get_column("status").to_arrow(),
            "reason": df.get_column("reason").to_arrow(),
        }
    )
    return table.cast(MANIFEST_SCHEMA)


def write_synthetic(out_dir: Path, n: int, seed: int = 0) -> dict[str, int]:
    """Write ``n`` training rows (split by :data:`MIX`) plus the eval sources; returns rows per source."""
    rng = np.random.default_rng(seed)
    counts = {}
    for source, (share, kind) in MIX.items():
        m = int(n * share)
        write_parquet_atomic(_frame(source, kind, m, rng), out_dir / f"{source}.parquet")
        counts[source] = m
    for source, m in EVAL_SOURCES.items():
        write_parquet_atomic(_frame(source, "labels", m, rng, role="eval"), out_dir / f"{source}.parquet")
        counts[source] = m
    return counts
