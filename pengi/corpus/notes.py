"""NSynth-like single notes from General MIDI soundfonts (SOURCES.md section 2.2).

Held-out factors (SOURCES.md section 8): the *test* split is rendered with the TimGM6mb
soundfont only; *valid* uses the two training soundfonts but one held-out GM program per
family; *train* uses FluidR3 + MuseScore Lite with the remaining programs. Like NSynth,
instruments are disjoint between train and valid/test.

Level decision: notes are NOT loudness-normalised per clip. Each instrument (soundfont,
program) gets one fixed calibration gain, so that its reference note (mid-range pitch,
velocity 100) has the same level for every instrument; a note's level then follows its MIDI
velocity through the soundfont's own velocity curve, as in NSynth (whose audio is not
normalised either). Velocity is learnable from level and timbre, and level is no instrument
or soundfont cue. Clips are only scaled down if they would clip.
"""

from __future__ import annotations

import numpy as np

from pengi.corpus.common import Clip, ClipSpec, choice, clip_rng, reverb
from pengi.corpus.synth import SOUNDFONTS, SYNTH_GAIN, Event, get_renderer

# NSynth family ids (nsynth/SOURCE.md) and the GM programs standing in for each family.
FAMILIES = ["bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead", "vocal"]
FAMILY_PROGRAMS: dict[str, list[int]] = {
    "keyboard": [0, 1, 2, 4, 6, 7],
    "mallet": [8, 9, 11, 12, 13, 14],
    "organ": [16, 17, 18, 19, 20],
    "guitar": [24, 25, 26, 27, 29],
    "bass": [32, 33, 34, 35, 36, 38],
    "string": [40, 41, 42, 44, 45, 48],
    "vocal": [52, 53, 54],
    "brass": [56, 57, 58, 60, 61, 62],
    "reed": [64, 65, 66, 68, 70, 71],
    "flute": [72, 73, 74, 75, 77, 78],
    "synth_lead": [80, 81, 82, 84, 85, 87],
}
# One program per family is never seen in training (NSynth keeps instruments disjoint).
HELDOUT_PROGRAMS = {2, 12, 19, 26, 35, 42, 53, 60, 66, 74, 85}
SOURCE_NAMES = ["acoustic", "electronic", "synthetic"]
ELECTRONIC = {2, 4, 7, 16, 17, 18, 26, 27, 29, 33, 34, 35, 36}
SYNTHETIC = {38, 54, 62, 80, 81, 82, 84, 85, 87}
# Conservative playable MIDI ranges (every soundfont has zones there); default by family.
FAMILY_RANGES = {
    "keyboard": (33, 96), "mallet": (60, 96), "organ": (36, 84), "guitar": (40, 81), "bass": (28, 55),
    "string": (48, 84), "vocal": (48, 76), "brass": (48, 79), "reed": (50, 81), "flute": (60, 93),
    "synth_lead": (36, 91),
}
PROGRAM_RANGES = {
    9: (72, 100), 11: (53, 89), 13: (65, 100), 14: (60, 77), 41: (48, 84), 42: (36, 72), 56: (55, 82),
    57: (40, 72), 58: (28, 55), 60: (41, 74), 64: (56, 84), 66: (44, 76), 68: (58, 88), 70: (34, 67),
    71: (50, 88), 72: (74, 100),
}
VELOCITIES = [25, 50, 75, 100, 127]
QUALITIES = [
    "bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic", "nonlinear_env",
    "percussive", "reverb", "tempo-synced",
]
NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
TRAIN_SOUNDFONTS = ["FluidR3_GM", "MuseScore_General_Lite"]
TEST_SOUNDFONT = "TimGM6mb"
SILENCE_PEAK = 3e-3  # below this peak a (program, pitch) has no zone in the soundfont
SPLIT_DIRS = {"train": "nsynth-train", "val": "nsynth-valid", "test": "nsynth-test"}


def source_of(program: int) -> str:
    return "synthetic" if program in SYNTHETIC else "electronic" if program in ELECTRONIC else "acoustic"


def family_of(program: int) -> str:
    return next(f for f, progs in FAMILY_PROGRAMS.items() if program in progs)


