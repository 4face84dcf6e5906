"""Clotho/ClothoAQA-like mixtures: 1-3 events over a background, 5 captions, 4-8 QA pairs.

Captions and answers come only from the annotation (SOURCES.md section 5.4):
1. counts only for countable classes that are not truncated, at least 6 dB above the
   background, occur once in the clip, and at most 5 (generators keep onsets >= 150 ms apart);
2. "faint"/"loud" background only for SNR > 15 dB / < 6 dB;
3. order questions only for non-overlapping events of different classes (events here are
   placed one after another, never overlapping);
4. one presence question per clip, "yes" or "no" with probability 1/2 each;
5. only generation parameters are stated (a synthetic chirp is "bird-like chirping", not a bird);
6. five captions from several templates and word orders.

Held-out factor: the evaluation split contains only clips with an event-class pair that never
co-occurs in development or validation clips.
"""

from __future__ import annotations

import itertools

import numpy as np

from pengi.corpus.common import (
    Clip,
    ClipSpec,
    choice,
    clip_rng,
    number_word,
    peak_limit,
    reverb,
    set_rms_db,
)
from pengi.corpus.events import BEDS, CLASSES, Event, make_bed, make_event

MAX_COUNT = 5

# class -> (noun phrase for presence questions, short noun for order questions)
NOUNS = {
    "beep": ("a beep", "beep"), "siren": ("a siren", "siren"), "tone_sweep": ("a tone sweep", "tone sweep"),
    "birdsong": ("bird-like chirping", "chirping"), "clock_ticking": ("a ticking clock", "ticking"),
    "knocking": ("knocking", "knocking"), "telephone_ringing": ("a ringing telephone", "telephone"),
    "smoke_alarm": ("a smoke alarm", "alarm"), "bell": ("a bell", "bell"), "engine": ("an engine", "engine"),
    "heartbeat": ("a heartbeat", "heartbeat"), "water_dripping": ("dripping water", "dripping"),
    "clapping": ("clapping", "clapping"), "footsteps": ("footsteps", "footsteps"),
    "glass_breaking": ("breaking glass", "glass breaking"), "wood_breaking": ("breaking wood", "wood breaking"),
    "door": ("a door", "door"), "fire_crackling": ("a crackling fire", "fire"), "thunder": ("thunder", "thunder"),
    "gunshot": ("gunfire", "gunfire"), "explosion": ("an explosion", "explosion"),
    "pained_cry": ("a cry of pain", "cry"),
}
COUNT_QUESTIONS = {
    "beep": "How many beeps are there?", "knocking": "How many knocks are there?",
    "bell": "How many times does the bell ring?", "water_dripping": "How many drips are there?",
    "clapping": "How many claps are there?", "footsteps": "How many footsteps are there?",
}


def _times(n: int | None) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{number_word(n)} times") if n else ""


