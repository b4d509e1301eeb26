/* Raw TCP codec (tcp.c): a downstream connection or an upstream one carried as
 * a tunnel exchange. Reached through the codec table (core/codec.h) at
 * RETE_CODEC_TCP. */
#ifndef RETE_PROXY_TCP_H
#define RETE_PROXY_TCP_H

#include "codec.h"

extern const rete_codec rete_codec_tcp;

struct rete_conn;
struct rete_exchange;
void rete_tcp_server_start(struct rete_conn *c, const char *data, size_t len);
void rete_tcp_upstream_start(struct rete_exchange *ex, const char *ip, uint16_t port,
                             uint32_t connect_timeout_ms);

#endif
