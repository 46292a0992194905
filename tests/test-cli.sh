#!/usr/bin/env bash
# test-cli.sh - TAP tests of the `sdg` command line and of sdg-random-checkpoint.
#
# Usage: test-cli.sh SDG RANDOM_CHECKPOINT [MODELS_DIR]   (SDG_REFERENCE_DIR points at
# shared/reference; MODELS_DIR holds the bundled default model, the project's models/)
# Set SDG_CLI_WRAPPER (e.g. "valgrind -q --leak-check=full --error-exitcode=99") to run every sdg
# under a wrapper. Checks option handling and errors without a model, then generates with the
# golden tiny model (skipped when the reference data is absent). Not here: picture quality, which
# the golden C tests cover; this only needs bash and coreutils (no python, no gegl binary).
set -u

SDG=${1:?usage: test-cli.sh SDG RANDOM_CHECKPOINT}
RANDCK=${2:?usage: test-cli.sh SDG RANDOM_CHECKPOINT}
MODELS=${3:-}
REF=${SDG_REFERENCE_DIR:-$(dirname "$0")/../../shared/reference}
WRAP=${SDG_CLI_WRAPPER:-}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/test-cli.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

n=0
failed=0
ok()   { n=$((n + 1)); echo "ok $n - $1"; }
fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }

# run ARGS...: runs sdg, leaving the status in $rc and stderr in $TMP/err
run() { $WRAP "$SDG" "$@" >"$TMP/out" 2>"$TMP/err"; rc=$?; }
err_tail() { tail -n 3 "$TMP/err" | tr '\n' '|'; }

# expect NAME CODE PATTERN ARGS...: status CODE and stderr matching PATTERN (grep -E)
expect() {
    local name=$1 code=$2 pattern=$3
    shift 3
    run "$@"
    if [ "$rc" -eq "$code" ] && grep -Eq -- "$pattern" "$TMP/err"; then
        ok "$name"
    else
        fail "$name" "want status $code and /$pattern/, got $rc: $(err_tail)"
    fi
}

# png_size FILE: prints "WxH" from the IHDR chunk (bytes 16..23, big-endian)
png_size() {
    local b
    b=($(od -An -tu1 -j16 -N8 "$1" 2>/dev/null))
    [ "${#b[@]}" -eq 8 ] || { echo "none"; return; }
    echo "$(( (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3] ))x$(( (b[4] << 24) | (b[5] << 16) | (b[6] << 8) | b[7] ))"
}

# st_header FILE: prints the JSON header of a .safetensors file
st_header() {
    local b len
    b=($(od -An -tu1 -N8 "$1" 2>/dev/null))
    [ "${#b[@]}" -eq 8 ] || return 1
    len=$(( b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24) ))
    dd if="$1" bs=1 skip=8 count="$len" 2>/dev/null
}

# st_size_ok FILE: the file is exactly 8 + header + the end of the last data range
st_size_ok() {
    local b len end size
    b=($(od -An -tu1 -N8 "$1" 2>/dev/null))
    [ "${#b[@]}" -eq 8 ] || return 1
    len=$(( b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24) ))
    end=$(st_header "$1" | grep -o '"data_offsets":\[[0-9]*,[0-9]*\]' | sed 's/.*,\([0-9]*\)\]/\1/' | sort -n | tail -1)
    size=$(wc -c <"$1")
    [ -n "$end" ] && [ "$size" -eq $((8 + len + end)) ]
}

# pgm FILE W H: a plain PGM, black on the left half and white on the right
pgm() {
    local f=$1 w=$2 h=$3 x y
    {
        echo "P2"; echo "$w $h"; echo "255"
        for ((y = 0; y < h; y++)); do
            for ((x = 0; x < w; x++)); do
                if [ $x -ge $((w / 2)) ]; then printf '255 '; else printf '0 '; fi
            done
            echo
        done
    } >"$f"
}

# ---------------------------------------------------------------------------------------------
# Options and errors (no model needed)

run --help
missing=""
for opt in --model --vocab --prompt --negative-prompt --width --height --sampler --schedule \
           --steps --cfg-scale --seed --batch-count --clip-skip --init-image --mask --strength \
           --no-inpaint-blend --threads --noise-in --latent-out --output --quiet --version \
           --model-sampling Examples: euler_a karras lcm dpmpp_2m_sde dpmpp_sde sgm_uniform \
           ddim_uniform trailing; do
    grep -q -- "$opt" "$TMP/out" || missing="$missing $opt"
