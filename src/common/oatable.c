#include "oatable.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"

bool rete_oa_reserve(void **slots, size_t *cap, size_t elem, size_t want, size_t min_cap,
                     rete_oa_slot_hash slot_hash, const void *ctx)
{
    if (want * 2 <= *cap)
        return false;
    size_t ncap = *cap ? *cap * 2 : min_cap;
    char *old = *slots, *grown = rete_calloc(ncap, elem);
    for (size_t i = 0; i < *cap; i++) {
        uint64_t h;
        if (!slot_hash(old + i * elem, ctx, &h))
            continue;
        size_t j = RETE_OA_FIRST(h, ncap);
        while (slot_hash(grown + j * elem, ctx, &(uint64_t){0}))
            j = RETE_OA_NEXT(j, ncap);
        memcpy(grown + j * elem, old + i * elem, elem);
    }
    free(old);
    *slots = grown;
    *cap = ncap;
    return true;
}
