/* OpenSSL 3 TLS over in-memory buffers, with SPIFFE identity checks. See
 * tls.h for the contract.
 *
 * Instead of OpenSSL's mem BIO we give each session a tiny BIO of our own over
 * two linear buffers (struct tls_buf): a mem BIO cannot drop bytes without
 * copying them out (so no zero-copy peek/consume) and never gives back its
 * largest allocation, whereas ours frees a buffer as soon as it is drained
 * (HAProxy's rule: an empty buffer is a free buffer), so an idle session
 * holds no I/O buffer at all; with SSL_MODE_RELEASE_BUFFERS, OpenSSL's own
 * record buffers go too. The price is one malloc/free pair per burst, small
 * beside the AEAD work and the syscalls of that burst. */
#include "tls.h"

#include "alloc.h"
#include "error.h"
#include "vec.h"
#include "view.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CP_*: the control plane's contexts: no ALPN, and the server does not
 * require a client certificate. */
enum tls_kind {
    TLS_MESH_SERVER,
    TLS_MESH_CLIENT,
    TLS_APP_SERVER,
    TLS_CP_SERVER,
    TLS_CP_CLIENT,
    TLS_ORIGINATE,
};

struct rete_tls_ctx {
    SSL_CTX *ssl;
    enum tls_kind kind;
    atomic_int refs;
};

/* Bytes [head, len) of p are live; cap is the allocation. */
struct tls_buf {
    uint8_t *p;
    size_t head, len, cap;
};

/* First allocation: one full TLS record plus header, so a burst of records
 * rarely needs more than one or two reallocations. */
#define TLS_BUF_MIN (16384 + 5 + 256)

struct rete_tls_session {
    SSL *ssl;
    rete_tls_ctx *ctx;
    struct tls_buf in, out;
    char *expected_id; /* client: required server SPIFFE ID, or NULL */
    char *peer_id;     /* verified peer SPIFFE ID, or NULL */
    char *err;         /* first fatal error, or NULL */
    bool done;         /* handshake complete */
    bool failed;
};

/* ---- buffers and the BIO over them ------------------------------------- */

static size_t buf_live(const struct tls_buf *b)
{
    return b->len - b->head;
}