done
if [ "$rc" -eq 0 ] && [ -z "$missing" ]; then ok "--help lists every option"; else fail "--help lists every option" "status $rc, missing:$missing"; fi

run --version
if [ "$rc" -eq 0 ] && grep -q '^sdg ' "$TMP/out"; then ok "--version"; else fail "--version" "status $rc"; fi

expect "unknown option exits 2 with a hint" 2 "Try 'sdg --help'" --no-such-option
expect "stray argument exits 2" 2 "unexpected argument" a cat
expect "non-numeric width exits 2" 2 "width|-W" -W abc
expect "width not a multiple of 8" 2 "multiple of 8" -W 100
expect "height too large" 2 "multiple of 8" -H 8192
expect "steps 0" 2 "steps" --steps 0
expect "steps 1001" 2 "steps" --steps 1001
expect "strength 1.5" 2 "strength" -i "$TMP/none.png" --strength 1.5
expect "strength without init image" 2 "strength needs --init-image" --strength 0.5
expect "mask without init image" 2 "mask needs --init-image" --mask "$TMP/none.png"
expect "unknown sampler lists the samplers" 2 "euler_a" --sampler nope
expect "unknown schedule" 2 "karras" --schedule nope
expect "unknown model sampling" 2 "lcm" --model-sampling nope
expect "bad seed" 2 "seed" --seed -5
expect "negative cfg scale" 2 "cfg-scale" --cfg-scale -1
expect "invalid UTF-8 prompt" 2 "not valid UTF-8" -p $'a \xff\xfe cat'
expect "invalid UTF-8 negative prompt" 2 "not valid UTF-8" -n $'\xc3\x28'
expect "missing model file is named" 1 "nope\\.safetensors" -m "$TMP/nope.safetensors"
expect "missing init image is named" 1 "ghost\\.png" -m "$TMP/nope.safetensors" -i "$TMP/ghost.png"
expect "missing noise file is named" 1 "ghost\\.safetensors" --noise-in "$TMP/ghost.safetensors"
expect "output folder missing" 1 "does not exist" -o "$TMP/no/such/dir/out.png"
expect "missing embeddings folder is named" 1 "embeddings folder .*no-such-embeddings" \
    --embeddings "$TMP/no-such-embeddings"
mkdir -p "$TMP/empty-models"
SDG_MODELS_DIR="$TMP/empty-models" expect "no default model asks for --model" 1 "--model" -p cat
echo "not a model" >"$TMP/junk.safetensors"
run -m "$TMP/junk.safetensors" -W 64 -H 64 -o "$TMP/junk.png"
if [ "$rc" -eq 1 ] && grep -q "^sdg: error: " "$TMP/err" && [ ! -e "$TMP/junk.png" ]; then
    ok "malformed model file: one-line error, exit 1"
else
    fail "malformed model file: one-line error, exit 1" "status $rc: $(err_tail)"
fi

# ---------------------------------------------------------------------------------------------
# sdg-random-checkpoint

printf 'a.weight\tF32\t8,4,3,3\nb.norm1.weight\tF32\t8\nb.bias\tF32\t8\nlogit_scale\tF32\t\nx.position_ids\tI64\t1,77\nbetas\tF32\t1000\n' >"$TMP/small.tsv"
"$RANDCK" "$TMP/small.tsv" "$TMP/small.safetensors" --seed 7 >/dev/null 2>"$TMP/err"; rc=$?
if [ "$rc" -eq 0 ] && st_size_ok "$TMP/small.safetensors" &&
   st_header "$TMP/small.safetensors" | grep -q '"a.weight":{"dtype":"F32","shape":\[8,4,3,3\]' &&
   st_header "$TMP/small.safetensors" | grep -q '"x.position_ids":{"dtype":"I64","shape":\[1,77\]' &&
   st_header "$TMP/small.safetensors" | grep -q '"logit_scale":{"dtype":"F32","shape":\[\]'; then
    ok "random-checkpoint writes a manifest's layout"
else
    fail "random-checkpoint writes a manifest's layout" "status $rc: $(err_tail)"
fi
"$RANDCK" "$TMP/small.tsv" "$TMP/small16.safetensors" --seed 7 --dtype f16 >/dev/null 2>&1; rc=$?
if [ "$rc" -eq 0 ] && st_size_ok "$TMP/small16.safetensors" &&
   st_header "$TMP/small16.safetensors" | grep -q '"a.weight":{"dtype":"F16"' &&
   st_header "$TMP/small16.safetensors" | grep -q '"x.position_ids":{"dtype":"I64"'; then
    ok "random-checkpoint --dtype f16 keeps integer tensors"
