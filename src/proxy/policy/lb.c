/* Load balancers and passive health; see lb.h for the split between the
 * immutable shared half and the per-worker half, and for memory figures.
 *
 * References (read, not copied):
 * - Smooth weighted round robin: nginx ngx_http_upstream_get_peer() in
 *   src/http/ngx_http_upstream_round_robin.c (commit 52327e0627f4, 2012).
 * - Power of two choices: Mitzenmacher, "The Power of Two Choices in
 *   Randomized Load Balancing", IEEE TPDS 2001; Envoy's least-request LB.
 * - Peak EWMA: Finagle PeakEwma.scala; tower's balance/p2c and load/peak_ewma.rs;
 *   linkerd2-proxy sets EWMA_DEFAULT_RTT = 30 ms (not used here, see below),
 *   EWMA_DECAY = 10 s.
 * - Ring hash: Karger et al., "Consistent Hashing and Random Trees", STOC 1997;
 *   libketama; Envoy's ring_hash_lb.cc for weight-proportional point counts.
 * - Maglev: Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
 *   Balancer", NSDI 2016, §3.4 (Pseudocode 1); weights as in Envoy's
 *   maglev_lb.cc (heavier hosts take more turns).
 * - Outlier detection: Envoy's outlier_detection docs (consecutive 5xx, ejection
 *   time = base * times ejected, max ejection percent with at least one host,
 *   multiplier decremented each healthy interval); Istio's OutlierDetection
 *   defaults (baseEjectionTime 30 s, interval 10 s).
 * - PRNG: xoshiro256** and splitmix64, Blackman & Vigna, https://prng.di.unimi.it/
 * - Hash: FNV-1a 64 followed by MurmurHash3's fmix64 finaliser (hash.h), so that short,
 *   similar keys (IP addresses) spread over all 64 bits. */
#include "lb.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "hash.h"
#include "outlier.h"

#define NS_PER_MS 1000000ull

/* Estimates decay with linkerd2-proxy's 10 s time constant (EWMA_DECAY).
 *
 * Unsampled endpoints follow Finagle, not linkerd2-proxy: linkerd starts every
 * endpoint at EWMA_DEFAULT_RTT = 30 ms, so under light load, when nothing is
 * outstanding, a new endpoint beside 1 ms ones is never drawn as the cheaper
 * candidate until the endpoints' estimates have decayed below each other
 * (~35 s). Finagle gives an unsampled endpoint cost 0 while idle (it is
 * probed at once) and a huge penalty while its first request is pending (it
 * is not flooded before its latency is known). */
#define EWMA_TAU_NS (10.0e9)
#define EWMA_UNSAMPLED_PENDING_COST 1e18

#define RING_SIZE_DEFAULT 1024u
#define RING_SIZE_MAX (8u * 1024 * 1024) /* Envoy's maximum_ring_size */
#define MAGLEV_SIZE_DEFAULT 65537u
#define MAGLEV_SIZE_MAX 5000011u /* Envoy's upper bound */
#define MAGLEV_EMPTY UINT16_MAX

/* Istio OutlierDetection defaults for fields left at 0; Envoy's
 * max_ejection_time default caps the growth of base * times_ejected. */
#define OUTLIER_BASE_EJECTION_MS_DEFAULT 30000u
#define OUTLIER_INTERVAL_MS_DEFAULT 10000u
#define OUTLIER_MAX_EJECTION_MS 300000u

/* Slow start (Envoy's slow_start_config with aggression 1): an endpoint's
 * weight is weight x max(MIN_PERCENT, age / window), in units of 1/SCALE. */
#define WARMUP_SCALE 1000u
#define WARMUP_MIN_PERCENT 10u

/* Rejection-sampling tries before an O(n) scan over available endpoints. */
#define SAMPLE_TRIES 8

typedef struct ring_point {
    uint64_t hash;
    uint32_t idx;
} ring_point;

struct rete_lb_shared {
    atomic_uint refs;
    const rete_service *svc;
    rete_lb_kind kind;
    size_t n;
    size_t n_live;    /* endpoints of weight > 0 */
    uint32_t *weight; /* n */
    uint64_t *cum;    /* n, inclusive prefix sums of weight */
    uint64_t total_weight;
    ring_point *ring; /* RING_HASH: sorted by hash */
    size_t n_ring;
    uint16_t *maglev; /* MAGLEV: endpoint index per slot */
    uint32_t maglev_size;
    /* outlier detection, defaults applied */
    uint32_t consecutive_5xx; /* 0 = off */
    uint32_t max_ejection_percent;
    uint32_t consecutive_gw; /* 0 = off */
    uint32_t min_health_percent;
    uint64_t base_ejection_ns;
    uint64_t interval_ns;
    /* outlierDetection.successRate: on, and its bounds */
    bool sr_on;
    uint32_t sr_minimum_hosts;
    uint32_t sr_request_volume;
    double sr_factor; /* stdevFactor / 1000 */
    bool hc;            /* healthCheck: endpoints failing it are out */
    uint64_t warmup_ns; /* slow start window, 0 = off (ROUND_ROBIN, LEAST_REQUEST) */
};

/* Mutable per-worker state of one endpoint: 64 bytes, one cache line. */
typedef struct ep_state {
    double ewma_ns; /* PEAK_EWMA estimate as of stamp_ns */
    uint64_t stamp_ns;
    int64_t rr_current; /* smooth RR current weight */
    uint64_t picks;
    rete_outlier *od; /* its proxy-wide outlier slot; NULL: never ejected */
    uint32_t outstanding;
    uint32_t w_eff;   /* slow start: its weight x WARMUP_SCALE x the ramp (rescan) */
    uint8_t level;    /* locality level */
    bool sampled;     /* ewma_ns/stamp_ns hold a measurement */
} ep_state;

