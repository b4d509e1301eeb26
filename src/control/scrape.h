/* What /metrics reads at scrape time: callbacks bound to the series of
 * stats.h whose values other modules keep (the registry's proxies by state,
 * the snapshot cache, the index, the listeners, the store's revision, the
 * CA's expiry, the heap). This module reads every other one and nothing
 * calls it but main.c, once, so that the modules themselves need not know
 * about metrics beyond counting. */
#ifndef RETE_CONTROL_SCRAPE_H
#define RETE_CONTROL_SCRAPE_H

#include "scrape-t.h"

/* Bind every scrape-time series of r->stats to r (which outlives the
 * registry). Aborts if a binding is refused: a bug, not a condition. */
void reted_scrape_bind(struct reted *r);

#endif
