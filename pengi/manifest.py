"""The canonical manifest: one row per clip, one schema for every source (DESIGN.md §4).

Adapters in ``pengi.sources`` produce rows as plain dicts; :func:`to_table` checks them against
:data:`MANIFEST_SCHEMA` and :func:`write_manifest` writes Parquet atomically. Quarantined rows
stay in the manifest with ``status == "quarantined"`` and a ``reason``, so that per source
``rows read == kept + quarantined`` holds and nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pengi.fileio import atomic_path

STATUS_OK = "ok"
STATUS_QUARANTINED = "quarantined"

SPLITS = ("train", "val", "test")

QA_TYPE = pa.struct([("question", pa.string()), ("answer", pa.string())])

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("audio_uri", pa.string(), nullable=False),
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int16()),
        pa.field("captions", pa.list_(pa.string()), nullable=False),
        pa.field("labels", pa.list_(pa.string()), nullable=False),
        pa.field("qa", pa.list_(QA_TYPE), nullable=False),
        pa.field("attrs", pa.map_(pa.string(), pa.string()), nullable=False),
        pa.field("identity", pa.list_(pa.string()), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
    ]
)

_DEFAULTS: dict[str, Any] = {
    "duration_s": None,
    "sample_rate": None,
    "channels": None,
    "captions": [],
    "labels": [],
    "qa": [],
    "attrs": {},
    "identity": [],
    "status": STATUS_OK,
    "reason": None,
}


def stable_split(clip_id: str, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Deterministic split for sources without an official one: a hash of the clip id.

    Uses SHA-1 (not Python's salted ``hash``), so every process and machine agrees.
    """
    bucket = int.from_bytes(hashlib.sha1(clip_id.encode("utf-8")).digest()[:8], "big") / 2**64
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "val"
    return "train"


def normalise_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and coerce the loose types adapters produce (tuples, dict attrs)."""
    out = {**_DEFAULTS, **row}
    missing = [f.name for f in MANIFEST_SCHEMA if not f.nullable and out.get(f.name) is None]
    if missing:
        raise ValueError(f"manifest row {row.get('clip_id')!r} lacks {', '.join(missing)}")
    out["attrs"] = {str(k): "" if v is None else str(v) for k, v in dict(out["attrs"]).items()}
    out["qa"] = [
        {"question": q["question"], "answer": q["answer"]} if isinstance(q, Mapping) else {"question": q[0], "answer": q[1]}
        for q in out["qa"]
    ]
    for key in ("captions", "labels", "identity"):
        out[key] = [str(v) for v in out[key]]
    return {f.name: out[f.name] for f in MANIFEST_SCHEMA}


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts) -> a table with exactly :data:`MANIFEST_SCHEMA`."""
    rows = [normalise_row(r) for r in rows]
    cols = {f.name: [r[f.name] for r in rows] for f in MANIFEST_SCHEMA}
    cols["attrs"] = [list(a.items()) for a in cols["attrs"]]
    return pa.Table.from_pydict(cols, schema=MANIFEST_SCHEMA)


def write_parquet_atomic(table: pa.Table, path: str | Path) -> Path:
    """Write a Parquet file via a temporary name and rename, so readers never see half a file."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_manifest(rows: Iterable[Mapping[str, Any]], path: str | Path) -> pa.Table:
    """Validate rows against the schema and write them; returns the table written."""
    table = to_table(rows)
    write_parquet_atomic(table, path)
    return table


def read_manifest(path: str | Path) -> pa.Table:
    """Read a manifest and check that its schema is exactly :data:`MANIFEST_SCHEMA`."""
    table = pq.read_table(path)
    if not table.schema.equals(MANIFEST_SCHEMA, check_metadata=False):
        raise ValueError(f"{path}: schema differs from the manifest schema:\n{table.schema}")
    return table


def read_manifest_frame(path: str | Path):
    """:func:`read_manifest` as a polars DataFrame (one chunk; ``attrs`` stays a Map column).

    polars is imported here, not at module level, so pyarrow-only users stay light.
    """
    import polars as pl

    return pl.from_arrow(read_manifest(path)).rechunk()
