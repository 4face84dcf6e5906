"""The adapter protocol and the helpers every adapter shares.

An **adapter** turns one dataset in its native layout into canonical manifest rows
(DESIGN.md §4). It is a function ``adapter(root, options) -> SourceRead`` registered under a
name with :func:`register`:

* ``root`` is a local folder or an ``s3://`` URI; every read goes through :mod:`pengi.storage`.
* ``options`` are the adapter's own string settings from ``params.yaml``
  (``data.sources[i].options``); unknown keys are an error, so a typo is never ignored.

Adapters parse metadata and decide split, labels, captions, QA, attrs and identity keys.
They do not open audio: :mod:`pengi.ingest` probes every row afterwards. A row whose metadata
is bad (unknown label code, undecodable text, audio file absent from the listing) is returned
with ``status="quarantined"`` and a reason, never dropped. A metadata file that cannot be
parsed at all raises :class:`MetadataError` naming the file, line and column.

Audio files are found by *stem*: the native name with any audio extension
(``audio/1-100032-A-0.wav`` also matches ``audio/1-100032-A-0.flac``), because the offline
mini corpus stores FLAC where the real datasets ship WAV.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pengi import storage
from pengi.audio import AUDIO_EXTENSIONS
from pengi.manifest import STATUS_OK, STATUS_QUARANTINED, normalise_row

log = logging.getLogger(__name__)


class MetadataError(ValueError):
    """A metadata file is malformed. The message names the file, line and column (1-based)."""

    def __init__(self, file: str, line: int | None, column: int | None, message: str):
        where = str(file)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {message}")
        self.file, self.line, self.column = str(file), line, column


@dataclass
class SourceRead:
    """What an adapter returns.

    Attributes:
        rows: manifest rows (dicts; see :func:`make_row`), quarantined ones included.
        vocabulary: the closed label set of the dataset, when it has one; ingest quarantines
            rows whose labels fall outside it (``None`` = open vocabulary, no check).
        metadata_files: the metadata files that were read (for the report and DVC deps).
    """

    rows: list[dict[str, Any]]
    vocabulary: frozenset[str] | None = None
    metadata_files: list[str] = field(default_factory=list)


Adapter = Callable[[str, Mapping[str, str]], SourceRead]

ADAPTERS: dict[str, Adapter] = {}
_OPTIONS: dict[str, dict[str, str]] = {}


def register(name: str, options: Mapping[str, str] | None = None) -> Callable[[Adapter], Adapter]:
    """Register an adapter under ``name``; ``options`` maps each allowed option to its help."""

    def deco(fn: Adapter) -> Adapter:
        if name in ADAPTERS:
            raise ValueError(f"adapter {name!r} registered twice")
        ADAPTERS[name] = fn
        _OPTIONS[name] = dict(options or {})
        return fn

    return deco


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    import pengi.sources  # noqa: F401  (registers every adapter module)

    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"unknown source adapter {name!r}; known: {', '.join(sorted(ADAPTERS))}") from None


def adapter_options(name: str) -> dict[str, str]:
    """Allowed option keys of adapter ``name`` with their help text."""
    get_adapter(name)
    return dict(_OPTIONS[name])


def run_adapter(name: str, root: str, options: Mapping[str, str] | None = None) -> SourceRead:
    """Check ``options`` against the adapter's allowed keys and run it on ``root``.

    Raises:
        KeyError: unknown adapter.
        ValueError: unknown option key.
        MetadataError: malformed metadata.
    """
    fn = get_adapter(name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[name])) or "none"
        raise ValueError(f"source {name!r}: unknown option {unknown[0]!r} (allowed: {allowed})")
    return fn(str(root), options)


# --------------------------------------------------------------------------------------------
# Rows, quarantine, identity keys, splits
# --------------------------------------------------------------------------------------------


def make_row(source: str, clip_id: str, split: str, audio_uri: str, **fields: Any) -> dict[str, Any]:
    """A manifest row with defaults for everything not given (see ``pengi.manifest``)."""
    return normalise_row({"source": source, "clip_id": clip_id, "split": split, "audio_uri": audio_uri, **fields})


def quarantine(row: dict[str, Any], reason: str) -> dict[str, Any]:
    """Mark ``row`` quarantined. The first reason wins: it is the root cause."""
    if row.get("status") != STATUS_QUARANTINED:
        row["status"] = STATUS_QUARANTINED
        row["reason"] = reason
    return row


def is_ok(row: Mapping[str, Any]) -> bool:
    return row.get("status", STATUS_OK) == STATUS_OK


_YTID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_DIGITS = re.compile(r"^\d+$")


def youtube_key(ytid: str, start_s: float | str | None) -> str | None:
    """``youtube:<id>@<start_s as int>``; ``None`` for ids that are not 11-char YouTube ids
    (e.g. ``#NAME?`` left by spreadsheets). Without a start, ``youtube:<id>``."""
    ytid = str(ytid).strip()
    if not _YTID.match(ytid):
        return None
    if start_s is None or str(start_s).strip() == "":
        return f"youtube:{ytid}"
    try:
        start = float(start_s)
    except ValueError:
        return None
    return f"youtube:{ytid}@{int(start)}" if start >= 0 else None


def freesound_key(fsid: Any) -> str | None:
    """``freesound:<id>`` for an integer Freesound id (``None`` for ``Not found`` and the like)."""
    s = str(fsid).strip()
    if s.endswith(".0") and _DIGITS.match(s[:-2]):
        s = s[:-2]
    return f"freesound:{int(s)}" if _DIGITS.match(s) else None


def bbc_key(bbc_id: str) -> str | None:
    """``bbc:<id lower-case>`` (SoundDescs ids are lower-case, WavCaps/URLs upper-case)."""
    s = str(bbc_id).strip().lower()
    s = s.removesuffix(".wav")
    return f"bbc:{s}" if re.match(r"^[a-z0-9]+$", s) else None


def soundbible_key(sb_id: Any) -> str | None:
    s = str(sb_id).strip()
    return f"soundbible:{int(s)}" if _DIGITS.match(s) else None


def keys(*candidates: str | None) -> list[str]:
    """The non-empty identity keys, without duplicates, in order."""
    out: list[str] = []
    for k in candidates:
        if k and k not in out:
            out.append(k)
    return out


def hash_fold(key: str, k: int) -> int:
    """A stable fold in ``1..k`` from SHA-1 of ``key`` (for sets without official folds)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % k + 1


VOCABULARY_OPTION = (
    "official (default): labels outside the dataset's published class list are quarantined; "
    "observed: accept every label found (for derived corpora with other classes)"
)


def closed_vocabulary(name: str, official: Iterable[str], options: Mapping[str, str]) -> frozenset[str] | None:
    """The label set to enforce per the ``vocabulary`` option (``None`` = accept any label)."""
    mode = options.get("vocabulary", "official")
    if mode == "official":
        return frozenset(official)
    if mode == "observed":
        return None
    raise ValueError(f"{name}: options.vocabulary must be official or observed, got {mode!r}")


FOLD_OPTIONS = {
    "test_folds": "comma list of folds whose rows are split=test (with val_folds: the rest are train); "
    "default: every row is test (zero-shot evaluation over all folds)",
    "val_folds": "comma list of folds whose rows are split=val (needs test_folds)",
}


def fold_split(name: str, fold: str, options: Mapping[str, str]) -> str:
    """``test`` for every fold by default; with ``test_folds``/``val_folds`` a train/val/test split by fold."""
    if "test_folds" not in options:
        if "val_folds" in options:
            raise ValueError(f"{name}: options.val_folds needs options.test_folds")
        return "test"
    test = {f.strip() for f in options["test_folds"].split(",") if f.strip()}
    val = {f.strip() for f in options.get("val_folds", "").split(",") if f.strip()}
    return "test" if fold in test else "val" if fold in val else "train"


def map_split(value: str, mapping: Mapping[str, str], file: str, line: int | None, column: int | None) -> str:
    """Map an official split name to ``train|val|test``; an unknown name is malformed metadata."""
    try:
        return mapping[value.strip()]
    except KeyError:
        raise MetadataError(file, line, column, f"unknown split {value!r} (expected one of {sorted(mapping)})") from None


# --------------------------------------------------------------------------------------------
# Audio lookup
# --------------------------------------------------------------------------------------------


def strip_audio_ext(name: str) -> str:
    """``name`` without an audio extension (``a_30.000_40.000`` keeps its ``.000``)."""
    stem, ext = posixpath.splitext(name)
    return stem if ext.lower() in AUDIO_EXTENSIONS else name


class AudioIndex:
    """All audio files under a root, found by relative path stem with any audio extension.

    Listing once (one S3 ``ListObjects`` walk, or one ``os.walk``) is far cheaper than one
    existence check per row.
    """

    def __init__(self, root: str, under: str | None = None):
        self.root = str(root)
        base = storage.join(self.root, under) if under else self.root
        self._by_rel: dict[str, str] = {}
        self._exact: dict[str, str] = {}
        self._by_name: dict[str, list[str]] = {}
        try:
            files = storage.list_files(base, AUDIO_EXTENSIONS)
        except FileNotFoundError:
            files = []
        prefix = self.root.rstrip("/") + "/"
        for uri in files:
            rel = uri[len(prefix) :] if uri.startswith(prefix) else uri
            rel = rel.replace("\\", "/")
            self._exact[rel] = uri
            stem = posixpath.splitext(rel)[0]
            # First extension wins deterministically (list_files is sorted).
            self._by_rel.setdefault(stem, uri)
            self._by_name.setdefault(posixpath.basename(stem), []).append(uri)

    def __len__(self) -> int:
        return len(self._by_rel)

    def find(self, relpath: str) -> str | None:
        """URI of ``relpath`` (relative to root): the file itself if present, else the same
        stem with another audio extension."""
        rel = relpath.replace("\\", "/").lstrip("/")
        return self._exact.get(rel) or self._by_rel.get(strip_audio_ext(rel))

    def files(self) -> dict[str, str]:
        """Relative path (with extension) -> URI of every audio file."""
        return dict(self._exact)

    def find_name(self, name: str) -> list[str]:
        """URIs of every file whose base name (any audio extension) is ``name``'s stem."""
        return list(self._by_name.get(strip_audio_ext(posixpath.basename(name)), []))

    def relpaths(self) -> list[str]:
        """Relative stems of the audio files, sorted (one per stem)."""
        return sorted(self._by_rel)

    def uri(self, stem: str) -> str:
        return self._by_rel[stem]

    def entries(self) -> list[tuple[str, str]]:
        """``(relative stem, uri)`` for *every* audio file, sorted. Adapters that make one row
        per file iterate this, so ``x.wav`` beside ``x.flac`` gives two rows (a duplicate clip
        id that ingest quarantines) instead of one file silently ignored."""
        return sorted((strip_audio_ext(rel), uri) for rel, uri in self._exact.items())


def locate(index: AudioIndex, relpath: str, row: dict[str, Any]) -> dict[str, Any]:
    """Set ``row['audio_uri']`` from the index, or quarantine the row as ``missing_audio``."""
    uri = index.find(relpath)
    if uri is None:
        row["audio_uri"] = storage.join(index.root, relpath)
        quarantine(row, "missing_audio")
    else:
        row["audio_uri"] = uri
    return row


# --------------------------------------------------------------------------------------------
# Metadata readers with file/line/column errors
# --------------------------------------------------------------------------------------------

_BAD = re.compile("[\udc80-\udcff]")


def decode_text(data: bytes, file: str, encoding: str = "utf-8") -> str:
    """Decode bytes; undecodable bytes become lone surrogates so rows can be flagged one by one.

    A file-level BOM is removed. With a single-byte encoding (``latin-1``) nothing fails.
    """
    text = data.decode(encoding, errors="surrogateescape")
    return text.removeprefix("\ufeff")


def has_bad_text(*values: Any) -> bool:
    """True when any string holds bytes that did not decode (see :func:`decode_text`)."""
    return any(isinstance(v, str) and _BAD.search(v) for v in values)


def clean_text(value: str) -> str:
    """Replace undecodable bytes by U+FFFD (so the row can still be written) and strip."""
    return _BAD.sub("\ufffd", value).strip()


@dataclass
class Record:
    """One data row of a metadata file: its 1-based line number and its fields."""

    line: int
    values: dict[str, str]
    bad_text: bool = False

    def __getitem__(self, key: str) -> str:
        return self.values[key]

    def get(self, key: str, default: str = "") -> str:
        v = self.values.get(key)
        return default if v is None else v


def read_rows(
    uri: str,
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    comment: str | None = None,
    skipinitialspace: bool = False,
) -> list[tuple[int, list[str], bool]]:
    """Raw rows of a delimited file: ``(1-based line, fields, has undecodable bytes)``.

    Blank lines and (with ``comment``) comment lines are skipped; line numbers stay those of
    the file. Raises :class:`MetadataError` for a missing file or bad quoting.
    """
    try:
        text = decode_text(storage.read_bytes(uri), uri, encoding)
    except FileNotFoundError:
        raise MetadataError(uri, None, None, "metadata file not found") from None
    lines = text.splitlines(keepends=True)
    # Comments are blanked, not removed, so that line numbers stay those of the file.
    if comment:
        lines = ["\n" if ln.lstrip().startswith(comment) else ln for ln in lines]
    reader = csv.reader(io.StringIO("".join(lines), newline=""), delimiter=delimiter, skipinitialspace=skipinitialspace, strict=True)
    out = []
    try:
        for fields_ in reader:
            if not fields_ or (len(fields_) == 1 and not fields_[0].strip()):
                continue
            out.append((reader.line_num, fields_, has_bad_text(*fields_)))
    except csv.Error as exc:
        raise MetadataError(uri, reader.line_num, None, f"CSV syntax error: {exc}") from None
    return out


def read_csv(
    uri: str,
    *,
    columns: Sequence[str] | None = None,
    header: bool = True,
    delimiter: str = ",",
    encoding: str = "utf-8",
    comment: str | None = None,
    skipinitialspace: bool = False,
    require: Sequence[str] = (),
    min_fields: int | None = None,
) -> list[Record]:
    """Parse a delimited text file strictly into :class:`Record` objects.

    Args:
        uri: file to read (local or s3).
        columns: names for a header-less file (``header=False``), or the expected header when
            ``header=True`` (then it must match exactly, order included).
        header: whether the first non-comment line is a header.
        delimiter: field separator.
        encoding: text encoding; undecodable bytes flag the row (``Record.bad_text``).
        comment: lines starting with this prefix are skipped (AudioSet's ``#`` lines).
        skipinitialspace: skip spaces after a delimiter (AudioSet's ``", "``).
        require: columns that must exist in the header (any order, extra columns allowed).
        min_fields: rows may have fewer fields than columns down to this many (missing
            trailing fields read as ""); default: exactly ``len(columns)``.

    Returns:
        One :class:`Record` per data row; blank lines are skipped.

    Raises:
        MetadataError: missing file, wrong header, missing column, ragged row, bad quoting.
    """
    rows = read_rows(uri, delimiter=delimiter, encoding=encoding, comment=comment, skipinitialspace=skipinitialspace)
    if header:
        if not rows:
            raise MetadataError(uri, 1, 1, "file is empty (no header)")
        line, names, _ = rows[0]
        names = [f.strip() for f in names]
        rows = rows[1:]
        if columns is not None and names != list(columns):
            for i, want in enumerate(columns):
                got = names[i] if i < len(names) else ""
                if got != want:
                    raise MetadataError(uri, line, i + 1, f"expected header column {want!r}, found {got!r}")
            raise MetadataError(uri, line, len(columns) + 1, f"unexpected extra header column {names[len(columns)]!r}")
        for col in require:
            if col not in names:
                raise MetadataError(uri, line, len(names) + 1, f"missing column {col!r} (header: {names})")
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise MetadataError(uri, line, names.index(dup, names.index(dup) + 1) + 1, f"duplicate header column {dup!r}")
    else:
        names = list(columns or [])
    lo = len(names) if min_fields is None else min_fields
    out = []
    for line, fields_, bad in rows:
        if not lo <= len(fields_) <= len(names):
            raise MetadataError(uri, line, min(len(fields_), len(names)) + 1, f"expected {len(names)} fields, found {len(fields_)}")
        out.append(Record(line, dict(zip(names, fields_ + [""] * (len(names) - len(fields_)))), bad))
    return out


def read_json(uri: str, encoding: str = "utf-8") -> Any:
    """Parse a JSON file; syntax errors raise :class:`MetadataError` with line and column."""
    try:
        raw = storage.read_bytes(uri)
    except FileNotFoundError:
        raise MetadataError(uri, None, None, "metadata file not found") from None
    try:
        text = raw.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise MetadataError(uri, line, col, f"not valid {encoding}: {exc.reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetadataError(uri, exc.lineno, exc.colno, f"invalid JSON: {exc.msg}") from None


def read_jsonl(uri: str, encoding: str = "utf-8") -> list[Record]:
    """Parse JSON Lines: one object per non-blank line (values kept as parsed JSON)."""
    text = decode_text(storage.read_bytes(uri), uri, encoding)
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MetadataError(uri, i, exc.colno, f"invalid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise MetadataError(uri, i, 1, f"expected a JSON object, found {type(obj).__name__}")
        out.append(Record(i, obj, has_bad_text(line)))
    return out


def line_of_key(text: str, key: str) -> int | None:
    """1-based line where ``"key"`` first occurs in a JSON text (to locate semantic errors)."""
    pos = text.find(json.dumps(key))
    return None if pos < 0 else text.count("\n", 0, pos) + 1