struct rete_lb {
    rete_lb_shared *sh;
    ep_state *ep;
    rete_outlier *od_svc; /* the Service's slot: its ejection lock */
    uint64_t rng[4];
    /* derived from the outlier slots by rescan(), valid until next_scan_ns */
    uint64_t next_scan_ns;
    size_t n_ejected;
    bool panic;
    bool levels;                    /* locality on with more than one level in use */
    uint32_t load[RETE_LB_LEVELS];  /* each level's share of picks, per 10000 */
    bool warming;                   /* slow start: some endpoint's w_eff is ramping */
    /* filter for the pick in progress */
    uint64_t f_now;
    int f_exclude;
    int f_skip; /* P2C: the first candidate, while drawing the second */
    int f_level; /* -1: any level */
    bool f_panic;
    uint64_t picks_total;
    uint64_t no_endpoint_total;
    uint64_t panic_total;
    uint64_t ejections_total;
    uint64_t ejections_overflow_total;
};

/* ---- hashing and randomness ---------------------------------------------- */

uint64_t rete_lb_hash(rete_view key)
{
    return rete_fmix64(rete_fnv1a(RETE_FNV1A_INIT, key.p, key.len));
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rete_lb *lb)
{
    uint64_t *s = lb->rng;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, bound), bound > 0. The modulo bias is below bound / 2^64,
 * negligible for weight sums. */
static uint64_t rng_below(rete_lb *lb, uint64_t bound)
{
    return rng_next(lb) % bound;
}

/* The stable identity of an endpoint across snapshots: its address and mesh
 * port (the name when there is no address), so consistent hashing maps keys
 * to the same workload when others come and go. */
static uint64_t endpoint_id_hash(const rete_workload *w)
{
    const char *id = w->address ? w->address : (w->name ? w->name : "");
    uint64_t h = rete_fnv1a(RETE_FNV1A_INIT, id, strlen(id));
    unsigned char port[2] = {(unsigned char)(w->mesh_port >> 8), (unsigned char)w->mesh_port};
    return rete_fmix64(rete_fnv1a(h, port, sizeof port));
}

/* ---- shared half ----------------------------------------------------------- */

static int ring_point_cmp(const void *a, const void *b)
{
    const ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Ketama-style ring. Point j of an endpoint is rete_fmix64(id + (j+1) * golden):
 * it depends only on the endpoint's identity, so an endpoint keeps its points
 * when others come and go. Point counts are weight * P, weights first divided
 * by their gcd, P the smallest power of two with P * total >= ring_size.
 * Unlike Envoy, which spreads exactly ring_size points by weight share (so
 * every host gains points when one leaves, moving ~10% more keys than
 * necessary), P changes only when the total weight crosses ring_size / 2^k;
 * removing one of five equal endpoints moves only that endpoint's keys. The
 * ring holds between ring_size and 2 * ring_size points. When weights are so
 * uneven that this exceeds RING_SIZE_MAX, counts fall back to shares of
 * RING_SIZE_MAX with at least one point each. */
static void build_ring(rete_lb_shared *sh)
{
    const rete_service *svc = sh->svc;
    uint64_t g = 0;
    for (size_t i = 0; i < sh->n; i++)
        g = gcd64(g, sh->weight[i]);
    uint64_t units = sh->total_weight / g;
    uint64_t want = svc->policy.ring_size ? svc->policy.ring_size : RING_SIZE_DEFAULT;
    if (want > RING_SIZE_MAX)
        want = RING_SIZE_MAX;
    uint64_t per_unit = 1;
    while (per_unit * units < want)
        per_unit *= 2;
    bool by_share = units > RING_SIZE_MAX || per_unit * units > 2 * (uint64_t)RING_SIZE_MAX;

    size_t *count = rete_calloc(sh->n, sizeof *count);
    size_t total = 0;
    double prev = 0;
    for (size_t i = 0; i < sh->n; i++) {
        if (!sh->weight[i])
            continue;
        if (!by_share) {
            count[i] = (size_t)(sh->weight[i] / g * per_unit);
        } else { /* cumulative rounding keeps the sum near RING_SIZE_MAX */
            double upto =
                floor((double)RING_SIZE_MAX * (double)sh->cum[i] / (double)sh->total_weight + 0.5);
            count[i] = upto > prev ? (size_t)(upto - prev) : 1;
            prev = upto;
        }
        total += count[i];
    }
    sh->ring = rete_malloc(total * sizeof *sh->ring);
    size_t k = 0;
    for (size_t i = 0; i < sh->n; i++) {
        uint64_t id = endpoint_id_hash(svc->endpoints[i]);
        for (size_t j = 0; j < count[i]; j++) {
            sh->ring[k].hash = rete_fmix64(id + (j + 1) * 0x9e3779b97f4a7c15ull);
            sh->ring[k].idx = (uint32_t)i;
            k++;
        }
    }
    sh->n_ring = total;
    qsort(sh->ring, sh->n_ring, sizeof *sh->ring, ring_point_cmp);
    rete_free(&count);
}

static bool is_prime(uint32_t m)
{
    if (m < 2)
        return false;
    for (uint32_t d = 2; (uint64_t)d * d <= m; d++)
        if (m % d == 0)
            return false;
    return true;
}

/* Maglev table population (paper §3.4, Pseudocode 1). Endpoint i walks its
 * own permutation of the slots, offset + j*skip mod M, taking the first empty
 * slot on each of its turns. Weights as in Envoy: on round t an endpoint of
 * weight w takes a turn when t*w reaches its target, which then grows by the
 * largest weight; the heaviest takes a turn every round, one of a third of
 * its weight every third round. Cost O(M * n) at worst, at snapshot build
 * time, never on a pick. */
static void build_maglev(rete_lb_shared *sh, uint32_t m)
{
    size_t n = sh->n;
    uint64_t *offset = rete_calloc(n, sizeof *offset);
    uint64_t *skip = rete_calloc(n, sizeof *skip);
    uint64_t *next = rete_calloc(n, sizeof *next);
    uint64_t *target = rete_calloc(n, sizeof *target);
    uint32_t max_w = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t h1 = endpoint_id_hash(sh->svc->endpoints[i]);
        uint64_t h2 = rete_fmix64(h1 ^ 0x5851f42d4c957f2dull);
        offset[i] = h1 % m;
        skip[i] = h2 % (m - 1) + 1;
        if (sh->weight[i] > max_w)
            max_w = sh->weight[i];
    }
    sh->maglev = rete_malloc((size_t)m * sizeof *sh->maglev);
    for (uint32_t s = 0; s < m; s++)
        sh->maglev[s] = MAGLEV_EMPTY;
    sh->maglev_size = m;

    uint32_t filled = 0;
    for (uint64_t round = 1; filled < m; round++) {
        for (size_t i = 0; i < n && filled < m; i++) {
            if (!sh->weight[i] || round * sh->weight[i] < target[i])
                continue;
            target[i] += max_w;
            uint64_t slot;
            do { /* a full cycle (m prime, 0 < skip < m): an empty slot exists */
                slot = (offset[i] + next[i] * skip[i]) % m;
                next[i]++;
            } while (sh->maglev[slot] != MAGLEV_EMPTY);
            sh->maglev[slot] = (uint16_t)i;
            filled++;
        }
    }
    rete_free(&offset);
    rete_free(&skip);
    rete_free(&next);
    rete_free(&target);
}

