#!/usr/bin/env bash
# test-memory.sh - TAP test that a run on a full-size checkpoint takes no more memory than the
# engine says it needs: the peak resident set of `sdg` on a random SD 1.5 checkpoint in fp16
# (written by sdg-random-checkpoint, 2.1 GB) at 256x256, 1 step, CFG 7, 2 threads, must stay
# within 10% of the CLI's own figure "memory: needs X (model Y + working memory Z)" (Y + Z).
#
# Usage: test-memory.sh SDG RANDOM_CHECKPOINT MANIFEST VOCAB [SANITIZE]
# (MANIFEST: shared/reference/manifests/sd15.tsv; SANITIZE: meson's b_sanitize, where anything
# but "none" skips the test: sanitizers' shadow memory and quarantine are not the engine's.)
# Needs GNU time (/usr/bin/time) and about 2.2 GB free in $TMPDIR, which is emptied afterwards.
# Not here: speed, pictures (random weights draw noise), or the memory guard's refusals
# (test-memguard).
set -u

SDG=${1:?usage: test-memory.sh SDG RANDOM_CHECKPOINT MANIFEST VOCAB [SANITIZE]}
RANDCK=${2:?usage}
MANIFEST=${3:?usage}
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
[ -f "$MANIFEST" ] || skip_all "no manifest '$MANIFEST'"
[ -f "$VOCAB" ] || skip_all "no vocabulary '$VOCAB'"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/test-memory.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
free_kb=$(df -Pk "$TMP" | awk 'NR == 2 { print $4 }')
[ "${free_kb:-0}" -ge 2400000 ] || skip_all "only ${free_kb:-?} kB free in $TMP (2.2 GB needed)"

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

# 1. The checkpoint.
t0=$(now)
"$RANDCK" "$MANIFEST" "$TMP/sd15-f16.safetensors" --dtype f16 --seed 1 >"$TMP/ck.out" 2>&1
rc=$?
t1=$(now)
file_bytes=$(stat -c %s "$TMP/sd15-f16.safetensors" 2>/dev/null || echo 0)
if [ "$rc" -eq 0 ] && [ "$file_bytes" -gt 1000000000 ]; then
    ok "sdg-random-checkpoint writes SD 1.5 in fp16 ($file_bytes bytes, $(elapsed "$t0" "$t1") s)"
else
    fail "sdg-random-checkpoint writes SD 1.5 in fp16" "status $rc: $(tail -n 3 "$TMP/ck.out" | tr '\n' '|')"
    echo "1..$n"
    exit 1
fi
rm -f "$TMP/ck.out"

# 2. The run, under GNU time (%M: the peak resident set in KiB).
t0=$(now)
/usr/bin/time -f %M -o "$TMP/rss" "$SDG" -m "$TMP/sd15-f16.safetensors" --vocab "$VOCAB" \
    -p "a lighthouse at dusk" -W 256 -H 256 --steps 1 --cfg-scale 7 -t 2 --seed 1 \
    -o "$TMP/out.png" >"$TMP/out" 2>"$TMP/err"
rc=$?
t1=$(now)
if [ "$rc" -eq 0 ] && [ -s "$TMP/out.png" ]; then
    ok "sdg runs SD 1.5 fp16 at 256x256, 1 step, CFG 7, 2 threads ($(elapsed "$t0" "$t1") s)"
else
    fail "sdg runs SD 1.5 fp16 at 256x256, 1 step, CFG 7, 2 threads" "status $rc: $(tail -n 3 "$TMP/err" | tr '\n' '|')"
fi
while IFS= read -r line; do echo "# $line"; done <"$TMP/err"

# 3. The engine's figures: "sdg: memory: needs 2.3 GB (model 2.1 GB + working memory 137.1 MB), ..."
# (sizes rounded to one decimal: "2.1 GB" is 2.05-2.15 GB, a +-2.4% uncertainty on the model).
line=$(grep -m1 -E 'memory: needs ' "$TMP/err")
re='model ([0-9.]+) ([A-Za-z]+) \+ working memory ([0-9.]+) ([A-Za-z]+)\)'
model=""
work=""
if [[ $line =~ $re ]]; then
    model=$(bytes "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
    work=$(bytes "${BASH_REMATCH[3]}" "${BASH_REMATCH[4]}")
fi
peak_kib=$(tail -n 1 "$TMP/rss" 2>/dev/null | tr -dc 0-9)
if [ -n "$model" ] && [ -n "$work" ] && [ -n "$peak_kib" ]; then
    ok "the CLI's memory figures and the peak RSS are read"
else
    fail "the CLI's memory figures and the peak RSS are read" "memory line: '$line'" \
        "GNU time: '$(tr '\n' '|' <"$TMP/rss" 2>/dev/null)'"
    fail "peak RSS within ${LIMIT_PERCENT}% of model + working memory" "no figures to compare"
    echo "1..$n"
    exit 1
fi

# 4. The comparison.
peak=$((peak_kib * 1024))
need=$((model + work))
ratio=$(awk -v p="$peak" -v q="$need" 'BEGIN { printf "%.3f", p / q }')
echo "# model $model B + working memory $work B = $need B (CLI); checkpoint file $file_bytes B"
echo "# peak RSS $peak B ($peak_kib KiB) = $ratio x (model + working memory); limit 1.10"
if [ $((peak * 100)) -le $((need * LIMIT_PERCENT)) ]; then
    ok "peak RSS within ${LIMIT_PERCENT}% of model + working memory ($ratio)"
else
    fail "peak RSS within ${LIMIT_PERCENT}% of model + working memory ($ratio)" \
        "peak $peak B > $LIMIT_PERCENT% of $need B"
fi

echo "1..$n"
[ "$failed" -eq 0 ]
