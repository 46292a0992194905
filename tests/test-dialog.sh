#!/usr/bin/env bash
# test-dialog.sh - opens the Filters > Diffusion dialog of every mode in a real GIMP 2.10 under
# Xvfb and photographs it (TAP). The plug-in's test hook (SDGP_DIALOG_SCREENSHOT, ui/dialog.c)
# saves the dialog window as OUTDIR/dialog-gimp2-MODE.png once it is drawn, then closes it as if
# the user pressed Close; this script checks that each picture exists and has a plausible size.
# A second GIMP session (SDGP_DIALOG_AUTORUN) presses Generate in the text-to-image dialog and
# photographs the run half-way (progress bar, preview, Cancel), OUTDIR/dialog-gimp2-text-to-
# image-running.png. docs/dialog-gimp2.png is a copy of one of the pictures.
#
# The tiny random-weight model of the reference data ($SDG_REFERENCE_DIR) serves as the models
# folder's checkpoint; without it the dialogs open on defaults and the running picture is skipped.
# Not here: judging the look, or the pictures the model makes (tests/test-gimp.sh).
#
# Usage: test-dialog.sh PLUGIN_EXECUTABLE OUTDIR [ICONS_DIR]
# ICONS_DIR's PNGs are put beside the plug-in (its user-local icon folder), so the procedures
# register with their icons as they would installed.
# Exits 77 (skip) when gimp-2.10 or xvfb-run is missing.
set -u

plugin=${1:?usage: test-dialog.sh PLUGIN_EXECUTABLE OUTDIR}
outdir=${2:?usage: test-dialog.sh PLUGIN_EXECUTABLE OUTDIR}
icons=${3:-}

for tool in gimp-2.10 xvfb-run; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "1..0 # SKIP $tool not installed"
    exit 0   # meson's TAP protocol reports any other status (77 included) as an error
  fi
done
if [ ! -x "$plugin" ]; then
  echo "Bail out! no plug-in executable at $plugin"
  exit 1
fi

modes=(text-to-image image-to-image inpaint)

# A throw-away GIMP profile holding only our plug-in, so the user's settings play no part.
profile=$(mktemp -d "${TMPDIR:-/tmp}/sdgp-gimp-profile.XXXXXX")
trap 'rm -rf "$profile"' EXIT
mkdir -p "$profile/plug-ins/gimp-diffusion" "$outdir"
cp "$plugin" "$profile/plug-ins/gimp-diffusion/gimp-diffusion"
chmod +x "$profile/plug-ins/gimp-diffusion/gimp-diffusion"
if [ -n "$icons" ] && [ -d "$icons" ]; then
  mkdir -p "$profile/plug-ins/gimp-diffusion/icons"
  cp "$icons"/diffusion-*.png "$profile/plug-ins/gimp-diffusion/icons/"
fi
for m in "${modes[@]}" text-to-image-running; do
  rm -f "$outdir/dialog-gimp2-$m.png"
done

# A models folder holding the tiny random-weight model of the reference data (when there is one),
# so the model list shows a checkpoint and the warm-up runs below can work.
models="$profile/models"
mkdir -p "$models"
ref=${SDG_REFERENCE_DIR:-}
tiny=""
if [ -n "$ref" ] && [ -f "$ref/golden/tiny-sd1.safetensors" ] && [ -f "$ref/vocab/bpe_simple_vocab_16e6.txt.gz" ]; then
  ln -s "$ref/golden/tiny-sd1.safetensors" "$models/tiny-sd1.safetensors"
  ln -s "$ref/vocab/bpe_simple_vocab_16e6.txt.gz" "$models/bpe_simple_vocab_16e6.txt.gz"
  tiny="$models/tiny-sd1.safetensors"
fi

# One image with a layer and a selection (the procedures' PDB arguments, plugin/gimp2/main.c:
# prompt, negative prompt, model, sampler, steps, CFG, seed, batch count, and strength).
# Batch commands share no variables, so each finds the image again (the only one) through with_img.
setup='
(let* ((img (car (gimp-image-new 256 256 RGB)))
       (layer (car (gimp-layer-new img 256 256 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL))))
  (gimp-image-insert-layer img layer 0 0)
  (gimp-drawable-fill layer FILL-WHITE)
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 64 64 128 128))'
with_img() {
  echo "(let* ((img (vector-ref (cadr (gimp-image-list)) 0)) (layer (car (gimp-image-get-active-layer img)))) $1)"
}

