/* TLS for the proxy: OpenSSL 3 driven through in-memory buffers, so that the
 * caller (a libuv connection) owns the socket and this module never does I/O.
 *
 * Data flow, for one connection:
 *
 *     socket --read--> rete_tls_feed() --> [OpenSSL] --> rete_tls_read()   --> app
 *     socket <-write-- rete_tls_take_out() <-- [OpenSSL] <-- rete_tls_write() <-- app
 *
 * After every call that may produce ciphertext (feed+handshake, read, write,
 * shutdown, and a failed handshake, which leaves the alert to send), the caller
 * drains rete_tls_pending_out() bytes with rete_tls_take_out() or with
 * rete_tls_out_peek() + rete_tls_consume_out().
 *
 * Contexts are built once per configuration snapshot and shared read-only by
 * every worker thread; a session keeps a reference to its context, so a
 * certificate rotation is "build a new context, drop the old reference":
 * established sessions keep the old one alive until they end.
 *
 * Mesh contexts (15008, proxy to proxy): TLS 1.3 only, mutual authentication,
 * ALPN "h2" and nothing else, no session resumption. Every peer leaf
 * certificate must carry exactly one valid SPIFFE ID URI SAN, checked inside
 * the handshake (an invalid one fails it with a bad_certificate alert). A
 * client that offers no ALPN or no "h2" is refused with the
 * no_application_protocol alert (RFC 7301 §3.2): the mesh speaks only h2.
 *
 * App server context (apps speaking TLS to their own sidecar): TLS 1.2+,
 * ALPN "h2" preferred over "http/1.1", no client certificate. A client with no
 * ALPN overlap is accepted without ALPN (treat as HTTP/1.1). */
#ifndef RETE_TLS_H
#define RETE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "result.h"
#include "spiffe.h"

typedef struct rete_tls_ctx rete_tls_ctx;
typedef struct rete_tls_session rete_tls_session;


/* ---- contexts ---------------------------------------------------------- */

/* Each constructor loads PEM files: cert_file holds the leaf followed by any
 * intermediates, key_file its private key, ca_file the trust bundle (every
 * root in it is trusted: during a CA rotation it holds old and new roots).
 * Returns a context with one reference, or NULL with a message naming the
 * file at fault in *err (may be NULL). */
rete_tls_ctx *rete_tls_mesh_server_ctx(const char *cert_file, const char *key_file,
                                       const char *ca_file, rete_error *err);
rete_tls_ctx *rete_tls_mesh_client_ctx(const char *cert_file, const char *key_file,
                                       const char *ca_file, rete_error *err);
rete_tls_ctx *rete_tls_app_server_ctx(const char *cert_file, const char *key_file, rete_error *err);

/* Thread-safe reference counting; unref(NULL) is a no-op. The caller NULLs
 * its own pointer after unref. */
/* The control plane's contexts (reted on 15012 and the proxies talking to
 * it): TLS 1.3, no ALPN. The server verifies a client certificate when one
 * is presented and accepts a client without one; the client may have no
 * certificate (cert_file NULL: first issuance with a join token) and checks
 * the server's SPIFFE ID when the session is made with an expected one. */
rete_tls_ctx *rete_tls_cp_server_ctx(const char *cert_file, const char *key_file,
                                     const char *ca_file, rete_error *err);
rete_tls_ctx *rete_tls_cp_client_ctx(const char *cert_file, const char *key_file,
                                     const char *ca_file, rete_error *err);
/* TLS origination to a server outside the mesh (DestinationRule
 * trafficPolicy.tls SIMPLE): TLS 1.2+, ALPN http/1.1, no client
 * certificate; the server's chain must verify against ca_file, or the
 * system's default roots when ca_file is NULL. Sessions are made with
 * rete_tls_session_new_client(ctx, NULL, name): `name` (required) is sent as
 * SNI and checked against the certificate's DNS SANs, or, an IP literal, not
 * sent and checked against its IP SANs; a mismatch or an untrusted chain
 * fails the handshake with rete_tls_session_error() saying why. */
rete_tls_ctx *rete_tls_originate_ctx(const char *ca_file, rete_error *err);
rete_tls_ctx *rete_tls_ctx_ref(rete_tls_ctx *ctx);
void rete_tls_ctx_unref(rete_tls_ctx *ctx);

