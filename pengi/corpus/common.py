"""Shared pieces of the corpus generator: clip specs, seeding, signal helpers, number words.

Every random choice of a clip comes from ``clip_rng(seed, task, index)``, a
``numpy.random.default_rng`` seeded with a SeedSequence of integers, so a clip's audio and
labels depend only on (seed, task, index) and never on the worker that rendered it or on
Python's salted ``hash()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.signal

# A fixed integer per task keeps the SeedSequence keys stable when tasks are added.
TASK_CODES = {"notes": 1, "music": 2, "emotion": 3, "spoken": 4, "events": 5, "scenes": 6, "mixtures": 7}

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@dataclass
class ClipSpec:
    """What the planner decides before rendering: identity, split and the held-out factors.

    ``rel_path`` is the clip's path under the corpus root, in the dataset's native layout.
    ``factors`` holds the parameters the planner fixes (soundfont, voice, class, fold ...);
    the renderer draws everything else from ``clip_rng``.
    """

    task: str
    index: int
    clip_id: str
    split: str
    rel_path: str
    factors: dict[str, Any] = field(default_factory=dict)


@dataclass
class Clip:
    """A rendered clip: audio plus everything derived honestly from its parameters."""

    audio: np.ndarray  # (T,) float32 mono at the corpus sample rate
    labels: dict[str, Any]  # task labels (the probe and the layouts read these)
    params: dict[str, Any]  # every generation parameter
    captions: list[str] = field(default_factory=list)
    qa: list[tuple[str, str]] = field(default_factory=list)
    sources: list[dict[str, str]] = field(default_factory=list)  # real recordings used


def clip_rng(seed: int, task: str, index: int) -> np.random.Generator:
    """The generator for one clip; depends only on (seed, task, index)."""
    return np.random.default_rng([int(seed), TASK_CODES[task], int(index)])


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def rms_db(x: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def set_rms_db(x: np.ndarray, target_db: float) -> np.ndarray:
    """Scale ``x`` so that its RMS level is ``target_db`` dBFS (silence stays silence)."""
    level = rms_db(x)
    if level < -100.0:
        return x
    return (x * db_to_gain(target_db - level)).astype(np.float32)


def fit_length(x: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """Place ``x`` at ``offset`` in a zero buffer of ``n`` samples, truncating what overflows."""
    out = np.zeros(n, dtype=np.float32)
    if offset >= n:
        return out
    seg = x[: max(0, n - offset)]
    out[offset : offset + len(seg)] = seg
    return out


def fade(x: np.ndarray, sr: int, fade_in: float = 0.005, fade_out: float = 0.01) -> np.ndarray:
    """Short raised-cosine fades so that cut segments do not click."""
    x = x.astype(np.float32, copy=True)
    for length, sl in ((int(fade_in * sr), slice(None)), (int(fade_out * sr), slice(None, None, -1))):
        k = min(length, len(x))
        if k > 1:
            ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, k, dtype=np.float32))
            view = x[sl]
            view[:k] *= ramp
    return x


def lowpass(x: np.ndarray, sr: int, cutoff: float, order: int = 6) -> np.ndarray:
    sos = scipy.signal.butter(order, cutoff, btype="low", fs=sr, output="sos")
    return scipy.signal.sosfilt(sos, x).astype(np.float32)


def highpass(x: np.ndarray, sr: int, cutoff: float, order: int = 4) -> np.ndarray:
    sos = scipy.signal.butter(order, cutoff, btype="high", fs=sr, output="sos")
    return scipy.signal.sosfilt(sos, x).astype(np.float32)


def bandpass(x: np.ndarray, sr: int, lo: float, hi: float, order: int = 2) -> np.ndarray:
    sos = scipy.signal.butter(order, [lo, hi], btype="band", fs=sr, output="sos")
    return scipy.signal.sosfilt(sos, x).astype(np.float32)


def random_eq(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """A random tilt: low shelf and high shelf gains of +-6 dB, approximated by mixing bands.

    Applied to every class of a task so that the channel colour is no label cue.
    """
    low_db, high_db = float(rng.uniform(-6, 6)), float(rng.uniform(-6, 6))
    lo = lowpass(x, sr, 400.0, order=2)
    hi = highpass(x, sr, 3000.0, order=2)
    y = x + (db_to_gain(low_db) - 1.0) * lo + (db_to_gain(high_db) - 1.0) * hi
    return y.astype(np.float32), {"eq_low_db": round(low_db, 2), "eq_high_db": round(high_db, 2)}


def reverb(x: np.ndarray, sr: int, rt60: float, rng: np.random.Generator, wet: float = 0.3) -> np.ndarray:
    """Exponentially decaying noise impulse response (a cheap, deterministic room)."""
    n = int(rt60 * sr)
    t = np.arange(n, dtype=np.float32) / sr
    ir = rng.standard_normal(n).astype(np.float32) * np.exp(-6.9 * t / rt60).astype(np.float32)  # -60 dB at rt60
    ir /= np.sqrt(np.sum(ir**2)) + 1e-9
    tail = scipy.signal.fftconvolve(x, ir)[: len(x)].astype(np.float32)
    return ((1.0 - wet) * x + wet * tail).astype(np.float32)


def peak_limit(x: np.ndarray, peak: float = 0.98) -> np.ndarray:
    """Scale down (never up) so that the clip does not clip when written as 16-bit PCM."""
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return (x * (peak / m)).astype(np.float32) if m > peak else x.astype(np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    import soxr  # light, but only the renderers need it

    if sr_in == sr_out:
        return x.astype(np.float32)
    return soxr.resample(x.astype(np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def mix_at_snr(fg: np.ndarray, bg: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``bg`` scaled so that the foreground-to-background RMS ratio is ``snr_db``."""
    fg_db, bg_db = rms_db(fg), rms_db(bg)
    return (fg + bg * db_to_gain(fg_db - snr_db - bg_db)).astype(np.float32)


def choice(rng: np.random.Generator, items, p=None):
    """``rng.choice`` that returns the Python object (not a numpy scalar) of a list."""
    return items[int(rng.choice(len(items), p=p))]
