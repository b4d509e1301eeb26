/* src/common/tls_hello.c: the server_name of real ClientHellos (OpenSSL's,
 * TLS 1.2 and 1.3, with and without SNI), every prefix "need more", and
 * refusals of broken lengths. Also fuzzed (tests/fuzz/fuzz_tls_detect.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "tls_hello.h"

/* The first flight OpenSSL's client writes (its ClientHello record). */
static size_t client_hello(const char *sni, int max_version, uint8_t *out, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
    SSL *ssl = SSL_new(ctx);
    BIO *in = BIO_new(BIO_s_mem()), *wr = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, wr);
    if (sni)
        assert_int_equal(SSL_set_tlsext_host_name(ssl, sni), 1);
    assert_true(SSL_connect(ssl) <= 0); /* wants the server's answer */
    int n = BIO_read(wr, out, (int)cap);
    assert_true(n > 0);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return (size_t)n;
}

static void test_real_hellos(void **state)
{
    (void)state;
    static const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    uint8_t buf[4096];
    for (size_t v = 0; v < 2; v++) {
        size_t n = client_hello("echo.test.svc.cluster.local", versions[v], buf, sizeof(buf));
        rete_view sni = RETE_VIEW_NULL;
        assert_int_equal(rete_tls_hello_sni(buf, n, &sni), RETE_HELLO_SNI);
        assert_true(rete_view_eq(sni, RETE_VIEW_LIT("echo.test.svc.cluster.local")));
        /* any prefix: need more, never a wrong answer */
        for (size_t k = 0; k < n; k++)
            assert_int_equal(rete_tls_hello_sni(buf, k, &sni), RETE_HELLO_MORE);
        /* without SNI */
        n = client_hello(NULL, versions[v], buf, sizeof(buf));
        assert_int_equal(rete_tls_hello_sni(buf, n, &sni), RETE_HELLO_NONE);
    }
}

static void test_refusals(void **state)
{
    (void)state;
    uint8_t buf[4096];
    size_t n = client_hello("db", TLS1_3_VERSION, buf, sizeof(buf));
    rete_view sni;
    uint8_t bad[4096];
    /* not a handshake record, not client_hello */
    memcpy(bad, buf, n);
    bad[0] = 0x17;
    assert_int_equal(rete_tls_hello_sni(bad, n, &sni), RETE_HELLO_BAD);
    memcpy(bad, buf, n);
    bad[5] = 0x02;
    assert_int_equal(rete_tls_hello_sni(bad, n, &sni), RETE_HELLO_BAD);
    /* a handshake length past the record: continues in the next one */
    memcpy(bad, buf, n);
    bad[6] = 0x01;
    assert_int_equal(rete_tls_hello_sni(bad, n, &sni), RETE_HELLO_NONE);
    /* a session id longer than 32 */
    memcpy(bad, buf, n);
    bad[5 + 4 + 2 + 32] = 33;
    assert_int_equal(rete_tls_hello_sni(bad, n, &sni), RETE_HELLO_BAD);
    /* the name must be a host name: "db" -> "d/" is none */
    memcpy(bad, buf, n);
    uint8_t *at = memmem(bad, n, "db", 2);
    assert_non_null(at);
    at[1] = '/';
    assert_int_equal(rete_tls_hello_sni(bad, n, &sni), RETE_HELLO_NONE);
    /* every single-byte corruption: an answer, never a read past the record
     * (ASan checks), and a found name lies inside the buffer */
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, buf, n);
        bad[i] ^= 0xff;
        rete_view s = RETE_VIEW_NULL;
        if (rete_tls_hello_sni(bad, n, &s) == RETE_HELLO_SNI)
            assert_true((const uint8_t *)s.p >= bad && (const uint8_t *)s.p + s.len <= bad + n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_hellos),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
