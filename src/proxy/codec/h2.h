/* HTTP/2 codec (h2.c, nghttp2): server side for h2c and the mesh listener,
 * client side for the mesh transport and h2c apps, one multiplexed pooled
 * connection per peer. Reached through the codec table (core/codec.h) at
 * RETE_CODEC_H2. */
#ifndef RETE_PROXY_H2_H
#define RETE_PROXY_H2_H

#include "codec.h"
#include "view.h"

#include <stdbool.h>

extern const rete_codec rete_codec_h2;

struct rete_conn;
struct rete_exchange;
struct rete_worker;
void rete_h2_server_start(struct rete_conn *c, const char *data, size_t len);
void rete_h2_upstream_start(struct rete_exchange *ex, const char *ip, uint16_t port, bool tls,
                            uint32_t connect_timeout_ms,
                            const char *expected_id);
/* Write the frames of every HTTP/2 connection that made some. */
void rete_h2_flush_all(struct rete_worker *w);
/* Whether a field of an exchange's message (names are lowercase there)
 * goes into the HTTP/2 header blocks this codec sends: not the
 * connection-specific ones (RFC 9113 §8.2.2), te only as "trailers". The
 * pseudo-headers come from the exchange's method, scheme, authority, path
 * and status; content-length from its content_length. */
bool rete_h2_field_forwarded(rete_view name, rete_view value);
/* Frees the calling worker thread's nghttp2 callbacks and options. */
void rete_h2_thread_cleanup(void);

#endif
