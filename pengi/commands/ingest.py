"""``python -m pengi ingest``: one source in its native layout -> manifest + report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pengi.config import load_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (data section)")
    parser.add_argument("--source", required=True, help="name of a source in data.sources")
    parser.add_argument("--out", required=True, help="manifest to write, e.g. data/manifests/<name>.parquet")
    parser.add_argument("--report", help="JSON report to write (default: <out>.report.json)")


def run(args: argparse.Namespace) -> int:
    from pengi.ingest import ingest_source
    from pengi.sources import MetadataError

    cfg = load_config(args.params)
    by_name = {s.name: s for s in cfg.data.sources}
    if args.source not in by_name:
        known = ", ".join(sorted(by_name)) or "none"
        raise SystemExit(f"pengi ingest: no source {args.source!r} in {args.params} data.sources (configured: {known})")
    try:
        report = ingest_source(
            by_name[args.source], cfg.data, args.out, args.report, base_dir=Path(args.params).resolve().parent
        )
    except MetadataError as exc:
        raise SystemExit(f"pengi ingest: malformed metadata: {exc}") from None
    log.info("wrote %s (%d kept, %d quarantined)", args.out, report.kept, report.quarantined)
    return 0
