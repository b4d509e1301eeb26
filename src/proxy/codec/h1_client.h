/* HTTP/1.1 upstream codec (h1_client.c): pooled keep-alive connections to the
 * local app or a host outside the mesh. Reached through the codec table
 * (core/codec.h) at RETE_CODEC_H1_CLIENT. */
#ifndef RETE_PROXY_H1_CLIENT_H
#define RETE_PROXY_H1_CLIENT_H

#include "codec.h"

extern const rete_codec rete_codec_h1_client;

struct rete_exchange;
void rete_h1_upstream_start(struct rete_exchange *ex, const char *ip, uint16_t port,
                            uint32_t connect_timeout_ms);

#endif
