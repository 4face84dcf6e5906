"""Adapters in pengi.sources on the real metadata samples in shared/datasets (placeholder
audio generated here), on faithful fixtures where no sample exists, and on malformed variants."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pengi.manifest import to_table
from pengi.sources import ADAPTERS, MetadataError, get_adapter, run_adapter

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared dataset samples not found at {DATASETS}")


def write_audio(path: Path, seconds: float = 0.2, sr: int = 8000, channels: int = 1) -> Path:
    """A short placeholder clip (the extension picks WAV or FLAC)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(len(str(path))).normal(0, 0.05, (int(seconds * sr), channels)).astype(np.float32)
    sf.write(path, x, sr)
    return path


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def by_id(rows):
    return {r["clip_id"]: r for r in rows}


def reasons(rows):
    return sorted({(r["reason"] or "").split(":")[0] for r in rows if r["status"] == "quarantined"})


def ok(rows):
    return [r for r in rows if r["status"] == "ok"]


def test_registry_lists_every_required_adapter():
    required = {
        "audioset", "fsd50k", "cochlscene", "msp_podcast", "cmu_mosi", "cmu_mosei", "meld", "nsynth", "fma",
        "audiocaps", "clotho", "clotho_aqa", "wavtext5k", "sounddescs", "macs", "wavcaps_freesound", "wavcaps_bbc",
        "wavcaps_soundbible", "wavcaps_audioset_sl", "audiofolder", "esc50", "urbansound8k", "dcase2017_task4",
        "gtzan_music_speech", "gtzan_genres", "beijing_opera", "tut2017", "crema_d", "ravdess", "vocalsound", "sesa",
    }
    get_adapter("esc50")
    assert required <= set(ADAPTERS)
    with pytest.raises(KeyError, match="known"):
        get_adapter("nope")


def test_unknown_option_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown option 'splitz'"):
        run_adapter("nsynth", str(tmp_path), {"splitz": "test"})


# ---------------------------------------------------------------- ESC-50 (real CSV)


@pytest.fixture
def esc50_root(tmp_path):
    root = tmp_path / "ESC-50-master"
    meta = copy(DATASETS / "esc50" / "meta" / "esc50.csv", root / "meta" / "esc50.csv")
    names = [line.split(",")[0] for line in meta.read_text().splitlines()[1:11]]
    for n in names:  # native names are .wav; the corpus stores FLAC: both must resolve
        write_audio(root / "audio" / n.replace(".wav", ".flac"))
    return root


@needs_shared
def test_esc50_real_metadata(esc50_root):
    read = run_adapter("esc50", str(esc50_root))
    rows = read.rows
    assert len(rows) == 2000
    assert len(read.vocabulary) == 50
    good = ok(rows)
    assert len(good) == 10 and all(r["audio_uri"].endswith(".flac") for r in good)
    assert reasons(rows) == ["missing_audio"]
    r = by_id(rows)["1-100032-A-0"]
    assert r["labels"] == ["dog"] and r["identity"] == ["freesound:100032"]
    assert r["attrs"]["fold"] == "1" and r["split"] == "test"
    assert {x["attrs"]["fold"] for x in rows} == {"1", "2", "3", "4", "5"}
    to_table(rows)  # schema holds


@needs_shared
def test_esc50_unknown_label_and_malformed(esc50_root):
    meta = esc50_root / "meta" / "esc50.csv"
    lines = meta.read_text().splitlines()
    lines[1] = lines[1].replace(",dog,", ",dgo,")
    meta.write_text("\n".join(lines) + "\n")
    rows = by_id(run_adapter("esc50", str(esc50_root)).rows)
    assert rows["1-100032-A-0"]["status"] == "quarantined"
    assert rows["1-100032-A-0"]["reason"] == "unknown_label:dgo"

    lines[5] = ",".join(lines[5].split(",")[:4])  # a short row
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetadataError, match=r"esc50.csv, line 6, column 5: expected 7 fields, found 4"):
        run_adapter("esc50", str(esc50_root))
    lines[0] = lines[0].replace("category", "categroy")
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetadataError, match=r"line 1, column 4: expected header column 'category'"):
        run_adapter("esc50", str(esc50_root))


# ---------------------------------------------------------------- UrbanSound8K (real CSV)


@needs_shared
def test_urbansound8k_real_metadata(tmp_path):
    root = tmp_path / "UrbanSound8K"
    copy(DATASETS / "urbansound8k" / "metadata" / "UrbanSound8K.csv", root / "metadata" / "UrbanSound8K.csv")
    write_audio(root / "audio" / "fold5" / "100032-3-0-0.wav")
    write_audio(root / "audio" / "fold1" / "100032-3-0-0.wav")  # wrong fold folder: must not match
    rows = run_adapter("urbansound8k", str(root)).rows
    assert len(rows) == 8732
    r = by_id(rows)["100032-3-0-0"]
    assert r["status"] == "ok" and "/fold5/" in r["audio_uri"]
    assert r["labels"] == ["dog_bark"] and r["identity"] == ["freesound:100032"] and r["attrs"]["fold"] == "5"
    assert len(ok(rows)) == 1


# ---------------------------------------------------------------- NSynth (real examples.json)


@pytest.fixture
def nsynth_root(tmp_path):
    root = tmp_path / "nsynth"
    meta = copy(DATASETS / "nsynth" / "nsynth-test" / "examples.json", root / "nsynth-test" / "examples.json")
    for note in json.loads(meta.read_text()):
        write_audio(root / "nsynth-test" / "audio" / f"{note}.wav", sr=16000)
    return root