else
    fail "random-checkpoint --dtype f16 keeps integer tensors" "status $rc"
fi
"$RANDCK" "$TMP/small.tsv" "$TMP/again.safetensors" --seed 7 >/dev/null 2>&1
"$RANDCK" "$TMP/small.tsv" "$TMP/other.safetensors" --seed 8 >/dev/null 2>&1
if cmp -s "$TMP/small.safetensors" "$TMP/again.safetensors" &&
   ! cmp -s "$TMP/small.safetensors" "$TMP/other.safetensors"; then
    ok "random-checkpoint output depends only on the seed"
else
    fail "random-checkpoint output depends only on the seed"
fi
printf 'a.weight\tF99\t3\n' >"$TMP/bad.tsv"
"$RANDCK" "$TMP/bad.tsv" "$TMP/bad.safetensors" >/dev/null 2>"$TMP/err"; rc=$?
if [ "$rc" -eq 1 ] && grep -q "line 1" "$TMP/err" && [ ! -e "$TMP/bad.safetensors" ]; then
    ok "random-checkpoint rejects a bad manifest line"
else
    fail "random-checkpoint rejects a bad manifest line" "status $rc: $(err_tail)"
fi
"$RANDCK" --dtype f64 "$TMP/small.tsv" "$TMP/x.safetensors" >/dev/null 2>&1; rc=$?
if [ "$rc" -eq 2 ]; then ok "random-checkpoint rejects --dtype f64"; else fail "random-checkpoint rejects --dtype f64" "status $rc"; fi

# ---------------------------------------------------------------------------------------------
# Generation with the golden tiny model

MODEL=$REF/golden/tiny-sd1.safetensors
# The bundled default model, found in the models folder with its own vocabulary beside it, at
# its native size when no size is given.
if [ -n "$MODELS" ] && [ -f "$MODELS/sdg-default.safetensors" ]; then
    SDG_MODELS_DIR=$MODELS run -p "a red circle on the left" --steps 2 -t 2 -o "$TMP/default.png"
    size=$(png_size "$TMP/default.png")
    if [ "$rc" -eq 0 ] && [ "$size" = "64x64" ] && grep -q "sdg-default.safetensors" "$TMP/err"; then
        ok "the default model makes a picture at its native size (64x64)"
    else
        fail "the default model makes a picture at its native size (64x64)" "status $rc, size $size: $(err_tail)"
    fi
else
    skip "the default model makes a picture at its native size" "no default model in '$MODELS'"
fi

VOCAB=$REF/vocab/bpe_simple_vocab_16e6.txt.gz
GEN_TESTS=33
if [ ! -f "$MODEL" ] || [ ! -f "$VOCAB" ]; then
    for ((i = 0; i < GEN_TESTS; i++)); do skip "generation $i" "no tiny model under $REF"; done
    echo "1..$n"
    exit 0
fi
M=(-m "$MODEL" --vocab "$VOCAB" -t 2)

run "${M[@]}" -p "a red fox" -W 64 -H 64 --steps 2 --seed 42 -o "$TMP/t2i.png"
size=$(png_size "$TMP/t2i.png")
if [ "$rc" -eq 0 ] && [ "$size" = "64x64" ] && grep -q "seed 42" "$TMP/err"; then
    ok "text-to-image writes a 64x64 PNG"
else
    fail "text-to-image writes a 64x64 PNG" "status $rc, size $size: $(err_tail)"
fi

run "${M[@]}" -p "a red fox" -W 64 -H 64 --steps 2 --seed 42 -o "$TMP/t2i-again.png" -q
if [ "$rc" -eq 0 ] && cmp -s "$TMP/t2i.png" "$TMP/t2i-again.png" && [ ! -s "$TMP/err" ]; then
    ok "same seed, same picture; -q prints nothing"
else
    fail "same seed, same picture; -q prints nothing" "status $rc: $(err_tail)"
fi

run "${M[@]}" -p "a red fox" -W 64 -H 64 --steps 2 --seed 43 -o "$TMP/t2i-43.png" -q
if [ "$rc" -eq 0 ] && ! cmp -s "$TMP/t2i.png" "$TMP/t2i-43.png"; then
    ok "another seed, another picture"
else
    fail "another seed, another picture" "status $rc: $(err_tail)"
fi

# Few-step sampling: LCM on ComfyUI's sgm_uniform with the LCM-distilled model sampling.
run "${M[@]}" -p "a red fox" -W 64 -H 64 --steps 2 --sampler lcm --schedule sgm_uniform \
    --model-sampling lcm --cfg-scale 1 --seed 5 -o "$TMP/lcm.png"
