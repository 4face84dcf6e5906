"""The data-quality gate: Great Expectations suites over the manifests (the only GE import).

Suites are built in code on an ephemeral context (nothing is read from or written to a
``gx/`` project folder); each runs through a Checkpoint, and the Data Docs HTML site is built
once into the ``--docs`` folder after the last one. (``UpdateDataDocsAction`` on every
checkpoint re-renders the site index per validation result: measured 4.2 s for 20 tiny suites
against 0.2 s for one build at the end, so the action would dominate the gate's run time.)
The suites:

* ``<source>.rows`` — every manifest row: required columns non-null, the ``source`` column
  names the manifest, unique ``clip_id``, split and status vocabularies, a reason on every
  quarantined row, well-formed identity keys (``<namespace>:<id>``);
* ``<source>.ok_rows`` — the ``ok`` rows: an audio URI, duration and sample rate present and
  within the ``data`` section's ranges, at least one channel, at least one annotation, no
  blank caption, label, question or answer;
* ``sources.summary`` — one row per source: quarantine rate at most
  ``data.max_quarantine_rate``, the ingest report consistent with the manifest
  (``rows_read == kept + quarantined`` and the same counts), at least one ok ``train`` row for
  training sources and one ok evaluation row for evaluation sources (split sanity);
* ``<task>.references`` — per downstream task whose source is configured for evaluation:
  every item has a reference and there are no more distinct classes than Table 2 has; references
  outside the task's official vocabulary (compared after :func:`pengi.tasks.normalise_label`)
  are a *warning* (listed in the report and Data Docs) rather than a gate failure.

The manifest's exact Arrow schema is checked before GE sees the data (GE's pandas frames cannot
express ``list``/``map`` types); a schema mismatch or a missing manifest is reported as a failed
expectation of the gate. Polars frames are converted to pandas only at the GE boundary, after
the list columns have been reduced to counts in polars (which keeps 1M rows under 30 s; see
``bench/validate_1m.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import polars as pl
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from pengi.config import DataConfig
from pengi.evalsets import eval_rows, references_frame
from pengi.fileio import write_json_atomic
from pengi.leakage import EVAL_SPLITS_OF_BOTH
from pengi.manifest import SPLITS, STATUS_OK, STATUS_QUARANTINED, read_manifest_frame
from pengi.tasks import EVAL_TASKS, EvalTask, normalise_label

log = logging.getLogger(__name__)

_IDENTITY = r"^[a-z0-9_]+:\S+$"
_EXAMPLES = 10  # unexpected values listed per failed expectation


# --------------------------------------------------------------------------------------------
# Flat frames (polars) and their suites
# --------------------------------------------------------------------------------------------


def rows_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Every manifest row: the identifying columns and the identity-key check."""
    return df.select(
        "source", "clip_id", "split", "status", "reason",
        pl.col("identity").list.eval(~pl.element().str.contains(_IDENTITY)).list.sum()
        .cast(pl.Int64).alias("n_bad_identity"),
    )  # fmt: skip


def ok_rows_frame(df: pl.DataFrame) -> pl.DataFrame:
    """The ``status == "ok"`` rows with their list/map columns reduced to the numbers checked.

    Filtering here rather than with GE ``row_condition`` keeps GE from re-filtering the whole
    frame for every expectation; numbers go as int64/float64 because GE's pandas "between" is
    vectorised only for those dtypes (an int32 column is checked value by value in Python).
    """

    def blanks(col: str) -> pl.Expr:
        return pl.col(col).list.eval(pl.element().fill_null("").str.strip_chars() == "").list.sum()

    def blank(field: str) -> pl.Expr:
        return pl.element().struct.field(field).fill_null("").str.strip_chars() == ""

    qa_blanks = pl.col("qa").list.eval(blank("question") | blank("answer")).list.sum()
    return df.filter(pl.col("status") == STATUS_OK).select(
        "clip_id",
        pl.col("audio_uri").fill_null("").str.len_chars().cast(pl.Int64).alias("audio_uri_len"),
        pl.col("duration_s").cast(pl.Float64),
        pl.col("sample_rate").cast(pl.Int64),
        pl.col("channels").cast(pl.Int64),
        (pl.col("captions").list.len() + pl.col("labels").list.len() + pl.col("qa").list.len())
        .cast(pl.Int64).alias("n_annotations"),
        (blanks("captions") + blanks("labels") + qa_blanks).cast(pl.Int64).alias("n_blank_texts"),
    )  # fmt: skip


