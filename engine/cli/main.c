/*
 * main.c - `sdg`, the engine's command-line front end: options (GOption), pictures in and out
 * through GEGL (PNG out; in, anything gegl:load reads: PNG, JPEG, PPM/PGM, TIFF, ...), a progress
 * line, Ctrl-C, and error messages with exit codes (0 ok, 1 error, 2 bad usage, 130 cancelled).
 *
 * Not in here: anything about networks, samplers, tokenizers or checkpoint files. All of that goes
 * through the public header sdg.h, and this file includes nothing else from engine/. No previews.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gegl.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "sdg.h"

#ifndef SDG_MODELS_DIR
#define SDG_MODELS_DIR "/usr/local/share/gimp-diffusion/models"
#endif
#ifndef SDG_VERSION
#define SDG_VERSION "unknown"
#endif

#define CLI_DEFAULT_MODEL "sdg-default.safetensors"
#define CLI_DEFAULT_OUTPUT "output.png"
#define CLI_MAX_SIDE 4096

enum { CLI_EXIT_OK = 0, CLI_EXIT_ERROR = 1, CLI_EXIT_USAGE = 2, CLI_EXIT_CANCELLED = 130 };

// ---------------------------------------------------------------------------------------------
// Messages

static bool cli_quiet = false;

static void cli_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sdg: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

// Bad usage: one line saying what is wrong, one pointing at --help; returns the exit code.
static int cli_usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sdg: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nTry 'sdg --help' for more information.\n", stderr);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

static void cli_info(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void cli_info(const char *fmt, ...)
{
    if (cli_quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("sdg: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

// GEGL's loaders report unreadable files with g_warning; show those as our own one-line warnings
// (the caller still gets a clear error from the empty picture).
static void cli_log_handler(const gchar *domain, GLogLevelFlags level, const gchar *message,
                            gpointer user_data)
{
    (void)domain;
    (void)user_data;
    if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
        fprintf(stderr, "sdg: internal error: %s\n", message);
    else if ((level & G_LOG_LEVEL_WARNING) && !cli_quiet)
        fprintf(stderr, "sdg: warning: %s\n", message);
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C: the handler only raises a flag (and asks the engine to stop, which sdg.h allows from
// anywhere); the progress callback sees the flag and returns false. SA_RESETHAND makes a second
// Ctrl-C kill the process at once, for when a stage without progress (model loading) runs long.

static volatile sig_atomic_t cli_cancelled = 0;
static sdg_ctx *volatile cli_running_ctx = NULL;

static void cli_on_sigint(int sig)
{
    (void)sig;
    static const char msg[] = "\nsdg: cancelling (press Ctrl-C again to quit at once)\n";
    cli_cancelled = 1;
    sdg_ctx *ctx = cli_running_ctx;
    if (ctx)
        sdg_ctx_cancel(ctx);
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
}

static void cli_install_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cli_on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
}

// ---------------------------------------------------------------------------------------------
// Progress

typedef struct cli_progress {
    bool quiet;
    bool tty;          // stderr is a terminal: rewrite one line with \r
    int n_images;
    gint64 t_step0;    // monotonic us at step 0 of the current picture
    int line_len;      // length of the last \r line, to blank leftovers
} cli_progress;

static bool cli_on_progress(int step, int total, const sdg_image *preview, void *user_data)
{
    (void)preview;
    cli_progress *p = user_data;
    if (cli_cancelled)
        return false;
    gint64 now = g_get_monotonic_time();
    if (step == 0)
        p->t_step0 = now;
    if (p->quiet || step == 0)
        return true;

    double per_step = (double)(now - p->t_step0) / 1e6 / step;
    double eta = per_step * (total - step);
    char line[160];
    int n = 0;
    // The engine counts the steps of the whole batch: total = steps per picture x pictures.
    int per = p->n_images > 1 && total % p->n_images == 0 ? total / p->n_images : total;
    if (per != total)
        n = snprintf(line, sizeof line, "image %d/%d  ", (step - 1) / per + 1, p->n_images);
    n += snprintf(line + n, sizeof line - (size_t)n, "step %d/%d  %.2f s/step  ETA %.0f s",
                  (step - 1) % per + 1, per, per_step, eta);
    if (p->tty) {
        int pad = p->line_len > n ? p->line_len - n : 0;
        fprintf(stderr, "\r%s%*s", line, pad, "");
        p->line_len = n;
        if (step == total) {
            fputc('\n', stderr);
            p->line_len = 0;
        }
    } else {
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
    return !cli_cancelled;
}

// ---------------------------------------------------------------------------------------------
// Pictures through GEGL

// GEGL's scaling to w x h (cubic, edges clamped), as every picture the CLI resizes gets it.
static GeglNode *cli_scale_node(GeglNode *graph, int w, int h)
{
    return gegl_node_new_child(graph, "operation", "gegl:scale-size", "x", (double)w,
                               "y", (double)h, "sampler", GEGL_SAMPLER_CUBIC,
                               "abyss-policy", GEGL_ABYSS_CLAMP, NULL);
}

// sdg_resize_fn for the hires fix's pixel upscale: the picture through cli_scale_node.
static sdg_image *cli_resize(const sdg_image *img, int w, int h, void *user)
{
    (void)user;
    sdg_image *out = sdg_image_new(w, h, 3);
    if (!out)
        return NULL;
    const Babl *fmt = babl_format("R'G'B' float");
    GeglRectangle in = {0, 0, img->width, img->height}, rect = {0, 0, w, h};
    GeglBuffer *buf = gegl_buffer_new(&in, fmt);
    gegl_buffer_set(buf, &in, 0, fmt, img->data, GEGL_AUTO_ROWSTRIDE);
    GeglNode *graph = gegl_node_new();
    GeglNode *src = gegl_node_new_child(graph, "operation", "gegl:buffer-source", "buffer", buf,
                                        NULL);
    GeglNode *scale = cli_scale_node(graph, w, h);
    gegl_node_link(src, scale);
    gegl_node_blit(scale, 1.0, &rect, fmt, out->data, GEGL_AUTO_ROWSTRIDE, GEGL_BLIT_DEFAULT);
    g_object_unref(graph);
    g_object_unref(buf);
    return out;
}

// Reads the picture at path as samples of babl format fmt_name (n_channels floats per pixel),
// scaled to want_w x want_h when those are > 0. Returns a g_malloc'ed array, or NULL with *error
// set. what names the picture in messages ("init image", "mask").
static float *cli_read_pixels(const char *path, const char *what, const char *fmt_name,
                              int n_channels, int want_w, int want_h, int *out_w, int *out_h,
                              char **error)
{
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        *error = g_strdup_printf("%s '%s' does not exist", what, path);
        return NULL;
    }
    if (!g_file_test(path, G_FILE_TEST_IS_REGULAR) || access(path, R_OK) != 0) {
        *error = g_strdup_printf("%s '%s' is not a readable file", what, path);
        return NULL;
    }

    GeglNode *graph = gegl_node_new();
    GeglNode *load = gegl_node_new_child(graph, "operation", "gegl:load", "path", path, NULL);
    GeglRectangle src = gegl_node_get_bounding_box(load);
    if (src.width <= 0 || src.height <= 0) {
        g_object_unref(graph);
        *error = g_strdup_printf("%s '%s' could not be read as a picture (PNG, JPEG, PPM/PGM, "
                                 "TIFF, ...)", what, path);
        return NULL;
    }
    *out_w = src.width;
    *out_h = src.height;

    GeglNode *last = load;
    GeglRectangle rect = src;
    if (want_w > 0 && want_h > 0 && (want_w != src.width || want_h != src.height)) {
        GeglNode *move = gegl_node_new_child(graph, "operation", "gegl:translate",
                                             "x", (double)-src.x, "y", (double)-src.y, NULL);
        GeglNode *scale = cli_scale_node(graph, want_w, want_h);
        gegl_node_link_many(load, move, scale, NULL);
        last = scale;
        rect = (GeglRectangle){0, 0, want_w, want_h};
    }

    size_t n = (size_t)rect.width * (size_t)rect.height * (size_t)n_channels;
    float *px = g_try_malloc(n * sizeof *px);
    if (!px) {
        g_object_unref(graph);
        *error = g_strdup_printf("out of memory reading %s '%s'", what, path);
        return NULL;
    }
    gegl_node_blit(last, 1.0, &rect, babl_format(fmt_name), px, GEGL_AUTO_ROWSTRIDE,
                   GEGL_BLIT_DEFAULT);
    g_object_unref(graph);
    return px;
}

// The init image as RGB in [0,1]; alpha, if any, is dropped (babl converts grey and indexed).
static sdg_image *cli_load_rgb(const char *path, int want_w, int want_h, int *orig_w,
                               int *orig_h, char **error)
{
    int w = 0, h = 0;
    float *px = cli_read_pixels(path, "init image", "R'G'B' float", 3, want_w, want_h, &w, &h,
                                error);
    if (!px)
        return NULL;
    *orig_w = w;
    *orig_h = h;
    if (want_w > 0) {
        w = want_w;
        h = want_h;
    }
    sdg_image *img = sdg_image_new(w, h, 3);
    if (!img) {
        g_free(px);
        *error = g_strdup_printf("init image '%s' is too large (%dx%d)", path, w, h);
        return NULL;
    }
    memcpy(img->data, px, (size_t)w * h * 3 * sizeof(float));
    g_free(px);
    return img;
}

// The mask as one channel: luminance times alpha, so white = regenerate, black or transparent =
// keep. Greys give a partial mask, as the engine accepts.
static sdg_image *cli_load_mask(const char *path, int want_w, int want_h, int *orig_w,
                                int *orig_h, char **error)
{
    int w = 0, h = 0;
    float *px = cli_read_pixels(path, "mask", "Y'A float", 2, want_w, want_h, &w, &h, error);
    if (!px)
        return NULL;
    *orig_w = w;
    *orig_h = h;
    if (want_w > 0) {
        w = want_w;
        h = want_h;
    }
    sdg_image *img = sdg_image_new(w, h, 1);
    if (!img) {
        g_free(px);
        *error = g_strdup_printf("mask '%s' is too large (%dx%d)", path, w, h);
        return NULL;
    }
    for (size_t i = 0; i < (size_t)w * h; i++) {
        float m = px[2 * i] * px[2 * i + 1];
        img->data[i] = m > 1.0f ? 1.0f : (m >= 0.0f ? m : 0.0f);   // also maps NaN to 0
    }
    g_free(px);
    return img;
}

// Whether path holds exactly the PNG of the w x h R'G'B' u8 pixels px: decoded again and
// compared, and ending with its IEND chunk. gegl:png-save reports no write errors (a full disk
// leaves a truncated file), so this is how a failed write is noticed.
static bool cli_png_matches(const char *path, const guint8 *px, int w, int h)
{
    static const guint8 iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    guint8 tail[12];
    FILE *fp = g_fopen(path, "rb");
    bool ok = fp && fseek(fp, -12, SEEK_END) == 0 && fread(tail, 1, 12, fp) == 12 &&
              memcmp(tail, iend, 12) == 0;
    if (fp)
        fclose(fp);
    if (!ok)
        return false;
    size_t n = (size_t)w * h * 3;
    guint8 *back = g_try_malloc0(n);
    if (!back)
        return false;
    GeglNode *graph = gegl_node_new();
    GeglNode *load = gegl_node_new_child(graph, "operation", "gegl:png-load", "path", path,
                                         NULL);
    GeglRectangle box = gegl_node_get_bounding_box(load);
    GeglRectangle rect = {0, 0, w, h};
    ok = box.x == 0 && box.y == 0 && box.width == w && box.height == h;
    if (ok) {
        gegl_node_blit(load, 1.0, &rect, babl_format("R'G'B' u8"), back, GEGL_AUTO_ROWSTRIDE,
                       GEGL_BLIT_DEFAULT);
        ok = memcmp(back, px, n) == 0;
    }
    g_object_unref(graph);
    g_free(back);
    return ok;
}

// gegl:png-save prints its write errors with g_printerr and carries on; while it runs they are
// kept here (the first line) to say why a picture could not be written.
static GString *cli_save_msg = NULL;

static void cli_keep_printerr(const gchar *text)
{
    if (cli_save_msg && cli_save_msg->len == 0) {
        const char *colon = strstr(text, "write_fn: ");   // "gegl:save-png write_fn: Error ..."
        g_string_append(cli_save_msg, colon ? colon + strlen("write_fn: ") : text);
        char *nl = strchr(cli_save_msg->str, '\n');
        if (nl)
            g_string_truncate(cli_save_msg, (gsize)(nl - cli_save_msg->str));
    }
}

// Writes img as an 8-bit PNG at path: into a new file beside it, checked by reading it back,
// then renamed over path, so a failed write neither leaves a broken picture nor destroys an
// older one. On failure returns false with *error set.
static bool cli_save_png(sdg_image *img, const char *path, char **error)
{
    size_t n = (size_t)img->width * img->height * 3;
    for (size_t i = 0; i < n; i++) {
        float v = img->data[i];
        img->data[i] = v > 1.0f ? 1.0f : (v >= 0.0f ? v : 0.0f);
    }
    guint8 *px = g_try_malloc(n);
    if (!px) {
        *error = g_strdup_printf("out of memory writing '%s'", path);
        return false;
    }
    babl_process(babl_fish(babl_format("R'G'B' float"), babl_format("R'G'B' u8")), img->data,
                 px, (long)img->width * img->height);

    // A new file beside path (mode 0666 less the umask, as a plain new file gets; the rename
    // keeps it).
    char *tmp = NULL;
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        g_free(tmp);
        tmp = g_strdup_printf("%s.%08x.tmp", path, g_random_int());
        fd = g_open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        *error = g_strdup_printf("could not write '%s': %s", path, g_strerror(errno));
        g_free(tmp);
        g_free(px);
        return false;
    }
    close(fd);
    GeglRectangle rect = {0, 0, img->width, img->height};
    const Babl *fmt = babl_format("R'G'B' u8");
    GeglBuffer *buf = gegl_buffer_new(&rect, fmt);
    gegl_buffer_set(buf, &rect, 0, fmt, px, GEGL_AUTO_ROWSTRIDE);
    GeglNode *graph = gegl_node_new();
    GeglNode *src = gegl_node_new_child(graph, "operation", "gegl:buffer-source", "buffer", buf,
                                        NULL);
    GeglNode *save = gegl_node_new_child(graph, "operation", "gegl:png-save", "path", tmp,
                                         "bitdepth", 8, NULL);
    gegl_node_link(src, save);
    cli_save_msg = g_string_new(NULL);
    GPrintFunc old_printerr = g_set_printerr_handler(cli_keep_printerr);
    gegl_node_process(save);
    g_set_printerr_handler(old_printerr);
    g_object_unref(graph);
    g_object_unref(buf);

    bool ok = cli_png_matches(tmp, px, img->width, img->height);
    if (!ok && cli_save_msg->len)
        *error = g_strdup_printf("could not write '%s': %s", path, cli_save_msg->str);
    else if (!ok)
        *error = g_strdup_printf("could not write '%s' (is the disk full, or the folder gone?)",
                                 path);
    else if (g_rename(tmp, path) != 0) {
        *error = g_strdup_printf("could not write '%s': %s", path, g_strerror(errno));
        ok = false;
    }
    if (!ok)
        g_unlink(tmp);
    g_string_free(cli_save_msg, TRUE);
    cli_save_msg = NULL;
    g_free(tmp);
    g_free(px);
    return ok;
}

// Writes picture i to its name, or when that fails to a new file in the temporary folder, so
// the result of a long run is not lost. Returns false (after saying where the picture went, if
// anywhere) when the named file could not be written.
static bool cli_save_or_rescue(sdg_image *img, const char *name, guint64 seed)
{
    char *error = NULL;
    if (cli_save_png(img, name, &error)) {
        cli_info("wrote %s (seed %" G_GUINT64_FORMAT ")", name, seed);
        return true;
    }
    char *rescue = NULL;
    GError *gerr = NULL;
    int fd = g_file_open_tmp("sdg-XXXXXX.png", &rescue, &gerr);
    char *error2 = NULL;
    bool saved = false;
    if (fd >= 0) {
        close(fd);
        saved = cli_save_png(img, rescue, &error2);
        if (!saved)
            g_unlink(rescue);
    } else {
        error2 = g_strdup(gerr->message);
        g_error_free(gerr);
    }
    if (saved)
        cli_error("%s; the picture (seed %" G_GUINT64_FORMAT ") was saved as '%s' instead",
                  error, seed, rescue);
    else
        cli_error("%s, nor in the temporary folder (%s): the picture (seed %" G_GUINT64_FORMAT
                  ") is lost", error, error2, seed);
    g_free(error);
    g_free(error2);
    g_free(rescue);
    return false;
}

// ---------------------------------------------------------------------------------------------
// Options

// An integer option not given (the int options' initial value where "not given" matters).
#define CLI_UNSET INT_MIN

// SDXL's size conditioning (the engine's bound).
#define CLI_MAX_SIZE_COND 16384

typedef struct cli_opts {
    char *model, *vocab, *prompt, *negative, *sampler, *schedule, *seed, *precision;
    char *init_image, *mask, *noise_in, *latent_out, *output;
    char *prediction, *original_size, *crop, *target_size;   // model and SDXL options
    char *decoder, *taesd, *embeddings, *model_sampling;
    char **lora, *lora_dir;   // --lora FILE[:WEIGHT] (repeated), --lora-dir
    char *hires, *hires_upscale;   // --hires WxH, --hires-upscale latent|pixel
    double hires_strength;
    int hires_steps;
    sdg_lora *loras;          // parsed from lora
    sdg_prediction pred;
    int width, height, steps, batch_count, clip_skip, threads;
    double cfg_scale, strength;
    gboolean quiet, verbose, version, no_inpaint_blend;
    bool scale_init;   // -W and -H given with --init-image: scale the pictures to that size
} cli_opts;

// Names of picture i (1-based) of n: "%d" in the pattern is replaced by i; otherwise, for a
// batch, "-i" goes before the extension (out.png -> out-1.png, out-2.png).
static char *cli_output_name(const char *pattern, int i, int n)
{
    if (strstr(pattern, "%d")) {
        char num[16];
        snprintf(num, sizeof num, "%d", i);
        char **parts = g_strsplit(pattern, "%d", -1);
        char *name = g_strjoinv(num, parts);
        g_strfreev(parts);
        return name;
    }
    if (n <= 1)
        return g_strdup(pattern);
    const char *base = strrchr(pattern, '/');
    base = base ? base + 1 : pattern;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        return g_strdup_printf("%s-%d", pattern, i);
    return g_strdup_printf("%.*s-%d%s", (int)(dot - pattern), pattern, i, dot);
}

// The folder of path must exist and take new files, and path must not be a folder or a device
// (it is replaced by a rename): checked before a long run, not after it. The folder is tested
// by creating a file in it, since access() says yes to root everywhere.
static bool cli_check_writable(const char *path, const char *what)
{
    char *dir = g_path_get_dirname(path);
    bool ok = true;
    GStatBuf sb;
    if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
        cli_error("the folder of the %s '%s' does not exist", what, path);
        ok = false;
    } else if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
        cli_error("the %s '%s' is a folder", what, path);
        ok = false;
    } else if (g_stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        cli_error("the %s '%s' exists and is not a regular file", what, path);
        ok = false;
    } else {
        char *probe = g_build_filename(dir, ".sdg-write-test-XXXXXX", NULL);
        int fd = g_mkstemp(probe);
        if (fd < 0) {
            cli_error("cannot write the %s '%s': %s (no file can be made in '%s')", what, path,
                      g_strerror(errno), dir);
            ok = false;
        } else {
            close(fd);
            g_unlink(probe);
        }
        g_free(probe);
    }
    g_free(dir);
    return ok;
}

static char *cli_names(const char *(*name_of)(int), int count)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < count; i++)
        g_string_append_printf(s, "%s%s", i ? ", " : "", name_of(i));
    return g_string_free(s, FALSE);
}

static const char *cli_sampler_name(int i) { return sdg_sampler_name((sdg_sampler)i); }
static const char *cli_schedule_name(int i) { return sdg_schedule_name((sdg_schedule)i); }

static const char cli_description[] =
    "Defaults: the model is " CLI_DEFAULT_MODEL " in the models folder ($SDG_MODELS_DIR, else\n"
    SDG_MODELS_DIR "); the model's native size (512x512 for SD 1.x), 20 steps, CFG 7, a random\n"
    "seed (printed, to repeat a picture), strength 0.75, all processors.\n"
    "\n"
    "With --init-image the picture's own size is used, unless -W and -H are given: then it is\n"
    "scaled to that size (and the mask with it). Sizes must be multiples of 8, from 8 to 4096.\n"
    "Masks: white = regenerate, black = keep; grey gives a partial mask, transparent pixels keep.\n"
    "Pictures can be PNG, JPEG, PPM/PGM, TIFF or any other format GEGL reads.\n"
    "--noise-in reads tensor 'noise' [1,4,H/f,W/f] (F32/F16/BF16 safetensors), the starting\n"
    "noise of the first picture; --latent-out writes tensor 'latent' [N,4,H/f,W/f] (F32).\n"
    "f is the VAE's factor (8 for Stable Diffusion and the default model).\n"
    "\n"
    "Output folders are checked before the model is loaded; a picture that still cannot be\n"
    "written at the end is saved in the temporary folder instead, and the error says where.\n"
    "\n"
    "Exit status: 0 done, 1 error, 2 bad options, 130 cancelled (Ctrl-C).\n"
    "\n"
    "Examples:\n"
    "  sdg -m v1-5-pruned-emaonly.safetensors -p \"a lighthouse at dusk, oil painting\" -o out.png\n"
    "  sdg -p \"a red fox\" -n \"blurry\" --sampler dpmpp_2m --schedule karras --steps 25 --seed 42\n"
    "  sdg -p \"a red fox\" --batch-count 4 -o fox-%d.png\n"
    "  sdg -p \"watercolour\" -i photo.png --strength 0.6 -o painted.png\n"
    "  sdg -m sd-v1-5-inpainting.safetensors -p \"a cat\" -i room.png --mask hole.png -o cat.png\n"
    "  sdg -p \"a (my-style:1.2) castle\" -n easynegative --embeddings ~/embeddings -o castle.png\n";

// Parses argv into o. Returns -1 when parsing succeeded (go on), else the exit code.
static int cli_parse(int *argc, char ***argv, cli_opts *o)
{
    // The sampler and schedule lists and defaults come from the engine, so --help cannot go stale.
    sdg_gen_params def = sdg_gen_default_params();
    char *samplers = cli_names(cli_sampler_name, SDG_SAMPLER_COUNT);
    char *schedules = cli_names(cli_schedule_name, SDG_SCHEDULE_COUNT);
    char *sampler_help = g_strdup_printf("One of %s (%s)", samplers, sdg_sampler_name(def.sampler));
    char *schedule_help = g_strdup_printf("One of %s (%s)", schedules,
                                          sdg_schedule_name(def.schedule));
    g_free(samplers);
    g_free(schedules);

    const GOptionEntry entries[] = {
        {"model", 'm', 0, G_OPTION_ARG_FILENAME, &o->model,
         "Checkpoint (.safetensors: SD 1.x, SD 2.x or SDXL) or diffusers folder; default: "
         CLI_DEFAULT_MODEL " in the models folder", "FILE"},
        {"prediction", 0, 0, G_OPTION_ARG_STRING, &o->prediction,
         "What the model predicts: auto (from the file), eps or v (auto)", "NAME"},
        {"model-sampling", 0, 0, G_OPTION_ARG_STRING, &o->model_sampling,
         "How the checkpoint was trained to be sampled: default, or lcm for a latent-consistency "
         "distilled model (LCM_Dreamshaper, LCM-LoRA merges: 50 timesteps and the LCM scalings, "
         "as ComfyUI's ModelSamplingDiscrete lcm; use --sampler lcm, 4-8 steps, --cfg-scale 1 "
         "to 2) (default)", "NAME"},
        {"decoder", 0, 0, G_OPTION_ARG_STRING, &o->decoder,
         "What makes the picture from the latent: vae (the model's) or taesd (the tiny "
         "autoencoder: seconds instead of minutes, a softer picture) (vae)", "NAME"},
        {"taesd", 0, 0, G_OPTION_ARG_FILENAME, &o->taesd,
         "TAESD decoder (taesd_decoder.safetensors, taesdxl_decoder.safetensors for SDXL, or a "
         "diffusers AutoencoderTiny folder); default: beside the model, then in the models folder",
         "FILE"},
        {"lora", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &o->lora,
         "LoRA / LyCORIS file to apply, with its weight (-10 to 10; 1 when left out); may be "
         "repeated. The prompt's <lora:NAME:WEIGHT> tags add more, found by name in --lora-dir "
         "and in the loras (or Lora) folder beside the model's folder", "FILE[:WEIGHT]"},
        {"hires", 0, 0, G_OPTION_ARG_STRING, &o->hires,
         "Hires fix: make the picture at -W x -H (the model's native size), upscale it to WxH "
         "and refine it there (text-to-image)", "WxH"},
        {"hires-upscale", 0, 0, G_OPTION_ARG_STRING, &o->hires_upscale,
         "How the hires fix upscales: latent (bilinear) or pixel (the decoded picture, GEGL's "
         "cubic, encoded again) (latent)", "NAME"},
        {"hires-strength", 0, 0, G_OPTION_ARG_DOUBLE, &o->hires_strength,
         "Strength of the hires fix's second pass, 0 to 1 (0.7)", "X"},
        {"hires-steps", 0, 0, G_OPTION_ARG_INT, &o->hires_steps,
         "Steps of the hires fix's second pass (the steps)", "N"},
        {"lora-dir", 0, 0, G_OPTION_ARG_FILENAME, &o->lora_dir,
         "Folder where the prompt's <lora:NAME> tags are looked up first", "DIR"},
        {"vocab", 0, 0, G_OPTION_ARG_FILENAME, &o->vocab,
         "CLIP vocabulary (bpe_simple_vocab_16e6.txt[.gz]); default: next to the model, then "
         "in the models folder", "FILE"},
        {"embeddings", 0, 0, G_OPTION_ARG_FILENAME, &o->embeddings,
         "Folder of textual-inversion embeddings (NAME.safetensors, used where a prompt says "
         "NAME); default: embeddings/ beside the model, then in the models folder", "DIR"},
        {"prompt", 'p', 0, G_OPTION_ARG_FILENAME, &o->prompt,
         "What to draw (UTF-8; (word:1.3) emphasis; embedding names)", "TEXT"},
        {"negative-prompt", 'n', 0, G_OPTION_ARG_FILENAME, &o->negative,
         "What to steer away from", "TEXT"},
        {"width", 'W', 0, G_OPTION_ARG_INT, &o->width,
         "Width in pixels, a multiple of 8 (the model's native size)",
         "N"},
        {"height", 'H', 0, G_OPTION_ARG_INT, &o->height,
         "Height in pixels, a multiple of 8 (the model's native size)", "N"},
        {"sampler", 0, 0, G_OPTION_ARG_STRING, &o->sampler, sampler_help, "NAME"},
        {"schedule", 0, 0, G_OPTION_ARG_STRING, &o->schedule, schedule_help, "NAME"},
        {"steps", 0, 0, G_OPTION_ARG_INT, &o->steps, "Sampling steps, 1 to 1000 (20; a distilled model's own, see sdg_recommend)", "N"},
        {"cfg-scale", 0, 0, G_OPTION_ARG_DOUBLE, &o->cfg_scale,
         "Classifier-free guidance scale; 1 = no guidance (7.0; 1 for distilled models)", "X"},
        {"seed", 's', 0, G_OPTION_ARG_STRING, &o->seed,
         "Seed, 0 to 2^64-1 (random, printed)", "N"},
        {"batch-count", 'b', 0, G_OPTION_ARG_INT, &o->batch_count,
         "Pictures to make, with seeds seed, seed+1, ... (1)", "N"},
        {"clip-skip", 0, 0, G_OPTION_ARG_INT, &o->clip_skip,
         "Text-encoder layer: 1 = last, 2 = penultimate (1)", "N"},
        {"original-size", 0, 0, G_OPTION_ARG_STRING, &o->original_size,
         "SDXL size conditioning: the original image size (the picture's size)", "WxH"},
        {"crop", 0, 0, G_OPTION_ARG_STRING, &o->crop,
         "SDXL size conditioning: the crop's top-left corner (0,0)", "LEFT,TOP"},
        {"target-size", 0, 0, G_OPTION_ARG_STRING, &o->target_size,
         "SDXL size conditioning: the target size (the picture's size)", "WxH"},
        {"init-image", 'i', 0, G_OPTION_ARG_FILENAME, &o->init_image,
         "Start from this picture (image-to-image)", "FILE"},
        {"mask", 0, 0, G_OPTION_ARG_FILENAME, &o->mask,
         "Inpaint: regenerate where this picture is white (needs --init-image)", "FILE"},
        {"strength", 0, 0, G_OPTION_ARG_DOUBLE, &o->strength,
         "How much of the init image to replace, 0 to 1 (0.75)", "X"},
        {"no-inpaint-blend", 0, 0, G_OPTION_ARG_NONE, &o->no_inpaint_blend,
         "Inpainting model: keep the picture outside the mask only through the model's mask "
         "input, as diffusers does (default: also blend it in after every step)", NULL},
        {"threads", 't', 0, G_OPTION_ARG_INT, &o->threads,
         "Threads (number of online processors)", "N"},
        {"precision", 0, 0, G_OPTION_ARG_STRING, &o->precision,
         "Arithmetic: exact (float32), fast (bfloat16 products where the CPU has AVX512-BF16, "
         "else Winograd 3x3 convolutions) or default (fast)", "NAME"},
        {"noise-in", 0, 0, G_OPTION_ARG_FILENAME, &o->noise_in,
         "Starting noise: tensor 'noise' [1,4,H/f,W/f] in a .safetensors file", "FILE"},
        {"latent-out", 0, 0, G_OPTION_ARG_FILENAME, &o->latent_out,
         "Also write the final latents (tensor 'latent' [N,4,H/f,W/f]) to a .safetensors file",
         "FILE"},
        {"output", 'o', 0, G_OPTION_ARG_FILENAME, &o->output,
         "Output PNG (" CLI_DEFAULT_OUTPUT "); a batch writes NAME-1.png, ... or fills in %d",
         "FILE"},
        {"quiet", 'q', 0, G_OPTION_ARG_NONE, &o->quiet, "Print only errors", NULL},
        {"verbose", 'v', 0, G_OPTION_ARG_NONE, &o->verbose,
         "Also print how the model was recognised, the CPU kernels and threads used", NULL},
        {"version", 0, 0, G_OPTION_ARG_NONE, &o->version, "Print the version and exit", NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };

    GOptionContext *oc = g_option_context_new("- make pictures with Stable Diffusion (1.x, 2.x, "
                                              "SDXL)");
    g_option_context_add_main_entries(oc, entries, NULL);
    g_option_context_set_description(oc, cli_description);
    GError *gerr = NULL;
    bool ok = g_option_context_parse(oc, argc, argv, &gerr);
    g_option_context_free(oc);
    g_free(sampler_help);
    g_free(schedule_help);
    if (!ok) {
        int code = cli_usage_error("%s", gerr->message);
        g_error_free(gerr);
        return code;
    }
    if (*argc > 1)
        return cli_usage_error("unexpected argument '%s' (quote the prompt and pass it with -p)",
                               (*argv)[1]);
    return -1;
}

// "A<sep>B" with both parts integers from min to max into *a, *b.
static bool cli_parse_pair(const char *s, char sep, int min, int *a, int *b)
{
    char *end = NULL;
    gint64 x = g_ascii_strtoll(s, &end, 10);
    if (end == s || *end != sep)
        return false;
    const char *s2 = end + 1;
    gint64 y = g_ascii_strtoll(s2, &end, 10);
    if (end == s2 || *end || x < min || y < min || x > CLI_MAX_SIZE_COND || y > CLI_MAX_SIZE_COND)
        return false;
    *a = (int)x;
    *b = (int)y;
    return true;
}

// Range and consistency checks that need no file. Returns -1 when all is well, else the code.
static int cli_validate(cli_opts *o, sdg_gen_params *gp)
{
    if (o->prediction && !sdg_prediction_from_name(o->prediction, &o->pred))
        return cli_usage_error("unknown prediction '%s' (one of: auto, eps, v)", o->prediction);
    if (o->decoder && !sdg_decoder_from_name(o->decoder, &gp->decoder))
        return cli_usage_error("unknown decoder '%s' (one of: vae, taesd)", o->decoder);
    if (o->model_sampling && !sdg_model_sampling_from_name(o->model_sampling, &gp->model_sampling))
        return cli_usage_error("unknown model sampling '%s' (one of: default, lcm)",
                               o->model_sampling);
    if (o->taesd && !g_file_test(o->taesd, G_FILE_TEST_EXISTS)) {
        cli_error("TAESD decoder '%s' does not exist", o->taesd);
        return CLI_EXIT_ERROR;
    }
    if (o->embeddings && !g_file_test(o->embeddings, G_FILE_TEST_IS_DIR)) {
        cli_error("embeddings folder '%s' does not exist", o->embeddings);
        return CLI_EXIT_ERROR;
    }
    int n_loras = o->lora ? (int)g_strv_length(o->lora) : 0;
    o->loras = g_new0(sdg_lora, n_loras > 0 ? n_loras : 1);
    for (int i = 0; i < n_loras; i++) {
        // FILE:WEIGHT when what follows the last ':' is a number, else the whole is the file
        char *arg = o->lora[i], *colon = strrchr(arg, ':'), *end = NULL;
        double w = colon ? g_ascii_strtod(colon + 1, &end) : 1.0;
        bool has_weight = colon && end != colon + 1 && *end == '\0';
        if (has_weight)
            *colon = '\0';
        else
            w = 1.0;
        if (!isfinite(w) || fabs(w) > 10.0)
            return cli_usage_error("the weight of --lora %s must be between -10 and 10 (got %g)",
                                   arg, w);
        if (!g_file_test(arg, G_FILE_TEST_IS_REGULAR)) {
            cli_error("LoRA file '%s' does not exist", arg);
            return CLI_EXIT_ERROR;
        }
        o->loras[i] = (sdg_lora){ arg, (float)w };
    }
    gp->loras = o->loras;
    gp->n_loras = n_loras;
    gp->lora_dir = o->lora_dir;
    if (o->hires && !cli_parse_pair(o->hires, 'x', 8, &gp->hires_width, &gp->hires_height))
        return cli_usage_error("--hires must be WxH (got '%s')", o->hires);
    if (o->hires && o->init_image)
        return cli_usage_error("--hires is for text-to-image (not with --init-image)");
    if (o->hires_upscale && !sdg_hires_upscale_from_name(o->hires_upscale, &gp->hires_upscale))
        return cli_usage_error("unknown --hires-upscale '%s' (one of: latent, pixel)",
                               o->hires_upscale);
    gp->hires_resize = cli_resize;
    if (!isnan(o->hires_strength)) {
        if (!(o->hires_strength >= 0.0 && o->hires_strength <= 1.0))
            return cli_usage_error("--hires-strength must be between 0 and 1 (got %g)",
                                   o->hires_strength);
        gp->hires_strength = (float)o->hires_strength;
    }
    if (o->hires_steps < 0 || o->hires_steps > 1000)
        return cli_usage_error("--hires-steps must be between 1 and 1000 (got %d)",
                               o->hires_steps);
    gp->hires_steps = o->hires_steps;
    if (o->original_size && !cli_parse_pair(o->original_size, 'x', 1, &gp->original_width,
                                            &gp->original_height))
        return cli_usage_error("--original-size must be WxH with sizes from 1 to %d (got '%s')",
                               CLI_MAX_SIZE_COND, o->original_size);
    if (o->target_size && !cli_parse_pair(o->target_size, 'x', 1, &gp->target_width,
                                          &gp->target_height))
        return cli_usage_error("--target-size must be WxH with sizes from 1 to %d (got '%s')",
                               CLI_MAX_SIZE_COND, o->target_size);
    if (o->crop && !cli_parse_pair(o->crop, ',', 0, &gp->crop_left, &gp->crop_top))
        return cli_usage_error("--crop must be LEFT,TOP with offsets from 0 to %d (got '%s')",
                               CLI_MAX_SIZE_COND, o->crop);
    bool has_size = o->width > 0 || o->height > 0;
    if (o->init_image && has_size && (o->width <= 0 || o->height <= 0))
        return cli_usage_error("give both -W and -H to scale the init image, or neither");
    o->scale_init = o->init_image && has_size;
    // An unset side (0) becomes the model's native size once the model is loaded.
    if (o->width != 0 && (o->width < 8 || o->width > CLI_MAX_SIDE || o->width % 8))
        return cli_usage_error("--width must be a multiple of 8 from 8 to %d (got %d)",
                               CLI_MAX_SIDE, o->width);
    if (o->height != 0 && (o->height < 8 || o->height > CLI_MAX_SIDE || o->height % 8))
        return cli_usage_error("--height must be a multiple of 8 from 8 to %d (got %d)",
                               CLI_MAX_SIDE, o->height);
    // steps CLI_UNSET and cfg NaN: not given (the model's recommendation, else the defaults)
    if (o->steps != CLI_UNSET && (o->steps < 1 || o->steps > 1000))
        return cli_usage_error("--steps must be from 1 to 1000 (got %d)", o->steps);
    if (!isnan(o->cfg_scale) && (!isfinite(o->cfg_scale) || o->cfg_scale < 0.0 ||
                                 o->cfg_scale > 100.0))
        return cli_usage_error("--cfg-scale must be from 0 to 100 (got %g)", o->cfg_scale);
    if (o->batch_count < 1 || o->batch_count > 10000)
        return cli_usage_error("--batch-count must be from 1 to 10000 (got %d)", o->batch_count);
    if (o->clip_skip < 1 || o->clip_skip > 12)
        return cli_usage_error("--clip-skip must be from 1 to 12 (got %d)", o->clip_skip);
    if (o->threads < 0 || o->threads > 4096)
        return cli_usage_error("--threads must be from 1 to 4096 (got %d)", o->threads);
    if (o->strength != -1.0) {   // -1 = not given
        if (!isfinite(o->strength) || o->strength < 0.0 || o->strength > 1.0)
            return cli_usage_error("--strength must be from 0 to 1 (got %g)", o->strength);
        if (!o->init_image)
            return cli_usage_error("--strength needs --init-image");
    }
    if (o->mask && !o->init_image)
        return cli_usage_error("--mask needs --init-image");

    const char *texts[2] = {o->prompt, o->negative};
    const char *text_names[2] = {"--prompt", "--negative-prompt"};
    for (int i = 0; i < 2; i++)
        if (texts[i] && !g_utf8_validate(texts[i], -1, NULL))
            return cli_usage_error("%s is not valid UTF-8", text_names[i]);

    if (o->sampler && !sdg_sampler_from_name(o->sampler, &gp->sampler)) {
        char *names = cli_names(cli_sampler_name, SDG_SAMPLER_COUNT);
        int code = cli_usage_error("unknown sampler '%s' (one of: %s)", o->sampler, names);
        g_free(names);
        return code;
    }
    if (o->schedule && !sdg_schedule_from_name(o->schedule, &gp->schedule)) {
        char *names = cli_names(cli_schedule_name, SDG_SCHEDULE_COUNT);
        int code = cli_usage_error("unknown schedule '%s' (one of: %s)", o->schedule, names);
        g_free(names);
        return code;
    }
    if (o->precision && !sdg_precision_from_name(o->precision, &gp->precision))
        return cli_usage_error("unknown precision '%s' (one of: default, exact, fast)",
                               o->precision);
    if (o->seed) {
        guint64 seed = 0;
        GError *gerr = NULL;
        if (!g_ascii_string_to_unsigned(o->seed, 10, 0, G_MAXUINT64, &seed, &gerr)) {
            int code = cli_usage_error("--seed: %s", gerr->message);
            g_error_free(gerr);
            return code;
        }
        gp->seed = seed;
    } else {
        gp->seed = g_random_int();   // 32 bits: easy to type back in
    }

    if (!o->output)
        o->output = g_strdup(CLI_DEFAULT_OUTPUT);
    const char *in_files[3] = {o->init_image, o->mask, o->noise_in};
    const char *in_names[3] = {"init image", "mask", "noise file"};
    for (int i = 0; i < 3; i++) {
        if (in_files[i] && !g_file_test(in_files[i], G_FILE_TEST_IS_REGULAR)) {
            cli_error("%s '%s' does not exist", in_names[i], in_files[i]);
            return CLI_EXIT_ERROR;
        }
    }
    // Every picture's name (a %d may be in the folder part), each folder tested once.
    bool writable = true;
    char *prev_dir = NULL;
    for (int i = 1; writable && i <= o->batch_count; i++) {
        char *name = cli_output_name(o->output, i, o->batch_count);
        char *dir = g_path_get_dirname(name);
        GStatBuf sb;
        if (!prev_dir || strcmp(dir, prev_dir) != 0)
            writable = cli_check_writable(name, "output");
        else if (g_stat(name, &sb) == 0 && !S_ISREG(sb.st_mode))
            writable = cli_check_writable(name, "output");   // says what is wrong with it
        g_free(prev_dir);
        prev_dir = dir;
        g_free(name);
    }
    g_free(prev_dir);
    if (!writable || (o->latent_out && !cli_check_writable(o->latent_out, "latent file")))
        return CLI_EXIT_ERROR;

    gp->prompt = o->prompt ? o->prompt : "";
    gp->negative_prompt = o->negative;
    gp->width = o->width;
    gp->height = o->height;
    if (o->steps != CLI_UNSET)
        gp->steps = o->steps;
    if (!isnan(o->cfg_scale))
        gp->cfg_scale = (float)o->cfg_scale;
    gp->batch_count = o->batch_count;
    gp->clip_skip = o->clip_skip;
    if (o->init_image)
        gp->strength = o->strength == -1.0 ? 0.75f : (float)o->strength;
    gp->inpaint_blend = !o->no_inpaint_blend;
    return -1;
}

// The model to load: --model, else the default model in the models folder. NULL (after an
// error message) when there is none.
static char *cli_model_path(const cli_opts *o, const char *models_dir)
{
    if (o->model) {
        // Only a missing file is said here; anything else (a symlink loop, no permission, a
        // folder, a FIFO) gets the engine's own sentence when it tries to load it.
        GStatBuf sb;
        if (g_stat(o->model, &sb) != 0 && errno == ENOENT) {
            cli_error("model file '%s' does not exist", o->model);
            return NULL;
        }
        return g_strdup(o->model);
    }
    char *path = g_build_filename(models_dir, CLI_DEFAULT_MODEL, NULL);
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        cli_error("no default model '%s'; pass a checkpoint with --model FILE", path);
        g_free(path);
        return NULL;
    }
    return path;
}

// ---------------------------------------------------------------------------------------------
// The run

typedef struct cli_run {
    sdg_model *model;
    sdg_ctx *ctx;
    sdg_result *result;
    sdg_image *init, *mask;
    float *noise;           // malloc'ed by sdg_tensor_read
    char *model_path;
} cli_run;

static void cli_run_free(cli_run *r)
{
    cli_running_ctx = NULL;
    sdg_result_free(r->result);
    sdg_ctx_free(r->ctx);
    sdg_model_free(r->model);
    sdg_image_free(r->init);
    sdg_image_free(r->mask);
    free(r->noise);
    g_free(r->model_path);
}

// Loads init image and mask into r and sets the size in gp. Returns -1 or an exit code.
static int cli_load_pictures(const cli_opts *o, cli_run *r, sdg_gen_params *gp, bool scale)
{
    char *error = NULL;
    int iw = 0, ih = 0, mw = 0, mh = 0;
    int want_w = scale ? o->width : 0, want_h = scale ? o->height : 0;
    r->init = cli_load_rgb(o->init_image, want_w, want_h, &iw, &ih, &error);
    if (!r->init)
        goto fail;
    if (!scale && (iw % 8 || ih % 8 || iw > CLI_MAX_SIDE || ih > CLI_MAX_SIDE)) {
        cli_error("init image '%s' is %dx%d; sides must be multiples of 8 up to %d (pass -W and "
                  "-H to scale it)", o->init_image, iw, ih, CLI_MAX_SIDE);
        return CLI_EXIT_ERROR;
    }
    if (o->mask) {
        r->mask = cli_load_mask(o->mask, want_w, want_h, &mw, &mh, &error);
        if (!r->mask)
            goto fail;
        if (mw != iw || mh != ih) {
            cli_error("mask '%s' is %dx%d but the init image is %dx%d", o->mask, mw, mh, iw, ih);
            return CLI_EXIT_ERROR;
        }
    }
    gp->init_image = r->init;
    gp->mask = r->mask;
    gp->width = r->init->width;
    gp->height = r->init->height;
    return -1;
fail:
    cli_error("%s", error);
    g_free(error);
    return CLI_EXIT_ERROR;
}

// Writes the latents to path, or when that fails to a new file in the temporary folder.
static int cli_write_latents(const char *path, const sdg_result *res)
{
    int64_t shape[4] = {res->n_images, res->latent_channels, res->latent_height,
                        res->latent_width};
    sdg_error err = {0};
    if (sdg_tensor_write(path, "latent", 4, shape, res->latents, &err) == SDG_OK) {
        cli_info("wrote %s", path);
        return -1;
    }
    char *rescue = NULL;
    int fd = g_file_open_tmp("sdg-latent-XXXXXX.safetensors", &rescue, NULL);
    sdg_error err2 = {0};
    if (fd >= 0) {
        close(fd);
        if (sdg_tensor_write(rescue, "latent", 4, shape, res->latents, &err2) == SDG_OK)
            cli_error("%s; the latents were saved as '%s' instead", err.message, rescue);
        else
            cli_error("%s, nor in the temporary folder: the latents are lost", err.message);
    } else {
        cli_error("%s, nor in the temporary folder: the latents are lost", err.message);
    }
    g_free(rescue);
    return CLI_EXIT_ERROR;
}

// g_format_size() with a plain space before the unit, as the engine's messages write sizes (GLib
// puts a no-break space there, which trips scripts reading the output).
static char *cli_size(uint64_t bytes)
{
    char *text = g_format_size(bytes);
    char **parts = g_strsplit(text, "\xc2\xa0", -1);
    char *plain = g_strjoinv(" ", parts);
    g_strfreev(parts);
    g_free(text);
    return plain;
}

// "memory: needs 3.1 GB (model 2.1 GB + working memory 1.0 GB), 12.4 GB available"
static void cli_info_memory(const sdg_memory_estimate *m)
{
    char *total = cli_size(m->total_bytes), *model = cli_size(m->weights_bytes);
    char *work = cli_size(m->working_bytes), *avail = cli_size(m->available_bytes);
    cli_info("memory: needs %s (model %s + working memory %s), %s%s", total, model, work,
             m->available_known ? avail : "unknown", m->available_known ? " available" : " free");
    g_free(total);
    g_free(model);
    g_free(work);
    g_free(avail);
}

// The memory guard, before the weights are loaded (seconds for SD 1.5): sizes the run with the
// checkpoint's header only and refuses one that cannot fit with the engine's sentence.
// sdg_generate checks again with the model loaded. False after printing the error.
static bool cli_check_memory(const char *model_path, const sdg_model_params *mp, int threads,
                             const sdg_gen_params *gp)
{
    sdg_model_params hp = *mp;
    hp.header_only = true;
    sdg_error err = {0};
    sdg_model *shell = sdg_model_load(model_path, &hp, &err);
    sdg_ctx *ctx = shell ? sdg_ctx_new(shell, threads, &err) : NULL;
    bool ok = false;
    if (ctx) {
        sdg_model_info info;
        sdg_model_get_info(shell, &info);
        sdg_gen_params q = *gp;
        q.width = q.width ? q.width : info.native_size;   // as cli_main sets them after loading
        q.height = q.height ? q.height : info.native_size;
        sdg_memory_estimate mem;
        ok = sdg_ctx_estimate(ctx, &q, &mem, &err) == SDG_OK;
        if (ok)
            cli_info_memory(&mem);
    }
    if (!ok)
        cli_error("%s", err.message);
    sdg_ctx_free(ctx);
    sdg_model_free(shell);
    return ok;
}

// A distilled model, or an LCM-LoRA, recommends its own sampler, schedule, steps and CFG: used
// for each of them the user did not give.
static void cli_recommend(const cli_opts *o, const sdg_model *model, sdg_gen_params *gp)
{
    sdg_recommendation rec;
    if (!sdg_recommend(model, gp, &rec))
        return;
    if (!o->sampler)
        gp->sampler = rec.sampler;
    if (!o->schedule)
        gp->schedule = rec.schedule;
    if (o->steps == CLI_UNSET)
        gp->steps = rec.steps;
    if (isnan(o->cfg_scale))
        gp->cfg_scale = rec.cfg_scale;
    if (!o->model_sampling)
        gp->model_sampling = rec.model_sampling;
    cli_info("%s: %s/%s, %d steps, CFG %g%s unless given", rec.source,
             sdg_sampler_name(rec.sampler), sdg_schedule_name(rec.schedule), rec.steps,
             (double)rec.cfg_scale,
             rec.model_sampling != SDG_MODEL_SAMPLING_DEFAULT ? ", LCM model sampling" : "");
}

static int cli_main(const cli_opts *o, sdg_gen_params *gp)
{
    cli_run r = {0};
    sdg_error err = {0};
    int code = CLI_EXIT_ERROR;
    gint64 t0 = g_get_monotonic_time();

    sdg_model_params mp = sdg_model_default_params();
    const char *env_dir = g_getenv("SDG_MODELS_DIR");
    if (env_dir && *env_dir)
        mp.models_dir = env_dir;
    if (!mp.models_dir)
        mp.models_dir = SDG_MODELS_DIR;
    mp.prediction = o->pred;
    mp.taesd_path = o->taesd;
    mp.embeddings_dir = o->embeddings;
    if (o->vocab) {
        if (!g_file_test(o->vocab, G_FILE_TEST_EXISTS)) {
            cli_error("vocabulary '%s' does not exist", o->vocab);
            goto out;
        }
        mp.vocab_path = o->vocab;
    }
    r.model_path = cli_model_path(o, mp.models_dir);
    if (!r.model_path)
        goto out;

    if (o->init_image && (code = cli_load_pictures(o, &r, gp, o->scale_init)) != -1)
        goto out;
    code = CLI_EXIT_ERROR;

    if (!cli_check_memory(r.model_path, &mp, o->threads, gp))
        goto out;

    cli_info("loading %s", r.model_path);
    gint64 t_load = g_get_monotonic_time();
    r.model = sdg_model_load(r.model_path, &mp, &err);
    if (!r.model) {
        cli_error("%s", err.message);
        goto out;
    }
    if (cli_cancelled)
        goto cancelled;
    sdg_model_info info;
    sdg_model_get_info(r.model, &info);
    cli_info("loaded %s model (%s prediction) in %.1f s", sdg_family_name(info.family),
             sdg_prediction_name(info.prediction),
             (double)(g_get_monotonic_time() - t_load) / 1e6);
    if (o->verbose)
        cli_info("prediction from %s%s; native size %d, latent scale %g; %s", info.prediction_source,
                 info.zero_terminal_snr ? "; zero-terminal-SNR schedule" : "", info.native_size,
                 (double)info.scale_factor, info.has_taesd ? "TAESD found" : "no TAESD");
    if (gp->width == 0)
        gp->width = info.native_size;
    if (gp->height == 0)
        gp->height = info.native_size;
    cli_recommend(o, r.model, gp);
    if (o->noise_in) {
        int scale = info.vae_scale > 0 ? info.vae_scale : 8;
        int64_t shape[4] = {1, 4, gp->height / scale, gp->width / scale};
        if (sdg_tensor_read(o->noise_in, "noise", 4, shape, &r.noise, &err) != SDG_OK) {
            cli_error("%s", err.message);
            goto out;
        }
        gp->noise = r.noise;
    }

    r.ctx = sdg_ctx_new(r.model, o->threads, &err);
    if (!r.ctx) {
        cli_error("%s", err.message);
        goto out;
    }
    cli_progress prog = {
        .quiet = cli_quiet, .tty = isatty(STDERR_FILENO) != 0, .n_images = gp->batch_count,
    };
    gp->progress = cli_on_progress;
    gp->progress_data = &prog;
    char strength[32] = "";
    if (o->init_image)
        snprintf(strength, sizeof strength, ", strength %g", gp->strength);
    cli_info("%s %dx%d, %s/%s, steps %d, cfg %g%s, seed %" G_GUINT64_FORMAT,
             o->mask ? "inpainting" : (o->init_image ? "image-to-image" : "text-to-image"),
             gp->width, gp->height, sdg_sampler_name(gp->sampler),
             sdg_schedule_name(gp->schedule), gp->steps, gp->cfg_scale, strength, gp->seed);
    if (gp->model_sampling != SDG_MODEL_SAMPLING_DEFAULT)
        cli_info("model sampling %s", sdg_model_sampling_name(gp->model_sampling));
    if (o->verbose)
        cli_info("precision %s: %s kernels, %d threads", sdg_precision_name(gp->precision),
                 sdg_kernels_name(gp->precision),
                 o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN));

    gint64 t1 = g_get_monotonic_time();
    cli_running_ctx = r.ctx;
    if (cli_cancelled)   // Ctrl-C between the last check and publishing the ctx
        goto cancelled;
    sdg_status st = sdg_generate(r.ctx, gp, &r.result, &err);
    cli_running_ctx = NULL;
    if (prog.tty && prog.line_len > 0)
        fputc('\n', stderr);
    if (st == SDG_ERR_CANCELLED || cli_cancelled)
        goto cancelled;
    if (st != SDG_OK) {
        cli_error("%s", err.message);
        goto out;
    }

    bool all_written = true;
    for (int i = 0; i < r.result->n_images; i++) {
        char *name = cli_output_name(o->output, i + 1, r.result->n_images);
        all_written &= cli_save_or_rescue(r.result->images[i], name, gp->seed + (guint64)i);
        g_free(name);
    }
    if (o->latent_out && cli_write_latents(o->latent_out, r.result) != -1)
        all_written = false;
    if (r.result->notes)
        fprintf(stderr, "sdg: warning: %s\n", r.result->notes);   // even with --quiet
    if (!all_written)
        goto out;
    cli_info("done in %.1f s (sampling and decoding %.1f s)",
             (double)(g_get_monotonic_time() - t0) / 1e6,
             (double)(g_get_monotonic_time() - t1) / 1e6);
    code = CLI_EXIT_OK;
    goto out;

cancelled:
    fprintf(stderr, "sdg: cancelled\n");
    code = CLI_EXIT_CANCELLED;
out:
    cli_run_free(&r);
    return code;
}

int main(int argc, char **argv)
{
    cli_opts o = {
        .steps = CLI_UNSET, .cfg_scale = NAN, .batch_count = 1, .clip_skip = 1, .strength = -1.0,
        .hires_strength = NAN,
    };
    int code = cli_parse(&argc, &argv, &o);
    if (code == -1 && o.version) {
        printf("sdg %s\n", SDG_VERSION);
        code = CLI_EXIT_OK;
    }
    cli_quiet = o.quiet;
    sdg_gen_params gp = sdg_gen_default_params();
    if (code == -1)
        code = cli_validate(&o, &gp);
    if (code == -1) {
        cli_install_sigint();
        g_log_set_default_handler(cli_log_handler, NULL);
        g_setenv("GEGL_SWAP", "RAM", FALSE);   // no swap files in the user's cache folder
        gegl_init(NULL, NULL);
        code = cli_main(&o, &gp);
        gegl_exit();
    }

    char **strs[] = {&o.model, &o.vocab, &o.prompt, &o.negative, &o.sampler, &o.schedule,
                     &o.precision, &o.seed, &o.init_image, &o.mask, &o.noise_in, &o.latent_out, &o.output,
                     &o.prediction, &o.original_size, &o.crop, &o.target_size, &o.decoder,
                     &o.taesd, &o.lora_dir, &o.embeddings, &o.model_sampling, &o.hires, &o.hires_upscale};
    for (size_t i = 0; i < G_N_ELEMENTS(strs); i++)
        g_free(*strs[i]);
    g_strfreev(o.lora);
    g_free(o.loras);
    return code;
}
