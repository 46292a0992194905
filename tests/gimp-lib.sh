# gimp-lib.sh - what the GIMP end-to-end scripts (test-gimp.sh, test-gimp3.sh, test-undo.sh,
# test-dialog.sh) share; sourced, not run. Not here: anything that differs between GIMP 2.10 and 3.0.

# scm_str TEXT: TEXT as a Scheme string literal.
scm_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }

# yes_if CMD...: 1 when CMD succeeds, else 0 (for emit).
yes_if() { if "$@"; then echo 1; else echo 0; fi; }

# emit PASS NAME: one TAP line, numbered on; any failure sets fail=1.
n=0
fail=0
emit() {
  n=$((n + 1))
  if [ "$1" = 1 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=1; fi
}

# relay_tap FILE: a Script-Fu test's TAP lines, renumbered so that the caller's can follow;
# comments pass through, its plan is dropped.
relay_tap() {
  [ -f "$1" ] || return 0
  local line
  while IFS= read -r line; do
    case "$line" in
      "ok "*)     emit 1 "${line#* - }" ;;
      "not ok "*) emit 0 "${line#* - }" ;;
      "1.."*)     ;;
      *)          echo "$line" ;;
    esac
  done <"$1"
}

# gimp_test_env WORK VOCAB: the plug-in's environment for a run on the tiny golden model - its
# vocabulary, no models folder, generation at about 64x64 (the tiny model is slow at its native
# 512x512) - with GEGL/babl caches, fontconfig and GIMP's config kept inside the throw-away WORK.
gimp_test_env() {
  export SDG_VOCAB="$2"
  export SDG_MODELS_DIR="$1/no-models"
  export SDG_NATIVE_SIZE=64
  export OMP_WAIT_POLICY=passive
  export HOME="$1"
  export XDG_CACHE_HOME="$1/cache"
  export XDG_CONFIG_HOME="$1/config"
}
