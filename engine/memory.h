/*
 * memory.h - the memory guard's view of the machine: how many more bytes this process can get
 * (MemAvailable, the room left under the memory limits of the cgroups it runs in, or the
 * SDG_MEMORY_LIMIT override), and the verdict on an estimate with its sentence.
 *
 * "Available" counts memory that could be handed out without the kernel killing anything: free
 * pages plus page cache that can be dropped. So pages of a file mapping (F32 weights used in
 * place) are available even while resident, and a run must count them as still needed; anonymous
 * memory already held (converted weights, an arena) is not available and is not needed again.
 * Swap is not counted: a run that only fits by swapping is refused too.
 *
 * Not here: what a run needs (pipeline.c measures it with the dry run), loading, generating.
 */
#ifndef SDG_MEMORY_H
#define SDG_MEMORY_H

#include "common.h"

typedef enum sdg_mem_source {
    SDG_MEM_UNKNOWN = 0,   // nothing could be read: the guard never refuses
    SDG_MEM_MEMINFO,       // /proc/meminfo MemAvailable
    SDG_MEM_CGROUP,        // a cgroup's limit less its usage (tighter than MemAvailable)
    SDG_MEM_ENV,           // SDG_MEMORY_LIMIT
} sdg_mem_source;

// What this process can still get, from the files under root ("" = this machine; tests point it
// at a folder of fake proc/ and sys/ files): MemAvailable from root/proc/meminfo, lowered by the
// room left in the process's cgroup and every cgroup above it (v2: memory.max - memory.current;
// v1: memory.limit_in_bytes - memory.usage_in_bytes; both plus the cgroup's reclaimable file
// pages), found through root/proc/self/cgroup and root/proc/self/mountinfo. Files that cannot be
// read are skipped; SDG_MEM_UNKNOWN when none could be.
sdg_mem_source sdg__mem_machine(const char *root, uint64_t *bytes);

// sdg__mem_machine(""), unless SDG_MEMORY_LIMIT is set: then its value replaces the machine's
// figure. A value that is not a size is an SDG_ERR_INVALID_ARG naming it.
sdg_status sdg__mem_available(uint64_t *bytes, sdg_mem_source *source, sdg_error *err);

// Parses a byte count: a number, optionally followed by K, M, G or T (powers of 1000, as the
// messages count) or Ki, Mi, Gi, Ti (powers of 1024), and an optional B: "200M", "1.5GB",
// "512MiB", "4096". False for anything else.
bool sdg__mem_parse_size(const char *text, uint64_t *bytes);

// Writes bytes in words for messages, in the shape of g_format_size(): "3.1 GB", "45.0 MB",
// "512 bytes" (powers of 1000).
void sdg__mem_format(uint64_t bytes, char *buf, size_t cap);

// Where an available figure came from, as the guard's sentences say it after "is available":
// " (SDG_MEMORY_LIMIT)", " under this process's cgroup memory limit" or "".
const char *sdg__mem_source_phrase(sdg_mem_source source);
// The verdict on a filled estimate (e->fits already set): SDG_OK when it fits, else
// SDG_ERR_NOMEM with the sentence naming the need, what is available and what to lower.
// weights_needed: the part of e->needed_bytes that is the model's (all of it for a model not
// loaded yet, the mapped F32 tensors of a loaded one); weights_held: a loaded model already holds
// converted weights (they are not part of the available figure). batch_count shapes the advice,
// source names where the available figure came from.
sdg_status sdg__mem_verdict(const sdg_memory_estimate *e, int batch_count, uint64_t weights_needed,
                            bool weights_held, sdg_mem_source source, sdg_error *err);

#endif // SDG_MEMORY_H