/* ---- sessions ---------------------------------------------------------- */

/* A server session for a mesh or app server context; NULL if ctx is a client
 * context. */
rete_tls_session *rete_tls_session_new_server(rete_tls_ctx *ctx);

/* A client session for a mesh, control-plane or origination client context
 * (for the last, see rete_tls_originate_ctx). expected_spiffe_id, when not
 * NULL, is the exact SPIFFE ID the server must present: any other fails the
 * handshake with a reason naming both IDs (NULL accepts any SPIFFE ID that
 * chains to the bundle). sni may be NULL. Both strings are copied. Returns
 * NULL if ctx is not a client context or expected_spiffe_id is not a valid
 * SPIFFE ID. */
rete_tls_session *rete_tls_session_new_client(rete_tls_ctx *ctx, const char *expected_spiffe_id,
                                              const char *sni);

/* Frees the session and drops its context reference; NULL is a no-op. */
void rete_tls_session_free(rete_tls_session *s);

/* Bytes read from the socket. Always takes all of them (the input buffer
 * grows); the caller bounds its reads. RETE_ESTATE after a fatal error. */
RETE_MUST_CHECK rete_rc rete_tls_feed(rete_tls_session *s, const void *cipher, size_t len);

/* Drives the handshake with the input fed so far. RETE_OK once complete (and
 * on every later call), RETE_EAGAIN when it needs more input, RETE_EIO when it
 * failed: rete_tls_session_error() says why, and pending output may hold the
 * alert to send before closing. On RETE_OK for a mesh session the peer's
 * SPIFFE ID is verified and available: check policy before any app byte.
 * In TLS 1.3 the client finishes before the server has judged the client's
 * certificate: a client whose certificate is refused sees RETE_OK here and
 * the server's alert as RETE_EIO from its first rete_tls_read(). */
RETE_MUST_CHECK rete_rc rete_tls_handshake(rete_tls_session *s);
bool rete_tls_handshake_done(const rete_tls_session *s);

/* Decrypted application data. RETE_OK with *nread > 0; RETE_OK with
 * *nread == 0 when the peer sent close_notify (end of stream; see
 * rete_tls_peer_closed); RETE_EAGAIN when nothing is available yet; RETE_EIO
 * on a protocol error or a fatal alert from the peer. Reading may produce
 * output (key updates, alerts): drain it afterwards. */
RETE_MUST_CHECK rete_rc rete_tls_read(rete_tls_session *s, void *buf, size_t len, size_t *nread);

/* Encrypts all of plain into the output buffer. RETE_ESTATE before the
 * handshake completes or after shutdown; RETE_EIO on failure. */
RETE_MUST_CHECK rete_rc rete_tls_write(rete_tls_session *s, const void *plain, size_t len);

/* Sends close_notify (into the output buffer). Idempotent. RETE_ESTATE if the
 * handshake has not completed. */
RETE_MUST_CHECK rete_rc rete_tls_shutdown(rete_tls_session *s);
bool rete_tls_peer_closed(const rete_tls_session *s);

/* Ciphertext waiting to go to the socket. */
size_t rete_tls_pending_out(const rete_tls_session *s);
/* Copies up to len bytes of it into buf and removes them; returns the count. */
size_t rete_tls_take_out(rete_tls_session *s, void *buf, size_t len);
/* Zero-copy variant: *data points at all pending ciphertext (the returned
 * count). The pointer is valid only until the next call on this session, so
 * it suits uv_try_write(); for an asynchronous uv_write() copy it out (or use
 * rete_tls_take_out). Then remove what was sent with consume_out (n is
 * clamped to what is pending). */
size_t rete_tls_out_peek(const rete_tls_session *s, const uint8_t **data);
void rete_tls_consume_out(rete_tls_session *s, size_t n);

/* Negotiated ALPN protocol ("h2", "http/1.1"), or "" when none. Static
 * string. */
const char *rete_tls_alpn(const rete_tls_session *s);

/* Why the session failed (handshake, read or write), or "" if it has not. Owned
 * by the session. */
const char *rete_tls_session_error(const rete_tls_session *s);

