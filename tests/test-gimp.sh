#!/usr/bin/env bash
# test-gimp.sh - the plug-in end to end in a real headless GIMP 2.10 (gimp-console-2.10 -i) with a
# throw-away profile, on the golden tiny model: tests/gimp/test-plugin.scm drives the three
# procedures through Script-Fu and writes TAP to a file; this script installs the plug-in into the
# profile, runs GIMP once, checks GIMP's error messages and prints the TAP.
#
# Usage: test-gimp.sh PLUGIN MODEL VOCAB [ICONS_DIR [MODELS_DIR]]
# With MODELS_DIR (the project's models/, holding the bundled default model) GIMP runs a second
# time, on the default model: tests/gimp/test-default-model.scm. Then a session runs
# tests/gimp/test-memguard.scm under SDG_MEMORY_LIMIT (the memory guard), and a last one
# tests/gimp/test-precision.scm under SDG_KERNELS=c-bf16 (the remembered precision setting), and
# tests/gimp/test-settings.scm (the remembered schedule and hires fix).
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

# run_scm TAG SCRIPT MODEL [VAR=VALUE | -u VAR]...: one gimp-console session running
# tests/gimp-lib.scm and tests/gimp/SCRIPT with sdg-model = MODEL, tap-path = $work/tap-TAG.txt,
# demo-dir = $SDG_DEMO_DIR and sdg-lora = $sdg_lora ("" unless set), in this environment changed by the env(1) arguments; GIMP's
# output goes to $work/stdout-TAG and $work/stderr-TAG. Returns GIMP's exit status.
run_scm() {
  local tag=$1 script=$2 model=$3 batch
  shift 3
  batch="(begin (define sdg-model $(scm_str "$model")) (define tap-path $(scm_str "$work/tap-$tag.txt"))"
  batch="$batch (define demo-dir $(scm_str "${SDG_DEMO_DIR:-}")) (define sdg-lora $(scm_str "${sdg_lora:-}"))"
  batch="$batch (load $(scm_str "$here/gimp-lib.scm")) (load $(scm_str "$here/gimp/$script")))"
  env "$@" timeout 900 "$gimp" -i -d -f --no-splash --batch-interpreter=plug-in-script-fu-eval \
    -b "$batch" -b "(gimp-quit 0)" >"$work/stdout-$tag" 2>"$work/stderr-$tag"
}

# check_session TAG STATUS WHAT: session TAG (its Script-Fu test named WHAT) ran its script to
# the end and GIMP exited with 0.
check_session() {
  emit $(yes_if grep -q '^# script finished' "$work/tap-$1.txt") "the $3 Script-Fu test ran to its end"
  emit $(yes_if [ "$2" = 0 ]) "gimp-console for the $3 test exits with 0 (got $2)"
}

# stderr_tail TAG WHAT: the end of GIMP's stderr in session TAG, for a failure's log.
stderr_tail() {
  echo "# GIMP's stderr ($2):"
  sed 's/^/#   /' "$work/stderr-$1" | tail -n 30
}

# The golden tiny model's LoRA, given to the procedures by path and found by the prompt's
# <lora:NAME> tags in the models folder's loras/ (which holds no default model), beside a copy of
# one of its modules plus one that matches no layer (partial.safetensors: the run tells the user).
lora="$(dirname "$model")/tiny-sd1-lora.safetensors"
if [ -f "$lora" ]; then
  mkdir -p "$SDG_MODELS_DIR/loras"
  ln -s "$lora" "$SDG_MODELS_DIR/loras/tiny-sd1-lora.safetensors"
  python3 - "$lora" "$SDG_MODELS_DIR/loras/partial.safetensors" <<'PY' || lora=""
import json, struct, sys
src = open(sys.argv[1], "rb")
head = json.loads(src.read(struct.unpack("<Q", src.read(8))[0]))
data = src.read()
keep = "lora_te_text_model_encoder_layers_0_mlp_fc1"
out, blob = {}, b""
for name in sorted(head):
    if name.startswith(keep + "."):
        a, b = head[name]["data_offsets"]
        for new in (name, name.replace(keep, "lora_unet_no_such_layer")):
            out[new] = dict(head[name], data_offsets=[len(blob), len(blob) + b - a])
            blob += data[a:b]
text = json.dumps(out).encode()
text += b" " * (-len(text) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(text)) + text + blob)
PY
else
  echo "# no LoRA at '$lora': the LoRA checks are skipped"
  lora=""
fi

# The golden tiny model through every procedure, image type and error (the script's own results,
# renumbered so that ours can follow).
tap="$work/tap-tiny.txt"
sdg_lora=$lora run_scm tiny test-plugin.scm "$model"
rc=$?
relay_tap "$tap"

# The bundled default model: the same script with the model's path (its own vocabulary beside it,
# so no SDG_VOCAB, and its own native size), then test-default-model.scm with the model argument
# left empty and the real models folder, where inpainting must put green inside the selection.
if [ -n "$models" ] && [ -f "$models/sdg-default.safetensors" ]; then
  run_scm default test-plugin.scm "$models/sdg-default.safetensors" -u SDG_VOCAB -u SDG_NATIVE_SIZE
  rc_default=$?
  relay_tap "$work/tap-default.txt"
  run_scm demo test-default-model.scm "" -u SDG_VOCAB -u SDG_NATIVE_SIZE SDG_MODELS_DIR="$models"
  rc_demo=$?
  relay_tap "$work/tap-demo.txt"
  check_session default $rc_default "default model's (default)"
  check_session demo $rc_demo "default model's (demo)"
  if [ $fail = 1 ]; then
    stderr_tail default "default model, default"
    stderr_tail demo "default model, demo"
  fi