static void buf_append(struct tls_buf *b, const void *data, size_t n)
{
    if (n == 0)
        return;
    if (b->cap - b->len < n && b->head > 0) {
        memmove(b->p, b->p + b->head, b->len - b->head);
        b->len -= b->head;
        b->head = 0;
    }
    RETE_GROW(b->p, b->cap, b->len + n, TLS_BUF_MIN);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_consume(struct tls_buf *b, size_t n)
{
    if (n > buf_live(b))
        n = buf_live(b);
    b->head += n;
    if (b->head == b->len) {
        rete_free(&b->p);
        b->head = b->len = b->cap = 0;
    }
}

static void buf_release(struct tls_buf *b)
{
    rete_free(&b->p);
    b->head = b->len = b->cap = 0;
}

static int bio_write_ex(BIO *bio, const char *data, size_t n, size_t *written)
{
    buf_append(BIO_get_data(bio), data, n);
    *written = n;
    return 1;
}

static int bio_read_ex(BIO *bio, char *data, size_t n, size_t *readbytes)
{
    struct tls_buf *b = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    size_t live = buf_live(b);
    if (live == 0) {
        /* Not end of stream: the socket owner will feed more. */
        BIO_set_retry_read(bio);
        *readbytes = 0;
        return 0;
    }
    if (n > live)
        n = live;
    memcpy(data, b->p + b->head, n);
    buf_consume(b, n);
    *readbytes = n;
    return 1;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    struct tls_buf *b = BIO_get_data(bio);
    switch (cmd) {
    case BIO_CTRL_PENDING:
        return (long)buf_live(b);
    case BIO_CTRL_WPENDING:
        return 0;
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_method_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void)
{
    /* Process lifetime; never freed. */
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "rete_tls_buf");
    if (!bio_method || !BIO_meth_set_write_ex(bio_method, bio_write_ex) ||
        !BIO_meth_set_read_ex(bio_method, bio_read_ex) ||
        !BIO_meth_set_ctrl(bio_method, bio_ctrl)) {
        fprintf(stderr, "rete: cannot create the TLS BIO method\n");
        abort();
    }
}

static BIO *bio_new(struct tls_buf *b)
{
    pthread_once(&bio_method_once, bio_method_init);
    BIO *bio = BIO_new(bio_method);
    if (!bio)
        return NULL;
    BIO_set_data(bio, b);
    BIO_set_init(bio, 1);
    return bio;
}

/* ---- errors ------------------------------------------------------------ */

static void session_set_err(rete_tls_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Keeps the first error: later ones are usually its consequences. */
static void session_set_err(rete_tls_session *s, const char *fmt, ...)
{
    if (s->err)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    s->err = rete_strdup(msg);
}

/* Records why the SSL call that returned ret failed; RETE_EAGAIN when it only
 * wants more input. */
static rete_rc session_fail(rete_tls_session *s, int ret, const char *what)
{
    int e = SSL_get_error(s->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: /* cannot happen: our output buffer grows */
        ERR_clear_error();
        return RETE_EAGAIN;
    case SSL_ERROR_SSL: {
        long vr = SSL_get_verify_result(s->ssl);
        if (vr != X509_V_OK)
            session_set_err(s, "%s: peer certificate rejected: %s", what,
                            X509_verify_cert_error_string(vr));
        else
            session_set_err(s, "%s: %s", what, rete_ssl_reason("TLS protocol error"));
        break;
    }
    default:
        session_set_err(s, "%s: %s (SSL_get_error %d)", what, rete_ssl_reason("failed"), e);
        break;
    }
    ERR_clear_error();
    s->failed = true;
    return RETE_EIO;
}

/* The single spiffe:// URI SAN of cert, heap-allocated in *out. Other URI SANs
 * are ignored; the scheme is compared case-insensitively when counting so that
 * "SPIFFE://..." cannot sneak in beside a valid one. */
static rete_rc cert_spiffe_id(X509 *cert, char **out, const char **why)
{
    *out = NULL;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (!names) {
        *why = "certificate has no subjectAltName";
        return RETE_ENOTFOUND;
    }
    rete_rc rc = RETE_ENOTFOUND;
    *why = "certificate has no spiffe:// URI SAN";
    const unsigned char *found = NULL;
    int found_len = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type != GEN_URI)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        int n = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
        rete_view uri = rete_view_make((const char *)d, n > 0 ? (size_t)n : 0);
        if (!rete_view_ieq(rete_view_sub(uri, 0, RETE_SPIFFE_SCHEME_LEN), RETE_VIEW_LIT(RETE_SPIFFE_SCHEME)))
            continue;
        if (found) {
            *why = "certificate has more than one spiffe:// URI SAN";
            rc = RETE_EINVAL;
            goto out;
        }
        found = d;
        found_len = n;
    }
    if (!found)
        goto out;
    if (!rete_spiffe_id_valid((const char *)found, (size_t)found_len) ||
        memchr(found, '\0', (size_t)found_len)) {
        *why = "certificate has a malformed SPIFFE ID";
        rc = RETE_EINVAL;
        goto out;
    }
    *out = rete_strndup((const char *)found, (size_t)found_len);
    rc = RETE_OK;
out:
    GENERAL_NAMES_free(names);
    return rc;
}

/* Verify callback of mesh contexts: after OpenSSL accepted the chain, the leaf
 * (depth 0) must carry one valid SPIFFE ID, and on the client side the
 * expected one. Failing here aborts the handshake with an alert before the
 * client sends its own Finished. */
