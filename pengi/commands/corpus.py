"""``python -m pengi corpus``: generate the offline mini corpus in native dataset layouts."""

from __future__ import annotations

import argparse
import logging

from pengi.config import load_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (corpus section)")
    parser.add_argument("--out", required=True, help="corpus root to write, e.g. data/corpus")


def run(args: argparse.Namespace) -> int:
    from pengi.corpus.generate import generate_corpus

    cfg = load_config(args.params)
    summary = generate_corpus(cfg.corpus, args.out)
    log.info("wrote %d clips (%s) to %s", summary["clips"], summary["size"], args.out)
    return 0
