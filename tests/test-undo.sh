#!/usr/bin/env bash
# test-undo.sh - Edit > Undo after each gimp-diffusion procedure, in a real GIMP (2.10 or 3.0)
# with its GUI under Xvfb (TAP). GIMP's PDB cannot undo, so this script drives GIMP from two
# sides: the Script-Fu server (TCP, started as GIMP's batch command) builds an image with a
# display, runs the procedures non-interactively and reads the image's state back; xdotool presses
# Ctrl+Z / Ctrl+Y in the image window, which is the GUI's own edit-undo / edit-redo action.
# Checked for text-to-image, image-to-image and inpaint (batch count 2 each): the run adds two
# layers, ONE Ctrl+Z brings back exactly the state before the run (layers, active/selected
# layers, selection, source pixels) - so the run was a single undo step and nothing before it was
# undone - and Ctrl+Y brings the two layers back. A failed run (missing model) adds no undo step:
# Ctrl+Z after it undoes the selection change made just before it.
#
# Usage: test-undo.sh PLUGIN MODEL VOCAB [GIMP_VERSION]   (GIMP_VERSION 2.10, the default, or 3.0)
# The two GIMPs differ only in the Scheme of the image set-up and of the procedure calls (GIMP 3:
# named arguments, a drawables vector) and in the profile variable; everything else is shared.
# Skips (TAP "1..0 # SKIP", exit 0: meson's TAP protocol counts any other exit status as an
# error) only when gimp-VERSION, Xvfb or xdotool is not installed.
# Environment: SDG_KEEP_TEST_DIR=1 keeps the work folder (profile, GIMP's output, server log).
#
# Not here: the pictures or parameters of the runs (tests/test-gimp.sh, tests/test-gimp3.sh),
# the dialog (tests/test-dialog.sh).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/gimp-lib.sh"

plugin=${1:?usage: test-undo.sh PLUGIN MODEL VOCAB}
model=${2:?usage: test-undo.sh PLUGIN MODEL VOCAB}
vocab=${3:?usage: test-undo.sh PLUGIN MODEL VOCAB}
gimp_version=${4:-2.10}
case "$gimp_version" in
  2.10) profile_var=GIMP2_DIRECTORY ;;
  3.0) profile_var=GIMP3_DIRECTORY ;;
  *) echo "Bail out! GIMP_VERSION must be 2.10 or 3.0, not '$gimp_version'"; exit 1 ;;
esac
gimp=gimp-$gimp_version

for tool in "$gimp" Xvfb xdotool; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "1..0 # SKIP $tool is not installed"
    exit 0
  fi
