"""Audio IO for the whole pipeline: probing, decoding, resampling, cropping.

One decoder path (DESIGN.md, STYLE.md "one implementation of each thing"):

* **soundfile** (libsndfile: WAV, FLAC, Ogg, MP3, AIFF, AU, ...) reads headers and samples
  in-process, which is ~10x faster than starting a process per file (TOOLING.md §Audio);
  resampling is done with **soxr**.
* **ffmpeg** (through ``ffmpeg-python``) handles what libsndfile cannot read (MP4/M4A/AAC,
  FLV, WMA, ...). Its default stereo->mono downmix is sqrt(2) louder than averaging, so the
  pipe uses ``pan=mono|c0=0.5*c0+0.5*c1`` (generalised to N channels) to match the soundfile
  path, which averages channels.

Every function takes a local path or an ``s3://`` URI; bytes are read through
:mod:`pengi.storage`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf

from pengi import storage

log = logging.getLogger(__name__)

# Extensions that name audio files; adapters accept any of them for a native stem.
AUDIO_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".snd",
    ".m4a", ".mp4", ".aac", ".wma", ".webm", ".flv", ".mkv", ".caf", ".w64", ".rf64",
)
# Containers libsndfile does not read: go straight to ffprobe/ffmpeg.
FFMPEG_ONLY_EXTENSIONS = (".m4a", ".mp4", ".aac", ".wma", ".webm", ".flv", ".mkv", ".opus")
# Subtypes that can hold NaN/Inf; integer PCM cannot, so only these need a sample scan.
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")

VerifyMode = Literal["header", "tail", "full"]


class AudioError(Exception):
    """An audio file is missing, empty, truncated, undecodable or holds non-finite samples.

    ``reason`` is a short machine-readable tag (``missing``, ``empty``, ``truncated``,
    ``undecodable``, ``nonfinite``) used as the quarantine reason; the message has details.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class AudioInfo:
    """Facts read from an audio file's header (and optionally its samples)."""

    frames: int
    sample_rate: int
    channels: int
    format: str  # soundfile format ("WAV", "FLAC", ...) or ffprobe codec name
    subtype: str  # "PCM_16", "FLOAT", ... or "" when unknown

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _ext(uri: str) -> str:
    return os.path.splitext(str(uri))[1].lower()


def _wav_truncated(head: bytes, file_size: int) -> bool:
    """True when a RIFF/WAVE header declares more data than the file holds.

    libsndfile silently shortens ``frames`` to what is present, so a cut download would pass
    as a shorter clip; the declared ``data`` chunk size tells the truth.
    """
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return False
    endian = "<" if head[:4] == b"RIFF" else ">"
    pos = 12
    while pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        (size,) = struct.unpack(endian + "I", head[pos + 4 : pos + 8])
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF mean "unknown/streamed" (and RF64 uses ds64); do not judge those.
            return 0 < size < 0xFFFFFFFF and pos + 8 + size > file_size
        pos += 8 + size + (size & 1)
    return False


def _probe_soundfile(fh, uri: str, verify: VerifyMode, file_size: int | None) -> AudioInfo:
    try:
        with sf.SoundFile(fh) as f:
            info = AudioInfo(f.frames, f.samplerate, f.channels, f.format, f.subtype)
            if info.frames <= 0:
                raise AudioError("empty", f"{uri}: no audio frames")
            if verify == "full" or (verify == "tail" and info.subtype in FLOAT_SUBTYPES):
                # Whole-file scan: finds mid-file corruption and NaN/Inf (float files only can hold them).
                _scan_blocks(f, uri)
            elif verify == "tail":
                # Reading the last block finds cut FLAC/Ogg files, whose headers still claim the full length.
                f.seek(max(info.frames - 1024, 0))
                got = f.read(1024, dtype="float32", always_2d=True)
                if len(got) == 0:
                    raise AudioError("truncated", f"{uri}: could not read the last frames")
    except sf.LibsndfileError as exc:
        msg = str(exc)
        reason = "truncated" if ("seek" in msg or "premature" in msg.lower()) else "undecodable"
        raise AudioError(reason, f"{uri}: {msg}") from None
    if verify != "header" and info.format in ("WAV", "WAVEX") and file_size is not None:
        fh.seek(0)
        if _wav_truncated(fh.read(4096), file_size):
            raise AudioError("truncated", f"{uri}: WAV data chunk is longer than the file")
    return info


