"""``python -m pengi evalsets``: eval manifests -> ``<out>/<task>.parquet`` + ``<task>.json`` + ``index.json``."""

from __future__ import annotations

import argparse
import logging

from pengi.commands.validate import check_gate
from pengi.config import load_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (data and evaluate sections)")
    parser.add_argument("--manifests", default="data/manifests", help="folder of <source>.parquet")
    parser.add_argument("--gate", help="the validate stage's JSON report; refuse to run unless it passed")
    parser.add_argument("--out", required=True, help="folder for the evaluation sets, e.g. data/eval")


def run(args: argparse.Namespace) -> int:
    from pengi.evalsets import build_corpus_eval_sets, write_eval_sets

    cfg = load_config(args.params)
    if args.gate:
        check_gate(args.gate, "evalsets")
    sets, skipped = build_corpus_eval_sets(args.manifests, cfg.data, cfg.evaluate.tasks)
    write_eval_sets(sets, skipped, args.out)
    counts = ", ".join(f"{n}: {s.meta['items']} items" for n, s in sets.items())
    log.info("wrote %d evaluation sets to %s (%s)", len(sets), args.out, counts)
    return 0