def phrases(ev: dict) -> list[str]:
    """Three ways to say one annotated event; ``ev['count']`` is set only when stating it is honest."""
    c, p, n = ev["label"], ev["params"], ev.get("count")
    cw = number_word(n) if n else None
    if c == "beep":
        pitch = p["pitch"]
        if n:
            return [f"a {pitch}-pitched beep sounds {_times(n)}", f"{cw} {pitch} beep{'s' if n > 1 else ''}",
                    f"a {pitch} tone beeps {_times(n)}"]
        return [f"a {pitch}-pitched beep sounds", f"{pitch} beeping", f"a {pitch} tone beeps"]
    if c == "siren":
        return (["a siren wails", "a slowly wailing siren", "an emergency siren wails up and down"] if p["type"] == "wail"
                else ["a siren yelps rapidly", "a fast yelping siren", "an emergency siren warbles quickly"])
    if c == "tone_sweep":
        up = p["direction"] == "rising"
        return [f"a tone sweeps {'upward' if up else 'downward'}", f"a {'rising' if up else 'falling'} tone",
                f"a tone glides {'up' if up else 'down'} in pitch"]
    if c == "birdsong":
        return ["high bird-like chirps", "bird-like chirping", "quick high-pitched chirps"]
    if c == "clock_ticking":
        adv = {"slow": "slowly", "moderate": "steadily", "fast": "quickly"}[p["speed"]]
        return [f"a clock ticks {adv}", f"a {p['speed']} ticking clock", f"ticking {adv}"]
    if c == "knocking":
        return ([f"a knock sounds {_times(n)}", f"{cw} knock{'s' if n > 1 else ''}", f"knocking {_times(n)}"] if n
                else ["a knocking sound", "knocking", "someone knocks"])
    if c == "telephone_ringing":
        return ["a telephone rings", "a ringing phone", "the ring of a telephone"]
    if c == "smoke_alarm":
        return ["a smoke alarm beeps", "an alarm beeps in groups of three", "a high alarm sounds"]
    if c == "bell":
        h = p["height"]
        return ([f"a {h} bell rings {_times(n)}", f"{cw} strike{'s' if n > 1 else ''} of a {h} bell",
                 f"a {h}-pitched bell chimes {_times(n)}"] if n
                else [f"a {h} bell rings", f"a {h}-pitched bell chimes", f"the chime of a {h} bell"])
    if c == "engine":
        return (["an engine idles", "an idling engine", "a motor runs steadily"] if p["state"] == "idling"
                else ["an engine revs up", "a revving engine", "a motor speeds up"])
    if c == "heartbeat":
        adv = {"slow": "slowly", "normal": "steadily", "fast": "quickly"}[p["speed"]]
        adj = {"slow": "slow", "normal": "steady", "fast": "fast"}[p["speed"]]
        return [f"a heart beats {adv}", f"a {adj} heartbeat", f"{adj} heartbeats"]
    if c == "water_dripping":
        return ([f"water drips {_times(n)}", f"{cw} drips of water", f"dripping water, {cw} drops"] if n
                else ["water drips", "dripping water", "drops of water fall"])
    if c == "clapping":
        return ([f"hands clap {_times(n)}", f"{cw} claps", f"clapping {_times(n)}"] if n
                else ["hands clap", "clapping", "a few claps"])
    if c == "footsteps":
        s = p["surface"]
        return ([f"{cw} footsteps on {s}", f"someone walks on {s}, {cw} steps", f"footsteps on {s}, {cw} in all"] if n
                else [f"footsteps on {s}", f"someone walks on {s}", f"steps on a {s} surface"])
    if c == "door":
        f = p["source_file"]
        opens, closes = "open" in f, "close" in f  # from the file name: door1-open, door2-close, open_close
        act = "opens and closes" if opens and closes else "opens" if opens else "closes"
        return [f"a door {act}", f"the sound of a door that {act}", f"a door {act} nearby"]
    if c == "fire_crackling":
        return ["a fire crackles", "crackling fire", "the crackle of flames"]
    if c == "thunder":
        return ["thunder rumbles", "a roll of thunder", "thunder booms"]
    if c == "gunshot":
        return ["a gun is fired", "gunfire", "the sound of gunshots"]
    if c == "explosion":
        return ["an explosion booms", "an explosion", "a loud blast"]
    if c == "pained_cry":
        return ["a person cries out in pain", "a pained cry", "a human cry of pain"]
    if c == "glass_breaking":
        return ["glass breaks", "glass shattering", "the sound of breaking glass"]
    if c == "wood_breaking":
        return ["wood breaks", "wood cracking apart", "the sound of breaking wood"]
    raise KeyError(c)


def _cap(s: str) -> str:
    return s[0].upper() + s[1:] + ("" if s.endswith(".") else ".")


def captions_for(events: list[dict], bed: dict | None, rt60: float, scene: str | None = None) -> list[str]:
    """Five captions from the annotation: event list, 'then' chain, background first, ..."""
    bg = None
    if bed:
        loud = "faint " if bed["snr_db"] > 15 else "loud " if bed["snr_db"] < 6 else ""
        bg = loud + bed["phrase"]
    room = " in a reverberant room" if rt60 >= 0.6 else ""
    out = []
    forms = ["then", "followed", "bg_first", "and", "first"]
    for k in range(5):
        parts = [phrases(e)[(k + j) % 3] for j, e in enumerate(events)]
        form = forms[k]
        if len(parts) == 1:
            body = parts[0]
        elif form in ("then", "bg_first"):
            body = ", then ".join(parts)
        elif form == "followed":
            body = " followed by ".join(parts)
        elif form == "and":
            body = ", ".join(parts[:-1]) + " and " + parts[-1]
        else:
            body = "first " + parts[0] + ", and afterwards " + " and then ".join(parts[1:])
        if scene:
            where = scene.replace("_", " ")
            body = f"in a {where}, {body}" if k % 2 == 0 else f"{body}, recorded in a {where}"
        if bg and form == "bg_first":
            text = f"over {bg}, {body}"
        elif bg:
            text = f"{body}{' with ' if k % 2 else ' over '}{bg}{' in the background' if k % 2 else ''}"
        else:
            text = body
        out.append(_cap(text + room))
    return out


