/* libFuzzer target for protocol detection's TLS test
 * (rete_tls_looks_like_client_hello, src/common/tls.c): on any prefix of
 * any input the answer is stable — a prefix never says "yes" where the
 * whole says "no", and "need more" only for a prefix too short to decide.
 * And the SNI parser (rete_tls_hello_sni, src/common/tls_hello.c) on the
 * whole input: a name found lies inside it and is no longer than 253. */
#include <stdint.h>
#include <stdlib.h>

#include "tls.h"
#include "tls_hello.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rete_view sni = RETE_VIEW_NULL;
    if (rete_tls_hello_sni(data, size, &sni) == RETE_HELLO_SNI)
        CHECK((const uint8_t *)sni.p >= data && sni.len >= 1 && sni.len <= 253 &&
              (const uint8_t *)sni.p + sni.len <= data + size);
    if (size > 64)
        size = 64; /* the detector peeks at most conn.h's 64 bytes */
    bool more_all = false;
    bool all = rete_tls_looks_like_client_hello(data, size, &more_all);
    CHECK(!(all && more_all));
    for (size_t k = 0; k < size; k++) {
        bool more = false;
        bool yes = rete_tls_looks_like_client_hello(data, k, &more);
        CHECK(!(yes && more));
        if (yes)
            CHECK(all); /* decided on a prefix: the same on the whole */
        if (!yes && !more)
            CHECK(!all); /* refused on a prefix: refused on the whole */
    }
    return 0;
}