static void shared_free(rete_lb_shared *sh)
{
    rete_free(&sh->weight);
    rete_free(&sh->cum);
    rete_free(&sh->ring);
    rete_free(&sh->maglev);
    free(sh);
}

rete_rc rete_lb_shared_build(const rete_service *svc, rete_lb_shared **out)
{
    rete_rc rc = RETE_EINVAL;
    *out = NULL;
    rete_lb_shared *sh = rete_calloc(1, sizeof *sh);
    atomic_init(&sh->refs, 1);
    sh->svc = svc;
    sh->kind = svc->policy.lb;
    sh->n = svc->n_endpoints;
    sh->weight = rete_calloc(sh->n ? sh->n : 1, sizeof *sh->weight);
    sh->cum = rete_calloc(sh->n ? sh->n : 1, sizeof *sh->cum);
    for (size_t i = 0; i < sh->n; i++) {
        /* A Workload not ready (its sidecar's readiness probe failing, as
         * reted pushes it) takes no traffic, as one of weight 0. */
        sh->weight[i] = svc->endpoints[i]->ready ? svc->endpoints[i]->weight : 0;
        sh->total_weight += sh->weight[i];
        sh->cum[i] = sh->total_weight;
        if (sh->weight[i])
            sh->n_live++;
    }

    const rete_traffic_policy *p = &svc->policy;
    sh->consecutive_5xx = p->consecutive_5xx;
    sh->consecutive_gw = p->consecutive_gateway;
    sh->min_health_percent = p->min_health_percent > 100 ? 100 : p->min_health_percent;
    sh->max_ejection_percent = p->max_ejection_percent > 100 ? 100 : p->max_ejection_percent;
    sh->base_ejection_ns =
        (uint64_t)(p->base_ejection_ms ? p->base_ejection_ms : OUTLIER_BASE_EJECTION_MS_DEFAULT) *
        NS_PER_MS;
    sh->interval_ns =
        (uint64_t)(p->outlier_interval_ms ? p->outlier_interval_ms : OUTLIER_INTERVAL_MS_DEFAULT) *
        NS_PER_MS;
    sh->sr_on = p->sr_on;
    sh->sr_minimum_hosts = p->sr_minimum_hosts ? p->sr_minimum_hosts : 1;
    sh->sr_request_volume = p->sr_request_volume ? p->sr_request_volume : 1;
    sh->sr_factor = p->sr_stdev_factor / 1000.0;
    sh->hc = p->hc_kind != RETE_HC_NONE;
    if (sh->kind == RETE_LB_ROUND_ROBIN || sh->kind == RETE_LB_LEAST_REQUEST)
        sh->warmup_ns = (uint64_t)p->warmup_ms * NS_PER_MS;

    switch (sh->kind) {
    case RETE_LB_RING_HASH:
        if (sh->n_live)
            build_ring(sh);
        break;
    case RETE_LB_MAGLEV: {
        rc = RETE_ELIMIT;
        RETE_ENSURE_GOTO(sh->n < MAGLEV_EMPTY, fail);
        uint32_t m = p->maglev_table_size ? p->maglev_table_size : MAGLEV_SIZE_DEFAULT;
        if (m < sh->n + 1)
            m = (uint32_t)sh->n + 1;
        RETE_ENSURE_GOTO(m <= MAGLEV_SIZE_MAX, fail);
        while (!is_prime(m))
            m++;
        if (sh->n_live)
            build_maglev(sh, m);
        break;
    }
    case RETE_LB_PEAK_EWMA:
    case RETE_LB_ROUND_ROBIN:
    case RETE_LB_LEAST_REQUEST:
    case RETE_LB_RANDOM:
        break;
    default:
        rc = RETE_EINVAL;
        goto fail;
    }
    *out = sh;
    return RETE_OK;
fail:
    shared_free(sh);
    return rc;
}

uint32_t rete_lb_shared_maglev_size(const rete_lb_shared *sh)
{
    return sh->maglev ? sh->maglev_size : 0;
}

void rete_lb_shared_unref(rete_lb_shared **shp)
{
    rete_lb_shared *sh = *shp;
    *shp = NULL;
    if (sh && atomic_fetch_sub_explicit(&sh->refs, 1, memory_order_acq_rel) == 1)
        shared_free(sh);
}

/* ---- per-worker half ------------------------------------------------------- */

static const char *label_of(const rete_workload *w, const char *key)
{
    for (size_t i = 0; w && i < w->n_labels; i++)
        if (strcmp(w->labels[i].key, key) == 0)
            return w->labels[i].value;
    return "";
}

#define LABEL_REGION "topology.kubernetes.io/region"
#define LABEL_ZONE "topology.kubernetes.io/zone"
#define LABEL_SUBZONE "topology.istio.io/subzone"