static int mesh_verify_cb(int preverify_ok, X509_STORE_CTX *xs)
{
    if (!preverify_ok || X509_STORE_CTX_get_error_depth(xs) != 0)
        return preverify_ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    rete_tls_session *s = ssl ? SSL_get_app_data(ssl) : NULL;
    if (!s)
        return 0;
    char *id = NULL;
    const char *why = NULL;
    if (cert_spiffe_id(X509_STORE_CTX_get_current_cert(xs), &id, &why) != RETE_OK) {
        session_set_err(s, "TLS handshake: peer certificate rejected: %s", why);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (s->expected_id && strcmp(id, s->expected_id) != 0) {
        session_set_err(s, "TLS handshake: server identity %s is not the expected %s", id,
                        s->expected_id);
        free(id);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    free(s->peer_id);
    s->peer_id = id;
    return 1;
}

/* ---- ALPN -------------------------------------------------------------- */

static const unsigned char alpn_h2[] = {2, 'h', '2'};
static const unsigned char alpn_app[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

/* Server preference order: the first of ours the client also offers. */
static int alpn_pick(const unsigned char *ours, unsigned int ourslen, const unsigned char **out,
                     unsigned char *outlen, const unsigned char *in, unsigned int inlen)
{
    for (unsigned int i = 0; i < ourslen; i += 1u + ours[i])
        for (unsigned int j = 0; j < inlen; j += 1u + in[j])
            if (j + 1u + in[j] <= inlen && in[j] == ours[i] &&
                memcmp(in + j + 1, ours + i + 1, ours[i]) == 0) {
                *out = in + j + 1;
                *outlen = in[j];
                return 1;
            }
    return 0;
}

static int mesh_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                        const unsigned char *in, unsigned int inlen, void *arg)
{
    if (alpn_pick(alpn_h2, sizeof(alpn_h2), out, outlen, in, inlen))
        return SSL_TLSEXT_ERR_OK;
    rete_tls_session *s = SSL_get_app_data(ssl);
    if (s)
        session_set_err(s, "TLS handshake: client does not offer ALPN h2");
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol, RFC 7301 §3.2 */
}

static int app_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    if (alpn_pick(alpn_app, sizeof(alpn_app), out, outlen, in, inlen))
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK; /* proceed without ALPN: HTTP/1.1 */
}

/* The ALPN select callback only runs when the client sends the extension; a
 * mesh client that sends none is refused here, with the same alert. */
static int mesh_client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    const unsigned char *ext;
    size_t len;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
                                  &len))
        return SSL_CLIENT_HELLO_SUCCESS;
    rete_tls_session *s = SSL_get_app_data(ssl);
    if (s)
        session_set_err(s, "TLS handshake: client offers no ALPN (the mesh requires h2)");
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
}

/* ---- contexts ---------------------------------------------------------- */

static SSL_CTX *ctx_base(bool server, int min_version, const char *cert_file, const char *key_file,
                         rete_error *err)
{
    SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!c) {
        rete_error_set(err, RETE_EIO, "SSL_CTX_new: %s", rete_ssl_reason("failed"));
        goto fail;
    }
    SSL_CTX_set_min_proto_version(c, min_version);
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    /* Mesh connections are long-lived and pooled; resumption would add
     * tickets to every session and skip the peer's certificate. */
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    if (server)
        SSL_CTX_set_num_tickets(c, 0);
    if (!cert_file) /* a client that presents no certificate (bootstrap) */
        return c;
    if (SSL_CTX_use_certificate_chain_file(c, cert_file) != 1) {
        rete_error_set(err, RETE_EIO, "certificate file %s: %s", cert_file,
                rete_ssl_reason("cannot load PEM certificate chain"));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(c, key_file, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            rete_error_set(err, RETE_EINVAL, "key file %s does not match certificate file %s", key_file,
                    cert_file);
        else
            rete_error_set(err, RETE_EIO, "key file %s: %s", key_file, rete_ssl_reason("cannot load PEM key"));
        goto fail;
    }
    if (SSL_CTX_check_private_key(c) != 1) {
        rete_error_set(err, RETE_EINVAL, "key file %s does not match certificate file %s", key_file, cert_file);
        goto fail;
    }
    ERR_clear_error();
    return c;
fail:
    ERR_clear_error();
    SSL_CTX_free(c);
    return NULL;
}

