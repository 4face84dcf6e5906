"""``python -m pengi audio-store``: decode every clip of the triples once into the audio store."""

from __future__ import annotations

import argparse
import glob
import json
import logging
from pathlib import Path

from pengi.config import load_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (audio and data sections)")
    parser.add_argument("--triples", required=True, help="triples folder (every *.parquet in it is read)")
    parser.add_argument("--tables", nargs="*", default=[], help="more Parquet tables with audio_uri (e.g. data/eval/*.parquet; globs allowed)")
    parser.add_argument("--out", required=True, help="store folder to write, e.g. data/audio")


def run(args: argparse.Namespace) -> int:
    from pengi.audio_store import build_audio_store

    cfg = load_config(args.params)
    tables = sorted(Path(args.triples).glob("*.parquet"))
    if not tables:
        raise SystemExit(f"pengi audio-store: no Parquet tables in {args.triples}")
    for pattern in args.tables:
        if any(c in pattern for c in "*?["):  # a glob the shell left unexpanded (no match): fine
            tables += sorted(Path(p) for p in glob.glob(pattern))
        elif Path(pattern).exists():
            tables.append(Path(pattern))
        else:
            raise SystemExit(f"pengi audio-store: no such table {pattern}")
    summary = build_audio_store(
        tables, args.out, cfg.audio.sample_rate, cfg.data.probe_workers, cfg.data.max_quarantine_rate
    )
    log.info("audio store: %s", json.dumps(summary))
    return 0
