"""TUT-2017-like acoustic scenes: a background bed plus weighted events (SOURCES.md 5.3).

Hardening (SOURCES.md section 8): every scene draws its bed from a pool shared with other
scenes (the typical bed is only the most likely one) and events from weighted vocabularies
that overlap between scenes.

Native mapping: a "recording" (one scene, one bed type and its settings) is cut into several
5-s segments named ``audio/<rec>_<start>_<end>.flac``. Recordings are split like TUT 2017:
a development set with 4 cross-validation folds by recording and a separate evaluation set of
unseen recordings (held-out realisations: new bed seeds and held-out event parameters/files).
"""

from __future__ import annotations

import numpy as np

from pengi.corpus.common import Clip, ClipSpec, choice, clip_rng, peak_limit, reverb, set_rms_db
from pengi.corpus.events import make_bed, make_event
from pengi.corpus.mixtures import NOUNS, arrange, captions_for

# scene -> (bed weights, event weights)
SCENES = {
    "street": ({"traffic_rumble": 6, "wind": 2, "rain": 1, "noise": 1},
               {"engine": 3, "siren": 2, "beep": 1, "footsteps": 2, "clapping": 0.3}),
    "park": ({"wind": 6, "traffic_rumble": 2, "crickets": 1, "noise": 1},
             {"birdsong": 3, "clapping": 1, "footsteps": 1.5, "knocking": 0.3}),
    "thunderstorm": ({"rain": 7, "wind": 3},
                     {"thunder": 3, "water_dripping": 1, "door": 0.5}),
    "office": ({"electrical_hum": 6, "noise": 3, "traffic_rumble": 1},
               {"telephone_ringing": 3, "clock_ticking": 2, "knocking": 2, "beep": 2, "footsteps": 1, "door": 1}),
    "kitchen": ({"noise": 4, "electrical_hum": 4, "rain": 1},
                {"water_dripping": 3, "beep": 2, "bell": 1, "clock_ticking": 1, "glass_breaking": 1}),
    "beach": ({"ocean_waves": 7, "wind": 3},
              {"birdsong": 3, "clapping": 0.5, "footsteps": 1}),
    "night_forest": ({"crickets": 7, "wind": 3},
                     {"birdsong": 1, "knocking": 1, "wood_breaking": 1, "fire_crackling": 2}),
    "hospital": ({"electrical_hum": 6, "noise": 4},
                 {"heartbeat": 3, "beep": 3, "smoke_alarm": 1, "footsteps": 1, "door": 1, "telephone_ringing": 1}),
}
SCENE_NAMES = list(SCENES)
DEV_DIR = "tut2017/TUT-acoustic-scenes-2017-development"
EVAL_DIR = "tut2017/TUT-acoustic-scenes-2017-evaluation"


def _weighted(rng, weights: dict) -> str:
    keys = list(weights)
    w = np.array([weights[k] for k in keys], dtype=float)
    return choice(rng, keys, p=w / w.sum())


def plan(n: int, seed: int, seconds: float) -> list[ClipSpec]:
    """Recordings of ``segments`` segments each; 20% of recordings per scene form the eval set."""
    rng = np.random.default_rng([seed, 6, 10**6])
    segments = max(1, min(5, n // 40))
    n_rec = -(-n // segments)
    specs = []
    i = 0
    per_scene: dict[str, int] = {}
    for r in range(n_rec):
        scene = SCENE_NAMES[r % len(SCENE_NAMES)]
        k = per_scene.get(scene, 0)
        per_scene[scene] = k + 1
        evaluation = k % 5 == 4
        rec = f"{'b' if evaluation else 'a'}{r + 1:03d}"
        fold = None if evaluation else 1 + k % 4
        bed_kind = _weighted(rng, SCENES[scene][0])
        bed_seed = int(rng.integers(2**31))
        for s in range(segments):
            if i >= n:
                break
            start, end = int(s * seconds), int((s + 1) * seconds)
            name = f"{rec}_{start}_{end}.flac"
            split = "test" if evaluation else "val" if fold == 4 else "train"
            base = EVAL_DIR if evaluation else DEV_DIR
            specs.append(ClipSpec("scenes", i, f"{rec}_{start}_{end}", split, f"{base}/audio/{name}",
                                  {"scene": scene, "recording": rec, "fold": fold, "bed": bed_kind,
                                   "bed_seed": bed_seed, "segment": s}))
            i += 1
    return specs


def render(spec: ClipSpec, seed: int, sr: int, seconds: float) -> Clip:
    rng = clip_rng(seed, "scenes", spec.index)
    f = spec.factors
    scene, heldout = f["scene"], spec.split == "test"
    # the bed's settings belong to the recording: every segment of it shares them
    bed_rng = np.random.default_rng([seed, 6, f["bed_seed"]])
    xb, bparams, phrase = make_bed(f["bed"], bed_rng, sr, seconds + 1.0)
    x_bed = xb[int(f["segment"] * 0.37 * sr) % int(sr) :][: int(seconds * sr)]
    bed_db = float(rng.uniform(-32, -24))
    x_bed = set_rms_db(x_bed, bed_db)
    k = int(rng.integers(1, 4))
    classes = []
    while len(classes) < k:
        c = _weighted(rng, SCENES[scene][1])
        if c not in classes:
            classes.append(c)
        if len(classes) == len(SCENES[scene][1]):
            break
    evs = [make_event(c, rng, sr, heldout) for c in classes]
    budget = int(0.95 * seconds * sr) // len(evs)
    for e in evs:
        if len(e.audio) > budget:
            e.audio, e.count = e.audio[:budget], None
    x, ann = arrange(evs, rng, sr, seconds, bed_db, snr_range=(3.0, 20.0))
    x = x + x_bed
    rt60 = float(rng.uniform(0.2, 0.9)) if rng.random() < 0.4 else 0.0
    if rt60:
        x = reverb(x, sr, rt60, rng, wet=0.25)
    x = peak_limit(x)
    bed = {"kind": f["bed"], "phrase": phrase, "params": bparams, "level_db": round(bed_db, 2),
           "snr_db": round(float(min(a["snr_db"] for a in ann)), 2)}
    captions = captions_for(ann, bed, rt60, scene=scene)
    qa = [("Where was this recorded?", scene.replace("_", " ")),
          ("What is the background sound?", phrase.removeprefix("an ").removeprefix("a ").removeprefix("low "))]
    qa += [("What is the first sound event?", NOUNS[ann[0]["label"]][1])]
    labels = {"scene": scene, "recording": f["recording"], "events": [a["label"] for a in ann], "background": f["bed"]}
    params = {"annotation": [{k2: v for k2, v in a.items() if k2 != "source"} for a in ann], "background": bed,
              "reverb_rt60": round(rt60, 3), "bed_seed": f["bed_seed"], "segment": f["segment"]}
    return Clip(x, labels, params, captions, qa, [a["source"] for a in ann if a["source"]])
