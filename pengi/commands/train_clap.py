"""``python -m pengi train-clap``: contrastive pre-training of the audio and text encoders."""

from __future__ import annotations

import argparse

from pengi.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (audio, model, train_clap, tracking)")
    parser.add_argument("--triples", required=True, help="triples folder with train.parquet (and val.parquet)")
    parser.add_argument("--audio", required=True, help="audio store folder (the audio-store stage's output)")
    parser.add_argument("--out", required=True, help="output folder: model/, checkpoints/, logs, metrics.json")
    parser.add_argument("--metrics", help="also write the final metrics here (DVC metrics), e.g. metrics/train_clap.json")
    parser.add_argument("--device", help="force a device (default: CUDA if available, else CPU)")


def run(args: argparse.Namespace) -> int:
    from pengi.commands._training import run_tracked
    from pengi.train.clap import train_clap

    cfg = load_config(args.params)
    run_tracked(
        cfg, "train-clap", args.out,
        lambda tracker: train_clap(cfg, args.triples, args.audio, args.out, tracker, device=args.device),
        metrics_path=args.metrics,
    )  # fmt: skip
    return 0