/* The locality level of endpoint `w` seen from `self` (lb.h). */
static uint8_t level_of(const rete_traffic_policy *p, const rete_workload *self,
                        const rete_workload *w)
{
    const char *region = label_of(self, LABEL_REGION);
    const char *wr = label_of(w, LABEL_REGION);
    if (strcmp(wr, region) == 0) {
        if (strcmp(label_of(w, LABEL_ZONE), label_of(self, LABEL_ZONE)) != 0)
            return 2;
        return strcmp(label_of(w, LABEL_SUBZONE), label_of(self, LABEL_SUBZONE)) == 0 ? 0 : 1;
    }
    for (size_t i = 0; i < p->n_failover; i++)
        if (strcmp(p->failover[i].from, region) == 0 && strcmp(p->failover[i].to, wr) == 0)
            return 3;
    return 4;
}

rete_lb *rete_lb_new_at(rete_lb_shared *sh, const rete_workload *self, uint64_t seed)
{
    rete_lb *lb = rete_calloc(1, sizeof *lb);
    atomic_fetch_add_explicit(&sh->refs, 1, memory_order_relaxed);
    lb->sh = sh;
    lb->ep = rete_calloc(sh->n ? sh->n : 1, sizeof *lb->ep);
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        lb->rng[i] = splitmix64(&x);
    lb->f_exclude = -1;
    lb->f_skip = -1;
    lb->f_level = -1;
    const rete_service *svc = sh->svc;
    char name[300];
    rete_outlier_service_name(svc, name, sizeof name);
    /* The proxy-wide slots carry outlier detection, active health checks
     * and slow start's join times. */
    bool od = sh->consecutive_5xx || sh->consecutive_gw || sh->sr_on || sh->hc || sh->warmup_ns;
    if (od)
        lb->od_svc = rete_outlier_ref(name, NULL);
    bool local = svc->policy.locality && self && *label_of(self, LABEL_REGION);
    uint8_t first = RETE_LB_LEVELS;
    for (size_t i = 0; i < sh->n; i++) {
        char key[96];
        rete_outlier_endpoint_key(svc->endpoints[i], key, sizeof key);
        if (od)
            lb->ep[i].od = rete_outlier_ref(name, key);
        lb->ep[i].level = local ? level_of(&svc->policy, self, svc->endpoints[i]) : 0;
        if (first == RETE_LB_LEVELS)
            first = lb->ep[i].level;
        else if (lb->ep[i].level != first)
            lb->levels = true;
    }
    return lb;
}

rete_lb *rete_lb_new_shared(rete_lb_shared *sh, uint64_t seed)
{
    return rete_lb_new_at(sh, NULL, seed);
}

rete_lb *rete_lb_new(const rete_service *svc, uint64_t seed)
{
    rete_lb_shared *sh = NULL;
    if (rete_lb_shared_build(svc, &sh) < 0)
        return NULL;
    rete_lb *lb = rete_lb_new_shared(sh, seed);
    rete_lb_shared_unref(&sh);
    return lb;
}

void rete_lb_free(rete_lb **lbp)
{
    rete_lb *lb = *lbp;
    if (!lb)
        return;
    for (size_t i = 0; i < lb->sh->n; i++)
        rete_outlier_unref(lb->ep[i].od);
    rete_outlier_unref(lb->od_svc);
    rete_free(&lb->ep);
    rete_lb_shared_unref(&lb->sh);
    rete_free(lbp);
}

size_t rete_lb_n_endpoints(const rete_lb *lb)
{
    return lb->sh->n;
}

const char *rete_lb_kind_name(rete_lb_kind kind)
{
    switch (kind) {
    case RETE_LB_PEAK_EWMA:
        return "peak_ewma";
    case RETE_LB_ROUND_ROBIN:
        return "round_robin";
    case RETE_LB_LEAST_REQUEST:
        return "least_request";
    case RETE_LB_RANDOM:
        return "random";
    case RETE_LB_RING_HASH:
        return "ring_hash";
    case RETE_LB_MAGLEV:
        return "maglev";
    default:
        return "unknown";
    }
}

static bool valid_idx(const rete_lb *lb, int idx)
{
    return idx >= 0 && (size_t)idx < lb->sh->n;
}

/* ---- outlier detection ----------------------------------------------------- */

static bool ejected(const ep_state *e, uint64_t now)
{
    return rete_outlier_ejected(e->od, now);
}

/* Out of the balancer: ejected, or failing its active health checks. */
static bool out(const rete_lb *lb, const ep_state *e, uint64_t now)
{
    return ejected(e, now) || (lb->sh->hc && rete_outlier_hc_down(e->od));
}

/* Slow start: the percent of its weight endpoint i has at `now` (Envoy's
 * slow_start_config, aggression 1): max(WARMUP_MIN_PERCENT, age / window),
 * 100 once the window has passed. It (re)joined at the latest of its
 * slot's join time (first seen by a balancer, or its health checks passing
 * again) and the end of its last ejection; `join`: one never seen joins
 * now (else it is reported as just joined). */
static uint64_t warmup_percent(const rete_lb *lb, size_t i, uint64_t now, bool join)
{
    const rete_lb_shared *sh = lb->sh;
    rete_outlier *o = lb->ep[i].od;
    if (!o)
        return 100;
    uint64_t joined = atomic_load_explicit(&o->joined_ns, memory_order_relaxed);
    if (!joined) {
        if (!join)
            return WARMUP_MIN_PERCENT;
        uint64_t zero = 0;
        joined = atomic_compare_exchange_strong_explicit(&o->joined_ns, &zero, now,
                                                         memory_order_relaxed,
                                                         memory_order_relaxed)
                     ? now
                     : zero;
    }
    uint64_t until = atomic_load_explicit(&o->ejected_until_ns, memory_order_relaxed);
    if (until <= now && until > joined)
        joined = until;
    if (now >= joined + sh->warmup_ns)
        return 100;
    uint64_t pct = (now - joined) * 100 / sh->warmup_ns;
    return pct < WARMUP_MIN_PERCENT ? WARMUP_MIN_PERCENT : pct;
}

/* Slow start: every endpoint's ramped weight, in 1/WARMUP_SCALE. */
static void warmup_weights(rete_lb *lb, uint64_t now)
{
    const rete_lb_shared *sh = lb->sh;
    lb->warming = false;
    for (size_t i = 0; i < sh->n; i++) {
        uint64_t pct = warmup_percent(lb, i, now, true);
        uint64_t w = (uint64_t)sh->weight[i] * WARMUP_SCALE * pct / 100;
        if (pct < 100 && sh->weight[i])
            lb->warming = true;
        lb->ep[i].w_eff = w > UINT32_MAX ? UINT32_MAX : w ? (uint32_t)w : (sh->weight[i] ? 1 : 0);
    }
}