/* Give back what the peer's certificates hold beyond what the owner reads,
 * once the handshake is done and the owner has read what it keeps of them
 * (rete_tls_peer_spiffe_id, rete_tls_peer_cert_facts: neither reads a key
 * nor the chain the peer sent). OpenSSL 3 keeps the peer's certificate for
 * the session's life, twice on a server (the leaf, and a copy in the chain
 * the peer sent, SSL_get_peer_cert_chain), each with its P-256 key decoded
 * into a curve group of its own. The leaf keeps one shared placeholder key
 * instead of its own, so its key is not the peer's from then on, and the
 * chain the peer sent is emptied (its certificates were parsed from this
 * handshake alone, never the trust store's): 6.7 KB of a 24 KB idle server
 * session (test_tls). Only an owner that never looks at them again may call
 * this. TLS 1.3 needs none of it after the handshake (no renegotiation, no
 * session tickets or cache, no post-handshake authentication on these
 * contexts). reted's proxy streams call it. false when there is nothing to
 * shed (no handshake yet, no peer certificate) or the placeholder cannot be
 * made. */
bool rete_tls_session_shed_peer_certs(rete_tls_session *s);

/* ---- SPIFFE identity --------------------------------------------------- */

/* The verified peer's SPIFFE ID, copied NUL-terminated into out. RETE_ESTATE
 * before the handshake completes, RETE_ENOTFOUND when the peer presented no
 * certificate or its SAN held no spiffe:// URI, RETE_EINVAL when it held
 * more than one or a malformed one, RETE_ELIMIT when outlen is too small. */
RETE_MUST_CHECK rete_rc rete_tls_peer_spiffe_id(const rete_tls_session *s, char *out,
                                                size_t outlen);
/* The same ID without a copy (owned by the session; for log contexts), or
 * NULL when there is none. */
const char *rete_tls_peer_id(const rete_tls_session *s);

/* What a certificate says about itself, as far as a control plane needs it
 * (the CA rotation, proxy status): read from a certificate verified in the
 * handshake, or from one reted signed, never from what a peer claims. */
#define RETE_CERT_SERIAL_MAX 20 /* octets; RFC 5280 §4.1.2.2 */
#define RETE_CERT_ROOT_ID_LEN 32
typedef struct rete_cert_facts {
    int64_t not_before;                        /* unix seconds */
    int64_t not_after;
    uint8_t serial[RETE_CERT_SERIAL_MAX];      /* the INTEGER's magnitude, big-endian */
    uint8_t serial_len;                        /* 0: none known (a longer serial) */
    bool has_root;                             /* root_id is known */
    uint8_t root_id[RETE_CERT_ROOT_ID_LEN];    /* SHA-256 of the public key of the
                                                * root the certificate chains to */
} rete_cert_facts;

/* The peer's leaf certificate as verified in this session's handshake: its
 * validity, serial, and the trust anchor OpenSSL verified its chain to
 * (has_root false when the session kept no verified chain). RETE_ESTATE
 * before the handshake completes or after it failed, RETE_ENOTFOUND when
 * the peer presented no certificate. */
RETE_MUST_CHECK rete_rc rete_tls_peer_cert_facts(const rete_tls_session *s, rete_cert_facts *out);

/* The same facts from a certificate (an OpenSSL X509) without its root:
 * not_before, not_after, serial; has_root false. For code that holds the
 * certificate itself (the CA that signed it). */
struct x509_st;
void rete_cert_facts_of(const struct x509_st *x, rete_cert_facts *out);
/* root_id of a root certificate (what rete_cert_facts.root_id holds). */
bool rete_cert_root_id(const struct x509_st *root, uint8_t out[RETE_CERT_ROOT_ID_LEN]);

/* Whether a and b name the same certificate serial (both known). */
bool rete_cert_same_serial(const rete_cert_facts *a, const rete_cert_facts *b);


/* ---- protocol detection ------------------------------------------------ */

/* Whether buf starts with a TLS handshake record carrying a ClientHello
 * (RFC 8446 §5.1: type 22, legacy version 0x0300..0x0304, length 1..2^14,
 * then handshake type 1). When buf is a prefix of such a header but too short
 * to decide, returns false with *need_more = true. */
bool rete_tls_looks_like_client_hello(const uint8_t *buf, size_t len, bool *need_more);

#endif
