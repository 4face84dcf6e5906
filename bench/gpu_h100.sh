#!/usr/bin/env bash
# The GPU measurements of bench/RESULTS.md and bench/RESULTS_generation.md, as one prepared run
# on a lent H100 (bare CUDA image with torch + transformers, no project install): the paper-size
# training step (eager and torch.compile, bf16), the paper-size captioning path and the data
# path. Every stage has its own timeout, so a failure or an OOM costs that stage only.
#
#   bash bench/gpu_h100.sh [OUTDIR]                      # every stage; OUTDIR: $OUT, else .gpu_out
#   STAGES="gen compile_profile compile512" bash bench/gpu_h100.sh   # some stages
#
# Stages: smoke train64 train256 gen compile256 loader (the default, about 5 minutes of which
# compilation is 2), gen_large compile_profile compile512 (a second round), and kv (the three
# KV-cache modes of the beam search and log-likelihood scoring, decoder alone). The next run's
# plan, two calls: STAGES="smoke kv gen_large" (about 7 minutes; gen_large also compiles the
# prefix), then STAGES="smoke compile256 compile256_norewrite" (about 5 minutes: the HTSAT
# matrix rewrites, on and off), adding pack256 (eager; padded vs packed rows on a length mix)
# if time is left.
# If the image's transformers cannot run the project (smoke), a wheel carried in .whl/ is
# installed into /tmp/site and used instead.
set -u
O=${1:-${OUT:-.gpu_out}}
mkdir -p "$O"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
PY=${PY:-python3}
STAGES=${STAGES:-smoke train64 train256 gen compile256 loader}
T="bench/train_throughput.py --device cuda --bf16 --peak-tflops 989"
log() { echo "=== $(date -u +%T) $*"; }

smoke() {
  if ! timeout 120 $PY bench/generation_paper.py --device cuda --batch 2 --clips 2 --baseline-clips 1 \
      --max-new-tokens 3 --classes 3 > "$O/smoke.log" 2>&1; then
    tail -20 "$O/smoke.log"
    log "smoke failed: installing the carried transformers wheel"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
  fi
}
train64() {  # the authors' measured setting
  timeout 90 $PY $T --batch-size 64 --steps 10 --warmup 3 --out "$O/train_b64.json" 2>&1 | tail -25
}
train256() {
  timeout 120 $PY $T --batch-size 256 --steps 8 --warmup 3 --profile "$O/profile_b256.txt" \
    --out "$O/train_b256.json" 2>&1 | tail -25
}
gen() {
  timeout 150 $PY bench/generation_paper.py --device cuda --batch 64 256 512 --baseline-clips 4 \
    --out "$O/generation_paper.json" 2>&1 | tail -50
}
gen_large() {
  timeout 320 $PY bench/generation_paper.py --device cuda --batch 512 1024 --baseline-clips 2 --compile-prefix \
    --profile "$O/profile_beam.txt" --out "$O/generation_paper2.json" 2>&1 | tail -50
}
kv() {
  timeout 200 $PY bench/kv_cache_modes.py --device cuda --dtype bf16 --batch 256 1024 --repeats 3 \
    --out "$O/kv_cache_modes.json" 2>&1 | grep -v '^ ' | tail -12
}
compile256() {
  timeout 240 $PY $T --compile --batch-size 256 --steps 15 --warmup 4 --out "$O/train_b256_compile.json" 2>&1 | tail -25
}
compile256_norewrite() {  # compile256 without the HTSAT matrix rewrites (as measured at stop 12)
  timeout 240 $PY $T --compile --rewrite-devices "" --batch-size 256 --steps 15 --warmup 4 \
    --out "$O/train_b256_compile_norewrite.json" 2>&1 | tail -25
}
pack256() {  # a label/caption length mix, padded vs packed LM rows (train_pengi.pack_tokens)
  for p in 0 512; do
    timeout 100 $PY $T --batch-size 256 --steps 8 --warmup 3 --target-lengths 3,3,3,11,16,24,24,32 \
      --pack-tokens $p --out "$O/train_b256_mix_pack$p.json" 2>&1 | tail -8
  done
}
compile_profile() {
  timeout 180 $PY $T --compile --batch-size 256 --steps 15 --warmup 4 --profile "$O/profile_b256_compile.txt" \
    --out "$O/train_b256_compile2.json" 2>&1 | tail -25
}
compile512() {
  timeout 140 $PY $T --compile --batch-size 512 --steps 8 --warmup 3 --out "$O/train_b512_compile.json" 2>&1 | tail -25
}
loader() {
  timeout 90 $PY bench/train_throughput.py --loader --workers 12 --batch-size 256 --steps 10 --warmup 2 \
    --clips 64 --out "$O/loader.json" 2>&1 | tail -15
}

{
  log "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nproc
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  for s in $STAGES; do
    log "$s"
    $s
  done
  log "done"
} 2>&1 | tee "$O/log.txt"
