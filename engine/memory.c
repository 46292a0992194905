/*
 * memory.c - how much more memory this process can get, and the guard's sentence (memory.h).
 *
 * Sources, smallest wins: /proc/meminfo MemAvailable (the kernel's own estimate of what can be
 * allocated without swapping: free pages plus reclaimable cache), and for the cgroup the process
 * runs in and every one above it, the limit less the usage plus the cgroup's file pages (page
 * cache that the kernel reclaims before it kills anything inside a limited cgroup). Cgroup
 * hierarchies are found through /proc/self/mountinfo, so both a pure v2 system and a hybrid one
 * (v1 memory controller beside a v2 tree without it) work, and so do containers whose cgroup
 * mount root is not "/".
 *
 * Unreadable or malformed files mean "unknown" for that source, never a refusal: the guard is
 * there to turn a sure kill into a sentence, not to second-guess a machine it cannot see.
 *
 * Not here: the estimate itself (pipeline.c), the decision to refuse (sd.c, pipeline.c).
 */
#include "memory.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEM_PATH_MAX 4096
// v1 reports "no limit" as a huge number (LONG_MAX rounded down to the page size); anything at or
// above 2^62 bytes is no limit on any real machine.
#define MEM_NO_LIMIT ((uint64_t)1 << 62)

// ---------------------------------------------------------------------------------------------
// Small file reading

// Reads root+path into buf (NUL-terminated, at most cap-1 bytes). Returns false when the file
// cannot be opened or read, or the path does not fit.
static bool mem_read(const char *root, const char *path, char *buf, size_t cap)
{
    char full[MEM_PATH_MAX];
    int n = snprintf(full, sizeof full, "%s%s", root, path);
    if (n < 0 || (size_t)n >= sizeof full)
        return false;
    FILE *f = fopen(full, "r");
    if (!f)
        return false;
    size_t len = fread(buf, 1, cap - 1, f);
    bool ok = !ferror(f);
    fclose(f);
    buf[ok ? len : 0] = '\0';
    return ok;
}

// Parses a decimal unsigned number at s (leading blanks allowed); false when there is none or it
// overflows. *end, if given, is set past the digits.
static bool mem_u64(const char *s, uint64_t *out, const char **end)
{
    while (*s == ' ' || *s == '\t')
        s++;
    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    char *e = NULL;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno == ERANGE)
        return false;
    *out = (uint64_t)v;
    if (end)
        *end = e;
    return true;
}