static rete_tls_ctx *ctx_wrap(SSL_CTX *c, enum tls_kind kind)
{
    rete_tls_ctx *ctx = rete_calloc(1, sizeof(*ctx));
    ctx->ssl = c;
    ctx->kind = kind;
    atomic_init(&ctx->refs, 1);
    return ctx;
}

/* The TLS 1.3 base shared by mesh and control-plane contexts: our
 * certificate (if any), every root of the bundle trusted (two during a CA
 * rotation), the peer's chain verified with its SPIFFE ID checked. */
static SSL_CTX *verifying_ctx(bool server, const char *cert_file, const char *key_file,
                              const char *ca_file, int verify_mode, rete_error *err)
{
    SSL_CTX *c = ctx_base(server, TLS1_3_VERSION, cert_file, key_file, err);
    if (!c)
        return NULL;
    if (SSL_CTX_load_verify_file(c, ca_file) != 1) {
        rete_error_set(err, RETE_EIO, "CA bundle %s: %s", ca_file,
                rete_ssl_reason("cannot load PEM certificates"));
        ERR_clear_error();
        SSL_CTX_free(c);
        return NULL;
    }
    SSL_CTX_set_verify(c, verify_mode, mesh_verify_cb);
    SSL_CTX_set_verify_depth(c, 4);
    return c;
}

static rete_tls_ctx *mesh_ctx(bool server, const char *cert_file, const char *key_file,
                              const char *ca_file, rete_error *err)
{
    int mode = SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
    SSL_CTX *c = verifying_ctx(server, cert_file, key_file, ca_file, mode, err);
    if (!c)
        return NULL;
    if (server) {
        SSL_CTX_set_alpn_select_cb(c, mesh_alpn_cb, NULL);
        SSL_CTX_set_client_hello_cb(c, mesh_client_hello_cb, NULL);
    } else if (SSL_CTX_set_alpn_protos(c, alpn_h2, sizeof(alpn_h2)) != 0) {
        rete_error_set(err, RETE_EIO, "SSL_CTX_set_alpn_protos failed");
        SSL_CTX_free(c);
        return NULL;
    }
    return ctx_wrap(c, server ? TLS_MESH_SERVER : TLS_MESH_CLIENT);
}

rete_tls_ctx *rete_tls_mesh_server_ctx(const char *cert_file, const char *key_file,
                                       const char *ca_file, rete_error *err)
{
    return mesh_ctx(true, cert_file, key_file, ca_file, err);
}

rete_tls_ctx *rete_tls_mesh_client_ctx(const char *cert_file, const char *key_file,
                                       const char *ca_file, rete_error *err)
{
    return mesh_ctx(false, cert_file, key_file, ca_file, err);
}

rete_tls_ctx *rete_tls_app_server_ctx(const char *cert_file, const char *key_file, rete_error *err)
{
    SSL_CTX *c = ctx_base(true, TLS1_2_VERSION, cert_file, key_file, err);
    if (!c)
        return NULL;
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_alpn_select_cb(c, app_alpn_cb, NULL);
    return ctx_wrap(c, TLS_APP_SERVER);
}

/* TLS origination to a server outside the mesh (DestinationRule tls SIMPLE):
 * TLS 1.2+, no client certificate, the server's chain verified against
 * ca_file or, when NULL, the system's default roots; the host name is
 * checked per session (rete_tls_session_new_client's sni). */
