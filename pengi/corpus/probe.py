"""Pooled log-mel features for the linear-probe baseline (``bench/probe_logmel.py``).

Kept small and numpy-only so that evaluation code can reuse exactly the same features:
resample to 16 kHz, 64-band log-mel (25 ms window, 10 ms hop, 50 Hz - 8 kHz), then per band the mean and
standard deviation over time and the standard deviation of the frame-to-frame difference
(192 values per clip).
"""

from __future__ import annotations

import functools

import numpy as np

PROBE_SR = 16000
N_FFT = 400
HOP = 160
N_MELS = 64
F_MIN, F_MAX = 50.0, 8000.0
# Floor added to the mel power before the log (a full-scale sine gives ~1e3 per band and frame).
# Without it, near-silent frames (a note's release, the pause after an utterance) sit at
# log(1e-10) and their count dominates the pooled statistics.
LOG_FLOOR = 1e-4


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=4)
def mel_filterbank(sr: int = PROBE_SR, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / (centre - lower)
    down = (upper - freqs[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def logmel(x: np.ndarray, sr: int) -> np.ndarray:
    """(n_mels, frames) natural-log mel power of a mono signal."""
    import soxr

    if sr != PROBE_SR:
        x = soxr.resample(np.asarray(x, dtype=np.float32), sr, PROBE_SR)
    x = np.asarray(x, dtype=np.float32)
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    n_frames = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]  # (frames, n_fft)
    frames = x[idx] * np.hanning(N_FFT).astype(np.float32)[None, :]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames, n_fft/2+1)
    mel = mel_filterbank() @ power.T  # (n_mels, frames)
    return np.log(mel + LOG_FLOOR).astype(np.float32)


def logmel_stats(x: np.ndarray, sr: int) -> np.ndarray:
    """(3 * n_mels,) per band: mean and standard deviation over time of the log-mel, and the
    standard deviation of its frame-to-frame difference (how much a band flickers: onsets,
    rhythm, tremolo), which plain mean/std pooling cannot see."""
    m = logmel(x, sr)
    d = np.diff(m, axis=1)
    return np.concatenate([m.mean(axis=1), m.std(axis=1), d.std(axis=1)]).astype(np.float32)
