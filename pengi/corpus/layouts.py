"""Writers of the real datasets' native metadata layouts (see ``pengi/corpus/README.md``).

Audio files are written by the render workers at each record's ``path``; these functions
write the metadata files around them from the records, so that the adapters in
``pengi.sources`` read the corpus exactly as they read the real datasets. Every writer takes
the corpus root and the records of its task (dicts as in ``corpus.jsonl``).
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path

from pengi.corpus.notes import FAMILIES, QUALITIES, SOURCE_NAMES, SPLIT_DIRS

CSV_SPLIT_NAMES = {"train": "development", "val": "validation", "test": "evaluation"}
AQA_SPLIT_NAMES = {"train": "train", "val": "val", "test": "test"}


def _write_csv(path: Path, header: list[str], rows: list[list], quoting=csv.QUOTE_MINIMAL, encoding="utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f, quoting=quoting, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_nsynth(root: Path, records: list[dict]) -> None:
    """``nsynth/nsynth-{train,valid,test}/examples.json``: one object keyed by note_str."""
    by_split: dict[str, dict] = {s: {} for s in SPLIT_DIRS}
    for r in sorted(records, key=lambda r: r["native"]["note"]):
        lab = r["labels"]
        qualities = [1 if q in lab["qualities"] else 0 for q in QUALITIES]
        family = lab["family"]
        by_split[r["split"]][r["clip_id"]] = {  # key order of the real file
            "qualities": qualities,
            "pitch": lab["pitch"],
            "note": r["native"]["note"],
            "instrument_source_str": lab["instrument_source"],
            "velocity": lab["velocity"],
            "instrument_str": r["clip_id"].split("-")[0],
            "instrument": r["native"]["instrument"],
            "sample_rate": r["sample_rate"],
            "qualities_str": list(lab["qualities"]),
            "instrument_source": SOURCE_NAMES.index(lab["instrument_source"]),
            "note_str": r["clip_id"],
            "instrument_family": FAMILIES.index(family),
            "instrument_family_str": family,
        }
    for split, d in SPLIT_DIRS.items():
        path = root / "nsynth" / d / "examples.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "audio").mkdir(exist_ok=True)
        path.write_text(json.dumps(by_split[split], indent=4), encoding="utf-8")


def write_gtzan(root: Path, records: list[dict]) -> None:
    """GTZAN has no metadata; labels are folders. Split lists follow torchaudio's subset names."""
    names = {"train": "training", "val": "validation", "test": "testing"}
    for split, fname in names.items():
        ids = sorted(r["clip_id"] for r in records if r["split"] == split)
        _write_lines(root / "gtzan_genres" / "splits" / f"{fname}.txt", ids)


def write_crema_d(root: Path, records: list[dict], actors: list[dict]) -> None:
    """``AudioWAV/`` (audio) + ``SentenceFilenames.csv`` + ``VideoDemographics.csv``."""
    base = root / "crema_d"
    stems = sorted(r["clip_id"] for r in records)
    _write_csv(base / "SentenceFilenames.csv", ["Stimulus_Number", "Filename"],
               [[i + 1, s] for i, s in enumerate(stems)], quoting=csv.QUOTE_NONNUMERIC)
    # Age, race and ethnicity are not generation parameters of a TTS voice: left empty.
    _write_csv(base / "VideoDemographics.csv", ["ActorID", "Age", "Sex", "Race", "Ethnicity"],
               [[a["actor"], "", a["gender"].capitalize(), "", ""] for a in actors], quoting=csv.QUOTE_NONNUMERIC)
    # Not a CREMA-D file: CREMA-D has no official split, so the corpus states its actor split.
    _write_csv(base / "corpus_actor_splits.csv", ["ActorID", "split", "engine", "voice", "accent"],
               [[a["actor"], a["split"], a["engine"], a["voice"], a["accent"]] for a in actors])


def write_audiofolder(root: Path, records: list[dict]) -> None:
    """Hugging Face audiofolder: ``{train,validation,test}/metadata.csv`` beside the audio."""
    by = defaultdict(list)
    for r in records:
        by[Path(r["path"]).parent.name].append(r)
    for folder in ("train", "validation", "test"):
        rows = [[Path(r["path"]).name, r["captions"][0], json.dumps(r["labels"], sort_keys=True),
                 json.dumps([{"question": q, "answer": a} for q, a in r["qa"]])]
                for r in sorted(by.get(folder, []), key=lambda r: r["path"])]
        _write_csv(root / "audiofolder" / folder / "metadata.csv", ["file_name", "caption", "labels", "qa"], rows)


