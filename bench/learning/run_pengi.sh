#!/bin/bash
# One Pengi learning experiment on the default corpus: train-pengi with params overrides, then
# evaluate (no probes) on the label tasks, captioning and AQA. Prints losses and headline metrics.
#
#   DATA=/path/to/a/repro/data OUT=/tmp/exp CLAP=$DATA/models/clap/model \
#     bash bench/learning/run_pengi.sh NAME "p['train_pengi'].update(lr=1e-3)"
#
# DATA: the data/ folder of a `dvc repro train-clap` checkout (triples, audio, eval, manifests).
# TRIPLES (optional): another triples folder (e.g. rendered with other render.task_weights).
# The second argument is Python run on `p`, the dict of this repository's params.yaml.
set -euo pipefail
NAME=$1; OVR=$2
REPO=$(cd "$(dirname "$0")/../.." && pwd)
: "${DATA:?set DATA to a data/ folder}"; OUT=${OUT:-/tmp/pengi-exp}
D=$OUT/$NAME; mkdir -p "$D"
cd "$REPO"
python bench/learning/make_params.py "$D/params.yaml" "p['evaluate']['probes'] = False
p['evaluate']['tasks'] = ['esc50', 'crema_d', 'gtzan_genres', 'tut2017', 'nsynth_instrument', 'clotho_captioning', 'clotho_aqa']" "$OVR"
start=$(date +%s)
python -m pengi train-pengi --params "$D/params.yaml" --triples "${TRIPLES:-$DATA/triples}" --audio "$DATA/audio" \
  --clap "${CLAP:-$DATA/models/clap/model}" --out "$D/pengi" --metrics "$D/train_metrics.json" > "$D/train.log" 2>&1
mid=$(date +%s)
python -m pengi evaluate --params "$D/params.yaml" --model "$D/pengi/model" --eval "$DATA/eval" --audio "$DATA/audio" \
  --triples "$DATA/triples" --out "$D/eval" --metrics "$D/eval_metrics.json" --no-progress > "$D/eval.log" 2>&1
end=$(date +%s)
python - "$D" <<'PY'
import json, sys
m = json.load(open(sys.argv[1] + '/eval_metrics.json'))
t = json.load(open(sys.argv[1] + '/train_metrics.json'))
keys = [k for k in m if (k.endswith('.accuracy') and 'baseline' not in k and 'probe' not in k) or k.endswith('cider_d')]
print(sys.argv[1], {k: round(v, 3) for k, v in t.items() if 'loss' in k})
print({k: round(m[k], 3) for k in sorted(keys)})
PY
echo "$NAME: train-pengi $((mid-start)) s, evaluate $((end-mid)) s"
