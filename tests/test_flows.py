"""The ``train-pengi`` Prefect flow on a toy DVC project whose stages are tiny Python scripts.

The toy has the real pipeline's shape (one ``ingest@<source>`` stage per source, a validation
gate with a JSON report, training, evaluation with a JSON table), so the flow's planning,
retries, artifacts and ``dvc push`` are exercised without the ML. The last test runs a real
deployment through a real Prefect server and process worker.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, free_port, stop_process, wait_http
from pengi import storage
from pengi.telemetry import subprocess_env

STEP = r'''
"""A toy stage: log the call, fail while fail/<stage> holds a positive count, write the output."""
import json, os, pathlib, sys
name, out, *inputs = sys.argv[1:]
with open("calls.log", "a") as fh:
    fh.write(name + "\n")
with open("run_ids.log", "a") as fh:
    fh.write(os.environ.get("PENGI_PIPELINE_RUN_ID", "-") + "\n")
fail = pathlib.Path("fail", name)
if fail.exists() and int(fail.read_text()) > 0:
    fail.write_text(str(int(fail.read_text()) - 1))
    sys.exit(f"injected failure of {name}")
text = "".join(pathlib.Path(i).read_text() for i in inputs)
out = pathlib.Path(out)
out.parent.mkdir(parents=True, exist_ok=True)
if name == "validate":
    report = {pathlib.Path(i).stem: {"rows": len(pathlib.Path(i).read_text().splitlines()), "quarantined": 0}
              for i in inputs}
    out.write_text(json.dumps(report))
elif name == "evaluate":
    out.write_text(json.dumps({"esc50": {"metric": "accuracy", "value": len(text) / 100},
                               "clotho": {"metric": "spider", "value": 0.25}}))
else:
    out.write_text(text + name + "\n")
'''


def _load_flow_module():
    spec = importlib.util.spec_from_file_location("pengi_flow_train_pengi", REPO / "flows" / "train_pengi.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


flows_mod = _load_flow_module()


def _dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=subprocess_env(), capture_output=True, text=True, timeout=180
    )
    if check:
        assert proc.returncode == 0, f"dvc {args}: {proc.stdout}\n{proc.stderr}"
    return proc


def make_toy(root: Path) -> Path:
    """A git + DVC repo with the pipeline's shape; stages are ``python step.py <name> <out> <ins>``."""
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc(root, "init", "-q")
    _dvc(root, "config", "core.analytics", "false")
    (root / "step.py").write_text(STEP)
    (root / "src").mkdir()
    (root / "src" / "alpha.txt").write_text("a dog barks\n")
    (root / "src" / "beta.txt").write_text("rain on a roof\nwind\n")
    py = f"{sys.executable} step.py"
    pipeline = {
        "vars": [{"sources": ["alpha", "beta"]}],
        "stages": {
            "ingest": {
                "foreach": "${sources}",
                "do": {
                    "cmd": py + " ingest@${item} data/${item}.txt src/${item}.txt",
                    "deps": ["step.py", "src/${item}.txt"],
                    "outs": ["data/${item}.txt"],
                },
            },
            "validate": {
                "cmd": py + " validate reports/validation.json data/alpha.txt data/beta.txt",
                "deps": ["data/alpha.txt", "data/beta.txt"],
                "metrics": [{"reports/validation.json": {"cache": False}}],
            },
            "train-pengi": {
                "cmd": py + " train-pengi models/model.txt data/alpha.txt data/beta.txt reports/validation.json",
                "deps": ["data/alpha.txt", "data/beta.txt", "reports/validation.json"],
                "outs": ["models/model.txt"],
            },
            "evaluate": {
                "cmd": py + " evaluate reports/eval.json models/model.txt",
                "deps": ["models/model.txt"],
                "metrics": [{"reports/eval.json": {"cache": False}}],
            },
        },
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (root / ".gitignore").write_text("calls.log\nrun_ids.log\nfail/\n")
    return root


@pytest.fixture()
def toy(tmp_path) -> Path:
    return make_toy(tmp_path / "toy")


def calls(repo: Path) -> list[str]:
    log = repo / "calls.log"
    return log.read_text().split() if log.exists() else []


ALL = ["ingest@alpha", "ingest@beta", "validate", "train-pengi", "evaluate"]


# --------------------------------------------------------------------------------------------
# planning and reports (no Prefect server)
# --------------------------------------------------------------------------------------------


def test_plan_follows_the_dvc_dag(toy):
    plans = flows_mod.plan_stages(toy)
    assert [p.name for p in plans] == ALL
    by_name = {p.name: p for p in plans}
    assert by_name["validate"].upstream == ("ingest@alpha", "ingest@beta")
    assert by_name["validate"].json_outputs == ("reports/validation.json",)
    assert by_name["ingest@beta"].base == "ingest"
    assert [p.name for p in flows_mod.plan_stages(toy, ["validate"])] == ALL[:3]
    assert [p.name for p in flows_mod.plan_stages(toy, ["ingest"])] == ALL[:2]
    with pytest.raises(ValueError, match="no-such-stage"):
        flows_mod.plan_stages(toy, ["no-such-stage"])
    with pytest.raises(FileNotFoundError, match="no dvc.yaml"):
        flows_mod.plan_stages(toy / "src")


def test_retry_policy_io_yes_training_no():
    assert flows_mod.retries_for("ingest@clotho") > 0
    assert flows_mod.retries_for("audio-store") > 0
    for stage in ("train-clap", "train-pengi", "evaluate", "validate"):
        assert flows_mod.retries_for(stage) == 0


def test_report_rendering():
    rows = flows_mod.report_rows({"esc50": {"metric": "acc", "value": 0.5, "n": {"clips": 3}}})
    assert rows == [{"name": "esc50", "metric": "acc", "value": 0.5, "n.clips": 3}]
    assert flows_mod.report_rows({"passed": True, "rows": {"in": 3}, "x": [1, 2]}) == [
        {"metric": "passed", "value": True},
        {"metric": "rows.in", "value": 3},
        {"metric": "x", "value": "1, 2"},
    ]
    assert flows_mod.report_rows([{"a": 1}, 2]) == [{"a": 1}, {"value": 2}]
    md = flows_mod.report_markdown("Validation", {"alpha": {"rows": 1}, "beta": {"rows": 2, "bad": "x|y"}})
    assert md.splitlines()[2:] == ["| name | rows | bad |", "|---|---|---|", "| alpha | 1 |  |", "| beta | 2 | x\\|y |"]


# --------------------------------------------------------------------------------------------
# flow runs against a temporary Prefect server (prefect_test_harness)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def fast_retries(monkeypatch):
    monkeypatch.setattr(flows_mod, "RETRY_DELAYS_S", [0, 0, 0])


def _artifacts(keys: list[str]) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    return {a.key: a for a in found}


@pytest.mark.network
def test_flow_runs_stages_publishes_reports_and_pushes_to_s3(harness, toy, s3_bucket, s3_env):
    _dvc(toy, "remote", "add", "-d", "store", f"s3://{s3_bucket}/dvc")
    _dvc(toy, "remote", "modify", "store", "endpointurl", s3_env.endpoint)

    state = flows_mod.train_pengi(repo=str(toy), return_state=True)
    result = state.result()
    assert result["stages"] == ALL and result["pushed"] is True
    assert calls(toy) == ALL  # each stage once, in DAG order
    # every stage saw the flow run's id (what pengi.tracking tags MLflow runs with)
    assert set((toy / "run_ids.log").read_text().split()) == {str(state.state_details.flow_run_id)}
    assert "up to date" in _dvc(toy, "status").stdout
    assert "in sync" in _dvc(toy, "status", "--cloud").stdout.lower()
    assert storage.list_files(f"s3://{s3_bucket}/dvc")  # the cache really went to S3

    arts = _artifacts(result["artifacts"])
    assert set(result["artifacts"]) == {"validate-validation", "evaluate-eval"} == set(arts)
    assert arts["validate-validation"].type == "markdown" and "| alpha | 2 | 0 |" in arts["validate-validation"].data
    assert arts["evaluate-eval"].type == "table"
    table = arts["evaluate-eval"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert {r["name"] for r in table} == {"esc50", "clotho"}

    # A second run finds everything up to date: DVC skips every stage.
    flows_mod.train_pengi(repo=str(toy))
    assert calls(toy) == ALL


@pytest.mark.network
def test_ingest_is_retried_training_is_not(harness, toy, fast_retries):
    (toy / "fail").mkdir()
    (toy / "fail" / "ingest@alpha").write_text("2")  # two transient failures, then success
    (toy / "fail" / "train-pengi").write_text("1")  # one failure: must not be retried
    state = flows_mod.train_pengi(repo=str(toy), return_state=True)
    assert state.is_failed()
    assert calls(toy) == ["ingest@alpha"] * 3 + ["ingest@beta", "validate", "train-pengi"]
    assert not (toy / "reports" / "eval.json").exists()

    # After the fault is gone a rerun resumes: only the failed stage and what follows run.
    result = flows_mod.train_pengi(repo=str(toy))
    assert result["pushed"] is False  # no remote configured
    assert calls(toy)[6:] == ["train-pengi", "evaluate"]


# --------------------------------------------------------------------------------------------
# a real deployment: server + process work pool + worker
# --------------------------------------------------------------------------------------------


def _prefect(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _run_deployment(repo: Path, tmp_path: Path, watch_timeout: int) -> str:
    """Start a real Prefect server and process worker, deploy ``repo``'s prefect.yaml, run
    ``train-pengi/local`` to completion and return the CLI output."""
    port = free_port()
    home = tmp_path / "prefect-home"
    env = subprocess_env(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PENGI_REPO_DIR": str(repo),
        }
    )
    env.pop("PREFECT_PROFILES_PATH", None)
    procs: list[subprocess.Popen] = []
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("server", "worker")}
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=logs["server"], stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(server)
        wait_http(f"http://127.0.0.1:{port}/api/health", timeout=120, proc=server)

        _prefect(["work-pool", "create", "local-pool", "--type", "process"], env, repo)
        _prefect(["--no-prompt", "deploy", "--all"], env, repo)
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "local-pool", "--limit", "1"],
            cwd=tmp_path, env=env, stdout=logs["worker"], stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(worker)
        out = _prefect(
            ["deployment", "run", "train-pengi/local", "--watch", "--watch-timeout", str(watch_timeout)],
            env, repo, watch_timeout + 30,
        )  # fmt: skip
        assert "Completed" in out, out
        return out
    except BaseException:
        for name, fh in logs.items():
            fh.flush()
            print(f"--- {name} log ---\n" + (tmp_path / f"{name}.log").read_text(errors="replace")[-6000:], file=sys.stderr)
        raise
    finally:
        for proc in reversed(procs):
            stop_process(proc, grace=10)  # SIGINT, then SIGKILL: workers ignore SIGTERM for a while
        for fh in logs.values():
            fh.close()


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.timeout(480)
def test_real_deployment_run(tmp_path):
    toy = make_toy(tmp_path / "toy")
    # The deployment runs the repository's own flow file and prefect.yaml, as in a clone.
    shutil.copytree(REPO / "flows", toy / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "prefect.yaml", toy / "prefect.yaml")
    _run_deployment(toy, tmp_path, watch_timeout=300)
    assert calls(toy) == ALL
    assert "up to date" in _dvc(toy, "status").stdout


