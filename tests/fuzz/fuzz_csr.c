/* libFuzzer target for CSR handling in reted's CA (src/control/ca.c): the
 * input is a certificate request in DER (wrapped into PEM here, so the
 * fuzzer mutates the structure, not base64), signed by a CA made once in a
 * temporary directory. Any input is refused with a message or signed into a
 * chain that carries the requested SPIFFE ID; nothing else. */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca.h"
#include "log.h"
#include "fuzz.h"

static rete_ca *ca;

/* Made once, before any input (libFuzzer's leak check counts per input). */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rete_log_level = RETE_LOG_ERROR;
    char dir[] = "/tmp/rete-fuzz-ca-XXXXXX";
    CHECK(mkdtemp(dir));
    rete_error e = {0};
    CHECK(rete_ca_init(dir, "cluster.local", &e) == RETE_OK);
    ca = rete_ca_load(dir, "cluster.local", &e);
    CHECK(ca);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    size_t cap = 4 * (size / 3 + 1) + 128;
    char *pem = malloc(cap + 2 * (size / 48 + 1));
    CHECK(pem);
    size_t n = (size_t)sprintf(pem, "-----BEGIN CERTIFICATE REQUEST-----\n");
    for (size_t i = 0; i < size; i += 48) {
        size_t chunk = size - i < 48 ? size - i : 48;
        n += (size_t)EVP_EncodeBlock((unsigned char *)pem + n, data + i, (int)chunk);
        pem[n++] = '\n';
    }
    n += (size_t)sprintf(pem + n, "-----END CERTIFICATE REQUEST-----\n");
    rete_error err = {0};
    int64_t not_after = 0;
    char *chain = rete_ca_sign_csr(ca, pem, n, "spiffe://cluster.local/ns/demo/sa/web", 3600, &not_after, &err);
    if (chain) {
        CHECK(err.code == RETE_OK && not_after > 0);
        CHECK(strstr(chain, "-----BEGIN CERTIFICATE-----") == chain);
        free(chain);
    } else {
        CHECK(err.code < 0 && err.msg[0]);
    }
    free(pem);
    return 0;
}
