/* HTTP/1.1 message-head parser and chunked-body decoder (RFC 9112).
 *
 * Strict and bounded, in the style of picohttpparser: no I/O, no allocation.
 * The caller hands in (buf, len) holding the bytes received so far; the parser
 * either returns the number of bytes that make up a complete head, or
 * RETE_EAGAIN when more bytes are needed, or a negative error with the HTTP
 * status to answer (400, 431, 501, 505) and a short reason.
 *
 * Every view in the parsed message points into the caller's buffer, which
 * must stay unchanged while the views are used.
 *
 * Refused, never forwarded (request smuggling defences, RFC 9112 §6.3, §11.2):
 * conflicting or duplicate Content-Length, Transfer-Encoding together with
 * Content-Length, Transfer-Encoding other than exactly "chunked" as the final
 * coding, bare CR or bare LF as line terminators, obs-fold (RFC 9112 §5.2),
 * NUL or other control bytes in the head, whitespace between a field name and
 * its colon, invalid token characters in method or field names, HTTP versions
 * other than 1.0/1.1, oversize request lines or heads, too many fields,
 * bad chunk sizes (non-hex, overflow, missing CRLF), missing or multiple Host
 * in HTTP/1.1 requests. */
#ifndef RETE_H1_PARSE_H
#define RETE_H1_PARSE_H

#include "result.h"
#include "view.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Field values have leading/trailing OWS removed. */
typedef rete_header rete_h1_header;

typedef struct rete_h1_limits {
    size_t max_start_line;   /* request line or status line, bytes (default 8192) */
    size_t max_head;         /* whole head including start line, bytes (default 65536) */
    size_t max_headers;      /* number of fields; also the capacity of the caller's array */
} rete_h1_limits;

#define RETE_H1_LIMITS_DEFAULT ((rete_h1_limits){8192, 65536, 100})

typedef enum rete_h1_body {
    RETE_H1_BODY_NONE,       /* no body follows the head */
    RETE_H1_BODY_LENGTH,     /* content_length bytes follow */
    RETE_H1_BODY_CHUNKED,    /* chunked transfer coding follows */
    RETE_H1_BODY_UNTIL_CLOSE /* responses only: body ends when the connection closes */
} rete_h1_body;

/* What the parser found out about the connection-level semantics. */
enum {
    RETE_H1_F_KEEP_ALIVE = 1u << 0,      /* connection may be reused after this message */
    RETE_H1_F_EXPECT_CONTINUE = 1u << 1, /* request carried Expect: 100-continue */
    RETE_H1_F_UPGRADE = 1u << 2,         /* Connection: upgrade with an Upgrade field */
    RETE_H1_F_HAS_TRAILER_TE = 1u << 3,  /* request carried TE: trailers */
};

typedef struct rete_h1_message {
    /* request */
    rete_view method;
    rete_view target;        /* request-target as sent: origin-form, absolute-form, authority-form or "*" */
    /* response */
    int status;
    rete_view reason;
    /* both */
    int minor_version;       /* 0 or 1 */
    rete_h1_header *headers; /* caller's array of limits->max_headers entries */
    size_t n_headers;
    rete_h1_body body;
    uint64_t content_length; /* valid when body == RETE_H1_BODY_LENGTH */
    unsigned flags;          /* RETE_H1_F_* */
    rete_view host;          /* requests: the Host field value (empty when absent) */
    rete_view upgrade;       /* the Upgrade field value when RETE_H1_F_UPGRADE */
} rete_h1_message;

typedef struct rete_h1_error {
    int status;              /* HTTP status to answer: 400, 413, 414, 431, 501, 505 */
    const char *reason;      /* static string, for logs and the error body */
} rete_h1_error;

/* Parse a request head. `msg->headers` must point at an array of
 * `limits->max_headers` entries. Returns bytes consumed (> 0), RETE_EAGAIN, or
 * RETE_EINVAL / RETE_ELIMIT with `err` filled. */
RETE_MUST_CHECK int rete_h1_parse_request(const char *buf, size_t len, const rete_h1_limits *limits,
                                          rete_h1_message *msg, rete_h1_error *err);

