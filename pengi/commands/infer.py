"""The user commands ``caption``, ``ask``, ``classify``, ``describe`` and ``embed``.

Inputs are audio files, folders (searched recursively for audio files) or Parquet tables with
an ``audio_uri`` column (manifests, evaluation sets, triples). Results go to stdout or
``--out`` as JSON (one array of records) or CSV, one record per input in input order.
Unreadable audio gives a record with ``error`` (the reason) and a non-zero exit status,
unless ``--skip-errors``; the other inputs are processed either way.

    pengi caption --model data/models/pengi/model clips/
    pengi ask --model M --question "is it raining?" a.wav b.wav
    pengi classify --model M --labels dog,cat,rain --method loglik clips/ --format csv
    pengi describe --model M --prompt "this acoustic scene is" clips/
    pengi embed --model data/models/clap/model clips/ --out emb.csv --format csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pengi.audio import AUDIO_EXTENSIONS

log = logging.getLogger(__name__)

EXIT_AUDIO_ERRORS = 1
EXIT_USAGE = 2


class InputError(ValueError):
    """An input path is missing or holds no audio."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files, folders (recursive) or Parquet tables with audio_uri")
    parser.add_argument("--model", required=True, help="Pengi model folder (or a CLAP folder, for embed)")
    parser.add_argument("--clap", help="CLAP model folder (embed: contrastive embeddings)")
    parser.add_argument("--params", help="params file whose evaluate section gives the defaults below")
    parser.add_argument("--batch-size", type=int, help="clips per batch (default: evaluate.batch_size)")
    parser.add_argument("--beam-size", type=int, help="beams, 1 = greedy (default: evaluate.beam_size)")
    parser.add_argument("--max-new-tokens", type=int, help="generation length (default: evaluate.max_new_tokens)")
    parser.add_argument("--question", help="ask: the question")
    parser.add_argument("--prompt", help="describe: the prompt; classify: the prompt (default 'this is a sound of')")
    parser.add_argument("--labels", nargs="+", help="classify: candidate labels (space- or comma-separated)")
    parser.add_argument("--method", choices=("text", "loglik"), help="classify: text matching or log-likelihood")
    parser.add_argument(
        "--answer", default="{}",
        help="classify: how the model states a label, {} = the label (e.g. 'this is a sound of music in genre {}'):"
        " text matching reads the label out of the output, log-likelihood scores the label inside it",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"),
        help="bf16 autocast where the device has native bf16 (default: evaluate.precision)",
    )  # fmt: skip
    parser.add_argument("--format", choices=("json", "csv"), default="json", help="output format")
    parser.add_argument("--out", help="output file (default: stdout)")
    parser.add_argument("--skip-errors", action="store_true", help="exit 0 even when some audio cannot be read")
    parser.add_argument("--device", help="force a device (default: CUDA if available, else CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _table_uris(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if "audio_uri" not in schema.names:
        raise InputError(f"{path}: a table input needs an audio_uri column (has {schema.names})")
    uris = pq.read_table(path, columns=["audio_uri"]).column("audio_uri").to_pylist()
    return list(dict.fromkeys(u for u in uris if u))  # distinct, in table order


def collect_inputs(inputs: list[str]) -> list[str]:
    """Expand files, folders and Parquet tables into audio paths/URIs (input order kept).

    Raises:
        InputError: a path does not exist, or a folder holds no audio file.
    """
    out: list[str] = []
    for raw in inputs:
        if raw.startswith("s3://"):
            out.append(raw)
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not files:
                raise InputError(f"{path}: no audio files (extensions {', '.join(AUDIO_EXTENSIONS)})")
            out.extend(str(p) for p in files)
        elif path.suffix.lower() == ".parquet" and path.is_file():
            out.extend(_table_uris(path))
        elif path.is_file():
            out.append(str(path))  # any extension: the decoder says whether it is audio
        else:
            raise InputError(f"{raw}: no such file or folder")
    return out


def _labels(values: list[str] | None) -> list[str]:
    labels = [s.strip() for v in values or [] for s in v.split(",") if s.strip()]
    if not labels:
        raise InputError("classify needs --labels (e.g. --labels dog cat rain, or dog,cat,rain)")
    if len(set(labels)) != len(labels):
        raise InputError(f"duplicate labels in {labels}")
    return labels


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from pengi.config import EvaluateConfig, load_config

    ev = load_config(args.params).evaluate if args.params else EvaluateConfig()
    return {
        "batch_size": args.batch_size or ev.batch_size,
        "beam_size": args.beam_size or ev.beam_size,
        "max_new_tokens": args.max_new_tokens or ev.max_new_tokens,
        "method": args.method or ev.classification_method,
        "precision": args.precision or ev.precision,
    }


def run_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run ``args.command`` and return its records (the library part of :func:`run`)."""
    from pengi.session import DEFAULT_CLASSIFY_PROMPT, PengiSession

    command = args.command
    if command == "ask" and not (args.question or "").strip():
        raise InputError("ask needs --question")
    if command == "describe" and not (args.prompt or "").strip():
        raise InputError("describe needs --prompt")
    labels = _labels(args.labels) if command == "classify" else []
    if command == "classify" and args.answer.count("{}") != 1:
        raise InputError(f"--answer must hold exactly one '{{}}' where the label goes, got {args.answer!r}")
    paths = collect_inputs(args.inputs)
    s = _settings(args)
    session = PengiSession.from_pretrained(
        args.model, args.clap, batch_size=s["batch_size"], beam_size=s["beam_size"],
        max_new_tokens=s["max_new_tokens"], device=args.device, progress=not args.no_progress,
        precision=s["precision"],
    )  # fmt: skip
    if command == "caption":
        return session.caption(paths)
    if command == "ask":
        return session.ask(paths, args.question)
    if command == "describe":
        return session.describe(paths, args.prompt)
    if command == "classify":
        return session.classify(paths, labels, s["method"], args.prompt or DEFAULT_CLASSIFY_PROMPT, args.answer)
    if command == "embed":
        return session.embed(paths)
    raise ValueError(f"unknown inference command {command!r}")


def to_csv(records: list[dict[str, Any]]) -> str:
    """Records as CSV: ``scores`` become ``score:<label>`` columns, ``embedding`` ``e0..e<d-1>``."""
    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k not in ("scores", "embedding")}
        for label, v in (r.get("scores") or {}).items():
            row[f"score:{label}"] = v
        for i, v in enumerate(r.get("embedding") or []):
            row[f"e{i}"] = v
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if "error" in columns:  # keep the error column last, whatever record came first
        columns = [c for c in columns if c != "error"] + ["error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    try:
        records = run_command(args)
    except (InputError, ValueError, FileNotFoundError) as exc:
        # usage problems: bad inputs, a model folder that is missing or of the wrong kind
        # (CheckpointError is a ValueError), a command the model cannot serve
        print(f"pengi {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = json.dumps(records, indent=1, ensure_ascii=False) + "\n" if args.format == "json" else to_csv(records)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    failed = [r for r in records if "error" in r]
    for r in failed:
        print(f"pengi {args.command}: {r['error']}", file=sys.stderr)
    if failed:
        log.warning("%d of %d inputs could not be read", len(failed), len(records))
        if not args.skip_errors:
            return EXIT_AUDIO_ERRORS
    return 0