def qa_for(events: list[dict], bed: dict | None, rng, present_classes: list[str]) -> list[tuple[str, str]]:
    """4-8 honest question-answer pairs (see the module docstring for the rules)."""
    qa: list[tuple[str, str]] = []
    # presence, balanced yes/no
    if rng.random() < 0.5:
        c = choice(rng, present_classes)
        qa.append((f"Is there {NOUNS[c][0]}?" if not NOUNS[c][0].startswith(("a ", "an ")) else
                   f"Can you hear {NOUNS[c][0]}?", "yes"))
    else:
        c = choice(rng, [x for x in CLASSES if x not in present_classes])
        qa.append((f"Is there {NOUNS[c][0]}?" if not NOUNS[c][0].startswith(("a ", "an ")) else
                   f"Can you hear {NOUNS[c][0]}?", "no"))
    qa.append(("How many distinct sound events are there?", number_word(len(events))))
    if bed:
        qa.append(("What is the background sound?", bed["phrase"].removeprefix("an ").removeprefix("a ")
                   .removeprefix("low ")))
    else:
        qa.append(("Is there a background noise?", "no"))
    for e in events:
        c, p = e["label"], e["params"]
        if e.get("count") and c in COUNT_QUESTIONS:
            qa.append((COUNT_QUESTIONS[c], number_word(e["count"])))
        if c == "beep":
            qa.append(("Is the beep low, medium or high pitched?", p["pitch"]))
        elif c == "tone_sweep":
            qa.append(("Does the tone rise or fall?", "rise" if p["direction"] == "rising" else "fall"))
        elif c == "clock_ticking":
            qa.append(("Is the clock ticking slowly, moderately or fast?", {"slow": "slowly", "moderate": "moderately",
                                                                           "fast": "fast"}[p["speed"]]))
        elif c == "bell":
            qa.append(("Is the bell high or low pitched?", p["height"]))
        elif c == "engine":
            qa.append(("Is the engine idling or revving?", p["state"]))
        elif c == "heartbeat":
            qa.append(("Is the heartbeat slow, normal or fast?", p["speed"]))
        elif c == "siren":
            qa.append(("Is the siren wailing or yelping?", "wailing" if p["type"] == "wail" else "yelping"))
        elif c == "footsteps":
            qa.append(("What surface are the footsteps on?", p["surface"]))
    if len(events) >= 2:
        a, b = events[0], events[1]
        order = [a, b] if rng.random() < 0.5 else [b, a]
        qa.append((f"Which comes first, the {NOUNS[order[0]['label']][1]} or the {NOUNS[order[1]['label']][1]}?",
                   NOUNS[a["label"]][1]))
    if bed and (bed["snr_db"] > 15 or bed["snr_db"] < 6):
        qa.append(("Is the background faint or loud?", "faint" if bed["snr_db"] > 15 else "loud"))
    fillers = [("What is the first sound?", NOUNS[events[0]["label"]][1]),
               ("What is the last sound?", NOUNS[events[-1]["label"]][1]),
               ("Is there more than one sound event?", "yes" if len(events) > 1 else "no")]
    qa += fillers[: max(0, 4 - len(qa))]
    return qa[:8]


def arrange(evs: list[Event], rng, sr: int, seconds: float, bed_db: float | None, snr_range=(3.0, 20.0)):
    """Place events one after another (no overlap); set levels; return audio and annotation."""
    n = int(seconds * sr)
    out = np.zeros(n, dtype=np.float32)
    total = sum(len(e.audio) for e in evs)
    slack = max(0, n - total)
    gaps = rng.dirichlet(np.ones(len(evs) + 1)) * slack
    pos = int(gaps[0])
    seen = [e.label for e in evs]
    ann = []
    for k, e in enumerate(evs):
        snr = float(rng.uniform(*snr_range))
        level = bed_db + snr if bed_db is not None else float(rng.uniform(-26, -16))
        x = set_rms_db(e.audio, level)
        end = min(n, pos + len(x))
        truncated = pos + len(x) > n
        out[pos:end] += x[: end - pos]
        honest_count = (e.count if e.count is not None and not truncated and e.count <= MAX_COUNT
                        and seen.count(e.label) == 1 and (bed_db is None or snr >= 6.0) else None)
        ann.append({"label": e.label, "onset": round(pos / sr, 3), "offset": round(end / sr, 3),
                    "level_db": round(level, 2), "snr_db": round(snr, 2) if bed_db is not None else None,
                    "truncated": truncated, "count": honest_count, "params": e.params,
                    "source": e.source})
        pos = end + int(gaps[k + 1])
    return out, ann


