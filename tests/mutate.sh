#!/usr/bin/env bash
# mutate.sh - proves that the golden tests bite: applies one-line mistakes to the engine, one at a
# time, in a scratch copy of this tree, and checks that each makes at least one test fail.
#
# Usage: bash tests/mutate.sh [-l] [-k] [-j JOBS] [NAME...]
#   -l        list the mutations and exit
#   -k        keep the scratch folder (its path is printed) instead of removing it
#   -j JOBS   parallel compile jobs and test processes (default 2)
#   NAME...   run only these mutations (default: all)
# Environment: SDG_REFERENCE_DIR (default ../shared/reference beside the project root),
# MUTATE_DIR (scratch folder to use; default a new one under ${TMPDIR:-/tmp}).
#
# How: the files git knows (tracked and untracked, not ignored) are copied to the scratch folder,
# configured once (release, no GIMP plug-in) and built; the unmutated tree must pass first. Then
# for each mutation: apply it (every text it replaces must occur exactly once in its file, or the
# script stops: a refactor moved the line, so update the mutation), rebuild incrementally, run
# the fast golden suites (meson suites golden + tensor, not slow: test-ops, test-tokenizer,
# test-clip, test-unet, test-vae, test-sampler, test-api, test-cli), record which tests fail, put
# the file back. Prints a table "mutation | failing tests | first failure" and exits 1 if any
# mutation survives (no test fails), 2 on a usage or setup error. Nothing in the tree you run it
# from is modified. The engine sources are never edited here: the mutations live in this file.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
JOBS=2
KEEP=0
LIST=0
while getopts "lkj:h" opt; do
    case $opt in
    l) LIST=1 ;;
    k) KEEP=1 ;;
    j) JOBS=$OPTARG ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

# ---------------------------------------------------------------------------------------------
# The mutations: mut NAME FILE OLD NEW [OLD NEW ...] (FILE relative to the project root; each OLD
# is literal text that must occur exactly once in FILE and is replaced by NEW). Each is a mistake
# a port could plausibly make; the comment says what it breaks.

