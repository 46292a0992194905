#!/usr/bin/env bash
# test-dialog.sh (GIMP 3) - opens the Filters > Diffusion dialog of every mode in a real GIMP 3.0
# (gimp-3.0) under Xvfb and photographs it (TAP): the GIMP 3 counterpart of tests/test-dialog.sh,
# kept apart so that the 2.10 script stays as it is. The plug-in's test hook
# (SDGP_DIALOG_SCREENSHOT, ui/dialog.c) saves the dialog window as OUTDIR/dialog-gimp3-MODE.png
# once it is drawn, then closes it as if the user pressed Close; this script checks that each
# picture exists and has a plausible size. A second session (SDGP_DIALOG_AUTORUN) presses
# Generate in the text-to-image dialog and photographs the run half-way,
# OUTDIR/dialog-gimp3-text-to-image-running.png. docs/dialog-gimp3.png is a copy of one of them.
#
# The tiny random-weight model of the reference data ($SDG_REFERENCE_DIR) serves as the models
# folder's checkpoint; without it the dialogs open on defaults and the running picture is skipped.
# Not here: judging the look, the pictures the model makes (tests/test-gimp3.sh).
#
# Usage: test-dialog.sh PLUGIN_EXECUTABLE OUTDIR [ICONS_DIR]
# Skips (TAP "1..0 # SKIP") when gimp-3.0 or xvfb-run is missing.
set -u

plugin=${1:?usage: test-dialog.sh PLUGIN_EXECUTABLE OUTDIR}
outdir=${2:?usage: test-dialog.sh PLUGIN_EXECUTABLE OUTDIR}
icons=${3:-}

for tool in gimp-3.0 xvfb-run; do
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