def note_name(pitch: int) -> str:
    """MIDI 60 -> 'C4' (scientific pitch notation)."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def instrument_id(soundfont: str, program: int) -> int:
    return list(SOUNDFONTS).index(soundfont) * 128 + program


def note_str(family: str, program: int, soundfont: str, pitch: int, velocity: int) -> str:
    """NSynth's ``{family}_{source}_{instrument:03d}-{pitch:03d}-{velocity:03d}``."""
    return f"{family}_{source_of(program)}_{instrument_id(soundfont, program):03d}-{pitch:03d}-{velocity:03d}"


def audible(soundfont: str, program: int, family: str, pitch: int, velocity: int, sr: int) -> bool:
    """Whether the calibrated note peaks above ``SILENCE_PEAK`` in its first 0.5 s (a
    soundfont without a zone for the pitch, or a very soft one, stays below)."""
    synth = get_renderer(sr)
    lo, hi = PROGRAM_RANGES.get(program, FAMILY_RANGES[family])
    gain = 10 ** (synth.calibration_db(soundfont, program, (lo + hi) // 2) / 20)
    events = [Event(0.0, "program", 0, 0, program), Event(0.0, "on", 0, pitch, velocity), Event(0.3, "off", 0, pitch)]
    return float(np.max(np.abs(synth.render(soundfont, events, 0.5)))) * gain >= SILENCE_PEAK


def plan(n: int, seed: int, sr: int) -> list[ClipSpec]:
    """Decide split, soundfont, program, pitch and velocity of ``n`` family-balanced notes.

    Pitch and velocity are fixed here, not in the renderer, so that note_str (the file name)
    is unique by construction; (program, pitch, velocity) combinations a soundfont renders
    silent (about 5% in SOURCES.md 2.2) are redrawn after a 0.5-s audibility probe.
    """
    rng = np.random.default_rng([seed, 1, 10**6])
    n_test, n_val = round(0.15 * n), round(0.10 * n)
    splits = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)
    specs, taken = [], set()
    for i, split in enumerate(splits):
        family = FAMILIES[i % len(FAMILIES)]
        progs = FAMILY_PROGRAMS[family]
        rejected = []
        for _ in range(100):
            if split == "test":
                soundfont, program = TEST_SOUNDFONT, choice(rng, progs)
            elif split == "val":
                soundfont = choice(rng, TRAIN_SOUNDFONTS)
                program = next(p for p in progs if p in HELDOUT_PROGRAMS)
            else:
                soundfont = choice(rng, TRAIN_SOUNDFONTS)
                program = choice(rng, [p for p in progs if p not in HELDOUT_PROGRAMS])
            lo, hi = PROGRAM_RANGES.get(program, FAMILY_RANGES[family])
            pitch, velocity = int(rng.integers(lo, hi + 1)), choice(rng, VELOCITIES)
            key = note_str(family, program, soundfont, pitch, velocity)
            if key in taken:
                continue
            if audible(soundfont, program, family, pitch, velocity, sr):
                break
            rejected.append([soundfont, program, pitch, velocity])
        else:
            raise RuntimeError(f"note {i}: no audible, unused note found for family {family}")
        taken.add(key)
        lo, hi = PROGRAM_RANGES.get(program, FAMILY_RANGES[family])
        gain_db = get_renderer(sr).calibration_db(soundfont, program, (lo + hi) // 2)  # cached per instrument
        specs.append(ClipSpec("notes", i, key, split, f"nsynth/{SPLIT_DIRS[split]}/audio/{key}.flac",
                              {"soundfont": soundfont, "program": program, "family": family, "pitch": pitch,
                               "velocity": velocity, "calibration_gain_db": gain_db, "rejected_as_silent": rejected}))
    return specs


def _envelope_db(x: np.ndarray, sr: int) -> np.ndarray:
    frame = sr // 50  # 20 ms frames
    n = len(x) // frame
    e = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    return 20 * np.log10(e)


def measure_qualities(x: np.ndarray, sr: int, hold_s: float, distortion: bool, reverb_on: bool) -> list[str]:
    """Honest NSynth-style qualities: two are generation parameters, the rest are measured.

    bright / dark: spectral centroid of the held part above 2.5 kHz / below 700 Hz (a gap
    between, so no clip sits on a boundary); fast_decay: the level falls 30 dB below its peak
    before the note-off; long_release: it stays within 40 dB of the peak for more than 1 s
    after the note-off. multiphonic, nonlinear_env, percussive and tempo-synced are never set.
    """
    env = _envelope_db(x, sr)
    peak = env.max()
    off = int(hold_s * 50)
    held = x[: int(hold_s * sr)]
    spec = np.abs(np.fft.rfft(held))
    freqs = np.fft.rfftfreq(len(held), 1 / sr)
    centroid = float(np.sum(freqs * spec) / (np.sum(spec) + 1e-12))
    q = []
    if centroid > 2500:
        q.append("bright")
    elif centroid < 700:
        q.append("dark")
    if distortion:
        q.append("distortion")
    if np.any(env[:off] < peak - 30) and np.argmax(env) < off:
        first_low = int(np.argmax(env[np.argmax(env) :] < peak - 30)) + int(np.argmax(env))
        if first_low < off:
            q.append("fast_decay")
    after = env[off:]
    if len(after) and np.sum(after > peak - 40) > 50:
        q.append("long_release")
    if reverb_on:
        q.append("reverb")
    return [name for name in QUALITIES if name in q]


def render(spec: ClipSpec, seed: int, sr: int, seconds: float) -> Clip:
    """Render one planned note (its file name is ``spec.clip_id``, the note_str)."""
    rng = clip_rng(seed, "notes", spec.index)
    f = spec.factors
    program, family, soundfont = f["program"], f["family"], f["soundfont"]
    pitch, velocity = f["pitch"], f["velocity"]
    hold = 0.6 * seconds  # NSynth: 3 s held of 4 s
    synth = get_renderer(sr)
    events = [Event(0.0, "program", 0, 0, program), Event(0.0, "on", 0, pitch, velocity), Event(hold, "off", 0, pitch)]
    gain_db = f["calibration_gain_db"]  # measured once by the planner (see Renderer.calibration_db)
    x = synth.render(soundfont, events, seconds) * np.float32(10 ** (gain_db / 20))
    distortion = bool(rng.random() < 0.1)
    if distortion:
        drive = float(rng.uniform(4, 10))
        x = (np.tanh(drive * x / (np.max(np.abs(x)) + 1e-9)) * np.max(np.abs(x))).astype(np.float32)
    rt60 = float(rng.uniform(0.4, 1.5)) if rng.random() < 0.25 else 0.0
    if rt60:
        x = reverb(x, sr, rt60, rng, wet=0.35)
    qualities = measure_qualities(x, sr, hold, distortion, rt60 > 0)
    instrument = synth.preset_name(soundfont, 0, program)
    loud = {25: "soft", 75: "moderately loud", 127: "loud"}.get(velocity)
    name = note_name(pitch)
    desc = f"{loud} {family.replace('_', ' ')}" if loud else family.replace("_", " ")
    art = "An" if desc[0] in "aeiou" else "A"
    captions = [f"{art} {desc} note, {name} (MIDI {pitch}), played with the \"{instrument}\" preset."]
    qa = [
        ("Which instrument family plays this note?", family.replace("_", " ")),
        ("What is the pitch of this note?", name),
        ("What is the MIDI number of this note?", str(pitch)),
        ("In which octave is this note?", str(pitch // 12 - 1)),
    ]
    if loud:
        qa.append(("Is the note soft or loud?", "soft" if velocity == 25 else "loud" if velocity == 127 else "medium"))
    labels = {
        "family": family,
        "instrument_source": source_of(program),
        "pitch": pitch,
        "pitch_class": NOTE_NAMES[pitch % 12],
        "octave": pitch // 12 - 1,
        "velocity": velocity,
        "qualities": qualities,
        "instrument": instrument,
    }
    params = {
        "soundfont": soundfont, "program": program, "bank": 0, "pitch": pitch, "velocity": velocity,
        "hold_s": hold, "synth_gain": SYNTH_GAIN, "calibration_gain_db": gain_db, "distortion": distortion,
        "reverb_rt60": round(rt60, 3),
        "rejected_as_silent": f["rejected_as_silent"], "peak": round(float(np.max(np.abs(x))), 5),
    }
    path, pkg, lic = SOUNDFONTS[soundfont]
    sources = [{"package": pkg, "file": path, "license": lic, "kind": "soundfont"}]
    return Clip(x, labels, params, captions, qa, sources)
