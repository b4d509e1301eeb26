/* HTTP/1.1 downstream codec (h1_server.c): takes over a detected connection,
 * parses requests into exchanges, writes their responses. Reached through
 * the codec table (core/codec.h) at RETE_CODEC_H1_SERVER. */
#ifndef RETE_PROXY_H1_SERVER_H
#define RETE_PROXY_H1_SERVER_H

#include "codec.h"

extern const rete_codec rete_codec_h1_server;

struct rete_conn;
struct rete_worker;
void rete_h1_server_start(struct rete_conn *c, const char *data, size_t len);
/* Write the response heads HTTP/1.1 downstreams kept for their body. */
void rete_h1_flush_all(struct rete_worker *w);

#endif
