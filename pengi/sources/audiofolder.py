"""Generic ``audiofolder``: audio files + ``metadata.csv`` or ``metadata.jsonl`` beside them.

For FreeSound/FindSounds crawls and users' own data (the Hugging Face ``audiofolder``
convention, extended with QA and identity columns). Every ``metadata.csv``/``metadata.jsonl``
under the root describes the audio files of its folder and below:

* ``file_name`` (required): path relative to the metadata file's folder. Several lines with
  the same ``file_name`` are merged into one clip (their captions, labels and QA pairs add up).
* ``caption`` (one string) and/or ``captions`` (JSONL: list; CSV: a JSON list literal or a
  single string).
* ``label`` / ``labels`` (JSONL list; CSV: JSON list literal, or ``;``-separated). A JSON
  *object* in ``labels`` holds named label fields (``{"digits": "352", ...}``): its entries go
  to ``attrs`` (they are task facts, not class names).
* ``question`` + ``answer`` (one pair per line), and/or ``qa`` (list of {question, answer}).
* ``split``: train / val / test (``validation``/``valid``/``dev`` -> val, ``eval`` -> test).
  Without it, a split folder name on the path (``train/``, ``val/``, ``test/``...) decides;
  otherwise the stable hash of the clip id (DESIGN.md §4).
* identity columns: ``freesound_id``, ``youtube_id`` (+ ``start_s``), ``bbc_id``,
  ``soundbible_id``; or ``identity`` (list / ``;``-separated ready-made keys).
* every other column goes to ``attrs`` unchanged (stringified).

clip_id: the audio path relative to the root, without extension (``a.wav`` and ``a.flac`` side
by side are two rows with one clip id: ingest quarantines the second as a duplicate). A
``file_name`` that is absent resolves to the same stem with another audio extension. Audio files with no metadata
line are rows too (quarantined ``no_metadata``), so nothing under the root is skipped silently.
Option ``require_metadata=false`` keeps them instead, with no text (ingest then quarantines
them as ``no_annotation`` unless they carry other annotation).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from typing import Any

from pengi import storage
from pengi.audio import AUDIO_EXTENSIONS
from pengi.manifest import stable_split
from pengi.sources.base import (
    AudioIndex, MetadataError, Record, SourceRead, bbc_key, clean_text, freesound_key, keys, make_row, quarantine,
    read_csv, read_jsonl, register, soundbible_key, strip_audio_ext, youtube_key,
)

SPLIT_NAMES = {
    "train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "eval": "test", "evaluation": "test",
}
KNOWN = {"file_name", "caption", "captions", "label", "labels", "question", "answer", "qa", "split",
         "freesound_id", "youtube_id", "start_s", "bbc_id", "soundbible_id", "identity"}


def _as_list(value: Any, file: str, line: int, sep: str | None) -> list[str]:
    """A list column: JSON list, JSON-list literal string, separated string or scalar."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return []  # named label fields: the caller puts them into attrs
    s = str(value)
    if s.strip().startswith("{"):
        return []
    if s.strip().startswith("["):
        try:
            parsed = json.loads(s)
        except json.JSONDecodeError as exc:
            raise MetadataError(file, line, None, f"invalid JSON list {s[:40]!r}: {exc.msg}") from None
        return [str(v) for v in parsed]
    if sep:
        return [p.strip() for p in s.split(sep) if p.strip()]
    return [s] if s.strip() else []


