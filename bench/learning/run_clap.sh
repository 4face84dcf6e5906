#!/bin/bash
# One CLAP experiment: train-clap with params overrides, then the L1/L3 probes of its audio tower
# and the log-mel probe on the label tasks (bench/learning/clap_probe.py).
#
#   DATA=/path/to/a/repro/data OUT=/tmp/exp bash bench/learning/run_clap.sh NAME "p['train_clap'].update(epochs=8)"
set -euo pipefail
NAME=$1; OVR=$2
REPO=$(cd "$(dirname "$0")/../.." && pwd)
: "${DATA:?set DATA to a data/ folder}"; OUT=${OUT:-/tmp/pengi-exp}
D=$OUT/$NAME; mkdir -p "$D"
cd "$REPO"
python bench/learning/make_params.py "$D/params.yaml" "$OVR"
start=$(date +%s)
python -m pengi train-clap --params "$D/params.yaml" --triples "${TRIPLES:-$DATA/triples}" --audio "$DATA/audio" \
  --out "$D/clap" --metrics "$D/clap_metrics.json" > "$D/clap.log" 2>&1
end=$(date +%s)
cat "$D/clap_metrics.json"
python bench/learning/clap_probe.py "$D/clap/model" "$D/params.yaml" "$DATA"
echo "$NAME: train-clap $((end-start)) s"
