/* Serialising HTTP/1.1 heads and chunk framing for both directions. */
#ifndef RETE_PROXY_H1_OUT_H
#define RETE_PROXY_H1_OUT_H

#include "exchange.h"

#include <stddef.h>

typedef struct rete_outbuf {
    char *p;
    size_t len;
    size_t cap;
    char stack[2048];   /* most heads fit: no allocation */
} rete_outbuf;

void rete_outbuf_init(rete_outbuf *b);
void rete_outbuf_put(rete_outbuf *b, const char *s, size_t n);
void rete_outbuf_puts(rete_outbuf *b, const char *s);
void rete_outbuf_view(rete_outbuf *b, rete_view v);
void rete_outbuf_free(rete_outbuf *b);

/* "name: value\r\n" for every field of m. */
void rete_h1_put_fields(rete_outbuf *b, const rete_msg *m);
/* The fields of a request head the proxy sends upstream over HTTP/1.1,
 * without those that frame or manage the connection (host, content-length,
 * transfer-encoding, connection, keep-alive, proxy-connection, upgrade):
 * the writer adds its own framing, and a field of that kind that slipped
 * past a codec's intake (an HTTP/2 peer's transfer-encoding, say) can
 * never reach the app and disagree with it (request smuggling). */
void rete_h1_put_request_fields(rete_outbuf *b, const rete_msg *m);
/* The chunk-size line for a chunk of n bytes ("1a2\r\n"). */
void rete_h1_put_chunk_size(rete_outbuf *b, size_t n);

#endif
