/* Latency histogram with HDR-style log-linear buckets (after Gil Tene's
 * HdrHistogram): values below 2 * RETE_HDR_SUB (256) are stored exactly;
 * above, each power of two is split into RETE_HDR_SUB / 2 (128) linear
 * sub-buckets, so any recorded value is known to within 1/128 (0.78 %).
 * Unit-free; the bench records microseconds, and with the default ceiling of
 * 60 s that is 1 us resolution up to 60 s in about 20 KB of counters.
 *
 * No allocation: the counters live inside the struct, so a histogram can be
 * embedded, copied and merged. Not thread-safe; one per loop, merge at the end. */
#ifndef RETE_HDR_H
#define RETE_HDR_H

#include <stdint.h>

#define RETE_HDR_SUB_BITS 7
#define RETE_HDR_SUB (1u << RETE_HDR_SUB_BITS)
/* Enough buckets for values up to 2^37 - 1 (38 hours in microseconds). */
#define RETE_HDR_MAX_SHIFT 29
#define RETE_HDR_BUCKETS (2 * RETE_HDR_SUB + RETE_HDR_MAX_SHIFT * RETE_HDR_SUB)
#define RETE_HDR_DEFAULT_HIGHEST (60ull * 1000 * 1000)

typedef struct rete_hdr {
    uint64_t highest;   /* values above are recorded as `highest` and counted in `saturated` */
    uint64_t total;
    uint64_t saturated;
    uint64_t min;       /* exact; UINT64_MAX while empty */
    uint64_t max;       /* exact (after clamping); 0 while empty */
    double sum;
    uint64_t counts[RETE_HDR_BUCKETS];
} rete_hdr;

/* Empty the histogram; `highest` is clamped to what the buckets can hold. */
void rete_hdr_init(rete_hdr *h, uint64_t highest);

void rete_hdr_record(rete_hdr *h, uint64_t value);

/* Add every count of `src` into `dst`. */
void rete_hdr_merge(rete_hdr *dst, const rete_hdr *src);

/* The value at percentile `pct` (0..100]: the highest value equivalent to the
 * bucket that holds the ceil(pct% * total)-th smallest recording, never above
 * the exact maximum. 0 when empty. */
uint64_t rete_hdr_percentile(const rete_hdr *h, double pct);

double rete_hdr_mean(const rete_hdr *h);

/* Bucket geometry, exposed for tests: the index a value lands in, and the
 * lowest and highest values that share that bucket. */
unsigned rete_hdr_index(uint64_t value);
uint64_t rete_hdr_lowest_equiv(unsigned index);
uint64_t rete_hdr_highest_equiv(unsigned index);

#endif