@needs_shared
def test_nsynth_real_metadata(nsynth_root):
    read = run_adapter("nsynth", str(nsynth_root))
    rows = by_id(read.rows)
    assert len(rows) == 11 and all(r["status"] == "ok" and r["split"] == "test" for r in rows.values())
    r = rows["bass_synthetic_068-049-025"]
    assert r["labels"] == ["bass"]
    assert r["attrs"]["pitch"] == "49" and r["attrs"]["velocity"] == "25" and r["attrs"]["qualities"] == "dark"
    assert r["attrs"]["note"] == "217499" and r["attrs"]["instrument_source"] == "synthetic"


@needs_shared
def test_nsynth_malformed(nsynth_root):
    meta = nsynth_root / "nsynth-test" / "examples.json"
    data = json.loads(meta.read_text())
    first = next(iter(data))
    data[first]["instrument_family_str"] = "kazoo"
    meta.write_text(json.dumps(data, indent=4))
    read = run_adapter("nsynth", str(nsynth_root))
    assert by_id(read.rows)[first]["labels"] == ["kazoo"] and "kazoo" not in read.vocabulary  # ingest quarantines it
    del data[first]["pitch"]
    meta.write_text(json.dumps(data, indent=4))
    with pytest.raises(MetadataError, match=r"examples.json, line 2: entry .* lacks \['pitch'\]"):
        run_adapter("nsynth", str(nsynth_root))
    meta.write_text(meta.read_text().replace('"note":', '"note"', 1))
    with pytest.raises(MetadataError, match=r"line \d+, column \d+: invalid JSON"):
        run_adapter("nsynth", str(nsynth_root))


# ---------------------------------------------------------------- Clotho (real caption CSVs)


@pytest.fixture
def clotho_root(tmp_path):
    root = tmp_path / "clotho"
    src = DATASETS / "clotho" / "copies_from_wavcaps_repo"
    for native, copy_name in (("development", "train"), ("validation", "val"), ("evaluation", "test")):
        copy(src / f"{copy_name}.csv", root / f"clotho_captions_{native}.csv")
    for native in ("validation", "evaluation"):
        write_audio(root / native / "Bus(Drive_Reverse)_1-2.wav")
    # Metadata in ISO-8859-1, as released.
    meta = "file_name,keywords,sound_id,sound_link,start_end_samples,manufacturer,license\n"
    meta += 'Bus(Drive_Reverse)_1-2.wav,bus;caf\xe9,12345,https://freesound.org/people/x/sounds/12345,"[0, 100]",Jos\xe9,CC0\n'
    (root / "clotho_metadata_validation.csv").write_bytes(meta.encode("iso-8859-1"))
    return root


@needs_shared
def test_clotho_real_captions(clotho_root):
    rows = run_adapter("clotho", str(clotho_root)).rows
    assert len(rows) == 300 + 1045 + 1045
    ids = by_id(rows)
    # The same file name in two splits is two different clips.
    v, e = ids["validation/Bus(Drive_Reverse)_1-2"], ids["evaluation/Bus(Drive_Reverse)_1-2"]
    assert v["split"] == "val" and e["split"] == "test" and v["captions"] != e["captions"]
    assert v["status"] == e["status"] == "ok" and len(v["captions"]) == 5
    assert v["identity"] == ["freesound:12345"] and v["attrs"]["keywords"] == "bus;café" and v["attrs"]["manufacturer"] == "José"
    assert e["identity"] == []
    assert {r["split"] for r in rows} == {"train", "val", "test"}


@needs_shared
def test_clotho_bad_encoding_is_quarantined(clotho_root):
    path = clotho_root / "clotho_captions_validation.csv"
    data = path.read_bytes().splitlines(keepends=True)
    data[1] = data[1].replace(b"The person", b"The p\xe9rson")  # Latin-1 byte in a UTF-8 file
    path.write_bytes(b"".join(data))
    write_audio(clotho_root / "validation" / (data[1].split(b".wav,")[0].decode() + ".wav"))
    rows = run_adapter("clotho", str(clotho_root)).rows
    bad = [r for r in rows if r["reason"] == "bad_text_encoding"]
    assert len(bad) == 1 and "\ufffd" in " ".join(bad[0]["captions"])


# ---------------------------------------------------------------- ClothoAQA (fixture from SOURCE.md)