NAMES=() FILES=() EDITS=()
mut() {
    local name=$1 file=$2
    shift 2
    if [ $# -eq 0 ] || [ $(($# % 2)) -ne 0 ]; then
        echo "mutate.sh: mutation $name: needs OLD NEW pairs" >&2
        exit 2
    fi
    NAMES+=("$name")
    FILES+=("$file")
    local packed="" s
    for s in "$@"; do
        packed+="$s"$'\x1f'   # unit separator between the texts
    done
    EDITS+=("$packed")
}

# Normalisation constants (ldm: GroupNorm eps 1e-5 in ResBlocks, 1e-6 in SpatialTransformer.norm
# and the whole VAE; nn.LayerNorm 1e-5 in the UNet transformer and CLIP).
mut unet-st-groupnorm-eps engine/model/unet.c \
    '#define UNET_ST_GN_EPS 1e-6f' '#define UNET_ST_GN_EPS 1e-5f'
mut unet-resblock-groupnorm-eps engine/model/unet.c \
    '#define UNET_GN_EPS 1e-5f' '#define UNET_GN_EPS 1e-6f'
mut unet-layernorm-eps engine/model/unet.c \
    '#define UNET_LN_EPS 1e-5f' '#define UNET_LN_EPS 1e-6f'
mut vae-groupnorm-eps engine/model/vae.c \
    '#define VAE_EPS 1e-6f' '#define VAE_EPS 1e-5f'
mut clip-layernorm-eps engine/model/clip.c \
    '#define CLIP_LN_EPS 1e-5f' '#define CLIP_LN_EPS 1e-6f'
mut unet-groupnorm-groups engine/model/unet.c \
    '#define UNET_GROUPS 32 ' '#define UNET_GROUPS 16 '

# Attention: scale 1/sqrt(head dim).
mut clip-attention-scale engine/model/clip.c \
    '1.0f / sqrtf((float)dh), true, t, W);' '1.0f / (float)dh, true, t, W);'
mut unet-attention-scale engine/model/unet.c \
    'float scale = 1.0f / sqrtf((float)dh);' 'float scale = 1.0f / (float)dh;'
mut unet-attention-scale-width engine/model/unet.c \
    'float scale = 1.0f / sqrtf((float)dh);' 'float scale = 1.0f / sqrtf((float)inner);'
mut vae-attention-scale engine/model/vae.c \
    'const float scale = (float)(1.0 / sqrt((double)C));' 'const float scale = (float)(1.0 / (double)C);'
mut clip-not-causal engine/model/clip.c \
    '1.0f / sqrtf((float)dh), true, t, W);' '1.0f / sqrtf((float)dh), false, t, W);'

# Activations and block structure.
mut geglu-halves-swapped engine/tensor/ops.c \
    'yr[j] = a[j] * ops_gelu(gate[j]);' 'yr[j] = gate[j] * ops_gelu(a[j]);'
mut clip-gelu-not-quick engine/model/clip.c \
    'sdg_op_quick_gelu(ex, h, rows * c->mlp, h);' 'sdg_op_gelu(ex, h, rows * c->mlp, h);'
mut clip-skip-off-by-one engine/pipeline/pipeline.c \
    'int layer = cc->n_layers - fe->from_end - (j->p->clip_skip - 1);' \
    'int layer = cc->n_layers - fe->from_end - j->p->clip_skip;'
mut clip-skip-no-final-layernorm engine/model/clip.c \
    'sdg_op_layer_norm(ex, x, rows, c->width, m->lnf_w, m->lnf_b, CLIP_LN_EPS, x);' \
    'if (clip_skip == 1) sdg_op_layer_norm(ex, x, rows, c->width, m->lnf_w, m->lnf_b, CLIP_LN_EPS, x);'
mut vae-downsample-pad-top-left engine/model/vae.c \
    'cv->cout, 3, 2, 0, 0, 1, 1,' 'cv->cout, 3, 2, 1, 1, 0, 0,'

# Timestep embedding: [cos, sin] (cos first), f_k = exp(-ln(10000) k / half).
mut timestep-sin-cos-swapped engine/tensor/ops.c \
    'y[(size_t)b * dim + k] = (float)cos((double)arg);' 'y[(size_t)b * dim + k] = (float)sin((double)arg);' \
    'y[(size_t)b * dim + half + k] = (float)sin((double)arg);' 'y[(size_t)b * dim + half + k] = (float)cos((double)arg);'
mut timestep-freq-half-minus-one engine/tensor/ops.c \
    'float freq = expf(neg_log * (float)k / (float)half);' 'float freq = expf(neg_log * (float)k / (float)(half - 1));'

# Latent scale and the VAE posterior.
mut vae-scale-factor engine/model/family.c \
    '.scale_factor = 0.18215f, .native_size = 512, .native_size_v = 512,' \
    '.scale_factor = 0.18f, .native_size = 512, .native_size_v = 512,'
mut vae-posterior-std engine/pipeline/pipeline.c \
    'expf(0.5f * logvar) * noise[i]' 'expf(logvar) * noise[i]'

# Schedules.
mut schedule-beta-end engine/sampler/schedule.c \
    'end = sqrt(0.012);' 'end = sqrt(0.0120001);'
mut karras-rho engine/sampler/schedule.c \
    'const double rho = 7.0;' 'const double rho = 6.0;'
mut sigma-to-t-rounded engine/sampler/schedule.c \
    'return (1.0f - w) * (float)low + w * (float)high;' 'return w < 0.5f ? (float)low : (float)high;'
mut ddim-last-step-to-zero engine/sampler/schedule.c \
    'sigmas[n] = s->sigmas[0];' 'sigmas[n] = 0.0f;'

# Model wrapper and guidance.
mut cfg-sign engine/pipeline/pipeline.c \
    'float e = j->cfg ? eu[i] + s * (ec[i] - eu[i]) : ec[i];' 'float e = j->cfg ? ec[i] + s * (eu[i] - ec[i]) : ec[i];'
mut c-in-without-sqrt engine/sampler/denoiser.c \
    'float c_in = 1.0f / sqrtf(s2);' 'float c_in = 1.0f / s2;'
mut lcm-sigma-data-1 engine/sampler/denoiser.c \
    'float d = T * T + 0.25f;' 'float d = T * T + 1.0f;'

# Sampler steps.
mut lms-order-3 engine/sampler/samplers.c \
    '#define LMS_ORDER 4' '#define LMS_ORDER 3'
mut dpmpp-2m-ratio-inverted engine/sampler/samplers.c \
    'float c2 = 1.0f / (2.0f * r);' 'float c2 = r / 2.0f;'
mut ancestral-eta-half engine/sampler/samplers.c \
    'float u = sqrtf(sn * sn * (sg * sg - sn * sn) / (sg * sg));' \
    'float u = 0.5f * sqrtf(sn * sn * (sg * sg - sn * sn) / (sg * sg));'
mut heun-second-call-t engine/sampler/samplers.c \
    'sched_timestep(s, timing, sn), den2)' 'sched_timestep(s, timing, sg), den2)'
mut lcm-noise-at-sigma engine/sampler/samplers.c \
    'x[j] = noise[j] * sn + den[j];' 'x[j] = noise[j] * sg + den[j];'
mut dpmpp-2m-sde-ratio-inverted engine/sampler/samplers.c \
    'float c = 0.5f * b * (1.0f / r);' 'float c = 0.5f * b * r;'
mut dpmpp-2m-sde-noise-scale engine/sampler/samplers.c \
    'float q = sqrtf(-expm1f(-2.0f * h));' 'float q = sqrtf(-expm1f(-h));'
mut dpmpp-sde-r-quarter engine/sampler/samplers.c \
    'float sm = t + h * 0.5f;' 'float sm = t + h * 0.25f;'
mut heun-plain-average engine/sampler/samplers.c \
    'x[j] = x[j] + (d + d2) / 2.0f * dt;' 'x[j] = x[j] + d2 * dt;'

# The engine's own kernels (engine/tensor/gemm*.{c,h}, ops.c, winograd.c).
mut gemm-k-loop-short engine/tensor/gemm_impl.h \
    'for (int k = 0; k < kc; k++, a += GEMM_MR) {' 'for (int k = 0; k + 1 < kc; k++, a += GEMM_MR) {'
mut gemm-packed-panel-offset engine/tensor/gemm_impl.h \
    'return (const float *)o->p + ((size_t)first_panel * k + p0) * h;' \
    'return (const float *)o->p + ((size_t)first_panel * k + p0 + 1) * h;'
mut gemm-beta-ignored engine/tensor/gemm_impl.h \
    'GEMM_V va = GEMM_VSET1(alpha), vb = GEMM_VSET1(first ? beta : 1.0f);' \
    'GEMM_V va = GEMM_VSET1(alpha), vb = GEMM_VSET1(1.0f);'
mut attention-no-rescale engine/tensor/ops.c \
    'orow[d] *= corr;' 'orow[d] *= 1.0f;'
mut conv-implicit-row-shift engine/tensor/gemm_impl.h \
    'gemm_conv_run16(d, xc, cv, iy0[0] + r.ky, ix0[0] + r.kx);' \
    'gemm_conv_run16(d, xc, cv, iy0[0] + r.ky, ix0[0] + r.kx + 1);'
mut conv-rows-pad-shift engine/tensor/gemm_impl.h \
    'j / cv->ow - cv->pad_t + r.ky, j % cv->ow - cv->pad_l + r.kx);' \
    'j / cv->ow - cv->pad_t + r.ky, j % cv->ow - cv->pad_l + r.kx + 1);'
mut pack-b-rows-panel engine/tensor/gemm_impl.h \
    'gemm_copy16(bp + ((size_t)(j / GEMM_NP) * kc + k) * GEMM_NP,' \
    'gemm_copy16(bp + ((size_t)(j / GEMM_NP) * kc + (k ^ 1)) * GEMM_NP,'
mut winograd-g-scale engine/tensor/winograd.c \
    'u[0] = g0 * 0.25f;' 'u[0] = g0 * 0.5f;'

# LoRA (engine/lora/lora.c): the scale, open_clip's q/k/v slices, the kron layout, DoRA's norm.
mut lora-scale-without-rank engine/lora/lora.c \
    'p->scale = has_alpha && rank > 0 ? alpha / (float)rank : 1.0f;' \
    'p->scale = has_alpha && rank > 0 ? alpha : 1.0f;'
mut lora-openclip-qkv-order engine/lora/lora.c \
    'lora_alias_te(names, e, n_enc, path, i, k * w, w);' \
    'lora_alias_te(names, e, n_enc, path, i, (2 - k) * w, w);'
mut lokr-kron-transposed engine/lora/lora.c \
    'row[j * dd + q] = v * w2[k * dd + q];' 'row[q * b + j] = v * w2[k * dd + q];'
mut dora-norm-per-row engine/lora/lora.c \
    'bool per_row = ds->n == rows && !(ds->n == in && ds->n_dims >= 2 && ds->shape[0] == 1);' \
    'bool per_row = ds->n == rows;'

if [ "$LIST" = 1 ]; then
    for i in "${!NAMES[@]}"; do
        printf '%-30s %s\n' "${NAMES[$i]}" "${FILES[$i]}"
    done
    exit 0
fi

SELECTED=()
if [ $# -eq 0 ]; then
    SELECTED=("${!NAMES[@]}")
else
    for want in "$@"; do
        found=""
        for i in "${!NAMES[@]}"; do
            [ "${NAMES[$i]}" = "$want" ] && found=$i
        done
        if [ -z "$found" ]; then
            echo "mutate.sh: no mutation named '$want' (bash tests/mutate.sh -l lists them)" >&2
            exit 2
        fi
        SELECTED+=("$found")
    done
fi

# ---------------------------------------------------------------------------------------------
# Helpers

die() { echo "mutate.sh: $*" >&2; exit 2; }

# edit MODE FILE PACKED: MODE check = verify that every OLD occurs exactly once; apply = also
# write the replacements. Prints what is wrong and returns 1 when a text does not match.
edit() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
mode, path, packed = sys.argv[1], sys.argv[2], sys.argv[3]
parts = packed.split('\x1f')[:-1]
text = open(path, encoding='utf-8').read()
ok = True
for old, new in zip(parts[0::2], parts[1::2]):
    n = text.count(old)
    if n != 1:
        print(f"  '{old}' occurs {n} times in {path} (must be exactly once)", file=sys.stderr)
        ok = False
    elif mode == 'apply':
        text = text.replace(old, new)
if ok and mode == 'apply':
    open(path, 'w', encoding='utf-8').write(text)
sys.exit(0 if ok else 1)
EOF
}

# failures LOGJSON: "test<TAB>first failure" for every test that did not pass, from meson's
# testlog.json: golden_check's "# FAIL" line (which names the comparison), else the first
# assertion message, else the first "not ok" line, else meson's verdict.
failures() {
    python3 - "$1" <<'EOF'
import json, re, sys
for line in open(sys.argv[1], encoding='utf-8', errors='replace'):
    t = json.loads(line)
    if t.get('result') in ('OK', 'SKIP', 'EXPECTEDFAIL'):
        continue
    lines = ((t.get('stdout') or '') + '\n' + (t.get('stderr') or '')).splitlines()
    first = next((l[len('# FAIL '):] for l in lines if l.startswith('# FAIL ')), '')
    if not first:
        first = next((re.sub(r'^.*?ERROR:(\S*/)?', '', l) for l in lines if 'ERROR:' in l), '')
    if not first:
        first = next((l for l in lines if l.startswith('not ok')), t.get('result', '?'))
    print(f"{t['name'].split(' / ')[-1]}\t{first.strip()}")
EOF
}

# ---------------------------------------------------------------------------------------------
# Scratch copy, configured and built once

command -v git >/dev/null || die "needs git (the copy is the files git knows)"
command -v python3 >/dev/null || die "needs python3"
git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$ROOT is not a git checkout"
REF=${SDG_REFERENCE_DIR:-$ROOT/../shared/reference}
[ -f "$REF/golden/tiny-sd1-reference.safetensors" ] ||
    die "no reference data in $REF (set SDG_REFERENCE_DIR to the shared/reference folder)"
REF=$(cd "$REF" && pwd)

# Check every selected mutation against the current sources first: a stale one stops the run.
stale=0
for i in "${SELECTED[@]}"; do
    if ! edit check "$ROOT/${FILES[$i]}" "${EDITS[$i]}"; then
        echo "mutate.sh: mutation ${NAMES[$i]} no longer matches ${FILES[$i]}; update it" >&2
        stale=1
    fi
done
[ "$stale" = 0 ] || exit 2

if [ -n "${MUTATE_DIR:-}" ]; then
    WORK=$MUTATE_DIR
    mkdir -p "$WORK" || die "cannot create $WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/sdg-mutate.XXXXXX") || die "cannot create a scratch folder"
