/* HTTP/2 abuse accounting, server role (h2_abuse.c), internal to the codec:
 * the verdicts on premature stream resets, per connection and per client.
 * No I/O and no nghttp2: h2.c counts, asks, and refuses (GOAWAY
 * ENHANCE_YOUR_CALM) what these say. Per worker thread: the client table is
 * _Thread_local, like the sessions it protects. */
#ifndef RETE_PROXY_H2_ABUSE_H
#define RETE_PROXY_H2_ABUSE_H

#include <stdbool.h>
#include <stdint.h>

/* The client (SPIFFE ID on the mesh listener, source IP elsewhere) reset a
 * stream whose response was not complete, on a connection where it has
 * opened n_streams streams and reset n_premature of them early, this one
 * included; now in loop ms. Counts the reset against the client's window.
 * Returns the RETE_H2_ABUSE_* reason (core/worker.h) the connection must be
 * refused for, or -1 when it may go on. */
int rete_h2_abuse_premature_reset(const char *client, uint32_t n_streams, uint32_t n_premature,
                                  uint64_t now);

/* Whether the client's new connections are refused now: it is over its
 * reset budget in a window that has not ended. */
bool rete_h2_abuse_client_over_limit(const char *client, uint64_t now);

#endif