def held_out_pairs(seed: int) -> set[frozenset]:
    """About a fifth of all class pairs, only ever combined in the evaluation split."""
    rng = np.random.default_rng([seed, 7, 10**6])
    pairs = [frozenset(p) for p in itertools.combinations(CLASSES, 2)]
    return {pairs[i] for i in rng.permutation(len(pairs))[: len(pairs) // 5]}


def plan(n: int, seed: int) -> list[ClipSpec]:
    rng = np.random.default_rng([seed, 7, 10**6 + 1])
    held = sorted(held_out_pairs(seed), key=lambda p: sorted(p))
    n_test, n_val = round(0.2 * n), round(0.1 * n)
    heldset = set(held)
    specs = []
    for i in range(n):
        split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
        if split == "test":
            pair = sorted(held[int(rng.integers(len(held)))])
            classes = list(pair)
            if rng.random() < 0.4:
                classes.append(choice(rng, [c for c in CLASSES if c not in classes]))
            classes = [classes[j] for j in rng.permutation(len(classes))]
        else:
            while True:
                k = int(rng.integers(1, 4))
                classes = [CLASSES[j] for j in rng.choice(len(CLASSES), size=k, replace=False)]
                if not any(frozenset(p) in heldset for p in itertools.combinations(classes, 2)):
                    break
        folder = {"train": "development", "val": "validation", "test": "evaluation"}[split]
        name = f"clip_{i:05d}.flac"
        specs.append(ClipSpec("mixtures", i, name, split, f"clotho/{folder}/{name}",
                              {"classes": classes, "clotho_split": folder}))
    return specs


def render(spec: ClipSpec, seed: int, sr: int, seconds: float) -> Clip:
    rng = clip_rng(seed, "mixtures", spec.index)
    heldout = spec.split == "test"
    evs = [make_event(c, rng, sr, heldout) for c in spec.factors["classes"]]
    budget = int(0.95 * seconds * sr)  # keep the clip from being cut mid-event where possible
    for e in evs:
        if len(e.audio) > budget // len(evs):
            # a shortened event may lose occurrences, so its count is no longer stated
            e.audio, e.count = e.audio[: budget // len(evs)], None
            e.params = {**e.params, "shortened_to_s": round(budget / len(evs) / sr, 3)}
    bed = None
    bed_db = None
    x_bed = None
    if rng.random() < 0.8:
        kind = choice(rng, BEDS)
        x_bed, bparams, phrase = make_bed(kind, rng, sr, seconds)
        bed_db = float(rng.uniform(-36, -28))
        x_bed = set_rms_db(x_bed, bed_db)
        bed = {"kind": kind, "phrase": phrase, "params": bparams, "level_db": round(bed_db, 2)}
    x, ann = arrange(evs, rng, sr, seconds, bed_db)
    if bed:
        # the background word is judged against the quietest event
        bed["snr_db"] = round(float(min(a["snr_db"] for a in ann)), 2)
        x = x + x_bed
    rt60 = float(rng.uniform(0.2, 1.0)) if rng.random() < 0.5 else 0.0
    if rt60:
        x = reverb(x, sr, rt60, rng, wet=0.3)
    x = peak_limit(x)
    present = [a["label"] for a in ann]
    caps = captions_for(ann, bed, rt60)
    qa = qa_for(ann, bed, rng, present)
    labels = {"events": present, "n_events": len(ann), "background": bed["kind"] if bed else "none"}
    params = {"annotation": [{k: v for k, v in a.items() if k != "source"} for a in ann], "background": bed,
              "reverb_rt60": round(rt60, 3)}
    sources = [a["source"] for a in ann if a["source"]]
    return Clip(x, labels, params, caps, qa, sources)