/* Parse a response head. `request_method` decides the body: a response to
 * HEAD, and 1xx/204/304 responses, have none (RFC 9112 §6.3). */
RETE_MUST_CHECK int rete_h1_parse_response(const char *buf, size_t len, const rete_h1_limits *limits,
                                           rete_view request_method, rete_h1_message *msg,
                                           rete_h1_error *err);

/* True when the field is hop-by-hop (RFC 9110 §7.6.1): Connection, Keep-Alive,
 * Proxy-Connection, TE, Transfer-Encoding, Upgrade, Trailer, or named by one of
 * the message's Connection fields. */
bool rete_h1_is_hop_by_hop(const rete_h1_message *msg, rete_view name);

/* Chunked transfer-coding decoder (RFC 9112 §7.1). Incremental: feed it any
 * slice of the body stream; it reports payload spans and the end. */
typedef struct rete_h1_chunked {
    int state;
    uint64_t remaining;      /* bytes left in the current chunk */
    size_t line_len;         /* bytes seen on the current size/trailer line (bounded) */
    size_t trailer_bytes;    /* trailer section bytes seen (bounded by max_trailer) */
    size_t max_trailer;      /* default 8192 */
    char *trailer_buf;       /* allocated lazily when trailers arrive */
    size_t trailer_len;
    bool done;
} rete_h1_chunked;

void rete_h1_chunked_init(rete_h1_chunked *c);

/* Decode from (buf, len). On return, *consumed is the number of input bytes
 * used; if the call produced payload, (*data, *data_len) is a view into buf of
 * payload bytes (the call stops after one payload span, so call again with
 * the rest). Returns RETE_OK while more input is expected, 1 when the final
 * chunk and trailer section are complete, or RETE_EINVAL / RETE_ELIMIT on a
 * malformed or oversize encoding. Trailer fields are kept by the decoder
 * (in a buffer it allocates only when a trailer section is present, bounded
 * by max_trailer) and read with rete_h1_chunked_trailers once it returned 1. */
RETE_MUST_CHECK int rete_h1_chunked_decode(rete_h1_chunked *c, const char *buf, size_t len,
                                           size_t *consumed, const char **data, size_t *data_len);

/* After the decoder returned 1: fill `out` (capacity max) with the trailer
 * fields, views into the decoder's own buffer; returns how many. */
size_t rete_h1_chunked_trailers(const rete_h1_chunked *c, rete_h1_header *out, size_t max);

/* Release the decoder's trailer buffer, if any. */
void rete_h1_chunked_free(rete_h1_chunked *c);

/* Split a request-target (RFC 9112 §3.2) for routing and for requests that
 * arrive through `curl -x`-style forward proxying:
 *  - absolute-form "scheme://authority[/path][?query]" (§3.2.2): fills all
 *    three; *path may be empty (meaning "/") or start with '?'. The scheme is
 *    validated (RFC 3986 §3.1); an empty authority or one carrying userinfo
 *    ("user@host", RFC 9110 §4.2.4) is refused.
 *  - origin-form "/path[?query]" (§3.2.1): *scheme and *authority empty,
 *    *path is the whole target.
 * Returns RETE_OK, or RETE_EINVAL for anything else (authority-form and
 * asterisk-form are used as-is by the caller). Views point into target. */
RETE_MUST_CHECK rete_rc rete_h1_split_target(rete_view target, rete_view *scheme,
                                             rete_view *authority, rete_view *path);

/* Longest chunk-size line rete_h1_chunk_size_line writes: 16 hex digits + CRLF. */
#define RETE_H1_CHUNK_LINE_MAX 18

/* Write the chunk-size line for a chunk of n bytes ("<hex>\r\n", RFC 9112
 * §7.1) into out, which holds RETE_H1_CHUNK_LINE_MAX bytes; returns its
 * length. n == 0 writes the last-chunk line "0\r\n" (the caller adds the
 * trailer section or the final CRLF). */
size_t rete_h1_chunk_size_line(uint64_t n, char out[RETE_H1_CHUNK_LINE_MAX]);

#endif
