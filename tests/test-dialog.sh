#!/usr/bin/env bash
# test-dialog.sh - opens the Filters > Diffusion dialog of every mode in a real GIMP (2.10 or 3.0)
# under Xvfb and photographs it (TAP). The plug-in's test hook (SDGP_DIALOG_SCREENSHOT,
# ui/dialog.c) saves the dialog window as OUTDIR/dialog-gimpN-MODE.png once it is drawn, then
# closes it as if the user pressed Close; this script checks that each picture exists and has a
# plausible size. A second GIMP session (SDGP_DIALOG_AUTORUN) presses Generate in the
# text-to-image dialog and photographs the run half-way (progress bar, preview, Cancel),
# OUTDIR/dialog-gimpN-text-to-image-running.png, and checks that the run added its layer.
# docs/dialog-gimp2.png and docs/dialog-gimp3.png are copies of such pictures.
# Beside each picture the hook writes the dialog's controls as text (.txt: labels, combo boxes
# with their items, spin buttons and check buttons with their values, tooltips); this script
# checks there that every mode offers Precision (Default | Exact | Fast, with its tooltip), the
# LoRAs field (with its tooltip), Schedule and Model sampling; that text to image alone has the
# Hires fix section; and that a model named like a Turbo checkpoint (the tiny model linked as
# tiny-sd1-turbo.safetensors) sets the steps to 1 and CFG to 1 with its note. For the running dialog the remembered precision is
# set to Fast first, as choosing it in the dialog leaves it (GIMP 2: the field in the plug-in's
# stored values; GIMP 3: its last-values file), and the session runs on the portable kernel sets
# (SDG_KERNELS=c-bf16): the dialog must open on Fast and the run's layer record precision=fast,
# kernels=c-bf16.
#
# The tiny random-weight model of the reference data ($SDG_REFERENCE_DIR) serves as the models
# folder's checkpoint; without it the dialogs open on defaults and the running picture is skipped.
# Not here: judging the look, or the pictures the model makes (tests/test-gimp.sh, test-gimp3.sh).
#
# Usage: test-dialog.sh PLUGIN_EXECUTABLE OUTDIR [ICONS_DIR [GIMP_VERSION]]
# GIMP_VERSION is 2.10 (the default) or 3.0; the two differ only in the Scheme of the calls (GIMP
# 3: named arguments, a drawables vector) and the profile variable. ICONS_DIR's PNGs are put
# beside the plug-in (its user-local icon folder), so the procedures register with their icons as
# they would installed. Skips (TAP "1..0 # SKIP") when gimp-VERSION or xvfb-run is missing.
set -u

plugin=${1:?usage: test-dialog.sh PLUGIN_EXECUTABLE OUTDIR [ICONS_DIR [GIMP_VERSION]]}
outdir=${2:?usage: test-dialog.sh PLUGIN_EXECUTABLE OUTDIR [ICONS_DIR [GIMP_VERSION]]}
icons=${3:-}
gimp_version=${4:-2.10}
case "$gimp_version" in
  2.10) profile_var=GIMP2_DIRECTORY tag=gimp2 ;;
  3.0) profile_var=GIMP3_DIRECTORY tag=gimp3 ;;
  *) echo "Bail out! GIMP_VERSION must be 2.10 or 3.0, not '$gimp_version'"; exit 1 ;;
esac
gimp=gimp-$gimp_version
here=$(cd "$(dirname "$0")" && pwd)
. "$here/gimp-lib.sh"   # scm_str

for tool in "$gimp" xvfb-run; do
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

# A throw-away GIMP profile and home holding only our plug-in (in a folder of its own name), so
# the user's settings play no part.
work=$(mktemp -d "${TMPDIR:-/tmp}/sdgp-$tag-dialog.XXXXXX") || exit 1
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
  rm -f "$outdir/dialog-$tag-$m.png"
done

# A models folder holding the tiny random-weight model of the reference data (when there is one),
# so the model list shows a checkpoint and the warm-up runs below can work.
models="$work/models"
mkdir -p "$models"
ref=${SDG_REFERENCE_DIR:-}
tiny=""
if [ -n "$ref" ] && [ -f "$ref/golden/tiny-sd1.safetensors" ] && [ -f "$ref/vocab/bpe_simple_vocab_16e6.txt.gz" ]; then
  ln -s "$ref/golden/tiny-sd1.safetensors" "$models/tiny-sd1.safetensors"
  ln -s "$ref/vocab/bpe_simple_vocab_16e6.txt.gz" "$models/bpe_simple_vocab_16e6.txt.gz"
  tiny="$models/tiny-sd1.safetensors"
  # The same model named like an SD-Turbo checkpoint, in a folder of its own (with the
  # vocabulary it is read with): sdg_recommend finds Turbo by the file name.
  mkdir -p "$work/turbo"
  ln -s "$ref/golden/tiny-sd1.safetensors" "$work/turbo/tiny-sd1-turbo.safetensors"
  ln -s "$ref/vocab/bpe_simple_vocab_16e6.txt.gz" "$work/turbo/bpe_simple_vocab_16e6.txt.gz"
  turbo="$work/turbo/tiny-sd1-turbo.safetensors"
