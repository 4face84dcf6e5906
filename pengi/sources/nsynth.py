"""NSynth (json/wav release): ``nsynth-{train,valid,test}/examples.json`` + ``audio/<note_str>.wav``.

* clip_id: ``note_str`` (unique across splits: instruments are disjoint between splits).
* split: official (train/valid/test -> train/val/test).
* labels: ``[instrument_family_str]`` (11 families).
* attrs: ``pitch`` (MIDI), ``velocity``, ``instrument`` (id), ``instrument_str``,
  ``instrument_family``, ``instrument_source`` (acoustic/electronic/synthetic),
  ``qualities`` (comma-joined names of the set quality bits), ``note`` (the global note id,
  not the pitch).
* identity: none (self-contained).
"""

from __future__ import annotations

from collections.abc import Mapping

from pengi import storage
from pengi.sources.base import AudioIndex, MetadataError, SourceRead, locate, make_row, quarantine, read_json, register, line_of_key

FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead", "vocal")
QUALITIES = (
    "bright", "dark", "distortion", "fast_decay", "long_release",
    "multiphonic", "nonlinear_env", "percussive", "reverb", "tempo-synced",
)
SOURCES = ("acoustic", "electronic", "synthetic")
SPLITS = {"train": "train", "valid": "val", "test": "test"}
REQUIRED = ("pitch", "velocity", "instrument_family_str", "instrument_str", "instrument_source_str")


@register("nsynth", {"splits": "comma-separated subset of train,valid,test to read (default: every one present)"})
def read_nsynth(root: str, options: Mapping[str, str]) -> SourceRead:
    wanted = [s.strip() for s in options.get("splits", "train,valid,test").split(",") if s.strip()]
    for s in wanted:
        if s not in SPLITS:
            raise ValueError(f"nsynth: unknown split {s!r} in options.splits (expected {list(SPLITS)})")
    rows, files = [], []
    for native in wanted:
        meta = storage.join(root, f"nsynth-{native}", "examples.json")
        if not storage.exists(meta):
            continue
        files.append(meta)
        data = read_json(meta)
        if not isinstance(data, dict):
            raise MetadataError(meta, 1, 1, "examples.json must be one JSON object keyed by note_str")
        text = None
        index = AudioIndex(storage.join(root, f"nsynth-{native}"))
        for note_str, ex in data.items():
            row = make_row("nsynth", note_str, SPLITS[native], "")
            locate(index, f"audio/{note_str}.wav", row)
            missing = [k for k in REQUIRED if not isinstance(ex, dict) or k not in ex]
            if missing:
                text = text or storage.read_text(meta)
                raise MetadataError(meta, line_of_key(text, note_str), None, f"entry {note_str!r} lacks {missing}")
            pitch, velocity = ex["pitch"], ex["velocity"]
            if not (isinstance(pitch, int) and 0 <= pitch <= 127 and isinstance(velocity, int) and 0 < velocity <= 127):
                quarantine(row, "bad_value:pitch_or_velocity")
            family = str(ex["instrument_family_str"])
            bits = ex.get("qualities") or []
            names = ex.get("qualities_str")
            if names is None:
                names = [q for q, b in zip(QUALITIES, bits) if b]
            row["labels"] = [family]
            row["attrs"] = {
                "pitch": str(pitch),
                "velocity": str(velocity),
                "instrument": str(ex.get("instrument", "")),
                "instrument_str": str(ex["instrument_str"]),
                "instrument_family": str(ex.get("instrument_family", "")),
                "instrument_source": str(ex["instrument_source_str"]),
                "qualities": ",".join(str(q) for q in names),
                "note": str(ex.get("note", "")),
            }
            if any(q not in QUALITIES for q in names):
                quarantine(row, "unknown_label:quality")
            rows.append(row)
    if not files:
        raise MetadataError(storage.join(root, "nsynth-*/examples.json"), None, None, "no NSynth split found under the root")
    return SourceRead(rows, frozenset(FAMILIES), files)