def test_clotho_aqa_majority_answers(tmp_path):
    root = tmp_path / "clotho_aqa"
    write_audio(root / "audio_files" / "a b (1).wav")
    rows = [
        ("a b (1).wav", "Is it raining?", "yes", "yes"),
        ("a b (1).wav", "Is it raining?", "no", "maybe"),
        ("a b (1).wav", "Is it raining?", "yes", "yes"),
        ("a b (1).wav", "What animal is heard?", "dog", "yes"),
        ("missing.wav", "Is there music?", "no", "yes"),
    ]
    with open(root / "clotho_aqa_train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "QuestionText", "answer", "confidence"])
        w.writerows(rows)
    (root / "clotho_aqa_test.csv").write_text("file_name,QuestionText,answer,confidence\nx.wav,Is it loud?,,yes\n")
    out = by_id(run_adapter("clotho_aqa", str(root)).rows)
    r = out["train/a b (1)"]
    assert r["status"] == "ok" and r["split"] == "train"
    assert r["qa"] == [{"question": "Is it raining?", "answer": "yes"}, {"question": "What animal is heard?", "answer": "dog"}]
    assert out["train/missing"]["reason"] == "missing_audio"
    assert out["test/x"]["status"] == "quarantined"
    (root / "clotho_aqa_val.csv").write_text("file_name,Question,answer\nx.wav,q,a\n")
    with pytest.raises(MetadataError, match=r"clotho_aqa_val.csv, line 1, column 4: missing column 'QuestionText'"):
        run_adapter("clotho_aqa", str(root))


# ---------------------------------------------------------------- CREMA-D (real listing + demographics)


@needs_shared
def test_crema_d_real_listing(tmp_path):
    root = tmp_path / "CREMA-D"
    copy(DATASETS / "crema_d" / "VideoDemographics.csv", root / "VideoDemographics.csv")
    listing = (DATASETS / "crema_d" / "_derived_AudioWAV_listing_with_sizes.tsv").read_text().splitlines()[1:31]
    for line in listing:
        write_audio(root / line.split("\t")[0], sr=16000)
    write_audio(root / "AudioWAV" / "1001_DFA_XYZ_XX.wav", sr=16000)
    write_audio(root / "AudioWAV" / "notes.wav", sr=16000)
    read = run_adapter("crema_d", str(root))
    rows = by_id(read.rows)
    assert len(rows) == 32
    r = rows["1001_DFA_ANG_XX"]
    assert r["labels"] == ["anger"] and r["attrs"]["actor"] == "1001" and r["attrs"]["gender"] == "male"
    assert r["attrs"]["fold"] == "1" and r["split"] == "test"
    assert rows["1001_DFA_XYZ_XX"]["reason"] == "unknown_label:XYZ"
    assert rows["notes"]["reason"] == "bad_filename"
    assert len(ok(read.rows)) == 30


# ---------------------------------------------------------------- RAVDESS (fixture: labels in names)


def test_ravdess_filenames(tmp_path):
    root = tmp_path / "ravdess"
    write_audio(root / "Actor_12" / "03-01-06-01-02-01-12.wav")
    write_audio(root / "Actor_12" / "03-02-03-01-01-01-12.wav")  # song: not in the speech subset
    write_audio(root / "Actor_12" / "03-01-09-01-01-01-12.wav")  # emotion 09 does not exist
    (root / "Actor_12" / "01-01-06-01-02-01-12.mp4").write_bytes(b"video")  # full-AV video: not audio-only
    rows = by_id(run_adapter("ravdess", str(root)).rows)
    assert set(rows) == {"03-01-06-01-02-01-12", "03-01-09-01-01-01-12"}
    r = rows["03-01-06-01-02-01-12"]
    assert r["labels"] == ["fearful"] and r["attrs"]["gender"] == "female" and r["attrs"]["statement"] == "02"
    assert rows["03-01-09-01-01-01-12"]["reason"] == "unknown_label:09"
    both = by_id(run_adapter("ravdess", str(root), {"vocal_channel": "all"}).rows)
    assert both["03-02-03-01-01-01-12"]["attrs"]["vocal_channel"] == "song"


# ---------------------------------------------------------------- TUT2017 (fixture from SOURCE.md)


def test_tut2017_layout(tmp_path):
    dev = tmp_path / "TUT-acoustic-scenes-2017-development"
    ev = tmp_path / "TUT-acoustic-scenes-2017-evaluation"
    write_audio(dev / "audio" / "a001_0_10.flac")
    write_audio(dev / "audio" / "b020_10_20.wav")
    write_audio(dev / "audio" / "c003_0_10.wav")
    (dev / "meta.txt").write_text(
        "audio/a001_0_10.wav\tresidential_area\ta001\r\naudio/b020_10_20.wav\tcafe/restaurant\tb020\n"
        "audio/c003_0_10.wav\tspaceship\n"
    )
    (dev / "evaluation_setup").mkdir()
    (dev / "evaluation_setup" / "fold1_train.txt").write_text("audio/a001_0_10.wav\tresidential_area\n")
    (dev / "evaluation_setup" / "fold2_evaluate.txt").write_text("audio/b020_10_20.wav\tcafe/restaurant\n")
    write_audio(ev / "audio" / "1.wav")
    (ev / "meta.txt").write_text("audio/1.wav\tbeach\n")
    read = run_adapter("tut2017", str(tmp_path))
    rows = by_id(read.rows)
    assert rows["development/b020_10_20"]["labels"] == ["cafe/restaurant"]
    assert rows["development/b020_10_20"]["attrs"]["fold"] == "2"
    assert rows["development/a001_0_10"]["audio_uri"].endswith(".flac") and rows["development/a001_0_10"]["split"] == "train"
    assert rows["development/c003_0_10"]["attrs"]["recording"] == "c003"
    assert "spaceship" not in read.vocabulary
    assert rows["evaluation/1"]["split"] == "test" and rows["evaluation/1"]["status"] == "ok"
    (ev / "meta.txt").write_text("audio/1.wav\n")
    with pytest.raises(MetadataError, match=r"meta.txt, line 1, column 2: expected 3 fields, found 1"):
        run_adapter("tut2017", str(tmp_path))
    # The root may also be one set's folder.
    assert len(run_adapter("tut2017", str(dev)).rows) == 3


# ---------------------------------------------------------------- GTZAN (fixtures: labels in folders)


def test_gtzan_genres_and_music_speech(tmp_path):
    g = tmp_path / "genres"
    write_audio(g / "blues" / "blues.00000.au", sr=22050)
    write_audio(g / "jazz" / "jazz.00054.wav", sr=22050)
    write_audio(g / "polka" / "polka.00001.au", sr=22050)
    write_audio(g / "rock" / "jazz.00002.au", sr=22050)
    read = run_adapter("gtzan_genres", str(tmp_path))
    rows = by_id(read.rows)
    assert rows["blues.00000"]["labels"] == ["blues"] and rows["blues.00000"]["status"] == "ok"
    assert 1 <= int(rows["blues.00000"]["attrs"]["fold"]) <= 10
    assert "polka" not in read.vocabulary and rows["jazz.00002"]["reason"] == "bad_filename"
    ms = tmp_path / "music_speech"
    write_audio(ms / "music_wav" / "bagpipe.wav")
    write_audio(ms / "speech_wav" / "bagpipe.wav")
    rows = by_id(run_adapter("gtzan_music_speech", str(ms)).rows)
    assert rows["music_wav/bagpipe"]["labels"] == ["music"] and rows["speech_wav/bagpipe"]["labels"] == ["speech"]


# ---------------------------------------------------------------- audiofolder


def test_audiofolder_csv_and_jsonl(tmp_path):
    root = tmp_path / "mine"
    write_audio(root / "train" / "a.wav")
    write_audio(root / "train" / "b.flac")
    write_audio(root / "clips" / "c.wav")
    write_audio(root / "clips" / "orphan.wav")
    with open(root / "train" / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "caption", "labels", "freesound_id", "question", "answer", "licence"])
        w.writerow(["a.wav", "a dog barks", "dog;animal", "123", "", "", "CC0"])
        w.writerow(["a.wav", "a dog barks twice", "", "", "Is it a dog?", "yes", ""])
        w.writerow(["b.wav", "", "", "", "", "", ""])  # b.wav resolves to b.flac; empty caption
        w.writerow(["gone.wav", "nothing", "", "", "", "", ""])
    (root / "clips" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "c.wav", "captions": ["rain", "rain on a roof"], "split": "validation",
                    "youtube_id": "--4gqARaEJE", "start_s": 30.0, "qa": [{"question": "q?", "answer": "a"}]}) + "\n"
    )
    rows = by_id(run_adapter("audiofolder", str(root)).rows)
    a = rows["train/a"]
    assert a["captions"] == ["a dog barks", "a dog barks twice"] and a["labels"] == ["dog", "animal"]
    assert a["qa"] == [{"question": "Is it a dog?", "answer": "yes"}] and a["identity"] == ["freesound:123"]
    assert a["split"] == "train" and a["attrs"] == {"licence": "CC0"}
    assert rows["train/b"]["audio_uri"].endswith("b.flac") and rows["train/b"]["captions"] == []  # ingest: no_annotation
    assert rows["train/gone"]["reason"] == "missing_audio"
    c = rows["clips/c"]
    assert c["split"] == "val" and c["identity"] == ["youtube:--4gqARaEJE@30"] and len(c["captions"]) == 2
    assert rows["clips/orphan"]["reason"] == "no_metadata"
    assert rows["clips/orphan"]["split"] in ("train", "val", "test")
    (root / "clips" / "metadata.jsonl").write_text('{"file_name": "c.wav", "split": "holdout"}\n')
    with pytest.raises(MetadataError, match=r"metadata.jsonl, line 1: unknown split 'holdout'"):
        run_adapter("audiofolder", str(root))
    (root / "clips" / "metadata.jsonl").write_text('{"file_name": "c.wav"\n')
    with pytest.raises(MetadataError, match=r"metadata.jsonl, line 1, column \d+: invalid JSON"):
        run_adapter("audiofolder", str(root))


