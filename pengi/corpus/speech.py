"""Speech: CREMA-D-like emotion (prosody styles) and spoken digit strings (SOURCES.md section 3).

The "emotions" are acted *prosody styles* (pitch, range, rate, level and, half of the time, a
channel effect), not real emotions. Every utterance, whatever its engine, goes through the same
band limit (resample to 16 kHz, 7 kHz low-pass, back to the corpus rate) so that the engine's
sample rate and bandwidth are no cue (SOURCES.md section 8).

Voices ("actors"): espeak-ng accent+variant pairs and the four flite voices, numbered like
CREMA-D actors (1001...). Held out for test: every flite voice (an unseen engine) and a few
espeak voices.
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile

import numpy as np
import soundfile as sf

from pengi.corpus.common import (
    Clip,
    ClipSpec,
    choice,
    clip_rng,
    fit_length,
    lowpass,
    number_word,
    peak_limit,
    random_eq,
    resample,
    reverb,
    set_rms_db,
)

ACCENTS = {"en-us": "American", "en-gb": "British", "en-gb-scotland": "Scottish", "en-029": "Caribbean",
           "en-gb-x-rp": "Received Pronunciation", "en-gb-x-gbclan": "Lancashire", "en-gb-x-gbcwmd": "West Midlands"}
ESPEAK_VARIANTS = {"m1": "male", "m2": "male", "m3": "male", "m4": "male", "m5": "male", "m7": "male",
                   "f1": "female", "f2": "female", "f3": "female", "f4": "female", "f5": "female"}
# flite voices: (gender, base f0 Hz, accent); rms ignores f0 targets (measured).
FLITE_VOICES = {"slt": ("female", 180.0, "American"), "awb": ("male", 110.0, "Scottish"),
                "rms": ("male", 105.0, "American"), "kal16": ("male", 105.0, "American")}
N_ESPEAK_ACTORS = 36
HELDOUT_ESPEAK = 5  # espeak voices only in test (besides every flite voice)
VAL_ESPEAK = 3

# CREMA-D sentence codes and texts.
SENTENCES = {
    "IEO": "It's eleven o'clock.", "TIE": "That is exactly what happened.", "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.", "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.", "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.", "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.", "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
# code -> (name, espeak pitch range, SSML range %, words per minute, level offset dB, effect)
EMOTIONS = {
    "NEU": ("neutral", (45, 55), (-10, 10), (150, 170), 0.0, None),
    "HAP": ("happy", (65, 80), (50, 90), (180, 205), 2.0, None),
    "SAD": ("sad", (20, 35), (-90, -60), (100, 125), -6.0, "lowpass"),
    "ANG": ("angry", (50, 65), (40, 80), (185, 215), 5.0, "overdrive"),
    "FEA": ("fearful", (70, 90), (-40, 0), (170, 195), -3.0, "tremolo"),
}
LEVELS = {"LO": 0.5, "MD": 1.0, "HI": 1.5, "XX": 1.0}  # intensity: scales the deviation from neutral
BAND_SR, BAND_CUTOFF = 16000, 7000.0


def voices(seed: int) -> list[dict]:
    """The actor table: id, engine, voice, gender, accent, split (deterministic for a seed)."""
    rng = np.random.default_rng([seed, 3, 10**6])
    pairs = [(a, v) for a in ACCENTS for v in ESPEAK_VARIANTS]
    picked = [pairs[i] for i in rng.permutation(len(pairs))[:N_ESPEAK_ACTORS]]
    table = []
    for k, (accent, variant) in enumerate(picked):
        split = "test" if k < HELDOUT_ESPEAK else "val" if k < HELDOUT_ESPEAK + VAL_ESPEAK else "train"
        table.append({"engine": "espeak-ng", "voice": f"{accent}+{variant}", "gender": ESPEAK_VARIANTS[variant],
                      "accent": ACCENTS[accent], "split": split})
    for name, (gender, _, accent) in FLITE_VOICES.items():
        table.append({"engine": "flite", "voice": name, "gender": gender, "accent": accent, "split": "test"})
    for k, row in enumerate(table):
        row["actor"] = 1001 + k
    return table


def tts(engine: str, voice: str, text: str, pitch: int, range_pct: int, wpm: int) -> tuple[np.ndarray, int]:
    """Synthesise ``text``; returns (mono float32, sample rate). Deterministic for its inputs."""
    if engine == "espeak-ng":
        ssml = f'<speak><prosody range="{range_pct:+d}%">{text}</prosody></speak>'
        out = subprocess.run(["espeak-ng", "-m", "-v", voice, "-p", str(pitch), "-s", str(wpm), "-a", "80",
                              "--stdout", ssml], capture_output=True, check=True).stdout
        x, sr = sf.read(io.BytesIO(out), dtype="float32")
    else:
        _, base_f0, _ = FLITE_VOICES[voice]
        f0 = base_f0 * (0.7 + 0.8 * pitch / 100.0)  # espeak-like 0..99 pitch scale -> f0 factor 0.7..1.5
        std = max(5.0, base_f0 * 0.15 * (1 + range_pct / 100.0))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "u.wav")
            subprocess.run(["flite", "-voice", voice, "--setf", f"int_f0_target_mean={f0:.1f}",
                            "--setf", f"int_f0_target_stddev={std:.1f}",
                            "--setf", f"duration_stretch={160.0 / wpm:.3f}", "-t", text, "-o", path],
                           capture_output=True, check=True)
            x, sr = sf.read(path, dtype="float32")
    if x.ndim > 1:
        x = x.mean(axis=1)
    return x, sr


def band_limit(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """The common channel for every engine: 16 kHz, 7 kHz low-pass, then the corpus rate."""
    y = resample(x, sr_in, BAND_SR)
    y = lowpass(y, BAND_SR, BAND_CUTOFF, order=8)
    return resample(y, BAND_SR, sr_out)


def _effect(x: np.ndarray, sr: int, effect: str) -> np.ndarray:
    if effect == "lowpass":
        return lowpass(x, sr, 3000.0, order=4)
    if effect == "overdrive":
        m = np.max(np.abs(x)) + 1e-9
        return (np.tanh(4.0 * x / m) * m).astype(np.float32)
    t = np.arange(len(x)) / sr  # 7 Hz tremolo
    return (x * (0.65 + 0.35 * np.sin(2 * np.pi * 7.0 * t))).astype(np.float32)


def plan_emotion(n: int, seed: int) -> list[ClipSpec]:
    """Pick ``n`` distinct (actor, sentence, emotion, level) files, split by actor."""
    rng = np.random.default_rng([seed, 3, 10**6 + 1])
    table = voices(seed)
    shares = {"test": 0.2, "val": 0.1}
    specs = []
    i = 0
    for split in ("train", "val", "test"):
        count = round(shares[split] * n) if split != "train" else n - round(0.2 * n) - round(0.1 * n)
        actors = [a for a in table if a["split"] == split]
        combos = []
        for a in actors:
            for s in SENTENCES:
                for e in EMOTIONS:
                    lvls = ["XX"] if s != "IEO" or e == "NEU" else ["LO", "MD", "HI"]
                    combos += [(a, s, e, lv) for lv in lvls]
        for j in rng.permutation(len(combos))[:count]:
            a, s, e, lv = combos[int(j)]
            name = f"{a['actor']}_{s}_{e}_{lv}"
            specs.append(ClipSpec("emotion", i, name, split, f"crema_d/AudioWAV/{name}.flac",
                                  {"actor": a, "sentence": s, "emotion": e, "level": lv}))
            i += 1
    return specs


def _voice_chain(x: np.ndarray, sr_tts: int, sr: int, seconds: float, rng, level_db: float):
    """Band limit, place at a random offset, random EQ, optional room, set the level."""
    y = band_limit(x, sr_tts, sr)
    n = int(seconds * sr)
    y = y[:n]
    offset = int(rng.integers(0, max(1, n - len(y))))
    y = fit_length(y, n, offset)
    y, eq = random_eq(y, sr, rng)
    rt60 = float(rng.uniform(0.2, 0.8)) if rng.random() < 0.5 else 0.0
    if rt60:
        y = reverb(y, sr, rt60, rng, wet=0.25)
    return peak_limit(set_rms_db(y, level_db)), {"offset_s": round(offset / sr, 3), "reverb_rt60": round(rt60, 3), **eq}


def render_emotion(spec: ClipSpec, seed: int, sr: int, seconds: float) -> Clip:
    rng = clip_rng(seed, "emotion", spec.index)
    f = spec.factors
    actor, code, level = f["actor"], f["emotion"], f["level"]
    name, (p_lo, p_hi), (r_lo, r_hi), (w_lo, w_hi), level_off, effect = EMOTIONS[code]
    scale = LEVELS[level]
    neutral = EMOTIONS["NEU"]

    def draw(lo_hi, neu):  # intensity scales the distance from the neutral centre
        v = rng.uniform(*lo_hi)
        c = (neu[0] + neu[1]) / 2
        return int(round(c + scale * (v - c)))

    pitch, range_pct, wpm = draw((p_lo, p_hi), neutral[1]), draw((r_lo, r_hi), neutral[2]), draw((w_lo, w_hi), neutral[3])
    text = SENTENCES[f["sentence"]]
    x, sr_tts = tts(actor["engine"], actor["voice"], text, int(np.clip(pitch, 0, 99)), range_pct, wpm)
    applied = effect if effect and rng.random() < 0.5 else None
    if applied:
        x = _effect(x, sr_tts, applied)
    level_db = -22.0 + scale * level_off + float(rng.uniform(-3, 3))
    y, chain = _voice_chain(x, sr_tts, sr, seconds, rng, level_db)
    speed = "slow" if wpm < 130 else "fast" if wpm > 175 else None
    who = "A woman" if actor["gender"] == "female" else "A man"
    manner = {"neutral": "in a neutral tone", "happy": "in a happy, lively voice", "sad": "in a slow, low, quiet voice",
              "angry": "in a loud, angry voice", "fearful": "in a high, fearful voice"}[name]
    captions = [f"{who} with {'an' if actor['accent'][0] in 'AEIOU' else 'a'} {actor['accent']} accent says "
                f"\"{text}\" {manner}."]
    qa = [("What emotion does the speaker express?", name), ("Is the speaker male or female?", actor["gender"]),
          ("What is said?", text.rstrip("."))]
    if speed:
        qa.append(("Is the speaker fast or slow?", speed))
    labels = {"emotion": name, "emotion_code": code, "level": level, "actor": actor["actor"], "gender": actor["gender"],
              "accent": actor["accent"], "sentence": f["sentence"], "text": text, "engine": actor["engine"]}
    params = {"engine": actor["engine"], "voice": actor["voice"], "pitch": pitch, "range_pct": range_pct, "wpm": wpm,
              "effect": applied, "rms_db": round(level_db, 2), "tts_sample_rate": sr_tts,
              "band_limit": f"{BAND_SR} Hz, lowpass {BAND_CUTOFF:.0f} Hz", **chain}
    return Clip(y, labels, params, captions, qa, _tts_sources(actor["engine"]))


def _tts_sources(engine: str) -> list[dict]:
    pkg, lic = ("espeak-ng", "GPL-3.0 (program; its output is not covered)") if engine == "espeak-ng" else (
        "flite", "BSD-style CMU licence")
    return [{"package": pkg, "file": f"/usr/bin/{engine}", "license": lic, "kind": "tts"}]


# ------------------------------------------------------------------------------------------
# Spoken content: digit strings (an audiofolder dataset)
# ------------------------------------------------------------------------------------------


def plan_spoken(n: int, seed: int) -> list[ClipSpec]:
    """Digit strings of 1-4 digits; the speaker decides the split (held-out voices for test)."""
    rng = np.random.default_rng([seed, 4, 10**6])
    table = voices(seed)
    specs = []
    n_test, n_val = round(0.2 * n), round(0.1 * n)
    for i in range(n):
        split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
        actor = choice(rng, [a for a in table if a["split"] == split])
        folder = {"train": "train", "val": "validation", "test": "test"}[split]
        cid = f"digits_{i:05d}"
        specs.append(ClipSpec("spoken", i, cid, split, f"audiofolder/{folder}/{cid}.flac", {"actor": actor}))
    return specs


def render_spoken(spec: ClipSpec, seed: int, sr: int, seconds: float) -> Clip:
    rng = clip_rng(seed, "spoken", spec.index)
    actor = spec.factors["actor"]
    count = int(rng.integers(1, 5))
    digits = [int(d) for d in rng.integers(0, 10, size=count)]
    words = [number_word(d) for d in digits]
    pitch, wpm = int(rng.integers(30, 70)), int(rng.integers(130, 175))
    x, sr_tts = tts(actor["engine"], actor["voice"], ", ".join(words) + ".", pitch, 0, wpm)
    y, chain = _voice_chain(x, sr_tts, sr, seconds, rng, float(rng.uniform(-26, -18)))
    who = "A woman" if actor["gender"] == "female" else "A man"
    plural = "number" if count == 1 else "numbers"
    captions = [f"{who} says {number_word(count)} {plural}: {', '.join(words)}."]
    qa = [("How many numbers are spoken?", number_word(count)), ("What is the first number?", words[0]),
          ("What is the last number?", words[-1]), ("Is the speaker male or female?", actor["gender"])]
    labels = {"digit_count": count, "digits": "".join(map(str, digits)), "first_digit": words[0],
              "gender": actor["gender"], "speaker": actor["actor"], "engine": actor["engine"]}
    params = {"engine": actor["engine"], "voice": actor["voice"], "pitch": pitch, "wpm": wpm,
              "text": ", ".join(words) + ".", "tts_sample_rate": sr_tts, **chain}
    return Clip(y, labels, params, captions, qa, _tts_sources(actor["engine"]))
