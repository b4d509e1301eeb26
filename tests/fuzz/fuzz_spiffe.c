/* libFuzzer target for SPIFFE IDs (src/common/spiffe.c): parse, validate,
 * principal and trust-domain tests and Istio principal matching on any
 * bytes. Besides memory errors: what parses is valid; a parsed ID formats
 * back to itself; an ID always matches itself and "*"; a pattern that is an
 * ID's principal matches it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spiffe.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *id = malloc(size + 1);
    CHECK(id);
    memcpy(id, data, size);
    id[size] = '\0';
    size_t len = strlen(id); /* a C string stops at NUL, as every caller's does */
    rete_spiffe_parts parts;
    bool valid = rete_spiffe_id_valid(id, len);
    if (rete_spiffe_parse(id, len, &parts)) {
        CHECK(valid);
        char td[512], ns[512], sa[512], again[2048];
        CHECK(parts.td.len < sizeof(td) && parts.ns.len < sizeof(ns) && parts.sa.len < sizeof(sa));
        memcpy(td, parts.td.p, parts.td.len);
        td[parts.td.len] = '\0';
        memcpy(ns, parts.ns.p, parts.ns.len);
        ns[parts.ns.len] = '\0';
        memcpy(sa, parts.sa.p, parts.sa.len);
        sa[parts.sa.len] = '\0';
        CHECK(rete_spiffe_format(again, sizeof(again), td, ns, sa));
        CHECK(strcmp(again, id) == 0);
        CHECK(rete_spiffe_in_trust_domain(id, td));
        CHECK(rete_spiffe_match(id, id));
        CHECK(rete_spiffe_match("*", id));
        CHECK(rete_spiffe_match(rete_spiffe_principal(id), id));
    }
    (void)rete_spiffe_match(id, "spiffe://cluster.local/ns/demo/sa/web");
    (void)rete_spiffe_in_trust_domain(id, "cluster.local");
    free(id);
    return 0;
}