def write_esc50(root: Path, records: list[dict]) -> None:
    """``esc50/meta/esc50.csv``: filename,fold,target,category,esc10,src_file,take."""
    rows = []
    for r in records:
        p = r["native"]
        rows.append([Path(r["path"]).name, p["fold"], p["target"], r["labels"]["category"], str(p["esc10"]),
                     p["src_file"], p["take"]])
    rows.sort(key=lambda x: (x[1], x[0]))
    header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    _write_csv(root / "esc50" / "meta" / "esc50.csv", header, rows)


def write_tut2017(root: Path, records: list[dict]) -> None:
    """Development ``meta.txt`` + 4 folds by recording; evaluation ``meta.txt`` + setup lists."""
    from pengi.corpus.scenes import DEV_DIR, EVAL_DIR

    dev = sorted((r for r in records if r["split"] != "test"), key=lambda r: r["path"])
    ev = sorted((r for r in records if r["split"] == "test"), key=lambda r: r["path"])
    rel = lambda r: "audio/" + Path(r["path"]).name  # noqa: E731
    _write_lines(root / DEV_DIR / "meta.txt", [f"{rel(r)}\t{r['labels']['scene']}\t{r['labels']['recording']}" for r in dev])
    for k in range(1, 5):
        train = [r for r in dev if r["native"]["fold"] != k]
        test = [r for r in dev if r["native"]["fold"] == k]
        setup = root / DEV_DIR / "evaluation_setup"
        _write_lines(setup / f"fold{k}_train.txt", [f"{rel(r)}\t{r['labels']['scene']}" for r in train])
        _write_lines(setup / f"fold{k}_evaluate.txt", [f"{rel(r)}\t{r['labels']['scene']}" for r in test])
        _write_lines(setup / f"fold{k}_test.txt", [rel(r) for r in test])
    _write_lines(root / EVAL_DIR / "meta.txt", [f"{rel(r)}\t{r['labels']['scene']}" for r in ev])
    _write_lines(root / EVAL_DIR / "evaluation_setup" / "test.txt", [rel(r) for r in ev])
    _write_lines(root / EVAL_DIR / "evaluation_setup" / "evaluate.txt", [f"{rel(r)}\t{r['labels']['scene']}" for r in ev])


def _metadata_row(r: dict, sound_id: int, n_samples: int) -> list:
    lic = "; ".join(sorted({s["license"] for s in r["sources"]})) or "generated (no third-party audio)"
    return [Path(r["path"]).name, ";".join(r["labels"]["events"]), sound_id, "", f"[0, {n_samples}]", "pengi-corpus", lic]


def write_clotho(root: Path, records: list[dict], sample_rate: int) -> None:
    """Clotho v2.1 caption + metadata CSVs per split, and ClothoAQA CSVs over the same clips."""
    meta_header = ["file_name", "keywords", "sound_id", "sound_link", "start_end_samples", "manufacturer", "license"]
    aqa_meta = []
    for split, name in CSV_SPLIT_NAMES.items():
        rs = sorted((r for r in records if r["split"] == split), key=lambda r: r["path"])
        for r in rs:
            for text in r["captions"] + [q + a for q, a in r["qa"]]:
                text.encode("latin-1")  # Clotho CSVs are ISO-8859-1: refuse text that cannot be written so
        _write_csv(root / "clotho" / f"clotho_captions_{name}.csv", ["file_name"] + [f"caption_{i}" for i in range(1, 6)],
                   [[Path(r["path"]).name] + r["captions"][:5] for r in rs], encoding="latin-1")
        meta = [_metadata_row(r, r["native"]["sound_id"], int(r["duration_s"] * sample_rate)) for r in rs]
        _write_csv(root / "clotho" / f"clotho_metadata_{name}.csv", meta_header, meta, encoding="latin-1")
        aqa_meta += meta
        aqa_rows = [[Path(r["path"]).name, q, a, "yes"] for r in rs for q, a in r["qa"]]
        _write_csv(root / "clotho_aqa" / f"clotho_aqa_{AQA_SPLIT_NAMES[split]}.csv",
                   ["file_name", "QuestionText", "answer", "confidence"], aqa_rows, encoding="latin-1")
    _write_csv(root / "clotho_aqa" / "clotho_aqa_metadata.csv", meta_header, sorted(aqa_meta), encoding="latin-1")
    # ClothoAQA ships its own flat copy of the Clotho audio: hard links where the filesystem allows
    for r in records:
        src = root / r["path"]
        dst = root / "clotho_aqa" / "audio_files" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            dst.write_bytes(src.read_bytes())
