/* A small blocking HTTP/1.1 client for etcd's v3 JSON gateway (store_etcd.c).
 *
 * Blocking on purpose: the store interface (store.h) is synchronous and the
 * watch runs on its own thread. Every call is bounded: a deadline for the
 * whole exchange (timeout_ms), a cap on the response body (max_response).
 * One keep-alive connection per client; a client belongs to one thread.
 * Several endpoints (the members of an etcd cluster): a call that cannot
 * reach the member in use tries the next one, each at most once per call.
 * Plain TCP, or TLS with a CA file and optionally a client certificate. */
#ifndef RETE_CONTROL_ETCD_HTTP_H
#define RETE_CONTROL_ETCD_HTTP_H

#include "error.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#define RETED_ETCD_MAX_ENDPOINTS 16

typedef struct reted_etcd_endpoint {
    char host[256];
    char port[8];
} reted_etcd_endpoint;

typedef struct reted_etcd_http {
    reted_etcd_endpoint ep[RETED_ETCD_MAX_ENDPOINTS];
    size_t n_ep;
    size_t cur;         /* the member in use */
    SSL_CTX *tls;       /* NULL: plain HTTP; shared (up-ref'd) between copies */
    int timeout_ms;     /* the whole exchange of one call */
    size_t max_response;/* body bytes */
    int fd;             /* -1 when closed */
    SSL *ssl;
    /* streaming (watch): bytes read past the head, the chunked decoder */
    char *in;
    size_t in_len, in_cap;
    int body_mode;      /* rete_h1_body of the stream */
    bool ended;         /* the stream's last chunk came: what is in line is all there is */
    void *chunked;      /* rete_h1_chunked *, streams only */
    char *line;         /* a message being assembled */
    size_t line_len, line_cap;
    size_t line_taken;  /* bytes of the message returned last, dropped at the next call */
} reted_etcd_http;

typedef struct reted_etcd_tls_files {
    const char *cacert; /* NULL: plain HTTP */
    const char *cert;   /* client certificate, optional (with key) */
    const char *key;
} reted_etcd_tls_files;

/* Parse "host:port[,host:port...]" (after "etcd://") into c; TLS when
 * files->cacert. RETE_EINVAL/RETE_EIO with a message. */
RETE_MUST_CHECK rete_rc reted_etcd_http_init(reted_etcd_http *c, const char *endpoints,
                                             const reted_etcd_tls_files *files, int timeout_ms,
                                             size_t max_response, rete_error *err);
/* A second client on the same members and TLS context (another thread's). */
void reted_etcd_http_copy(reted_etcd_http *dst, const reted_etcd_http *src);
void reted_etcd_http_free(reted_etcd_http *c);

/* POST a JSON body to path; the response body (NUL-terminated, malloc'ed)
 * in *out whatever the status. RETE_EIO when no member answered. */
RETE_MUST_CHECK rete_rc reted_etcd_http_post(reted_etcd_http *c, const char *path, const char *body,
                                             size_t len, int *status, char **out, size_t *out_len,
                                             rete_error *err);

/* Streaming: POST and read the head (status 200 expected); then each call
 * of _next returns one newline-delimited message of the body (a pointer
 * into the client, valid until the next call), waiting at most wait_ms:
 * RETE_OK, RETE_EAGAIN (nothing within wait_ms), RETE_EIO (the stream
 * ended or broke: close it and open another). */
RETE_MUST_CHECK rete_rc reted_etcd_http_stream_open(reted_etcd_http *c, const char *path, const char *body,
                                                    size_t len, rete_error *err);
RETE_MUST_CHECK rete_rc reted_etcd_http_stream_next(reted_etcd_http *c, int wait_ms, const char **msg,
                                                    size_t *msg_len, rete_error *err);
void reted_etcd_http_close(reted_etcd_http *c);

#endif