/* Refresh what this worker derives from the shared slots: the number
 * ejected, panic, and each locality level's share. O(n), at most every
 * RETE_LB_RESCAN_MS, or when an ejection ends. */
static void rescan(rete_lb *lb, uint64_t now)
{
    const rete_lb_shared *sh = lb->sh;
    uint32_t total[RETE_LB_LEVELS] = {0}, healthy[RETE_LB_LEVELS] = {0};
    uint64_t next = now + (uint64_t)RETE_LB_RESCAN_MS * NS_PER_MS;
    size_t n_ejected = 0;
    for (size_t i = 0; i < sh->n; i++) {
        const ep_state *e = &lb->ep[i];
        if (!sh->weight[i])
            continue;
        total[e->level]++;
        if (out(lb, e, now)) {
            n_ejected++;
            uint64_t until = atomic_load_explicit(&e->od->ejected_until_ns, memory_order_relaxed);
            if (until > now && until < next)
                next = until;
        } else {
            healthy[e->level]++;
        }
    }
    lb->n_ejected = n_ejected;
    size_t n_healthy = sh->n_live - n_ejected;
    /* Panic (Envoy's healthy_panic_threshold, Istio's minHealthPercent):
     * too few healthy to carry the load: ejections are ignored. */
    lb->panic = n_healthy == 0 || n_healthy * 100 < (uint64_t)sh->min_health_percent * sh->n_live;
    if (lb->levels) {
        /* Envoy's priority load: a level takes min(100%, healthy share x
         * 1.4) of what is left, and shares short of 100% are scaled up. */
        uint32_t left = 10000, sum = 0;
        for (int l = 0; l < RETE_LB_LEVELS; l++) {
            uint32_t h = lb->panic ? total[l] : healthy[l];
            uint32_t want = total[l] ? (uint32_t)((uint64_t)h * 14000 / total[l]) : 0;
            if (want > 10000)
                want = 10000;
            lb->load[l] = want < left ? want : left;
            left -= lb->load[l];
            sum += lb->load[l];
        }
        for (int l = 0; sum && sum < 10000 && l < RETE_LB_LEVELS; l++)
            lb->load[l] = (uint32_t)((uint64_t)lb->load[l] * 10000 / sum);
    }
    if (sh->warmup_ns)
        warmup_weights(lb, now);
    lb->next_scan_ns = next;
}

/* Envoy: the ejection multiplier drops by one for each interval the endpoint
 * stays admitted, so an endpoint that failed once long ago is not punished
 * with a long ejection for its next failure. `until` is the end of its last
 * ejection. */
static uint32_t decayed_multiplier(const rete_lb_shared *sh, uint32_t times, uint64_t until,
                                   uint64_t now)
{
    if (!times || now < until)
        return times;
    uint64_t k = (now - until) / sh->interval_ns;
    return k >= times ? 0 : times - (uint32_t)k;
}

/* Eject endpoint `idx` if maxEjectionPercent allows: under the Service's
 * try-lock, so that workers ejecting at once count each other. */