def _label_fields(value: Any, file: str, line: int) -> dict[str, str]:
    """``labels`` given as a JSON object (named label fields) -> attrs entries."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise MetadataError(file, line, None, f"invalid JSON object in labels: {exc.msg}") from None
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _as_qa(value: Any, file: str, line: int) -> list[dict[str, str]]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise MetadataError(file, line, None, f"invalid JSON in qa: {exc.msg}") from None
    if not isinstance(value, list) or not all(isinstance(q, dict) and "question" in q and "answer" in q for q in value):
        raise MetadataError(file, line, None, "qa must be a list of {question, answer} objects")
    return [{"question": str(q["question"]), "answer": str(q["answer"])} for q in value]


@register(
    "audiofolder",
    {
        "require_metadata": "true (default): audio without a metadata line is quarantined; false: kept without text",
    },
)
def read_audiofolder(root: str, options: Mapping[str, str]) -> SourceRead:
    return _read_folder(root, options, "audiofolder")


def _read_folder(root: str, options: Mapping[str, str], source: str) -> SourceRead:
    require_meta = options.get("require_metadata", "true").lower() != "false"
    index = AudioIndex(root)
    prefix = str(root).rstrip("/") + "/"
    metas = [u for u in storage.list_files(root, (".csv", ".jsonl")) if posixpath.basename(u) in ("metadata.csv", "metadata.jsonl")]
    rows: dict[str, dict[str, Any]] = {}
    for meta in metas:
        rel_dir = posixpath.dirname(meta[len(prefix):] if meta.startswith(prefix) else meta)
        records: list[Record] = read_jsonl(meta) if meta.endswith(".jsonl") else read_csv(meta, require=("file_name",))
        is_csv = meta.endswith(".csv")
        for r in records:
            if "file_name" not in r.values or not str(r.values["file_name"]).strip():
                raise MetadataError(meta, r.line, 1, "missing file_name")
            rel = posixpath.normpath(posixpath.join(rel_dir, str(r.values["file_name"]).strip()))
            # Rows are keyed by the file named (a.wav and a.flac are two files; they would share
            # the clip id a, and ingest quarantines the second as a duplicate: never merged).
            row = rows.get(rel)
            if row is None:
                uri = index.find(rel)
                row = make_row(source, strip_audio_ext(rel), "", uri or storage.join(root, rel))
                if uri is None or posixpath.splitext(rel)[1].lower() not in AUDIO_EXTENSIONS:
                    quarantine(row, "missing_audio")
                rows[rel] = row
            v = r.values
            caps = _as_list(v.get("captions"), meta, r.line, None) + _as_list(v.get("caption"), meta, r.line, None)
            labels = _as_list(v.get("labels"), meta, r.line, ";") + _as_list(v.get("label"), meta, r.line, None)
            qa = _as_qa(v.get("qa"), meta, r.line)
            if str(v.get("question") or "").strip() or str(v.get("answer") or "").strip():
                qa.append({"question": str(v.get("question") or ""), "answer": str(v.get("answer") or "")})
            row["captions"] += [clean_text(c) for c in caps]
            row["labels"] += [clean_text(x) for x in labels if clean_text(x) not in row["labels"]]
            row["qa"] += [{"question": clean_text(q["question"]), "answer": clean_text(q["answer"])} for q in qa]
            row["identity"] = keys(
                *row["identity"],
                freesound_key(v["freesound_id"]) if v.get("freesound_id") not in (None, "") else None,
                youtube_key(v["youtube_id"], v.get("start_s")) if v.get("youtube_id") else None,
                bbc_key(v["bbc_id"]) if v.get("bbc_id") else None,
                soundbible_key(v["soundbible_id"]) if v.get("soundbible_id") not in (None, "") else None,
                *_as_list(v.get("identity"), meta, r.line, ";"),
            )
            split = str(v.get("split") or "").strip().lower()
            if split:
                if split not in SPLIT_NAMES:
                    col = list(v).index("split") + 1 if is_csv else None
                    raise MetadataError(meta, r.line, col, f"unknown split {split!r} (expected one of {sorted(SPLIT_NAMES)})")
                row["split"] = SPLIT_NAMES[split]
            attrs = {k: ("" if x is None else x if isinstance(x, str) else json.dumps(x)) for k, x in v.items() if k not in KNOWN}
            attrs.update(_label_fields(v.get("labels"), meta, r.line))
            row["attrs"].update({k: clean_text(x) for k, x in attrs.items() if x != ""})
            if r.bad_text:
                quarantine(row, "bad_text_encoding")
    # Audio with no metadata line.
    described = {r["audio_uri"] for r in rows.values()}
    for rel, uri in sorted(index.files().items()):
        if uri not in described:
            row = make_row(source, strip_audio_ext(rel), "", uri)
            if require_meta:
                quarantine(row, "no_metadata")
            rows[rel] = row
    out = []
    for row in rows.values():
        if not row["split"]:
            parts = row["clip_id"].split("/")[:-1]
            folder = next((SPLIT_NAMES[p.lower()] for p in parts if p.lower() in SPLIT_NAMES), None)
            row["split"] = folder or stable_split(row["clip_id"])
        out.append(row)
    return SourceRead(sorted(out, key=lambda r: (r["clip_id"], r["audio_uri"])), None, metas)


@register("freesound", {"require_metadata": "see audiofolder"})
def read_freesound(root: str, options: Mapping[str, str]) -> SourceRead:
    """A Freesound API crawl stored as an audiofolder (``freesound_id`` column = the API ``id``)."""
    return _read_folder(root, options, "freesound")


@register("findsounds", {"require_metadata": "see audiofolder"})
def read_findsounds(root: str, options: Mapping[str, str]) -> SourceRead:
    """A FindSounds crawl stored as an audiofolder (``file_url`` etc. land in attrs)."""
    return _read_folder(root, options, "findsounds")