if [ "$rc" -eq 0 ] && [ "$(png_size "$TMP/lcm.png")" = "64x64" ] &&
   grep -q "lcm/sgm_uniform" "$TMP/err" && grep -q "model sampling lcm" "$TMP/err"; then
    ok "lcm sampler, sgm_uniform schedule, lcm model sampling"
else
    fail "lcm sampler, sgm_uniform schedule, lcm model sampling" "status $rc: $(err_tail)"
fi

run "${M[@]}" -p "a red fox" -W 64 -H 48 --steps 1 --sampler dpmpp_2m --schedule karras \
    --batch-count 2 -o "$TMP/batch.png" --latent-out "$TMP/batch-latent.safetensors"
if [ "$rc" -eq 0 ] && [ "$(png_size "$TMP/batch-1.png")" = "64x48" ] &&
   [ "$(png_size "$TMP/batch-2.png")" = "64x48" ] && [ ! -e "$TMP/batch.png" ] &&
   ! cmp -s "$TMP/batch-1.png" "$TMP/batch-2.png"; then
    ok "batch of 2 writes NAME-1.png and NAME-2.png"
else
    fail "batch of 2 writes NAME-1.png and NAME-2.png" "status $rc: $(err_tail)"
fi
if st_size_ok "$TMP/batch-latent.safetensors" &&
   st_header "$TMP/batch-latent.safetensors" | grep -q '"latent":{"dtype":"F32","shape":\[2,4,6,8\]'; then
    ok "--latent-out writes tensor 'latent' [2,4,6,8]"
else
    fail "--latent-out writes tensor 'latent' [2,4,6,8]" "$(st_header "$TMP/batch-latent.safetensors" | head -c 200)"
fi

run "${M[@]}" -W 64 -H 64 --steps 1 -b 2 -o "$TMP/pat-%d-x.png" -q
if [ "$rc" -eq 0 ] && [ -s "$TMP/pat-1-x.png" ] && [ -s "$TMP/pat-2-x.png" ]; then
    ok "%d in --output is filled in"
else
    fail "%d in --output is filled in" "status $rc: $(err_tail)"
fi

run "${M[@]}" -p "an oil painting" -i "$TMP/t2i.png" --strength 0.5 --steps 2 --seed 1 -o "$TMP/i2i.png"
if [ "$rc" -eq 0 ] && [ "$(png_size "$TMP/i2i.png")" = "64x64" ] && grep -q "image-to-image" "$TMP/err"; then
    ok "image-to-image keeps the init image's size"
else
    fail "image-to-image keeps the init image's size" "status $rc: $(err_tail)"
fi

run "${M[@]}" -i "$TMP/t2i.png" -W 32 -H 48 --steps 1 -o "$TMP/i2i-scaled.png"
if [ "$rc" -eq 0 ] && [ "$(png_size "$TMP/i2i-scaled.png")" = "32x48" ]; then
    ok "image-to-image with -W/-H scales the init image"
else
    fail "image-to-image with -W/-H scales the init image" "status $rc: $(err_tail)"
fi

pgm "$TMP/mask.pgm" 64 64
pgm "$TMP/gray.pgm" 64 64
run "${M[@]}" -p "a cat" -i "$TMP/gray.pgm" --mask "$TMP/mask.pgm" --steps 2 -o "$TMP/inpaint.png"
if [ "$rc" -eq 0 ] && [ "$(png_size "$TMP/inpaint.png")" = "64x64" ] && grep -q "inpainting" "$TMP/err"; then
    ok "inpainting with a PGM mask (and a grey init image)"
else
    fail "inpainting with a PGM mask (and a grey init image)" "status $rc: $(err_tail)"
fi

pgm "$TMP/mask-small.pgm" 32 32
expect "mask of another size than the init image" 1 "mask .* is 32x32 but the init image is 64x64" \
    "${M[@]}" -i "$TMP/t2i.png" --mask "$TMP/mask-small.pgm" -o "$TMP/x.png"
pgm "$TMP/odd.pgm" 60 60
expect "init image not a multiple of 8 without -W/-H" 1 "multiples of 8" \
    "${M[@]}" -i "$TMP/odd.pgm" -o "$TMP/x.png"
echo "garbage" >"$TMP/garbage.png"
expect "unreadable init image" 1 "could not be read" "${M[@]}" -i "$TMP/garbage.png" -o "$TMP/x.png"