rete_tls_ctx *rete_tls_originate_ctx(const char *ca_file, rete_error *err)
{
    SSL_CTX *c = ctx_base(false, TLS1_2_VERSION, NULL, NULL, err);
    if (!c)
        return NULL;
    int ok = ca_file ? SSL_CTX_load_verify_file(c, ca_file) : SSL_CTX_set_default_verify_paths(c);
    if (ok != 1) {
        rete_error_set(err, RETE_EIO, "CA bundle %s: %s", ca_file ? ca_file : "(system roots)",
                       rete_ssl_reason("cannot load PEM certificates"));
        ERR_clear_error();
        SSL_CTX_free(c);
        return NULL;
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_verify_depth(c, 8);
    static const unsigned char alpn_h1[] = "\x08http/1.1";
    if (SSL_CTX_set_alpn_protos(c, alpn_h1, sizeof(alpn_h1) - 1) != 0) {
        rete_error_set(err, RETE_EIO, "SSL_CTX_set_alpn_protos failed");
        SSL_CTX_free(c);
        return NULL;
    }
    return ctx_wrap(c, TLS_ORIGINATE);
}

/* The control plane's listener and its clients (docs/control-plane.md):
 * TLS 1.3, HTTP/1.1 inside; the server verifies a client certificate when
 * one is presented (renewals, config streams) and accepts none (first
 * issuance with a join token): what a request may do is decided per
 * request from rete_tls_peer_spiffe_id. */
static rete_tls_ctx *cp_ctx(bool server, const char *cert_file, const char *key_file,
                            const char *ca_file, rete_error *err)
{
    SSL_CTX *c = verifying_ctx(server, cert_file, key_file, ca_file, SSL_VERIFY_PEER, err);
    if (!c)
        return NULL;
    return ctx_wrap(c, server ? TLS_CP_SERVER : TLS_CP_CLIENT);
}

rete_tls_ctx *rete_tls_cp_server_ctx(const char *cert_file, const char *key_file,
                                     const char *ca_file, rete_error *err)
{
    return cp_ctx(true, cert_file, key_file, ca_file, err);
}

rete_tls_ctx *rete_tls_cp_client_ctx(const char *cert_file, const char *key_file,
                                     const char *ca_file, rete_error *err)
{
    return cp_ctx(false, cert_file, key_file, ca_file, err);
}

rete_tls_ctx *rete_tls_ctx_ref(rete_tls_ctx *ctx)
{
    atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
    return ctx;
}

void rete_tls_ctx_unref(rete_tls_ctx *ctx)
{
    if (!ctx || atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1)
        return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

/* ---- sessions ---------------------------------------------------------- */

static bool is_ip_literal(const char *s)
{
    unsigned char b[16];
    return s && (inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1);
}

static rete_tls_session *session_new(rete_tls_ctx *ctx)
{
    rete_tls_session *s = rete_calloc(1, sizeof(*s));
    BIO *rbio = NULL, *wbio = NULL;
    s->ssl = SSL_new(ctx->ssl);
    RETE_ENSURE_GOTO(s->ssl, fail);
    rbio = bio_new(&s->in);
    RETE_ENSURE_GOTO(rbio, fail);
    wbio = bio_new(&s->out);
    RETE_ENSURE_GOTO(wbio, fail);
    SSL_set_bio(s->ssl, rbio, wbio); /* SSL owns both from here */
    SSL_set_app_data(s->ssl, s);
    s->ctx = rete_tls_ctx_ref(ctx);
    return s;
fail:
    ERR_clear_error();
    BIO_free(rbio);
    SSL_free(s->ssl);
    free(s);
    return NULL;
}

rete_tls_session *rete_tls_session_new_server(rete_tls_ctx *ctx)
{
    if (!ctx || ctx->kind == TLS_MESH_CLIENT || ctx->kind == TLS_CP_CLIENT || ctx->kind == TLS_ORIGINATE)
        return NULL;
    rete_tls_session *s = session_new(ctx);
    if (s)
        SSL_set_accept_state(s->ssl);
    return s;
}

rete_tls_session *rete_tls_session_new_client(rete_tls_ctx *ctx, const char *expected_spiffe_id,
                                              const char *sni)
{
    if (!ctx || (ctx->kind != TLS_MESH_CLIENT && ctx->kind != TLS_CP_CLIENT && ctx->kind != TLS_ORIGINATE))
        return NULL;
    if (ctx->kind == TLS_ORIGINATE && (expected_spiffe_id || !sni))
        return NULL;
    if (expected_spiffe_id && !rete_spiffe_id_valid(expected_spiffe_id, strlen(expected_spiffe_id)))
        return NULL;
    rete_tls_session *s = session_new(ctx);
    if (!s)
        return NULL;
    /* Origination: the name verified is the one sent (RFC 6125); an IP
     * literal is checked against the certificate's IP SANs and not sent
     * as SNI (RFC 6066 §3 forbids literal addresses there). */
    bool ip_literal = ctx->kind == TLS_ORIGINATE && is_ip_literal(sni);
    bool sni_ok = !sni || ip_literal || SSL_set_tlsext_host_name(s->ssl, sni) == 1;
    if (sni_ok && ctx->kind == TLS_ORIGINATE)
        sni_ok = ip_literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), sni) == 1
                            : SSL_set1_host(s->ssl, sni) == 1;
    if (!sni_ok) {
        ERR_clear_error();
        rete_tls_session_free(s);
        return NULL;
    }
    if (expected_spiffe_id)
        s->expected_id = rete_strdup(expected_spiffe_id);
    SSL_set_connect_state(s->ssl);
    return s;
}

