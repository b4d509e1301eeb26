/* Trace context in request headers: W3C Trace Context (traceparent) and
 * Zipkin's B3, single header (b3) and multiple headers (x-b3-*).
 *
 * Parsers only: a header value in, a context or a refusal out; no I/O, no
 * allocation (STYLE.md "Parsers and buffers"). A malformed value is treated
 * as absent, as both specifications ask (W3C Trace Context §3.2.2.x "if the
 * value is invalid, restart the trace"; B3 "ignore"). */
#ifndef RETE_PROXY_TRACE_CTX_H
#define RETE_PROXY_TRACE_CTX_H

#include "view.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The header formats a request came with (rete_exchange.trace.formats). */
enum {
    RETE_TRACE_F_W3C = 1,      /* traceparent (tracestate passes through as sent) */
    RETE_TRACE_F_B3 = 2,       /* b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]] */
    RETE_TRACE_F_B3_MULTI = 4, /* x-b3-traceid, x-b3-spanid, x-b3-sampled, x-b3-flags */
};

typedef struct rete_trace_ctx {
    uint8_t trace_id[16]; /* a 64-bit B3 trace id is left-padded with zeros */
    uint8_t span_id[8];
    bool has_ids;         /* trace_id and span_id are set (B3 may carry a decision only) */
    int8_t sampled;       /* 1 sampled, 0 not, -1 no decision */
} rete_trace_ctx;

/* traceparent "00-<32 hex>-<16 hex>-<2 hex>" (W3C Trace Context level 1
 * §3.2): lower-case hex, ids not all zero, version ff refused, a later
 * version's extra fields after a '-' ignored. */
bool rete_trace_parse_traceparent(rete_view v, rete_trace_ctx *out);
/* b3 single header: "0", "1", "d", or "{traceid}-{spanid}[-{sampled}[-{parent}]]"
 * (openzipkin/b3-propagation), traceid of 16 or 32 hex. */
bool rete_trace_parse_b3(rete_view v, rete_trace_ctx *out);
/* The x-b3-* headers (empty views where absent). "x-b3-flags: 1" (debug)
 * means sampled; x-b3-sampled "1"/"true" or "0"/"false". */
bool rete_trace_parse_b3_multi(rete_view trace_id, rete_view span_id, rete_view sampled, rete_view flags,
                               rete_trace_ctx *out);

/* Lower-case hex of n bytes into out (2n chars and a NUL). */
void rete_trace_hex(char *out, const uint8_t *b, size_t n);

#endif