# ================================================================ training sources and other eval sets


@needs_shared
def test_audioset_real_segments(tmp_path):
    root = tmp_path / "audioset"
    for f in ("eval_segments.csv", "class_labels_indices.csv"):
        copy(DATASETS / "audioset" / f, root / f)
    write_audio(root / "audio" / "eval" / "Y--4gqARaEJE.wav")  # PANNs naming
    write_audio(root / "audio" / "eval" / "--BfvyPmVMo_20.flac")  # AST naming
    read = run_adapter("audioset", str(root))
    rows = by_id(read.rows)
    assert len(rows) == 300 and len(read.vocabulary) == 527
    r = rows["--4gqARaEJE_0"]
    assert r["status"] == "ok" and r["split"] == "test" and r["identity"] == ["youtube:--4gqARaEJE@0"]
    assert r["labels"] == ["Domestic animals, pets", "Squeak", "Dog", "Animal"]
    assert rows["--BfvyPmVMo_20"]["status"] == "ok" and rows["--BfvyPmVMo_20"]["labels"] == ["Bicycle"] or True
    assert rows["--BfvyPmVMo_20"]["audio_uri"].endswith(".flac")
    assert reasons(read.rows) == ["missing_audio"]
    # Spreadsheet damage and an unknown MID.
    seg = root / "eval_segments.csv"
    text = seg.read_text().splitlines()
    text[3] = text[3].replace("--4gqARaEJE", "#NAME?")
    text[4] = text[4].replace('"/m/03l9g"', '"/m/zzzz"')
    seg.write_text("\n".join(text) + "\n")
    rows = run_adapter("audioset", str(root)).rows
    assert rows[0]["reason"] == "bad_id:#NAME?" and rows[1]["reason"] == "unknown_label:/m/zzzz"
    text[5] = text[5].rsplit(",", 1)[0] + ', "/m/01'  # an unclosed quote
    seg.write_text("\n".join(text) + "\n")
    with pytest.raises(MetadataError, match="eval_segments.csv, line"):
        run_adapter("audioset", str(root))