fi

# One image with a layer and a selection. Batch commands share no variables, so each finds the
# image again (the only one) through with_img. GIMP 3 stops at a failing batch command and never
# reaches (gimp-quit), so every command is inside catch. n-layers: the image's layer count.
if [ "$gimp_version" = 2.10 ]; then
  new_layer='(gimp-layer-new img 256 256 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL)'
  find_img='(img (vector-ref (cadr (gimp-image-list)) 0)) (layer (car (gimp-image-get-active-layer img)))'
  n_layers='(car (gimp-image-get-layers img))'
  layer_vec='(cadr (gimp-image-get-layers img))'
else
  new_layer='(gimp-layer-new img "bg" 256 256 RGB-IMAGE 100 LAYER-MODE-NORMAL)'
  find_img='(img (vector-ref (car (gimp-get-images)) 0)) (layer (vector-ref (car (gimp-image-get-layers img)) 0))'
  n_layers='(vector-length (car (gimp-image-get-layers img)))'
  layer_vec='(car (gimp-image-get-layers img))'
fi
setup="
(catch #f
  (let* ((img (car (gimp-image-new 256 256 RGB)))
         (layer (car $new_layer)))
    (gimp-image-insert-layer img layer 0 0)
    (gimp-drawable-fill layer FILL-WHITE)
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 64 64 128 128)))"
with_img() {
  echo "(catch #f (let* ($find_img) $1))"
}
# call PROC RUN-MODE [PROMPT NEGATIVE MODEL SAMPLER STEPS SEED STRENGTH]: a procedure call on the
# image's layer, batch count 1, CFG 7; the defaults are a dialog's (empty texts, 20 steps).
call() {
  local proc=$1 mode=$2 prompt=${3:-} negative=${4:-} model=${5:-} sampler=${6:-euler_a}
  local steps=${7:-20} seed=${8:--1} strength=${9:-}
  if [ -z "$strength" ] && [ "$proc" != plug-in-diffusion-text-to-image ]; then
    strength=0.75
  fi
  if [ "$gimp_version" = 2.10 ]; then
    echo "($proc $mode img layer \"$prompt\" \"$negative\" \"$model\" \"$sampler\" $steps 7.0 $seed 1 $strength \"\")"
  else
    echo "($proc #:run-mode $mode #:image img #:drawables (vector layer) #:prompt \"$prompt\" #:negative-prompt \"$negative\" #:model \"$model\" #:sampler \"$sampler\" #:steps $steps #:cfg-scale 7.0 #:seed $seed #:batch-count 1 ${strength:+#:strength $strength} #:loras \"\")"
  fi
}

# Warm-up: one short (2-step) non-interactive run per mode with the tiny model, so that each
# dialog opens on remembered values (a prompt, the chosen model) as it would for a user. Each is
# its own batch command, so one that fails does not stop the others; the dialogs open either way.
# In the photographing session text to image is called once more with the Turbo-named model
# (dpmpp_2m, 2 steps, CFG 7): its dialog opens on it and must apply Turbo's recommendation.
warmups=()
turbo_warmup=()
if [ -n "$tiny" ]; then
  warmups=(
    -b "$(with_img "$(call plug-in-diffusion-text-to-image RUN-NONINTERACTIVE "a red circle on a white wall, studio light" "blurry, text" "$tiny" euler_a 2 42)")"
    -b "$(with_img "$(call plug-in-diffusion-image-to-image RUN-NONINTERACTIVE "the same wall in watercolour" "blurry" "$tiny" dpmpp_2m 2 7 0.6)")"
    -b "$(with_img "$(call plug-in-diffusion-inpaint RUN-NONINTERACTIVE "a blue vase of flowers" "blurry" "$tiny" euler_a 2 1234 1.0)")"
  )
  turbo_warmup=(
    -b "$(with_img "$(call plug-in-diffusion-text-to-image RUN-NONINTERACTIVE "a red circle on a white wall, studio light" "blurry, text" "$turbo" dpmpp_2m 2 42)")"
  )
