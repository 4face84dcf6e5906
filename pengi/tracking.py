"""MLflow run tracking (the only mlflow import in the package).

Each training or evaluation stage is one MLflow run::

    with Tracker(cfg.tracking, stage="train-pengi", params=flatten(cfg.train_pengi, "train_pengi")) as tr:
        tr.log_metrics({"loss": 1.23}, step=10)
        tr.log_artifact("data/eval/report.json")

A run carries the stage's params, per-step metrics and tags that tie it to the code and data it
ran on: the git commit (``mlflow.source.git.commit``, shown by the UI), the stage name, the
pipeline run id (``PENGI_PIPELINE_RUN_ID``, set by the Prefect flow) and the DVC hash of every
dependency of the stage (``dvc.dep.<path>``), computed exactly as DVC computes it.

The tracking URI comes from ``MLFLOW_TRACKING_URI``; by default it is ``sqlite:///<repo>/mlflow.db``
with artifacts in ``<repo>/mlartifacts`` (both git-ignored). With ``tracking.enabled: false`` the
tracker does nothing and mlflow is never imported.

Models are never logged with ``mlflow.pytorch`` (its default ``pt2`` export fails for HF models):
log the checkpoint folder's files with :meth:`Tracker.log_artifact` and/or its path as a tag.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any


from pengi.config import TrackingConfig
from pengi.telemetry import disable_telemetry

log = logging.getLogger(__name__)

PIPELINE_RUN_ENV = "PENGI_PIPELINE_RUN_ID"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
_BATCH = 100  # MLflow accepts at most 100 params / 1000 metrics per log_batch call


def find_repo_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``dvc.yaml``, ``.dvc`` or ``.git``.

    ``dvc exp run --temp`` and queued experiments run in a copy under ``<repo>/.dvc/tmp/exps/``;
    their runs belong to ``<repo>``, so the copy is skipped (otherwise the runs would land in a
    sqlite file that DVC deletes afterwards).
    """
    here = Path(start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in ("dvc.yaml", ".dvc", ".git")):
            return folder
    return here


