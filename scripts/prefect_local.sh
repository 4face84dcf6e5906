#!/usr/bin/env bash
# A local Prefect server, the process work pool `local-pool`, the repository's deployments
# (prefect.yaml) and one worker -- all on 127.0.0.1, telemetry off.
#
#   scripts/prefect_local.sh up     # start server + worker in the background, create pool, deploy
#   scripts/prefect_local.sh run    # prefect deployment run train-pengi/local --watch
#   scripts/prefect_local.sh down   # stop the worker (SIGINT, then SIGKILL) and the server
#
# Environment: PREFECT_PORT (4200). Logs and pids go to .prefect/ in the repository.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin="$repo/.venv/bin"
[[ -x "$bin/prefect" ]] || bin="$(dirname "$(command -v prefect)")"
port="${PREFECT_PORT:-4200}"
state="$repo/.prefect"
mkdir -p "$state"

export PREFECT_API_URL="http://127.0.0.1:$port/api"
export PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT="$port"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false
export DO_NOT_TRACK=true DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
export PENGI_REPO_DIR="$repo"

stop() {  # stop <name>: SIGINT, wait up to 15 s, then SIGKILL (a worker ignores SIGTERM for a while)
  local pidfile="$state/$1.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" || true
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  up)
    nohup "$bin/prefect" server start --host 127.0.0.1 --port "$port" >"$state/server.log" 2>&1 &
    echo $! >"$state/server.pid"
    for _ in $(seq 120); do
      curl -fs "http://127.0.0.1:$port/api/health" >/dev/null 2>&1 && break; sleep 1
    done
    curl -fs "http://127.0.0.1:$port/api/health" >/dev/null || { echo "server not healthy; see $state/server.log" >&2; exit 1; }
    "$bin/prefect" work-pool inspect local-pool >/dev/null 2>&1 \
      || "$bin/prefect" work-pool create local-pool --type process
    "$bin/prefect" --no-prompt deploy --all
    nohup "$bin/prefect" worker start --pool local-pool >"$state/worker.log" 2>&1 &
    echo $! >"$state/worker.pid"
    echo "Prefect UI: http://127.0.0.1:$port   (export PREFECT_API_URL=$PREFECT_API_URL)"
    ;;
  run)
    shift
    exec "$bin/prefect" deployment run train-pengi/local --watch "$@"
    ;;
  down)
    stop worker
    stop server
    ;;
  *)
    echo "usage: $0 up|run|down" >&2; exit 2
    ;;
esac
