/* Circuit-breaker counts shared by the workers of a proxy; see breaker.h. */
#include "breaker.h"

#include "hash.h"
#include "slots.h"

static rete_breaker slots[RETE_BREAKER_SLOTS];

rete_breaker *rete_breaker_of(const char *fqdn)
{
    uint64_t key = rete_fmix64(rete_fnv1a_str(RETE_FNV1A_INIT, fqdn)) | 1;
    size_t at = rete_slot_claim(slots, RETE_BREAKER_SLOTS, sizeof(*slots), RETE_BREAKER_SLOTS, key);
    return &slots[at < RETE_BREAKER_SLOTS ? at : RETE_BREAKER_SLOTS - 1];
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
    default:
        return "unknown";
    }
}
