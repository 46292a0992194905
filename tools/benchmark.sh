#!/usr/bin/env bash
# tools/benchmark.sh - time per sampling step and peak RSS of the sdg CLI on a full-size
# SD1.5 checkpoint with random weights (written once by sdg-random-checkpoint), CFG on.
#
#   bash tools/benchmark.sh [BUILD_DIR] [THREADS] [SIZES...]
#   e.g. bash tools/benchmark.sh build 2 256 512
#
# Prints one line per size: seconds per step (mean over the steps), load time, decode time, peak
# RSS and the engine's memory estimate (GB = 10^9 bytes in both). The machine's load average is
# printed too: figures from a busy machine are not comparable.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}; THREADS=${2:-2}; shift $(( $# > 2 ? 2 : $# )) || true
SIZES=("${@:-256 512}"); [ ${#SIZES[@]} -eq 1 ] && read -r -a SIZES <<< "${SIZES[0]}"
REF=${SDG_REFERENCE_DIR:-$PWD/../shared/reference}
WORK=${SDG_BENCH_DIR:-/tmp/sdg-bench}
CKPT=$WORK/sd15-random-f16.safetensors
mkdir -p "$WORK"
if [ ! -s "$CKPT" ]; then
  echo "writing $CKPT"
  "$BUILD/tools/sdg-random-checkpoint" "$REF/manifests/sd15.tsv" "$CKPT" --dtype f16 --seed 1
fi
for size in "${SIZES[@]}"; do
  steps=4
  log=$WORK/run-$size.log
  /usr/bin/time -f "RSS_KB %M" "$BUILD/engine/cli/sdg" -m "$CKPT" \
      --vocab "$REF/vocab/bpe_simple_vocab_16e6.txt.gz" -p "a photograph of an astronaut riding a horse" \
      -W "$size" -H "$size" --steps $steps --cfg-scale 7 --sampler euler -t "$THREADS" -s 1 \
      -o "$WORK/out-$size.png" > "$log" 2>&1 < /dev/null
  tr '\r' '\n' < "$log" | awk -v size="$size" -v threads="$THREADS" -v load="$(cut -d' ' -f1 /proc/loadavg)" '
    /loaded in/ { t_load = $4 }
    /^step [0-9]+\/[0-9]+/ { split($2, a, "/"); steps = a[1]; per = $3 }   # running mean
    /done in/ { t_done = $4; t_sd = $9 }
    /RSS_KB/ { rss = $2 }
    /memory: needs/ { est = $4 " " $5 }
    END { printf "%dx%d  threads %d  %.2f s/step (CFG on)  load %.1f s  decode %.1f s  peak RSS %.2f GB (estimate %s)  (loadavg %s)\n",
          size, size, threads, per, t_load, t_sd - per * steps, rss * 1024 / 1e9, est, load }'
done