# --noise-in replaces the seeded noise: with a deterministic sampler two seeds then agree.
printf 'noise\tF32\t1,4,8,8\n' >"$TMP/noise.tsv"
"$RANDCK" "$TMP/noise.tsv" "$TMP/noise.safetensors" --seed 3 >/dev/null 2>&1
run "${M[@]}" -W 64 -H 64 --steps 2 --sampler euler --seed 1 --noise-in "$TMP/noise.safetensors" \
    -o "$TMP/noise-1.png" --latent-out "$TMP/noise-1.safetensors" -q
rc1=$rc
run "${M[@]}" -W 64 -H 64 --steps 2 --sampler euler --seed 2 --noise-in "$TMP/noise.safetensors" \
    -o "$TMP/noise-2.png" --latent-out "$TMP/noise-2.safetensors" -q
if [ "$rc1" -eq 0 ] && [ "$rc" -eq 0 ] && cmp -s "$TMP/noise-1.png" "$TMP/noise-2.png" &&
   cmp -s "$TMP/noise-1.safetensors" "$TMP/noise-2.safetensors"; then
    ok "--noise-in: the given noise decides the picture, not the seed"
else
    fail "--noise-in: the given noise decides the picture, not the seed" "status $rc1/$rc: $(err_tail)"
fi
expect "--noise-in of the wrong shape" 1 "noise" \
    "${M[@]}" -W 128 -H 64 --steps 1 --noise-in "$TMP/noise.safetensors" -o "$TMP/x.png"

# --embeddings: a name in the prompt uses its file; one of another width is refused, naming it.
mkdir -p "$TMP/emb"
printf 'emb_params\tF32\t2,64\n' >"$TMP/emb.tsv"
printf 'emb_params\tF32\t1,768\n' >"$TMP/emb-wide.tsv"
"$RANDCK" "$TMP/emb.tsv" "$TMP/emb/my-style.safetensors" --seed 4 >/dev/null 2>&1
"$RANDCK" "$TMP/emb-wide.tsv" "$TMP/emb/easynegative.safetensors" --seed 5 >/dev/null 2>&1
run "${M[@]}" -W 64 -H 64 --steps 1 -p "a (my-style:1.2) cat" --embeddings "$TMP/emb" \
    -o "$TMP/emb.png" -q
if [ "$rc" -eq 0 ] && [ -s "$TMP/emb.png" ]; then
    ok "--embeddings: a prompt naming an embedding runs"
else
    fail "--embeddings: a prompt naming an embedding runs" "status $rc: $(err_tail)"
fi
expect "--embeddings: an embedding of another width is refused, naming the file and widths" 1 \
    "easynegative\\.safetensors: the embedding's vectors are 768 wide but the model's text encoder is 64 wide" \
    "${M[@]}" -W 64 -H 64 --steps 1 -p "a cat" -n "easynegative" --embeddings "$TMP/emb" \
    -o "$TMP/x.png"

# --lora: the golden LoRA by path and by <lora:NAME> tag (the folder given); errors name the tag.
LORA="$REF/golden/tiny-sd1-lora.safetensors"
mkdir -p "$TMP/loras"
ln -s "$LORA" "$TMP/loras/style.safetensors"
run "${M[@]}" -W 64 -H 64 --steps 1 -s 5 -p "a cat" --lora "$LORA:0.7" -o "$TMP/lora.png" -q
if [ "$rc" -eq 0 ] && [ -s "$TMP/lora.png" ]; then ok "--lora FILE:WEIGHT runs"
else fail "--lora FILE:WEIGHT runs" "status $rc: $(err_tail)"; fi
run "${M[@]}" -W 64 -H 64 --steps 1 -s 5 -p "a cat <lora:style:0.7>" --lora-dir "$TMP/loras" \
    -o "$TMP/lora-tag.png" -q
if [ "$rc" -eq 0 ] && cmp -s "$TMP/lora.png" "$TMP/lora-tag.png"; then
    ok "a <lora:NAME:WEIGHT> tag found in --lora-dir makes the --lora picture"
else
    fail "a <lora:NAME:WEIGHT> tag found in --lora-dir makes the --lora picture" "status $rc: $(err_tail)"
fi
expect "an unknown LoRA name is refused with the folders searched" 1 "no LoRA named 'nobody'.*loras" \
    "${M[@]}" -W 64 -H 64 --steps 1 -p "<lora:nobody>" --lora-dir "$TMP/loras" -o "$TMP/x.png"
expect "a malformed LoRA tag is refused" 1 "malformed LoRA tag '<lora:>'" \
    "${M[@]}" -W 64 -H 64 --steps 1 -p "a <lora:> cat" -o "$TMP/x.png"