static bool try_eject(rete_lb *lb, size_t idx, uint64_t now)
{
    const rete_lb_shared *sh = lb->sh;
    rete_outlier *o = lb->ep[idx].od;
    uint32_t unlocked = 0;
    if (!lb->od_svc || !atomic_compare_exchange_strong(&lb->od_svc->lock, &unlocked, 1))
        return false; /* another worker is deciding: the next failure tries again */
    bool done = false;
    if (!rete_outlier_ejected(o, now)) {
        size_t n_ejected = 0;
        for (size_t i = 0; i < sh->n; i++)
            n_ejected += sh->weight[i] && ejected(&lb->ep[i], now);
        /* max_ejection_percent of the live endpoints, but at least one
         * (Envoy: "will eject at least one host regardless of the value");
         * the panic threshold keeps traffic flowing when that leaves few. */
        if (n_ejected == 0 ||
            (uint64_t)(n_ejected + 1) * 100 <= (uint64_t)sh->max_ejection_percent * sh->n_live) {
            uint64_t until = atomic_load_explicit(&o->ejected_until_ns, memory_order_relaxed);
            uint32_t times = decayed_multiplier(
                sh, atomic_load_explicit(&o->times_ejected, memory_order_relaxed), until, now) + 1;
            uint64_t dur = sh->base_ejection_ns * times;
            uint64_t cap = (uint64_t)OUTLIER_MAX_EJECTION_MS * NS_PER_MS;
            if (cap < sh->base_ejection_ns)
                cap = sh->base_ejection_ns;
            if (dur > cap || dur / times != sh->base_ejection_ns)
                dur = cap;
            atomic_store_explicit(&o->times_ejected, times, memory_order_relaxed);
            atomic_store_explicit(&o->ejected_until_ns, now + dur, memory_order_release);
            atomic_fetch_add_explicit(&o->ejections, 1, memory_order_relaxed);
            lb->ejections_total++;
            done = true;
        } else {
            lb->ejections_overflow_total++;
        }
        atomic_store_explicit(&o->consecutive_5xx, 0, memory_order_relaxed);
        atomic_store_explicit(&o->consecutive_gw, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&lb->od_svc->lock, 0, memory_order_release);
    lb->next_scan_ns = 0;
    return done;
}

/* Success-rate ejection (Envoy's): once per interval, by whichever worker
 * finds the Service's evaluation due first (one CAS on its due time), take
 * every endpoint's counts since the last evaluation (shared by the
 * workers); if at least minimumHosts endpoints had requestVolume requests,
 * eject those whose success rate is below mean - factor x stdev of theirs.
 * Returns how many were ejected. */
static unsigned sr_evaluate(rete_lb *lb, uint64_t now)
{
    const rete_lb_shared *sh = lb->sh;
    if (!lb->od_svc)
        return false;
    rete_outlier_sr *svc = rete_outlier_sr_of(lb->od_svc);
    uint64_t due = atomic_load_explicit(&svc->next_ns, memory_order_acquire);
    if (due && now < due)
        return false;
    if (!atomic_compare_exchange_strong(&svc->next_ns, &due, now + sh->interval_ns))
        return false; /* another worker evaluates */
    if (!due)
        return false; /* the first window starts now */
    double *rate = rete_calloc(sh->n ? sh->n : 1, sizeof *rate);
    size_t *at = rete_calloc(sh->n ? sh->n : 1, sizeof *at);
    size_t k = 0;
    for (size_t i = 0; i < sh->n; i++) {
        rete_outlier *o = lb->ep[i].od;
        if (!o || !sh->weight[i])
            continue;
        rete_outlier_sr *s = rete_outlier_sr_of(o);
        uint32_t req = atomic_exchange_explicit(&s->requests, 0, memory_order_relaxed);
        uint32_t ok = atomic_exchange_explicit(&s->successes, 0, memory_order_relaxed);
        if (req >= sh->sr_request_volume && !rete_outlier_ejected(o, now)) {
            rate[k] = (double)(ok > req ? req : ok) / req;
            at[k++] = i;
        }
    }
    unsigned ejected_n = 0;
    if (k && k >= sh->sr_minimum_hosts) {
        double mean = 0, var = 0;
        for (size_t j = 0; j < k; j++)
            mean += rate[j];
        mean /= (double)k;
        for (size_t j = 0; j < k; j++)
            var += (rate[j] - mean) * (rate[j] - mean);
        double threshold = mean - sh->sr_factor * sqrt(var / (double)k);
        for (size_t j = 0; j < k; j++)
            if (rate[j] < threshold && try_eject(lb, at[j], now))
                ejected_n++;
    }
    free(rate);
    free(at);
    return ejected_n;
}

bool rete_lb_is_ejected(const rete_lb *lb, int idx, uint64_t now_ns)
{
    return valid_idx(lb, idx) && out(lb, &lb->ep[idx], now_ns);
}

/* ---- peak EWMA --------------------------------------------------------------- */

/* Bring the estimate to `now`: without a sample it decays towards zero, so an
 * endpoint that was slow is retried after a while (tower's decay-on-read). */
static double ewma_at(ep_state *e, uint64_t now)
{
    if (e->sampled && now > e->stamp_ns) {
        e->ewma_ns *= exp(-(double)(now - e->stamp_ns) / EWMA_TAU_NS);
        e->stamp_ns = now;
    }
    return e->ewma_ns;
}

/* Finagle's PeakEwma load: an unsampled endpoint costs 0 when idle, a penalty
 * (plus its queue, to break ties) while its first request is pending. */
static double ewma_cost(const rete_lb *lb, int i, uint64_t now)
{
    ep_state *e = &lb->ep[i];
    if (!e->sampled)
        return e->outstanding ? EWMA_UNSAMPLED_PENDING_COST + e->outstanding : 0;
    return ewma_at(e, now) * (e->outstanding + 1.0) / lb->sh->weight[i];
}

/* A sample above the estimate replaces it at once (the "peak"); a lower one
 * pulls it down with weight 1 - exp(-dt/tau), dt the time since the last
 * update, so the estimate falls only as fast as the 10 s time constant.
 * The first sample is the estimate. */
static void ewma_sample(ep_state *e, double rtt, uint64_t now)
{
    if (!e->sampled) {
        e->sampled = true;
        e->ewma_ns = rtt;
        e->stamp_ns = now;
        return;
    }
    if (rtt > e->ewma_ns) {
        e->ewma_ns = rtt;
    } else {
        double dt = now > e->stamp_ns ? (double)(now - e->stamp_ns) : 0;
        double w = exp(-dt / EWMA_TAU_NS);
        e->ewma_ns = e->ewma_ns * w + rtt * (1 - w);
    }
    if (now > e->stamp_ns)
        e->stamp_ns = now;
}

/* ---- algorithms ---------------------------------------------------------------- */

static bool avail(const rete_lb *lb, size_t i)
{
    const ep_state *e = &lb->ep[i];
    return lb->sh->weight[i] && (lb->f_level < 0 || e->level == lb->f_level) &&
           (lb->f_panic || !out(lb, e, lb->f_now)) && (int)i != lb->f_exclude &&
           (int)i != lb->f_skip;
}

/* Weighted random over available endpoints: draw on the prefix sums, redraw a
 * few times when the draw is unavailable, then fall back to a scan. */
static int pick_random(rete_lb *lb)
{
    const rete_lb_shared *sh = lb->sh;
    for (int t = 0; t < SAMPLE_TRIES; t++) {
        uint64_t r = rng_below(lb, sh->total_weight);
        size_t lo = 0, hi = sh->n - 1; /* first i with cum[i] > r */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (sh->cum[mid] > r)
                hi = mid;
            else
                lo = mid + 1;
        }
        if (avail(lb, lo))
            return (int)lo;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < sh->n; i++)
        if (avail(lb, i))
            sum += sh->weight[i];
    if (!sum)
        return -1;
    uint64_t r = rng_below(lb, sum);
    for (size_t i = 0; i < sh->n; i++) {
        if (!avail(lb, i))
            continue;
        if (r < sh->weight[i])
            return (int)i;
        r -= sh->weight[i];
    }
    return -1; /* not reached */
}

/* nginx's smooth weighted round robin: every available endpoint gains its
 * weight, the largest current weight wins and pays back the total. Weights
 * 5:1:1 give a a b a c a a. O(n) per pick. */
static int pick_round_robin(rete_lb *lb)
{
    const rete_lb_shared *sh = lb->sh;
    int64_t total = 0;
    ep_state *best = NULL;
    int best_i = -1;
    bool ramp = sh->warmup_ns != 0; /* weights in 1/WARMUP_SCALE, some ramping */
    for (size_t i = 0; i < sh->n; i++) {
        if (!avail(lb, i))
            continue;
        ep_state *e = &lb->ep[i];
        int64_t w = ramp ? e->w_eff : sh->weight[i];
        e->rr_current += w;
        total += w;
        if (!best || e->rr_current > best->rr_current) {
            best = e;
            best_i = (int)i;
        }
    }
    if (best)
        best->rr_current -= total;
    return best_i;
}

