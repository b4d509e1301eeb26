/* The load generator's stand-in for the project's HTTP/1.1 response parser.
 *
 * TODO: src/common/h1_parse.h declares rete_h1_parse_response and the chunked
 * decoder, but their implementation (branch h1) was not on main when the bench
 * was written. These two functions take the same arguments and fill the same
 * types, parse only what a load generator needs (status, Content-Length,
 * chunked framing, Connection: close) and do no smuggling checks: replace
 * bench_h1_parse_response with rete_h1_parse_response and the chunked skipper
 * with rete_h1_chunked_decode once h1_parse.c lands, and delete this file. */
#ifndef RETE_BENCH_H1_MIN_H
#define RETE_BENCH_H1_MIN_H

#include "h1_parse.h"

/* As rete_h1_parse_response: bytes of the head (> 0), RETE_EAGAIN, or
 * RETE_EINVAL / RETE_ELIMIT with `err` filled. */
RETE_MUST_CHECK int bench_h1_parse_response(const char *buf, size_t len,
                                            const rete_h1_limits *limits,
                                            rete_view request_method, rete_h1_message *msg,
                                            rete_h1_error *err);

/* Chunked body skipper: same contract as rete_h1_chunked_decode but the
 * payload is only counted, and trailers are skipped. Returns RETE_OK while
 * more input is expected, 1 at the end of the body, RETE_EINVAL on bad framing. */
RETE_MUST_CHECK int bench_h1_chunked_skip(rete_h1_chunked *c, const char *buf, size_t len,
                                          size_t *consumed);

#endif