def tracking_uri(repo: str | os.PathLike | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, or the repo's sqlite file ``sqlite:///<repo>/mlflow.db``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{find_repo_root(repo) / 'mlflow.db'}"


def artifact_location(repo: str | os.PathLike | None = None) -> str | None:
    """Where a new experiment stores artifacts.

    None for a tracking server (``http(s)://``): the server decides (``--artifacts-destination``).
    Otherwise ``MLFLOW_ARTIFACTS_DESTINATION`` or ``<repo>/mlartifacts``.
    """
    if tracking_uri(repo).startswith(("http://", "https://", "databricks")):
        return None
    dest = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION")
    return dest or (find_repo_root(repo) / "mlartifacts").as_uri()


# --------------------------------------------------------------------------------------------
# Provenance tags
# --------------------------------------------------------------------------------------------


def git_commit(repo: str | os.PathLike | None = None) -> dict[str, str]:
    """``{"mlflow.source.git.commit": sha, "pengi.git_dirty": "true|false"}``; empty outside git."""
    root = find_repo_root(repo)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": sha, "pengi.git_dirty": str(bool(dirty)).lower()}


def dvc_dep_hashes(stage: str, repo: str | os.PathLike | None = None) -> dict[str, str]:
    """``{"dvc.dep.<path>": hash}`` for the file and folder dependencies of ``stage`` in
    ``<repo>/dvc.yaml`` (``ingest@<source>`` for a foreach stage); params are logged as params.

    The hashes are DVC's own, computed through DVC's API from the files as they are now, so they
    equal what DVC writes to ``dvc.lock`` when the stage finishes (while ``dvc repro`` runs a
    stage, ``dvc.lock`` still holds the previous run's hashes). DVC's state cache makes this
    cheap for files it has hashed already. Empty when there is no such stage; on any DVC error
    the tags are left out with a warning: provenance never fails a stage.
    """
    root = find_repo_root(repo)
    if not (root / "dvc.yaml").exists():
        return {}
    try:
        from dvc.dependency.param import ParamsDependency
        from dvc.exceptions import DvcException
        from dvc.repo import Repo
    except ImportError:  # DVC is a dependency of the pipeline, not of every library user
        return {}
    tags: dict[str, str] = {}
    try:
        with Repo(str(root)) as dvc_repo:
            dvc_yaml = root / "dvc.yaml"
            matches = [
                s for s in dvc_repo.index.stages if s.name == stage and Path(s.dvcfile.path).resolve() == dvc_yaml
            ]
            for st in matches[:1]:
                for dep in st.deps:
                    if isinstance(dep, ParamsDependency) or not dep.exists:
                        continue
                    value = dep.get_hash().value
                    if value:
                        tags[f"dvc.dep.{dep.def_path}"] = value
    except (DvcException, OSError) as exc:
        log.warning("no DVC dependency hashes for %s: %s", stage, exc)
        return {}
    return tags


# --------------------------------------------------------------------------------------------
# Tracker
# --------------------------------------------------------------------------------------------


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    if len(text) > MAX_PARAM_CHARS:
        log.warning("param value truncated to %d characters", MAX_PARAM_CHARS)
        text = text[: MAX_PARAM_CHARS - 3] + "..."
    return text


class Tracker:
    """One MLflow run for one pipeline stage; a no-op when ``cfg.enabled`` is false.

    Args:
        cfg: the ``tracking`` section (``enabled``, ``experiment``).
        stage: the stage name, as in ``dvc.yaml`` (also the run name).
        params: flat ``section.key -> value`` params (see :func:`pengi.config.flatten`).
        tags: extra tags; the provenance tags (git, DVC deps, stage, pipeline run id) are added.
        repo: the repository root (default: found from the working directory).

    Use it as a context manager: the run ends FINISHED, or FAILED if the block raises.
    """

    def __init__(
        self,
        cfg: TrackingConfig,
        stage: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        repo: str | os.PathLike | None = None,
    ) -> None:
        self.cfg = cfg
        self.stage = stage
        self.params = dict(params or {})
        self.extra_tags = dict(tags or {})
        self.repo = find_repo_root(repo)
        self.run_id: str | None = None
        self._client = None

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    def provenance_tags(self) -> dict[str, str]:
        """The tags every run carries (without the caller's extra tags)."""
        tags = {"pengi.stage": self.stage, **git_commit(self.repo), **dvc_dep_hashes(self.stage, self.repo)}
        run = os.environ.get(PIPELINE_RUN_ENV)
        if run:
            tags["pengi.pipeline_run_id"] = run
        return tags

    def __enter__(self) -> Tracker:
        if not self.enabled:
            return self
        disable_telemetry()
        # MLflow writes the run's URL to stdout itself; stages log it instead (stdout may be data).
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(self.repo)
        self._client = MlflowClient(tracking_uri=uri)
        experiment_id = self._experiment_id()
        tags = {**self.provenance_tags(), **{k: str(v) for k, v in self.extra_tags.items()}}
        run = self._client.create_run(experiment_id, run_name=self.stage, tags=tags)
        self.run_id = run.info.run_id
        log.info("MLflow run %s (%s) in experiment %r at %s", self.run_id, self.stage, self.cfg.experiment, uri)
        try:
            self.log_params(self.params)
        except BaseException:
            # __exit__ does not run when __enter__ raises: do not leave the run RUNNING.
            self._client.set_terminated(self.run_id, status="FAILED")
            raise
        return self

    def _experiment_id(self) -> str:
        exp = self._client.get_experiment_by_name(self.cfg.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return self._client.create_experiment(self.cfg.experiment, artifact_location=artifact_location(self.repo))
        except Exception:  # noqa: BLE001 - another stage may have created it meanwhile
            exp = self._client.get_experiment_by_name(self.cfg.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is None or self.run_id is None:
            return
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self._client.set_terminated(self.run_id, status=status)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (values stringified; lists as JSON)."""
        if self._client is None or not params:
            return
        from mlflow.entities import Param

        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self._client.log_batch(self.run_id, params=items[i : i + _BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (non-finite values are logged as they are)."""
        if self._client is None or not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(items), 10 * _BATCH):
            self._client.log_batch(self.run_id, metrics=items[i : i + 10 * _BATCH])
        bad = [k for k, v in metrics.items() if not math.isfinite(float(v))]
        if bad:
            log.warning("non-finite metrics at step %s: %s", step, ", ".join(map(str, bad)))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's files, as run artifacts (under ``artifact_path``)."""
        if self._client is None:
            return
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tag(self, key: str, value: Any) -> None:
        """Set one tag on the run (e.g. ``pengi.checkpoint`` -> the checkpoint folder)."""
        if self._client is None:
            return
        self._client.set_tag(self.run_id, key, str(value))