/* Two distinct candidates drawn by weight (the second from the rest); b is -1
 * when a is the only one available. */
static void p2c_candidates(rete_lb *lb, int *a, int *b)
{
    *a = pick_random(lb);
    *b = -1;
    if (*a < 0)
        return;
    lb->f_skip = *a;
    *b = pick_random(lb);
    lb->f_skip = -1;
}

/* Slow start: a weighted draw over the available endpoints' ramped
 * weights, O(n) (only while some endpoint is ramping). */
static int pick_random_ramped(rete_lb *lb)
{
    const rete_lb_shared *sh = lb->sh;
    uint64_t sum = 0;
    for (size_t i = 0; i < sh->n; i++)
        if (avail(lb, i))
            sum += lb->ep[i].w_eff;
    if (!sum)
        return -1;
    uint64_t r = rng_below(lb, sum);
    for (size_t i = 0; i < sh->n; i++) {
        if (!avail(lb, i))
            continue;
        if (r < lb->ep[i].w_eff)
            return (int)i;
        r -= lb->ep[i].w_eff;
    }
    return -1; /* not reached */
}

/* P2C on outstanding / weight, compared by cross-multiplication; ties go to
 * the first draw, so an idle service spreads by weight. While slow start
 * ramps an endpoint, both the draws and the comparison use the ramped
 * weights. */
static int pick_least_request(rete_lb *lb)
{
    int a, b;
    if (lb->warming) {
        a = pick_random_ramped(lb);
        b = -1;
        if (a >= 0) {
            lb->f_skip = a;
            b = pick_random_ramped(lb);
            lb->f_skip = -1;
        }
        if (b < 0)
            return a;
        uint64_t ca = (uint64_t)lb->ep[a].outstanding * lb->ep[b].w_eff;
        uint64_t cb = (uint64_t)lb->ep[b].outstanding * lb->ep[a].w_eff;
        return cb < ca ? b : a;
    }
    p2c_candidates(lb, &a, &b);
    if (b < 0)
        return a;
    const uint32_t *w = lb->sh->weight;
    uint64_t ca = (uint64_t)lb->ep[a].outstanding * w[b];
    uint64_t cb = (uint64_t)lb->ep[b].outstanding * w[a];
    return cb < ca ? b : a;
}

/* P2C on peak-EWMA latency * (outstanding + 1) / weight (tower's cost, with
 * the weight division of the least-request balancer); ties to the first draw. */
static int pick_peak_ewma(rete_lb *lb, uint64_t now)
{
    int a, b;
    p2c_candidates(lb, &a, &b);
    if (b < 0)
        return a;
    return ewma_cost(lb, b, now) < ewma_cost(lb, a, now) ? b : a;
}

/* First point at or after the key's hash, wrapping; when its endpoint is
 * unavailable, walk on to the next point of an available one. */
static int pick_ring_hash(rete_lb *lb, rete_view key)
{
    const rete_lb_shared *sh = lb->sh;
    if (!key.len || !sh->n_ring)
        return pick_random(lb);
    uint64_t h = rete_lb_hash(key);
    size_t lo = 0, hi = sh->n_ring;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sh->ring[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = 0; k < sh->n_ring; k++) {
        uint32_t idx = sh->ring[(lo + k) % sh->n_ring].idx;
        if (avail(lb, idx))
            return (int)idx;
    }
    return -1;
}

/* The slot hash mod M; when its endpoint is unavailable, the next slots in
 * order (their owners are spread like random draws by weight). */
static int pick_maglev(rete_lb *lb, rete_view key)
{
    const rete_lb_shared *sh = lb->sh;
    if (!key.len || !sh->maglev)
        return pick_random(lb);
    uint32_t m = sh->maglev_size;
    uint32_t slot = (uint32_t)(rete_lb_hash(key) % m);
    for (uint32_t k = 0; k < m; k++) {
        uint16_t idx = sh->maglev[slot];
        if (avail(lb, idx))
            return idx;
        if (++slot == m)
            slot = 0;
    }
    return -1;
}

static int pick_kind(rete_lb *lb, const rete_lb_context *ctx, uint64_t now)
{
    rete_view key = ctx ? ctx->hash_key : RETE_VIEW_NULL;
    switch (lb->sh->kind) {
    case RETE_LB_ROUND_ROBIN:
        return pick_round_robin(lb);
    case RETE_LB_RANDOM:
        return pick_random(lb);
    case RETE_LB_LEAST_REQUEST:
        return pick_least_request(lb);
    case RETE_LB_RING_HASH:
        return pick_ring_hash(lb, key);
    case RETE_LB_MAGLEV:
        return pick_maglev(lb, key);
    case RETE_LB_PEAK_EWMA:
        return pick_peak_ewma(lb, now);
    default:
        return -1;
    }
}

int rete_lb_pick(rete_lb *lb, const rete_lb_context *ctx, uint64_t now_ns)
{
    const rete_lb_shared *sh = lb->sh;
    if (!sh->n_live) {
        lb->no_endpoint_total++;
        return -1;
    }
    if (now_ns >= lb->next_scan_ns)
        rescan(lb, now_ns);
    lb->f_now = now_ns;
    lb->f_panic = lb->panic;
    lb->f_exclude = ctx && valid_idx(lb, ctx->exclude) ? ctx->exclude : -1;
    if (lb->levels) { /* draw the locality level by its share */
        uint32_t r = (uint32_t)rng_below(lb, 10000), acc = 0;
        for (int l = 0; l < RETE_LB_LEVELS; l++) {
            acc += lb->load[l];
            if (r < acc) {
                lb->f_level = l;
                break;
            }
        }
    }
    int idx = pick_kind(lb, ctx, now_ns);
    if (idx < 0 && lb->f_level >= 0) { /* nothing left in that level: any */
        lb->f_level = -1;
        idx = pick_kind(lb, ctx, now_ns);
    }
    if (idx < 0 && lb->f_exclude >= 0) { /* the excluded one is all there is */
        lb->f_exclude = -1;
        idx = pick_kind(lb, ctx, now_ns);
    }
    if (idx < 0 && !lb->f_panic) { /* every one left is ejected */
        lb->f_panic = true;
        idx = pick_kind(lb, ctx, now_ns);
    }
    lb->f_exclude = -1;
    lb->f_level = -1;
    if (idx < 0) {
        lb->no_endpoint_total++;
        return -1;
    }
    if (lb->f_panic)
        lb->panic_total++;
    lb->ep[idx].picks++;
    lb->picks_total++;
    return idx;
}