def _rows_suite(source: str) -> list[Any]:
    """Expectations for :func:`rows_frame` of ``source``."""
    e = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("source", "clip_id", "split", "status")]
    e += [
        gxe.ExpectColumnValuesToBeInSet(column="source", value_set=[source]),
        gxe.ExpectColumnValuesToBeUnique(column="clip_id"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=[STATUS_OK, STATUS_QUARANTINED]),
        gxe.ExpectColumnValuesToNotBeNull(
            column="reason", row_condition=f'status=="{STATUS_QUARANTINED}"', condition_parser="pandas"
        ),
        gxe.ExpectColumnValuesToBeBetween(column="n_bad_identity", max_value=0),
    ]
    return e


def _ok_rows_suite(cfg: DataConfig) -> list[Any]:
    """Expectations for :func:`ok_rows_frame`: ranges from the ``data`` section, annotations."""
    return [
        gxe.ExpectColumnValuesToBeBetween(column="audio_uri_len", min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="duration_s"),
        gxe.ExpectColumnValuesToBeBetween(column="duration_s", min_value=cfg.min_duration_s, max_value=cfg.max_duration_s),
        gxe.ExpectColumnValuesToNotBeNull(column="sample_rate"),
        gxe.ExpectColumnValuesToBeBetween(
            column="sample_rate", min_value=cfg.min_sample_rate, max_value=cfg.max_sample_rate
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="channels"),
        gxe.ExpectColumnValuesToBeBetween(column="channels", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="n_annotations", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="n_blank_texts", max_value=0),
    ]