fi
cleanup() { if [ "$KEEP" = 1 ]; then echo "scratch folder kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

SRC=$WORK/src
B=$WORK/build
LOG=$WORK/log
mkdir -p "$SRC" "$LOG"
(cd "$ROOT" && git ls-files -z -co --exclude-standard |
    tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$SRC" -xf - ||
    die "copying the tree to $SRC failed"

t_start=$(date +%s)
echo "== configure and build the unmutated copy in $WORK"
if [ ! -f "$B/build.ninja" ]; then
    meson setup "$B" "$SRC" -Dbuildtype=release -Dgimp=disabled -Dreference_dir="$REF" \
        >"$LOG/setup.txt" 2>&1 || { tail -20 "$LOG/setup.txt"; die "meson setup failed"; }
fi
ninja -C "$B" -j "$JOBS" >"$LOG/build-base.txt" 2>&1 ||
    { tail -30 "$LOG/build-base.txt"; die "the unmutated tree does not build"; }

TEST_ARGS=(--no-rebuild --num-processes "$JOBS" --suite golden --suite tensor --no-suite slow)
run_tests() {   # run_tests TAG: runs the suites, leaves $B/meson-logs/TAG.json
    SDG_REFERENCE_DIR=$REF meson test -C "$B" "${TEST_ARGS[@]}" --logbase "$1" \
        >"$LOG/$1.txt" 2>&1
}
run_tests base
if [ -n "$(failures "$B/meson-logs/base.json")" ]; then
    failures "$B/meson-logs/base.json" | sed 's/^/  /'
    die "the unmutated tree fails its tests (log: $LOG/base.txt); fix that first"
fi
n_tests=$(wc -l <"$B/meson-logs/base.json")
echo "== unmutated: $n_tests tests pass ($(( $(date +%s) - t_start )) s)"

# ---------------------------------------------------------------------------------------------
# The mutations

RESULT_NAME=() RESULT_FAIL=() RESULT_FIRST=()
survivors=0
for i in "${SELECTED[@]}"; do
    name=${NAMES[$i]} file=${FILES[$i]}
    t0=$(date +%s)
    cp -p "$SRC/$file" "$WORK/orig"
    edit apply "$SRC/$file" "${EDITS[$i]}" || die "applying $name failed"
    if ! ninja -C "$B" -j "$JOBS" >"$LOG/build-$name.txt" 2>&1; then
        cp "$WORK/orig" "$SRC/$file"
        tail -20 "$LOG/build-$name.txt"
        die "mutation $name does not compile; fix its text"
    fi
    run_tests "$name"
    # the original back, with a new time stamp so that ninja rebuilds it
    cp "$WORK/orig" "$SRC/$file"
    touch "$SRC/$file"
    fails=$(failures "$B/meson-logs/$name.json")
    if [ -z "$fails" ]; then
        survivors=$((survivors + 1))
        RESULT_FAIL+=("SURVIVED (no test fails)")
        RESULT_FIRST+=("")
    else
        RESULT_FAIL+=("$(cut -f1 <<<"$fails" | paste -sd ' ')")
        RESULT_FIRST+=("$(head -1 <<<"$fails" | cut -f2 | cut -c1-110)")
    fi
    RESULT_NAME+=("$name")
    printf '%-30s %3d s  %s\n' "$name" $(( $(date +%s) - t0 )) "${RESULT_FAIL[-1]}"
done
ninja -C "$B" -j "$JOBS" >"$LOG/build-restored.txt" 2>&1 || true

echo
echo "mutation | failing tests | first failure"
echo "--- | --- | ---"
for k in "${!RESULT_NAME[@]}"; do
    echo "${RESULT_NAME[$k]} | ${RESULT_FAIL[$k]} | ${RESULT_FIRST[$k]}"
done
echo
echo "${#RESULT_NAME[@]} mutations, $survivors survived, $(( $(date +%s) - t_start )) s in all"
[ "$survivors" = 0 ] || exit 1
exit 0