done
if [ ! -x "$plugin" ]; then
  echo "Bail out! no plug-in executable at $plugin"
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sdg-undo-test.XXXXXX") || exit 1
xvfb_pid=""
gimp_pid=""
cleanup() {
  # Both run under timeout(1), which leads a process group of its own: killing the group ends
  # GIMP together with its plug-ins (Script-Fu server, gimp-diffusion).
  [ -n "$gimp_pid" ] && kill -TERM -- "-$gimp_pid" 2>/dev/null
  [ -n "$xvfb_pid" ] && kill -TERM -- "-$xvfb_pid" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    { [ -z "$gimp_pid" ] || ! kill -0 "$gimp_pid" 2>/dev/null; } &&
      { [ -z "$xvfb_pid" ] || ! kill -0 "$xvfb_pid" 2>/dev/null; } && break
    sleep 0.3
  done
  [ -n "$gimp_pid" ] && kill -KILL -- "-$gimp_pid" 2>/dev/null
  [ -n "$xvfb_pid" ] && kill -KILL -- "-$xvfb_pid" 2>/dev/null
  [ -n "${SDG_KEEP_TEST_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

ok() { emit "$@"; }                                         # ok PASS NAME
ok_rc() { ok "$([ "$1" = 0 ] && echo 1 || echo 0)" "$2"; }   # ok_rc STATUS NAME
bail() {
  echo "Bail out! $1"
  for f in "$work/gimp.log" "$work/server.log" "$work/xvfb.log"; do
    [ -s "$f" ] && { echo "# $(basename "$f"):"; tail -n 40 "$f" | sed 's/^/#   /'; }
  done
  exit 1
}

# A profile of our own holding only our plug-in, in a folder of its own name, as test-gimp.sh.
export "$profile_var=$work/profile"
mkdir -p "$work/profile/plug-ins/gimp-diffusion"
cp "$plugin" "$work/profile/plug-ins/gimp-diffusion/gimp-diffusion" || exit 1
chmod +x "$work/profile/plug-ins/gimp-diffusion/gimp-diffusion"
gimp_test_env "$work" "$vocab"

# An X server on a free display: -displayfd writes the number it chose once it accepts clients.
timeout 590 Xvfb -displayfd 5 -screen 0 1280x1024x24 -nolisten tcp 5>"$work/display" \
  >"$work/xvfb.log" 2>&1 &
xvfb_pid=$!
for _ in $(seq 300); do
  [ -s "$work/display" ] && break
  kill -0 "$xvfb_pid" 2>/dev/null || bail "Xvfb did not start"
  sleep 0.1
done
[ -s "$work/display" ] || bail "Xvfb gave no display number within 30 s"
export DISPLAY=":$(tr -dc 0-9 <"$work/display")"

# A port nobody listens on yet (refused connection); the server's log says when it listens on it.
port=$((20000 + (RANDOM * 32768 + RANDOM + $$) % 40000))
for _ in $(seq 50); do
  if ! { exec 8<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then break; fi
  exec 8<&-
  port=$((20000 + (port - 20000 + 7919) % 40000))
done

# GIMP with its GUI; the batch command starts the Script-Fu server and stays in it (the GUI keeps
# running around it). -d -f: no brushes, patterns or fonts to load (quicker start).
timeout 580 "$gimp" -d -f --no-splash --batch-interpreter plug-in-script-fu-eval \
  -b "(plug-in-script-fu-server RUN-NONINTERACTIVE \"127.0.0.1\" $port \"$work/server.log\")" \
  >"$work/gimp.log" 2>&1 &
gimp_pid=$!

# sf_eval SCHEME: evaluates SCHEME in the Script-Fu server, prints the answer. Status: 0 success,
# 1 Script-Fu error, 2 no answer. Protocol: 'G', length (2 bytes, big-endian), text; the answer
# is 'G', error flag, length (2 bytes), text. One connection per request.
sf_eval() {
  local cmd=$1 len hdr LC_ALL=C
  len=${#cmd}
  { exec 9<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 2
  printf "G\\x$(printf %02x $((len >> 8)))\\x$(printf %02x $((len & 255)))%s" "$cmd" >&9
  # dd bs=1 reads no byte past the header; timeout: GIMP may hang, the test must not.
  read -r -a hdr <<<"$(timeout 300 dd bs=1 count=4 status=none <&9 | od -An -tu1)"
  if [ ${#hdr[@]} -ne 4 ] || [ "${hdr[0]}" != 71 ]; then
    exec 9<&-
    return 2
  fi
  timeout 300 dd bs=1 count=$((hdr[2] * 256 + hdr[3])) status=none <&9
  exec 9<&-
  [ "${hdr[1]}" = 0 ]
}

# GIMP's first start on an empty profile registers every plug-in: minutes on a loaded machine.
for _ in $(seq 2400); do
  grep -q "listening" "$work/server.log" 2>/dev/null && break
  kill -0 "$gimp_pid" 2>/dev/null || bail "$gimp exited before its Script-Fu server listened"
  sleep 0.2
done
grep -q "listening" "$work/server.log" 2>/dev/null || bail "no Script-Fu server after 480 s"
version=$(sf_eval '(car (gimp-version))') || bail "the Script-Fu server does not answer"
echo "# GIMP ${version//\"/} on display $DISPLAY, Script-Fu server on port $port"


# The image: 128 x 128, named so that its window is found by title in any language, with a
# display (the window Ctrl+Z goes to). The server's interpreter keeps these definitions: `state`
# is what an undo must restore. GIMP 3 has no plasma procedure (a spiral gradient instead), new
# argument orders, vectors where 2.10 returned counts, and selected layers for the active layer.
if [ "$gimp_version" = 2.10 ]; then
  setup="
(define img (car (gimp-image-new 128 128 RGB)))
(define src (car (gimp-layer-new img 128 128 RGB-IMAGE \"background\" 100 LAYER-MODE-NORMAL)))
(gimp-image-insert-layer img src 0 0)
(plug-in-plasma RUN-NONINTERACTIVE img src 7 2.5)
(gimp-image-set-filename img $(scm_str "$work/sdg-undo-test.xcf"))
(define (n-layers) (car (gimp-image-get-layers img)))
(define (px x y) (vector->list (cadr (gimp-drawable-get-pixel src x y))))
(define (layers-now) (list (vector->list (cadr (gimp-image-get-layers img)))
                           (car (gimp-image-get-active-layer img))))"
else
  setup="
(define img (car (gimp-image-new 128 128 RGB)))
(define src (car (gimp-layer-new img \"background\" 128 128 RGB-IMAGE 100 LAYER-MODE-NORMAL)))
(gimp-image-insert-layer img src 0 0)
(gimp-context-set-foreground '(200 30 40))
(gimp-context-set-background '(240 220 10))
(gimp-drawable-edit-gradient-fill src GRADIENT-SPIRAL-CLOCKWISE 0 FALSE 1 0 TRUE 64 64 80 40)
(gimp-image-set-file img $(scm_str "$work/sdg-undo-test.xcf"))
(define (n-layers) (vector-length (car (gimp-image-get-layers img))))
(define (px x y) (car (gimp-drawable-get-pixel src x y)))
(define (layers-now) (list (vector->list (car (gimp-image-get-layers img)))
                           (vector->list (car (gimp-image-get-selected-layers img)))))"
fi
setup="$setup
(define (state)
  (append (layers-now)
    (list (gimp-selection-bounds img)
          (map (lambda (p) (car (gimp-selection-value img (car p) (cadr p)))) '((1 1) (50 50) (70 70)))
          (map (lambda (p) (px (car p) (cadr p))) '((0 0) (5 70) (50 50) (64 64) (100 20) (127 127))))))
(define model $(scm_str "$model"))
(define missing $(scm_str "$work/sdg-missing.safetensors"))
(gimp-display-new img)
(gimp-displays-flush)
img"
sf_eval "$setup" >"$work/setup.out" || bail "setting up the image failed: $(cat "$work/setup.out")"

win=""
for _ in $(seq 600); do
  win=$(xdotool search --name 'sdg-undo-test' 2>/dev/null | head -n 1)
  [ -n "$win" ] && break
  sleep 0.1
done
[ -n "$win" ] || bail "no image window within 60 s"

# press KEY: one key press in the image window. xdotool --window sends it to that window
# (XSendEvent), so neither a window manager nor the keyboard focus is needed, and no key
# auto-repeat can turn one press into several on a slow machine.
press() { xdotool key --window "$win" "$1"; }

# wait_state EXPECTED: polls the image's state until it equals EXPECTED (the key press is
# handled by GIMP's main loop in its own time; an undo takes milliseconds, 30 s is room for a
# loaded machine); prints the last state seen. Status: 0 equal, 1 not within 30 s, 2 no answer.
wait_state() {
  local s=""
  for _ in $(seq 150); do
    s=$(sf_eval '(state)') || return 2
    [ "$s" = "$1" ] && return 0
    sleep 0.2
  done
  printf '%s' "$s"
  return 1
}
# ok_state STATUS NAME: a test line for wait_state's STATUS; bails out when GIMP stopped answering.
ok_state() {
  [ "$1" = 2 ] && bail "the Script-Fu server stopped answering"
  ok_rc "$1" "$2"
}
# get_state: the image's state now (call it as x=$(get_state) || bail ...).
get_state() { sf_eval '(state)'; }
gone="the Script-Fu server gave no state of the image"

# check_undo LABEL PREPARE RUN: PREPARE (a selection change, itself an undo step, so that an
# undo going one step too far shows; flushed, as the GUI would after it) then RUN, a procedure
# call with batch count 2, then Ctrl+Z, Ctrl+Y, Ctrl+Z. Edit > Undo acts only on what the GUI
# was last told (gimp-displays-flush): after RUN nothing but the plug-in itself tells it.
check_undo() {
  local label=$1 prepare=$2 run=$3 before after_run n0 n1 s out rc
  sf_eval "(begin $prepare (gimp-displays-flush))" >/dev/null
  before=$(get_state) || bail "$gone"
  n0=$(sf_eval '(n-layers)')
  out=$(sf_eval "$run")
  rc=$?
  ok_rc $rc "$label: the procedure succeeds"
  [ $rc = 0 ] || echo "#   $out"
  n1=$(sf_eval '(n-layers)')
  after_run=$(get_state) || bail "$gone"
  ok $([ "$n1" = $((n0 + 2)) ] && echo 1 || echo 0) "$label: batch count 2 adds 2 layers ($n0 -> $n1)"
  press ctrl+z
  s=$(wait_state "$before")
  rc=$?
  ok_state $rc "$label: one Ctrl+Z removes both layers and restores the image as it was before the run"
  if [ $rc != 0 ]; then
    printf '#   before:     %s\n#   after run:  %s\n#   after undo: %s\n' "$before" "$after_run" "$s"
    ok 0 "$label: one Ctrl+Y brings both layers back (not tried: the undo failed)"
    ok 0 "$label: Ctrl+Z again removes them (not tried: the undo failed)"
    return
  fi
  press ctrl+y
  s=$(wait_state "$after_run")
  rc=$?
  ok_state $rc "$label: one Ctrl+Y brings both layers back"
  [ $rc = 0 ] || printf '#   after run: %s\n#   after redo: %s\n' "$after_run" "$s"
  press ctrl+z
  s=$(wait_state "$before")
  ok_state $? "$label: Ctrl+Z again removes them"
}

# call PROC SEED [STRENGTH [MODEL [NEGATIVE]]]: a non-interactive call of PROC on src, "a red
# fox", euler_a, 2 steps, CFG 7, batch count 2 (the model is the Scheme variable `model` unless
# given), in the argument style of the GIMP under test.
call() {
  local proc=$1 seed=$2 strength=${3:-} model=${4:-model} negative=${5-blurry}
  if [ "$gimp_version" = 2.10 ]; then
    echo "($proc RUN-NONINTERACTIVE img src \"a red fox\" \"$negative\" $model \"euler_a\" 2 7.0 $seed 2 $strength \"\")"
  else
    echo "($proc #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector src) #:prompt \"a red fox\" #:negative-prompt \"$negative\" #:model $model #:sampler \"euler_a\" #:steps 2 #:cfg-scale 7.0 #:seed $seed #:batch-count 2 ${strength:+#:strength $strength} #:loras \"\")"
  fi
}

check_undo "text-to-image" \
  '(gimp-image-select-rectangle img CHANNEL-OP-REPLACE 16 16 64 64)' \
  "$(call plug-in-diffusion-text-to-image 42)"
check_undo "image-to-image" \
  '(gimp-selection-none img)' \
  "$(call plug-in-diffusion-image-to-image 7 0.6)"
check_undo "inpaint" \
  '(gimp-image-select-ellipse img CHANNEL-OP-REPLACE 40 40 40 40)' \
  "$(call plug-in-diffusion-inpaint 1234 1.0)"
# The inpaint state compared above includes the selection; say so in a line of its own.
sel=$(sf_eval '(gimp-selection-bounds img)')
ok $([ "$sel" = "(1 40 40 80 80)" ] && echo 1 || echo 0) \
  "inpaint: the selection is still there after the undo ($sel)"

# A failed run: the selection change just before it must be what the next Ctrl+Z undoes.
label="failed run (missing model)"
before=$(get_state) || bail "$gone"
sf_eval '(begin (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 8 8 24 24) (gimp-displays-flush))' >/dev/null
selected=$(get_state) || bail "$gone"
out=$(sf_eval "$(call plug-in-diffusion-text-to-image 1 "" missing "")")
rc=$?
ok $([ $rc = 1 ] && echo 1 || echo 0) "$label: the procedure fails (status $rc)"
echo "#   $out" | head -n 3
sf_eval '(gimp-displays-flush)' >/dev/null
s=$(get_state) || bail "$gone"
ok $([ "$s" = "$selected" ] && echo 1 || echo 0) "$label: the image is unchanged"
press ctrl+z
s=$(wait_state "$before")
rc=$?
ok_state $rc "$label: it left no undo step - Ctrl+Z undoes the selection made before it"
[ $rc = 0 ] || printf '#   before selection: %s\n#   after undo:       %s\n' "$before" "$s"

kill -0 "$gimp_pid" 2>/dev/null
ok_rc $? "GIMP is still running"
# GIMP 3 prints harmless warnings of its own (see tests/test-gimp3.sh): there only the lines that
# name our plug-in count.
crash="crash|segmentation|wire read|terminated"
[ "$gimp_version" = 2.10 ] || crash="gimp-diffusion.*(crash|segmentation|terminated|killed)"
ok $(grep -qiE "$crash" "$work/gimp.log" && echo 0 || echo 1) "no plug-in crashed"
if [ $fail = 1 ]; then
  echo "# GIMP's output:"
  tail -n 40 "$work/gimp.log" | sed 's/^/#   /'
fi
echo "1..$n"
exit 0
