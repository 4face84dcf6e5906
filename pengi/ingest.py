"""Ingest one source: adapter -> quarantine rules -> audio probing -> manifest + report.

The rules (DESIGN.md §7, "nothing is dropped silently"): every row an adapter returns ends up
in the manifest, either ``status="ok"`` or ``status="quarantined"`` with a reason, and the
report states ``rows_read == kept + quarantined`` with a count per reason. Reasons are short
tags, optionally with a detail after a colon (``unknown_label:xyz``); the report counts them
by tag so the histogram stays small.

Rules applied here, in order (the first one that fires is the row's reason):

1. whatever the adapter already flagged (missing audio, bad text encoding, bad file name,
   unknown label codes, ...);
2. ``duplicate_clip_id`` — the second and later rows with an already-seen clip id;
3. ``unknown_label`` — a label outside the adapter's closed vocabulary;
4. ``empty_caption`` / ``empty_qa`` — an empty caption, question or answer;
   ``no_annotation`` — no caption, label or QA at all;
5. audio: ``missing_audio``, ``empty``, ``truncated``, ``undecodable``, ``nonfinite`` (from
   :func:`pengi.audio.probe`, run in parallel with ``probe_workers`` threads: libsndfile
   releases the GIL, so threads scale without pickling rows between processes);
6. ``too_short`` / ``too_long`` / ``bad_sample_rate`` against ``DataConfig``'s limits.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pengi import storage
from pengi.audio import AudioError, AudioInfo, probe
from pengi.config import DataConfig, SourceConfig
from pengi.fileio import write_text_atomic
from pengi.manifest import STATUS_QUARANTINED, write_manifest
from pengi.sources.base import is_ok, quarantine, run_adapter

log = logging.getLogger(__name__)

PROBE_BATCH = 10_000


@dataclass
class IngestReport:
    """Per-source accounting written next to the manifest (``<source>.report.json``)."""

    source: str
    adapter: str
    root: str
    rows_read: int
    kept: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)  # kept rows per split
    metadata_files: list[str] = field(default_factory=list)
    verify_audio: str = "tail"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def reason_tag(reason: str) -> str:
    """``unknown_label:xyz`` -> ``unknown_label`` (the report's histogram key)."""
    return reason.split(":", 1)[0]


def apply_text_rules(rows: list[dict[str, Any]], vocabulary: frozenset[str] | None) -> None:
    """Quarantine duplicates, unknown labels, empty captions/QA and rows with no annotation."""
    seen: set[str] = set()
    for row in rows:
        cid = row["clip_id"]
        if cid in seen:
            quarantine(row, "duplicate_clip_id")
            continue
        seen.add(cid)
        if not is_ok(row):
            continue
        if vocabulary is not None:
            unknown = [lab for lab in row["labels"] if lab not in vocabulary]
            if unknown:
                quarantine(row, f"unknown_label:{unknown[0]}")
                continue
        if any(not str(c).strip() for c in row["captions"]):
            quarantine(row, "empty_caption")
        elif any(not str(q["question"]).strip() or not str(q["answer"]).strip() for q in row["qa"]):
            quarantine(row, "empty_qa")
        elif any(not str(lab).strip() for lab in row["labels"]):
            quarantine(row, "empty_label")
        elif not row["captions"] and not row["labels"] and not row["qa"]:
            quarantine(row, "no_annotation")


def _probe_one(uri: str, verify: str) -> AudioInfo | AudioError:
    try:
        return probe(uri, verify=verify)  # type: ignore[arg-type]
    except AudioError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - a broken file must never crash the run
        return AudioError("undecodable", f"{uri}: {type(exc).__name__}: {exc}")


def probe_rows(
    rows: list[dict[str, Any]],
    data_cfg: DataConfig,
    probe_fn: Callable[[str, str], AudioInfo | AudioError] = _probe_one,
) -> None:
    """Probe the audio of every ok row in parallel; fill duration/rate/channels or quarantine."""
    todo = [r for r in rows if is_ok(r)]
    workers = max(1, data_cfg.probe_workers)
    verify = data_cfg.verify_audio
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None

    def results() -> Iterator[AudioInfo | AudioError]:
        # Batches bound the number of pending futures (millions of rows for AudioSet).
        for i in range(0, len(todo), PROBE_BATCH):
            uris = [r["audio_uri"] for r in todo[i : i + PROBE_BATCH]]
            if pool is None:
                yield from (probe_fn(u, verify) for u in uris)
            else:
                yield from pool.map(lambda u: probe_fn(u, verify), uris)

    try:
        for n, (row, res) in enumerate(zip(todo, results()), start=1):
            if n % PROBE_BATCH == 0:
                log.info("probed %d / %d files", n, len(todo))
            if isinstance(res, AudioError):
                log.debug("quarantine %s: %s", row["clip_id"], res)
                # "missing" here means listed but gone when opened: the same fact as the adapters' tag.
                quarantine(row, "missing_audio" if res.reason == "missing" else res.reason)
                continue
            row["duration_s"] = float(res.duration_s)
            row["sample_rate"] = int(res.sample_rate)
            row["channels"] = int(res.channels)
            if not data_cfg.min_sample_rate <= res.sample_rate <= data_cfg.max_sample_rate:
                quarantine(row, f"bad_sample_rate:{res.sample_rate}")
            elif res.duration_s < data_cfg.min_duration_s:
                quarantine(row, f"too_short:{res.duration_s:.3f}")
            elif res.duration_s > data_cfg.max_duration_s:
                quarantine(row, f"too_long:{res.duration_s:.1f}")
            elif res.channels < 1:
                quarantine(row, "undecodable:no_channels")
    finally:
        if pool is not None:
            pool.shutdown()


def resolve_root(root: str, base_dir: str | os.PathLike | None) -> str:
    """An s3:// URI or absolute path unchanged; a relative path joined onto ``base_dir``."""
    if storage.is_s3(root) or os.path.isabs(root) or base_dir is None:
        return root
    return str(Path(base_dir, root))


def ingest_source(
    source_cfg: SourceConfig,
    data_cfg: DataConfig,
    out_path: str | os.PathLike,
    report_path: str | os.PathLike | None = None,
    base_dir: str | os.PathLike | None = None,
) -> IngestReport:
    """Read one source into a manifest, quarantining bad rows, and write its report.

    Args:
        source_cfg: which adapter, root and options.
        data_cfg: probing parallelism and the quarantine limits.
        out_path: manifest Parquet path (written atomically).
        report_path: JSON report path; default ``<out_path without .parquet>.report.json``.
        base_dir: directory that relative roots are relative to (the repo root).

    Returns:
        The :class:`IngestReport` (also written to ``report_path``).

    Raises:
        pengi.sources.MetadataError: a metadata file is malformed (names file, line, column).
        KeyError / ValueError: unknown adapter or option.
    """
    adapter = source_cfg.adapter or source_cfg.name
    root = resolve_root(source_cfg.root, base_dir)
    log.info("ingest %s (adapter %s) from %s", source_cfg.name, adapter, root)
    read = run_adapter(adapter, root, source_cfg.options)
    rows = read.rows
    for row in rows:
        row["source"] = source_cfg.name
    apply_text_rules(rows, read.vocabulary)
    probe_rows(rows, data_cfg)

    reasons = Counter(reason_tag(r["reason"]) for r in rows if r["status"] == STATUS_QUARANTINED)
    kept = sum(1 for r in rows if is_ok(r))
    report = IngestReport(
        source=source_cfg.name,
        adapter=adapter,
        root=str(source_cfg.root),
        rows_read=len(rows),
        kept=kept,
        quarantined=len(rows) - kept,
        reasons=dict(sorted(reasons.items())),
        splits=dict(sorted(Counter(r["split"] for r in rows if is_ok(r)).items())),
        metadata_files=list(read.metadata_files),
        verify_audio=data_cfg.verify_audio,
    )
    assert report.rows_read == report.kept + report.quarantined  # noqa: S101 - the accounting invariant
    write_manifest(rows, out_path)
    out_path = Path(out_path)
    report_path = Path(report_path) if report_path else out_path.with_name(out_path.name.removesuffix(".parquet") + ".report.json")
    write_text_atomic(report_path, report.to_json())
    log.info("%s: %d rows read, %d kept, %d quarantined %s", source_cfg.name, report.rows_read, kept, report.quarantined, report.reasons)
    return report