void rete_tls_session_free(rete_tls_session *s)
{
    if (!s)
        return;
    SSL_free(s->ssl); /* frees both BIOs, which do not own the buffers */
    buf_release(&s->in);
    buf_release(&s->out);
    rete_tls_ctx_unref(s->ctx);
    free(s->expected_id);
    free(s->peer_id);
    free(s->err);
    free(s);
}

rete_rc rete_tls_feed(rete_tls_session *s, const void *cipher, size_t len)
{
    if (s->failed)
        return RETE_ESTATE;
    buf_append(&s->in, cipher, len);
    return RETE_OK;
}

rete_rc rete_tls_handshake(rete_tls_session *s)
{
    if (s->failed)
        return RETE_EIO;
    if (s->done)
        return RETE_OK;
    ERR_clear_error();
    int ret = SSL_do_handshake(s->ssl);
    if (ret != 1)
        return session_fail(s, ret, "TLS handshake");
    /* Belt and braces: the verify callback already ran for mesh sessions. */
    if (s->ctx->kind == TLS_CP_CLIENT &&
        (SSL_get_verify_result(s->ssl) != X509_V_OK || !s->peer_id)) {
        session_set_err(s, "TLS handshake: control plane not verified");
        s->failed = true;
        return RETE_EIO;
    }
    if (s->ctx->kind == TLS_ORIGINATE && SSL_get_verify_result(s->ssl) != X509_V_OK) {
        session_set_err(s, "TLS handshake: server certificate not verified");
        s->failed = true;
        return RETE_EIO;
    }
    if (s->ctx->kind == TLS_MESH_SERVER || s->ctx->kind == TLS_MESH_CLIENT) {
        if (SSL_get_verify_result(s->ssl) != X509_V_OK || !s->peer_id) {
            session_set_err(s, "TLS handshake: peer not verified");
            s->failed = true;
            return RETE_EIO;
        }
        if (strcmp(rete_tls_alpn(s), "h2") != 0) {
            session_set_err(s, "TLS handshake: peer did not negotiate ALPN h2");
            s->failed = true;
            return RETE_EIO;
        }
    }
    s->done = true;
    return RETE_OK;
}

bool rete_tls_handshake_done(const rete_tls_session *s)
{
    return s->done;
}

rete_rc rete_tls_read(rete_tls_session *s, void *buf, size_t len, size_t *nread)
{
    *nread = 0;
    if (s->failed)
        return RETE_EIO;
    if (!s->done)
        return RETE_ESTATE;
    if (len == 0)
        return RETE_OK;
    ERR_clear_error();
    if (SSL_read_ex(s->ssl, buf, len, nread) == 1)
        return RETE_OK;
    if (SSL_get_error(s->ssl, 0) == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return RETE_OK; /* close_notify: end of stream */
    }
    return session_fail(s, 0, "TLS read");
}

