"""Downstream evaluation sets: eval manifests -> ``data/eval/<task>.parquet`` (DESIGN.md §4).

One file per task of the paper's Table 2 (:data:`pengi.tasks.EVAL_TASKS`) whose source is
configured for evaluation, with one row per evaluation item:

``item_id, clip_id, audio_uri, source, task, metric, prompt, references: list<str>, fold``

(``item_id`` is the clip id, or ``<clip_id>#<k>`` for the k-th question of an AQA clip; ``fold``
is ``attrs["fold"]`` for fold-based datasets, else null). A sidecar ``<task>.json`` holds the
task's kind, metric, prompt and **class list** (the sorted distinct references of a
classification or QA task, or the official vocabulary of :mod:`pengi.tasks` when every
reference is spelled in it; empty for captioning and retrieval), and ``index.json`` lists the
tasks built and the tasks skipped with the reason.

Only ``status == "ok"`` rows of the task's evaluation splits become items; rows without a
reference are counted in the sidecar, not silently dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pengi.config import DataConfig
from pengi.manifest import STATUS_OK, write_parquet_atomic
from pengi.tasks import EVAL_TASKS, EvalTask
from pengi.templates import load_manifests, with_attrs

log = logging.getLogger(__name__)

EVAL_COLUMNS = ("item_id", "clip_id", "audio_uri", "source", "task", "metric", "prompt", "references", "fold")


@dataclass
class EvalSet:
    """One task's evaluation items and its sidecar metadata."""

    task: EvalTask
    items: pl.DataFrame
    meta: dict[str, Any]


def eval_rows(task: EvalTask, manifest: pl.DataFrame) -> pl.DataFrame:
    """The ok rows of ``manifest`` in the task's evaluation splits."""
    rows = manifest.filter(pl.col("status") == STATUS_OK)
    if task.eval_splits is not None:
        rows = rows.filter(pl.col("split").is_in(list(task.eval_splits)))
    return rows


def references_frame(task: EvalTask, rows: pl.DataFrame) -> pl.DataFrame:
    """``item_id, clip_id, audio_uri, source, prompt, references, fold`` for ``rows`` (no filtering).

    Items whose references are empty keep an empty list; :func:`build_eval_set` counts and drops them.
    """
    keys = tuple(k for k in ("fold", task.attr_key) if k)
    rows = with_attrs(rows, keys)
    fold = pl.col("attr_fold") if "fold" in keys else pl.lit(None, pl.String)
    clean = pl.element().str.strip_chars()
    base = (pl.col("clip_id").alias("item_id"), "clip_id", "audio_uri", "source")
    if task.reference == "qa":
        items = (
            rows.select(*base[1:], fold.alias("fold"), pl.col("qa"), pl.int_ranges(0, pl.col("qa").list.len()).alias("k"))
            .explode(["qa", "k"])
            .drop_nulls("qa")
            .select(
                pl.concat_str("clip_id", pl.lit("#"), pl.col("k").cast(pl.String)).alias("item_id"),
                "clip_id", "audio_uri", "source", "fold",
                pl.col("qa").struct.field("question").str.strip_chars().alias("question"),
                pl.col("qa").struct.field("answer").str.strip_chars().alias("answer"),
            )  # fmt: skip
        )
        # One item per (clip, question); several answers to it become several references.
        items = items.group_by("clip_id", "question", maintain_order=True).agg(
            pl.col("item_id", "audio_uri", "source", "fold").first(),
            pl.col("answer").drop_nulls().unique(maintain_order=True).alias("references"),
        )
        prompt = pl.concat_str(pl.lit(task.prompt.split("{question}")[0]), pl.col("question"))
        return items.select("item_id", "clip_id", "audio_uri", "source", prompt.alias("prompt"), "references", "fold")
    if task.reference == "captions":
        refs = pl.col("captions")
    elif task.reference == "labels":
        labels = pl.col("labels")
        if task.attr_key:  # prefer the attrs value (e.g. ``emotion``) when the row has it
            refs = pl.when(pl.col(f"attr_{task.attr_key}").is_not_null()).then(
                pl.concat_list(pl.col(f"attr_{task.attr_key}"))
            ).otherwise(labels)
        else:
            refs = labels
    elif task.reference == "attr":
        refs = pl.when(pl.col(f"attr_{task.attr_key}").is_not_null()).then(
            pl.concat_list(pl.col(f"attr_{task.attr_key}"))
        ).otherwise(pl.lit([], pl.List(pl.String)))
    else:  # attr_list: a comma-separated attrs value
        refs = pl.col(f"attr_{task.attr_key}").fill_null("").str.split(",")
    refs = refs.list.eval(clean).list.eval(pl.element().filter(pl.element() != ""))
    return rows.select(*base, pl.lit(task.prompt).alias("prompt"), refs.alias("references"), fold.alias("fold"))


def _sort_classes(values: list[str]) -> list[str]:
    """Numeric order when every class is an integer (pitches, velocities), else lexical."""
    if values and all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


