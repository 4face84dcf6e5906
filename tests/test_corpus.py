"""The offline mini corpus: sizes, native layouts, label vocabularies, honesty, determinism.

One tiny corpus (~310 clips, ~15 s on 2 cores) is generated per session and shared.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pengi.config import CorpusConfig
from pengi.corpus import events, generate, mixtures, music, notes, scenes, speech

SHARED = Path(__file__).resolve().parents[2] / "shared"
NEEDS = [Path(p) for p in ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2",
                           "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3", events.UFOAI_PK3,
                           "/usr/bin/espeak-ng", "/usr/bin/flite")]
pytestmark = pytest.mark.skipif(not all(p.exists() for p in NEEDS),
                                reason="corpus sources missing (apt: fluid-soundfont-gm timgm6mb-soundfont "
                                       "musescore-general-soundfont-small ufoai-sound espeak-ng flite)")
TINY = CorpusConfig(size="tiny", seed=0, workers=2)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "tiny"
    summary = generate.generate_corpus(TINY, root)
    records = [json.loads(line) for line in (root / "corpus.jsonl").read_text().splitlines()]
    return root, summary, records


def _csv(path: Path, encoding: str = "utf-8") -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding=encoding) as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def by_task(records, task):
    return [r for r in records if r["task"] == task]


# ----------------------------------------------------------------------------- counts, format


def test_counts_per_task_and_split(corpus):
    root, summary, records = corpus
    assert summary["clips"] == len(records) == sum(generate.SIZES["tiny"].values())
    for task, n in generate.SIZES["tiny"].items():
        rs = by_task(records, task)
        assert len(rs) == n, task
        splits = Counter(r["split"] for r in rs)
        assert splits["train"] > 0 and splits["test"] > 0, (task, splits)
        assert summary["per_task_split"][task] == dict(sorted(splits.items()))
    assert len({r["path"] for r in records}) == len(records)
    assert (root / ".." / "tiny.partial").exists() is False


def test_audio_is_mono_flac_of_clip_length_and_not_silent(corpus):
    root, _, records = corpus
    for r in records[::7]:
        info = sf.info(root / r["path"])
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 44100, 1)
        assert info.frames == int(TINY.clip_seconds * 44100)
        x, _ = sf.read(root / r["path"], dtype="float32")
        assert np.max(np.abs(x)) == pytest.approx(r["peak"], abs=2e-4)
    assert min(r["peak"] for r in records) >= generate.SILENCE_PEAK
    # every note sounds: its peak clears the audibility threshold (reverb may lower it a little)
    assert min(r["peak"] for r in by_task(records, "notes")) >= 0.5 * notes.SILENCE_PEAK
    for r in by_task(records, "notes")[::5]:
        x, _ = sf.read(root / r["path"], dtype="float32")
        assert np.max(np.abs(x[: int(0.5 * 44100)])) >= 0.5 * notes.SILENCE_PEAK, r["path"]


def test_no_generated_audio_inside_the_repo():
    repo = Path(__file__).resolve().parents[1]
    assert not any((repo / "pengi").rglob("*.flac"))


# ----------------------------------------------------------------------------- native layouts


def test_nsynth_layout_and_held_out_soundfont(corpus):
    root, _, records = corpus
    sample = SHARED / "datasets" / "nsynth" / "nsynth-test" / "examples.json"
    keys = (list(next(iter(json.loads(sample.read_text()).values())))
            if sample.exists() else ["qualities", "pitch", "note", "instrument_source_str", "velocity", "instrument_str",
                                     "instrument", "sample_rate", "qualities_str", "instrument_source", "note_str",
                                     "instrument_family", "instrument_family_str"])
    seen = 0
    for split_dir in ("nsynth-train", "nsynth-valid", "nsynth-test"):
        ex = json.loads((root / "nsynth" / split_dir / "examples.json").read_text())
        for name, e in ex.items():
            assert list(e) == keys
            assert name == e["note_str"] == f"{e['instrument_str']}-{e['pitch']:03d}-{e['velocity']:03d}"
            assert e["instrument_family_str"] == notes.FAMILIES[e["instrument_family"]]
            assert e["qualities_str"] == [q for q, bit in zip(notes.QUALITIES, e["qualities"]) if bit]
            assert (root / "nsynth" / split_dir / "audio" / f"{name}.flac").exists()
            seen += 1
    assert seen == len(by_task(records, "notes"))
    for r in by_task(records, "notes"):
        sfont, prog = r["params"]["soundfont"], r["params"]["program"]
        assert (sfont == "TimGM6mb") == (r["split"] == "test")
        if r["split"] == "train":
            assert prog not in notes.HELDOUT_PROGRAMS
        if r["split"] == "val":
            assert prog in notes.HELDOUT_PROGRAMS
        assert r["labels"]["velocity"] in notes.VELOCITIES and r["labels"]["family"] in notes.FAMILIES


def test_esc50_layout_and_held_out_source_files(corpus):
    root, _, records = corpus
    header, rows = _csv(root / "esc50" / "meta" / "esc50.csv")
    real = SHARED / "datasets" / "esc50" / "meta" / "esc50.csv"
    assert header == (_csv(real)[0] if real.exists() else ["filename", "fold", "target", "category", "esc10", "src_file", "take"])
    assert len(rows) == len(by_task(records, "events"))
    src_folds = defaultdict(set)
    for row in rows:
        assert row["filename"] == f"{row['fold']}-{row['src_file']}-{row['take']}-{row['target']}.flac"
        assert events.CLASSES[int(row["target"])] == row["category"]
        assert row["esc10"] in ("True", "False") and 1 <= int(row["fold"]) <= 5
        assert (root / "esc50" / "audio" / row["filename"]).exists()
        src_folds[row["src_file"]].add(row["fold"])
    assert all(len(f) == 1 for f in src_folds.values()), "crops of one source must stay in one fold"
    train_files = {s["file"] for r in records if r["split"] != "test" for s in r["sources"] if s["kind"] == "recording"}
    test_files = {s["file"] for r in records if r["split"] == "test" for s in r["sources"] if s["kind"] == "recording"}
    assert test_files and not train_files & test_files


def test_real_recordings_carry_package_file_and_licence(corpus):
    _, summary, records = corpus
    real = [s for r in records for s in r["sources"] if s["kind"] == "recording"]
    assert len(real) >= summary["real_recordings"] > 0
    for s in real:
        assert s["package"] == "ufoai-sound" and s["file"].startswith(events.UFOAI_PK3 + ":sound/")
        assert s["license"] in {"GPL-2+", "GPL-2", "CC-BY-3.0", "CC-BY-SA-3.0", "public-domain"}
    assert all(s["package"] and s["license"] for r in records for s in r["sources"])
    assert "deb:ufoai-sound" in summary["versions"]


def test_clotho_and_clotho_aqa_layouts(corpus):
    root, _, records = corpus
    held = mixtures.held_out_pairs(TINY.seed)
    mix = {Path(r["path"]).name: r for r in by_task(records, "mixtures")}
    for split, folder in (("train", "development"), ("val", "validation"), ("test", "evaluation")):
        header, rows = _csv(root / "clotho" / f"clotho_captions_{folder}.csv", "latin-1")
        assert header == ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
        mheader, mrows = _csv(root / "clotho" / f"clotho_metadata_{folder}.csv", "latin-1")
        assert mheader == ["file_name", "keywords", "sound_id", "sound_link", "start_end_samples", "manufacturer", "license"]
        assert [r["file_name"] for r in mrows] == [r["file_name"] for r in rows]
        for row in rows:
            assert (root / "clotho" / folder / row["file_name"]).exists()
            assert all(row[f"caption_{i}"].strip() for i in range(1, 6))
            r = mix[row["file_name"]]
            assert r["split"] == split
            pairs = {frozenset((a, b)) for a in r["labels"]["events"] for b in r["labels"]["events"] if a != b}
            assert bool(pairs & held) == (split == "test")
        aqa_name = {"train": "train", "val": "val", "test": "test"}[split]
        qheader, qrows = _csv(root / "clotho_aqa" / f"clotho_aqa_{aqa_name}.csv", "latin-1")
        assert qheader == ["file_name", "QuestionText", "answer", "confidence"]
        per_clip = Counter(q["file_name"] for q in qrows)
        assert set(per_clip) == {row["file_name"] for row in rows}
        assert all(4 <= c <= 8 for c in per_clip.values())
        assert all((root / "clotho_aqa" / "audio_files" / f).exists() for f in per_clip)


def test_crema_d_file_name_coding_and_held_out_voices(corpus):
    root, _, records = corpus
    pat = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_(LO|MD|HI|XX)\.flac$")
    actors = {int(r["ActorID"]): r for r in _csv(root / "crema_d" / "VideoDemographics.csv")[1]}
    splits = {int(r["ActorID"]): r["split"] for r in _csv(root / "crema_d" / "corpus_actor_splits.csv")[1]}
    names = sorted(p.name for p in (root / "crema_d" / "AudioWAV").iterdir())
    assert len(names) == len(by_task(records, "emotion"))
    _, listed = _csv(root / "crema_d" / "SentenceFilenames.csv")
    assert sorted(r["Filename"] + ".flac" for r in listed) == names
    for name in names:
        m = pat.match(name)
        assert m, name
        actor, sentence, emo, level = int(m[1]), m[2], m[3], m[4]
        assert actor in actors and sentence in speech.SENTENCES
        assert level == "XX" or (sentence == "IEO" and emo != "NEU")
    for r in by_task(records, "emotion"):
        assert splits[r["labels"]["actor"]] == r["split"]
        assert speech.EMOTIONS[r["labels"]["emotion_code"]][0] == r["labels"]["emotion"]
        assert actors[r["labels"]["actor"]]["Sex"].lower() == r["labels"]["gender"]
    engines = {r["split"]: set() for r in by_task(records, "emotion")}
    for r in by_task(records, "emotion"):
        engines[r["split"]].add(r["labels"]["engine"])
    assert "flite" not in engines["train"]


def test_tut2017_layout_folds_by_recording(corpus):
    root, _, records = corpus
    dev = root / scenes.DEV_DIR
    meta = [line.split("\t") for line in (dev / "meta.txt").read_text().splitlines()]
    assert all(len(m) == 3 and m[0].startswith("audio/") and m[1] in scenes.SCENES for m in meta)
    assert all(Path(m[0]).name.startswith(m[2] + "_") and (dev / m[0]).exists() for m in meta)
    for k in range(1, 5):
        train = {line.split("\t")[0] for line in (dev / "evaluation_setup" / f"fold{k}_train.txt").read_text().splitlines()}
        ev = {line.split("\t")[0] for line in (dev / "evaluation_setup" / f"fold{k}_evaluate.txt").read_text().splitlines()}
        test = set((dev / "evaluation_setup" / f"fold{k}_test.txt").read_text().splitlines())
        assert train | ev == {m[0] for m in meta} and not train & ev and test == ev
        rec = lambda files: {Path(f).name.split("_")[0] for f in files}  # noqa: E731
        assert not rec(train) & rec(ev)
    evl = [line.split("\t") for line in (root / scenes.EVAL_DIR / "meta.txt").read_text().splitlines()]
    assert evl and all(len(m) == 2 for m in evl)
    assert not {Path(m[0]).name.split("_")[0] for m in evl} & {m[2] for m in meta}


def test_gtzan_and_audiofolder_layouts(corpus):
    root, _, records = corpus
    genres = sorted(p.name for p in (root / "gtzan_genres" / "genres").iterdir())
    assert genres == sorted(music.GENRES)
    files = {p.stem for p in (root / "gtzan_genres" / "genres").rglob("*.flac")}
    assert all(re.fullmatch(rf"{p.parent.name}\.\d{{5}}", p.stem) for p in (root / "gtzan_genres" / "genres").rglob("*.flac"))
    listed = [set((root / "gtzan_genres" / "splits" / f"{s}.txt").read_text().split()) for s in ("training", "validation", "testing")]
    assert set().union(*listed) == files and sum(map(len, listed)) == len(files)
    for folder in ("train", "validation", "test"):
        header, rows = _csv(root / "audiofolder" / folder / "metadata.csv")
        assert header == ["file_name", "caption", "labels", "qa"]
        for row in rows:
            assert (root / "audiofolder" / folder / row["file_name"]).exists()
            labels, qa = json.loads(row["labels"]), dict((d["question"], d["answer"]) for d in json.loads(row["qa"]))
            count_word = speech.number_word(labels["digit_count"])
            assert qa["How many numbers are spoken?"] == count_word
            assert f" {count_word} number" in row["caption"]
            assert len(labels["digits"]) == labels["digit_count"]


# ----------------------------------------------------------------------------- honesty, vocabularies


def test_label_vocabularies(corpus):
    _, _, records = corpus
    vocab = {"music": ("genre", set(music.GENRES)), "events": ("category", set(events.CLASSES)),
             "scenes": ("scene", set(scenes.SCENES)),
             "emotion": ("emotion", {v[0] for v in speech.EMOTIONS.values()}),
             "notes": ("pitch_class", set(notes.NOTE_NAMES))}
    for task, (key, allowed) in vocab.items():
        assert {r["labels"][key] for r in by_task(records, task)} <= allowed, task
    for r in by_task(records, "mixtures"):
        assert set(r["labels"]["events"]) <= set(events.CLASSES) and len(set(r["labels"]["events"])) == r["labels"]["n_events"]


def test_captions_and_answers_match_the_annotation(corpus):
    _, _, records = corpus
    stated = 0
    for r in by_task(records, "mixtures") + by_task(records, "scenes"):
        ann = r["params"]["annotation"]
        qa = dict(r["qa"])
        bed = r["params"]["background"]
        assert len(r["captions"]) == 5 and len(set(r["captions"])) >= 3
        for a in ann:
            if a["count"] is not None:
                stated += 1
                assert not a["truncated"] and a["count"] <= mixtures.MAX_COUNT
                assert bed is None or a["snr_db"] >= 6.0
                q = mixtures.COUNT_QUESTIONS.get(a["label"])
                if q and r["task"] == "mixtures":
                    assert qa[q] == speech.number_word(a["count"])
            elif r["task"] == "mixtures":
                assert mixtures.COUNT_QUESTIONS.get(a["label"]) not in qa
        if r["task"] == "mixtures":
            assert qa["How many distinct sound events are there?"] == speech.number_word(len(ann))
            if bed and "Is the background faint or loud?" in qa:
                assert (qa["Is the background faint or loud?"] == "faint") == (bed["snr_db"] > 15)
            for cap in r["captions"]:
                assert ("faint " in cap) == (bed is not None and bed["snr_db"] > 15)
        words = set(" ".join(r["captions"]).lower().replace(",", " ").replace(".", " ").split())
        for a in ann:  # a count word appears only where a count was stated
            if a["count"] is None and a["label"] in mixtures.COUNT_QUESTIONS and len(ann) == 1:
                assert not words & {"twice", "three", "four", "five"}
    assert stated > 0


def test_presence_questions_are_balanced(corpus):
    _, _, records = corpus
    answers = Counter(a for r in by_task(records, "mixtures") for q, a in r["qa"] if q.startswith(("Is there", "Can you hear")))
    assert answers["yes"] > 0 and answers["no"] > 0
    assert abs(answers["yes"] - answers["no"]) <= 0.5 * (answers["yes"] + answers["no"])


# ----------------------------------------------------------------------------- determinism


def test_plan_is_deterministic_and_seed_dependent():
    a, b = generate.plan_corpus(TINY), generate.plan_corpus(TINY)
    assert [(s.clip_id, s.split, s.rel_path, s.factors) for s in a] == [(s.clip_id, s.split, s.rel_path, s.factors) for s in b]
    c = generate.plan_corpus(dataclasses.replace(TINY, seed=1))
    assert [s.factors for s in a] != [s.factors for s in c]


def test_rerendering_in_this_process_matches_the_pool_output(corpus, tmp_path):
    root, _, records = corpus
    specs = generate.plan_corpus(TINY)
    by_index = {(r["task"], r["index"]): r for r in records}
    sample = [s for s in specs if s.index % 9 == 0]
    assert {s.task for s in sample} == set(generate.SIZES["tiny"])
    for spec in sample:
        rec = generate.render_clip(spec, TINY, str(tmp_path))
        want = by_index[(spec.task, spec.index)]
        assert json.dumps(rec, sort_keys=True) == json.dumps({k: v for k, v in want.items()
                                                               if k not in ("seed", "size", "extra_paths")}, sort_keys=True)
        a, _ = sf.read(tmp_path / rec["path"], dtype="int16")
        b, _ = sf.read(root / want["path"], dtype="int16")
        assert np.array_equal(a, b), rec["path"]


@pytest.mark.slow
def test_a_second_run_reproduces_the_corpus(corpus, tmp_path):
    root, _, records = corpus
    generate.generate_corpus(dataclasses.replace(TINY, workers=1), tmp_path / "again")
    assert (tmp_path / "again" / "corpus.jsonl").read_text() == (root / "corpus.jsonl").read_text()
    for r in records[::5]:
        assert (tmp_path / "again" / r["path"]).read_bytes() == (root / r["path"]).read_bytes()
    for meta in ("esc50/meta/esc50.csv", "nsynth/nsynth-train/examples.json", "clotho_aqa/clotho_aqa_train.csv"):
        assert (tmp_path / "again" / meta).read_text() == (root / meta).read_text()


# ----------------------------------------------------------------------------- helpers, errors


def test_debian_copyright_parser_picks_per_file_licences():
    text = ("Files: *\nCopyright: x\nLicense: GPL-2+\n\nFiles:\n base/sound/a.ogg\n base/sound/b.ogg\n"
            "Copyright: y\nLicense: CC-BY-3.0\n\nLicense: GPL-2+\n text\n")
    assert events.parse_debian_copyright(text) == [(["*"], "GPL-2+"), (["base/sound/a.ogg", "base/sound/b.ogg"], "CC-BY-3.0")]


def test_missing_ufoai_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(events, "UFOAI_PK3", "/nonexistent/0snd.pk3")
    events.real_files.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="ufoai-sound"):
            events.real_files()
    finally:
        events.real_files.cache_clear()


def test_probe_features_shape_and_sensitivity():
    from pengi.corpus.probe import N_MELS, logmel_stats

    sr = 44100
    t = np.arange(sr) / sr
    low, high = np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 3000 * t)
    fl, fh = logmel_stats(low.astype(np.float32), sr), logmel_stats(high.astype(np.float32), sr)
    assert fl.shape == (3 * N_MELS,) and np.isfinite(fl).all()
    assert np.argmax(fl[:N_MELS]) < np.argmax(fh[:N_MELS])