rete_rc rete_tls_write(rete_tls_session *s, const void *plain, size_t len)
{
    if (s->failed)
        return RETE_EIO;
    if (!s->done || (SSL_get_shutdown(s->ssl) & SSL_SENT_SHUTDOWN))
        return RETE_ESTATE;
    if (len == 0)
        return RETE_OK;
    ERR_clear_error();
    size_t written = 0;
    /* Without SSL_MODE_ENABLE_PARTIAL_WRITE this writes everything or fails. */
    if (SSL_write_ex(s->ssl, plain, len, &written) == 1 && written == len)
        return RETE_OK;
    rete_rc rc = session_fail(s, 0, "TLS write");
    if (rc == RETE_EAGAIN) { /* cannot happen with our BIO; treat as fatal */
        session_set_err(s, "TLS write: unexpected retry");
        s->failed = true;
    }
    return RETE_EIO;
}

rete_rc rete_tls_shutdown(rete_tls_session *s)
{
    if (!s->done)
        return RETE_ESTATE;
    if (s->failed || (SSL_get_shutdown(s->ssl) & SSL_SENT_SHUTDOWN))
        return RETE_OK;
    ERR_clear_error();
    int ret = SSL_shutdown(s->ssl);
    if (ret >= 0) /* 0: ours sent, theirs not yet received; 1: both */
        return RETE_OK;
    rete_rc rc = session_fail(s, ret, "TLS shutdown");
    return rc == RETE_EAGAIN ? RETE_OK : rc;
}

bool rete_tls_peer_closed(const rete_tls_session *s)
{
    return (SSL_get_shutdown(s->ssl) & SSL_RECEIVED_SHUTDOWN) != 0;
}

size_t rete_tls_pending_out(const rete_tls_session *s)
{
    return buf_live(&s->out);
}

size_t rete_tls_take_out(rete_tls_session *s, void *buf, size_t len)
{
    size_t n = buf_live(&s->out);
    if (n > len)
        n = len;
    if (n)
        memcpy(buf, s->out.p + s->out.head, n);
    buf_consume(&s->out, n);
    return n;
}

size_t rete_tls_out_peek(const rete_tls_session *s, const uint8_t **data)
{
    *data = s->out.p ? s->out.p + s->out.head : NULL;
    return buf_live(&s->out);
}

void rete_tls_consume_out(rete_tls_session *s, size_t n)
{
    buf_consume(&s->out, n);
}

const char *rete_tls_alpn(const rete_tls_session *s)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(s->ssl, &p, &n);
    rete_view v = rete_view_make((const char *)p, n);
    if (rete_view_eq(v, RETE_VIEW_LIT("h2")))
        return "h2";
    if (rete_view_eq(v, RETE_VIEW_LIT("http/1.1")))
        return "http/1.1";
    return "";
}

const char *rete_tls_session_error(const rete_tls_session *s)
{
    return s->err ? s->err : "";
}

rete_rc rete_tls_peer_spiffe_id(const rete_tls_session *s, char *out, size_t outlen)
{
    if (outlen)
        out[0] = '\0';
    if (!s->done || s->failed)
        return RETE_ESTATE;
    char *id = s->peer_id;
    char *owned = NULL;
    if (!id) {
        /* App sessions do not check identity in the handshake. */
        X509 *cert = SSL_get0_peer_certificate(s->ssl);
        const char *why;
        if (!cert)
            return RETE_ENOTFOUND;
        rete_rc rc = cert_spiffe_id(cert, &owned, &why);
        if (rc != RETE_OK)
            return rc;
        id = owned;
    }
    size_t n = strlen(id);
    rete_rc rc = RETE_OK;
    if (n >= outlen)
        rc = RETE_ELIMIT;
    else
        memcpy(out, id, n + 1);
    free(owned);
    return rc;
}

const char *rete_tls_peer_id(const rete_tls_session *s)
{
    return s->done && !s->failed ? s->peer_id : NULL;
}

/* ---- certificate facts ------------------------------------------------- */

static int64_t cert_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

