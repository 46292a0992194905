#!/usr/bin/env bash
# test-gimp3.sh - the GIMP 3 plug-in end to end in a real headless GIMP 3.0 (gimp-console-3.0 -i)
# with a throw-away profile, on the golden tiny model: tests/gimp3/test-plugin.scm drives the
# three procedures through Script-Fu 3 (named arguments) and writes TAP to a file; this script
# installs the plug-in into the profile (GIMP 3 wants it in a folder of its own name), runs GIMP
# once under a timeout, checks the registration GIMP wrote to pluginrc and GIMP's error messages,
# and prints the TAP; a second session runs tests/gimp3/test-memguard.scm under SDG_MEMORY_LIMIT
# (the memory guard), a third tests/gimp3/test-precision.scm under SDG_KERNELS=c-bf16 on last
# values written beforehand (the remembered precision), a fourth tests/gimp3/test-settings.scm (the
# remembered schedule and hires fix). The GIMP 3 port of tests/test-gimp.sh.
#
# Usage: test-gimp3.sh PLUGIN MODEL VOCAB [ICONS_DIR]
# Skips (TAP "1..0 # SKIP") only when gimp-console-3.0 is not installed.
# Environment: SDG_KEEP_TEST_DIR=1 keeps the work folder (profile, GIMP's stderr);
# SDG_PLUGIN_WRAPPER runs the plug-in through a command (valgrind); SDG_GIMP3_TIMEOUT (seconds,
# default 900) bounds the GIMP session.
#
# Not here: the checks on images (test-plugin.scm), the dialog (test-dialog.sh).
set -u

plugin=${1:?plug-in executable}
model=${2:?model}
vocab=${3:?vocab}
icons=${4:-}
here=$(cd "$(dirname "$0")" && pwd)

gimp=$(command -v gimp-console-3.0 || true)
if [ -z "$gimp" ]; then
  echo "1..0 # SKIP gimp-console-3.0 is not installed"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sdg-gimp3-test.XXXXXX") || exit 1
trap '[ -n "${SDG_KEEP_TEST_DIR:-}" ] || rm -rf "$work"' EXIT

# A profile of our own: nothing read from or written to the user's GIMP settings.
export GIMP3_DIRECTORY="$work/profile"
dest="$GIMP3_DIRECTORY/plug-ins/gimp-diffusion"
mkdir -p "$dest" || exit 1
if [ -n "${SDG_PLUGIN_WRAPPER:-}" ]; then
  # e.g. SDG_PLUGIN_WRAPPER="valgrind --leak-check=full --log-file=/tmp/vg.%p": GIMP runs the
  # plug-in through this (the icons are then looked up in the installed datadir).
  printf '#!/bin/sh\nexec %s %q "$@"\n' "$SDG_PLUGIN_WRAPPER" "$(realpath "$plugin")" \
    >"$dest/gimp-diffusion"
  chmod +x "$dest/gimp-diffusion"
else
  cp "$plugin" "$dest/gimp-diffusion" || exit 1
fi
if [ -n "$icons" ] && [ -d "$icons" ]; then
  mkdir -p "$dest/icons"
  cp "$icons"/diffusion-*.png "$dest/icons/" 2>/dev/null
fi

# The plug-in finds the vocabulary through SDG_VOCAB; a missing default model must not be found
# by accident in an installed models folder.
. "$here/gimp-lib.sh"
gimp_test_env "$work" "$vocab"

# The golden tiny model's LoRA, given by path and found by a prompt tag in the models folder's
# loras/ (which holds no default model).
lora="$(dirname "$model")/tiny-sd1-lora.safetensors"
if [ -f "$lora" ]; then
  mkdir -p "$SDG_MODELS_DIR/loras"
  ln -s "$lora" "$SDG_MODELS_DIR/loras/tiny-sd1-lora.safetensors"
else
  echo "# no LoRA at '$lora': the LoRA checks are skipped"
  lora=""
fi

tap="$work/tap.txt"
# GIMP 3 stops at a failing batch command and never runs the next one, (gimp-quit 0) included:
# the script catches its own errors, and the session runs under a timeout all the same.
batch="(begin (define sdg-model $(scm_str "$model")) (define tap-path $(scm_str "$tap"))"
batch="$batch (define sdg-lora $(scm_str "$lora"))"
batch="$batch (load $(scm_str "$here/gimp-lib.scm")) (load $(scm_str "$here/gimp3/test-plugin.scm")))"

timeout "${SDG_GIMP3_TIMEOUT:-900}" "$gimp" -i -d -f --no-splash \
  --batch-interpreter=plug-in-script-fu-eval -b "$batch" -b "(gimp-quit 0)" \
  >"$work/stdout" 2>"$work/stderr"
