"""``python -m pengi evaluate``: every downstream task -> reports, ``metrics.json``, one MLflow run.

    python -m pengi evaluate --params params.yaml --model data/models/pengi/model \\
        --clap data/models/clap/model --eval data/eval --audio data/audio --triples data/triples \\
        --manifests data/manifests --train-logs data/models/pengi/train_log.csv \\
        --out reports/evaluate --metrics metrics/evaluate.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pengi.config import flatten, load_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params", default="params.yaml", help="params file (evaluate, tracking; the models carry their own configs)"
    )
    parser.add_argument("--model", required=True, help="trained Pengi folder (train-pengi's <out>/model)")
    parser.add_argument("--clap", help="trained CLAP folder (contrastive retrieval); optional")
    parser.add_argument("--eval", required=True, help="evaluation sets folder (the evalsets stage's output)")
    parser.add_argument("--audio", help="audio store folder; clips are decoded from their files without it")
    parser.add_argument(
        "--triples", help="triples folder (train.parquet): constant-caption and question-only baselines"
    )
    parser.add_argument("--manifests", help="manifests folder: train splits for the linear probes")
    parser.add_argument("--train-logs", nargs="*", default=[], help="training CSV logs to plot")
    parser.add_argument("--out", required=True, help="report folder (report.md, results.json, PNGs, predictions)")
    parser.add_argument("--metrics", required=True, help="flat metrics JSON for DVC")
    parser.add_argument("--device", help="force a device (default: CUDA if available, else CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from pengi.evaluation.harness import evaluate
    from pengi.tracking import Tracker

    cfg = load_config(args.params)
    with Tracker(cfg.tracking, stage="evaluate", params=flatten(cfg)) as tracker:
        summary = evaluate(
            cfg, args.model, args.eval, args.out, clap_dir=args.clap, audio_dir=args.audio,
            triples_dir=args.triples, manifests_dir=args.manifests, train_logs=args.train_logs,
            device=args.device, progress=not args.no_progress,
        )  # fmt: skip
        metrics = summary["metrics"]
        path = Path(args.metrics)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tracker.log_metrics(metrics)
        tracker.log_artifact(args.out, "evaluate")
        tracker.log_artifact(path)
        tracker.set_tag("pengi.model", str(Path(args.model).resolve()))
    log.info("evaluated %d tasks in %.1f s; report: %s", len(summary["tasks"]), summary["seconds"],
             Path(args.out) / "report.md")  # fmt: skip
    return 0