// Value of the "key value" (or "key: value") line named key in a meminfo- or memory.stat-style
// text.
static bool mem_field(const char *text, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    const char *line = text;
    while (line && *line) {
        if (strncmp(line, key, klen) == 0) {
            char c = line[klen];   // within the string: the key matched up to here
            if (c == ' ' || c == '\t' || c == ':')
                return mem_u64(line + klen + (c == ':'), out, NULL);
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// /proc/meminfo

static bool mem_meminfo(const char *root, uint64_t *bytes)
{
    char buf[16384];
    uint64_t kb;
    if (!mem_read(root, "/proc/meminfo", buf, sizeof buf) || !mem_field(buf, "MemAvailable", &kb))
        return false;
    *bytes = kb * 1024;
    return true;
}

// ---------------------------------------------------------------------------------------------
// Cgroups

// Undoes mountinfo's octal escapes (\040 for a space) in place.
static void mem_unescape(char *s)
{
    char *o = s;
    for (const char *i = s; *i; i++) {
        if (i[0] == '\\' && i[1] >= '0' && i[1] <= '3' && i[2] >= '0' && i[2] <= '7' &&
            i[3] >= '0' && i[3] <= '7') {
            *o++ = (char)((i[1] - '0') * 64 + (i[2] - '0') * 8 + (i[3] - '0'));
            i += 3;
        } else {
            *o++ = *i;
        }
    }
    *o = '\0';
}

typedef struct mem_mount {
    char root[MEM_PATH_MAX];    // the part of the hierarchy mounted there ("/" usually)
    char point[MEM_PATH_MAX];   // where it is mounted
} mem_mount;

// Finds the mount of the v2 hierarchy (v2 true) or of the v1 hierarchy holding the memory
// controller (v2 false) in root/proc/self/mountinfo.
static bool mem_find_mount(const char *root, bool v2, mem_mount *out)
{
    char path[MEM_PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/proc/self/mountinfo", root);
    if (n < 0 || (size_t)n >= sizeof path)
        return false;
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[3 * MEM_PATH_MAX];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        // id parent major:minor root mountpoint options [optional fields] - fstype source super
        char *sep = strstr(line, " - ");
        if (!sep)
            continue;
        *sep = '\0';
        char fstype[64] = "", super[1024] = "";
        if (sscanf(sep + 3, "%63s %*s %1023s", fstype, super) < 1)
            continue;
        if (v2 ? strcmp(fstype, "cgroup2") != 0 : strcmp(fstype, "cgroup") != 0)
            continue;
        if (!v2) {
            bool memory = false;
            char *save = NULL;
            for (char *tok = strtok_r(super, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                memory = memory || strcmp(tok, "memory") == 0;
            if (!memory)
                continue;
        }
        char mroot[MEM_PATH_MAX], point[MEM_PATH_MAX];
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", mroot, point) != 2)
            continue;
        mem_unescape(mroot);
        mem_unescape(point);
        snprintf(out->root, sizeof out->root, "%s", mroot);
        snprintf(out->point, sizeof out->point, "%s", point);
        found = true;
    }
    fclose(f);
    return found;
}

// The process's path in the v2 hierarchy ("0::/path") or the v1 memory one ("N:...memory...:/path").
static bool mem_cgroup_path(const char *root, bool v2, char *out, size_t cap)
{
    char buf[16384];
    if (!mem_read(root, "/proc/self/cgroup", buf, sizeof buf))
        return false;
    char *save = NULL;   // strtok_r: several contexts may estimate at once
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = *c2 = '\0';
        bool match = false;
        if (v2) {
            match = strcmp(line, "0") == 0 && c1[1] == '\0';
        } else {
            for (char *tok = c1 + 1, *next; tok; tok = next) {
                next = strchr(tok, ',');
                if (next)
                    *next++ = '\0';
                match = match || strcmp(tok, "memory") == 0;
            }
        }
        if (match) {
            int n = snprintf(out, cap, "%s", c2 + 1);
            return n > 0 && (size_t)n < cap;
        }
    }
    return false;
}

// Reads root + dir/name (see mem_read).
static bool mem_read_in(const char *root, const char *dir, const char *name, char *buf,
                        size_t cap)
{
    char path[MEM_PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    return n > 0 && (size_t)n < sizeof path && mem_read(root, path, buf, cap);
}

// Room left under one cgroup's limit: limit - usage + reclaimable file pages. False when the
// cgroup has no limit or its files cannot be read.
static bool mem_cgroup_room(const char *root, const char *dir, bool v2, uint64_t *room)
{
    char buf[16384];
    uint64_t limit, usage, active = 0, inactive = 0;
    if (!mem_read_in(root, dir, v2 ? "memory.max" : "memory.limit_in_bytes", buf, sizeof buf) ||
        !mem_u64(buf, &limit, NULL) || limit >= MEM_NO_LIMIT)
        return false;   // "max" (v2) does not parse: no limit here
    if (!mem_read_in(root, dir, v2 ? "memory.current" : "memory.usage_in_bytes", buf,
                     sizeof buf) || !mem_u64(buf, &usage, NULL))
        return false;
    if (mem_read_in(root, dir, "memory.stat", buf, sizeof buf)) {
        // v1 gives this cgroup's own counts and, as total_*, those of its whole subtree.
        if (v2 || !mem_field(buf, "total_active_file", &active))
            mem_field(buf, "active_file", &active);
        if (v2 || !mem_field(buf, "total_inactive_file", &inactive))
            mem_field(buf, "inactive_file", &inactive);
    }
    uint64_t reclaimable = active + inactive < usage ? active + inactive : usage;
    uint64_t used = usage - reclaimable;
    *room = used < limit ? limit - used : 0;
    return true;
}

// The smallest room over the process's cgroup and its ancestors in one hierarchy.
static bool mem_cgroup(const char *root, bool v2, uint64_t *bytes)
{
    mem_mount m;
    char cg[MEM_PATH_MAX];
    if (!mem_find_mount(root, v2, &m) || !mem_cgroup_path(root, v2, cg, sizeof cg))
        return false;
    // The path is relative to the hierarchy's root; the mount may show only a subtree of it.
    const char *rel = cg;
    size_t rlen = strlen(m.root);
    if (strcmp(m.root, "/") != 0 && strncmp(cg, m.root, rlen) == 0 &&
        (cg[rlen] == '/' || cg[rlen] == '\0'))
        rel = cg + rlen;
    char dir[MEM_PATH_MAX];
    int n = snprintf(dir, sizeof dir, "%s%s%s", m.point, *rel == '/' ? "" : "/", rel);
    if (n < 0 || (size_t)n >= sizeof dir)
        return false;
    size_t plen = strlen(m.point);
    while (n > 1 && dir[n - 1] == '/')
        dir[--n] = '\0';

    bool any = false;
    uint64_t best = UINT64_MAX;
    for (;;) {
        uint64_t room;
        if (mem_cgroup_room(root, dir, v2, &room)) {
            any = true;
            if (room < best)
                best = room;
        }
        if (strlen(dir) <= plen)
            break;
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < plen)
            break;
        *slash = '\0';
    }
    if (any)
        *bytes = best;
    return any;
}

sdg_mem_source sdg__mem_machine(const char *root, uint64_t *bytes)
{
    uint64_t info = 0, v2 = 0, v1 = 0;
    bool has_info = mem_meminfo(root, &info);
    bool has_v2 = mem_cgroup(root, true, &v2);
    bool has_v1 = mem_cgroup(root, false, &v1);
    uint64_t cg = has_v2 && has_v1 ? (v2 < v1 ? v2 : v1) : has_v2 ? v2 : v1;
    if (has_v2 || has_v1) {
        if (!has_info || cg < info) {
            *bytes = cg;
            return SDG_MEM_CGROUP;
        }
    }
    if (has_info) {
        *bytes = info;
        return SDG_MEM_MEMINFO;
    }
    *bytes = 0;
    return SDG_MEM_UNKNOWN;
}

// ---------------------------------------------------------------------------------------------

bool sdg__mem_parse_size(const char *text, uint64_t *bytes)
{
    if (!text)
        return false;
    const char *s = text;
    while (*s == ' ')
        s++;
    if (!isdigit((unsigned char)*s))
        return false;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno == ERANGE || end == s || !isfinite(v) || v < 0)
        return false;
    // strtod also reads hex and exponents: allow only digits and one decimal point.
    for (const char *c = s; c < end; c++)
        if (!isdigit((unsigned char)*c) && *c != '.')
            return false;
    // K, M, G, T: powers of 1000, as in the messages; Ki, Mi, Gi, Ti: powers of 1024.
    double scale = 1.0;
    const char *units = "KMGT";
    const char *u = *end ? strchr(units, toupper((unsigned char)*end)) : NULL;
    if (u) {
        bool binary = end[1] == 'i' || end[1] == 'I';
        for (const char *k = units; k <= u; k++)
            scale *= binary ? 1024.0 : 1000.0;
        end += binary ? 2 : 1;
    }
    if (toupper((unsigned char)*end) == 'B')
        end++;
    while (*end == ' ')
        end++;
    if (*end != '\0')
        return false;
    double b = v * scale;
    if (b >= 18446744073709551615.0)
        return false;
    *bytes = (uint64_t)b;
    return true;
}

sdg_status sdg__mem_available(uint64_t *bytes, sdg_mem_source *source, sdg_error *err)
{
    const char *env = getenv("SDG_MEMORY_LIMIT");
    if (env && *env) {
        if (!sdg__mem_parse_size(env, bytes))
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "SDG_MEMORY_LIMIT='%.64s' is not a size "
                             "(bytes, or a number with K, M, G or T, e.g. 200M)", env);
        *source = SDG_MEM_ENV;
        return SDG_OK;
    }
    *source = sdg__mem_machine("", bytes);
    return SDG_OK;
}

void sdg__mem_format(uint64_t bytes, char *buf, size_t cap)
{
    // The shape of GLib's g_format_size(), which front ends may use for the same figures, but
    // with a plain space and no translation: the engine's messages are plain English text.
    static const char *const units[] = { "kB", "MB", "GB", "TB", "PB" };
    if (bytes < 1000) {
        snprintf(buf, cap, "%u bytes", (unsigned)bytes);
        return;
    }
    double v = (double)bytes / 1000.0;
    size_t u = 0;
    while (v >= 1000.0 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1000.0;
        u++;
    }
    snprintf(buf, cap, "%.1f %s", v, units[u]);
}

const char *sdg__mem_source_phrase(sdg_mem_source source)
{
    return source == SDG_MEM_ENV      ? " (SDG_MEMORY_LIMIT)"
           : source == SDG_MEM_CGROUP ? " under this process's cgroup memory limit"
                                      : "";
}

sdg_status sdg__mem_verdict(const sdg_memory_estimate *e, int batch_count, uint64_t weights_needed,
                            bool weights_held, sdg_mem_source source, sdg_error *err)
{
    if (e->fits)
        return SDG_OK;
    char total[32], model[32], work[32], avail[32], alone[32], what[64];
    sdg__mem_format(e->total_bytes, total, sizeof total);
    sdg__mem_format(e->weights_bytes, model, sizeof model);
    sdg__mem_format(e->working_bytes, work, sizeof work);
    sdg__mem_format(e->available_bytes, avail, sizeof avail);
    sdg__mem_format(weights_needed, alone, sizeof alone);
    if (batch_count > 1)
        snprintf(what, sizeof what, "this run of %d pictures of %dx%d", batch_count, e->width,
                 e->height);
    else
        snprintf(what, sizeof what, "this %dx%d run", e->width, e->height);
    const char *under = sdg__mem_source_phrase(source);
    char advice[160];
    if (weights_needed > e->available_bytes)
        snprintf(advice, sizeof advice, "the model alone needs %s: close other programs or use a "
                 "smaller model", alone);
    else
        snprintf(advice, sizeof advice, "lower the size%s", batch_count > 1 ? " or the batch count"
                                                                            : "");
    return sdg__fail(err, SDG_ERR_NOMEM, "%s needs %s (model %s + working memory %s) but only %s "
                     "is available%s%s; %s", what, total, model, work, avail,
                     weights_held ? " besides the loaded model" : "", under, advice);
}
