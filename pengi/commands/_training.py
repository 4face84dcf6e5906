"""Shared front-door code of the training stages: the MLflow run around one library call."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pengi.config import Config, flatten
from pengi.fileio import atomic_path

log = logging.getLogger(__name__)


def run_tracked(
    cfg: Config, stage: str, out_dir: str, fn: Callable[[Any], dict[str, Any]], metrics_path: str | None = None
) -> dict[str, Any]:
    """Open the stage's MLflow run (rank 0 only; a no-op when ``tracking.enabled`` is false),
    call ``fn(tracker)``, attach the logs to the run and copy ``metrics.json`` to
    ``metrics_path`` (the DVC metrics file) when given."""
    from pengi.tracking import Tracker

    tracking = cfg.tracking
    if int(os.environ.get("RANK", "0")) != 0:  # one run per stage, not one per rank
        tracking = dataclasses.replace(tracking, enabled=False)
    with Tracker(tracking, stage=stage, params=flatten(cfg)) as tracker:
        result = fn(tracker)
        for name in ("metrics.json", "train_log.csv", "val_log.csv", "data_report.json", "samples.json"):
            path = Path(out_dir) / name
            if path.exists():
                tracker.log_artifact(path)
    if metrics_path and int(os.environ.get("RANK", "0")) == 0:
        with atomic_path(metrics_path) as tmp:
            shutil.copyfile(Path(out_dir) / "metrics.json", tmp)
    log.info("%s: %s", stage, json.dumps(result, sort_keys=True))
    return result
