/*
 * test-memguard.c - the memory guard: reading what the machine can give (fake /proc and cgroup
 * files, v1 and v2, nested limits, unreadable files), SDG_MEMORY_LIMIT, and sdg_ctx_estimate /
 * sdg_generate on the golden tiny model: the estimate's parts add up and its arena is exactly
 * what the run reserves; a run that does not fit is refused with SDG_ERR_NOMEM and a sentence
 * naming the need, what is available and what to lower, before anything is allocated or any
 * progress is reported; a model loaded header-only sizes runs the same way; loading an F16 model
 * whose float32 copies do not fit is refused, and the copies of one that fits share one block.
 *
 * The test sets SDG_MEMORY_LIMIT itself (tests run one at a time in this process).
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "memory.h"
#include "pipeline/pipeline.h"
#include "sdg.h"

#define TINY "golden/tiny-sd1.safetensors"
#define VOCAB "vocab/bpe_simple_vocab_16e6.txt.gz"

static char *vocab_path;
static char *tiny_path;
static sdg_model *model;   // the tiny model (F32: its weights are used from the mapping)

static sdg_model *load(const char *path, bool header_only, sdg_error *err)
{
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    mp.header_only = header_only;
    return sdg_model_load(path, &mp, err);
}

static void set_limit(const char *value)
{
    if (value)
        g_setenv("SDG_MEMORY_LIMIT", value, TRUE);
    else
        g_unsetenv("SDG_MEMORY_LIMIT");
}

static void set_limit_bytes(uint64_t bytes)
{
    char text[32];
    snprintf(text, sizeof text, "%" G_GUINT64_FORMAT, bytes);
    set_limit(text);
}

static sdg_gen_params small_request(void)
{
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "a red fox";
    gp.width = 64;
    gp.height = 48;
    gp.steps = 1;
    gp.seed = 3;
    return gp;
}

static bool count_progress(int step, int total, const sdg_image *preview, void *user)
{
    (void)step;
    (void)total;
    (void)preview;
    (*(int *)user)++;
    return true;
}

// ---------------------------------------------------------------------------------------------
// Sizes and words

static void test_parse_size(void)
{
    static const struct { const char *text; uint64_t bytes; } good[] = {
        { "4096", 4096 }, { "4096B", 4096 }, { "200M", 200000000 }, { "200MB", 200000000 },
        { "512MiB", 512ull << 20 }, { "1.5G", 1500000000 }, { "2g", 2000000000 },
        { "3Ki", 3072 }, { "1T", 1000000000000ull }, { "0", 0 }, { "7k ", 7000 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
        uint64_t b = 1;
        g_assert_true(sdg__mem_parse_size(good[i].text, &b));
        g_assert_cmpuint(b, ==, good[i].bytes);
    }
    static const char *const bad[] = { "", "abc", "-1", "1e3", "0x10", "12Q", "M", "5 M B",
                                       "1.5.2G", "99999999999999999999999T" };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        uint64_t b = 0;
        g_assert_false(sdg__mem_parse_size(bad[i], &b));
    }
    g_assert_false(sdg__mem_parse_size(NULL, NULL));

    char buf[32];
    sdg__mem_format(3100000000ull, buf, sizeof buf);
    g_assert_cmpstr(buf, ==, "3.1 GB");
    sdg__mem_format(512, buf, sizeof buf);
    g_assert_cmpstr(buf, ==, "512 bytes");
    sdg__mem_format(45000000, buf, sizeof buf);
    g_assert_cmpstr(buf, ==, "45.0 MB");
    sdg__mem_format(999999, buf, sizeof buf);
    g_assert_cmpstr(buf, ==, "1000.0 kB");
}

// ---------------------------------------------------------------------------------------------
// The machine's figure from fake files

static void put(const char *root, const char *rel, const char *text)
{
    char *path = g_build_filename(root, rel, NULL);
    char *dir = g_path_get_dirname(path);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    g_assert_true(g_file_set_contents(path, text, -1, NULL));
    g_free(dir);
    g_free(path);
}

static const char meminfo[] =
    "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    6000000 kB\n"
    "Buffers:          100000 kB\n";

static void test_machine_figure(void)
{
    char *root = g_dir_make_tmp("sdg-memguard-XXXXXX", NULL);
    g_assert_nonnull(root);
    uint64_t b = 1;

    // Nothing readable: unknown.
    g_assert_cmpint(sdg__mem_machine(root, &b), ==, SDG_MEM_UNKNOWN);
    g_assert_cmpuint(b, ==, 0);

    // MemAvailable alone (kB are KiB).
    put(root, "proc/meminfo", meminfo);
    g_assert_cmpint(sdg__mem_machine(root, &b), ==, SDG_MEM_MEMINFO);
    g_assert_cmpuint(b, ==, 6000000ull * 1024);

    // v2: the process's own cgroup has no limit, its parent has 1 GB of which 600 MB are used,
    // 150 MB of that page cache: 550 MB of room, less than MemAvailable.
    put(root, "proc/self/mountinfo",
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
        "30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
        "rw,nsdelegate\n");
    put(root, "proc/self/cgroup", "0::/user.slice/app.scope\n");
    put(root, "sys/fs/cgroup/user.slice/app.scope/memory.max", "max\n");
    put(root, "sys/fs/cgroup/user.slice/app.scope/memory.current", "300000000\n");
    put(root, "sys/fs/cgroup/user.slice/memory.max", "1000000000\n");
    put(root, "sys/fs/cgroup/user.slice/memory.current", "600000000\n");
    put(root, "sys/fs/cgroup/user.slice/memory.stat",
        "anon 400000000\nfile 200000000\nactive_file 100000000\ninactive_file 50000000\n");
    g_assert_cmpint(sdg__mem_machine(root, &b), ==, SDG_MEM_CGROUP);
    g_assert_cmpuint(b, ==, 550000000);

    // A tighter limit further down wins; a usage above the limit leaves nothing.
    put(root, "sys/fs/cgroup/user.slice/app.scope/memory.max", "200000000\n");
    g_assert_cmpint(sdg__mem_machine(root, &b), ==, SDG_MEM_CGROUP);
    g_assert_cmpuint(b, ==, 0);

    // A generous cgroup: MemAvailable is the smaller figure.
    put(root, "sys/fs/cgroup/user.slice/app.scope/memory.max", "max\n");
    put(root, "sys/fs/cgroup/user.slice/memory.max", "64000000000\n");
    g_assert_cmpint(sdg__mem_machine(root, &b), ==, SDG_MEM_MEMINFO);
    g_assert_cmpuint(b, ==, 6000000ull * 1024);

    // Hybrid v1 (memory controller on its own hierarchy, mounted from a container's subtree
    // with an escaped space in the mount point); v1's "no limit" is a huge number.
    put(root, "proc/self/mountinfo",
        "30 22 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "35 31 0:32 /docker/c1 /sys/fs/cg\\040mem rw,relatime - cgroup cgroup rw,memory\n"
        "36 31 0:33 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n");
    put(root, "proc/self/cgroup", "5:cpu,cpuacct:/docker/c1\n4:memory:/docker/c1/job\n0::/\n");
    put(root, "sys/fs/cg mem/job/memory.limit_in_bytes", "9223372036854771712\n");
    put(root, "sys/fs/cg mem/job/memory.usage_in_bytes", "100\n");
    put(root, "sys/fs/cg mem/memory.limit_in_bytes", "2000000000\n");
    put(root, "sys/fs/cg mem/memory.usage_in_bytes", "1500000000\n");
    put(root, "sys/fs/cg mem/memory.stat",
        "cache 900\nactive_file 1\ninactive_file 2\ntotal_active_file 300000000\n"
        "total_inactive_file 200000000\n");
    g_assert_cmpint(sdg__mem_machine(root, &b), ==, SDG_MEM_CGROUP);
    g_assert_cmpuint(b, ==, 1000000000);

    // Unreadable meminfo and an unparsable limit: only what can be read counts.
    char *info = g_build_filename(root, "proc/meminfo", NULL);
    g_assert_cmpint(g_unlink(info), ==, 0);
    g_free(info);
    put(root, "sys/fs/cg mem/memory.limit_in_bytes", "lots\n");
    g_assert_cmpint(sdg__mem_machine(root, &b), ==, SDG_MEM_UNKNOWN);

    golden_remove_tree(root);
    g_free(root);
}

// SDG_MEMORY_LIMIT replaces the machine's figure; a bad value is an error naming it.
static void test_env_override(void)
{
    uint64_t b = 0;
    sdg_mem_source src;
    sdg_error err;
    set_limit("123M");
    g_assert_cmpint(sdg__mem_available(&b, &src, &err), ==, SDG_OK);
    g_assert_cmpint(src, ==, SDG_MEM_ENV);
    g_assert_cmpuint(b, ==, 123000000);
    set_limit("plenty");
    g_assert_cmpint(sdg__mem_available(&b, &src, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_nonnull(strstr(err.message, "SDG_MEMORY_LIMIT='plenty'"));

    // ... and the engine's entry points say so too, without running anything.
    sdg_ctx *ctx = sdg_ctx_new(model, 1, &err);
    g_assert_nonnull(ctx);
    sdg_gen_params gp = small_request();
    sdg_memory_estimate e;
    sdg_result *res = NULL;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &e, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_cmpuint(e.total_bytes, ==, 0);
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_null(res);
    g_assert_nonnull(strstr(err.message, "SDG_MEMORY_LIMIT"));
    sdg_ctx_free(ctx);
    set_limit(NULL);
}

// ---------------------------------------------------------------------------------------------
// Estimates on the tiny model

static void test_estimate_parts(void)
{
    sdg_error err;
    set_limit("1T");
    sdg_ctx *ctx = sdg_ctx_new(model, 2, &err);
    g_assert_nonnull(ctx);
    sdg_gen_params gp = small_request();
    sdg_memory_estimate e;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &e, &err), ==, SDG_OK);

    // The tiny model is F32: its matrices and kernels are packed into copies at load (held by
    // the process), its vectors are used from the mapping (page cache, needed by every run).
    g_assert_cmpuint(model->copy_bytes, >, 4u << 20);
    g_assert_cmpuint(model->mapped_bytes, >, 0);
    g_assert_cmpuint(e.weights_bytes, ==, model->copy_bytes + model->mapped_bytes);
    g_assert_cmpint(e.width, ==, 64);
    g_assert_cmpint(e.height, ==, 48);
    uint64_t n_lat = 4ull * (48 / 8) * (64 / 8);
    g_assert_cmpuint(e.result_bytes, ==, (64ull * 48 * 3 + n_lat) * sizeof(float));
    g_assert_cmpuint(e.extra_bytes, ==, 0);
    g_assert_cmpuint(e.working_bytes, ==, e.arena_bytes + e.result_bytes);
    g_assert_cmpuint(e.total_bytes, ==, e.weights_bytes + e.working_bytes);
    // A fresh ctx holds no arena, and mapped weights count as needed: all but the copies.
    g_assert_cmpuint(e.needed_bytes, ==, e.total_bytes - model->copy_bytes);
    g_assert_true(e.available_known);
    g_assert_cmpuint(e.available_bytes, ==, 1000000000000ull);
    g_assert_true(e.fits);
    // The estimate allocates nothing.
    g_assert_null(ctx->ex.arena.base);
    g_assert_cmpuint(ctx->ex.arena.cap, ==, 0);

    // The run reserves exactly the estimated arena and stays inside its measured peak.
    sdg_result *res = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_OK);
    g_assert_nonnull(res);
    g_assert_cmpuint(ctx->ex.arena.cap, ==, e.arena_bytes);
    g_assert_cmpuint(ctx->ex.arena.peak, <=, ctx->ex.arena.cap);
    g_assert_cmpuint(sdg__exec_reserve_size(ctx->ex.arena.peak), ==, e.arena_bytes);
    sdg_result_free(res);

    // Now the ctx holds an arena big enough: the same run needs that much less.
    sdg_memory_estimate again;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &again, &err), ==, SDG_OK);
    g_assert_cmpuint(again.total_bytes, ==, e.total_bytes);
    g_assert_cmpuint(again.needed_bytes, ==, e.total_bytes - model->copy_bytes - e.arena_bytes);

    // A batch takes more result memory, the same arena (pictures are made one after another);
    // the caller's own memory is counted as it says.
    gp.batch_count = 3;
    gp.extra_bytes = 12345;
    sdg_memory_estimate batch;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &batch, &err), ==, SDG_OK);
    g_assert_cmpuint(batch.result_bytes, ==, 3 * e.result_bytes);
    g_assert_cmpuint(batch.arena_bytes, ==, e.arena_bytes);
    g_assert_cmpuint(batch.extra_bytes, ==, 12345);
    g_assert_cmpuint(batch.working_bytes, ==, batch.arena_bytes + batch.result_bytes + 12345);

    // Without guidance the UNet runs one batch item instead of two: less working memory.
    gp = small_request();
    gp.cfg_scale = 1.0f;
    sdg_memory_estimate nocfg;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &nocfg, &err), ==, SDG_OK);
    g_assert_cmpuint(nocfg.arena_bytes, <=, e.arena_bytes);

    // A larger picture needs more.
    gp = small_request();
    gp.width = gp.height = 128;
    sdg_memory_estimate big;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &big, &err), ==, SDG_OK);
    g_assert_cmpuint(big.arena_bytes, >, e.arena_bytes);

    // Bad requests are refused as sdg_generate refuses them, with the estimate zeroed.
    gp = small_request();
    gp.width = 63;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &big, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_cmpuint(big.total_bytes, ==, 0);
    g_assert_cmpint(sdg_ctx_estimate(NULL, &gp, &big, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, NULL, &err), ==, SDG_ERR_INVALID_ARG);

    sdg_ctx_free(ctx);
    set_limit(NULL);
}

// A run that does not fit: refused before anything is allocated or reported, with a sentence
// naming the need, what is available and what to lower; the limit exactly at the need passes.
static void test_refusal(void)
{
    sdg_error err;
    set_limit("1T");
    sdg_ctx *ctx = sdg_ctx_new(model, 2, &err);
    g_assert_nonnull(ctx);
    sdg_gen_params gp = small_request();
    int calls = 0;
    gp.progress = count_progress;
    gp.progress_data = &calls;
    sdg_memory_estimate e;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &e, &err), ==, SDG_OK);

    // Enough for the model, not for the run.
    set_limit_bytes(e.needed_bytes - 1);
    sdg_memory_estimate no;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &no, &err), ==, SDG_ERR_NOMEM);
    g_assert_false(no.fits);
    g_assert_cmpuint(no.total_bytes, ==, e.total_bytes);
    g_assert_cmpuint(no.available_bytes, ==, e.needed_bytes - 1);
    char *estimate_message = g_strdup(err.message);

    sdg_result *res = (sdg_result *)&calls;   // must come back NULL
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_NOMEM);
    g_assert_cmpint(err.status, ==, SDG_ERR_NOMEM);
    g_assert_null(res);
    g_assert_cmpint(calls, ==, 0);
    g_assert_null(ctx->ex.arena.base);
    g_test_message("refusal: %s", err.message);
    g_assert_cmpstr(err.message, ==, estimate_message);
    char total[32], model_s[32], work[32], avail[32];
    sdg__mem_format(e.total_bytes, total, sizeof total);
    sdg__mem_format(e.weights_bytes, model_s, sizeof model_s);
    sdg__mem_format(e.working_bytes, work, sizeof work);
    sdg__mem_format(e.needed_bytes - 1, avail, sizeof avail);
    char *want = g_strdup_printf("this 64x48 run needs %s (model %s + working memory %s) but only "
                                 "%s is available besides the loaded model (SDG_MEMORY_LIMIT); "
                                 "lower the size", total,
                                 model_s, work, avail);
    g_assert_cmpstr(err.message, ==, want);
    g_free(want);

    // A batch: the batch count is named as something to lower.
    gp.batch_count = 2;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_NOMEM);
    g_assert_null(res);
    g_assert_true(g_str_has_prefix(err.message, "this run of 2 pictures of 64x48 needs "));
    g_assert_true(g_str_has_suffix(err.message, "; lower the size or the batch count"));
    gp.batch_count = 1;

    // Not even the model fits: the advice says so instead.
    set_limit_bytes(e.weights_bytes / 2);
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_NOMEM);
    g_assert_nonnull(strstr(err.message, "the model alone needs"));
    g_assert_null(res);
    g_assert_cmpint(calls, ==, 0);

    // Exactly enough: the run goes ahead.
    set_limit_bytes(e.needed_bytes);
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_OK);
    g_assert_nonnull(res);
    g_assert_cmpint(calls, ==, 2);   // step 0 and step 1
    sdg_result_free(res);

    g_free(estimate_message);
    sdg_ctx_free(ctx);
    set_limit(NULL);
}

// img2img and inpainting are sized from the init image (its pixels are not read).
static void test_estimate_images(void)
{
    sdg_error err;
    set_limit("1T");
    sdg_ctx *ctx = sdg_ctx_new(model, 1, &err);
    g_assert_nonnull(ctx);
    float dummy = 0.0f;
    sdg_image init = { .width = 80, .height = 40, .channels = 3, .data = &dummy };
    sdg_image mask = { .width = 80, .height = 40, .channels = 1, .data = &dummy };
    sdg_gen_params gp = small_request();
    sdg_memory_estimate t2i, i2i, inp;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &t2i, &err), ==, SDG_OK);
    gp.init_image = &init;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &i2i, &err), ==, SDG_OK);
    g_assert_cmpint(i2i.width, ==, 80);
    g_assert_cmpint(i2i.height, ==, 40);
    gp.mask = &mask;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &inp, &err), ==, SDG_OK);
    g_assert_cmpuint(inp.arena_bytes, >=, i2i.arena_bytes);
    sdg_ctx_free(ctx);
    set_limit(NULL);
}

// ---------------------------------------------------------------------------------------------
// Header-only models and the loading guard

static void test_header_only(void)
{
    sdg_error err;
    set_limit("1T");
    sdg_model *shell = load(tiny_path, true, &err);
    g_assert_nonnull(shell);
    sdg_model_info a, b;
    sdg_model_get_info(model, &a);
    sdg_model_get_info(shell, &b);
    g_assert_cmpmem(&a, sizeof a, &b, sizeof b);

    sdg_ctx *full_ctx = sdg_ctx_new(model, 2, &err);
    sdg_ctx *ctx = sdg_ctx_new(shell, 2, &err);
    g_assert_nonnull(ctx);
    sdg_gen_params gp = small_request();
    sdg_memory_estimate full, est;
    g_assert_cmpint(sdg_ctx_estimate(full_ctx, &gp, &full, &err), ==, SDG_OK);
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &est, &err), ==, SDG_OK);
    g_assert_cmpuint(est.weights_bytes, ==, full.weights_bytes);
    g_assert_cmpuint(est.arena_bytes, ==, full.arena_bytes);
    g_assert_cmpuint(est.result_bytes, ==, full.result_bytes);
    g_assert_cmpuint(est.needed_bytes, ==, est.total_bytes);

    sdg_result *res = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_nonnull(strstr(err.message, "header-only"));
    g_assert_null(res);
    sdg_ctx_free(ctx);
    sdg_ctx_free(full_ctx);
    sdg_model_free(shell);
    set_limit(NULL);
}

static void test_load_guard(void)
{
    sdg_error err;
    char *dir = golden_tmpdir("memguard");
    char *f16 = g_build_filename(dir, "tiny-f16.safetensors", NULL);
    golden_write_f16_copy(TINY, f16, NULL);
    // F16 matrices and kernels stay 16-bit in their packed copies, the token embedding is used
    // 16-bit from the mapping, and the vectors (biases, norm scales) become float32 copies:
    // about half the F32 model's bytes.
    sdg_model *shell = load(f16, true, &err);
    g_assert_nonnull(shell);
    uint64_t f32_bytes = model->copy_bytes + model->mapped_bytes;
    uint64_t f16_bytes = shell->copy_bytes + shell->mapped_bytes;
    g_test_message("weights held: F32 file %.2f MB, F16 file %.2f MB", f32_bytes / 1e6,
                   f16_bytes / 1e6);
    g_assert_cmpuint(shell->copy_bytes, >, 0);
    g_assert_cmpuint(f16_bytes * 100, >, f32_bytes * 45);
    g_assert_cmpuint(f16_bytes * 100, <, f32_bytes * 55);

    // The copies must fit: below them, loading is refused before reading anything.
    set_limit_bytes(shell->copy_bytes - 1);
    sdg_model *m = load(f16, false, &err);
    g_assert_null(m);
    g_assert_cmpint(err.status, ==, SDG_ERR_NOMEM);
    g_test_message("load refusal: %s", err.message);
    g_assert_true(g_str_has_prefix(err.message, "loading tiny-f16.safetensors needs "));
    g_assert_nonnull(strstr(err.message, " is available (SDG_MEMORY_LIMIT); "));

    set_limit("1T");
    m = load(f16, false, &err);
    g_assert_nonnull(m);
    g_assert_cmpuint(m->copy_bytes, ==, shell->copy_bytes);
    g_assert_cmpuint(m->mapped_bytes, ==, shell->mapped_bytes);
    // Every copy was carved from the one block the load guard's pass sized (blocks of their own
    // would round each to whole huge pages): 64-byte steps, so at most 64 bytes more a copy.
    g_assert_cmpuint(sdg_wb_slab_used(m->wb), >=, m->copy_bytes);
    g_assert_cmpuint(sdg_wb_slab_used(m->wb), <=, m->copy_bytes + 64 * (size_t)st_count(m->file));

    // Loaded F16 weights are held: a run needs only its working memory, and a refusal says the
    // figure is what is left besides the model.
    sdg_ctx *ctx = sdg_ctx_new(m, 1, &err);
    sdg_gen_params gp = small_request();
    sdg_memory_estimate e;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &e, &err), ==, SDG_OK);
    g_assert_cmpuint(e.weights_bytes, ==, m->copy_bytes + m->mapped_bytes);
    g_assert_cmpuint(e.needed_bytes, ==, e.working_bytes + m->mapped_bytes);
    set_limit_bytes(e.needed_bytes - 1);
    sdg_result *res = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_NOMEM);
    g_assert_null(res);
    g_assert_nonnull(strstr(err.message, " is available besides the loaded model (SDG_MEMORY_LIMIT)"
                            "; lower the size"));
    set_limit_bytes(e.needed_bytes);
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_OK);
    sdg_result_free(res);

    sdg_ctx_free(ctx);
    sdg_model_free(m);
    sdg_model_free(shell);

    // The loader puts the converted copies in one block, one after another at 64-byte steps:
    // blocks of their own would each be rounded to whole 2 MiB huge pages.
    st_file *f = st_open(f16, &err);
    g_assert_nonnull(f);
    sdg_weights *wb = sdg_wb_new(f, &err);
    g_assert_nonnull(wb);
    g_assert_cmpint(sdg_wb_reserve(wb, 1 << 20, &err), ==, SDG_OK);
    const char *a_name = "first_stage_model.decoder.conv_in.bias";
    const char *b_name = "first_stage_model.decoder.conv_out.weight";
    const st_tensor *ta = st_find(f, a_name), *tb = st_find(f, b_name);
    g_assert_nonnull(ta);
    g_assert_nonnull(tb);
    const float *a = sdg_wb_get(wb, ta->n_dims, ta->shape, "%s", a_name);
    const float *b = sdg_wb_get(wb, tb->n_dims, tb->shape, "%s", b_name);
    g_assert_nonnull(a);
    g_assert_nonnull(b);
    size_t step = ((size_t)ta->n_elements * 4 + 63) & ~(size_t)63;
    g_assert_true((const char *)b == (const char *)a + step);
    g_assert_cmpuint(sdg_wb_owned_bytes(wb), ==, 4 * (size_t)(ta->n_elements + tb->n_elements));
    sdg_wb_free(wb);
    st_close(f);

    g_unlink(f16);
    g_free(f16);
    golden_tmpdir_remove(dir);
    set_limit(NULL);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_unsetenv("SDG_MEMORY_LIMIT");
    vocab_path = golden_path(VOCAB);
    tiny_path = golden_path(TINY);
    sdg_error err;
    model = load(tiny_path, false, &err);
    if (!model)
        g_error("%s", err.message);

    g_test_add_func("/memguard/parse-size", test_parse_size);
    g_test_add_func("/memguard/machine-figure", test_machine_figure);
    g_test_add_func("/memguard/env-override", test_env_override);
    g_test_add_func("/memguard/estimate-parts", test_estimate_parts);
    g_test_add_func("/memguard/refusal", test_refusal);
    g_test_add_func("/memguard/estimate-images", test_estimate_images);
    g_test_add_func("/memguard/header-only", test_header_only);
    g_test_add_func("/memguard/load-guard", test_load_guard);
    int rc = g_test_run();
    sdg_model_free(model);
    g_free(vocab_path);
    g_free(tiny_path);
    return rc;
}