expect "a LoRA weight outside [-10, 10] is refused" 2 "between -10 and 10" \
    "${M[@]}" -W 64 -H 64 --steps 1 -p "a cat" --lora "$LORA:12" -o "$TMP/x.png"

# --hires: both upscales make the hires size; bad sizes are refused.
for up in latent pixel; do
    run "${M[@]}" -W 64 -H 64 --steps 2 --hires 96x64 --hires-upscale $up --hires-steps 2 \
        -o "$TMP/hires-$up.png" -q
    size=$(png_size "$TMP/hires-$up.png" 2>/dev/null)
    if [ "$rc" -eq 0 ] && [ "$size" = "96x64" ]; then ok "--hires 96x64 --hires-upscale $up"
    else fail "--hires 96x64 --hires-upscale $up" "status $rc, size $size: $(err_tail)"; fi
done
expect "--hires smaller than the picture is refused" 1 "hires size" \
    "${M[@]}" -W 64 -H 64 --steps 1 --hires 32x32 -o "$TMP/x.png"
expect "--hires-upscale must be known" 2 "unknown --hires-upscale" \
    "${M[@]}" -W 64 -H 64 --hires 96x64 --hires-upscale sideways -o "$TMP/x.png"
expect "--hires-strength out of range" 2 "between 0 and 1" \
    "${M[@]}" -W 64 -H 64 --hires 96x64 --hires-strength 2 -o "$TMP/x.png"

# Ctrl-C: wait for the first progress line, interrupt, expect "cancelled" and status 130.
$WRAP "$SDG" "${M[@]}" -W 256 -H 256 --steps 1000 -o "$TMP/long.png" >/dev/null 2>"$TMP/err" &
pid=$!
for ((i = 0; i < 600; i++)); do
    grep -q "step 1/1000" "$TMP/err" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -INT "$pid" 2>/dev/null
wait "$pid"; rc=$?
if [ "$rc" -eq 130 ] && grep -q "cancelled" "$TMP/err" && [ ! -e "$TMP/long.png" ]; then
    ok "Ctrl-C cancels with status 130"
else
    fail "Ctrl-C cancels with status 130" "status $rc: $(err_tail)"
fi


# ---------------------------------------------------------------------------------------------
# Bad model files and output paths (the CI runs this as root: a chmod'ed folder would not stop
# it, so unwritable outputs are a folder, a device, /proc, a folder removed during the run and a
# file size limit).

# before_sampling: the run stopped before loading the model (no "loading" line)
before_sampling() { ! grep -q "^sdg: loading" "$TMP/err"; }

mkdir -p "$TMP/outdir"
run "${M[@]}" -W 64 -H 64 --steps 1 -o "$TMP/outdir"
if [ "$rc" -eq 1 ] && grep -q "the output '$TMP/outdir' is a folder" "$TMP/err" && before_sampling; then
    ok "output path that is a folder: refused before sampling"
else
    fail "output path that is a folder: refused before sampling" "status $rc: $(err_tail)"
fi
run "${M[@]}" -W 64 -H 64 --steps 1 -o /dev/null
if [ "$rc" -eq 1 ] && grep -q "'/dev/null' exists and is not a regular file" "$TMP/err" &&
   before_sampling && [ -c /dev/null ]; then
    ok "output path that is a device: refused before sampling, device untouched"
else
    fail "output path that is a device: refused before sampling, device untouched" "status $rc: $(err_tail)"
fi
if [ -d /proc/self ]; then
    run "${M[@]}" -W 64 -H 64 --steps 1 -o /proc/sdg-test.png
    if [ "$rc" -eq 1 ] && grep -q "cannot write the output '/proc/sdg-test.png'" "$TMP/err" && before_sampling; then
        ok "output in a folder that takes no files (/proc, even for root): refused before sampling"
    else
        fail "output in a folder that takes no files (/proc, even for root): refused before sampling" "status $rc: $(err_tail)"
    fi
else
    skip "output in /proc" "no /proc"
fi
mkdir -p "$TMP/b-1"
run "${M[@]}" -W 64 -H 64 --steps 1 -b 2 -o "$TMP/b-%d/x.png"
if [ "$rc" -eq 1 ] && grep -q "folder of the output '$TMP/b-2/x.png' does not exist" "$TMP/err" && before_sampling; then
    ok "every picture's folder is checked before sampling (%d in the folder)"
else
    fail "every picture's folder is checked before sampling (%d in the folder)" "status $rc: $(err_tail)"
