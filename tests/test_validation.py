"""The Great Expectations data gate: clean data passes; each planted defect fails it."""

from __future__ import annotations

import json

import pytest

from pengi.cli import main
from pengi.config import DataConfig, SourceConfig
from pengi.manifest import write_manifest
from pengi.validation import validate_manifests


def row(source: str, clip_id: str, split: str = "train", **kw) -> dict:
    return {
        "source": source, "clip_id": clip_id, "split": split, "audio_uri": f"/a/{clip_id}.wav",
        "duration_s": 5.0, "sample_rate": 44100, "channels": 1, **kw,
    }  # fmt: skip


def clean_rows() -> dict[str, list[dict]]:
    clotho = [row("clotho", f"c{i}", "train" if i < 8 else "test", captions=[f"a dog barks {i}"], identity=[f"freesound:{i}"]) for i in range(10)]
    clotho.append(row("clotho", "bad", captions=["x"], status="quarantined", reason="undecodable:truncated", duration_s=None))
    esc = [row("esc50", f"e{i}", "test", labels=["dog" if i % 2 else "chirping_birds"], attrs={"fold": "1"}) for i in range(6)]
    return {"clotho": clotho, "esc50": esc}


def setup(tmp_path, rows: dict[str, list[dict]], **data_kw):
    mdir = tmp_path / "manifests"
    for name, rs in rows.items():
        write_manifest(rs, mdir / f"{name}.parquet")
    roles = {"clotho": "both", "esc50": "eval"}
    cfg = DataConfig(sources=tuple(SourceConfig(name=n, root="x", role=roles.get(n, "train")) for n in rows), **data_kw)
    return mdir, cfg


def failures(report) -> set[tuple[str, str]]:
    return {(f["suite"], f["expectation"]) for f in report["failed_expectations"]}


@pytest.fixture(scope="module")
def clean_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clean")
    mdir, cfg = setup(tmp, clean_rows(), max_quarantine_rate=0.1)
    (mdir / "clotho.report.json").write_text(json.dumps({"rows_read": 11, "kept": 10, "quarantined": 1}))
    return validate_manifests(mdir, cfg, tmp / "docs"), tmp


def test_clean_manifests_pass_and_docs_are_written(clean_report):
    report, tmp = clean_report
    assert report["passed"], report["failed_expectations"]
    src = report["sources"]["clotho"]
    assert (src["rows"], src["ok"], src["quarantined"]) == (11, 10, 1)
    assert src["quarantine_reasons"] == {"undecodable": 1}
    assert src["ingest_report"] == "consistent"
    assert report["eval_tasks"]["esc50"]["success"] and report["warnings"] == []
    assert set(report["suites"]) >= {"clotho.rows", "clotho.ok_rows", "esc50.rows", "sources.summary", "esc50.references", "clotho_captioning.references"}
    assert (tmp / "docs" / "index.html").exists()
    assert any((tmp / "docs" / "validations").rglob("*.html"))


def test_quarantine_rate_threshold_from_params(tmp_path):
    mdir, cfg = setup(tmp_path, clean_rows(), max_quarantine_rate=0.05)  # clotho: 1/11 = 9%
    report = validate_manifests(mdir, cfg, tmp_path / "docs")
    assert not report["passed"]
    (f,) = [f for f in report["failed_expectations"] if f["expectation"] == "expect_column_values_to_be_between"]
    assert f["suite"] == "sources.summary" and f["kwargs"]["column"] == "quarantine_rate"


DEFECTS = {
    # defect -> (suite kind, expectation) it must fail; planted in a source of its own
    "duration": ("ok_rows", "expect_column_values_to_be_between"),
    "blank_caption": ("ok_rows", "expect_column_values_to_be_between"),
    "no_annotation": ("ok_rows", "expect_column_values_to_be_between"),
    "no_sample_rate": ("ok_rows", "expect_column_values_to_not_be_null"),
    "duplicate": ("rows", "expect_column_values_to_be_unique"),
    "split": ("rows", "expect_column_values_to_be_in_set"),
    "identity": ("rows", "expect_column_values_to_be_between"),
    "no_reason": ("rows", "expect_column_values_to_not_be_null"),
}


