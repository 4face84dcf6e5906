"""Leakage control: planted overlaps are found; the real ESC-50 / US8K / WavCaps overlaps too."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest

from pengi.leakage import check_leakage, check_manifests, read_wavcaps_blacklist, split_by_role
from pengi.manifest import read_manifest_frame, write_manifest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATASETS = SHARED / "datasets"
BLACKLISTS = DATASETS / "wavcaps" / "json_files" / "blacklist"


def row(source: str, clip_id: str, split: str = "train", identity=(), **kw) -> dict:
    return {"source": source, "clip_id": clip_id, "split": split, "audio_uri": f"/a/{clip_id}.wav",
            "labels": ["x"], "identity": list(identity), **kw}  # fmt: skip


def frame(tmp_path: Path, rows: list[dict], name: str) -> pl.DataFrame:
    write_manifest(rows, tmp_path / f"{name}.parquet")
    return read_manifest_frame(tmp_path / f"{name}.parquet")


@pytest.fixture()
def planted(tmp_path):
    """Two training sources and two eval sources with known overlaps."""
    fsd = frame(
        tmp_path,
        [
            row("fsd50k", "f1", identity=["freesound:100"]),  # in esc50
            row("fsd50k", "f2", identity=["freesound:200"]),  # in esc50 and us8k
            row("fsd50k", "f3", identity=["freesound:300"]),
            row("fsd50k", "f4", "val", identity=["freesound:400"]),  # val rows count as training: in us8k
            row("fsd50k", "f5"),  # no identity: unchecked
            row("fsd50k", "f6", identity=["freesound:100"], status="quarantined", reason="x"),  # never trained
        ],
        "fsd50k",
    )
    audiocaps = frame(
        tmp_path,
        [
            row("audiocaps", "a1", identity=["youtube:AAAAAAAAAAA@30"]),  # same video as a DCASE clip at 0 s
            row("audiocaps", "a2", identity=["youtube:BBBBBBBBBBB@10"]),
            row("audiocaps", "a3", "test", identity=["youtube:CCCCCCCCCCC@0"]),  # test rows are not training
            row("audiocaps", "a4", identity=["bbc:NHU0512345"]),  # BBC ids compare case-insensitively
        ],
        "audiocaps",
    )
    esc = frame(tmp_path, [row("esc50", "e1", "test", ["freesound:100"]), row("esc50", "e2", "test", ["freesound:200"]),
                           row("esc50", "e3", "test", ["freesound:999"])], "esc50")  # fmt: skip
    us8k = frame(tmp_path, [row("urbansound8k", "u1", "test", ["freesound:200"]), row("urbansound8k", "u2", "test", ["freesound:400"]),
                            row("urbansound8k", "u3", "test", ["bbc:nhu0512345"])], "urbansound8k")  # fmt: skip
    dcase = frame(tmp_path, [row("dcase2017_task4", "d1", "test", ["youtube:AAAAAAAAAAA@0"]),
                             row("dcase2017_task4", "d2", "test", ["youtube:CCCCCCCCCCC@0"])], "dcase2017_task4")  # fmt: skip
    manifests = {"fsd50k": fsd, "audiocaps": audiocaps, "esc50": esc, "urbansound8k": us8k, "dcase2017_task4": dcase}
    roles = {"fsd50k": "train", "audiocaps": "both", "esc50": "eval", "urbansound8k": "eval", "dcase2017_task4": "eval"}
    return manifests, roles


def _pair(result, train, eval_):
    (p,) = [p for p in result.pairs if p["train"] == train and p["eval"] == eval_]
    return p


def test_planted_overlaps_are_found_per_pair(planted):
    manifests, roles = planted
    train, evals = split_by_role(manifests, roles)
    assert set(train) == {"fsd50k", "audiocaps"} and set(evals) == {"audiocaps", "esc50", "urbansound8k", "dcase2017_task4"}
    res = check_leakage(train, evals)
    p = _pair(res, "fsd50k", "esc50")
    assert (p["train_rows"], p["eval_rows"], p["shared_keys"]) == (2, 2, 2)
    assert _pair(res, "fsd50k", "urbansound8k")["train_rows"] == 2  # f2 and the val row f4
    assert _pair(res, "audiocaps", "dcase2017_task4")["train_rows"] == 1  # same video, other segment
    assert _pair(res, "audiocaps", "dcase2017_task4")["examples"] == ["youtube:AAAAAAAAAAA"]
    assert _pair(res, "audiocaps", "audiocaps")["train_rows"] == 0  # a3 (test) shares no key with train rows
    assert _pair(res, "audiocaps", "urbansound8k")["train_rows"] == 1  # the BBC key
    assert len(res.pairs) == 2 * 4  # every pair is reported, zeros included
    excluded = set(res.excluded.iter_rows())
    assert excluded == {("fsd50k", "f1"), ("fsd50k", "f2"), ("fsd50k", "f4"), ("audiocaps", "a1"), ("audiocaps", "a4")}
    assert res.unchecked == {"audiocaps": 0, "fsd50k": 1}
    assert res.to_dict()["excluded_per_source"] == {"audiocaps": 2, "fsd50k": 3}


def test_overlap_between_splits_of_one_source(tmp_path):
    df = frame(tmp_path, [row("clotho", "c1", identity=["freesound:5"]), row("clotho", "c2", "test", identity=["freesound:5"])], "c")
    res = check_manifests({"clotho": df}, {"clotho": "both"})
    assert _pair(res, "clotho", "clotho")["train_rows"] == 1
    assert set(res.excluded.iter_rows()) == {("clotho", "c1")}


def test_reporting_only_when_exclusion_is_off(planted):
    manifests, roles = planted
    res = check_manifests(manifests, roles, exclude=False)
    assert res.excluded.height == 0
    assert _pair(res, "fsd50k", "esc50")["train_rows"] == 2


def test_wavcaps_blacklist_native_format(tmp_path, planted):
    manifests, roles = planted
    path = tmp_path / "blacklist.json"
    path.write_text(json.dumps({"AudioSet": ["YBBBBBBBBBBB.wav", "Y-x_yz123456.wav", "garbage"], "FreeSound": ["300", "7"]}))
    keys, info = read_wavcaps_blacklist(str(path))
    assert set(keys.get_column("key")) == {"youtube:BBBBBBBBBBB", "youtube:-x_yz123456", "freesound:300", "freesound:7"}
    assert info["lists"]["AudioSet"] == {"entries": 3, "keys": 2, "unparsed": 1}
    res = check_manifests(manifests, roles, [str(path)])
    hits = {b["train"]: b["train_rows"] for b in res.blacklists}
    assert hits == {"audiocaps": 1, "fsd50k": 1}
    assert {("fsd50k", "f3"), ("audiocaps", "a2")} <= set(res.excluded.iter_rows())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Clotho": ["1"]}))
    with pytest.raises(ValueError, match="unknown blacklist list"):
        read_wavcaps_blacklist(str(bad))
    with pytest.raises(FileNotFoundError):
        check_manifests(manifests, roles, [str(tmp_path / "missing.json")])


# --------------------------------------------------------------------------------------------
# Real metadata from shared/datasets
# --------------------------------------------------------------------------------------------

needs_shared = pytest.mark.skipif(not (DATASETS / "esc50" / "meta" / "esc50.csv").exists(), reason="shared/datasets is absent")


def _csv_manifest(tmp_path, source: str, path: Path, name_col: str, id_col: str, label_col: str) -> pl.DataFrame:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [row(source, r[name_col], "test", [f"freesound:{int(r[id_col])}"], labels=[r[label_col]]) for r in csv.DictReader(fh)]
    return frame(tmp_path, rows, source)


@needs_shared
def test_real_esc50_urbansound8k_and_wavcaps_blacklist(tmp_path):
    esc = _csv_manifest(tmp_path, "esc50", DATASETS / "esc50/meta/esc50.csv", "filename", "src_file", "category")
    us8k = _csv_manifest(tmp_path, "urbansound8k", DATASETS / "urbansound8k/metadata/UrbanSound8K.csv", "slice_file_name", "fsID", "class")
    esc_ids = set(esc.get_column("identity").explode())
    us8k_ids = set(us8k.get_column("identity").explode())
    # Pretend ESC-50 were a training source to check it against US8K as an evaluation set.
    res = check_leakage({"esc50": esc.with_columns(split=pl.lit("train"))}, {"urbansound8k": us8k})
    pair = _pair(res, "esc50", "urbansound8k")
    assert pair["shared_keys"] == len(esc_ids & us8k_ids) == 94  # shared/datasets/README.md
    assert pair["train_rows"] == esc.filter(pl.col("identity").list.first().is_in(list(us8k_ids))).height

    keys, info = read_wavcaps_blacklist(str(BLACKLISTS / "blacklist_exclude_ub8k_esc50_vggsound.json"))
    blk = set(keys.get_column("key"))
    assert info["lists"]["FreeSound"]["unparsed"] == 0
    # The whole (untruncated) file reproduces the README's numbers: 1,247/1,524 and 1,050/1,297.
    assert (len(esc_ids), len(esc_ids & blk)) == (1524, 1247)
    assert (len(us8k_ids), len(us8k_ids & blk)) == (1297, 1050)
    res = check_leakage({"esc50": esc.with_columns(split=pl.lit("train")), "urbansound8k": us8k.with_columns(split=pl.lit("train"))},
                        {}, [("ub8k", keys)])  # fmt: skip
    hits = {b["train"]: b["keys"] for b in res.blacklists}
    assert hits == {"esc50": 1247, "urbansound8k": 1050}
    # Every ESC-50 crop of a blacklisted Freesound clip is excluded (several takes per source id).
    assert res.excluded.filter(pl.col("source") == "esc50").height == esc.filter(
        pl.col("identity").list.first().is_in(list(blk))
    ).height


@needs_shared
def test_real_truncated_blacklist_yields_only_its_first_entries():
    # blacklist_exclude_all_ac.json was cut to the first 300 entries per list (wavcaps/SOURCE.md),
    # so it can only ever match a 300-id subset: the reader must take exactly those.
    keys, info = read_wavcaps_blacklist(str(BLACKLISTS / "blacklist_exclude_all_ac.json"))
    assert info["lists"]["FreeSound"] == {"entries": 300, "keys": 300, "unparsed": 0}
    assert info["lists"]["AudioSet"]["keys"] == 300
    raw = json.loads((BLACKLISTS / "blacklist_exclude_all_ac.json").read_text())
    assert set(keys.get_column("key")) == {f"freesound:{i}" for i in raw["FreeSound"]} | {
        f"youtube:{a[1:-4]}" for a in raw["AudioSet"]
    }