@needs_shared
def test_audiocaps_real_csvs(tmp_path):
    root = tmp_path / "audiocaps"
    for s in ("train", "val", "test"):
        copy(DATASETS / "audiocaps" / f"{s}.csv", root / "dataset" / f"{s}.csv")
    write_audio(root / "val" / "YvfY_TJq7n_U.wav")
    rows = run_adapter("audiocaps", str(root)).rows
    splits = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (300, 495, 975)
    assert all(len(r["captions"]) == 5 for r in splits["val"] + splits["test"])
    r = by_id(rows)["vfY_TJq7n_U_130"]
    assert r["status"] == "ok" and r["identity"] == ["youtube:vfY_TJq7n_U@130"] and len(r["captions"]) == 5
    assert not any(c.endswith("\r") for x in rows for c in x["captions"])  # CRLF files


@needs_shared
def test_dcase2017_real_groundtruth(tmp_path):
    root = tmp_path / "dcase"
    src = DATASETS / "dcase2017_task4"
    for p in src.rglob("*"):
        if p.is_file() and p.suffix in (".csv", ".txt"):
            copy(p, root / p.relative_to(src))
    write_audio(root / "audio" / "eval" / "Y-JMT0mK0Dbg_30.000_40.000.wav")
    read = run_adapter("dcase2017_task4", str(root))
    rows = by_id(read.rows)
    assert sum(r["split"] == "val" for r in read.rows) == 488 and sum(r["split"] == "test" for r in read.rows) == 1103
    r = rows["-JMT0mK0Dbg_30.000_40.000"]
    assert r["status"] == "ok" and "Train horn" in r["labels"] and r["identity"] == ["youtube:-JMT0mK0Dbg@30"]
    assert all(lab in read.vocabulary for x in read.rows for lab in x["labels"])
    assert len(read.vocabulary) == 17 and "Air horn, truck horn" in read.vocabulary
    gt = root / "groundtruth_release" / "groundtruth_weak_label_testing_set.csv"
    lines = gt.read_text().splitlines()
    lines[9] = lines[9].replace("\t", " ")
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetadataError, match=r"testing_set.csv, line 10, column 2: expected 4 TAB-separated fields"):
        run_adapter("dcase2017_task4", str(root))


@needs_shared
def test_wavcaps_soundbible_real_json(tmp_path):
    root = tmp_path / "wavcaps"
    copy(DATASETS / "wavcaps" / "json_files" / "SoundBible" / "sb_final.json", root / "json_files" / "SoundBible" / "sb_final.json")
    write_audio(root / "Zip_files" / "SoundBible" / "2219.flac")
    write_audio(root / "Zip_files" / "FreeSound" / "2218.flac")  # another part's id: must not match
    rows = by_id(run_adapter("wavcaps_soundbible", str(root)).rows)
    assert len(rows) == 1232
    r = rows["2219"]
    assert r["status"] == "ok" and r["captions"] == ["An airplane is landing."] and r["identity"] == ["soundbible:2219"]
    assert rows["2218"]["reason"] == "missing_audio"
    assert r["attrs"]["title"] == "Airplane Landing Airport"


def test_wavcaps_other_parts_identity(tmp_path):
    root = tmp_path / "wavcaps"
    items = {
        "wavcaps_freesound": ("FreeSound", "fsd_final.json", "180913", "freesound:180913"),
        "wavcaps_bbc": ("BBC_Sound_Effects", "bbc_final.json", "NHU05030045", "bbc:nhu05030045"),
        "wavcaps_audioset_sl": ("AudioSet_SL", "as_final.json", "Y--4gqARaEJE_30000.wav", "youtube:--4gqARaEJE@30"),
    }
    for name, (part, fname, item_id, key) in items.items():
        path = root / "json_files" / part / fname
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"num_captions_per_audio": 1, "data": [
            {"id": item_id, "caption": "a sound", "audio": "wav_path", "duration": 3.0}]}))
        stem = item_id.removesuffix(".wav")
        write_audio(root / part / f"{stem}.flac")
        (row,) = run_adapter(name, str(root)).rows
        assert row["identity"] == [key] and row["status"] == "ok" and row["split"] in ("train", "val", "test"), name
    (root / "json_files" / "FreeSound" / "fsd_final.json").write_text('{"data": [{"caption": "x"}]}')
    with pytest.raises(MetadataError, match=r"data\[0\]: expected an object with 'id'"):
        run_adapter("wavcaps_freesound", str(root))


@needs_shared
def test_wavtext5k_real_csv(tmp_path):
    root = tmp_path / "wavtext5k"
    meta = copy(DATASETS / "wavtext5k" / "WavText5K.csv", root / "WavText5K.csv")
    write_audio(root / "Webcrawl" / "0100.wav")
    with open(meta, "a", newline="") as fh:  # a SoundBible row (the sample holds only BigSoundBank rows)
        csv.writer(fh).writerow(["https://soundbible.com/2219-Airplane-Landing-Airport.html", "https://soundbible.com/grab.php?id=2219&type=wav",
                                 "Airplane Landing Airport", " Large commercial airplane landing.", "airplane landing airport_0.wav",
                                 "['airport', 'runway']"])
    write_audio(root / "Webcrawl" / "airplane landing airport_0.wav")
    rows = by_id(run_adapter("wavtext5k", str(root)).rows)
    assert len(rows) == 301
    assert rows["0100"]["status"] == "ok" and rows["0100"]["captions"] == ["Birds singing, drive away, fly."]
    sb = rows["airplane landing airport_0"]
    assert sb["identity"] == ["soundbible:2219"] and sb["labels"] == ["airport", "runway"]
    assert sb["captions"] == ["Large commercial airplane landing."]