def build_eval_set(task: EvalTask, manifest: pl.DataFrame) -> EvalSet:
    """Build one task's items from its source manifest (see the module doc for the columns)."""
    rows = eval_rows(task, manifest)
    refs = references_frame(task, rows)
    # A multi-label attr list may be empty on purpose (an NSynth note without qualities is a
    # negative for every quality), so those items stay; elsewhere an empty reference is a gap.
    has_ref = pl.lit(True) if task.reference == "attr_list" else pl.col("references").list.len() > 0
    items = refs.filter(has_ref).select(
        "item_id", "clip_id", "audio_uri", "source",
        pl.lit(task.name).alias("task"), pl.lit(task.metric).alias("metric"),
        "prompt", pl.col("references").cast(pl.List(pl.String)), pl.col("fold").cast(pl.String),
    )  # fmt: skip
    if task.kind in ("captioning", "retrieval"):
        classes: list[str] = []
    else:
        observed = items.get_column("references").explode().drop_nulls().unique().to_list()
        # The official vocabulary when the data is spelled in it: candidates absent from a small
        # corpus still compete in text matching and still count in a multi-label mAP.
        vocab = set(task.vocabulary)
        classes = _sort_classes(list(vocab) if vocab and set(observed) <= vocab else observed)
    meta = {
        "task": task.name,
        "source": task.source,
        "kind": task.kind,
        "metric": task.metric,
        "prompt": task.prompt,
        "classes": classes,
        "items": items.height,
        "clips": items.get_column("clip_id").n_unique(),
        "rows_quarantined": manifest.height - manifest.filter(pl.col("status") == STATUS_OK).height,
        "rows_in_eval_splits": rows.height,
        "items_without_reference": refs.height - items.height,
        "eval_splits": list(task.eval_splits) if task.eval_splits is not None else "all",
    }
    if meta["items_without_reference"]:
        log.warning("%s: %d items have no reference and are left out", task.name, meta["items_without_reference"])
    return EvalSet(task, items, meta)


def select_tasks(available_sources: Sequence[str], requested: Sequence[str] = ()) -> tuple[list[EvalTask], dict[str, str]]:
    """The tasks to build: ``requested`` (``evaluate.tasks``), or every task whose source is available.

    Returns:
        ``(tasks, skipped)`` where ``skipped`` maps a task name to why it is not built.

    Raises:
        ValueError: a requested task is unknown or its source is not configured for evaluation.
    """
    available = set(available_sources)
    if requested:
        unknown = [t for t in requested if t not in EVAL_TASKS]
        if unknown:
            raise ValueError(f"evaluate.tasks: unknown task {unknown[0]!r} (known: {', '.join(EVAL_TASKS)})")
        missing = [t for t in requested if EVAL_TASKS[t].source not in available]
        if missing:
            t = EVAL_TASKS[missing[0]]
            raise ValueError(f"evaluate.tasks: {t.name!r} needs source {t.source!r} in data.sources with role eval or both")
    names = list(requested) if requested else list(EVAL_TASKS)
    tasks = [EVAL_TASKS[n] for n in names if EVAL_TASKS[n].source in available]
    built = {t.name for t in tasks}
    skipped = {
        n: "not in evaluate.tasks" if requested else f"source {t.source!r} is not configured for evaluation"
        for n, t in EVAL_TASKS.items()
        if n not in built
    }
    return tasks, skipped


def build_eval_sets(
    manifests: Mapping[str, pl.DataFrame], requested: Sequence[str] = ()
) -> tuple[dict[str, EvalSet], dict[str, str]]:
    """Every evaluation set whose source manifest is given (or those in ``requested``).

    Args:
        manifests: source name -> manifest frame of each source with role ``eval`` or ``both``.
        requested: ``evaluate.tasks``; empty = every task whose data is configured.

    Returns:
        ``(sets, skipped)``: task name -> :class:`EvalSet`, and task name -> reason not built.
    """
    tasks, skipped = select_tasks(list(manifests), requested)
    return {t.name: build_eval_set(t, manifests[t.source]) for t in tasks}, skipped


def write_eval_sets(sets: Mapping[str, EvalSet], skipped: Mapping[str, str], out_dir: str | Path) -> dict[str, Any]:
    """Write ``<task>.parquet`` + ``<task>.json`` per set and ``index.json``; returns the index."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, s in sets.items():
        write_parquet_atomic(s.items.to_arrow(), out_dir / f"{name}.parquet")
        (out_dir / f"{name}.json").write_text(json.dumps(s.meta, indent=2) + "\n", encoding="utf-8")
    index = {
        "tasks": {n: {k: s.meta[k] for k in ("source", "kind", "metric", "items")} for n, s in sorted(sets.items())},
        "skipped": dict(sorted(skipped.items())),
    }
    (out_dir / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return index


def build_corpus_eval_sets(
    manifest_dir: str | Path, data: DataConfig, requested: Sequence[str] = ()
) -> tuple[dict[str, EvalSet], dict[str, str]]:
    """The ``evalsets`` stage: read the manifests of every ``eval``/``both`` source and build the sets.

    Raises:
        FileNotFoundError: a manifest is missing.
        ValueError: see :func:`select_tasks`.
    """
    names = [s.name for s in data.sources if s.role in ("eval", "both")]
    manifests = load_manifests(manifest_dir, names)
    # A source that also trains the model is evaluated on its test split only, even for tasks
    # that use every fold of an evaluation-only dataset (ESC-50's 5 folds, ...): a clip the model
    # was trained on must never be scored.
    for s in data.sources:
        if s.role == "both":
            manifests[s.name] = manifests[s.name].filter(pl.col("split") == "test")
    return build_eval_sets(manifests, requested)
