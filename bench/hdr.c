/* Log-linear latency histogram; see hdr.h for the bucket layout. */
#include "hdr.h"

#include <math.h>
#include <string.h>

/* The largest shift puts the top bit at SUB_BITS + MAX_SHIFT: values up to
 * 2^37 - 1 fit the bucket array. */
#define HDR_CEILING ((1ull << (RETE_HDR_SUB_BITS + RETE_HDR_MAX_SHIFT + 1)) - 1)

void rete_hdr_init(rete_hdr *h, uint64_t highest)
{
    memset(h, 0, sizeof(*h));
    h->highest = (highest == 0 || highest > HDR_CEILING) ? HDR_CEILING : highest;
    h->min = UINT64_MAX;
}

/* Layout: indices [0, 2*SUB) hold values exactly. A larger value with its top
 * bit at position e (e >= SUB_BITS + 1) is shifted right by
 * s = e - SUB_BITS so that it lands in [SUB, 2*SUB), and occupies index
 * 2*SUB + (s-1)*SUB + (v>>s) - SUB. */
unsigned rete_hdr_index(uint64_t value)
{
    if (value < 2 * RETE_HDR_SUB)
        return (unsigned)value;
    unsigned e = 63u - (unsigned)__builtin_clzll(value);
    unsigned s = e - RETE_HDR_SUB_BITS;
    if (s > RETE_HDR_MAX_SHIFT)
        return RETE_HDR_BUCKETS - 1;
    return 2 * RETE_HDR_SUB + (s - 1) * RETE_HDR_SUB + (unsigned)(value >> s) - RETE_HDR_SUB;
}

uint64_t rete_hdr_lowest_equiv(unsigned index)
{
    if (index < 2 * RETE_HDR_SUB)
        return index;
    unsigned s = (index - 2 * RETE_HDR_SUB) / RETE_HDR_SUB + 1;
    uint64_t sub = (index - 2 * RETE_HDR_SUB) % RETE_HDR_SUB + RETE_HDR_SUB;
    return sub << s;
}

uint64_t rete_hdr_highest_equiv(unsigned index)
{
    if (index < 2 * RETE_HDR_SUB)
        return index;
    unsigned s = (index - 2 * RETE_HDR_SUB) / RETE_HDR_SUB + 1;
    return rete_hdr_lowest_equiv(index) + (1ull << s) - 1;
}

void rete_hdr_record(rete_hdr *h, uint64_t value)
{
    if (value > h->highest) {
        value = h->highest;
        h->saturated++;
    }
    h->counts[rete_hdr_index(value)]++;
    h->total++;
    h->sum += (double)value;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

void rete_hdr_merge(rete_hdr *dst, const rete_hdr *src)
{
    for (unsigned i = 0; i < RETE_HDR_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->saturated += src->saturated;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t rete_hdr_percentile(const rete_hdr *h, double pct)
{
    if (h->total == 0)
        return 0;
    if (pct >= 100.0)
        return h->max;
    if (pct < 0.0)
        pct = 0.0;
    uint64_t rank = (uint64_t)ceil(pct / 100.0 * (double)h->total);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < RETE_HDR_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = rete_hdr_highest_equiv(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

double rete_hdr_mean(const rete_hdr *h)
{
    return h->total ? h->sum / (double)h->total : 0.0;
}