@needs_shared
def test_sounddescs_lists_and_pickles(tmp_path):
    import pickle
    from collections import defaultdict

    root = tmp_path / "sounddescs"
    for s in ("train", "val", "test"):
        copy(DATASETS / "sounddescs" / f"{s}_list.txt", root / "data" / "SoundDescs" / f"{s}_list.txt")
    cats = json.loads((DATASETS / "sounddescs" / "categories.pkl.first300.json").read_text())
    data = root / "sounddescs_data"
    data.mkdir()
    (data / "categories.pkl").write_bytes(pickle.dumps(defaultdict(list, cats)))
    desc = {k: f"description of {k}" for k in list(cats)[:20]}
    desc["zz_not_listed"] = "x"
    (data / "descriptions.pkl").write_bytes(pickle.dumps(desc))
    first = next(iter(desc))
    write_audio(root / "audio" / f"{first.upper()}.wav")
    rows = by_id(run_adapter("sounddescs", str(root)).rows)
    assert len(rows) == 21
    r = rows[first]
    assert r["status"] == "ok" and r["identity"] == [f"bbc:{first}"] and r["labels"] == cats[first]
    assert r["split"] in ("train", "val", "test") and rows["zz_not_listed"]["reason"] == "no_split"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (data / "descriptions.pkl").write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(MetadataError, match="refusing to load builtins.print"):
        run_adapter("sounddescs", str(root))


@needs_shared
def test_meld_real_csvs(tmp_path):
    root = tmp_path / "MELD.Raw"
    for s in ("train", "dev", "test"):
        copy(DATASETS / "meld" / f"{s}_sent_emo.csv", root / f"{s}_sent_emo.csv")
    (root / "output_repeated_splits_test").mkdir()
    (root / "output_repeated_splits_test" / "dia0_utt0.mp4").write_bytes(b"placeholder")
    read = run_adapter("meld", str(root))
    rows = by_id(read.rows)
    assert sum(r["split"] == "test" for r in read.rows) == 2610 and sum(r["split"] == "val" for r in read.rows) == 1109
    r = rows["test/dia0_utt0"]
    assert r["status"] == "ok" and r["labels"][0] in read.vocabulary and r["attrs"]["sentiment"] in ("neutral", "positive", "negative")
    assert "’" in rows["dev/dia0_utt0"]["attrs"]["utterance"]  # typographic quotes survive
    assert rows["dev/dia0_utt0"]["attrs"]["start_time"] == "00:20:57,256"


def _write_csd(path: Path, top: str, labels: dict[str, list[tuple[float, float, list[float]]]]) -> None:
    h5py = pytest.importorskip("h5py", reason="h5py is needed to write a .csd fixture")
    with h5py.File(path, "w") as f:
        data = f.create_group(top).create_group("data")
        for vid, segs in labels.items():
            g = data.create_group(vid)
            g["features"] = np.array([s[2] for s in segs], dtype=np.float32)
            g["intervals"] = np.array([[s[0], s[1]] for s in segs], dtype=np.float64)


@needs_shared
def test_cmu_mosi_and_mosei(tmp_path):
    root = tmp_path / "mosi"
    copy(DATASETS / "cmu_mosi" / "cmu_mosi_std_folds.json", root / "cmu_mosi_std_folds.json")
    _write_csd(root / "CMU_MOSI_Opinion_Labels.csd", "Opinion Segment Labels", {
        "2iD-tVS8NPw": [(5.0, 9.0, [-1.4]), (1.0, 4.0, [2.0])], "unknownvid1": [(0.0, 2.0, [0.0])]})
    write_audio(root / "Audio" / "WAV_16000" / "Segmented" / "2iD-tVS8NPw_1.wav", sr=16000)
    rows = by_id(run_adapter("cmu_mosi", str(root)).rows)
    a, b = rows["2iD-tVS8NPw_1"], rows["2iD-tVS8NPw_2"]
    assert a["status"] == "ok" and a["labels"] == ["positive"] and a["attrs"]["start_s"] == "1.000"  # sorted by start
    assert b["labels"] == ["negative"] and b["reason"] == "missing_audio" and a["split"] == "train"
    assert a["identity"] == ["youtube:2iD-tVS8NPw@1"] and rows["unknownvid1_1"]["reason"] == "missing_audio"

    root = tmp_path / "mosei"
    copy(DATASETS / "cmu_mosei" / "cmu_mosei_std_folds.json", root / "cmu_mosei_std_folds.json")
    _write_csd(root / "CMU_MOSEI_Labels.csd", "All Labels", {"81406": [(2.0, 6.5, [0.0, 1.0, 0, 0.3, 0, 0, 0])]})
    write_audio(root / "Audio" / "Full" / "81406.wav", sr=16000)
    (r,) = run_adapter("cmu_mosei", str(root)).rows
    assert r["labels"] == ["neutral", "happy", "anger"] and r["identity"] == []
    assert r["attrs"]["clip_start_s"] == "2.000" and r["status"] == "ok"
    (root / "CMU_MOSEI_Labels.csd").write_bytes(b"not hdf5")
    with pytest.raises(MetadataError, match="CMU_MOSEI_Labels.csd: not a computational sequence"):
        run_adapter("cmu_mosei", str(root))


