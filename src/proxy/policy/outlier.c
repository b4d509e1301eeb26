/* Outlier detection state shared by a proxy's workers; see outlier.h. */
#include "outlier.h"

#include <stdio.h>
#include <string.h>

#include "hash.h"

#define REFS_MASK 0xffffull
#define HASH_OF(w) ((w) & ~REFS_MASK)

static rete_outlier slots[RETE_OUTLIER_SLOTS];
static rete_outlier_sr sr_counts[RETE_OUTLIER_SLOTS];
static _Atomic uint64_t overflows;

/* 48 bits of the key's hash, never 0; the Service slot hashes the FQDN with a
 * separator no address contains. */
static uint64_t key_hash(const char *fqdn, const char *id)
{
    uint64_t h = rete_fnv1a_str(RETE_FNV1A_INIT, fqdn ? fqdn : "");
    h = rete_fnv1a(h, "|", 1);
    if (id)
        h = rete_fnv1a_str(h, id);
    else
        h = rete_fnv1a(h, "#service", 8);
    h = rete_fmix64(h) & ~REFS_MASK;
    return h ? h : (1ull << 16);
}

/* Take a reference on `o` if its key is `key`. */
static bool take_if(rete_outlier *o, uint64_t key)
{
    uint64_t w = atomic_load_explicit(&o->word, memory_order_acquire);
    while (HASH_OF(w) == key && (w & REFS_MASK) < REFS_MASK)
        if (atomic_compare_exchange_weak(&o->word, &w, w + 1))
            return true;
    return false;
}

/* Claim `o` for `key` if it is empty or held by nobody, forgetting its state. */
static bool claim(rete_outlier *o, uint64_t key)
{
    uint64_t w = atomic_load_explicit(&o->word, memory_order_acquire);
    if ((w & REFS_MASK) != 0 || !atomic_compare_exchange_strong(&o->word, &w, key | 1))
        return false;
    if (HASH_OF(w) != 0) { /* a departed endpoint's slot */
        atomic_store_explicit(&o->ejected_until_ns, 0, memory_order_relaxed);
        atomic_store_explicit(&o->consecutive_5xx, 0, memory_order_relaxed);
        atomic_store_explicit(&o->consecutive_gw, 0, memory_order_relaxed);
        atomic_store_explicit(&o->times_ejected, 0, memory_order_relaxed);
        atomic_store_explicit(&o->ejections, 0, memory_order_relaxed);
        atomic_store_explicit(&o->failures, 0, memory_order_relaxed);
        atomic_store_explicit(&o->hc_down, 0, memory_order_relaxed);
        atomic_store_explicit(&o->hc_streak, 0, memory_order_relaxed);
        atomic_store_explicit(&o->joined_ns, 0, memory_order_relaxed);
        rete_outlier_sr *s = rete_outlier_sr_of(o);
        atomic_store_explicit(&s->requests, 0, memory_order_relaxed);
        atomic_store_explicit(&s->successes, 0, memory_order_relaxed);
        atomic_store_explicit(&s->next_ns, 0, memory_order_relaxed);
    }
    return true;
}

rete_outlier_sr *rete_outlier_sr_of(const rete_outlier *o)
{
    return &sr_counts[o - slots];
}

rete_outlier *rete_outlier_ref(const char *fqdn, const char *id)
{
    uint64_t key = key_hash(fqdn, id);
    uint32_t home = (uint32_t)(key >> 16) % RETE_OUTLIER_SLOTS;
    /* Racing workers scan in the same order, so they converge on one slot:
     * a lost claim restarts the scan and finds the winner's key. */
    for (int round = 0; round < 8; round++) {
        rete_outlier *free_slot = NULL; /* an empty slot, else the first held by nobody */
        for (uint32_t i = 0; i < RETE_OUTLIER_PROBE; i++) {
            rete_outlier *o = &slots[(home + i) % RETE_OUTLIER_SLOTS];
            if (take_if(o, key))
                return o;
            uint64_t w = atomic_load_explicit(&o->word, memory_order_acquire);
            if (w == 0) {
                free_slot = o;
                break; /* never used: the key is not further on */
            }
            if (!free_slot && (w & REFS_MASK) == 0)
                free_slot = o;
        }
        if (!free_slot)
            break;
        if (claim(free_slot, key))
            return free_slot;
    }
    atomic_fetch_add_explicit(&overflows, 1, memory_order_relaxed);
    return NULL;
}

const rete_outlier *rete_outlier_find(const char *fqdn, const char *id)
{
    uint64_t key = key_hash(fqdn, id);
    uint32_t home = (uint32_t)(key >> 16) % RETE_OUTLIER_SLOTS;
    for (uint32_t i = 0; i < RETE_OUTLIER_PROBE; i++) {
        const rete_outlier *o = &slots[(home + i) % RETE_OUTLIER_SLOTS];
        uint64_t w = atomic_load_explicit(&o->word, memory_order_acquire);
        if (w == 0)
            return NULL;
        if (HASH_OF(w) == key && (w & REFS_MASK))
            return o;
    }
    return NULL;
}

void rete_outlier_hold(rete_outlier *o)
{
    if (o)
        atomic_fetch_add_explicit(&o->word, 1, memory_order_acq_rel);
}

void rete_outlier_unref(rete_outlier *o)
{
    if (o)
        atomic_fetch_sub_explicit(&o->word, 1, memory_order_acq_rel);
}

uint64_t rete_outlier_count_ejected(uint64_t now)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < RETE_OUTLIER_SLOTS; i++)
        if (atomic_load_explicit(&slots[i].word, memory_order_relaxed) && rete_outlier_ejected(&slots[i], now))
            n++;
    return n;
}

uint64_t rete_outlier_count_hc_down(void)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < RETE_OUTLIER_SLOTS; i++)
        if ((atomic_load_explicit(&slots[i].word, memory_order_relaxed) & REFS_MASK) &&
            rete_outlier_hc_down(&slots[i]))
            n++;
    return n;
}

void rete_outlier_endpoint_key(const rete_workload *w, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%u", w->address ? w->address : (w->name ? w->name : ""),
             (unsigned)w->mesh_port);
}

void rete_outlier_service_name(const rete_service *svc, char *buf, size_t len)
{
    if (svc->fqdn)
        snprintf(buf, len, "%s", svc->fqdn);
    else
        snprintf(buf, len, "%s.%s", svc->name ? svc->name : "", svc->ns ? svc->ns : "");
}

uint64_t rete_outlier_overflows(void)
{
    return atomic_load_explicit(&overflows, memory_order_relaxed);
}

void rete_outlier_clear(void)
{
    memset(slots, 0, sizeof slots);
    memset(sr_counts, 0, sizeof sr_counts);
    atomic_store(&overflows, 0);
}
