/* The scrape-time bindings' state, which struct reted embeds (scrape.h has
 * its function). */
#ifndef RETE_CONTROL_SCRAPE_T_H
#define RETE_CONTROL_SCRAPE_T_H

#include <stddef.h>

struct reted;

/* One bound series: which value, for which listener or state. */
typedef struct reted_probe {
    struct reted *r;
    unsigned what;
    unsigned i, k;
} reted_probe;

#define RETED_MAX_PROBES 64

typedef struct reted_scrape {
    reted_probe probes[RETED_MAX_PROBES];
    size_t n;
} reted_scrape;

#endif
