"""GTZAN-like genre phrases: an in-process sequencer over FluidSynth (SOURCES.md section 2.3).

Shortcut fixes from SOURCES.md section 8: instruments, drum kits, drum patterns, comping and
bass styles all come from pools SHARED by every genre, with genre-*biased* weights only;
tempo ranges overlap; drums are sometimes dropped; every clip gets a random EQ, an optional
room and a random loudness, so no single cue names the genre.

Held-out factor: each genre has one lead instrument that appears only in its *test* clips
(unseen (genre, lead) combinations), and two tonics (F#, B) occur only in test clips.
"""

from __future__ import annotations

import numpy as np

from pengi.corpus.common import Clip, ClipSpec, choice, clip_rng, peak_limit, random_eq, reverb, set_rms_db
from pengi.corpus.synth import DRUM_CHANNEL, SOUNDFONTS, Event, get_renderer

GENRES = ["blues", "classical", "country", "disco", "electronic", "hiphop", "jazz", "metal", "reggae", "rock"]

LEAD = {0: "piano", 4: "electric piano", 11: "vibraphone", 16: "organ", 22: "harmonica", 24: "nylon guitar",
        25: "steel guitar", 27: "clean electric guitar", 29: "overdriven guitar", 30: "distorted guitar",
        40: "violin", 56: "trumpet", 65: "alto saxophone", 66: "tenor saxophone", 71: "clarinet", 73: "flute",
        80: "square synth lead", 81: "sawtooth synth lead"}
CHORDS = {0: "piano", 4: "electric piano", 16: "organ", 24: "nylon guitar", 25: "steel guitar",
          27: "clean electric guitar", 29: "overdriven guitar", 30: "distorted guitar", 48: "strings",
          61: "brass section", 89: "warm synth pad"}
BASS = {32: "acoustic bass", 33: "finger bass", 34: "picked bass", 35: "fretless bass", 38: "synth bass",
        42: "cello", 58: "tuba"}
KITS = {0: "standard", 8: "room", 16: "power", 24: "electronic", 25: "TR-808", 32: "jazz", 40: "brush"}
PATTERNS = ["rock", "four_on_floor", "boom_bap", "swing_ride", "shuffle", "one_drop", "train_beat", "half_time",
            "double_kick"]
COMPS = ["sustain", "strum8", "offbeat", "stabs", "arpeggio"]
BASSLINES = ["roots", "walking", "octaves", "root_fifth", "syncopated"]

# Genre biases: (bpm range, mode weights major/minor/blues, favoured leads, chords, bass, kits,
# patterns, comps, basslines, swing, probability of drums). Everything not favoured keeps weight 1.
STYLE = {
    "blues": ((70, 130), (0.2, 0.2, 0.6), [22, 27, 29, 65], [0, 16, 27], [33, 32], [0, 8], ["shuffle"],
              ["strum8", "stabs"], ["walking", "root_fifth"], 0.6, 0.85),
    "classical": ((60, 130), (0.6, 0.4, 0.0), [40, 73, 71, 0], [48, 0], [42, 58], [8], ["rock"],
                  ["sustain", "arpeggio"], ["roots"], 0.0, 0.15),
    "country": ((90, 150), (0.8, 0.2, 0.0), [25, 22, 40, 27], [25, 24, 0], [32, 34], [0, 40],
                ["train_beat", "rock"], ["strum8"], ["root_fifth"], 0.1, 0.85),
    "disco": ((110, 130), (0.5, 0.5, 0.0), [40, 56, 27, 81], [48, 27, 61], [33, 34, 38], [0, 24],
              ["four_on_floor"], ["offbeat", "stabs"], ["octaves"], 0.0, 0.9),
    "electronic": ((115, 140), (0.3, 0.7, 0.0), [80, 81, 4], [89, 4], [38], [24, 25], ["four_on_floor"],
                   ["sustain", "arpeggio"], ["octaves", "syncopated"], 0.0, 0.85),
    "hiphop": ((75, 100), (0.3, 0.7, 0.0), [0, 4, 80, 73], [4, 89, 0], [38, 33], [25, 24, 0],
               ["boom_bap", "half_time"], ["stabs", "sustain"], ["syncopated", "roots"], 0.5, 0.9),
    "jazz": ((80, 160), (0.6, 0.4, 0.0), [66, 65, 56, 11, 0], [0, 4], [32, 35], [32, 40], ["swing_ride"],
             ["stabs", "sustain"], ["walking"], 0.65, 0.85),
    "metal": ((100, 170), (0.1, 0.9, 0.0), [30, 29, 81], [30, 29], [34, 33], [16, 0], ["double_kick", "half_time"],
              ["strum8"], ["roots"], 0.0, 0.9),
    "reggae": ((65, 95), (0.6, 0.4, 0.0), [16, 0, 56, 27], [0, 16, 27], [33, 35], [0, 8], ["one_drop"],
               ["offbeat"], ["syncopated", "roots"], 0.3, 0.9),
    "rock": ((95, 150), (0.6, 0.4, 0.0), [29, 27, 30, 0], [29, 27, 0], [34, 33], [0, 16, 8], ["rock"],
              ["strum8", "stabs"], ["roots", "octaves"], 0.0, 0.9),
}
BIAS = 12.0  # how much a favoured item outweighs the rest of the shared pool
# A lead instrument the genre does not favour, heard with that genre only in test clips.
HELDOUT_LEAD = {"blues": 71, "classical": 25, "country": 11, "disco": 73, "electronic": 40, "hiphop": 27,
                "jazz": 24, "metal": 56, "reggae": 65, "rock": 80}
