#!/usr/bin/env bash
# tools/fuzz.sh - builds and runs the libFuzzer harnesses of tests/fuzz (see its README.md).
#
#   bash tools/fuzz.sh HARNESS MINUTES   a campaign: fuzz_safetensors, fuzz_model, fuzz_vocab,
#                                        fuzz_prompt, fuzz_embedding or fuzz_lora (or "all", one after the
#                                        other) for MINUTES
#                                        each; new inputs collect in $FUZZ_WORK/corpus/HARNESS,
#                                        findings in $FUZZ_WORK/findings/HARNESS
#   bash tools/fuzz.sh ci SECONDS        what CI runs: replay every committed corpus input and
#                                        crash reproducer, then fuzz each harness SECONDS; fails on
#                                        any crash, leak, timeout or UBSan report
#   bash tools/fuzz.sh replay [FILE...]  replays the committed inputs (or the given files)
#
# The build (clang, ASan + UBSan + libFuzzer) goes to $FUZZ_BUILD (default build-fuzz). Each run
# prints libFuzzer's final line per harness: executions, coverage (cov: edges, ft: features) and
# corpus size. Needs clang, libomp-dev and libclang-rt-dev (bash .ci/run deps installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_WORK=${FUZZ_WORK:-$FUZZ_BUILD/fuzz-work}
HARNESSES=(fuzz_safetensors fuzz_model fuzz_vocab fuzz_prompt fuzz_embedding fuzz_lora)
# Per input: a generous time limit (the model harness runs three networks under ASan), and
# libFuzzer's memory limit. UBSan and ASan findings abort; leaks are findings.
FLAGS=(-timeout=30 -rss_limit_mb=2560 -max_len=262144 -print_final_stats=1)
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# intercept_strstr=0: see tokenizer.c's load_openai; detect_leaks is libFuzzer's default.
export ASAN_OPTIONS=${ASAN_OPTIONS:-intercept_strstr=0:detect_leaks=1}

build() {
  local ref=${SDG_REFERENCE_DIR:-$PWD/../shared/reference}
  if [ ! -f "$FUZZ_BUILD/build.ninja" ]; then
    CC=clang meson setup "$FUZZ_BUILD" -Dfuzz=true -Db_sanitize=address,undefined \
      -Db_lundef=false -Dgimp=disabled -Dbuildtype=debugoptimized -Dreference_dir="$ref" >/dev/null
  fi
  ninja -C "$FUZZ_BUILD" "${HARNESSES[@]/#/tests/fuzz/}"
}

exe() { echo "$FUZZ_BUILD/tests/fuzz/$1"; }

# Every committed input of one harness, run once each.
replay_one() {
  local h=$1 files=()
  for d in tests/fuzz/corpus/$h tests/fuzz/crashes/$h; do
    [ -d "$d" ] && while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$d" -type f -print0)
  done
  [ ${#files[@]} -gt 0 ] || return 0
  echo "== $h: replaying ${#files[@]} committed inputs"
  "$(exe "$h")" "${FLAGS[@]}" "${files[@]}" > "$FUZZ_WORK/$h.replay.log" 2>&1 ||
    { tail -40 "$FUZZ_WORK/$h.replay.log"; echo "FAIL: $h crashed on a committed input"; return 1; }
}

# Fuzzes one harness for a number of seconds, starting from the committed corpus.
campaign() {
  local h=$1 secs=$2
  local corpus=$FUZZ_WORK/corpus/$h findings=$FUZZ_WORK/findings/$h
  mkdir -p "$corpus" "$findings"
  local dict=()
  [ -f "tests/fuzz/$h.dict" ] && dict=(-dict="tests/fuzz/$h.dict")
  echo "== $h: fuzzing for $secs s"
  local rc=0
  "$(exe "$h")" "${FLAGS[@]}" "${dict[@]}" -max_total_time="$secs" -artifact_prefix="$findings/" \
    "$corpus" "tests/fuzz/corpus/$h" > "$FUZZ_WORK/$h.log" 2>&1 || rc=$?
  grep -E "^#[0-9]+ +DONE|^stat::number_of_executed_units|^stat::peak_rss_mb" "$FUZZ_WORK/$h.log" |
    sed "s/^/   /" || true
  if [ $rc -ne 0 ]; then
    tail -60 "$FUZZ_WORK/$h.log"
    echo "FAIL: $h found a problem; the input is in $findings/ (add it to tests/fuzz/crashes/$h/ once fixed)"
    return 1
  fi
}

mkdir -p "$FUZZ_WORK"
case "${1:-}" in
  ci)
    secs=${2:-60}
    build
    status=0
    for h in "${HARNESSES[@]}"; do replay_one "$h" || status=1; done
    # Two harnesses at a time, one core each (CI's machines have two); each prints its summary
    # when it ends.
    for ((i = 0; i < ${#HARNESSES[@]}; i += 2)); do
      pids=()
      for h in "${HARNESSES[@]:i:2}"; do
        campaign "$h" "$secs" > "$FUZZ_WORK/$h.summary" 2>&1 & pids+=($!)
      done
      for ((k = 0; k < ${#pids[@]}; k++)); do
        wait "${pids[k]}" || status=1
        cat "$FUZZ_WORK/${HARNESSES[i + k]}.summary"
      done
    done
    exit $status ;;
  replay)
    build
    shift
    if [ $# -gt 0 ]; then
      for f in "$@"; do
        h=$(basename "$(dirname "$f")")
        "$(exe "$h")" "${FLAGS[@]}" "$f"
      done
    else
      status=0
      for h in "${HARNESSES[@]}"; do replay_one "$h" || status=1; done
      exit $status
    fi ;;
  fuzz_*|all)
    [ $# -eq 2 ] || { echo "usage: bash tools/fuzz.sh HARNESS MINUTES" >&2; exit 2; }
    build
    if [ "$1" = all ]; then list=("${HARNESSES[@]}"); else list=("$1"); fi
    for h in "${list[@]}"; do
      [ -x "$(exe "$h")" ] || { echo "no harness $h (have: ${HARNESSES[*]})" >&2; exit 2; }
      campaign "$h" $(( $2 * 60 ))
    done ;;
  *)
    sed -n '2,16p' "$0" >&2
    exit 2 ;;
esac