else
  echo "# no default model in '$models': its checks are skipped"
fi

# The memory guard: a session of its own, whose plug-ins inherit SDG_MEMORY_LIMIT=21M, more than
# the tiny model's weights (20.4 MB) but less than its 64x64 runs need (about 22.7 MB): every
# procedure is refused with the engine's sentence and leaves the image as it was.
run_scm memguard test-memguard.scm "$model" SDG_MEMORY_LIMIT=21M
rc_mem=$?
relay_tap "$work/tap-memguard.txt"
check_session memguard $rc_mem "memory guard's (SDG_MEMORY_LIMIT=21M)"
emit $(yes_if grep -Eq "Not enough memory: this 64x64 run needs [0-9.]+.MB \(model [0-9.]+.MB \+ working memory [0-9.]+.MB\) but only 21\.0.MB is available \(SDG_MEMORY_LIMIT\); lower the size\." "$work/stderr-memguard") \
  "a run over the memory limit is refused: need, what is available, what to lower"
emit $(yes_if grep -Eq "this run of 2 pictures of 64x64 needs .*; lower the size or the batch count\." "$work/stderr-memguard") \
  "a batch over the memory limit is told to lower the batch count too"
[ $fail = 1 ] && stderr_tail memguard "memory limit"

# Precision: a session of its own on the portable kernel sets (SDG_KERNELS=c-bf16), so the kernels
# each precision runs with are known on any CPU (exact "c", fast "c-bf16").
run_scm precision test-precision.scm "$model" SDG_KERNELS=c-bf16
rc_prec=$?
relay_tap "$work/tap-precision.txt"
check_session precision $rc_prec "precision (SDG_KERNELS=c-bf16)"
emit $(yes_if grep -q "Unknown precision 'bogus' (one of: default, exact, fast)" "$work/stderr-precision") \
  "an unknown precision names the known ones"
[ $fail = 1 ] && stderr_tail precision precision

# The dialog's schedule and hires fix settings, written into the remembered values (a session of
# its own: it runs on the last values of text to image).
run_scm settings test-settings.scm "$model"
rc_set=$?
relay_tap "$work/tap-settings.txt"
check_session settings $rc_set "dialog settings' (schedule, hires fix)"
emit $(yes_if grep -q "Unknown schedule 'bogus' (one of: default, karras, simple, exponential, sgm_uniform, ddim_uniform, trailing)" "$work/stderr-settings") \
  "an unknown schedule names the known ones"
emit $(yes_if grep -q "Unknown hires fix upscale 'bicubic' (one of: latent, pixel)" "$work/stderr-settings") \
  "an unknown hires upscale names the known ones"
[ $fail = 1 ] && stderr_tail settings settings

finished=0
grep -q '^# script finished' "$tap" 2>/dev/null && finished=1
emit $finished "the Script-Fu test ran to its end"
emit $([ $rc = 0 ] && echo 1 || echo 0) "gimp-console exits with 0 (got $rc)"
emit $(grep -q "sdg-missing.safetensors' does not exist" "$work/stderr-tiny" && echo 1 || echo 0) \
  "a bad model path reports which file is missing"
emit $(grep -q "default model 'sdg-default.safetensors' is not installed" "$work/stderr-tiny" && echo 1 || echo 0) \
  "an empty model with no default model installed says so"
emit $(grep -q "indexed images" "$work/stderr-tiny" && echo 1 || echo 0) \
  "an indexed image gets a clear message"
emit $(grep -q "needs a selection" "$work/stderr-tiny" && echo 1 || echo 0) \
  "inpaint without a selection says it needs one"
if [ -n "$lora" ]; then
  emit $(yes_if grep -q "The LoRA file '/nonexistent/sdg-missing-lora.safetensors' does not exist" "$work/stderr-tiny") \
    "a missing LoRA file is named"
  emit $(yes_if grep -q "LoRA entry '.*tiny-sd1-lora.safetensors:11' must be from -10 to 10 (got 11)" "$work/stderr-tiny") \
    "a LoRA weight out of range is named with the range"
  emit $(yes_if grep -q "LoRA entry '.*tiny-sd1-lora.safetensors:strong' has 'strong' as its weight, not a number" "$work/stderr-tiny") \
    "a LoRA entry that is not FILE:WEIGHT is named"
  emit $(yes_if grep -q "sdg-no-such-lora" "$work/stderr-tiny") "an unknown <lora:NAME> tag is named"
  emit $(yes_if grep -q "lora_unet_no_such_layer" "$work/stderr-tiny") \
    "the note on a LoRA module that matches no layer reaches the user"
fi
# GIMP writes what query() registered into the profile's pluginrc.
for proc in text-to-image image-to-image inpaint; do
  emit $(grep -q "diffusion-$proc.png" "$GIMP2_DIRECTORY/pluginrc" 2>/dev/null && echo 1 || echo 0) \
    "plug-in-diffusion-$proc carries its icon"
done
emit $(grep -c '"<Image>/Filters/Diffusion"' "$GIMP2_DIRECTORY/pluginrc" 2>/dev/null | grep -qx 3 \
       && echo 1 || echo 0) "the three procedures are under Filters > Diffusion"
emit $(grep -qiE "crash|segmentation|wire read|terminated" "$work/stderr-tiny" && echo 0 || echo 1) \
  "no plug-in crashed"

if [ $fail = 1 ] || [ $finished = 0 ]; then
  echo "# GIMP's stderr:"
  sed 's/^/#   /' "$work/stderr-tiny" | tail -n 80
fi
echo "1..$n"
exit 0
