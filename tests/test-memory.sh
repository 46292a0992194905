#!/usr/bin/env bash
# test-memory.sh - TAP test that full-size checkpoints of every family load and run, and take no
# more memory than the engine says they need: random checkpoints in fp16 written by
# sdg-random-checkpoint from the manifests (SD 1.5, 2.1 GB, at 256x256; SD 2.1 in its CompVis and
# SGM layouts, 2.6 GB, and SDXL, 6.9 GB, at 64x64), each run for 1 step, CFG 7, 2 threads: the
# CLI must name the family, and the peak resident set must stay within 10% of the CLI's own
# figure "memory: needs X (model Y + working memory Z)" (Y + Z).
#
# Usage: test-memory.sh SDG RANDOM_CHECKPOINT MANIFESTS_DIR VOCAB [SANITIZE]
# (MANIFESTS_DIR: shared/reference/manifests; SANITIZE: meson's b_sanitize, where anything
# but "none" skips the test: sanitizers' shadow memory and quarantine are not the engine's.)
# Needs GNU time (/usr/bin/time) and, one checkpoint at a time, up to 7.2 GB free in $TMPDIR
# (a case without the room is skipped), which is emptied afterwards.
# Not here: speed, pictures (random weights draw noise), or the memory guard's refusals
# (test-memguard).
set -u

SDG=${1:?usage: test-memory.sh SDG RANDOM_CHECKPOINT MANIFESTS_DIR VOCAB [SANITIZE]}
RANDCK=${2:?usage}
MANIFESTS=${3:?usage}
VOCAB=${4:?usage}
SANITIZE=${5:-none}
LIMIT_PERCENT=110   # peak RSS at most this % of model + working memory

n=0
failed=0
ok()   { n=$((n + 1)); echo "ok $n - $1"; }
fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
skip_all() { echo "1..0 # SKIP $1"; exit 0; }

[ "$SANITIZE" = none ] || skip_all "built with -fsanitize=$SANITIZE"
[ -x /usr/bin/time ] || skip_all "no GNU time at /usr/bin/time"
[ -d "$MANIFESTS" ] || skip_all "no manifests folder '$MANIFESTS'"
[ -f "$VOCAB" ] || skip_all "no vocabulary '$VOCAB'"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/test-memory.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# bytes NUMBER UNIT: a size as GLib's g_format_size writes it (powers of 1000), in bytes.
bytes() {
    awk -v x="$1" -v u="$2" 'BEGIN {
        f = u ~ /^bytes?$/ ? 1 : u == "kB" ? 1e3 : u == "MB" ? 1e6 : u == "GB" ? 1e9 : u == "TB" ? 1e12 : 0
        if (f == 0) exit 1
        printf "%.0f", x * f
    }'
}

