"""ESC-50-like single-class event clips: one event, optionally over a background bed.

Native mapping: ``fold`` 5 is the held-out test fold (held-out real source files and the top
30% of procedural parameter ranges); folds 1-4 hold the rest, with every crop of one real
source file in one fold (as ESC-50 keeps the takes of one Freesound clip together).
``src_file`` is 900000 + the member's index in ufoai's 0snd.pk3 for real recordings and
100000 + the clip index for procedural ones; ``take`` counts crops of one source (A, B, ...).
"""

from __future__ import annotations

import string

import numpy as np

from pengi.corpus.common import Clip, ClipSpec, choice, clip_rng, fit_length, number_word, peak_limit, set_rms_db
from pengi.corpus.events import (
    BEDS,
    CLASSES,
    PROCEDURAL,
    make_bed,
    make_event,
    real_event,
    real_files,
    split_real_files,
)
from pengi.corpus.mixtures import NOUNS, captions_for, phrases

ESC10 = set(CLASSES[:10])  # the corpus's "ESC-10" subset flag: the first ten classes


def fold_to_split(fold: int) -> str:
    return "test" if fold == 5 else "val" if fold == 4 else "train"


def plan(n: int, seed: int) -> list[ClipSpec]:
    rng = np.random.default_rng([seed, 5, 10**6])
    all_members = sorted(m for files in real_files().values() for m in files)
    takes: dict[int, int] = {}
    specs = []
    n_test = round(0.2 * n)
    for i in range(n):
        cls = CLASSES[i % len(CLASSES)]
        test = i % 5 == 4 if n >= 5 * len(CLASSES) else i >= n - n_test
        factors: dict = {"class": cls, "target": CLASSES.index(cls)}
        if cls in PROCEDURAL:
            src = 100000 + i
            fold = 5 if test else 1 + (i // len(CLASSES)) % 4
        else:
            member = choice(rng, split_real_files(cls)["test" if test else "train"])
            src = 900000 + all_members.index(member)
            fold = 5 if test else 1 + src % 4
            factors["member"] = member
        k = takes.get(src, 0)
        takes[src] = k + 1
        if k >= 26:
            raise ValueError(f"more than 26 takes of source {src}: lower the events count")
        take = string.ascii_uppercase[k]
        factors.update({"fold": fold, "src_file": src, "take": take, "esc10": cls in ESC10})
        name = f"{fold}-{src}-{take}-{factors['target']}.flac"
        specs.append(ClipSpec("events", i, name, fold_to_split(fold), f"esc50/audio/{name}", factors))
    return specs


def render(spec: ClipSpec, seed: int, sr: int, seconds: float) -> Clip:
    rng = clip_rng(seed, "events", spec.index)
    f = spec.factors
    heldout = f["fold"] == 5
    cls = f["class"]
    ev = real_event(cls, rng, sr, heldout, member=f["member"]) if "member" in f else make_event(cls, rng, sr, heldout)
    n = int(seconds * sr)
    level = float(rng.uniform(-26, -16))
    x_ev = set_rms_db(ev.audio, level)
    offset = int(rng.integers(0, max(1, n - len(x_ev))))
    truncated = offset + len(x_ev) > n
    x = fit_length(x_ev, n, offset)
    bed = None
    if rng.random() < 0.6:
        kind = choice(rng, BEDS)
        xb, bparams, phrase = make_bed(kind, rng, sr, seconds)
        snr = float(rng.uniform(10, 25))
        x = x + set_rms_db(xb, level - snr)
        bed = {"kind": kind, "phrase": phrase, "params": bparams, "snr_db": round(snr, 2)}
    x = peak_limit(x)
    count = ev.count if ev.count is not None and not truncated and ev.count <= 5 else None
    ann = {"label": cls, "onset": round(offset / sr, 3), "offset": round(min(n, offset + len(x_ev)) / sr, 3),
           "level_db": round(level, 2), "truncated": truncated, "count": count, "params": ev.params}
    captions = captions_for([ann], bed, 0.0)[:1]
    qa = [("What is the main sound?", NOUNS[cls][1])]
    if count is not None:
        qa.append(("How many times does it occur?", number_word(count)))
    labels = {"category": cls, "target": f["target"], "background": bed["kind"] if bed else "none"}
    params = {"annotation": ann, "background": bed, "phrases": phrases(ann)}
    return Clip(x, labels, params, captions, qa, [ev.source] if ev.source else [])