void rete_lb_start(rete_lb *lb, int idx)
{
    if (valid_idx(lb, idx) && lb->ep[idx].outstanding < UINT32_MAX)
        lb->ep[idx].outstanding++;
}

unsigned rete_lb_done(rete_lb *lb, int idx, uint64_t latency_ns, rete_lb_outcome outcome,
                      uint64_t now_ns)
{
    if (!valid_idx(lb, idx))
        return 0;
    const rete_lb_shared *sh = lb->sh;
    ep_state *e = &lb->ep[idx];
    if (e->outstanding)
        e->outstanding--;
    if (sh->kind == RETE_LB_PEAK_EWMA && latency_ns)
        ewma_sample(e, (double)latency_ns, now_ns);
    rete_outlier *o = e->od;
    if (!o || outcome == RETE_LB_LOCAL || !sh->weight[idx])
        return 0;
    unsigned sr_ejected = 0;
    if (sh->sr_on) {
        rete_outlier_sr *s = rete_outlier_sr_of(o);
        atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
        if (outcome == RETE_LB_SUCCESS)
            atomic_fetch_add_explicit(&s->successes, 1, memory_order_relaxed);
        sr_ejected = sr_evaluate(lb, now_ns);
    }
    if (outcome == RETE_LB_SUCCESS) {
        /* Loads first: no write to the shared line while all goes well. */
        if (atomic_load_explicit(&o->consecutive_5xx, memory_order_relaxed))
            atomic_store_explicit(&o->consecutive_5xx, 0, memory_order_relaxed);
        if (atomic_load_explicit(&o->consecutive_gw, memory_order_relaxed))
            atomic_store_explicit(&o->consecutive_gw, 0, memory_order_relaxed);
        return sr_ejected;
    }
    atomic_fetch_add_explicit(&o->failures, 1, memory_order_relaxed);
    /* Failures of requests still in flight when the endpoint was ejected say
     * nothing new. */
    if (rete_outlier_ejected(o, now_ns))
        return sr_ejected;
    uint32_t c5 = atomic_fetch_add_explicit(&o->consecutive_5xx, 1, memory_order_relaxed) + 1;
    uint32_t gw = 0;
    if (outcome == RETE_LB_GATEWAY)
        gw = atomic_fetch_add_explicit(&o->consecutive_gw, 1, memory_order_relaxed) + 1;
    else
        atomic_store_explicit(&o->consecutive_gw, 0, memory_order_relaxed);
    if ((sh->consecutive_5xx && c5 >= sh->consecutive_5xx) ||
        (sh->consecutive_gw && gw >= sh->consecutive_gw))
        return sr_ejected + try_eject(lb, (size_t)idx, now_ns);
    return sr_ejected;
}

unsigned rete_lb_finish(rete_lb *lb, int idx, uint64_t latency_ns, bool failure, uint64_t now_ns)
{
    return rete_lb_done(lb, idx, latency_ns, failure ? RETE_LB_5XX : RETE_LB_SUCCESS, now_ns);
}

void rete_lb_get_stats(const rete_lb *lb, uint64_t now_ns, rete_lb_stats *out)
{
    *out = (rete_lb_stats){
        .picks_total = lb->picks_total,
        .no_endpoint_total = lb->no_endpoint_total,
        .panic_total = lb->panic_total,
        .ejections_total = lb->ejections_total,
        .ejections_overflow_total = lb->ejections_overflow_total,
        .n_endpoints = lb->sh->n,
    };
    for (size_t i = 0; i < lb->sh->n; i++)
        if (rete_lb_is_ejected(lb, (int)i, now_ns))
            out->n_ejected++;
}

bool rete_lb_get_endpoint_stats(const rete_lb *lb, int idx, uint64_t now_ns,
                                rete_lb_endpoint_stats *out)
{
    if (!valid_idx(lb, idx))
        return false;
    const ep_state *e = &lb->ep[idx];
    double ewma = e->sampled ? e->ewma_ns : 0;
    if (e->sampled && now_ns > e->stamp_ns)
        ewma *= exp(-(double)(now_ns - e->stamp_ns) / EWMA_TAU_NS);
    *out = (rete_lb_endpoint_stats){
        .picks = e->picks,
        .outstanding = e->outstanding,
        .level = e->level,
        .ejected = ejected(e, now_ns),
        .hc_down = lb->sh->hc && rete_outlier_hc_down(e->od),
        .weight_percent =
            lb->sh->warmup_ns ? (uint32_t)warmup_percent(lb, (size_t)idx, now_ns, false) : 100,
        .ewma_ms = ewma / NS_PER_MS,
    };
    const rete_outlier *o = e->od;
    if (o) {
        uint64_t until = atomic_load_explicit(&o->ejected_until_ns, memory_order_relaxed);
        out->failures = atomic_load_explicit(&o->failures, memory_order_relaxed);
        out->ejections = atomic_load_explicit(&o->ejections, memory_order_relaxed);
        out->ejected_ms = until > now_ns ? (until - now_ns) / NS_PER_MS : 0;
        out->times_ejected = decayed_multiplier(
            lb->sh, atomic_load_explicit(&o->times_ejected, memory_order_relaxed), until, now_ns);
        out->consecutive_5xx = atomic_load_explicit(&o->consecutive_5xx, memory_order_relaxed);
        out->consecutive_gateway = atomic_load_explicit(&o->consecutive_gw, memory_order_relaxed);
        out->hc_streak = atomic_load_explicit(&o->hc_streak, memory_order_relaxed);
    }
    return true;
}
