/* Open-addressing tables: the one scheme behind the project's hash tables
 * whose entries live inline in one array (the metrics registry's series
 * tables and per-worker caches, telemetry's series cache). Capacity is a
 * power of two, a key's probe sequence starts at hash & (cap - 1) and goes
 * on linearly (RETE_OA_FIRST, RETE_OA_NEXT), and the array doubles before it
 * gets more than half full, so a probe ends at an empty slot after a few
 * steps; tables never shrink and never delete. The owner keeps its own
 * entry type, empty test and equality (a lookup stays a few inlined lines
 * over its own entries, with no call per probe); growing is here.
 * (khash and h2o's khash use are the models: entries inline, no chaining.)
 *
 * Memory: cap * elem bytes per table; growing briefly holds both arrays.
 * Not thread-safe: the owner serialises (registry mutex, or one thread). */
#ifndef RETE_COMMON_OATABLE_H
#define RETE_COMMON_OATABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RETE_OA_FIRST(h, cap) ((size_t)(h) & ((cap) - 1))
#define RETE_OA_NEXT(i, cap) (((i) + 1) & ((cap) - 1))

/* Says whether `slot` holds an entry and, when it does, its hash in *h.
 * ctx is the owner's (for tables that keep the hash elsewhere). */
typedef bool (*rete_oa_slot_hash)(const void *slot, const void *ctx, uint64_t *h);

/* Make room for `want` entries at a load of at most one half: when
 * want * 2 > *cap, a zeroed array of twice the capacity (min_cap, a power
 * of two, the first time) replaces *slots (elements of `elem` bytes, all
 * zero meaning empty) and every entry is moved to its probe position in it.
 * May move *slots; returns whether it did. */
bool rete_oa_reserve(void **slots, size_t *cap, size_t elem, size_t want, size_t min_cap,
                     rete_oa_slot_hash slot_hash, const void *ctx);

#define RETE_OA_RESERVE(slots, cap, want, min_cap, slot_hash, ctx)                                 \
    rete_oa_reserve((void **)&(slots), &(cap), sizeof(*(slots)), (want), (min_cap), (slot_hash),   \
                    (ctx))

#endif