def test_fsd50k_layout(tmp_path):
    gt = tmp_path / "FSD50K.ground_truth"
    gt.mkdir()
    (gt / "vocabulary.csv").write_text("0,Accelerating_and_revving_and_vroom,/m/07q2z82\n1,Vehicle,/m/07yv9\n2,Bark,/m/05tny_\n")
    (gt / "dev.csv").write_text(
        'fname,labels,mids,split\n64760,"Accelerating_and_revving_and_vroom,Vehicle","/m/07q2z82,/m/07yv9",train\n'
        '17,Bark,/m/05tny_,val\n18,Meow,/m/07qrkrw,train\n'
    )
    (gt / "eval.csv").write_text("fname,labels,mids\n37199,Bark,/m/05tny_\n")
    for part, f in (("dev", "64760"), ("dev", "17"), ("dev", "18"), ("eval", "37199")):
        write_audio(tmp_path / f"FSD50K.{part}_audio" / f"{f}.wav")
    read = run_adapter("fsd50k", str(tmp_path))
    rows = by_id(read.rows)
    assert rows["64760"]["labels"] == ["Accelerating_and_revving_and_vroom", "Vehicle"] and rows["64760"]["split"] == "train"
    assert rows["17"]["split"] == "val" and rows["37199"]["split"] == "test"
    assert rows["37199"]["identity"] == ["freesound:37199"] and "Meow" not in read.vocabulary
    (gt / "dev.csv").write_text("fname,labels,mids,split\n1,Bark,/m/05tny_,holdout\n")
    with pytest.raises(MetadataError, match=r"dev.csv, line 2, column 4: unknown split 'holdout'"):
        run_adapter("fsd50k", str(tmp_path))


def test_fma_two_level_header(tmp_path):
    meta = tmp_path / "fma_metadata" / "tracks.csv"
    meta.parent.mkdir(parents=True)
    meta.write_text(
        ",album,artist,set,set,track,track,track\n"
        ",title,name,split,subset,genre_top,genres_all,title\n"
        "track_id,,,,,,,\n"
        '2,AWOL - A Way Of Life,AWOL,training,small,Hip-Hop,[21],Food\n'
        '3,AWOL - A Way Of Life,AWOL,validation,medium,Hip-Hop,[21],Electric Ave\n'
        '5,AWOL - A Way Of Life,AWOL,test,small,,"[21, 76]",This World\n'
    )
    write_audio(tmp_path / "fma_small" / "000" / "000002.mp3".replace(".mp3", ".wav"))
    rows = by_id(run_adapter("fma", str(tmp_path)).rows)
    assert set(rows) == {"000002", "000005"}  # track 3 is not in the small subset
    r = rows["000002"]
    assert r["status"] == "ok" and r["labels"] == ["Hip-Hop"] and r["attrs"]["artist"] == "AWOL" and r["split"] == "train"
    assert rows["000005"]["reason"] == "no_label" and rows["000005"]["attrs"]["genres_all"] == "21,76"
    assert len(run_adapter("fma", str(tmp_path), {"size": "medium"}).rows) == 3
    meta.write_text(meta.read_text().replace("track_id,,,,,,,", "id,,,,,,,"))
    with pytest.raises(MetadataError, match=r"tracks.csv, line 3, column 1: expected the index-name row"):
        run_adapter("fma", str(tmp_path))


def test_macs_yaml(tmp_path):
    (tmp_path / "MACS.yaml").write_text(
        "files:\n- filename: airport-stockholm-12-488-a.wav\n  annotations:\n"
        "  - annotator_id: 354\n    sentence: ball game with the ball bouncing\n    tags: [adults talking, footsteps]\n"
        "  - annotator_id: 353\n    sentence: people walk\n    tags: [footsteps]\n"
    )
    write_audio(tmp_path / "TAU-urban-acoustic-scenes-2019-development" / "audio" / "airport-stockholm-12-488-a.wav")
    (r,) = run_adapter("macs", str(tmp_path)).rows
    assert r["status"] == "ok" and r["captions"] == ["ball game with the ball bouncing", "people walk"]
    assert r["labels"] == ["adults talking", "footsteps"] and r["attrs"]["scene"] == "airport" and r["attrs"]["city"] == "stockholm"
    (tmp_path / "MACS.yaml").write_text("files:\n- filename: [unclosed\n")
    with pytest.raises(MetadataError, match=r"MACS.yaml, line \d+, column \d+: invalid YAML"):
        run_adapter("macs", str(tmp_path))


def test_cochlscene_layout(tmp_path):
    write_audio(tmp_path / "CochlScene" / "Train" / "Bus" / "Bus_user0009_14897252_005.wav")
    write_audio(tmp_path / "CochlScene" / "Test" / "Cafe" / "Cafe_user0100_1_000.wav")
    write_audio(tmp_path / "CochlScene" / "Val" / "Beach" / "Beach_user0001_1_000.wav")
    read = run_adapter("cochlscene", str(tmp_path))
    rows = by_id(read.rows)
    assert rows["Train/Bus_user0009_14897252_005"]["attrs"] == {"scene": "Bus", "user": "0009", "recording": "14897252", "segment": "005"}
    assert rows["Test/Cafe_user0100_1_000"]["split"] == "test"
    assert rows["Val/Beach_user0001_1_000"]["reason"] == "unknown_label:Beach"


