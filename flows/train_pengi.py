"""Prefect flow ``train-pengi``: run the DVC pipeline stage by stage, then ``dvc push``.

DVC owns the DAG (``dvc.yaml`` is the pipeline of record), Prefect owns execution: each stage of
``dvc.yaml`` -- one per source for the ``foreach`` ingestion stage (``ingest@<source>``) -- runs as
one task, ``dvc repro --single-item <stage>``, in DAG order. DVC decides whether a stage is stale,
so a deployment run and a plain ``dvc repro`` produce the same artifacts and the same ``dvc.lock``,
and either leaves the other with nothing to do.

Tasks are thin: a subprocess call. Stages that read sources (local or ``s3://``) are retried;
training and evaluation are not (a failure there is a bug or bad data, and a retry would only
burn hours). After ``validate`` and ``evaluate`` their JSON reports are published as Prefect
artifacts. When the repository has a DVC remote, the run ends with ``dvc push``.

Run it::

    python flows/train_pengi.py                      # a local run, no deployment needed
    prefect deployment run train-pengi/local --watch # through a work pool (see prefect.yaml)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from pengi.telemetry import disable_telemetry, subprocess_env

# Retries per stage base name (the part before "@"). Stages that read data sources or write
# shared storage fail for transient reasons; training, validation and evaluation are
# deterministic, so they get none.
STAGE_RETRIES: dict[str, int] = {"ingest": 3, "evalsets": 2, "audio-store": 2}
PUSH_RETRIES = 3
RETRY_DELAYS_S = [5, 30, 120]
# Stages whose JSON outputs are published: validate as a markdown summary, evaluate as a table.
REPORT_STAGES: dict[str, str] = {"validate": "markdown", "evaluate": "table"}


@dataclass(frozen=True)
class StagePlan:
    """One stage of ``dvc.yaml`` as the flow runs it."""

    name: str  # the DVC address, e.g. "ingest@clotho"
    upstream: tuple[str, ...] = ()
    json_outputs: tuple[str, ...] = field(default_factory=tuple)  # repo-relative paths

    @property
    def base(self) -> str:
        """The stage name without the foreach item (``ingest@clotho`` -> ``ingest``)."""
        return self.name.split("@", 1)[0]


def repo_dir(path: str | None = None) -> Path:
    """The DVC repository the flow runs in: ``path``, else ``PENGI_REPO_DIR``, else the cwd."""
    return Path(path or os.environ.get("PENGI_REPO_DIR") or Path.cwd()).resolve()


def plan_stages(repo: str | os.PathLike, targets: list[str] | None = None) -> list[StagePlan]:
    """The stages of ``<repo>/dvc.yaml`` in DAG order (``dvc.yaml`` order among independent ones).

    DVC itself parses the file, so templating, ``vars`` and ``foreach`` expand exactly as in
    ``dvc repro``. With ``targets`` (stage names, or a foreach base name such as ``ingest``),
    only those stages and everything upstream of them are planned.

    Raises:
        FileNotFoundError: ``repo`` has no ``dvc.yaml``.
        ValueError: a target names no stage.
    """
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    root = Path(repo).resolve()
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.is_file():
        raise FileNotFoundError(f"no dvc.yaml in {root} (set the flow's repo parameter or PENGI_REPO_DIR)")
    with Repo(str(root)) as dvc_repo:
        stages = [
            s for s in dvc_repo.index.stages
            if isinstance(s, PipelineStage) and Path(s.dvcfile.path).resolve() == dvc_yaml
        ]  # fmt: skip
        graph = dvc_repo.index.graph.subgraph(stages)  # edges: stage -> the stages it depends on
        order = {s: i for i, s in enumerate(stages)}
        wanted = set(stages)
        if targets:
            picked = {s for s in stages if s.name in targets or s.name.split("@", 1)[0] in targets}
            unknown = set(targets) - {s.name for s in picked} - {s.name.split("@", 1)[0] for s in picked}
            if unknown:
                raise ValueError(f"no such stage in {dvc_yaml}: {', '.join(sorted(unknown))}")
            wanted = set(picked)
            for s in picked:
                wanted |= nx.descendants(graph, s)
        ordered = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=lambda s: order[s])
        plans = []
        for s in ordered:
            if s not in wanted:
                continue
            outs = tuple(str(o.def_path) for o in s.outs if str(o.def_path).endswith(".json"))
            deps = tuple(sorted(d.name for d in graph.successors(s)))
            plans.append(StagePlan(s.name, deps, outs))
    return plans


def retries_for(stage: str) -> int:
    """Retries for a stage: I/O stages get some, training and evaluation none."""
    return STAGE_RETRIES.get(stage.split("@", 1)[0], 0)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and not all(isinstance(v, dict) for v in value):
        return {prefix: ", ".join(map(str, value))}
    return {prefix: value}


def report_rows(report: Any) -> list[dict[str, Any]]:
    """Table rows from a JSON report.

    ``[{...}, ...]`` -> one row per item; ``{name: {...}}`` -> one row per name (first column
    ``name``); ``{metric: value}`` -> rows of ``metric, value``. Nested mappings are flattened
    into dotted columns.
    """
    if isinstance(report, list):
        return [_flat(r) if isinstance(r, dict) else {"value": r} for r in report]
    if isinstance(report, dict):
        if report and all(isinstance(v, dict) for v in report.values()):
            return [{"name": k, **_flat(v)} for k, v in report.items()]
        return [{"metric": k, "value": v} for k, v in _flat(report).items()]
    return [{"value": report}]


def report_markdown(title: str, report: Any) -> str:
    """A markdown page for a JSON report: a table of :func:`report_rows`."""
    rows = report_rows(report)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    lines = [f"# {title}", ""]
    if not rows:
        return "\n".join(lines + ["(empty report)"])
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], repo: Path, env: dict[str, str]) -> None:
    """Run ``cmd`` in ``repo``, streaming its output to the Prefect log; raise on failure."""
    logger = get_run_logger()
    logger.info("$ %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        logger.info(line.rstrip())
        tail = (tail + [line])[-40:]
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{''.join(tail)}")


def _dvc(*args: str) -> list[str]:
    # The DVC of the flow's own environment, whatever is first on PATH.
    return [sys.executable, "-m", "dvc", *args]


def _stage_env(pipeline_run_id: str) -> dict[str, str]:
    """Telemetry off, the pipeline run id for MLflow tags, and this environment's bin folder
    first on PATH: a worker started as ``.venv/bin/prefect`` without an activated venv must
    still run the stages' ``python -m pengi`` with the venv's Python."""
    env = subprocess_env({"PENGI_PIPELINE_RUN_ID": pipeline_run_id})
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _repro(stage: str, repo: str, force: bool, pipeline_run_id: str) -> str:
    """``dvc repro --single-item <stage>``: DVC runs the stage only if it is stale."""
    args = ["repro", "--single-item", stage] + (["--force"] if force else [])
    _run(_dvc(*args), Path(repo), _stage_env(pipeline_run_id))
    return stage


def _publish(stage: StagePlan, repo: str) -> list[str]:
    """Publish the stage's JSON reports as Prefect artifacts; returns the artifact keys."""
    kind = REPORT_STAGES.get(stage.base)
    keys = []
    for rel in stage.json_outputs:
        path = Path(repo, rel)
        if not path.is_file():
            continue
        report = json.loads(path.read_text(encoding="utf-8"))
        key = _slug(f"{stage.name}-{path.stem}")
        title = f"{stage.name}: {rel}"
        if kind == "table":
            create_table_artifact(key=key, table=report_rows(report), description=title)
        else:
            create_markdown_artifact(key=key, markdown=report_markdown(title, report), description=title)
        keys.append(key)
    return keys