rc=$?


# The memory guard: a session of its own, whose plug-ins inherit SDG_MEMORY_LIMIT=21M, more than
# the tiny model's weights (20.4 MB) but less than its 64x64 runs need (about 22.7 MB).
tap_mem="$work/tap-memguard.txt"
batch="(begin (define sdg-model $(scm_str "$model")) (define tap-path $(scm_str "$tap_mem"))"
batch="$batch (load $(scm_str "$here/gimp-lib.scm")) (load $(scm_str "$here/gimp3/test-memguard.scm")))"
SDG_MEMORY_LIMIT=21M timeout "${SDG_GIMP3_TIMEOUT:-900}" "$gimp" -i -d -f --no-splash \
  --batch-interpreter=plug-in-script-fu-eval -b "$batch" -b "(gimp-quit 0)" \
  >"$work/stdout-memguard" 2>"$work/stderr-memguard"
rc_mem=$?

# Precision: a session of its own on the portable kernel sets (SDG_KERNELS=c-bf16), so the kernels
# each precision runs with are known on any CPU (exact "c", fast "c-bf16"). Its last values are
# written first, as the dialog would leave them (GimpConfig's format, the file libgimp 3.0's
# begin_run reads for RUN_WITH_LAST_VALS), each with a precision of its own.
settings="$GIMP3_DIRECTORY/plug-in-settings"
mkdir -p "$settings"
write_last() {   # PROC PRECISION [EXTRA-LINE]
  printf '# settings\n\n(prompt "a red fox")\n(negative-prompt "")\n(model %s)\n(sampler "euler")\n(steps 2)\n(cfg-scale 7)\n(seed 1)\n(batch-count 1)\n(random-seed no)\n(precision "%s")\n%s\n# end of settings\n' \
    "$(scm_str "$model")" "$2" "${3:-}" >"$settings/GimpProcedureConfigRun-plug-in-diffusion-$1.last"
}
write_last text-to-image exact
write_last image-to-image fast "(strength 0.5)"
write_last inpaint bogus "(strength 1)"
tap_prec="$work/tap-precision.txt"
batch="(begin (define sdg-model $(scm_str "$model")) (define tap-path $(scm_str "$tap_prec"))"
batch="$batch (load $(scm_str "$here/gimp-lib.scm")) (load $(scm_str "$here/gimp3/test-precision.scm")))"
SDG_KERNELS=c-bf16 timeout "${SDG_GIMP3_TIMEOUT:-900}" "$gimp" -i -d -f --no-splash \
  --batch-interpreter=plug-in-script-fu-eval -b "$batch" -b "(gimp-quit 0)" \
  >"$work/stdout-precision" 2>"$work/stderr-precision"
rc_prec=$?

# The dialog's schedule and hires fix: the script writes the last values of text to image itself
# before each Repeat (a session of its own).
tap_set="$work/tap-settings.txt"
batch="(begin (define sdg-model $(scm_str "$model")) (define tap-path $(scm_str "$tap_set"))"
batch="$batch (define last-path $(scm_str "$settings/GimpProcedureConfigRun-plug-in-diffusion-text-to-image.last"))"
batch="$batch (load $(scm_str "$here/gimp-lib.scm")) (load $(scm_str "$here/gimp3/test-settings.scm")))"
timeout "${SDG_GIMP3_TIMEOUT:-900}" "$gimp" -i -d -f --no-splash \
  --batch-interpreter=plug-in-script-fu-eval -b "$batch" -b "(gimp-quit 0)" \
  >"$work/stdout-settings" 2>"$work/stderr-settings"
rc_set=$?

# The script's own results, renumbered so that ours can follow.
relay_tap "$tap"
relay_tap "$tap_mem"
relay_tap "$tap_prec"
relay_tap "$tap_set"
emit $(yes_if grep -q '^# script finished' "$tap_set") "the settings Script-Fu test ran to its end"
emit $(yes_if [ $rc_set = 0 ]) "gimp-console-3.0 for the settings test exits with 0 (got $rc_set)"
emit $(yes_if grep -q "Unknown schedule 'bogus' (one of: default, karras, simple, exponential, sgm_uniform, ddim_uniform, trailing)" "$work/stderr-settings") \
  "an unknown schedule names the known ones"
emit $(yes_if grep -q "Unknown hires fix upscale 'bicubic' (one of: latent, pixel)" "$work/stderr-settings") \
  "an unknown hires upscale names the known ones"
