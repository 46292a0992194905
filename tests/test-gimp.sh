#!/usr/bin/env bash
# test-gimp.sh - the plug-in end to end in a real headless GIMP 2.10 (gimp-console-2.10 -i) with a
# throw-away profile, on the golden tiny model: tests/gimp/test-plugin.scm drives the three
# procedures through Script-Fu and writes TAP to a file; this script installs the plug-in into the
# profile, runs GIMP once, checks GIMP's error messages and prints the TAP.
#
# Usage: test-gimp.sh PLUGIN MODEL VOCAB [ICONS_DIR [MODELS_DIR]]
# With MODELS_DIR (the project's models/, holding the bundled default model) GIMP runs a second
# time, on the default model: tests/gimp/test-default-model.scm.
# Skips (TAP "1..0 # SKIP") only when gimp-console-2.10 is not installed.
# Environment: SDG_KEEP_TEST_DIR=1 keeps the work folder (profile, GIMP's stderr);
# SDG_PLUGIN_WRAPPER runs the plug-in through a command (valgrind); SDG_DEMO_DIR=folder saves
# the default model's inpainting before/after pictures there (docs/ for the README).
#
# Not here: the checks themselves (test-plugin.scm), unit tests of the region maths.
set -u

plugin=${1:?plug-in executable}
model=${2:?model}
vocab=${3:?vocab}
icons=${4:-}
models=${5:-}
here=$(cd "$(dirname "$0")" && pwd)

gimp=$(command -v gimp-console-2.10 || true)
if [ -z "$gimp" ]; then
  echo "1..0 # SKIP gimp-console-2.10 is not installed"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sdg-gimp-test.XXXXXX") || exit 1
trap '[ -n "${SDG_KEEP_TEST_DIR:-}" ] || rm -rf "$work"' EXIT

# A profile of our own: nothing read from or written to the user's GIMP settings.
export GIMP2_DIRECTORY="$work/profile"
mkdir -p "$GIMP2_DIRECTORY/plug-ins/gimp-diffusion" "$GIMP2_DIRECTORY/gradients" \
         "$GIMP2_DIRECTORY/brushes" "$GIMP2_DIRECTORY/patterns" "$GIMP2_DIRECTORY/palettes" \
         "$GIMP2_DIRECTORY/tool-presets" "$GIMP2_DIRECTORY/dynamics"
if [ -n "${SDG_PLUGIN_WRAPPER:-}" ]; then
  # e.g. SDG_PLUGIN_WRAPPER="valgrind --leak-check=full --log-file=/tmp/vg.%p": GIMP runs the
  # plug-in through this (the icons are then looked up in the installed datadir).
  printf '#!/bin/sh\nexec %s %q "$@"\n' "$SDG_PLUGIN_WRAPPER" "$(realpath "$plugin")" \
    >"$GIMP2_DIRECTORY/plug-ins/gimp-diffusion/gimp-diffusion"
  chmod +x "$GIMP2_DIRECTORY/plug-ins/gimp-diffusion/gimp-diffusion"
else
  cp "$plugin" "$GIMP2_DIRECTORY/plug-ins/gimp-diffusion/gimp-diffusion" || exit 1
fi
if [ -n "$icons" ] && [ -d "$icons" ]; then
  mkdir -p "$GIMP2_DIRECTORY/plug-ins/gimp-diffusion/icons"
  cp "$icons"/diffusion-*.png "$GIMP2_DIRECTORY/plug-ins/gimp-diffusion/icons/" 2>/dev/null
fi

# The plug-in finds the vocabulary through SDG_VOCAB; a missing default model must not be found
# by accident in an installed models folder.
. "$here/gimp-lib.sh"
gimp_test_env "$work" "$vocab"

tap="$work/tap.txt"
batch="(begin (define sdg-model $(scm_str "$model")) (define tap-path $(scm_str "$tap"))"
batch="$batch (load $(scm_str "$here/gimp/test-plugin.scm")))"

timeout 900 "$gimp" -i -d -f --no-splash --batch-interpreter=plug-in-script-fu-eval \
  -b "$batch" -b "(gimp-quit 0)" >"$work/stdout" 2>"$work/stderr"
rc=$?


# The script's own results, renumbered so that ours can follow.
relay_tap "$tap"

# The default model: a second GIMP with the real models folder and the model's own vocabulary.
tap2="$work/tap-default.txt"
if [ -n "$models" ] && [ -f "$models/sdg-default.safetensors" ]; then
  batch="(begin (define tap-path $(scm_str "$tap2")) (define demo-dir $(scm_str "${SDG_DEMO_DIR:-}"))"
  batch="$batch (load $(scm_str "$here/gimp/test-default-model.scm")))"
  env -u SDG_VOCAB -u SDG_NATIVE_SIZE SDG_MODELS_DIR="$models" \
    timeout 600 "$gimp" -i -d -f --no-splash --batch-interpreter=plug-in-script-fu-eval \
    -b "$batch" -b "(gimp-quit 0)" >"$work/stdout-default" 2>"$work/stderr-default"
  rc2=$?
  relay_tap "$tap2"
  emit $(grep -q '^# script finished' "$tap2" 2>/dev/null && echo 1 || echo 0) \
    "the default model's Script-Fu test ran to its end"
  emit $([ $rc2 = 0 ] && echo 1 || echo 0) "gimp-console on the default model exits with 0 (got $rc2)"
  if [ $fail = 1 ]; then
    echo "# GIMP's stderr (default model):"
    sed 's/^/#   /' "$work/stderr-default" | tail -n 40
  fi
else
  echo "# no default model in '$models': its checks are skipped"
fi

finished=0
grep -q '^# script finished' "$tap" 2>/dev/null && finished=1
emit $finished "the Script-Fu test ran to its end"
emit $([ $rc = 0 ] && echo 1 || echo 0) "gimp-console exits with 0 (got $rc)"
emit $(grep -q "sdg-missing.safetensors' does not exist" "$work/stderr" && echo 1 || echo 0) \
  "a bad model path reports which file is missing"
emit $(grep -q "default model 'sdg-default.safetensors' is not installed" "$work/stderr" && echo 1 || echo 0) \
  "an empty model with no default model installed says so"
emit $(grep -q "indexed images" "$work/stderr" && echo 1 || echo 0) \
  "an indexed image gets a clear message"
emit $(grep -q "needs a selection" "$work/stderr" && echo 1 || echo 0) \
  "inpaint without a selection says it needs one"
# GIMP writes what query() registered into the profile's pluginrc.
for proc in text-to-image image-to-image inpaint; do
  emit $(grep -q "diffusion-$proc.png" "$GIMP2_DIRECTORY/pluginrc" 2>/dev/null && echo 1 || echo 0) \
    "plug-in-diffusion-$proc carries its icon"
done
emit $(grep -c '"<Image>/Filters/Diffusion"' "$GIMP2_DIRECTORY/pluginrc" 2>/dev/null | grep -qx 3 \
       && echo 1 || echo 0) "the three procedures are under Filters > Diffusion"
emit $(grep -qiE "crash|segmentation|wire read|terminated" "$work/stderr" && echo 0 || echo 1) \
  "no plug-in crashed"

if [ $fail = 1 ] || [ $finished = 0 ]; then
  echo "# GIMP's stderr:"
  sed 's/^/#   /' "$work/stderr" | tail -n 80
fi
echo "1..$n"
exit 0