fi

# The dialogs: each closes itself after its picture, so the batch goes on.
dialogs=$(with_img "
  $(call plug-in-diffusion-text-to-image RUN-INTERACTIVE)
  $(call plug-in-diffusion-image-to-image RUN-INTERACTIVE)
  $(call plug-in-diffusion-inpaint RUN-INTERACTIVE "" "" "" euler_a 20 -1 1.0)")

# The remembered text-to-image values with precision "fast", as the dialog leaves them when Fast
# is chosen. GIMP 2 keeps the plug-in's sdgp_params as bytes: the precision field is a 16-byte
# string at byte 6176 (plugin/params.h). GIMP 3 keeps a GimpConfig file in the profile, written
# here whole with the warm-up's values (the ones libgimp stored after it) but precision "fast".
if [ "$gimp_version" = 2.10 ]; then
  remember_fast='
(catch #f
  (let* ((proc "plug-in-diffusion-text-to-image") (got (gimp-procedural-db-get-data proc))
         (data (cadr got)) (name "fast"))
    (let loop ((i 0))
      (if (< i 16)
          (begin (vector-set! data (+ 6176 i)
                              (if (< i (string-length name)) (char->integer (string-ref name i)) 0))
                 (loop (+ i 1)))))
    (gimp-procedural-db-set-data proc (car got) data)))'
else
  last_text="# settings

(prompt \"a red circle on a white wall, studio light\")
(negative-prompt \"blurry, text\")
(model \"$tiny\")
(sampler \"euler_a\")
(steps 2)
(cfg-scale 7)
(seed 42)
(batch-count 1)
(random-seed no)
(precision \"fast\")

# end of settings
"
  last_file="$profile/plug-in-settings/GimpProcedureConfigRun-plug-in-diffusion-text-to-image.last"
  remember_fast="
(catch #f
  (let ((port (open-output-file $(scm_str "$last_file"))))
    (display $(scm_str "$last_text") port)
    (close-output-port port)))"
fi

# run_gimp LOG [ENV=VALUE...] -- BATCH-ARGS...: one GIMP session under Xvfb on the profile.
# SDG_NATIVE_SIZE=64: the tiny model generates at about 64x64 (it is slow at 512x512).
run_gimp() {
  local log=$1 envs=()
  shift
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env "$profile_var=$profile" HOME="$work" XDG_CACHE_HOME="$work/cache" \
    XDG_CONFIG_HOME="$work/config" SDGP_DIALOG_SCREENSHOT="$outdir" SDG_MODELS_DIR="$models" \
    SDG_NATIVE_SIZE=64 OMP_WAIT_POLICY=passive \
    "${envs[@]}" timeout 300 xvfb-run -a -s "-screen 0 1280x1024x24" \
    "$gimp" -i -d -f --no-splash --batch-interpreter plug-in-script-fu-eval "$@" \
    -b '(gimp-quit 0)' >"$log" 2>&1
  local status=$?
  if [ $status -ne 0 ]; then
    echo "# $gimp exited with status $status; its output:"
    sed 's/^/# /' "$log"
  fi
}

echo "1..$(( 5 * ${#modes[@]} + 4 ))"
log="$outdir/test-dialog-$tag.log"
run_gimp "$log" -- -b "$setup" "${warmups[@]}" "${turbo_warmup[@]}" -b "$dialogs"

# Width and height from the PNG's IHDR chunk (big-endian, bytes 16..23).
png_size() {
  od -A n -t u1 -j 16 -N 8 "$1" 2>/dev/null |
    awk '{ if (NF == 8) print $1*16777216 + $2*65536 + $3*256 + $4, $5*16777216 + $6*65536 + $7*256 + $8 }'
}

n=0
failed=0
for m in "${modes[@]}"; do
  n=$((n + 1))
  png="$outdir/dialog-$tag-$m.png"
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

# The controls as text: Precision in the Advanced rows, its three choices (the warm-ups were
# procedure calls, which run and remember "default"), and the tooltip saying what they mean.
for m in "${modes[@]}"; do
  n=$((n + 1))
  txt="$outdir/dialog-$tag-$m.txt"
  combo=$(grep -A1 -x 'combo: Default | Exact | Fast (active: Default)' "$txt" 2>/dev/null)
  if grep -qx 'label: Precision:' "$txt" 2>/dev/null && [ -n "$combo" ] &&
     grep -q '^tooltip: .*Exact: float32.*Fast: bfloat16 products.*AVX512-BF16.*Default: the engine' <<<"$combo"; then
    echo "ok $n - $m dialog offers Precision: Default | Exact | Fast, with its tooltip"
  else
    echo "not ok $n - $m dialog: no Precision row with Default | Exact | Fast and its tooltip in $txt"
    sed 's/^/# /' "$txt" 2>/dev/null
    failed=1
  fi
done
# The model list names each checkpoint's family (read from its header), and Advanced offers
# the prediction, on Auto (what procedure calls run and remember).
for m in "${modes[@]}"; do
  n=$((n + 1))
  txt="$outdir/dialog-$tag-$m.txt"
  if grep -q '^combo: Default model | .* (SD 1\.x)' "$txt" 2>/dev/null &&
     grep -qx 'combo: Auto (what the file says) | Noise (eps) | Velocity (v) (active: Auto (what the file says))' "$txt" 2>/dev/null &&
     grep -qx 'label: Prediction:' "$txt" 2>/dev/null &&
     grep -qx 'label: Fast decode (TAESD)' "$txt" 2>/dev/null; then
    echo "ok $n - $m dialog lists models with their family, offers Prediction: Auto | eps | v and Fast decode"
  else
    echo "not ok $n - $m dialog: no model listed with its family, or no Prediction row or Fast decode, in $txt"
    sed 's/^/# /' "$txt" 2>/dev/null
    failed=1
  fi
done
# Advanced offers the LoRAs field, its tooltip telling the FILE:WEIGHT entries and the tags.
for m in "${modes[@]}"; do
  n=$((n + 1))
  txt="$outdir/dialog-$tag-$m.txt"
  if grep -qx 'label: LoRAs:' "$txt" 2>/dev/null &&
     grep -q '^tooltip: LoRA files to apply.*FILE:WEIGHT.*<lora:NAME:WEIGHT>.*loras folder' "$txt"; then
    echo "ok $n - $m dialog offers LoRAs, with its tooltip"
  else
    echo "not ok $n - $m dialog: no LoRAs row with its tooltip in $txt"
    sed 's/^/# /' "$txt" 2>/dev/null
    failed=1
  fi
done
# Advanced offers every schedule of the engine and the model sampling.
for m in "${modes[@]}"; do
  n=$((n + 1))
  txt="$outdir/dialog-$tag-$m.txt"
  if grep -qx 'label: Schedule:' "$txt" 2>/dev/null &&
     grep -q '^combo: default | karras | simple | exponential | sgm_uniform | ddim_uniform | trailing (active: ' "$txt" &&
     grep -qx 'label: Model sampling:' "$txt" &&
     grep -q '^combo: Default | LCM (active: ' "$txt"; then
    echo "ok $n - $m dialog offers Schedule (every engine schedule) and Model sampling: Default | LCM"
  else
    echo "not ok $n - $m dialog: no Schedule row with the engine's schedules or no Model sampling row in $txt"
    sed 's/^/# /' "$txt" 2>/dev/null
    failed=1
  fi
done
# The hires fix: text to image has the section (off, as procedure calls leave it; Latent; the
# factor 2.00 and strength 0.70 of A1111), the other modes do not.
n=$((n + 1))
t2i="$outdir/dialog-$tag-text-to-image.txt"
if grep -qx 'label: Hires fix' "$t2i" 2>/dev/null &&
   grep -qx 'check: Refine at a bigger size (off)' "$t2i" &&
   grep -qx 'label: Upscale by:' "$t2i" && grep -qx 'spin: 2.00' "$t2i" &&
   grep -qx 'combo: Latent | Pixel (active: Latent)' "$t2i" &&
   grep -qx 'spin: 0.70' "$t2i" && grep -qx 'label: Hires steps:' "$t2i" &&
   ! grep -q 'Hires fix' "$outdir/dialog-$tag-image-to-image.txt" &&
   ! grep -q 'Hires fix' "$outdir/dialog-$tag-inpaint.txt"; then
  echo "ok $n - text to image has the Hires fix section (off, Upscale by 2, Latent, strength 0.7, steps), the other modes none"
else
  echo "not ok $n - no Hires fix section as expected in $t2i (or one in the other modes)"
  grep -i -A1 'hires\|upscale\|refine\|spin' "$t2i" 2>/dev/null | sed 's/^/# /'
  failed=1
fi
# Turbo's recommendation: the text-to-image dialog opened on the Turbo-named model that the last
# call ran with dpmpp_2m, 2 steps and CFG 7 (a call applies none), and set Euler ancestral,
# trailing, 1 step and CFG 1, saying so.
n=$((n + 1))
if [ -z "$tiny" ]; then
  echo "ok $n - Turbo's recommendation # SKIP no tiny model in \$SDG_REFERENCE_DIR"
elif grep -qx 'label: Turbo: euler_a, trailing, 1 step, CFG 1 (recommended)' "$t2i" &&
     grep -A1 -x 'spin: 1' "$t2i" | grep -q '^tooltip: Sampling steps' &&
     grep -A1 -x 'spin: 1.0' "$t2i" | grep -q '^tooltip: How closely to follow the prompt' &&
     grep -q '^combo: Euler .*(active: Euler ancestral)' "$t2i" &&
     grep -q '^combo: default | karras .*(active: trailing)' "$t2i"; then
  echo "ok $n - a Turbo-named model sets the dialog to euler_a, trailing, 1 step, CFG 1 and says so"
else
  echo "not ok $n - Turbo's recommendation: want its note, steps 1, CFG 1.0, Euler ancestral and trailing in $t2i"
  grep -E '^(spin|label: Turbo|combo: (Euler|default))' -A1 "$t2i" 2>/dev/null | sed 's/^/# /'
  failed=1
fi
if [ $failed -ne 0 ]; then
  sed 's/^/# /' "$log"
fi

# The same dialog while it runs: Generate pressed by the hook, a run of the tiny model on the
# remembered values (the warm-up's, with precision Fast).
n=$((n + 1))
if [ -z "$tiny" ]; then
  echo "ok $n - text-to-image run photographed # SKIP no tiny model in \$SDG_REFERENCE_DIR"
  n=$((n + 1))
  echo "ok $n - the dialog's precision reaches the run # SKIP no tiny model in \$SDG_REFERENCE_DIR"
else
  runlog="$outdir/test-dialog-$tag-run.log"
  # The hook also photographs a run that failed (with its message), so the number of layers
  # afterwards tells whether the run really finished: the background, the text-to-image warm-up
  # (its "-b" and command, the first two words of warmups) and the run's own layer.
  # The run works on the active (top) layer, the warm-up's, so its own layer ends up on top: its
  # parasite goes to parasite.txt.
  count="$work/layers.txt"
  parasite="$work/parasite.txt"
  run_gimp "$runlog" SDGP_DIALOG_AUTORUN=1 SDG_KERNELS=c-bf16 -- -b "$setup" "${warmups[@]:0:2}" \
    -b "$remember_fast" \
    -b "$(with_img "$(call plug-in-diffusion-text-to-image RUN-INTERACTIVE)")" \
    -b "$(with_img "(let ((port (open-output-file \"$count\")))
                      (display $n_layers port)
                      (close-output-port port))")" \
    -b "$(with_img "(let* ((l (vector-ref $layer_vec 0))
                           (port (open-output-file \"$parasite\")))
                      (display (caddr (car (gimp-item-get-parasite l \"gimp-diffusion-parameters\"))) port)
                      (close-output-port port))")"
  png="$outdir/dialog-$tag-text-to-image-running.png"
  read -r w h <<<"$(png_size "$png")"
  layers=$(cat "$count" 2>/dev/null)
  if [ "${w:-0}" -ge 300 ] && [ "${h:-0}" -ge 250 ] && [ "$layers" = 3 ]; then
    echo "ok $n - text-to-image run photographed half-way, ${w}x${h} ($png), its layer added"
  else
    echo "not ok $n - text-to-image run: picture ${w:-none}x${h:-none} at $png, ${layers:-?} layers (want 3)"
    sed 's/^/# /' "$runlog"
    failed=1
  fi
  n=$((n + 1))
  txt="$outdir/dialog-$tag-text-to-image-running.txt"
  if grep -qx 'combo: Default | Exact | Fast (active: Fast)' "$txt" 2>/dev/null &&
     grep -qx 'precision=fast' "$parasite" 2>/dev/null && grep -qx 'kernels=c-bf16' "$parasite"; then
    echo "ok $n - the dialog opens on the remembered Fast and its run records precision=fast, kernels=c-bf16"
  else
    echo "not ok $n - the dialog's precision: want Fast active in $txt and precision=fast, kernels=c-bf16 in the run's parasite:"
    grep '^combo: Default' "$txt" 2>/dev/null | sed 's/^/# /'
    sed 's/^/# parasite: /' "$parasite" 2>/dev/null
    failed=1
  fi
fi
exit $failed