# A throw-away GIMP profile and home holding only our plug-in (GIMP 3 wants it in a folder of its
# own name), so the user's settings play no part.
work=$(mktemp -d "${TMPDIR:-/tmp}/sdgp-gimp3-dialog.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
profile="$work/profile"
mkdir -p "$profile/plug-ins/gimp-diffusion" "$outdir"
cp "$plugin" "$profile/plug-ins/gimp-diffusion/gimp-diffusion"
chmod +x "$profile/plug-ins/gimp-diffusion/gimp-diffusion"
if [ -n "$icons" ] && [ -d "$icons" ]; then
  mkdir -p "$profile/plug-ins/gimp-diffusion/icons"
  cp "$icons"/diffusion-*.png "$profile/plug-ins/gimp-diffusion/icons/"
fi
for m in "${modes[@]}" text-to-image-running; do
  rm -f "$outdir/dialog-gimp3-$m.png"
done

models="$work/models"
mkdir -p "$models"
ref=${SDG_REFERENCE_DIR:-}
tiny=""
vocab=""
if [ -n "$ref" ] && [ -f "$ref/golden/tiny-sd1.safetensors" ] && [ -f "$ref/vocab/bpe_simple_vocab_16e6.txt.gz" ]; then
  ln -s "$ref/golden/tiny-sd1.safetensors" "$models/tiny-sd1.safetensors"
  ln -s "$ref/vocab/bpe_simple_vocab_16e6.txt.gz" "$models/bpe_simple_vocab_16e6.txt.gz"
  tiny="$models/tiny-sd1.safetensors"
  vocab="$models/bpe_simple_vocab_16e6.txt.gz"
fi

# One image with a layer and a selection. Batch commands share no variables, so each finds the
# image again (the only one) through with_img. GIMP 3 stops at a failing batch command and never
# reaches (gimp-quit), so every command is inside catch.
setup='
(catch #f
  (let* ((img (car (gimp-image-new 256 256 RGB)))
         (layer (car (gimp-layer-new img "bg" 256 256 RGB-IMAGE 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img layer 0 0)
    (gimp-drawable-fill layer FILL-WHITE)
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 64 64 128 128)))'
with_img() {
  echo "(catch #f (let* ((img (vector-ref (car (gimp-get-images)) 0)) (layer (vector-ref (car (gimp-image-get-layers img)) 0))) $1))"
}
# call PROC RUN-MODE [NAMED ARGUMENTS]: a procedure call on the image's top layer.
call() {
  echo "($1 #:run-mode $2 #:image img #:drawables (vector layer) ${3:-})"
}

# Warm-up: one short (2-step) non-interactive run per mode with the tiny model, so that each
# dialog opens on remembered values (a prompt, the chosen model) as it would for a user.
warmups=()
if [ -n "$tiny" ]; then
  args="#:model \"$tiny\" #:steps 2 #:cfg-scale 7.0 #:batch-count 1"
  warmups=(
    -b "$(with_img "$(call plug-in-diffusion-text-to-image RUN-NONINTERACTIVE "#:prompt \"a red circle on a white wall, studio light\" #:negative-prompt \"blurry, text\" #:sampler \"euler_a\" #:seed 42 $args")")"
    -b "$(with_img "$(call plug-in-diffusion-image-to-image RUN-NONINTERACTIVE "#:prompt \"the same wall in watercolour\" #:negative-prompt \"blurry\" #:sampler \"dpmpp_2m\" #:seed 7 #:strength 0.6 $args")")"
    -b "$(with_img "$(call plug-in-diffusion-inpaint RUN-NONINTERACTIVE "#:prompt \"a blue vase of flowers\" #:negative-prompt \"blurry\" #:sampler \"euler_a\" #:seed 1234 #:strength 1.0 $args")")"
  )
fi

# The dialogs: each closes itself after its picture, so the batch goes on.
dialogs=$(with_img "
  $(call plug-in-diffusion-text-to-image RUN-INTERACTIVE)
  $(call plug-in-diffusion-image-to-image RUN-INTERACTIVE)
  $(call plug-in-diffusion-inpaint RUN-INTERACTIVE)")

# run_gimp LOG [ENV=VALUE...] -- BATCH-ARGS...: one GIMP session under Xvfb on the profile.
run_gimp() {
  local log=$1 envs=()
  shift
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env GIMP3_DIRECTORY="$profile" HOME="$work" XDG_CACHE_HOME="$work/cache" \
    XDG_CONFIG_HOME="$work/config" SDGP_DIALOG_SCREENSHOT="$outdir" SDG_MODELS_DIR="$models" \
    ${vocab:+SDG_VOCAB="$vocab"} SDG_NATIVE_SIZE=64 OMP_WAIT_POLICY=passive \
    "${envs[@]}" timeout 300 xvfb-run -a -s "-screen 0 1280x1024x24" \
    gimp-3.0 -i -d -f --no-splash --batch-interpreter plug-in-script-fu-eval "$@" \
    -b '(gimp-quit 0)' >"$log" 2>&1
  local status=$?
  if [ $status -ne 0 ]; then
    echo "# gimp-3.0 exited with status $status; its output:"
    sed 's/^/# /' "$log"
  fi
}

echo "1..$(( ${#modes[@]} + 1 ))"
log="$outdir/test-dialog-gimp3.log"
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
  png="$outdir/dialog-gimp3-$m.png"
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
  runlog="$outdir/test-dialog-gimp3-run.log"
  # The hook also photographs a run that failed (with its message), so the number of layers
  # afterwards tells whether the run really finished: the background, the text-to-image warm-up
  # (its "-b" and command, the first two words of warmups) and the run's own layer.
  count="$work/layers.txt"
  run_gimp "$runlog" SDGP_DIALOG_AUTORUN=1 -- -b "$setup" "${warmups[@]:0:2}" \
    -b "$(with_img "$(call plug-in-diffusion-text-to-image RUN-INTERACTIVE)")" \
    -b "$(with_img "(let ((port (open-output-file \"$count\")))
                      (display (vector-length (car (gimp-image-get-layers img))) port)
                      (close-output-port port))")"
  png="$outdir/dialog-gimp3-text-to-image-running.png"
  read -r w h <<<"$(png_size "$png")"
  layers=$(cat "$count" 2>/dev/null)
  if [ "${w:-0}" -ge 300 ] && [ "${h:-0}" -ge 250 ] && [ "$layers" = 3 ]; then
    echo "ok $n - text-to-image run photographed half-way, ${w}x${h} ($png), its layer added"
  else
    echo "not ok $n - text-to-image run: picture ${w:-none}x${h:-none} at $png, ${layers:-?} layers (want 3)"
    sed 's/^/# /' "$runlog"
    failed=1
  fi
fi
exit $failed