void rete_cert_facts_of(const X509 *x, rete_cert_facts *out)
{
    memset(out, 0, sizeof(*out));
    out->not_before = cert_time(X509_get0_notBefore(x));
    out->not_after = cert_time(X509_get0_notAfter(x));
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    int n = sn ? ASN1_STRING_length(sn) : 0;
    if (n > 0 && n <= RETE_CERT_SERIAL_MAX) {
        memcpy(out->serial, ASN1_STRING_get0_data(sn), (size_t)n);
        out->serial_len = (uint8_t)n;
    }
}

bool rete_cert_root_id(const X509 *root, uint8_t out[RETE_CERT_ROOT_ID_LEN])
{
    unsigned int len = 0;
    return X509_pubkey_digest(root, EVP_sha256(), out, &len) == 1 && len == RETE_CERT_ROOT_ID_LEN;
}

rete_rc rete_tls_peer_cert_facts(const rete_tls_session *s, rete_cert_facts *out)
{
    memset(out, 0, sizeof(*out));
    if (!s->done || s->failed)
        return RETE_ESTATE;
    X509 *cert = SSL_get0_peer_certificate(s->ssl);
    if (!cert)
        return RETE_ENOTFOUND;
    rete_cert_facts_of(cert, out);
    /* The anchor OpenSSL verified the chain to is the last of the verified
     * chain (the peer's own chain could name any issuer; this one was
     * checked). Sessions are never resumed (no tickets, no cache), so every
     * session has one. */
    STACK_OF(X509) *chain = SSL_get0_verified_chain(s->ssl);
    int n = chain ? sk_X509_num(chain) : 0;
    if (n > 0 && SSL_get_verify_result(s->ssl) == X509_V_OK)
        out->has_root = rete_cert_root_id(sk_X509_value(chain, n - 1), out->root_id);
    return RETE_OK;
}

static EVP_PKEY *placeholder_key;

static void placeholder_make(void)
{
    /* X25519: a small key (no curve group of its own); never used to sign or verify */
    placeholder_key = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
}

bool rete_tls_session_shed_peer_certs(rete_tls_session *s)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    /* TLS 1.3 only: an earlier version could renegotiate and read them */
    if (!s->done || s->failed || SSL_version(s->ssl) != TLS1_3_VERSION)
        return false;
    X509 *cert = SSL_get0_peer_certificate(s->ssl);
    if (!cert)
        return false;
    pthread_once(&once, placeholder_make);
    if (!placeholder_key || X509_set_pubkey(cert, placeholder_key) != 1) {
        ERR_clear_error();
        return false;
    }
    /* The chain the peer sent holds certificates parsed from this session's
     * handshake alone (a server's holds a second copy of the leaf), never
     * the trust store's, and read by nothing once verified: emptied. The
     * leaf above stays (the verified chain and the session share it). */
    STACK_OF(X509) *sent = SSL_get_peer_cert_chain(s->ssl);
    while (sent && sk_X509_num(sent) > 0)
        X509_free(sk_X509_pop(sent));
    return true;
}

bool rete_cert_same_serial(const rete_cert_facts *a, const rete_cert_facts *b)
{
    return a->serial_len && a->serial_len == b->serial_len &&
           memcmp(a->serial, b->serial, a->serial_len) == 0;
}

/* ---- protocol detection ------------------------------------------------ */

bool rete_tls_looks_like_client_hello(const uint8_t *buf, size_t len, bool *need_more)
{
    *need_more = false;
    /* RFC 8446 §5.1: ContentType handshake(22), legacy_record_version
     * 0x03XX, uint16 length; §4: HandshakeType client_hello(1). */
    if (len >= 1 && buf[0] != 0x16)
        return false;
    if (len >= 2 && buf[1] != 0x03)
        return false;
    if (len >= 3 && buf[2] > 0x04)
        return false;
    if (len >= 5) {
        size_t rec = ((size_t)buf[3] << 8) | buf[4];
        if (rec == 0 || rec > 16384)
            return false;
    }
    if (len < 6) {
        *need_more = true;
        return false;
    }
    return buf[5] == 0x01;
}
