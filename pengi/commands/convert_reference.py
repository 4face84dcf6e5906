"""``pengi convert-reference <base.pth> <out_dir>``: the authors' checkpoint -> a pengi checkpoint folder.

The pickle is read with ``torch.load(weights_only=True)`` (no arbitrary objects), every key is
mapped by name, constant buffers are checked and dropped, and any unmapped, missing or
mis-shaped key fails the command. The output folder (``model.safetensors`` + ``config.json``)
loads with ``Pengi.from_pretrained``; it reproduces the reference front end (32 kHz filterbank
on 44.1 kHz audio, stored STFT kernels), see ``pengi.checkpoint.reference_config``.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="the official base.pth / base_no_text_enc.pth (or a .safetensors)")
    parser.add_argument("out_dir", help="folder to write model.safetensors and config.json to")
    parser.add_argument(
        "--variant",
        choices=("base", "base_no_text_enc"),
        default=None,
        help="expected variant; detected from the keys when left out (a mismatch is an error)",
    )
    parser.add_argument(
        "--reference-config",
        default=None,
        help="sizes from a parity-fixture config.json (the authors' yml + sizes) instead of the official models",
    )


def run(args: argparse.Namespace) -> int:
    from pengi.checkpoint import CheckpointError, config_from_reference_json, convert_reference, describe

    configs = config_from_reference_json(args.reference_config) if args.reference_config else None
    try:
        model = convert_reference(args.checkpoint, args.out_dir, variant=args.variant, configs=configs)
    except CheckpointError as exc:
        log.error("convert-reference: %s", exc)
        return 1
    counts = describe(model)
    log.info(
        "converted %s -> %s (%s parameters, %s trainable)",
        args.checkpoint, args.out_dir, f"{counts['parameters']:,}", f"{counts['trainable']:,}",
    )  # fmt: skip
    return 0
