"""Front door: ``python -m pengi <command>`` and the ``pengi`` console script.

Each command lives in its own module under ``pengi.commands`` and exposes
``add_arguments(parser)`` and ``run(args) -> int | None``. Modules are imported lazily,
so ``pengi --help`` stays fast and a command's heavy dependencies load only when it runs.
The pipeline stages (what ``dvc.yaml`` runs) and the user commands share this table; a
stage has one name in ``dvc.yaml``, here, in the Prefect flow and in MLflow.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pengi.config import ConfigError
from pengi.telemetry import disable_telemetry

# name -> (module under pengi.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    # pipeline stages, in DAG order
    "corpus": ("corpus", "generate the offline mini corpus in native dataset layouts"),
    "ingest": ("ingest", "read one source in its native layout into a canonical manifest"),
    "validate": ("validate", "Great Expectations gate over the manifests"),
    "render": ("render", "render manifests into (audio, prompt, target) triples"),
    "evalsets": ("evalsets", "build the downstream evaluation sets"),
    "audio-store": ("audio_store", "decode every clip once into the random-access audio store"),
    "train-clap": ("train_clap", "contrastive pre-training of the audio and text encoders"),
    "train-pengi": ("train_pengi", "train Pengi from the CLAP encoders"),
    "evaluate": ("evaluate", "run the downstream tasks and write the reports"),
    # user commands
    "caption": ("infer", "caption audio files"),
    "ask": ("infer", "ask a question about audio files"),
    "classify": ("infer", "zero-shot classification by text matching or log-likelihood"),
    "describe": ("infer", "generate with any prompt"),
    "embed": ("infer", "CLAP audio embeddings"),
    "convert-reference": ("convert_reference", "convert the authors' published checkpoint"),
}

log = logging.getLogger(__name__)


def _load(name: str):
    module_name, _ = COMMANDS[name]
    try:
        return importlib.import_module(f"pengi.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"pengi.commands.{module_name}":
            raise SystemExit(f"pengi: command {name!r} is not implemented in this version") from None
        raise


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pengi", description="Pengi audio language models: pipeline and tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == command:  # only the chosen command's module is imported
            module = _load(name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    disable_telemetry()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._module.run(args) or 0)
    except ConfigError as exc:
        print(f"pengi {args.command}: config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
