#!/usr/bin/env bash
# Set up from nothing (idempotent) and run the main job: `dvc repro` of the embedded default.
# Extra arguments go to `dvc repro` (e.g. a stage name, or --force).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1
# DVC needs a git repository; a downloaded archive without .git gets one here.
[ -d .git ] || { git init -q && git add -A && git -c user.name=pengi -c user.email=pengi@localhost commit -qm "initial"; }
start=$(date +%s)
dvc repro "$@"
echo
echo "pipeline finished in $(( $(date +%s) - start )) s"
dvc metrics show || true
cat <<TEXT

Where things are:
  metrics        metrics/*.json            (dvc metrics show / dvc metrics diff)
  evaluation     reports/evaluate/report.md
  data docs      reports/data_docs/index.html
  models         data/models/clap/model, data/models/pengi/model   (safetensors + config.json)
  MLflow UI      scripts/mlflow_ui.sh  ->  http://127.0.0.1:5000   (runs in mlflow.db)
TEXT