# One case: MANIFEST LABEL FAMILY SIZE GB_NEEDED [SDG_ARGS...] (family as the CLI names it at
# load; a MANIFEST not in MANIFESTS_DIR is a path).
run_case() {
    local manifest=$MANIFESTS/$1 label=$2 family=$3 size=$4 need_gb=$5
    [ -f "$manifest" ] || manifest=$1
    shift 5
    local ck=$TMP/model.safetensors
    if [ ! -f "$manifest" ]; then
        n=$((n + 1)); echo "ok $n - $label # SKIP no manifest $manifest"; return
    fi
    local free_kb
    free_kb=$(df -Pk "$TMP" | awk 'NR == 2 { print $4 }')
    if [ "${free_kb:-0}" -lt $((need_gb * 1000000)) ]; then
        n=$((n + 1)); echo "ok $n - $label # SKIP only ${free_kb:-?} kB free in $TMP"; return
    fi

    # 1. The checkpoint.
    local t0 t1 rc
    t0=$(now)
    "$RANDCK" "$manifest" "$ck" --dtype f16 --seed 1 >"$TMP/ck.out" 2>&1
    rc=$?
    t1=$(now)
    local file_bytes
    file_bytes=$(stat -c %s "$ck" 2>/dev/null || echo 0)
    if [ "$rc" -eq 0 ] && [ "$file_bytes" -gt 1000000000 ]; then
        ok "sdg-random-checkpoint writes $label in fp16 ($file_bytes bytes, $(elapsed "$t0" "$t1") s)"
    else
        fail "sdg-random-checkpoint writes $label in fp16" "status $rc: $(tail -n 3 "$TMP/ck.out" | tr '\n' '|')"
        rm -f "$ck"
        return
    fi

    # 2. The run, under GNU time (%M: the peak resident set in KiB).
    t0=$(now)
    /usr/bin/time -f %M -o "$TMP/rss" "$SDG" -m "$ck" --vocab "$VOCAB" \
        -p "a lighthouse at dusk" -W "$size" -H "$size" --steps 1 --cfg-scale 7 -t 2 --seed 1 \
        "$@" -o "$TMP/out.png" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    t1=$(now)
    rm -f "$ck"
    if [ "$rc" -eq 0 ] && [ -s "$TMP/out.png" ] && grep -q "loaded $family model" "$TMP/err"; then
        ok "sdg runs $label fp16 as $family at ${size}x${size}, 1 step, CFG 7, 2 threads ($(elapsed "$t0" "$t1") s)"
    else
        fail "sdg runs $label fp16 as $family at ${size}x${size}, 1 step, CFG 7, 2 threads" "status $rc: $(tail -n 3 "$TMP/err" | tr '\n' '|')"
    fi
    while IFS= read -r line; do echo "# $line"; done <"$TMP/err"

    # 3. The engine's figures: "sdg: memory: needs 2.3 GB (model 2.1 GB + working memory 137.1 MB), ..."
    # (sizes rounded to one decimal: "2.1 GB" is 2.05-2.15 GB, a +-2.4% uncertainty on the model).
    local line re model="" work="" peak_kib
    line=$(grep -m1 -E 'memory: needs ' "$TMP/err")
    re='model ([0-9.]+) ([A-Za-z]+) \+ working memory ([0-9.]+) ([A-Za-z]+)\)'
    if [[ $line =~ $re ]]; then
        model=$(bytes "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
        work=$(bytes "${BASH_REMATCH[3]}" "${BASH_REMATCH[4]}")
    fi
    peak_kib=$(tail -n 1 "$TMP/rss" 2>/dev/null | tr -dc 0-9)
    if [ -z "$model" ] || [ -z "$work" ] || [ -z "$peak_kib" ]; then
        fail "$label: the CLI's memory figures and the peak RSS are read" "memory line: '$line'" \
            "GNU time: '$(tr '\n' '|' <"$TMP/rss" 2>/dev/null)'"
        return
    fi

    # 4. The comparison.
    local peak=$((peak_kib * 1024)) need=$((model + work)) ratio
    ratio=$(awk -v p="$peak" -v q="$need" 'BEGIN { printf "%.3f", p / q }')
    echo "# $label: model $model B + working memory $work B = $need B (CLI); checkpoint file $file_bytes B"
    echo "# $label: peak RSS $peak B ($peak_kib KiB) = $ratio x (model + working memory); limit 1.10"
    if [ $((peak * 100)) -le $((need * LIMIT_PERCENT)) ]; then
        ok "$label: peak RSS within ${LIMIT_PERCENT}% of model + working memory ($ratio)"
    else
        fail "$label: peak RSS within ${LIMIT_PERCENT}% of model + working memory ($ratio)" \
            "peak $peak B > $LIMIT_PERCENT% of $need B"
    fi
}

run_case sd15.tsv "SD 1.5" "SD 1.x" 256 3
run_case sd21.tsv "SD 2.1" "SD 2.x" 64 3
run_case sd21-sgm-layout.tsv "SD 2.1 (SGM layout)" "SD 2.x" 64 3
run_case sdxl-base.tsv "SDXL" "SDXL" 64 8
# SDXL inpainting (a 9-channel UNet): the SDXL run's picture as the image and as the mask.
if [ -s "$TMP/out.png" ]; then
    cp "$TMP/out.png" "$TMP/init.png"
    sed 's/^\(model\.diffusion_model\.input_blocks\.0\.0\.weight\tF32\t320\),4,/\1,9,/' \
        "$MANIFESTS/sdxl-base.tsv" >"$TMP/sdxl-inpaint.tsv"
    run_case "$TMP/sdxl-inpaint.tsv" "SDXL inpainting" "SDXL" 64 8 -i "$TMP/init.png" \
        --mask "$TMP/init.png"
fi

echo "1..$n"
[ "$failed" -eq 0 ]
