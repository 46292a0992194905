#!/bin/sh
# train-default-model.sh - the one command that makes the default model: procedural data set,
# BPE vocabulary, VAE + text encoder + UNet training, fp16 export and the prompt-following
# evaluation. Resumable: run it again after an interruption and it goes on from the last
# checkpoint in WORKDIR (finished stages are skipped). Runs in the foreground; for a background
# run:  nohup tools/train-default-model.sh WORKDIR OUTDIR > WORKDIR.out 2>&1 &
# and follow WORKDIR/progress.log.
#
# Usage: tools/train-default-model.sh [WORKDIR] [OUTDIR] [extra train.py options...]
#   WORKDIR  default /tmp/sdg-train-run        OUTDIR  default models (of this checkout)
#   SDG_SMOKE=1 runs a few-minute smoke version (tiny set, few steps) - its model is useless.
#   SDG=path/to/sdg selects the CLI used by the evaluation (default build/engine/cli/sdg).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
work=${1:-/tmp/sdg-train-run}
out=${2:-$root/models}
[ $# -ge 1 ] && shift
[ $# -ge 1 ] && shift
py=/usr/bin/python3   # Debian's python3 with python3-torch
mkdir -p "$work" "$out"

if [ "${SDG_SMOKE:-0}" = 1 ]; then
    set -- --n-images 2000 --vae-steps 60 --steps 60 --batch 32 --log-every 10 "$@"
fi

cd "$here"
"$py" -m sdg_train.train --workdir "$work" "$@"
# Stopped by a signal: the checkpoints are saved; run this again to go on.
[ -f "$work/final.pt" ] || exit 0
"$py" -m sdg_train.export --workdir "$work" --out "$out"
if [ "$out" -ef "$root/models" ]; then
    # The shipped model: refresh the scorer calibration and token ids test-default-model.c uses.
    "$py" -m sdg_train.evaluate --model "$out/sdg-default.safetensors" \
        --write-test-data "$root/tests/default-model-data.h"
fi
sdg=${SDG:-$root/build/engine/cli/sdg}
if [ -x "$sdg" ]; then
    "$py" -m sdg_train.evaluate --model "$out/sdg-default.safetensors" --sdg "$sdg" \
        --json "$work/eval.json" --grid "$work/eval-grid.png" \
        --inpaint-grid "$work/eval-inpaint.png" | tee "$work/eval.md"
else
    echo "train-default-model.sh: $sdg not built; skipping the evaluation" >&2
fi