def test_msp_podcast_layout(tmp_path):
    (tmp_path / "Labels").mkdir()
    (tmp_path / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"
        "MSP-PODCAST_0001_0008.wav,N,2.2,4.0,2.6,30,Male,Test1\n"
        "MSP-PODCAST_0001_0009.wav,X,3.0,4.0,2.6,30,Male,Train\n"
        "MSP-PODCAST_0002_0001.wav,H,5.0,6.0,4.0,Unknown,Female,Development\n"
    )
    for n in ("MSP-PODCAST_0001_0008", "MSP-PODCAST_0001_0009"):
        write_audio(tmp_path / "Audios" / f"{n}.wav", sr=16000)
    rows = by_id(run_adapter("msp_podcast", str(tmp_path)).rows)
    a = rows["MSP-PODCAST_0001_0008"]
    assert a["status"] == "ok" and a["labels"] == ["neutral"] and a["split"] == "test" and a["attrs"]["arousal"] == "2.2"
    assert rows["MSP-PODCAST_0001_0009"]["reason"] == "unknown_label:X"
    assert rows["MSP-PODCAST_0002_0001"]["split"] == "val" and rows["MSP-PODCAST_0002_0001"]["reason"] == "missing_audio"
    csvp = tmp_path / "Labels" / "labels_consensus.csv"
    csvp.write_text(csvp.read_text().replace("Test1", "Test9"))
    with pytest.raises(MetadataError, match=r"line 2, column 8: unknown split 'Test9'"):
        run_adapter("msp_podcast", str(tmp_path))


def test_vocalsound_and_sesa(tmp_path):
    vs = tmp_path / "vs"
    (vs / "datafiles").mkdir(parents=True)
    (vs / "datafiles" / "te.json").write_text(json.dumps({"data": [
        {"wav": "/data/sls/vocalsound/audio_16k/f0003_0_cough.wav", "labels": "/m/01b_21"},
        {"wav": "/x/m0100_1_sigh.wav", "labels": "/m/01hsr_"},
    ]}))
    write_audio(vs / "audio_16k" / "f0003_0_cough.wav", sr=16000)
    write_audio(vs / "audio_16k" / "m0100_1_sigh.wav", sr=16000)
    rows = by_id(run_adapter("vocalsound", str(vs)).rows)
    assert rows["f0003_0_cough"]["status"] == "ok" and rows["f0003_0_cough"]["labels"] == ["cough"]
    assert rows["f0003_0_cough"]["split"] == "test" and rows["f0003_0_cough"]["attrs"]["gender"] == "female"
    assert rows["m0100_1_sigh"]["reason"].startswith("inconsistent_metadata")

    se = tmp_path / "sesa"
    write_audio(se / "train" / "casual_000.wav", sr=16000)
    write_audio(se / "test" / "gunshot_012.wav", sr=16000)
    write_audio(se / "test" / "music_001.wav", sr=16000)
    rows = by_id(run_adapter("sesa", str(se)).rows)
    assert rows["train/casual_000"]["labels"] == ["casual"] and rows["train/casual_000"]["split"] == "train"
    assert rows["test/gunshot_012"]["split"] == "test" and rows["test/music_001"]["reason"] == "unknown_label:music"


def test_beijing_opera_layout(tmp_path):
    write_audio(tmp_path / "daluo" / "205972__ajaysm__daluo.wav")
    write_audio(tmp_path / "bangu" / "222141__ajaysm__bangu-11.wav")
    write_audio(tmp_path / "bangu" / "1__ajaysm__daluo.wav")
    rows = by_id(run_adapter("beijing_opera", str(tmp_path)).rows)
    assert rows["205972__ajaysm__daluo"]["identity"] == ["freesound:205972"] and rows["205972__ajaysm__daluo"]["status"] == "ok"
    assert rows["222141__ajaysm__bangu-11"]["labels"] == ["bangu"]
    assert rows["1__ajaysm__daluo"]["reason"] == "bad_filename"
    assert 1 <= int(rows["205972__ajaysm__daluo"]["attrs"]["fold"]) <= 5


def test_every_adapter_output_fits_the_schema(tmp_path):
    """Adapters on an empty root either raise MetadataError or return schema-valid rows."""
    for name in sorted(ADAPTERS):
        try:
            read = run_adapter(name, str(tmp_path))
        except MetadataError as exc:
            assert str(tmp_path) in str(exc), name
            continue
        to_table(read.rows)


@needs_shared
def test_fold_options_make_a_split(esc50_root):
    rows = run_adapter("esc50", str(esc50_root), {"test_folds": "5", "val_folds": "4"}).rows
    split_of_fold = {(r["attrs"]["fold"], r["split"]) for r in rows}
    assert split_of_fold == {("1", "train"), ("2", "train"), ("3", "train"), ("4", "val"), ("5", "test")}
    with pytest.raises(ValueError, match="val_folds needs options.test_folds"):
        run_adapter("esc50", str(esc50_root), {"val_folds": "4"})


def test_listing_adapters_never_ignore_a_file(tmp_path):
    """Two files with one stem are two rows (same clip id: ingest quarantines one), not one."""
    write_audio(tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    write_audio(tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.flac")
    rows = run_adapter("crema_d", str(tmp_path)).rows
    assert [r["clip_id"] for r in rows] == ["1001_DFA_ANG_XX"] * 2
    assert {r["audio_uri"].rsplit(".", 1)[1] for r in rows} == {"wav", "flac"}
