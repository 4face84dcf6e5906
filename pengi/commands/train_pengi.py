"""``python -m pengi train-pengi``: train Pengi from the CLAP encoders (text encoder and LM frozen)."""

from __future__ import annotations

import argparse

from pengi.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (audio, model, train_pengi, tracking)")
    parser.add_argument("--triples", required=True, help="triples folder with train.parquet (and val.parquet)")
    parser.add_argument("--audio", required=True, help="audio store folder (the audio-store stage's output)")
    parser.add_argument("--clap", required=True, help="the trained CLAP model folder (train-clap's <out>/model)")
    parser.add_argument("--out", required=True, help="output folder: model/, checkpoints/, logs, metrics, samples")
    parser.add_argument("--metrics", help="also write the final metrics here (DVC metrics), e.g. metrics/train_pengi.json")
    parser.add_argument("--device", help="force a device (default: CUDA if available, else CPU)")


def run(args: argparse.Namespace) -> int:
    from pengi.commands._training import run_tracked
    from pengi.train.pengi import train_pengi

    cfg = load_config(args.params)
    run_tracked(
        cfg, "train-pengi", args.out,
        lambda tracker: train_pengi(cfg, args.triples, args.audio, args.clap, args.out, tracker, device=args.device),
        metrics_path=args.metrics,
    )  # fmt: skip
    return 0
