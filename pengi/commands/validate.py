"""``python -m pengi validate``: the Great Expectations gate over the manifests.

Writes the JSON report (a DVC metric) and the Data Docs HTML site, and exits non-zero when the
gate fails, so ``dvc repro`` stops before any training stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pengi.config import load_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (data section)")
    parser.add_argument("--manifests", default="data/manifests", help="folder of <source>.parquet (+ .report.json)")
    parser.add_argument("--report", required=True, help="JSON report to write, e.g. metrics/validate.json")
    parser.add_argument("--docs", required=True, help="folder for the Data Docs HTML, e.g. reports/data_docs")


def run(args: argparse.Namespace) -> int:
    # GE logs every internal registration at INFO while importing; keep its warnings only.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from pengi.validation import validate_manifests, write_report

    cfg = load_config(args.params)
    report = validate_manifests(args.manifests, cfg.data, args.docs)
    write_report(report, args.report)
    for w in report["warnings"]:
        log.warning(
            "%s: %s %s: %s unexpected, e.g. %s",
            w["suite"], w["expectation"], w.get("kwargs", {}), w.get("unexpected_count"), w.get("examples", [])[:3],
        )  # fmt: skip
    if report["passed"]:
        log.info("data gate passed (%d warnings); report %s", len(report["warnings"]), args.report)
        return 0
    print(f"pengi validate: data gate FAILED ({len(report['failed_expectations'])} failed expectations):", file=sys.stderr)
    for f in report["failed_expectations"][:20]:
        detail = f.get("message") or f"{f.get('unexpected_count') or f.get('observed_value')} unexpected"
        where = f.get("example_ids") or f.get("examples")
        example = f", e.g. {where[:5]}" if where else ""
        print(f"  {f['suite']}: {f['expectation']} {f.get('kwargs', {})}: {detail}{example}", file=sys.stderr)
    print(f"see {args.report} and {args.docs}/index.html", file=sys.stderr)
    return 1


def check_gate(report_path: str, stage: str) -> None:
    """Stop ``stage`` unless the validate report at ``report_path`` says the gate passed.

    The report is a DVC dependency of the downstream stages, so the gate is an edge of the DAG;
    this check also holds when a stage is run by hand or by a Prefect flow.
    """
    path = Path(report_path)
    if not path.exists():
        raise SystemExit(f"pengi {stage}: gate report {path} not found: run `pengi validate` first")
    if json.loads(path.read_text(encoding="utf-8")).get("passed") is not True:
        raise SystemExit(f"pengi {stage}: the data gate failed ({path}); fix the data or params and rerun validate")
