/* Circuit-breaker counts shared by the workers of a proxy; see breaker.h. */
#include "breaker.h"

#include "hash.h"
#include "slots.h"

static rete_breaker slots[RETE_BREAKER_SLOTS];

static rete_breaker *slot_of(uint64_t key)
{
    size_t at = rete_slot_claim(slots, RETE_BREAKER_SLOTS, sizeof(*slots), RETE_BREAKER_SLOTS, key | 1);
    return &slots[at < RETE_BREAKER_SLOTS ? at : RETE_BREAKER_SLOTS - 1];
}

rete_breaker *rete_breaker_of(const char *fqdn)
{
    return slot_of(rete_fmix64(rete_fnv1a_str(RETE_FNV1A_INIT, fqdn)));
}

rete_breaker *rete_breaker_of_rule(const char *ns, const char *name, size_t rule)
{
    /* "/" cannot be in a namespace or a name, nor " " in an FQDN: no
     * route's key is a Service's. */
    uint64_t h = rete_fnv1a_str(RETE_FNV1A_INIT, "route ");
    h = rete_fnv1a_str(h, ns);
    h = rete_fnv1a_str(h ^ '/', name);
    return slot_of(rete_fmix64(h ^ (uint64_t)rule));
}

const char *rete_breaker_limit_name(rete_breaker_limit l)
{
    switch (l) {
    case RETE_BREAKER_MAX_REQUESTS:
        return "http2MaxRequests";
    case RETE_BREAKER_MAX_PENDING:
        return "http1MaxPendingRequests";
    case RETE_BREAKER_PENDING_TIMEOUT:
        return "pendingTimeout";
    case RETE_BREAKER_MAX_RETRIES:
        return "maxRetries";
    case RETE_BREAKER_SHARE:
        return "connection_share";
    case RETE_BREAKER_ROUTE_MAX_REQUESTS:
        return "route_maxRequests";
    case RETE_BREAKER_ROUTE_MAX_RETRIES:
        return "route_maxRetries";
    default:
        return "unknown";
    }
}