@task(name="publish-report", retries=0)
def publish_report(stage: StagePlan, repo: str) -> list[str]:
    """Prefect task wrapper of :func:`_publish`."""
    return _publish(stage, repo)


@task(name="dvc-remotes")
def dvc_remotes(repo: str) -> list[str]:
    """Names of the DVC remotes configured in ``repo``."""
    out = subprocess.run(
        _dvc("remote", "list"), cwd=repo, env=subprocess_env(), capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@task(name="dvc-push", retries=PUSH_RETRIES, retry_delay_seconds=RETRY_DELAYS_S)
def dvc_push(repo: str) -> None:
    """``dvc push``: upload every cached artifact of the pipeline to the default remote."""
    _run(_dvc("push"), Path(repo), subprocess_env())


@flow(name="train-pengi")
def train_pengi(
    repo: str | None = None,
    targets: list[str] | None = None,
    force: bool = False,
    push: bool = True,
) -> dict[str, Any]:
    """Reproduce the DVC pipeline (to the trained and evaluated model) and push its artifacts.

    Args:
        repo: the DVC repository (default: ``PENGI_REPO_DIR`` or the working directory).
        targets: stage names to reproduce with their upstream stages (default: all).
        force: rerun stages even if DVC finds them up to date.
        push: ``dvc push`` at the end when a DVC remote is configured.

    Returns:
        ``{"stages": [...], "artifacts": [...], "pushed": bool}``.
    """
    disable_telemetry()
    logger = get_run_logger()
    root = repo_dir(repo)
    # One id for every MLflow run this pipeline run creates (pengi.tracking tags runs with it).
    run_id = str(flow_run.id or os.environ.get("PENGI_PIPELINE_RUN_ID") or "local")
    plans = plan_stages(root, targets)
    logger.info("repo %s: %d stages: %s", root, len(plans), ", ".join(p.name for p in plans))

    artifacts: list[str] = []
    for plan in plans:
        retries = retries_for(plan.name)
        stage_task = task(_repro).with_options(
            name=plan.base,
            task_run_name=plan.name,
            retries=retries,
            retry_delay_seconds=RETRY_DELAYS_S[:retries] or 0,
        )
        stage_task(plan.name, str(root), force, run_id)
        if plan.base in REPORT_STAGES:
            artifacts += publish_report(plan, str(root))

    pushed = False
    if push:
        remotes = dvc_remotes(str(root))
        if remotes:
            dvc_push(str(root))
            pushed = True
        else:
            logger.info("no DVC remote configured: nothing to push")
    return {"stages": [p.name for p in plans], "artifacts": artifacts, "pushed": pushed}


if __name__ == "__main__":
    disable_telemetry()
    train_pengi()