fi
run "${M[@]}" -W 64 -H 64 --steps 1 -o "$TMP/x.png" --latent-out "$TMP/outdir"
if [ "$rc" -eq 1 ] && grep -q "latent file '$TMP/outdir' is a folder" "$TMP/err" && before_sampling; then
    ok "--latent-out that is a folder: refused before sampling"
else
    fail "--latent-out that is a folder: refused before sampling" "status $rc: $(err_tail)"
fi

# The output folder disappears during the run: the picture goes to the temporary folder.
mkdir -p "$TMP/gone" "$TMP/rescue"
# The run is stopped (SIGSTOP) while the folder goes, so a fast machine cannot finish first.
TMPDIR="$TMP/rescue" $WRAP "$SDG" "${M[@]}" -W 64 -H 64 --steps 40 --seed 5 -o "$TMP/gone/pic.png" \
    >/dev/null 2>"$TMP/err" &
pid=$!
for ((i = 0; i < 3000; i++)); do
    grep -q "step 1/40" "$TMP/err" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
done
kill -STOP "$pid" 2>/dev/null
rm -rf "$TMP/gone"
kill -CONT "$pid" 2>/dev/null
wait "$pid"; rc=$?
rescued=$(sed -n "s/.*was saved as '\\([^']*\\)' instead.*/\\1/p" "$TMP/err")
if [ "$rc" -eq 1 ] && grep -q "could not write '$TMP/gone/pic.png'" "$TMP/err" &&
   [ -n "$rescued" ] && [ "$(dirname "$rescued")" = "$TMP/rescue" ] &&
   [ "$(png_size "$rescued")" = "64x64" ]; then
    ok "output folder removed during the run: the picture is saved in the temporary folder"
else
    fail "output folder removed during the run: the picture is saved in the temporary folder" "status $rc, rescued '$rescued': $(err_tail)"
fi

# A write that fails half-way (a file size limit standing in for a full disk): noticed, no broken
# file left, no false "wrote".
mkdir -p "$TMP/lim" "$TMP/lim-tmp"
(trap '' XFSZ; ulimit -f 2; TMPDIR="$TMP/lim-tmp" exec $WRAP "$SDG" "${M[@]}" -W 64 -H 64 --steps 1 \
    -o "$TMP/lim/pic.png") >/dev/null 2>"$TMP/err"; rc=$?
if [ "$rc" -eq 1 ] && grep -q "could not write '$TMP/lim/pic.png'" "$TMP/err" &&
   grep -q "is lost" "$TMP/err" && ! grep -q "^sdg: wrote" "$TMP/err" &&
   [ -z "$(ls -A "$TMP/lim")" ] && [ -z "$(ls -A "$TMP/lim-tmp")" ]; then
    ok "a write that fails half-way is noticed and leaves no broken file"
else
    fail "a write that fails half-way is noticed and leaves no broken file" "status $rc: $(err_tail); left: $(ls -A "$TMP/lim" "$TMP/lim-tmp" | tr '\n' ' ')"
fi

# Model paths that are not model files, each with its own sentence (and no hang on a FIFO).
ln -s "$TMP/loop-b.safetensors" "$TMP/loop-a.safetensors"
ln -s "$TMP/loop-a.safetensors" "$TMP/loop-b.safetensors"
expect "model path in a symlink loop: the system's reason, not 'does not exist'" 1 \
    "loop-a\\.safetensors: cannot open: " "${M[@]}" -m "$TMP/loop-a.safetensors" -W 64 -H 64 -o "$TMP/x.png"
mkfifo "$TMP/fifo.safetensors"
timeout 60 $WRAP "$SDG" "${M[@]}" -m "$TMP/fifo.safetensors" -W 64 -H 64 -o "$TMP/x.png" \
    >/dev/null 2>"$TMP/err"; rc=$?
if [ "$rc" -eq 1 ] && grep -q "fifo.safetensors: is a named pipe (FIFO), not a safetensors file" "$TMP/err"; then
    ok "model path that is a FIFO: refused at once"
else
    fail "model path that is a FIFO: refused at once" "status $rc: $(err_tail)"
fi
: >"$TMP/empty.safetensors"
expect "empty model file" 1 "empty\\.safetensors: the file is empty \\(0 bytes\\)" \
    "${M[@]}" -m "$TMP/empty.safetensors" -W 64 -H 64 -o "$TMP/x.png"
expect "model path that is a folder" 1 "is a folder but not a diffusers pipeline" \
    "${M[@]}" -m "$TMP/outdir" -W 64 -H 64 -o "$TMP/x.png"