# Warm-up: one short (2-step) non-interactive run per mode with the tiny model, so that each
# dialog opens on remembered values (a prompt, the chosen model) as it would for a user. Each is
# its own batch command, so one that fails does not stop the others; the dialogs open either way.
warmups=()
if [ -n "$tiny" ]; then
  warmups=(
    -b "$(with_img "(plug-in-diffusion-text-to-image RUN-NONINTERACTIVE img layer \"a red circle on a white wall, studio light\" \"blurry, text\" \"$tiny\" \"euler_a\" 2 7.0 42 1)")"
    -b "$(with_img "(plug-in-diffusion-image-to-image RUN-NONINTERACTIVE img layer \"the same wall in watercolour\" \"blurry\" \"$tiny\" \"dpmpp_2m\" 2 7.0 7 1 0.6)")"
    -b "$(with_img "(plug-in-diffusion-inpaint RUN-NONINTERACTIVE img layer \"a blue vase of flowers\" \"blurry\" \"$tiny\" \"euler_a\" 2 7.0 1234 1 1.0)")"
  )
fi

# The dialogs: each closes itself after its picture, so the batch goes on.
dialogs=$(with_img '
  (plug-in-diffusion-text-to-image RUN-INTERACTIVE img layer "" "" "" "euler_a" 20 7.0 -1 1)
  (plug-in-diffusion-image-to-image RUN-INTERACTIVE img layer "" "" "" "euler_a" 20 7.0 -1 1 0.75)
  (plug-in-diffusion-inpaint RUN-INTERACTIVE img layer "" "" "" "euler_a" 20 7.0 -1 1 1.0)')

# run_gimp LOG [ENV=VALUE...] -- BATCH-ARGS...: one GIMP session under Xvfb on the profile.
run_gimp() {
  local log=$1 envs=()
  shift
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env GIMP2_DIRECTORY="$profile" SDGP_DIALOG_SCREENSHOT="$outdir" SDG_MODELS_DIR="$models" \
    "${envs[@]}" timeout 240 xvfb-run -a -s "-screen 0 1280x1024x24" \
    gimp-2.10 -i -d -f --batch-interpreter plug-in-script-fu-eval "$@" -b '(gimp-quit 0)' \
    >"$log" 2>&1
  local status=$?
  if [ $status -ne 0 ]; then
    echo "# gimp-2.10 exited with status $status; its output:"
    sed 's/^/# /' "$log"
  fi
}

echo "1..$(( ${#modes[@]} + 1 ))"
log="$outdir/test-dialog-gimp.log"
run_gimp "$log" -- -b "$setup" "${warmups[@]}" -b "$dialogs"

# Width and height from the PNG's IHDR chunk (big-endian, bytes 16..23).
png_size() {
  od -A n -t u1 -j 16 -N 8 "$1" 2>/dev/null |
    awk '{ if (NF == 8) print $1*16777216 + $2*65536 + $3*256 + $4, $5*16777216 + $6*65536 + $7*256 + $8 }'
}

n=0
failed=0
for m in "${modes[@]}"; do
  n=$((n + 1))
  png="$outdir/dialog-gimp2-$m.png"
  magic=$(od -A n -t x1 -N 8 "$png" 2>/dev/null | tr -d ' \n')
  read -r w h <<<"$(png_size "$png")"
  if [ "$magic" != "89504e470d0a1a0a" ]; then
    echo "not ok $n - $m: no PNG at $png"
    failed=1
  elif [ "${w:-0}" -lt 300 ] || [ "${h:-0}" -lt 250 ] || [ "$w" -gt 2000 ] || [ "$h" -gt 2000 ]; then
    echo "not ok $n - $m: implausible size ${w}x${h}"
    failed=1
  else
    echo "ok $n - $m dialog photographed, ${w}x${h} ($png)"
  fi
done
if [ $failed -ne 0 ]; then
  sed 's/^/# /' "$log"
fi

# The same dialog while it runs: Generate pressed by the hook, a 2-step run of the tiny model.
n=$((n + 1))
if [ -z "$tiny" ]; then
  echo "ok $n - text-to-image run photographed # SKIP no tiny model in \$SDG_REFERENCE_DIR"
else
  runlog="$outdir/test-dialog-gimp-run.log"
  run_gimp "$runlog" SDGP_DIALOG_AUTORUN=1 -- -b "$setup" "${warmups[0]}" "${warmups[1]}" \
    -b "$(with_img '(plug-in-diffusion-text-to-image RUN-INTERACTIVE img layer "" "" "" "euler_a" 20 7.0 -1 1)')"
  png="$outdir/dialog-gimp2-text-to-image-running.png"
  read -r w h <<<"$(png_size "$png")"
  if [ "${w:-0}" -ge 300 ] && [ "${h:-0}" -ge 250 ]; then
    echo "ok $n - text-to-image run photographed half-way, ${w}x${h} ($png)"
  else
    echo "not ok $n - text-to-image run: no picture at $png"
    sed 's/^/# /' "$runlog"
    failed=1
  fi
fi
exit $failed
