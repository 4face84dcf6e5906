#!/usr/bin/env bash
# The MLflow UI on the runs of `dvc repro` (the repository's sqlite store and mlartifacts/),
# on 127.0.0.1 only, telemetry off.   scripts/mlflow_ui.sh  ->  http://127.0.0.1:5000
# Environment: MLFLOW_PORT (5000), MLFLOW_TRACKING_URI (default sqlite:///<repo>/mlflow.db).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo/.venv/bin"
[[ -x "$bin/mlflow" ]] || bin="$(dirname "$(command -v mlflow)")"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
store="${MLFLOW_TRACKING_URI:-sqlite:///$repo/mlflow.db}"
echo "MLflow UI: http://127.0.0.1:${MLFLOW_PORT:-5000}  (store: $store)" >&2
exec "$bin/mlflow" ui --host 127.0.0.1 --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "$store" --default-artifact-root "$repo/mlartifacts" --workers 1