TONICS = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
HELDOUT_TONICS = {"F#", "B"}
SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10], "blues": [0, 3, 5, 6, 7, 10]}
PROGRESSIONS = {"major": [[0, 3, 4, 0], [0, 5, 3, 4], [0, 4, 5, 3], [1, 4, 0, 0]],
                "minor": [[0, 5, 2, 6], [0, 3, 4, 0], [0, 6, 5, 6], [0, 3, 6, 2]],
                "blues": [[0, 0, 3, 0], [3, 3, 0, 0], [4, 3, 0, 4]]}
KICK, SNARE, RIM, CLAP, HAT, OPEN_HAT, PEDAL_HAT, RIDE, CRASH = 36, 38, 37, 39, 42, 46, 44, 51, 49
SPLIT_SHARES = (("test", 0.2), ("val", 0.1))


def _weighted(rng, pool: list, favoured: list, exclude=()) -> object:
    items = [x for x in pool if x not in exclude]
    w = np.array([BIAS if x in favoured else 1.0 for x in items])
    return choice(rng, items, p=w / w.sum())


def plan(n: int, seed: int) -> list[ClipSpec]:
    """Genre-balanced plan; per genre the first 20% are test, the next 10% validation."""
    specs = []
    per = [n // len(GENRES) + (1 if g < n % len(GENRES) else 0) for g in range(len(GENRES))]
    i = 0
    for g, genre in enumerate(GENRES):
        n_test, n_val = round(0.2 * per[g]), round(0.1 * per[g])
        for k in range(per[g]):
            split = "test" if k < n_test else "val" if k < n_test + n_val else "train"
            rel = f"gtzan_genres/genres/{genre}/{genre}.{k:05d}.flac"
            specs.append(ClipSpec("music", i, f"{genre}.{k:05d}", split, rel, {"genre": genre}))
            i += 1
    return specs


def _drums(pattern: str, step: float, bars: int, swing: float, rng) -> list[tuple[float, int, int]]:
    """(time, key, velocity) hits for a 16-step-per-bar pattern."""
    hits = []
    for b in range(bars):
        for s in range(16):
            t = (b * 16 + s) * step + (swing * step / 2 if s % 2 == 1 else 0.0)
            keys = []
            if pattern == "rock":
                keys += [KICK] if s in (0, 8, 10) else []
                keys += [SNARE] if s in (4, 12) else []
                keys += [HAT] if s % 2 == 0 else []
            elif pattern == "four_on_floor":
                keys += [KICK] if s % 4 == 0 else []
                keys += [CLAP] if s in (4, 12) else []
                keys += [OPEN_HAT] if s % 4 == 2 else []
            elif pattern == "boom_bap":
                keys += [KICK] if s in (0, 7, 10) else []
                keys += [SNARE] if s in (4, 12) else []
                keys += [HAT] if s % 2 == 0 else []
            elif pattern == "swing_ride":
                keys += [RIDE] if s in (0, 4, 7, 8, 12, 15) else []
                keys += [PEDAL_HAT] if s in (4, 12) else []
                keys += [KICK] if s == 0 and b % 2 == 0 else []
            elif pattern == "shuffle":
                keys += [KICK] if s in (0, 8) else []
                keys += [SNARE] if s in (4, 12) else []
                keys += [HAT] if s % 2 == 0 or s % 4 == 3 else []
            elif pattern == "one_drop":
                keys += [KICK, RIM] if s == 8 else []
                keys += [HAT] if s % 2 == 0 else []
            elif pattern == "train_beat":
                keys += [KICK] if s in (0, 8) else []
                keys += [SNARE]
            elif pattern == "half_time":
                keys += [KICK] if s in (0, 3, 10) else []
                keys += [SNARE] if s == 8 else []
                keys += [HAT] if s % 2 == 0 else []
            elif pattern == "double_kick":
                keys += [KICK]
                keys += [SNARE] if s in (4, 12) else []
                keys += [CRASH] if s == 0 else []
            for k in keys:
                accent = 1.0 if s % 4 == 0 else 0.75
                hits.append((t, k, int(np.clip(rng.normal(100 * accent, 8), 30, 127))))
    return hits


def render(spec: ClipSpec, seed: int, sr: int, seconds: float) -> Clip:
    rng = clip_rng(seed, "music", spec.index)
    genre = spec.factors["genre"]
    (bpm_lo, bpm_hi), mode_w, f_lead, f_chords, f_bass, f_kits, f_pat, f_comp, f_bassline, swing, p_drums = STYLE[genre]
    test = spec.split == "test"
    held = HELDOUT_LEAD[genre]
    lead = held if test else _weighted(rng, list(LEAD), f_lead, exclude=[held])
    chords_prog = _weighted(rng, list(CHORDS), f_chords)
    bass_prog = _weighted(rng, list(BASS), f_bass)
    bpm = int(rng.integers(bpm_lo, bpm_hi + 1))
    mode = choice(rng, ["major", "minor", "blues"], p=np.array(mode_w) / sum(mode_w))
    tonics = TONICS if test else [t for t in TONICS if t not in HELDOUT_TONICS]
    tonic = choice(rng, tonics)
    drums = bool(rng.random() < p_drums)
    kit = _weighted(rng, list(KITS), f_kits)
    pattern = _weighted(rng, PATTERNS, f_pat)
    comp = _weighted(rng, COMPS, f_comp)
    bassline = _weighted(rng, BASSLINES, f_bassline)
    soundfont = choice(rng, ["FluidR3_GM", "MuseScore_General_Lite"])
    swing = float(np.clip(swing + rng.normal(0, 0.1), 0, 0.7))

    beat = 60.0 / bpm
    step = beat / 4
    bars = int(np.ceil(seconds / (4 * beat))) + 1
    root = 48 + TONICS.index(tonic)
    scale = SCALES[mode]
    prog = choice(rng, PROGRESSIONS[mode])
    ev: list[Event] = [Event(0, "program", 0, 0, lead), Event(0, "program", 1, 0, chords_prog),
                       Event(0, "program", 2, 0, bass_prog), Event(0, "program", DRUM_CHANNEL, 128, kit)]

    def note(ch, t, key, dur, vel):
        ev.append(Event(t, "on", ch, int(key), int(np.clip(vel, 1, 127))))
        ev.append(Event(t + dur, "off", ch, int(key)))

    def degree(d, octave=0):
        return root + scale[d % len(scale)] + 12 * (d // len(scale) + octave)

    for b in range(bars):
        t0 = b * 4 * beat
        d = prog[b % len(prog)]
        triad = [degree(d), degree(d + 2), degree(d + 4)]
        if comp == "sustain":
            for k in triad:
                note(1, t0, k, 4 * beat * 0.95, 70)
        elif comp == "strum8":
            for s in range(8):
                for j, k in enumerate(triad):
                    note(1, t0 + s * beat / 2 + j * 0.01, k, beat * 0.45, 75 if s % 2 == 0 else 60)
        elif comp == "offbeat":
            for s in range(4):
                for k in triad:
                    note(1, t0 + s * beat + beat / 2, k, beat * 0.3, 75)
        elif comp == "stabs":
            for s in sorted(rng.choice(8, size=3, replace=False)):
                for k in triad:
                    note(1, t0 + s * beat / 2, k, beat * 0.4, 80)
        else:  # arpeggio
            for s in range(8):
                note(1, t0 + s * beat / 2, triad[s % 3] + (12 if s >= 4 else 0), beat / 2 * 0.9, 70)
        broot = degree(d, -1)
        if bassline == "roots":
            for s in range(4):
                note(2, t0 + s * beat, broot, beat * 0.9, 90)
        elif bassline == "walking":
            for s in range(4):
                note(2, t0 + s * beat + (swing * beat / 4 if s % 2 else 0), degree(d + s, -1), beat * 0.9, 85)
        elif bassline == "octaves":
            for s in range(8):
                note(2, t0 + s * beat / 2, broot + (12 if s % 2 else 0), beat / 2 * 0.8, 90)
        elif bassline == "root_fifth":
            for s in range(4):
                note(2, t0 + s * beat, broot if s % 2 == 0 else degree(d + 4, -2), beat * 0.8, 88)
        else:  # syncopated
            for s in (0, 3, 6, 10, 11):
                note(2, t0 + s * step, broot, step * 1.8, 90)
        # melody: a random walk on the scale, density from the genre's beat subdivision
        pos = 0.0
        deg = int(rng.integers(0, len(scale))) + len(scale)
        while pos < 4 * beat - 1e-6:
            dur = choice(rng, [beat / 2, beat, beat / 4, 1.5 * beat])
            if rng.random() < 0.85:
                deg = int(np.clip(deg + rng.integers(-2, 3), 0, 3 * len(scale) - 1))
                note(0, t0 + pos, degree(deg, 1), dur * 0.9, rng.normal(95, 10))
            pos += dur
    if drums:
        for t, k, v in _drums(pattern, step, bars, swing, rng):
            note(DRUM_CHANNEL, t, k, 0.1, v)
    ev = [e for e in ev if e.time < seconds]
    x = get_renderer(sr).render(soundfont, ev, seconds)
    x, eq = random_eq(x, sr, rng)
    rt60 = float(rng.uniform(0.3, 1.5)) if rng.random() < 0.5 else 0.0
    if rt60:
        x = reverb(x, sr, rt60, rng, wet=float(rng.uniform(0.2, 0.4)))
    level = float(rng.uniform(-26, -16))
    x = peak_limit(set_rms_db(x, level))

    tempo_word = "slow" if bpm < 85 else "fast" if bpm > 135 else "moderate" if 100 <= bpm <= 120 else None
    drum_text = f"drums play a {pattern.replace('_', ' ')} pattern on a {KITS[kit]} kit" if drums else "there are no drums"
    captions = [
        f"A{' ' + tempo_word if tempo_word else ''} {genre} piece at {bpm} BPM in {tonic} {mode} with "
        f"{LEAD[lead]} melody, {CHORDS[chords_prog]} chords and {BASS[bass_prog]}; {drum_text}."
    ]
    qa = [("What genre is this music?", genre), ("Are there drums?", "yes" if drums else "no"),
          ("Which instrument plays the melody?", LEAD[lead])]
    if tempo_word:
        qa.append(("Is the tempo slow, moderate or fast?", tempo_word))
    labels = {"genre": genre, "bpm": bpm, "key": tonic, "mode": mode, "lead": LEAD[lead],
              "chords": CHORDS[chords_prog], "bass": BASS[bass_prog], "drums": drums}
    params = {"soundfont": soundfont, "lead_program": lead, "chords_program": chords_prog, "bass_program": bass_prog,
              "drum_kit": kit if drums else None, "drum_pattern": pattern if drums else None, "comp": comp,
              "bassline": bassline, "swing": round(swing, 3), "progression": prog, "reverb_rt60": round(rt60, 3),
              "rms_db": round(level, 2), **eq}
    path, pkg, lic = SOUNDFONTS[soundfont]
    return Clip(x, labels, params, captions, qa, [{"package": pkg, "file": path, "license": lic, "kind": "soundfont"}])
