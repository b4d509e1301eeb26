/* Unit tests for src/common/tls.c: certificates are made by the test
 * (tls_testca.h) and bytes are pumped between sessions in memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tls.h"
#include "tls_testca.h"

#include <ftw.h>
#include <malloc.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TD "spiffe://cluster.local"
#define ID_SERVER TD "/ns/default/sa/server"
#define ID_CLIENT TD "/ns/default/sa/client"
#define PATHLEN 512

typedef struct pem {
    char crt[PATHLEN], key[PATHLEN];
} pem;

static struct fixture {
    char dir[PATHLEN];
    pem ca1, ca2, ca3; /* ca3 is the "new" root of a rotation */
    char bundle13[PATHLEN];
    pem server, client, other_ca, expired, rotated, two_ids, no_id, bad_id;
} fx;

static void write_leaf(const testca *ca, const char *name, const char *san, long nb, long na,
                       pem *out)
{
    testca leaf = testca_new_leaf(ca, san, nb, na);
    testca_write(fx.dir, name, &leaf, out->crt, out->key, PATHLEN);
    testca_free(&leaf);
}

static int setup(void **state)
{
    (void)state;
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/rete-tls-XXXXXX");
    if (!mkdtemp(fx.dir))
        return -1;
    testca ca1 = testca_new_root("rete root 1");
    testca ca2 = testca_new_root("someone else's root");
    testca ca3 = testca_new_root("rete root 2");
    testca_write(fx.dir, "ca1", &ca1, fx.ca1.crt, fx.ca1.key, PATHLEN);
    testca_write(fx.dir, "ca2", &ca2, fx.ca2.crt, fx.ca2.key, PATHLEN);
    testca_write(fx.dir, "ca3", &ca3, fx.ca3.crt, fx.ca3.key, PATHLEN);
    assert_true(snprintf(fx.bundle13, PATHLEN, "%s/bundle13.crt", fx.dir) < PATHLEN);
    testca both[2] = {ca1, ca3};
    testca_write_bundle(fx.bundle13, both, 2);

    long day = 86400;
    write_leaf(&ca1, "server", "URI:" ID_SERVER, -60, day, &fx.server);
    write_leaf(&ca1, "client", "URI:" ID_CLIENT ",DNS:client.example", -60, day, &fx.client);
    write_leaf(&ca2, "other", "URI:" TD "/ns/default/sa/intruder", -60, day, &fx.other_ca);
    write_leaf(&ca1, "expired", "URI:" TD "/ns/default/sa/old", -2 * day, -day, &fx.expired);
    write_leaf(&ca3, "rotated", "URI:" TD "/ns/default/sa/new", -60, day, &fx.rotated);
    write_leaf(&ca1, "two", "URI:" TD "/ns/a/sa/x,URI:" TD "/ns/b/sa/y", -60, day, &fx.two_ids);
    write_leaf(&ca1, "noid", "DNS:plain.example", -60, day, &fx.no_id);
    write_leaf(&ca1, "badid", "URI:spiffe://Cluster.Local/ns/x/", -60, day, &fx.bad_id);
    testca_free(&ca1);
    testca_free(&ca2);
    testca_free(&ca3);
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    (void)state;
    nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- pumping ----------------------------------------------------------- */

/* Feeds ciphertext; a session that already failed refuses it (RETE_ESTATE),
 * which is what a proxy would do too: drop and close. */
static void feed(rete_tls_session *to, const void *p, size_t n)
{
    rete_rc rc = rete_tls_feed(to, p, n);
    assert_true(rc == RETE_OK || rc == RETE_ESTATE);
}

/* Moves all pending ciphertext from one session to the other; alternates
 * between the copying and the zero-copy drain so both are exercised. */
static void xfer(rete_tls_session *from, rete_tls_session *to)
{
    static int flip;
    if (flip++ & 1) {
        const uint8_t *p;
        size_t n = rete_tls_out_peek(from, &p);
        if (n) {
            feed(to, p, n);
            rete_tls_consume_out(from, n);
        }
        return;
    }
    uint8_t buf[3000];
    size_t n;
    while ((n = rete_tls_take_out(from, buf, sizeof(buf))) > 0)
        feed(to, buf, n);
}

static void handshake(rete_tls_session *c, rete_tls_session *s, rete_rc *crc, rete_rc *src)
{
    *crc = *src = RETE_EAGAIN;
    for (int i = 0; i < 20 && (*crc == RETE_EAGAIN || *src == RETE_EAGAIN); i++) {
        if (*crc == RETE_EAGAIN)
            *crc = rete_tls_handshake(c);
        xfer(c, s);
        if (*src == RETE_EAGAIN)
            *src = rete_tls_handshake(s);
        xfer(s, c);
    }
}

static rete_tls_ctx *server_ctx(const pem *p, const char *ca)
{
    rete_error err = {0};
    rete_tls_ctx *ctx = rete_tls_mesh_server_ctx(p->crt, p->key, ca, &err);
    if (!ctx)
        fail_msg("server ctx: %s", err.msg);
    return ctx;
}

static rete_tls_ctx *client_ctx(const pem *p, const char *ca)
{
    rete_error err = {0};
    rete_tls_ctx *ctx = rete_tls_mesh_client_ctx(p->crt, p->key, ca, &err);
    if (!ctx)
        fail_msg("client ctx: %s", err.msg);
    return ctx;
}

/* One mesh handshake between a client with `cp` and a server with `sp`;
 * returns both sessions for further checks. */
static void mesh_pair(const pem *cp, const char *cca, const pem *sp, const char *sca,
                      const char *expected, rete_tls_session **c, rete_tls_session **s,
                      rete_rc *crc, rete_rc *src)
{
    rete_tls_ctx *cctx = client_ctx(cp, cca), *sctx = server_ctx(sp, sca);
    *c = rete_tls_session_new_client(cctx, expected, "server.default.svc");
    *s = rete_tls_session_new_server(sctx);
    assert_non_null(*c);
    assert_non_null(*s);
    /* Sessions hold their own references: the config may drop the contexts. */
    rete_tls_ctx_unref(cctx);
    rete_tls_ctx_unref(sctx);
    handshake(*c, *s, crc, src);
}

/* Reads everything available from s into out (append at *off). */
static void drain_plain(rete_tls_session *s, uint8_t *out, size_t cap, size_t *off)
{
    for (;;) {
        size_t n = 0;
        rete_rc rc = rete_tls_read(s, out + *off, cap - *off, &n);
        if (rc == RETE_EAGAIN)
            return;
        assert_int_equal(rc, RETE_OK);
        if (n == 0)
            return;
        *off += n;
    }
}

/* ---- a raw OpenSSL client, for what our client API refuses to do ------- */

typedef struct raw {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio;
} raw;

static raw raw_client(const char *ca, const pem *p, const unsigned char *alpn, unsigned alpnlen)
{
    raw r;
    r.ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(r.ctx);
    if (ca) {
        assert_int_equal(SSL_CTX_load_verify_file(r.ctx, ca), 1);
        SSL_CTX_set_verify(r.ctx, SSL_VERIFY_PEER, NULL);
    }
    if (p) {
        assert_int_equal(SSL_CTX_use_certificate_file(r.ctx, p->crt, SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(r.ctx, p->key, SSL_FILETYPE_PEM), 1);
    }
    if (alpn)
        assert_int_equal(SSL_CTX_set_alpn_protos(r.ctx, alpn, alpnlen), 0);
    r.ssl = SSL_new(r.ctx);
    r.rbio = BIO_new(BIO_s_mem());
    r.wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(r.rbio, -1);
    SSL_set_bio(r.ssl, r.rbio, r.wbio);
    SSL_set_connect_state(r.ssl);
    return r;
}

static void raw_free(raw *r)
{
    SSL_free(r->ssl);
    SSL_CTX_free(r->ctx);
}

/* Handshake of a raw client against our server session; returns the server's
 * result and sets *client_ok. */
static rete_rc raw_handshake(raw *r, rete_tls_session *s, bool *client_ok)
{
    rete_rc src = RETE_EAGAIN;
    *client_ok = false;
    for (int i = 0; i < 20; i++) {
        if (SSL_do_handshake(r->ssl) == 1)
            *client_ok = true;
        ERR_clear_error();
        char *p;
        long n = BIO_get_mem_data(r->wbio, &p);
        if (n > 0) {
            feed(s, p, (size_t)n);
            (void)BIO_reset(r->wbio);
        }
        if (src == RETE_EAGAIN)
            src = rete_tls_handshake(s);
        uint8_t buf[4096];
        size_t m;
        while ((m = rete_tls_take_out(s, buf, sizeof(buf))) > 0)
            BIO_write(r->rbio, buf, (int)m);
        if (src != RETE_EAGAIN && *client_ok)
            break;
    }
    return src;
}

/* ---- tests ------------------------------------------------------------- */

static void test_mutual_handshake_alpn_and_ids(void **state)
{
    (void)state;
    rete_tls_session *c, *s;
    rete_rc crc, src;
    mesh_pair(&fx.client, fx.ca1.crt, &fx.server, fx.ca1.crt, ID_SERVER, &c, &s, &crc, &src);
    assert_int_equal(crc, RETE_OK);
    assert_int_equal(src, RETE_OK);
    assert_true(rete_tls_handshake_done(c) && rete_tls_handshake_done(s));
    assert_string_equal(rete_tls_alpn(c), "h2");
    assert_string_equal(rete_tls_alpn(s), "h2");
    char id[RETE_SPIFFE_ID_MAX + 1];
    assert_int_equal(rete_tls_peer_spiffe_id(s, id, sizeof(id)), RETE_OK);
    assert_string_equal(id, ID_CLIENT);
    assert_int_equal(rete_tls_peer_spiffe_id(c, id, sizeof(id)), RETE_OK);
    assert_string_equal(id, ID_SERVER);
    assert_string_equal(rete_tls_peer_id(s), ID_CLIENT);
    assert_int_equal(rete_tls_peer_spiffe_id(s, id, 10), RETE_ELIMIT);
    assert_string_equal(rete_tls_session_error(s), "");
    assert_int_equal(rete_tls_pending_out(c), 0);
    assert_int_equal(rete_tls_handshake(s), RETE_OK); /* idempotent */
    rete_tls_session_free(c);
    rete_tls_session_free(s);
}

/* Records split at every byte boundary: each handshake step must cope with
 * partial input by asking for more. */
static void test_handshake_byte_by_byte(void **state)
{
    (void)state;
    rete_tls_ctx *cctx = client_ctx(&fx.client, fx.ca1.crt),
                 *sctx = server_ctx(&fx.server, fx.ca1.crt);
    rete_tls_session *c = rete_tls_session_new_client(cctx, ID_SERVER, NULL);
    rete_tls_session *s = rete_tls_session_new_server(sctx);
    rete_rc crc = RETE_EAGAIN, src = RETE_EAGAIN;
    int rounds = 0;
    for (; rounds < 100000 && (crc == RETE_EAGAIN || src == RETE_EAGAIN); rounds++) {
        uint8_t b;
        if (crc == RETE_EAGAIN)
            crc = rete_tls_handshake(c);
        if (rete_tls_take_out(c, &b, 1) == 1)
            feed(s, &b, 1);
        if (src == RETE_EAGAIN)
            src = rete_tls_handshake(s);
        if (rete_tls_take_out(s, &b, 1) == 1)
            feed(c, &b, 1);
    }
    assert_int_equal(crc, RETE_OK);
    assert_int_equal(src, RETE_OK);
    assert_true(rounds > 500);
    assert_string_equal(rete_tls_peer_id(s), ID_CLIENT);
    rete_tls_session_free(c);
    rete_tls_session_free(s);
    rete_tls_ctx_unref(cctx);
    rete_tls_ctx_unref(sctx);
}

static void test_state_errors(void **state)
{
    (void)state;
    rete_tls_ctx *sctx = server_ctx(&fx.server, fx.ca1.crt);
    rete_tls_ctx *cctx = client_ctx(&fx.client, fx.ca1.crt);
    rete_tls_session *s = rete_tls_session_new_server(sctx);
    char id[64];
    size_t n;
    assert_int_equal(rete_tls_peer_spiffe_id(s, id, sizeof(id)), RETE_ESTATE);
    assert_int_equal(rete_tls_write(s, "x", 1), RETE_ESTATE);
    assert_int_equal(rete_tls_read(s, id, sizeof(id), &n), RETE_ESTATE);
    assert_int_equal(rete_tls_shutdown(s), RETE_ESTATE);
    assert_int_equal(rete_tls_handshake(s), RETE_EAGAIN);
    assert_null(rete_tls_peer_id(s));
    /* Wrong kinds of context, and an invalid expected ID. */
    assert_null(rete_tls_session_new_server(cctx));
    assert_null(rete_tls_session_new_client(sctx, NULL, NULL));
    assert_null(rete_tls_session_new_client(cctx, "spiffe://td/bad/", NULL));
    /* Garbage instead of a ClientHello. */
    assert_int_equal(rete_tls_feed(s, "GET / HTTP/1.1\r\n\r\n", 18), RETE_OK);
    assert_int_equal(rete_tls_handshake(s), RETE_EIO);
    assert_true(strlen(rete_tls_session_error(s)) > 0);
    assert_int_equal(rete_tls_feed(s, "x", 1), RETE_ESTATE);
    rete_tls_session_free(s);
    rete_tls_ctx_unref(rete_tls_ctx_ref(sctx));
    rete_tls_ctx_unref(sctx);
    rete_tls_ctx_unref(cctx);
    rete_tls_ctx_unref(NULL);
}

static void test_ctx_errors(void **state)
{
    (void)state;
    rete_error err = {0};
    char missing[PATHLEN];
    assert_true(snprintf(missing, sizeof(missing), "%s/missing.crt", fx.dir) < PATHLEN);
    assert_null(rete_tls_mesh_server_ctx(missing, fx.server.key, fx.ca1.crt, &err));
    assert_int_equal(err.code, RETE_EIO);
    assert_non_null(strstr(err.msg, missing));
    assert_null(rete_tls_mesh_client_ctx(fx.client.crt, fx.server.key, fx.ca1.crt, &err));
    assert_int_equal(err.code, RETE_EINVAL);
    assert_non_null(strstr(err.msg, "does not match"));
    assert_non_null(strstr(err.msg, fx.server.key));
    assert_null(rete_tls_mesh_server_ctx(fx.server.crt, fx.server.key, missing, &err));
    assert_non_null(strstr(err.msg, "CA bundle"));
    assert_null(rete_tls_app_server_ctx(fx.server.crt, fx.server.crt, &err));
    assert_non_null(strstr(err.msg, "key file"));
    assert_null(rete_tls_app_server_ctx(fx.server.crt, fx.server.crt, NULL)); /* no error wanted */
    rete_error fresh = {0};
    rete_tls_ctx *ok = rete_tls_app_server_ctx(fx.server.crt, fx.server.key, &fresh);
    assert_non_null(ok);
    assert_int_equal(fresh.code, RETE_OK); /* success leaves the error untouched */
    assert_string_equal(fresh.msg, "");
    rete_tls_ctx_unref(ok);
}

#define BIG (1024 * 1024)

static void test_app_data_both_ways(void **state)
{
    (void)state;
    rete_tls_session *c, *s;
    rete_rc crc, src;
    mesh_pair(&fx.client, fx.ca1.crt, &fx.server, fx.ca1.crt, NULL, &c, &s, &crc, &src);
    assert_int_equal(crc, RETE_OK);
    assert_int_equal(src, RETE_OK);

    uint8_t *out = malloc(BIG), *in = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        out[i] = (uint8_t)(i * 7 + (i >> 11));
    size_t got = 0;
    uint8_t buf[100];
    size_t n;
    assert_int_equal(rete_tls_read(s, buf, sizeof(buf), &n), RETE_EAGAIN);
    assert_int_equal(rete_tls_write(c, "", 0), RETE_OK);

    /* Client -> server in 16 KiB pieces, drained as it goes. */
    for (size_t off = 0; off < BIG; off += 16384) {
        assert_int_equal(rete_tls_write(c, out + off, 16384), RETE_OK);
        xfer(c, s);
        drain_plain(s, in, BIG, &got);
    }
    assert_int_equal(got, BIG);
    assert_memory_equal(in, out, BIG);

    /* Server -> client in odd pieces, all buffered before one transfer. */
    got = 0;
    memset(in, 0, BIG);
    for (size_t off = 0; off < BIG;) {
        size_t len = BIG - off < 7001 ? BIG - off : 7001;
        assert_int_equal(rete_tls_write(s, out + off, len), RETE_OK);
        off += len;
    }
    assert_true(rete_tls_pending_out(s) > BIG);
    xfer(s, c);
    assert_int_equal(rete_tls_pending_out(s), 0);
    drain_plain(c, in, BIG, &got);
    assert_int_equal(got, BIG);
    assert_memory_equal(in, out, BIG);
    free(out);
    free(in);
    rete_tls_session_free(c);
    rete_tls_session_free(s);
}

static void test_close_notify(void **state)
{
    (void)state;
    rete_tls_session *c, *s;
    rete_rc crc, src;
    mesh_pair(&fx.client, fx.ca1.crt, &fx.server, fx.ca1.crt, NULL, &c, &s, &crc, &src);
    assert_int_equal(src, RETE_OK);
    assert_int_equal(rete_tls_write(c, "bye", 3), RETE_OK);
    assert_int_equal(rete_tls_shutdown(c), RETE_OK);
    assert_int_equal(rete_tls_shutdown(c), RETE_OK);
    assert_int_equal(rete_tls_write(c, "late", 4), RETE_ESTATE);
    xfer(c, s);
    uint8_t buf[16];
    size_t n = 0;
    assert_int_equal(rete_tls_read(s, buf, sizeof(buf), &n), RETE_OK);
    assert_int_equal(n, 3);
    assert_false(rete_tls_peer_closed(s));
    assert_int_equal(rete_tls_read(s, buf, sizeof(buf), &n), RETE_OK);
    assert_int_equal(n, 0);
    assert_true(rete_tls_peer_closed(s));
    assert_int_equal(rete_tls_shutdown(s), RETE_OK);
    xfer(s, c);
    assert_int_equal(rete_tls_read(c, buf, sizeof(buf), &n), RETE_OK);
    assert_int_equal(n, 0);
    assert_true(rete_tls_peer_closed(c));
    rete_tls_session_free(c);
    rete_tls_session_free(s);
}

static void test_client_without_cert_refused(void **state)
{
    (void)state;
    rete_tls_ctx *sctx = server_ctx(&fx.server, fx.ca1.crt);
    rete_tls_session *s = rete_tls_session_new_server(sctx);
    raw r = raw_client(fx.ca1.crt, NULL, (const unsigned char *)"\x02h2", 3);
    bool client_ok;
    assert_int_equal(raw_handshake(&r, s, &client_ok), RETE_EIO);
    assert_non_null(strstr(rete_tls_session_error(s), "certificate"));
    assert_null(rete_tls_peer_id(s));
    raw_free(&r);
    rete_tls_session_free(s);
    rete_tls_ctx_unref(sctx);
}

static void test_client_without_h2_refused(void **state)
{
    (void)state;
    rete_tls_ctx *sctx = server_ctx(&fx.server, fx.ca1.crt);
    const struct {
        const unsigned char *alpn;
        unsigned len;
    } cases[] = {{NULL, 0}, {(const unsigned char *)"\x08http/1.1", 9}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rete_tls_session *s = rete_tls_session_new_server(sctx);
        raw r = raw_client(fx.ca1.crt, &fx.client, cases[i].alpn, cases[i].len);
        bool client_ok;
        assert_int_equal(raw_handshake(&r, s, &client_ok), RETE_EIO);
        assert_false(client_ok);
        assert_non_null(strstr(rete_tls_session_error(s), "ALPN"));
        raw_free(&r);
        rete_tls_session_free(s);
    }
    rete_tls_ctx_unref(sctx);
}

static void test_app_server_alpn(void **state)
{
    (void)state;
    rete_error err = {0};
    rete_tls_ctx *ctx = rete_tls_app_server_ctx(fx.server.crt, fx.server.key, &err);
    assert_non_null(ctx);
    const struct {
        const char *alpn;
        unsigned len;
        const char *want;
    } cases[] = {
        {"\x08http/1.1\x02h2", 12, "h2"},
        {"\x08http/1.1", 9, "http/1.1"},
        {"\x06spdy/3", 7, ""},
        {NULL, 0, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rete_tls_session *s = rete_tls_session_new_server(ctx);
        raw r = raw_client(NULL, NULL, (const unsigned char *)cases[i].alpn, cases[i].len);
        bool client_ok;
        assert_int_equal(raw_handshake(&r, s, &client_ok), RETE_OK);
        assert_true(client_ok);
        assert_string_equal(rete_tls_alpn(s), cases[i].want);
        char id[64];
        assert_int_equal(rete_tls_peer_spiffe_id(s, id, sizeof(id)), RETE_ENOTFOUND);
        raw_free(&r);
        rete_tls_session_free(s);
    }
    rete_tls_ctx_unref(ctx);
}

/* The server refuses the client's certificate; in TLS 1.3 the client has
 * already finished its handshake and learns of it from the alert on read. */
static void expect_client_cert_refused(const pem *cp, const char *server_reason)
{
    rete_tls_session *c, *s;
    rete_rc crc, src;
    mesh_pair(cp, fx.ca1.crt, &fx.server, fx.ca1.crt, NULL, &c, &s, &crc, &src);
    assert_int_equal(src, RETE_EIO);
    if (!strstr(rete_tls_session_error(s), server_reason))
        fail_msg("server error \"%s\" lacks \"%s\"", rete_tls_session_error(s), server_reason);
    assert_int_not_equal(crc, RETE_EAGAIN);
    if (crc == RETE_OK) {
        uint8_t buf[16];
        size_t n;
        assert_int_equal(rete_tls_read(c, buf, sizeof(buf), &n), RETE_EIO);
    }
    assert_true(strlen(rete_tls_session_error(c)) > 0);
    rete_tls_session_free(c);
    rete_tls_session_free(s);
}

static void test_client_cert_from_other_ca_refused(void **state)
{
    (void)state;
    expect_client_cert_refused(&fx.other_ca, "unable to get local issuer certificate");
}

static void test_expired_client_cert_refused(void **state)
{
    (void)state;
    expect_client_cert_refused(&fx.expired, "certificate has expired");
}

static void test_client_cert_bad_spiffe_refused(void **state)
{
    (void)state;
    expect_client_cert_refused(&fx.two_ids, "more than one spiffe:// URI SAN");
    expect_client_cert_refused(&fx.no_id, "no spiffe:// URI SAN");
    expect_client_cert_refused(&fx.bad_id, "malformed SPIFFE ID");
}

static void test_expired_server_cert_refused(void **state)
{
    (void)state;
    rete_tls_session *c, *s;
    rete_rc crc, src;
    mesh_pair(&fx.client, fx.ca1.crt, &fx.expired, fx.ca1.crt, NULL, &c, &s, &crc, &src);
    assert_int_equal(crc, RETE_EIO);
    assert_non_null(strstr(rete_tls_session_error(c), "certificate has expired"));
    assert_int_equal(src, RETE_EIO); /* got the client's alert */
    rete_tls_session_free(c);
    rete_tls_session_free(s);
}

static void test_server_from_other_ca_refused(void **state)
{
    (void)state;
    rete_tls_session *c, *s;
    rete_rc crc, src;
    mesh_pair(&fx.client, fx.ca1.crt, &fx.other_ca, fx.ca1.crt, NULL, &c, &s, &crc, &src);
    assert_int_equal(crc, RETE_EIO);
    assert_non_null(strstr(rete_tls_session_error(c), "peer certificate rejected"));
    rete_tls_session_free(c);
    rete_tls_session_free(s);
}

static void test_unexpected_server_id_refused(void **state)
{
    (void)state;
    rete_tls_session *c, *s;
    rete_rc crc, src;
    mesh_pair(&fx.client, fx.ca1.crt, &fx.server, fx.ca1.crt, TD "/ns/default/sa/db", &c, &s, &crc,
              &src);
    assert_int_equal(crc, RETE_EIO);
    const char *e = rete_tls_session_error(c);
    assert_non_null(strstr(e, "not the expected " TD "/ns/default/sa/db"));
    assert_non_null(strstr(e, ID_SERVER));
    assert_int_equal(src, RETE_EIO);
    assert_int_equal(rete_tls_write(c, "x", 1), RETE_EIO);
    rete_tls_session_free(c);
    rete_tls_session_free(s);
}

static void test_rotation_bundle_two_roots(void **state)
{
    (void)state;
    const pem *clients[] = {&fx.client, &fx.rotated};
    for (size_t i = 0; i < 2; i++) {
        rete_tls_session *c, *s;
        rete_rc crc, src;
        mesh_pair(clients[i], fx.bundle13, &fx.server, fx.bundle13, ID_SERVER, &c, &s, &crc, &src);
        assert_int_equal(crc, RETE_OK);
        assert_int_equal(src, RETE_OK);
        rete_tls_session_free(c);
        rete_tls_session_free(s);
    }
    /* The server on the new root, a client still trusting only the old one. */
    rete_tls_session *c, *s;
    rete_rc crc, src;
    mesh_pair(&fx.client, fx.ca1.crt, &fx.rotated, fx.bundle13, NULL, &c, &s, &crc, &src);
    assert_int_equal(crc, RETE_EIO);
    rete_tls_session_free(c);
    rete_tls_session_free(s);
    /* And one trusting both. */
    mesh_pair(&fx.client, fx.bundle13, &fx.rotated, fx.bundle13, TD "/ns/default/sa/new", &c, &s,
              &crc, &src);
    assert_int_equal(crc, RETE_OK);
    assert_int_equal(src, RETE_OK);
    assert_string_equal(rete_tls_peer_id(c), TD "/ns/default/sa/new");
    rete_tls_session_free(c);
    rete_tls_session_free(s);
}

static bool valid(const char *id)
{
    return rete_spiffe_id_valid(id, strlen(id));
}

static void test_spiffe_id_rules(void **state)
{
    (void)state;
    assert_true(valid("spiffe://cluster.local/ns/default/sa/web"));
    assert_true(valid("spiffe://example.org"));
    assert_true(valid("spiffe://my_td-1.example/Path.With-Caps_0"));
    assert_false(valid(""));
    assert_false(valid("spiffe://"));
    assert_false(valid("spiffe:///ns/a"));
    assert_false(valid("SPIFFE://td/ns/a"));
    assert_false(valid("https://td/ns/a"));
    assert_false(valid("spiffe://Upper.td/ns/a"));
    assert_false(valid("spiffe://td:8080/ns/a"));
    assert_false(valid("spiffe://user@td/ns/a"));
    assert_false(valid("spiffe://td/"));
    assert_false(valid("spiffe://td/ns/a/"));
    assert_false(valid("spiffe://td//ns"));
    assert_false(valid("spiffe://td/ns/./a"));
    assert_false(valid("spiffe://td/ns/../a"));
    assert_true(valid("spiffe://td/ns/.../a"));
    assert_false(valid("spiffe://td/ns/a?x=1"));
    assert_false(valid("spiffe://td/ns/a#frag"));
    assert_false(valid("spiffe://td/ns/a%20b"));
    assert_false(valid("spiffe://td/ns/a b"));
    assert_false(rete_spiffe_id_valid("spiffe://td/a\0b", 15));
    assert_false(rete_spiffe_id_valid(NULL, 0));
    char longid[RETE_SPIFFE_ID_MAX + 2];
    memcpy(longid, "spiffe://td/", 12);
    memset(longid + 12, 'a', sizeof(longid) - 13);
    longid[sizeof(longid) - 1] = '\0';
    assert_int_equal(strlen(longid), RETE_SPIFFE_ID_MAX + 1);
    assert_false(valid(longid));
    longid[RETE_SPIFFE_ID_MAX] = '\0';
    assert_true(valid(longid));
}

static void test_spiffe_match(void **state)
{
    (void)state;
    const char *id = "spiffe://cluster.local/ns/default/sa/web";
    assert_string_equal(rete_spiffe_principal(id), "cluster.local/ns/default/sa/web");
    assert_string_equal(rete_spiffe_principal("cluster.local/ns/x"), "cluster.local/ns/x");
    assert_true(rete_spiffe_match("cluster.local/ns/default/sa/web", id));
    assert_true(rete_spiffe_match(id, id));
    assert_true(rete_spiffe_match(id, "cluster.local/ns/default/sa/web"));
    assert_false(rete_spiffe_match("cluster.local/ns/default/sa/we", id));
    assert_false(rete_spiffe_match("cluster.local/ns/default/sa/webx", id));
    assert_true(rete_spiffe_match("*", id));
    assert_false(rete_spiffe_match("*", ""));
    assert_false(rete_spiffe_match("*", "spiffe://"));
    assert_false(rete_spiffe_match("*", NULL));
    assert_false(rete_spiffe_match(NULL, id));
    assert_true(rete_spiffe_match("cluster.local/ns/default/*", id));
    assert_true(rete_spiffe_match("spiffe://cluster.local/ns/default/*", id));
    assert_false(rete_spiffe_match("cluster.local/ns/prod/*", id));
    assert_true(rete_spiffe_match("*/sa/web", id));
    assert_true(rete_spiffe_match("*web", id));
    assert_false(rete_spiffe_match("*/sa/api", id));
    /* A '*' inside is literal, as in Istio. */
    assert_false(rete_spiffe_match("cluster.local/*/sa/web", id));
    assert_true(rete_spiffe_match("a/*/b", "a/*/b"));
    assert_false(rete_spiffe_match("", id));
}

static void test_client_hello_detector(void **state)
{
    (void)state;
    const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc};
    bool more;
    assert_true(rete_tls_looks_like_client_hello(hello, sizeof(hello), &more));
    assert_false(more);
    assert_true(rete_tls_looks_like_client_hello(hello, 6, &more));
    for (size_t n = 0; n < 6; n++) {
        assert_false(rete_tls_looks_like_client_hello(hello, n, &more));
        assert_true(more);
    }
    const uint8_t *bad[] = {
        (const uint8_t *)"\x17\x03\x03\x00\x10\x01", /* application data */
        (const uint8_t *)"\x16\x02\x00\x00\x10\x01", /* SSLv2-ish version */
        (const uint8_t *)"\x16\x03\x05\x00\x10\x01", /* unknown minor */
        (const uint8_t *)"\x16\x03\x01\x00\x00\x01", /* empty record */
        (const uint8_t *)"\x16\x03\x01\x40\x01\x01", /* > 2^14 */
        (const uint8_t *)"\x16\x03\x03\x00\x10\x02", /* ServerHello */
        (const uint8_t *)"GET / ",
        (const uint8_t *)"PRI * ",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(rete_tls_looks_like_client_hello(bad[i], 6, &more));
        assert_false(more);
    }
    assert_false(rete_tls_looks_like_client_hello((const uint8_t *)"G", 1, &more));
    assert_false(more);
    /* Bytes produced by a real client. */
    rete_tls_ctx *cctx = client_ctx(&fx.client, fx.ca1.crt);
    rete_tls_session *c = rete_tls_session_new_client(cctx, NULL, NULL);
    assert_int_equal(rete_tls_handshake(c), RETE_EAGAIN);
    const uint8_t *p;
    size_t n = rete_tls_out_peek(c, &p);
    assert_true(rete_tls_looks_like_client_hello(p, n, &more));
    rete_tls_session_free(c);
    rete_tls_ctx_unref(cctx);
}

/* After the handshake reted's stream sessions (control-plane contexts)
 * give back what the peer's certificates hold beyond what reted reads: its
 * SPIFFE ID, its certificate's facts and the root it chains to are the same
 * after, and the session goes on carrying data both ways. Nothing to shed
 * before the handshake. */
static void test_shed_peer_certs(void **state)
{
    (void)state;
    rete_tls_session *c, *s;
    rete_error err = {0};
    rete_tls_ctx *sctx = rete_tls_cp_server_ctx(fx.server.crt, fx.server.key, fx.ca1.crt, &err);
    rete_tls_ctx *cctx = rete_tls_cp_client_ctx(fx.client.crt, fx.client.key, fx.ca1.crt, &err);
    assert_non_null(sctx);
    assert_non_null(cctx);
    rete_tls_session *fresh = rete_tls_session_new_server(sctx);
    assert_false(rete_tls_session_shed_peer_certs(fresh));
    rete_tls_session_free(fresh);
    c = rete_tls_session_new_client(cctx, NULL, NULL);
    s = rete_tls_session_new_server(sctx);
    rete_tls_ctx_unref(cctx);
    rete_tls_ctx_unref(sctx);
    rete_rc crc, src;
    handshake(c, s, &crc, &src);
    assert_int_equal(crc, RETE_OK);
    assert_int_equal(src, RETE_OK);
    char id[256], id2[256];
    rete_cert_facts f1, f2;
    assert_int_equal(rete_tls_peer_spiffe_id(s, id, sizeof(id)), RETE_OK);
    assert_int_equal(rete_tls_peer_cert_facts(s, &f1), RETE_OK);
    assert_true(f1.has_root);
    assert_true(rete_tls_session_shed_peer_certs(s));
    assert_true(rete_tls_session_shed_peer_certs(s)); /* again: harmless */
    assert_int_equal(rete_tls_peer_spiffe_id(s, id2, sizeof(id2)), RETE_OK);
    assert_string_equal(id, id2);
    assert_int_equal(rete_tls_peer_cert_facts(s, &f2), RETE_OK);
    assert_memory_equal(&f1, &f2, sizeof(f1));
    uint8_t buf[64];
    size_t n = 0;
    assert_int_equal(rete_tls_write(c, "ping\n", 5), RETE_OK);
    xfer(c, s);
    assert_int_equal(rete_tls_read(s, buf, sizeof(buf), &n), RETE_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "ping\n", 5);
    assert_int_equal(rete_tls_write(s, "pong\n", 5), RETE_OK);
    xfer(s, c);
    assert_int_equal(rete_tls_read(c, buf, sizeof(buf), &n), RETE_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "pong\n", 5);
    rete_tls_session_free(c);
    rete_tls_session_free(s);
}

/* Not a pass/fail benchmark: measures the heap held by idle server sessions
 * after a handshake and keeps it under a generous ceiling. */
static void test_idle_session_memory(void **state)
{
    (void)state;
    enum { N = 1000 };
    rete_tls_ctx *cctx = client_ctx(&fx.client, fx.ca1.crt);
    rete_tls_ctx *sctx = server_ctx(&fx.server, fx.ca1.crt);
    rete_tls_session **ss = calloc(N, sizeof(*ss));
    rete_rc crc, src;
    for (int warm = 0; warm < 2; warm++) { /* OpenSSL's lazily built tables */
        rete_tls_session *c = rete_tls_session_new_client(cctx, NULL, NULL);
        rete_tls_session *s = rete_tls_session_new_server(sctx);
        handshake(c, s, &crc, &src);
        rete_tls_session_free(c);
        rete_tls_session_free(s);
    }
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < N; i++) {
        rete_tls_session *c = rete_tls_session_new_client(cctx, NULL, NULL);
        ss[i] = rete_tls_session_new_server(sctx);
        handshake(c, ss[i], &crc, &src);
        assert_int_equal(src, RETE_OK);
        rete_tls_session_free(c);
    }
    struct mallinfo2 after = mallinfo2();
    long delta = (long)after.uordblks - (long)before.uordblks;
    print_message("idle server session after handshake: %ld bytes of heap each (%d sessions)\n",
                  delta / N, N);
    if (before.uordblks > 0) /* 0 under ASan, whose allocator mallinfo cannot see */
        assert_true(delta / N < 32 * 1024);
    /* and with its peer's certificates shed, as reted's streams do */
    for (int i = 0; i < N; i++)
        assert_true(rete_tls_session_shed_peer_certs(ss[i]));
    struct mallinfo2 shed = mallinfo2();
    long delta_shed = (long)shed.uordblks - (long)before.uordblks;
    print_message("the same with its peer's certificates shed: %ld bytes each\n", delta_shed / N);
    if (before.uordblks > 0)
        assert_true(delta_shed < delta);
    for (int i = 0; i < N; i++)
        rete_tls_session_free(ss[i]);
    free(ss);
    rete_tls_ctx_unref(cctx);
    rete_tls_ctx_unref(sctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutual_handshake_alpn_and_ids),
        cmocka_unit_test(test_handshake_byte_by_byte),
        cmocka_unit_test(test_state_errors),
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_app_data_both_ways),
        cmocka_unit_test(test_close_notify),
        cmocka_unit_test(test_shed_peer_certs),
        cmocka_unit_test(test_client_without_cert_refused),
        cmocka_unit_test(test_client_without_h2_refused),
        cmocka_unit_test(test_app_server_alpn),
        cmocka_unit_test(test_client_cert_from_other_ca_refused),
        cmocka_unit_test(test_expired_client_cert_refused),
        cmocka_unit_test(test_client_cert_bad_spiffe_refused),
        cmocka_unit_test(test_expired_server_cert_refused),
        cmocka_unit_test(test_server_from_other_ca_refused),
        cmocka_unit_test(test_unexpected_server_id_refused),
        cmocka_unit_test(test_rotation_bundle_two_roots),
        cmocka_unit_test(test_spiffe_id_rules),
        cmocka_unit_test(test_spiffe_match),
        cmocka_unit_test(test_client_hello_detector),
        cmocka_unit_test(test_idle_session_memory),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
