#!/usr/bin/env bash
# tools/fewstep-benchmark.sh - time to a finished picture with few-step sampling and TAESD, next
# to 20 steps with CFG 7 and the full VAE on the same model: issue 16's table.
#
#   bash tools/fewstep-benchmark.sh [BUILD_DIR] [THREADS] [SIZE]     e.g. build 2 512
#
# Full-size checkpoints with random weights (written once into $SDG_BENCH_DIR, default
# /tmp/sdg-bench, by sdg-random-checkpoint from ../shared/reference/manifests): SD 1.5, SD 2.1
# (named sd-turbo: SD-Turbo is SD 2.1's architecture), SDXL (named sdxl-turbo); an LCM-LoRA
# shaped like the released lcm-lora-sdv1-5 (rank 64 on every UNet matrix of the input, middle
# and output blocks, kohya names in the CompVis form, F16); TAESD and TAESDXL decoders. The names
# make sdg_recommend pick each model's settings, as users' files would; the runs give them
# explicitly anyway. Random weights make meaningless pictures but the same arithmetic, so the
# times are those of the real files.
#
# Prints one line per run: the seconds from the start of generation to the written picture
# (the CLI's "sampling and decoding" figure: text encoders, sampling, decoding), the load time,
# and the machine's load average (figures from a busy machine are not comparable).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}; THREADS=${2:-2}; SIZE=${3:-512}
REF=${SDG_REFERENCE_DIR:-$PWD/../shared/reference}
WORK=${SDG_BENCH_DIR:-/tmp/sdg-bench}
RANDCK=$BUILD/tools/sdg-random-checkpoint
SDG=$BUILD/engine/cli/sdg
VOCAB=$REF/vocab/bpe_simple_vocab_16e6.txt.gz
mkdir -p "$WORK/models"

make_file() {   # make_file MANIFEST OUT [ARGS...]
  local manifest=$1 out=$2
  shift 2
  if [ ! -s "$out" ]; then
    echo "writing $out"
    "$RANDCK" "$manifest" "$out" "$@" >/dev/null
  fi
}

M=$WORK/models
make_file "$REF/manifests/sd15.tsv" "$M/sd15-random.safetensors" --dtype f16 --seed 1
make_file "$REF/manifests/sd21.tsv" "$M/sd-turbo-random.safetensors" --dtype f16 --seed 2
make_file "$REF/manifests/sdxl-base.tsv" "$M/sdxl-turbo-random.safetensors" --dtype f16 --seed 3
make_file "$REF/manifests/taesd-decoder.tsv" "$M/taesd_decoder.safetensors" --seed 4
make_file "$REF/manifests/taesd-decoder.tsv" "$M/taesdxl_decoder.safetensors" --seed 5
# The LCM-LoRA's manifest: every UNet matrix of the blocks, rank 64 (down [64, in(, kh, kw)],
# up [out, 64(, 1, 1)], alpha).
if [ ! -s "$M/lcm-lora-sd15-random.safetensors" ]; then
  awk -F'\t' '$1 ~ /^model\.diffusion_model\.(input_blocks|middle_block|output_blocks)\..*\.weight$/ {
      n = split($3, s, ",")
      if (n != 2 && n != 4) next
      if (n == 4 && s[3] == 1 && s[4] == 1) n = 2            # 1x1 convs as matrices
      if ($1 ~ /norm/) next
      name = $1; sub(/^model\.diffusion_model\./, "", name); sub(/\.weight$/, "", name)
      gsub(/\./, "_", name); name = "lora_unet_" name
      if (n == 2) { print name ".lora_down.weight\tF16\t64," s[2]; print name ".lora_up.weight\tF16\t" s[1] ",64" }
      else { print name ".lora_down.weight\tF16\t64," s[2] "," s[3] "," s[4]; print name ".lora_up.weight\tF16\t" s[1] ",64,1,1" }
      print name ".alpha\tF32\t" }' "$REF/manifests/sd15.tsv" > "$WORK/lcm-lora.tsv"
  make_file "$WORK/lcm-lora.tsv" "$M/lcm-lora-sd15-random.safetensors" --seed 6
fi

load=$(cut -d' ' -f1 /proc/loadavg)
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads, ${SIZE}x${SIZE}, loadavg $load"
run() {   # run LABEL ARGS...
  local label=$1
  shift
  local log=$WORK/fewstep-$label.log
  /usr/bin/time -f "RSS_KB %M" "$SDG" --vocab "$VOCAB" -p "a photograph of an astronaut riding a horse" \
      -W "$SIZE" -H "$SIZE" -t "$THREADS" -s 1 -o "$WORK/fewstep-$label.png" "$@" \
      > "$log" 2>&1 < /dev/null
  tr '\r' '\n' < "$log" | awk -v label="$label" '
    /loaded .* in/ { for (i = 1; i < NF; i++) if ($i == "in") t_load = $(i + 1) }
    /done in/ { t_gen = $9 }
    /RSS_KB/ { rss = $2 }
    END { printf "%-34s %7.1f s to the picture  (load %.1f s, peak RSS %.2f GB)\n",
          label, t_gen, t_load, rss * 1024 / 1e9 }'
}
run sd15-lcm-lora-4step-cfg1-taesd -m "$M/sd15-random.safetensors" \
    --lora "$M/lcm-lora-sd15-random.safetensors" --sampler lcm --schedule sgm_uniform --steps 4 \
    --cfg-scale 1 --decoder taesd
run sd15-20step-cfg7-vae -m "$M/sd15-random.safetensors" --sampler euler_a --steps 20 \
    --cfg-scale 7
run sd-turbo-1step-taesd -m "$M/sd-turbo-random.safetensors" --prediction eps --sampler euler_a \
    --schedule trailing --steps 1 --cfg-scale 1 --decoder taesd
run sd21-20step-cfg7-vae -m "$M/sd-turbo-random.safetensors" --prediction eps --sampler euler_a \
    --steps 20 --cfg-scale 7
run sdxl-turbo-1step-taesdxl -m "$M/sdxl-turbo-random.safetensors" --sampler euler_a \
    --schedule trailing --steps 1 --cfg-scale 1 --decoder taesd
run sdxl-20step-cfg7-vae -m "$M/sdxl-turbo-random.safetensors" --sampler euler_a --steps 20 \
    --cfg-scale 7