def summary_frame(summaries: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per source from the per-source counts."""
    schema = {
        "source": pl.String, "role": pl.String, "rows": pl.Int64, "ok": pl.Int64, "quarantined": pl.Int64,
        "quarantine_rate": pl.Float64, "train_rows": pl.Int64, "eval_rows": pl.Int64, "report_consistent": pl.Boolean,
    }  # fmt: skip
    return pl.DataFrame([{k: s[k] for k in schema} for s in summaries], schema=schema)


def _summary_suite(cfg: DataConfig) -> list[Any]:
    return [
        gxe.ExpectColumnValuesToBeUnique(column="source"),
        gxe.ExpectColumnValuesToBeBetween(column="quarantine_rate", min_value=0.0, max_value=cfg.max_quarantine_rate),
        gxe.ExpectColumnValuesToBeInSet(column="report_consistent", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="ok", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(
            column="train_rows", min_value=1, row_condition='role!="eval"', condition_parser="pandas"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="eval_rows", min_value=1, row_condition='role!="train"', condition_parser="pandas"
        ),
    ]


def references_check_frame(task: EvalTask, manifest: pl.DataFrame) -> pl.DataFrame:
    """``item_id, n_references, reference, reference_norm`` (one row per item and reference)."""
    refs = references_frame(task, eval_rows(task, manifest))
    return (
        refs.select(
            "item_id",
            pl.col("references").list.len().cast(pl.Int64).alias("n_references"),
            pl.col("references").alias("reference"),
        )
        .explode("reference", empty_as_null=True)  # keep reference-less items: they must fail
        .with_columns(
            # normalise_label, vectorised
            pl.col("reference").str.replace_all(r"[_-]", " ").str.to_lowercase()
            .str.replace_all(r"\s+", " ").str.strip_chars().alias("reference_norm")
        )
    )


def _references_suite(task: EvalTask) -> list[Any]:
    e: list[Any] = []
    if task.reference != "attr_list":  # an empty quality list is a valid NSynth label set
        e.append(gxe.ExpectColumnValuesToBeBetween(column="n_references", min_value=1))
    if task.vocabulary:
        # A warning, not a gate failure: a corpus may stand in other classes in a dataset's
        # layout (the offline mini corpus writes its own event classes as ESC-50), and a real
        # dataset's adapter quarantines labels outside a closed vocabulary itself.
        vocab = sorted({normalise_label(v) for v in task.vocabulary})
        e.append(gxe.ExpectColumnValuesToBeInSet(column="reference_norm", value_set=vocab, severity="warning"))
    if task.num_classes and task.kind not in ("captioning", "retrieval", "qa"):
        e.append(gxe.ExpectColumnUniqueValueCountToBeBetween(column="reference", min_value=1, max_value=task.num_classes))
    return e


# --------------------------------------------------------------------------------------------
# Running the gate
# --------------------------------------------------------------------------------------------


def _context(docs_dir: Path):
    """An ephemeral GE context whose only Data Docs site is ``docs_dir``; no analytics, no bars."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            "pengi": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                # The validation pages already list every expectation: separate suite pages
                # would double the rendering, which dominates the gate's run time.
                "site_section_builders": {"expectations": "0", "profiling": "0"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


class _Gate:
    """Runs one checkpoint per (suite, frame) on a shared ephemeral context; then the Data Docs."""

    def __init__(self, docs_dir: Path):
        self.ctx = _context(docs_dir)
        self.datasource = self.ctx.data_sources.add_pandas("manifests")
        self.results: dict[str, dict[str, Any]] = {}

    def run(self, name: str, frame: pl.DataFrame, expectations: list[Any]) -> dict[str, Any]:
        asset = self.datasource.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe("all")
        suite = self.ctx.suites.add(gx.ExpectationSuite(name=name))
        for exp in expectations:
            suite.add_expectation(exp)
        vd = self.ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        cp = self.ctx.checkpoints.add(
            gx.Checkpoint(
                name=name,
                validation_definitions=[vd],
                actions=[],  # Data Docs are built once, in build_docs()
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": _EXAMPLES},
            )
        )
        result = cp.run(batch_parameters={"dataframe": frame.to_pandas()})  # GE rejects polars frames
        (vr,) = result.run_results.values()
        # Row ids for the examples of a failed expectation (GE reports positional indices).
        id_col = next((c for c in ("clip_id", "item_id", "source") if c in frame.columns), None)
        ids = frame.get_column(id_col).to_list() if id_col and not vr.success else None
        failed = []
        for r in vr.results:
            if not r.success:
                cfg = r.expectation_config
                kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "value_set")}
                failed.append(
                    {
                        "severity": str(getattr(cfg.severity, "value", cfg.severity)),
                        "suite": name,
                        "expectation": cfg.type,
                        "kwargs": kwargs,
                        "unexpected_count": r.result.get("unexpected_count"),
                        "observed_value": r.result.get("observed_value"),
                        "examples": [_jsonable(v) for v in r.result.get("partial_unexpected_list", [])[:_EXAMPLES]],
                        "example_ids": [ids[i] for i in (r.result.get("partial_unexpected_index_list") or [])[:_EXAMPLES]
                                        if ids is not None and isinstance(i, int) and 0 <= i < len(ids)],
                        "exception": (r.exception_info or {}).get("exception_message"),
                    }
                )
        errors = [f for f in failed if f["severity"] != "warning"]
        out = {
            "success": not errors,
            "rows": frame.height,
            "evaluated": len(vr.results),
            "failed": errors,
            "warnings": [f for f in failed if f["severity"] == "warning"],
        }
        self.results[name] = out
        return out


    def build_docs(self) -> None:
        """Render every stored validation result and the index into the docs site."""
        self.ctx.build_data_docs()


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _read_report(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def validate_manifests(manifest_dir: str | os.PathLike, cfg: DataConfig, docs_dir: str | os.PathLike) -> dict[str, Any]:
    """Run the gate over ``<manifest_dir>/<source>.parquet`` for every source in ``cfg.sources``.

    Args:
        manifest_dir: folder of the manifests and their ``<source>.report.json``.
        cfg: the ``data`` section (sources and roles, ranges, ``max_quarantine_rate``).
        docs_dir: folder for the Data Docs HTML site.

    Returns:
        The report: ``passed``, per-source results (counts, quarantine rate and reasons, suite
        outcomes), per-task reference checks, and the list of failed expectations.
    """
    start = time.perf_counter()
    # GE needs an absolute site directory when the context has no root directory.
    manifest_dir, docs_dir = Path(manifest_dir), Path(docs_dir).resolve()
    docs_dir.mkdir(parents=True, exist_ok=True)
    # Pages of earlier runs would otherwise pile up in the site index (GE names them by run time).
    shutil.rmtree(docs_dir / "validations", ignore_errors=True)
    gate = _Gate(docs_dir)
    failed: list[dict[str, Any]] = []
    sources: dict[str, Any] = {}
    summaries: list[dict[str, Any]] = []
    frames: dict[str, pl.DataFrame] = {}
    roles = {s.name: s.role for s in cfg.sources}
    for name, role in roles.items():
        path = manifest_dir / f"{name}.parquet"
        entry: dict[str, Any] = {"role": role, "manifest": str(path)}
        sources[name] = entry
        try:
            df = read_manifest_frame(path)
        except FileNotFoundError:
            failed.append({"suite": f"{name}.rows", "expectation": "manifest_exists", "kwargs": {"path": str(path)}})
            entry["error"] = "manifest missing"
            continue
        except ValueError as exc:  # schema mismatch
            failed.append(
                {"suite": f"{name}.rows", "expectation": "manifest_schema", "kwargs": {"path": str(path)}, "message": str(exc)}
            )
            entry["error"] = "schema mismatch"
            continue
        frames[name] = df
        ok = df.filter(pl.col("status") == STATUS_OK)
        quarantined = df.height - ok.height
        train_rows = ok.filter(pl.col("split") == "train").height
        eval_rows_n = ok.height if role == "eval" else ok.filter(pl.col("split").is_in(EVAL_SPLITS_OF_BOTH)).height
        report = _read_report(manifest_dir / f"{name}.report.json")
        consistent = report is None or (
            report.get("rows_read") == df.height
            and report.get("kept") == ok.height
            and report.get("quarantined") == quarantined
        )
        reasons = (
            df.filter(pl.col("status") != STATUS_OK)
            .select(pl.col("reason").fill_null("").str.split(":").list.first().alias("r"))
            .group_by("r").len().sort("r").iter_rows()
        )  # fmt: skip
        entry.update(
            rows=df.height,
            ok=ok.height,
            quarantined=quarantined,
            quarantine_rate=quarantined / df.height if df.height else 0.0,
            quarantine_reasons=dict(reasons),
            splits=dict(sorted(ok.group_by("split").len().iter_rows())),
            ingest_report="absent" if report is None else ("consistent" if consistent else "inconsistent"),
        )
        summaries.append(
            {"source": name, "role": role, "rows": df.height, "ok": ok.height, "quarantined": quarantined,
             "quarantine_rate": entry["quarantine_rate"], "train_rows": train_rows, "eval_rows": eval_rows_n,
             "report_consistent": consistent}
        )  # fmt: skip
        for suite, frame, exps in (
            (f"{name}.rows", rows_frame(df), _rows_suite(name)),
            (f"{name}.ok_rows", ok_rows_frame(df), _ok_rows_suite(cfg)),
        ):
            res = gate.run(suite, frame, exps)
            entry.setdefault("suites", {})[suite] = {k: res[k] for k in ("success", "evaluated")}
            failed += res["failed"]
    if summaries:
        res = gate.run("sources.summary", summary_frame(summaries), _summary_suite(cfg))
        failed += res["failed"]
    tasks: dict[str, Any] = {}
    for task in EVAL_TASKS.values():
        if task.source in frames and roles[task.source] in ("eval", "both"):
            frame = references_check_frame(task, frames[task.source])
            res = gate.run(f"{task.name}.references", frame, _references_suite(task))
            tasks[task.name] = {"success": res["success"], "items": frame.get_column("item_id").n_unique()}
            failed += res["failed"]
    gate.build_docs()
    warnings = [w for r in gate.results.values() for w in r["warnings"]]
    report = {
        "passed": not failed,
        "max_quarantine_rate": cfg.max_quarantine_rate,
        "sources": sources,
        "eval_tasks": tasks,
        "failed_expectations": failed,
        "warnings": warnings,
        "suites": {n: r["success"] for n, r in gate.results.items()},
    }
    # No timing in the report itself: it is a DVC metric and must be identical on a rerun.
    log.info(
        "validate: %s (%d failed expectations, %d warnings) in %.1f s; Data Docs in %s",
        "passed" if report["passed"] else "FAILED", len(failed), len(warnings), time.perf_counter() - start, docs_dir,
    )  # fmt: skip
    return report


def write_report(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the gate report as JSON (atomically: a DVC metric must never be half-written)."""
    write_json_atomic(path, report, default=str)
