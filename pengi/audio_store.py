"""The audio store: every clip decoded once into one random-access blob (DESIGN.md §4).

Training reads 7-s crops of thousands of clips per second; decoding FLAC/MP3 (let alone
spawning ffmpeg) per sample would starve the GPU. The ``audio-store`` stage therefore decodes
each distinct ``audio_uri`` of the triples (and any other tables handed to it) exactly once —
mono, at the model's sample rate, through the pipeline's one decoder ``pengi.audio.decode`` —
and appends it to a single flat float16 file. A Parquet index maps each clip to its slice.

Layout of a store directory::

    audio.f16        raw little-endian float16 samples of every clip, back to back
    index.parquet    audio_uri, offset, length (samples), status ("ok"/"quarantined"), reason
    store.json       sample_rate, dtype, total samples, counts

float16 rather than int16: resampled audio may exceed [-1, 1] and int16 would clip it, while
float16's ~1e-3 relative precision is far below what a log-mel front end can see (≈0.004 dB).
Clips are stored whole, so the training crop can be taken anywhere in the clip (the paper's
random 7-s truncation). Clips shorter than the crop are padded at crop time, not here (see
:func:`crop`). A clip that fails to decode is kept in the index with ``status="quarantined"``
and the reason, never dropped silently.

The whole directory is written under a temporary name and renamed into place, so a killed
stage leaves either the old store or the new one, never half of one.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

BLOB_NAME = "audio.f16"
INDEX_NAME = "index.parquet"
META_NAME = "store.json"
STORE_DTYPE = np.dtype("<f2")
CropMode = Literal["random", "start", "center"]

INDEX_SCHEMA = pa.schema(
    [
        pa.field("audio_uri", pa.string(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("length", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
    ]
)


def decode_clip(uri: str, sample_rate: int) -> np.ndarray:
    """Decode one clip to mono float32 at ``sample_rate``: the pipeline's decoder, one place.

    Uses ``pengi.audio.decode`` (the project's single decoder path: soundfile + soxr, ffmpeg
    for the rest, channels averaged).
    """
    from pengi.audio import decode

    return np.asarray(decode(uri, sample_rate, mono=True), dtype=np.float32)


def _decode_task(args: tuple[str, int]) -> tuple[str, np.ndarray | None, str | None]:
    """Worker body: (uri, sample_rate) -> (uri, float16 samples or None, error reason)."""
    from pengi.audio import AudioError

    uri, sample_rate = args
    try:
        wave = decode_clip(uri, sample_rate)
        if wave.ndim != 1:
            raise ValueError(f"decoder returned shape {wave.shape}, expected 1-D mono")
        if wave.size == 0:
            raise ValueError("empty audio")
        if not np.isfinite(wave).all():
            raise ValueError("non-finite samples")
        return uri, wave.astype(STORE_DTYPE), None
    except (AudioError, OSError, ValueError) as exc:  # a bad clip: quarantine with the reason
        return uri, None, str(exc) if isinstance(exc, AudioError) else f"{type(exc).__name__}: {exc}"


def collect_uris(tables: Iterable[str | Path]) -> list[str]:
    """Distinct ``audio_uri`` values of Parquet tables (triples, manifests, eval sets), sorted.

    Manifest rows with ``status == "quarantined"`` are skipped (they were never meant to be
    used). Sorting makes the blob layout independent of table order.
    """
    uris: set[str] = set()
    for path in tables:
        table = pq.read_table(path)
        if "audio_uri" not in table.column_names:
            raise ValueError(f"{path}: no audio_uri column (columns: {table.column_names})")
        col = table.column("audio_uri").to_pylist()
        if "status" in table.column_names:
            status = table.column("status").to_pylist()
            col = [u for u, s in zip(col, status, strict=True) if s != "quarantined"]
        if any(u is None or u == "" for u in col):
            raise ValueError(f"{path}: empty audio_uri")
        uris.update(col)
    return sorted(uris)


def build_store(
    uris: Sequence[str],
    out_dir: str | Path,
    sample_rate: int,
    workers: int = 1,
    max_quarantine_rate: float = 1.0,
) -> dict:
    """Decode every uri once and write the store atomically to ``out_dir``.

    Args:
        uris: clip URIs (local paths or s3://); duplicates are decoded once.
        out_dir: the store directory; replaced as a whole when the new one is complete.
        sample_rate: target sample rate (the model's, ``audio.sample_rate``).
        workers: decode processes (1 = in this process).
        max_quarantine_rate: fail if more than this fraction of clips cannot be decoded.

    Returns:
        The summary written to ``store.json``.

    Raises:
        RuntimeError: too many clips failed to decode (the reasons are logged).
    """
    uris = sorted(set(uris))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rows: list[dict] = []
    offset = 0
    tasks = [(u, sample_rate) for u in uris]
    with open(tmp / BLOB_NAME, "wb") as blob:
        if workers > 1 and len(tasks) > 1:
            with cf.ProcessPoolExecutor(max_workers=workers) as pool:
                # map() keeps input order, so the blob layout is deterministic
                results = pool.map(_decode_task, tasks, chunksize=max(1, min(32, len(tasks) // (4 * workers))))
                offset = _append_all(results, blob, rows, len(tasks))
        else:
            offset = _append_all(map(_decode_task, tasks), blob, rows, len(tasks))
        blob.flush()
        os.fsync(blob.fileno())
    n_bad = sum(r["status"] != "ok" for r in rows)
    for r in rows:
        if r["status"] != "ok":
            log.warning("quarantined %s: %s", r["audio_uri"], r["reason"])
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), tmp / INDEX_NAME)
    summary = {
        "sample_rate": int(sample_rate),
        "dtype": STORE_DTYPE.str,
        "clips": len(rows),
        "clips_ok": len(rows) - n_bad,
        "clips_quarantined": n_bad,
        "total_samples": int(offset),
        "hours": round(offset / sample_rate / 3600, 4),
    }
    (tmp / META_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    if rows and n_bad / len(rows) > max_quarantine_rate:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(
            f"audio store: {n_bad}/{len(rows)} clips failed to decode (> {max_quarantine_rate:.1%}); "
            f"first: {next(r for r in rows if r['status'] != 'ok')}"
        )
    _replace_dir(tmp, out_dir)
    log.info("audio store %s: %d clips (%d quarantined), %.2f h", out_dir, len(rows), n_bad, summary["hours"])
    return summary


def _append_all(results, blob, rows: list[dict], total: int) -> int:
    from tqdm import tqdm

    offset = 0
    for uri, wave, reason in tqdm(results, total=total, desc="audio-store", unit="clip", mininterval=5.0):
        if wave is None:
            rows.append({"audio_uri": uri, "offset": offset, "length": 0, "status": "quarantined", "reason": reason})
            continue
        blob.write(wave.tobytes())
        rows.append({"audio_uri": uri, "offset": offset, "length": int(wave.size), "status": "ok", "reason": None})
        offset += int(wave.size)
    return offset


def _replace_dir(tmp: Path, dst: Path) -> None:
    """Move a finished directory into place (rename is atomic; an old one is removed after)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)


@dataclass(frozen=True)
class ClipRef:
    offset: int
    length: int


class AudioStore:
    """Read-only random access to a store written by :func:`build_store`.

    The blob is memory-mapped lazily in each process (so the object pickles cheaply into
    DataLoader workers) and reads copy only the requested slice.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / META_NAME
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.path}: not an audio store (no {META_NAME}); run the audio-store stage")
        self.meta = json.loads(meta_path.read_text())
        if self.meta["dtype"] != STORE_DTYPE.str:
            raise ValueError(f"{self.path}: unsupported dtype {self.meta['dtype']}")
        self.sample_rate = int(self.meta["sample_rate"])
        index = pq.read_table(self.path / INDEX_NAME).to_pydict()
        self._refs: dict[str, ClipRef] = {}
        self.quarantined: dict[str, str] = {}
        for uri, off, n, status, reason in zip(
            index["audio_uri"], index["offset"], index["length"], index["status"], index["reason"], strict=True
        ):
            if status == "ok":
                self._refs[uri] = ClipRef(int(off), int(n))
            else:
                self.quarantined[uri] = reason or "quarantined"
        self._blob: np.memmap | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_blob"] = None  # each process maps the file itself
        return state

    @property
    def blob(self) -> np.ndarray:
        if self._blob is None:
            total = int(self.meta["total_samples"])
            if total == 0:
                self._blob = np.zeros(0, dtype=STORE_DTYPE)
            else:
                self._blob = np.memmap(self.path / BLOB_NAME, dtype=STORE_DTYPE, mode="r", shape=(total,))
        return self._blob

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, uri: object) -> bool:
        return uri in self._refs

    def uris(self) -> list[str]:
        """The usable (decoded) clip URIs."""
        return list(self._refs)

    def length(self, uri: str) -> int:
        """Number of samples of a clip."""
        return self._ref(uri).length

    def _ref(self, uri: str) -> ClipRef:
        try:
            return self._refs[uri]
        except KeyError:
            if uri in self.quarantined:
                raise KeyError(f"{uri}: quarantined in the audio store: {self.quarantined[uri]}") from None
            raise KeyError(f"{uri}: not in the audio store {self.path} (rebuild it with audio-store)") from None

    def read(self, uri: str, start: int = 0, num_samples: int | None = None, dtype: np.dtype = np.float32) -> np.ndarray:
        """Samples ``[start, start + num_samples)`` of a clip (clamped to the clip), as ``dtype``
        (float16 returns the stored samples unconverted)."""
        ref = self._ref(uri)
        start = max(0, min(int(start), ref.length))
        end = ref.length if num_samples is None else min(ref.length, start + int(num_samples))
        return np.array(self.blob[ref.offset + start : ref.offset + end], dtype=dtype)  # a copy, not a view of the map

    def crop(
        self,
        uri: str,
        num_samples: int,
        mode: CropMode = "start",
        rng: np.random.Generator | None = None,
        dtype: np.dtype = np.float32,
    ) -> tuple[np.ndarray, int]:
        """A fixed-length crop of a clip; see :func:`crop`."""
        return crop(self, uri, num_samples, mode, rng, dtype)


def crop(
    store: AudioStore,
    uri: str,
    num_samples: int,
    mode: CropMode = "start",
    rng: np.random.Generator | None = None,
    dtype: np.dtype = np.float32,
) -> tuple[np.ndarray, int]:
    """Cut ``num_samples`` samples out of a stored clip, reading only that slice.

    Same convention as :func:`pengi.audio.crop` (which works on decoded arrays, for inference):
    ``"random"`` draws a uniform start with ``rng`` (training: the paper's random 7-s
    truncation); ``"start"`` (the default, as at inference) and ``"center"`` are deterministic
    (evaluation; unlike the reference code's random crop at inference). Shorter clips are
    zero-padded at the end; the true length is returned so that a model may mask the padding.

    Returns:
        (wave (num_samples,) of ``dtype``, valid length in samples).
    """
    length = store.length(uri)
    if length < num_samples:
        out = np.zeros(num_samples, dtype=dtype)
        out[:length] = store.read(uri, dtype=dtype)
        return out, length
    if mode == "random":
        if rng is None:
            raise ValueError("crop(mode='random') needs an rng so the crop is reproducible")
        start = int(rng.integers(0, length - num_samples + 1))
    elif mode == "center":
        start = (length - num_samples) // 2
    elif mode == "start":
        start = 0
    else:
        raise ValueError(f"unknown crop mode {mode!r}")
    return store.read(uri, start, num_samples, dtype), num_samples


def build_audio_store(tables: Sequence[str | Path], out_dir: str | Path, sample_rate: int, workers: int, max_quarantine_rate: float) -> dict:
    """The ``audio-store`` stage: decode every clip referenced by ``tables`` into ``out_dir``.

    Args:
        tables: Parquet files with an ``audio_uri`` column (triples; optionally eval sets).
        out_dir: the store directory (replaced atomically).
        sample_rate: the model's sample rate (``audio.sample_rate``).
        workers: decode processes (``data.probe_workers``).
        max_quarantine_rate: fail above this fraction of undecodable clips (``data.max_quarantine_rate``).

    Returns:
        The store summary (``store.json``).
    """
    uris = collect_uris(tables)
    log.info("audio store: %d distinct clips from %d table(s)", len(uris), len(tables))
    return build_store(uris, out_dir, sample_rate, workers, max_quarantine_rate)