def _plant(defect: str, rows: list[dict]) -> None:
    r = rows[0]
    if defect == "duration":
        r["duration_s"] = 99999.0
    elif defect == "blank_caption":
        r["captions"] = ["a dog", "  "]
    elif defect == "no_annotation":
        r["captions"] = []
    elif defect == "no_sample_rate":
        r["sample_rate"] = None
    elif defect == "duplicate":
        rows[1]["clip_id"] = r["clip_id"]
    elif defect == "split":
        r["split"] = "dev"
    elif defect == "identity":
        r["identity"] = ["12345"]  # no namespace
    elif defect == "no_reason":
        rows[-1]["reason"] = None


def test_each_planted_defect_fails_the_gate_in_its_own_source(tmp_path):
    rows = clean_rows()
    for defect in DEFECTS:
        rs = [{**r, "source": defect, "clip_id": f"{defect}-{r['clip_id']}"} for r in clean_rows()["clotho"]]
        _plant(defect, rs)
        rows[defect] = rs
    rows["esc50"][0]["labels"] = ["dgo"]  # not an ESC-50 class
    rows["empty_train"] = [{**r, "source": "empty_train", "split": "test"} for r in clean_rows()["clotho"]]
    mdir, cfg = setup(tmp_path, rows, max_quarantine_rate=0.5)
    report = validate_manifests(mdir, cfg, tmp_path / "docs")
    assert not report["passed"]
    found = failures(report)
    for defect, (kind, expectation) in DEFECTS.items():
        assert (f"{defect}.{kind}", expectation) in found, defect
    assert not any(suite.startswith("clotho.") for suite, _ in found)  # the clean source passes
    # An unofficial class name is a warning, reported with the item, not a gate failure.
    assert not any(f["suite"] == "esc50.references" for f in report["failed_expectations"])
    (vocab,) = [f for f in report["warnings"] if f["suite"] == "esc50.references"]
    assert vocab["examples"] == ["dgo"] and vocab["example_ids"] == ["e0"] and vocab["severity"] == "warning"
    (split,) = [f for f in report["failed_expectations"] if f["suite"] == "sources.summary"]
    assert split["kwargs"]["column"] == "train_rows" and split["example_ids"] == ["empty_train"]
    (dur,) = [f for f in report["failed_expectations"] if f["suite"] == "duration.ok_rows"]
    assert dur["example_ids"] == ["duration-c0"]


def test_missing_manifest_and_inconsistent_ingest_report(tmp_path):
    mdir, cfg = setup(tmp_path, clean_rows(), max_quarantine_rate=0.5)
    (mdir / "clotho.report.json").write_text(json.dumps({"rows_read": 12, "kept": 10, "quarantined": 1}))  # a row vanished
    cfg = DataConfig(sources=(*cfg.sources, SourceConfig(name="ravdess", root="x", role="eval")), max_quarantine_rate=0.5)
    report = validate_manifests(mdir, cfg, tmp_path / "docs")
    assert ("ravdess.rows", "manifest_exists") in failures(report)
    assert report["sources"]["clotho"]["ingest_report"] == "inconsistent"
    assert ("sources.summary", "expect_column_values_to_be_in_set") in failures(report)


def test_command_exit_status_follows_the_gate(tmp_path, capsys):
    mdir, _ = setup(tmp_path, clean_rows())
    params = tmp_path / "params.yaml"
    src = "  sources:\n    - {name: clotho, root: x, role: both}\n    - {name: esc50, root: y, role: eval}\n"
    args = ["validate", "--params", str(params), "--manifests", str(mdir), "--report", str(tmp_path / "v.json"), "--docs", str(tmp_path / "docs")]
    params.write_text(f"data:\n{src}  max_quarantine_rate: 0.2\n", encoding="utf-8")
    assert main(args) == 0
    assert json.loads((tmp_path / "v.json").read_text())["passed"] is True
    params.write_text(f"data:\n{src}  max_quarantine_rate: 0.01\n", encoding="utf-8")
    assert main(args) == 1
    assert "data gate FAILED" in capsys.readouterr().err
    assert json.loads((tmp_path / "v.json").read_text())["passed"] is False
