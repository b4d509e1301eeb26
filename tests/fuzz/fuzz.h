/* What every libFuzzer target here shares: CHECK aborts on a broken
 * property, which libFuzzer reports as a crash with the input saved. */
#ifndef RETE_FUZZ_H
#define RETE_FUZZ_H

#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#endif