size=$(wc -c <"$MODEL")
head -c $((size - 1)) "$MODEL" >"$TMP/cut.safetensors"
expect "truncated model: says how long it should be" 1 \
    "the file is truncated: it is $((size - 1)) bytes but its header describes $size" \
    "${M[@]}" -m "$TMP/cut.safetensors" -W 64 -H 64 -o "$TMP/x.png"
cp "$MODEL" "$TMP/sparse.safetensors"
if truncate -s 100G "$TMP/sparse.safetensors" 2>/dev/null; then
    t0=$(date +%s)
    expect "model followed by 100 GB of holes: refused at once" 1 "the file is 107374182400 bytes but its header describes only $size" \
        "${M[@]}" -m "$TMP/sparse.safetensors" -W 64 -H 64 -o "$TMP/x.png"
    [ $(( $(date +%s) - t0 )) -le 10 ] || fail "100 GB sparse model answered in under 10 s" "took $(( $(date +%s) - t0 )) s"
else
    skip "model followed by 100 GB of holes" "no sparse files in $TMP"
fi
rm -f "$TMP/sparse.safetensors"
# A NaN in the UNet's last convolution, written over its first float.
hdr=($(od -An -tu1 -N8 "$MODEL"))
len=$(( hdr[0] | (hdr[1] << 8) | (hdr[2] << 16) | (hdr[3] << 24) ))
begin=$(st_header "$MODEL" | grep -o '"model.diffusion_model.out.2.weight":{[^}]*}' |
        sed 's/.*"data_offsets":\[\([0-9]*\),.*/\1/')
cp "$MODEL" "$TMP/nan.safetensors"
printf '\000\000\300\177' | dd of="$TMP/nan.safetensors" bs=1 seek=$((8 + len + begin)) conv=notrunc 2>/dev/null
expect "NaN weight: the tensor is named, not a black picture" 1 \
    "tensor 'model.diffusion_model.out.2.weight' has 1 NaN or infinite value" \
    "${M[@]}" -m "$TMP/nan.safetensors" -W 64 -H 64 -o "$TMP/nan.png"
[ ! -e "$TMP/nan.png" ] || fail "no picture from a NaN model" "$TMP/nan.png exists"
# The memory guard: the estimate is printed before sampling; a run that does not fit in
# SDG_MEMORY_LIMIT (the tiny model needs about 29 MB at 64x64 and 76 MB at 256x256) is refused
# with a sentence and status 1 before any step, and writes nothing.
run "${M[@]}" -p "a fox" -W 64 -H 64 --steps 1 -o "$TMP/mem-ok.png"
if [ "$rc" -eq 0 ] && grep -Eq "memory: needs [0-9.]+.[kMG]B \(model [0-9.]+.MB \+ working memory [0-9.]+.[kMG]B\), [0-9.]+.[kMGT]B available" "$TMP/err"; then
    ok "the memory estimate is printed before the run"
else
    fail "the memory estimate is printed before the run" "status $rc: $(err_tail)"
fi
SDG_MEMORY_LIMIT=50M run "${M[@]}" -p "a fox" -W 64 -H 64 --steps 1 -o "$TMP/mem-small.png"
if [ "$rc" -eq 0 ] && [ -s "$TMP/mem-small.png" ]; then
    ok "a run that fits in SDG_MEMORY_LIMIT goes ahead"
else
    fail "a run that fits in SDG_MEMORY_LIMIT goes ahead" "status $rc: $(err_tail)"
fi
SDG_MEMORY_LIMIT=50M run "${M[@]}" -p "a fox" -W 256 -H 256 --steps 1 -o "$TMP/mem-big.png"
if [ "$rc" -eq 1 ] && [ ! -e "$TMP/mem-big.png" ] && ! grep -q "step 1/1" "$TMP/err" &&
   grep -Eq "error: this 256x256 run needs [0-9.]+ MB \(model [0-9.]+ MB \+ working memory [0-9.]+ MB\) but only 50.0 MB is available \(SDG_MEMORY_LIMIT\); lower the size$" "$TMP/err"; then
    ok "a run that does not fit is refused before sampling, naming need, available, what to lower"
else
    fail "a run that does not fit is refused before sampling, naming need, available, what to lower" \
        "status $rc: $(err_tail)"
fi
SDG_MEMORY_LIMIT=lots expect "a bad SDG_MEMORY_LIMIT is an error" 1 \
    "SDG_MEMORY_LIMIT='lots' is not a size" "${M[@]}" -W 64 -H 64 --steps 1 -o "$TMP/mem-bad.png"

echo "1..$n"
[ "$failed" -eq 0 ]
