"""pengi.tracking: runs logged through Tracker and read back from a real `mlflow server`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import free_port, stop_process, wait_http
from pengi.config import Config, TrackingConfig, flatten
from pengi.telemetry import subprocess_env
from pengi.tracking import PIPELINE_RUN_ENV, Tracker, dvc_dep_hashes, find_repo_root, tracking_uri


@pytest.fixture()
def repo(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "repo"
    (root / ".dvc").mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PIPELINE_RUN_ENV, raising=False)
    return root


def test_disabled_tracker_does_nothing(repo):
    with Tracker(TrackingConfig(enabled=False), stage="train-pengi", params={"a": 1}) as tr:
        tr.log_metrics({"loss": 1.0}, step=1)
        tr.log_artifact(repo / "missing.txt")
        tr.set_tag("k", "v")
        assert tr.run_id is None
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()


def test_disabled_tracker_never_imports_mlflow(tmp_path):
    code = (
        "import sys; from pengi.config import Config, TrackingConfig, flatten; from pengi.tracking import Tracker\n"
        "with Tracker(TrackingConfig(enabled=False), stage='x') as t: t.log_metrics({'a': 1.0})\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=60, env=subprocess_env())


def test_default_uri_is_sqlite_in_repo(repo, monkeypatch):
    assert tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"
    sub = repo / "data" / "x"
    sub.mkdir(parents=True)
    assert find_repo_root(sub) == repo
    # a DVC temp experiment workspace logs into the real repository
    exp = repo / ".dvc" / "tmp" / "exps" / "tmpab12" / "data"
    exp.mkdir(parents=True)
    (exp.parent / "dvc.yaml").write_text("stages: {}\n")
    assert find_repo_root(exp) == repo
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


HASH_STEP = """
import json, sys
from pengi.tracking import dvc_dep_hashes
stage, out = sys.argv[1:]
tags = dvc_dep_hashes(stage)  # while dvc repro runs the stage, as a Tracker does
open(out, "w").write(json.dumps(tags))
"""


def test_dep_hashes_during_repro_equal_the_lock(tmp_path, monkeypatch):
    root = tmp_path / "p"
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "x.bin").write_bytes(os.urandom(3000))
    (root / "src" / "sub" / "y.txt").write_text("line\r\nwindows line\n")
    (root / "one.txt").write_text("one\n")
    (root / "params.yaml").write_text("lr: 0.1\n")
    (root / "step.py").write_text(HASH_STEP)
    py = sys.executable
    pipeline = {
        "stages": {
            "ingest": {
                "foreach": ["one"],
                "do": {"cmd": f"{py} step.py ingest@${{item}} ${{item}}.tags.json", "deps": ["${item}.txt", "step.py"],
                       "outs": [{"${item}.tags.json": {"cache": False}}]},
            },
            "train": {"cmd": f"{py} step.py train train.tags.json", "deps": ["src", "step.py", "one.tags.json"],
                      "params": ["lr"], "outs": [{"train.tags.json": {"cache": False}}]},
        }
    }  # fmt: skip
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    env = subprocess_env()
    for args in (["init", "--no-scm", "-q"], ["repro"]):
        proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, timeout=180, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for stage, tags_file in (("ingest@one", "one.tags.json"), ("train", "train.tags.json")):
        expected = {f"dvc.dep.{d['path']}": d["md5"] for d in lock[stage]["deps"]}
        assert json.loads((root / tags_file).read_text()) == expected
    assert json.loads((root / "train.tags.json").read_text())["dvc.dep.src"].endswith(".dir")

    monkeypatch.chdir(root)
    assert dvc_dep_hashes("no-such-stage") == {}
    before = dvc_dep_hashes("train")["dvc.dep.src"]
    (root / "src" / "x.bin").write_bytes(os.urandom(3000))  # same size, new content
    assert dvc_dep_hashes("train")["dvc.dep.src"] != before


def test_sqlite_default_logs_run(repo, monkeypatch):
    monkeypatch.setenv(PIPELINE_RUN_ENV, "flow-123")
    art = repo / "report.json"
    art.write_text('{"acc": 0.5}')
    params = flatten(Config())  # the whole config, as the stages log it
    with Tracker(TrackingConfig(experiment="local"), stage="evaluate", params=params) as tr:
        tr.log_metrics({"acc": 0.5}, step=0)
        tr.log_artifact(art)
    assert (repo / "mlflow.db").exists()
    assert (repo / "mlartifacts").is_dir() and list((repo / "mlartifacts").rglob("report.json"))

    from mlflow.tracking import MlflowClient  # reading back only; the library never does this

    client = MlflowClient(tracking_uri())
    run = client.get_run(tr.run_id)
    assert run.data.params["evaluate.beam_size"] == str(Config().evaluate.beam_size)
    assert set(run.data.params) == set(params)
    assert run.data.params["model.htsat.depths"] == json.dumps(list(Config().model.htsat.depths))
    assert run.data.metrics == {"acc": 0.5}
    assert run.data.tags["pengi.pipeline_run_id"] == "flow-123"
    assert run.info.status == "FINISHED"


# --------------------------------------------------------------------------------------------
# a real MLflow server
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = subprocess_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"), "--workers", "1",
    ]  # fmt: skip
    log_path = root / "server.log"
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=90, proc=proc)
        yield url
    except Exception:
        print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
    finally:
        stop_process(proc, grace=10)


def _api(url: str, endpoint: str, body: dict | None = None, **query) -> dict:
    full = f"{url}/api/2.0/mlflow/{endpoint}"
    if query:
        full += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(full, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.mark.network
def test_runs_read_back_through_rest_api(mlflow_server, repo, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv(PIPELINE_RUN_ENV, "pipeline-42")
    ckpt = repo / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"d_proj": 8}')
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 64)

    cfg = TrackingConfig(experiment="pengi-test")
    params = {"train_pengi.lr": 1e-4, "model.htsat.depths": (2, 2)}
    with Tracker(cfg, stage="train-pengi", params=params, tags={"pengi.scale": "tiny"}) as tr:
        for step in range(3):
            tr.log_metrics({"loss": 3.0 - step, "lr": 1e-4}, step=step)
        tr.log_artifact(ckpt, artifact_path="checkpoint")
        tr.set_tag("pengi.checkpoint", str(ckpt))
    with pytest.raises(RuntimeError):
        with Tracker(cfg, stage="evaluate") as failed:
            raise RuntimeError("boom")

    exp = _api(mlflow_server, "experiments/get-by-name", experiment_name="pengi-test")["experiment"]
    runs = _api(mlflow_server, "runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
    by_id = {r["info"]["run_id"]: r for r in runs}
    assert set(by_id) == {tr.run_id, failed.run_id}

    run = by_id[tr.run_id]
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "train-pengi"
    params_back = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params_back == {"train_pengi.lr": "0.0001", "model.htsat.depths": "[2, 2]"}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["pengi.stage"] == "train-pengi"
    assert tags["pengi.pipeline_run_id"] == "pipeline-42"
    assert tags["pengi.scale"] == "tiny" and tags["pengi.checkpoint"] == str(ckpt)
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]}["loss"] == 1.0  # the latest step

    history = _api(mlflow_server, "metrics/get-history", run_id=tr.run_id, metric_key="loss")["metrics"]
    assert [(m["step"], m["value"]) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.0)]
    files = _api(mlflow_server, "artifacts/list", run_id=tr.run_id, path="checkpoint").get("files", [])
    assert sorted(Path(f["path"]).name for f in files) == ["config.json", "model.safetensors"]

    assert by_id[failed.run_id]["info"]["status"] == "FAILED"
    # Two runs of the same experiment compare by their params and metrics: search can filter them.
    found = _api(
        mlflow_server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "filter": "tags.`pengi.stage` = 'train-pengi'"}
    )["runs"]
    assert [r["info"]["run_id"] for r in found] == [tr.run_id]
