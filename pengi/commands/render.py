"""``python -m pengi render``: leakage control, then manifests -> ``<out>/{train,val}.parquet`` triples."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pengi.commands.validate import check_gate
from pengi.config import load_config
from pengi.fileio import write_json_atomic

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (data and render sections)")
    parser.add_argument("--manifests", default="data/manifests", help="folder of <source>.parquet")
    parser.add_argument("--gate", help="the validate stage's JSON report; refuse to run unless it passed")
    parser.add_argument("--out", required=True, help="folder for train.parquet and val.parquet, e.g. data/triples")
    parser.add_argument("--report", required=True, help="JSON report (counts and leakage), e.g. metrics/render.json")


def run(args: argparse.Namespace) -> int:
    from pengi.templates import render_corpus, write_triples

    cfg = load_config(args.params)
    if args.gate:
        check_gate(args.gate, "render")
    result, leakage = render_corpus(args.manifests, cfg.data, cfg.render, base_dir=Path(args.params).resolve().parent)
    paths = write_triples(result, args.out)
    report = {"render": result.report, "leakage": leakage.to_dict()}
    write_json_atomic(args.report, report)
    log.info(
        "wrote %s; %d leaking training rows %s",
        ", ".join(f"{p} ({result.report['triples'][s]} triples)" for s, p in paths.items()),
        leakage.excluded.height,
        "excluded" if leakage.exclude else "reported only",
    )
    return 0
