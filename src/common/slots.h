/* Process-wide tables of slots claimed by a key: the one scheme behind the
 * proxy's per-Service state that every worker shares and that outlives a
 * configuration push (connection-pool counts, policy/breaker.c; retry
 * budgets, http/filter_retry.c; rate-limit buckets, http/filter_ratelimit.c).
 *
 * A table is a fixed array allocated once (static), each slot starting with
 * an `_Atomic uint64_t key` (0: free). A key is claimed with one
 * compare-and-swap and never released, so a lookup is a few acquire loads
 * and no lock, on any thread. Keys are hashes made odd (| 1), never 0. */
#ifndef RETE_COMMON_SLOTS_H
#define RETE_COMMON_SLOTS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The index of the slot holding `key` (claimed now if a free slot comes
 * first) among the `probe` slots from key % n, or n when every one of them
 * holds another key. slots: n elements of `stride` bytes, each beginning
 * with its _Atomic uint64_t key. */
static inline size_t rete_slot_claim(void *slots, size_t n, size_t stride, size_t probe, uint64_t key)
{
    for (size_t i = 0; i < probe && i < n; i++) {
        size_t at = (size_t)((key + i) % n);
        _Atomic uint64_t *k = (_Atomic uint64_t *)((char *)slots + at * stride);
        uint64_t have = atomic_load_explicit(k, memory_order_acquire);
        if (have == key)
            return at;
        if (have == 0) {
            uint64_t zero = 0;
            if (atomic_compare_exchange_strong(k, &zero, key) || zero == key)
                return at;
        }
    }
    return n;
}

#endif