emit $(yes_if grep -q '^# script finished' "$tap_prec") "the precision Script-Fu test ran to its end"
emit $(yes_if [ $rc_prec = 0 ]) "gimp-console-3.0 with SDG_KERNELS=c-bf16 exits with 0 (got $rc_prec)"
emit $(yes_if grep -q "Unknown precision 'bogus' (one of: default, exact, fast)" "$work/stderr-precision") \
  "an unknown precision names the known ones"
emit $(yes_if grep -q '^# script finished' "$tap_mem") "the memory guard's Script-Fu test ran to its end"
emit $(yes_if [ $rc_mem = 0 ]) "gimp-console-3.0 with SDG_MEMORY_LIMIT exits with 0 (got $rc_mem)"
emit $(yes_if grep -Eq "Not enough memory: this 64x64 run needs [0-9.]+.MB \(model [0-9.]+.MB \+ working memory [0-9.]+.MB\) but only 21\.0.MB is available \(SDG_MEMORY_LIMIT\); lower the size\." "$work/stderr-memguard") \
  "a run over the memory limit is refused: need, what is available, what to lower"
emit $(yes_if grep -Eq "this run of 2 pictures of 64x64 needs .*; lower the size or the batch count\." "$work/stderr-memguard") \
  "a batch over the memory limit is told to lower the batch count too"

finished=$(yes_if grep -q '^# script finished' "$tap")
emit "$finished" "the Script-Fu test ran to its end"
emit $(yes_if [ $rc = 0 ]) "gimp-console-3.0 exits with 0 (got $rc)"
emit $(yes_if grep -q "sdg-missing.safetensors' does not exist" "$work/stderr") \
  "a bad model path reports which file is missing"
emit $(yes_if grep -q "default model 'sdg-default.safetensors' is not installed" "$work/stderr") \
  "an empty model with no default model installed says so"
emit $(yes_if grep -q "indexed images" "$work/stderr") "an indexed image gets a clear message"
emit $(yes_if grep -q "needs a selection" "$work/stderr") "inpaint without a selection says it needs one"
emit $(yes_if grep -q "works on exactly one drawable" "$work/stderr") \
  "two drawables get a clear message"
if [ -n "$lora" ]; then
  emit $(yes_if grep -q "The LoRA file '/nonexistent/sdg-missing-lora.safetensors' does not exist" "$work/stderr") \
    "a missing LoRA file is named"
fi

# What GIMP stored of the registration: per procedure its icon, menu path and argument names in
# order (pluginrc lists them as (proc-arg TYPE "GParamX" "gtype" "name" ...)).
rc_file="$GIMP3_DIRECTORY/pluginrc"
args_of() {   # the argument names of procedure $1, space-separated
  awk -v proc="\"$1\"" '
    $1 == "(proc-def" { inproc = ($2 == proc) }
    inproc && $1 == "(proc-arg" { gsub(/"/, "", $5); printf "%s ", $5 }' "$rc_file" 2>/dev/null
}
common="run-mode image drawables prompt negative-prompt model sampler steps cfg-scale seed batch-count"
for proc in text-to-image image-to-image inpaint; do
  want="$common"
  [ $proc = text-to-image ] || want="$want strength"
  want="$want loras"
  got=$(args_of "plug-in-diffusion-$proc")
  emit $(yes_if [ "${got# }" != "" ] && [ "${got#"$want "}" != "$got" ] || [ "$got" = "$want " ]) \
    "plug-in-diffusion-$proc: arguments in the documented order (got: ${got% })"
  emit $(yes_if grep -q "diffusion-$proc.png" "$rc_file") "plug-in-diffusion-$proc carries its icon"
done
emit $(yes_if [ "$(grep -c '"<Image>/Filters/Diffusion"' "$rc_file" 2>/dev/null)" = 3 ]) \
  "the three procedures are under Filters > Diffusion"
# GIMP 3 names a plug-in that died in its messages ("... crashed", "terminated"); GIMP's own
# harmless warnings (script-fu-interpreter without a display, LibGimp's "gimp_flush(): Broken
# pipe" when GIMP closes a finished plug-in's pipe first) are not ours.
crashed=$(yes_if grep -iE "gimp-diffusion.*(crash|segmentation|terminated|killed)" "$work/stderr")
emit $((1 - crashed)) "no plug-in crashed"

if [ $fail = 1 ] || [ "$finished" = 0 ]; then
  echo "# GIMP's stderr:"
  sed 's/^/#   /' "$work/stderr" | tail -n 80
  echo "# GIMP's stderr (memory limit):"
  sed 's/^/#   /' "$work/stderr-memguard" | tail -n 30
  echo "# GIMP's stderr (precision):"
  sed 's/^/#   /' "$work/stderr-precision" | tail -n 30
fi
echo "1..$n"
exit 0