def _scan_blocks(f: sf.SoundFile, uri: str, block: int = 65536) -> None:
    f.seek(0)
    read = 0
    for chunk in f.blocks(blocksize=block, dtype="float32", always_2d=True):  # (n, C)
        if not np.isfinite(chunk).all():
            raise AudioError("nonfinite", f"{uri}: NaN or Inf samples near frame {read}")
        read += len(chunk)
    if read < f.frames:
        raise AudioError("truncated", f"{uri}: decoded {read} of {f.frames} frames")


def _probe_ffmpeg(uri: str) -> AudioInfo:
    import ffmpeg  # only for formats libsndfile cannot read

    with storage.local_copy(uri) as path:
        try:
            meta = ffmpeg.probe(str(path))
        except ffmpeg.Error as exc:
            err = exc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise AudioError("undecodable", f"{uri}: ffprobe: {err[-1] if err else exc}") from None
    streams = [s for s in meta.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise AudioError("undecodable", f"{uri}: no audio stream")
    s = streams[0]
    sr = int(s.get("sample_rate") or 0)
    dur = float(s.get("duration") or meta.get("format", {}).get("duration") or 0.0)
    frames = int(round(dur * sr))
    if frames <= 0:
        raise AudioError("empty", f"{uri}: no audio frames")
    return AudioInfo(frames, sr, int(s.get("channels") or 0), str(s.get("codec_name", "")), "")


def probe(uri: str, verify: VerifyMode = "tail") -> AudioInfo:
    """Read an audio file's duration, sample rate and channels without decoding it all.

    Args:
        uri: local path or ``s3://`` URI.
        verify: ``"header"`` reads the header only; ``"tail"`` also reads the last block
            (finds truncated FLAC/Ogg and WAV files whose data chunk is cut) and scans float
            files for NaN/Inf; ``"full"`` decodes every sample.

    Returns:
        :class:`AudioInfo`.

    Raises:
        AudioError: with ``reason`` ``missing``, ``empty``, ``truncated``, ``undecodable`` or
            ``nonfinite``.
    """
    uri = str(uri)
    if _ext(uri) in FFMPEG_ONLY_EXTENSIONS:
        if not storage.exists(uri):
            raise AudioError("missing", f"{uri}: no such file")
        return _probe_ffmpeg(uri)
    with contextlib.ExitStack() as stack:
        try:
            # On S3 this is a seekable ranged reader: a header probe fetches one chunk, not the object.
            fh = stack.enter_context(storage.open_binary(uri))
        except (FileNotFoundError, IsADirectoryError):
            raise AudioError("missing", f"{uri}: no such file") from None
        size = fh.seek(0, io.SEEK_END)
        fh.seek(0)
        if size == 0:
            raise AudioError("empty", f"{uri}: file is empty (0 bytes)")
        try:
            return _probe_soundfile(fh, uri, verify, size)
        except AudioError as exc:
            if exc.reason != "undecodable":
                raise
            error = exc
    # libsndfile refused the container; ffmpeg may still know it (e.g. a .wav that is really MP4).
    try:
        return _probe_ffmpeg(uri)
    except AudioError:
        raise error from None


def _downmix_filter(channels: int) -> str:
    """ffmpeg ``pan`` expression averaging ``channels`` inputs (matches ``mean(axis=channels)``)."""
    w = 1.0 / channels
    return "mono|c0=" + "+".join(f"{w:.10g}*c{i}" for i in range(channels))


def _resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return wave
    import soxr

    # soxr wants (T,) or (T, C); wave is (C, T) or (T,)
    if wave.ndim == 2:
        return np.ascontiguousarray(soxr.resample(wave.T, sr_in, sr_out, quality="HQ").T, dtype=np.float32)
    return soxr.resample(wave, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def _decode_soundfile(uri: str) -> tuple[np.ndarray, int]:
    with storage.open_binary(uri) as fh:
        src = fh if not storage.is_s3(uri) else io.BytesIO(fh.read())
        wave, sr = sf.read(src, dtype="float32", always_2d=True)  # (T, C)
    return np.ascontiguousarray(wave.T), sr  # (C, T)


def _decode_ffmpeg(uri: str, sample_rate: int, mono: bool) -> np.ndarray:
    import ffmpeg

    info = _probe_ffmpeg(uri)
    with storage.local_copy(uri) as path:
        out_channels = 1 if mono else info.channels
        kwargs = {"format": "f32le", "acodec": "pcm_f32le", "ac": out_channels, "ar": sample_rate}
        if mono and info.channels > 1:
            # Passed as -af: ffmpeg-python's .filter() would escape the '=' inside the pan spec.
            kwargs["af"] = "pan=" + _downmix_filter(info.channels)
        stream = ffmpeg.input(str(path)).audio.output("pipe:", **kwargs)
        try:
            raw, _ = stream.run(capture_stdout=True, capture_stderr=True, quiet=True)
        except ffmpeg.Error as exc:
            err = exc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise AudioError("undecodable", f"{uri}: ffmpeg: {err[-1] if err else exc}") from None
    wave = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return wave if mono else wave.reshape(-1, out_channels).T  # (T,) or (C, T)


def decode(uri: str, sample_rate: int, mono: bool = True) -> np.ndarray:
    """Decode a file to float32 at ``sample_rate``.

    Args:
        uri: local path or ``s3://`` URI.
        sample_rate: output rate (Hz); soxr (soundfile path) or ffmpeg resamples.
        mono: average the channels (both paths use the same averaging convention).

    Returns:
        ``(T,)`` float32 when ``mono``, else ``(C, T)``.

    Raises:
        AudioError: missing/empty/undecodable file or NaN/Inf samples.
    """
    uri = str(uri)
    if _ext(uri) in FFMPEG_ONLY_EXTENSIONS:
        wave = _decode_ffmpeg(uri, sample_rate, mono)
    else:
        try:
            wave, sr = _decode_soundfile(uri)  # (C, T)
        except FileNotFoundError:
            raise AudioError("missing", f"{uri}: no such file") from None
        except sf.LibsndfileError:
            if not storage.exists(uri):
                raise AudioError("missing", f"{uri}: no such file") from None
            wave = _decode_ffmpeg(uri, sample_rate, mono)
        else:
            if mono:
                wave = wave.mean(axis=0)  # (C, T) -> (T,)
            wave = _resample(wave, sr, sample_rate)
    if wave.size == 0:
        raise AudioError("empty", f"{uri}: no samples")
    if not np.isfinite(wave).all():
        raise AudioError("nonfinite", f"{uri}: NaN or Inf samples")
    return wave


def has_nonfinite(wave: np.ndarray) -> bool:
    """True when ``wave`` holds a NaN or an infinity."""
    return not bool(np.isfinite(wave).all())


def crop(
    wave: np.ndarray,
    n: int,
    mode: Literal["random", "center", "start"] = "start",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Cut or zero-pad ``wave`` to exactly ``n`` samples along its last axis.

    Args:
        wave: ``(T,)`` or ``(C, T)``.
        n: samples to keep.
        mode: where the window starts when ``T > n``: ``"random"`` (training; needs ``rng``
            so crops are reproducible), ``"center"`` or ``"start"`` (deterministic, for
            evaluation and inference). Shorter input is padded with zeros at the end.
        rng: numpy Generator for ``"random"``.

    Returns:
        Array of the same rank with last dimension ``n``.
    """
    t = wave.shape[-1]
    if t < n:
        pad = [(0, 0)] * (wave.ndim - 1) + [(0, n - t)]
        return np.pad(wave, pad)
    if mode == "random":
        if rng is None:
            raise ValueError("crop(mode='random') needs an rng so the crop is reproducible")
        start = int(rng.integers(0, t - n + 1))
    elif mode == "center":
        start = (t - n) // 2
    elif mode == "start":
        start = 0
    else:
        raise ValueError(f"unknown crop mode {mode!r}")
    return wave[..., start : start + n]