def _tiny_pipeline_checkout(dest: Path) -> Path:
    """A clone-like copy of this repository (tracked files only) whose params run the real
    pipeline on the tiny corpus with a few training steps."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["corpus"]["size"] = "tiny"
    for stage in ("train_clap", "train_pengi"):
        params[stage].update(epochs=1, max_steps=2, checkpoint_every=2, val_every=2, val_max_batches=1)
    params["evaluate"].update(probes=False, max_new_tokens=6, tasks=["esc50", "clotho_captioning", "clotho_aqa"])
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny"], cwd=dest, check=True)
    return dest


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.timeout(1500)
def test_real_deployment_reproduces_the_tiny_pipeline(tmp_path):
    """The deployment runs every stage of the real dvc.yaml on the tiny corpus, end to end;
    afterwards DVC reports the pipeline up to date (the run is a plain `dvc repro`)."""
    repo = _tiny_pipeline_checkout(tmp_path / "repo")
    _run_deployment(repo, tmp_path, watch_timeout=1200)
    status = _dvc(repo, "status")
    assert "up to date" in status.stdout, status.stdout
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    stages = set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]) - {"ingest"}
    assert stages <= set(lock), sorted(stages - set(lock))
    metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert any(k.startswith("esc50.") for k in metrics), sorted(metrics)[:10]
