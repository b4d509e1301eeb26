/* libFuzzer target for src/common/path_norm.c: the input is normalised under
 * every mode into a buffer exactly as long as the input. Besides memory
 * errors (ASan) it checks the contracts the proxy relies on: the result is
 * never longer than the input, starts with '/', holds no byte the normaliser
 * refuses, and normalising it again gives the same bytes (the app's sidecar
 * normalises what the client's sidecar forwarded). */
#include "path_norm.h"
#include "fuzz.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    char *out = malloc(size ? size : 1), *again = malloc(size ? size : 1);
    CHECK(out && again);
    for (int m = RETE_PATH_NORM_BASE; m <= RETE_PATH_NORM_DECODE_AND_MERGE_SLASHES; m++) {
        size_t n = 0, n2 = 0;
        rete_path_norm_result r = rete_path_normalize(rete_view_make((const char *)data, size),
                                                      (rete_path_norm_mode)m, out, size, &n);
        if (r != RETE_PATH_OK)
            continue;
        CHECK(n <= size && n >= 1 && out[0] == '/');
        for (size_t i = 0; i < n; i++)
            CHECK(out[i] != '#' && (unsigned char)out[i] > 0x20 && (unsigned char)out[i] < 0x7f);
        r = rete_path_normalize(rete_view_make(out, n), (rete_path_norm_mode)m, again, n, &n2);
        CHECK(r == RETE_PATH_OK && n2 == n && memcmp(out, again, n) == 0);
    }
    free(out);
    free(again);
    return 0;
}
