/* HTTP/1.1 head parser and chunked decoder (RFC 9112, RFC 9110).
 *
 * One pass over the head: memchr finds each line's LF inside the remaining
 * size budget, then a table-driven loop validates the line's bytes. Nothing
 * is allocated and no byte at or beyond `len` is read. Semantic checks that
 * need the whole head (Transfer-Encoding vs Content-Length, Host, keep-alive)
 * run on a small summary gathered while the fields go by.
 *
 * Choices this file makes where the RFCs leave room (all strict):
 *  - One leading CRLF before a request line is ignored (RFC 9112 §2.2 "SHOULD
 *    ignore at least one empty line"); a second one is refused with 400.
 *  - Transfer-Encoding: only exactly "chunked" (any case), once, is accepted.
 *    A final coding other than chunked -> 400 (RFC 9112 §6.3 rule 4); chunked
 *    as final coding preceded by other codings ("gzip, chunked") -> 501, as we
 *    implement no other coding (RFC 9112 §6.1); "chunked" twice -> 400 (§7);
 *    empty list elements or parameters -> 400. Responses follow the same
 *    rule (a proxy cannot safely frame "until close" behind other codings).
 *  - Any second Content-Length field, even with an equal value, and list
 *    values ("5, 5") -> 400 (RFC 9112 §6.3 rule 5 allows refusing).
 *  - Transfer-Encoding together with Content-Length -> 400 (RFC 9112 §6.1
 *    permits this; we never forward such a message, §11.2).
 *  - Request-target bytes must be VCHAR (0x21-0x7E); obs-text is refused.
 *  - A status line without the SP before an empty reason is accepted. */
#include "h1_parse.h"

#include "alloc.h"

#include <stdlib.h>
#include <string.h>

/* Byte classes, one table lookup per byte. */
enum {
    C_TCHAR = 1,  /* token character (RFC 9110 §5.6.2) */
    C_VALUE = 2,  /* field-value byte: VCHAR / obs-text / SP / HTAB (RFC 9110 §5.5) */
    C_TARGET = 4, /* request-target byte: VCHAR (RFC 9112 §3.2, RFC 3986) */
    C_HOST = 8,   /* uri-host [":" port] byte (RFC 3986 §3.2.2) */
    C_HEX = 16,   /* HEXDIG */
};

static const uint8_t h1_class[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0, /* 0x00 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 0x10 */
     2, 15,  6,  7, 15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15,  6, /* 0x20 */
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 14, 14,  6, 14,  6,  6, /* 0x30 */
     6, 31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14,  6, 14,  7, 15, /* 0x50 */
     7, 31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  6,  7,  6, 15,  0, /* 0x70 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0x80 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0x90 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xa0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xb0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xc0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xd0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xe0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xf0 */
};

static inline bool is_class(char c, unsigned cls)
{
    return (h1_class[(unsigned char)c] & cls) != 0;
}

/* Fill `err` and return `rc`; every reason is a static string. */
static int h1_fail(rete_h1_error *err, int status, const char *reason, int rc)
{
    if (err) {
        err->status = status;
        err->reason = reason;
    }
    return rc;
}

static int h1_bad(rete_h1_error *err, const char *reason)
{
    return h1_fail(err, 400, reason, RETE_EINVAL);
}

/* ---- comma-separated lists (RFC 9110 §5.6.1) ---- */

typedef struct h1_list {
    rete_view rest;
    bool done;
} h1_list;

static h1_list h1_list_make(rete_view v)
{
    return (h1_list){v, false};
}

/* Next OWS-trimmed element, possibly empty; false when the list is spent. */
static bool h1_list_next(h1_list *it, rete_view *out)
{
    if (it->done)
        return false;
    ptrdiff_t comma = rete_view_find(it->rest, ',');
    if (comma < 0) {
        *out = rete_view_trim_ows(it->rest);
        it->done = true;
        return true;
    }
    *out = rete_view_trim_ows(rete_view_sub(it->rest, 0, (size_t)comma));
    it->rest = rete_view_sub(it->rest, (size_t)comma + 1, SIZE_MAX);
    return true;
}

static bool h1_is_token(rete_view v)
{
    if (v.len == 0)
        return false;
    for (size_t i = 0; i < v.len; i++)
        if (!is_class(v.p[i], C_TCHAR))
            return false;
    return true;
}

/* ---- what the field loop learns about the message ---- */

typedef struct h1_scan {
    bool is_request;
    unsigned cl_fields;     /* Content-Length fields seen */
    unsigned te_fields;     /* Transfer-Encoding fields seen */
    unsigned te_chunked;    /* "chunked" codings seen */
    bool te_other;          /* a coding other than chunked was seen */
    bool te_last_chunked;   /* the last coding seen was chunked */
    unsigned host_fields;
    bool conn_close, conn_keep_alive, conn_upgrade;
    bool has_upgrade;
} h1_scan;

/* Transfer-Encoding = #transfer-coding (RFC 9112 §6.1); see the file comment
 * for which codings we accept. Codings accumulate across repeated fields
 * (RFC 9110 §5.3: a repeated field is one list). */
static int h1_scan_te(h1_scan *s, rete_view value, rete_h1_error *err)
{
    s->te_fields++;
    h1_list it = h1_list_make(value);
    rete_view coding;
    while (h1_list_next(&it, &coding)) {
        if (coding.len == 0)
            return h1_bad(err, "empty transfer-coding");
        if (!h1_is_token(coding)) {
            if (rete_view_find(coding, ';') >= 0)
                return h1_fail(err, 501, "transfer-coding parameters not implemented", RETE_EINVAL);
            return h1_bad(err, "malformed Transfer-Encoding");
        }
        if (rete_view_ieq(coding, RETE_VIEW_LIT("chunked"))) {
            s->te_chunked++;
            s->te_last_chunked = true;
        } else {
            s->te_other = true;
            s->te_last_chunked = false;
        }
    }
    return RETE_OK;
}

/* Connection = #connection-option (RFC 9110 §7.6.1). */
static void h1_scan_connection(h1_scan *s, rete_view value)
{
    h1_list it = h1_list_make(value);
    rete_view opt;
    while (h1_list_next(&it, &opt)) {
        if (rete_view_ieq(opt, RETE_VIEW_LIT("close")))
            s->conn_close = true;
        else if (rete_view_ieq(opt, RETE_VIEW_LIT("keep-alive")))
            s->conn_keep_alive = true;
        else if (rete_view_ieq(opt, RETE_VIEW_LIT("upgrade")))
            s->conn_upgrade = true;
    }
}

/* TE = #t-codings (RFC 9110 §10.1.4); "trailers" may carry no parameters
 * but we look only at the token before any ';'. */
static bool h1_te_has_trailers(rete_view value)
{
    h1_list it = h1_list_make(value);
    rete_view e;
    while (h1_list_next(&it, &e)) {
        ptrdiff_t semi = rete_view_find(e, ';');
        if (semi >= 0)
            e = rete_view_trim_ows(rete_view_sub(e, 0, (size_t)semi));
        if (rete_view_ieq(e, RETE_VIEW_LIT("trailers")))
            return true;
    }
    return false;
}

/* Look at one field as it is stored; returns RETE_OK or an error. */
static int h1_scan_field(h1_scan *s, rete_h1_message *msg, const rete_h1_header *h,
                         rete_h1_error *err)
{
    rete_view n = h->name, v = h->value;
    switch (n.len) {
    case 2:
        if (s->is_request && rete_view_ieq(n, RETE_VIEW_LIT("te")) && h1_te_has_trailers(v))
            msg->flags |= RETE_H1_F_HAS_TRAILER_TE;
        break;
    case 4:
        if (s->is_request && rete_view_ieq(n, RETE_VIEW_LIT("host"))) {
            /* RFC 9112 §3.2: more than one Host field -> 400. */
            if (++s->host_fields > 1)
                return h1_bad(err, "multiple Host fields");
            for (size_t i = 0; i < v.len; i++)
                if (!is_class(v.p[i], C_HOST))
                    return h1_bad(err, "invalid Host");
            msg->host = v;
        }
        break;
    case 6:
        if (s->is_request && rete_view_ieq(n, RETE_VIEW_LIT("expect")) &&
            rete_view_ieq(v, RETE_VIEW_LIT("100-continue")))
            msg->flags |= RETE_H1_F_EXPECT_CONTINUE; /* RFC 9110 §10.1.1 */
        break;
    case 7:
        if (rete_view_ieq(n, RETE_VIEW_LIT("upgrade")) && !s->has_upgrade) {
            s->has_upgrade = true;
            msg->upgrade = v;
        }
        break;
    case 10:
        if (rete_view_ieq(n, RETE_VIEW_LIT("connection")))
            h1_scan_connection(s, v);
        break;
    case 14:
        if (rete_view_ieq(n, RETE_VIEW_LIT("content-length"))) {
            /* RFC 9112 §6.3 rule 5: duplicates and lists are refused outright,
             * even when the values agree. Content-Length = 1*DIGIT. */
            if (++s->cl_fields > 1)
                return h1_bad(err, "duplicate Content-Length");
            if (!rete_view_to_u64(v, &msg->content_length))
                return h1_bad(err, "invalid Content-Length");
        }
        break;
    case 17:
        if (rete_view_ieq(n, RETE_VIEW_LIT("transfer-encoding")))
            return h1_scan_te(s, v, err);
        break;
    default:
        break;
    }
    return RETE_OK;
}

/* True when every byte of [p, p + n) may appear in a field value: VCHAR,
 * obs-text, SP or HTAB (RFC 9110 §5.5). Eight bytes at a time while none is
 * below 0x20 or equal to 0x7F (SWAR; HTAB sends the word to the byte loop),
 * never reading past p + n. */
static bool h1_value_ok(const char *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        uint64_t below_sp = (x - ones * 0x20) & ~x & highs;
        uint64_t y = x ^ (ones * 0x7f);
        uint64_t is_del = (y - ones) & ~y & highs;
        if (below_sp | is_del) {
            for (size_t k = i; k < i + 8; k++)
                if (!is_class(p[k], C_VALUE))
                    return false;
        }
    }
    for (; i < n; i++)
        if (!is_class(p[i], C_VALUE))
            return false;
    return true;
}

/* Parse the field lines from `pos` through the empty line that ends the head
 * (RFC 9112 §5). Returns the head length, RETE_EAGAIN, or an error. */
static int h1_parse_fields(const char *buf, size_t len, size_t pos, const rete_h1_limits *lim,
                           rete_h1_message *msg, h1_scan *s, rete_h1_error *err)
{
    for (;;) {
        size_t budget = lim->max_head > pos ? lim->max_head - pos : 0;
        size_t avail = len - pos;
        size_t window = avail < budget ? avail : budget;
        const char *lf = window ? memchr(buf + pos, '\n', window) : NULL;
        if (!lf) {
            /* Oversize is detected before the head is complete. */
            if (avail >= budget)
                return h1_fail(err, 431, "header section too large", RETE_ELIMIT);
            return RETE_EAGAIN;
        }
        size_t lf_at = (size_t)(lf - buf);
        /* RFC 9112 §2.2: we require CRLF; a bare LF is refused. */
        if (lf_at == pos || buf[lf_at - 1] != '\r')
            return h1_bad(err, "bare LF in header section");
        size_t eol = lf_at - 1;
        if (eol == pos) {
            if (lf_at + 1 > (size_t)INT32_MAX)
                return h1_fail(err, 431, "header section too large", RETE_ELIMIT);
            return (int)(lf_at + 1); /* empty line: end of the head */
        }
        /* RFC 9112 §5.2: obs-fold is refused (also before the first field,
         * RFC 9112 §2.2 whitespace between start line and first field). */
        if (buf[pos] == ' ' || buf[pos] == '\t')
            return h1_bad(err, "obs-fold or leading whitespace in header section");
        if (msg->n_headers >= lim->max_headers)
            return h1_fail(err, 431, "too many header fields", RETE_ELIMIT);

        /* field-name = token, then ':' with no whitespace before it (§5.1). */
        size_t p = pos;
        while (p < eol && is_class(buf[p], C_TCHAR))
            p++;
        if (p == eol)
            return h1_bad(err, "header field without colon");
        if (buf[p] != ':') {
            if (buf[p] == ' ' || buf[p] == '\t')
                return h1_bad(err, "whitespace between field name and colon");
            return h1_bad(err, "invalid character in field name");
        }
        if (p == pos)
            return h1_bad(err, "empty field name");

        /* field-value: VCHAR / obs-text / SP / HTAB; NUL, bare CR and other
         * CTLs are refused (RFC 9110 §5.5). */
        if (!h1_value_ok(buf + p + 1, eol - p - 1))
            return h1_bad(err, "control character in field value");

        rete_h1_header *h = &msg->headers[msg->n_headers++];
        h->name = rete_view_make(buf + pos, p - pos);
        h->value = rete_view_trim_ows(rete_view_make(buf + p + 1, eol - p - 1));
        RETE_GUARD(h1_scan_field(s, msg, h, err));
        pos = lf_at + 1;
    }
}

/* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 §2.3). */
static int h1_parse_version(const char *v, size_t n, rete_h1_message *msg, rete_h1_error *err)
{
    if (n == 8 && memcmp(v, "HTTP/1.", 7) == 0 && (v[7] == '0' || v[7] == '1')) {
        msg->minor_version = v[7] - '0';
        return RETE_OK;
    }
    if (n == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
        v[7] >= '0' && v[7] <= '9')
        return h1_fail(err, 505, "HTTP version not supported", RETE_EINVAL);
    return h1_bad(err, "malformed HTTP version");
}

/* Locate the start line at `pos`: returns the index of its CR (the line is
 * [pos, cr)), RETE_EAGAIN, or an error. `too_long_status` is 414 for
 * requests, 400 for responses. */
static int h1_find_start_line(const char *buf, size_t len, size_t pos, const rete_h1_limits *lim,
                              int too_long_status, rete_h1_error *err, size_t *cr)
{
    size_t avail = len - pos;
    size_t window = lim->max_start_line + 2; /* line + CRLF */
    if (window < lim->max_start_line)
        window = SIZE_MAX;
    const char *lf = memchr(buf + pos, '\n', avail < window ? avail : window);
    if (!lf) {
        if (avail >= window)
            return h1_fail(err, too_long_status, "start line too long",
                           too_long_status == 414 ? RETE_ELIMIT : RETE_EINVAL);
        if (len >= lim->max_head)
            return h1_fail(err, 431, "header section too large", RETE_ELIMIT);
        return RETE_EAGAIN;
    }
    size_t lf_at = (size_t)(lf - buf);
    if (lf_at + 1 > lim->max_head)
        return h1_fail(err, 431, "header section too large", RETE_ELIMIT);
    if (lf_at == pos || buf[lf_at - 1] != '\r')
        return h1_bad(err, "bare LF in start line");
    *cr = lf_at - 1;
    return RETE_OK;
}

static void h1_msg_reset(rete_h1_message *msg)
{
    rete_h1_header *headers = msg->headers;
    *msg = (rete_h1_message){0};
    msg->headers = headers;
}

/* Connection persistence (RFC 9112 §9.3). */
static void h1_set_keep_alive(const h1_scan *s, rete_h1_message *msg)
{
    bool ka = msg->minor_version >= 1 ? !s->conn_close : (s->conn_keep_alive && !s->conn_close);
    if (ka)
        msg->flags |= RETE_H1_F_KEEP_ALIVE;
    /* RFC 9110 §7.8: Upgrade is ignored in HTTP/1.0 messages. */
    if (s->conn_upgrade && s->has_upgrade && msg->minor_version >= 1)
        msg->flags |= RETE_H1_F_UPGRADE;
    else
        msg->upgrade = RETE_VIEW_NULL;
    /* RFC 9110 §10.1.1: a 100-continue expectation in HTTP/1.0 is ignored. */
    if (msg->minor_version == 0)
        msg->flags &= ~(unsigned)RETE_H1_F_EXPECT_CONTINUE;
}

/* Framing checks common to both directions (RFC 9112 §6.1, §6.3). */
static int h1_check_framing(const h1_scan *s, const rete_h1_message *msg, rete_h1_error *err)
{
    if (s->te_fields == 0)
        return RETE_OK;
    if (s->te_chunked == 0 && !s->te_other)
        return h1_bad(err, "empty Transfer-Encoding");
    if (s->te_chunked > 1)
        return h1_bad(err, "chunked applied more than once"); /* RFC 9112 §7 */
    /* RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is suspect. */
    if (s->is_request && msg->minor_version == 0)
        return h1_bad(err, "Transfer-Encoding in HTTP/1.0 request");
    /* RFC 9112 §6.1, §11.2: never forward both. */
    if (s->cl_fields)
        return h1_bad(err, "Transfer-Encoding with Content-Length");
    /* RFC 9112 §6.3 rule 4. */
    if (!s->te_last_chunked)
        return h1_bad(err, "final transfer-coding is not chunked");
    if (s->te_other)
        return h1_fail(err, 501, "transfer-coding not implemented", RETE_EINVAL);
    return RETE_OK;
}

int rete_h1_parse_request(const char *buf, size_t len, const rete_h1_limits *limits,
                          rete_h1_message *msg, rete_h1_error *err)
{
    const rete_h1_limits lim = limits ? *limits : RETE_H1_LIMITS_DEFAULT;
    h1_msg_reset(msg);
    if (len == 0)
        return RETE_EAGAIN;

    /* RFC 9112 §2.2: ignore one empty line before the request line. */
    size_t pos = 0;
    if (buf[0] == '\r') {
        if (len < 2)
            return RETE_EAGAIN;
        if (buf[1] != '\n')
            return h1_bad(err, "bare CR");
        pos = 2;
        if (len > 2 && (buf[2] == '\r' || buf[2] == '\n'))
            return h1_bad(err, "more than one empty line before request line");
        if (len == 2)
            return RETE_EAGAIN;
    }

    size_t eol;
    RETE_GUARD(h1_find_start_line(buf, len, pos, &lim, 414, err, &eol));

    /* request-line = method SP request-target SP HTTP-version (RFC 9112 §3),
     * exactly one SP between the parts. */
    size_t p = pos;
    while (p < eol && is_class(buf[p], C_TCHAR))
        p++;
    if (p == pos || p == eol || buf[p] != ' ')
        return h1_bad(err, "invalid method");
    msg->method = rete_view_make(buf + pos, p - pos);
    size_t t = ++p;
    while (p < eol && is_class(buf[p], C_TARGET))
        p++;
    if (p == t || p == eol || buf[p] != ' ')
        return h1_bad(err, "invalid request-target");
    msg->target = rete_view_make(buf + t, p - t);
    /* CONNECT's target is authority-form (RFC 9112 §3.2.3): the bytes of a
     * Host field, or it could not become the tunnel's :authority
     * (fuzz_h1h2_headers) */
    if (rete_view_eq(msg->method, RETE_VIEW_LIT("CONNECT")))
        for (size_t k = t; k < p; k++)
            if (!is_class(buf[k], C_HOST))
                return h1_bad(err, "invalid request-target");
    p++;
    RETE_GUARD(h1_parse_version(buf + p, eol - p, msg, err));

    h1_scan s = {.is_request = true};
    int head = h1_parse_fields(buf, len, eol + 2, &lim, msg, &s, err);
    if (head < 0)
        return head;
    RETE_GUARD(h1_check_framing(&s, msg, err));
    /* RFC 9112 §3.2: an HTTP/1.1 request without Host -> 400. */
    if (msg->minor_version == 1 && s.host_fields == 0)
        return h1_bad(err, "missing Host");

    if (s.te_fields)
        msg->body = RETE_H1_BODY_CHUNKED;
    else if (s.cl_fields)
        msg->body = RETE_H1_BODY_LENGTH;
    else
        msg->body = RETE_H1_BODY_NONE; /* RFC 9112 §6.3 rule 6 */
    h1_set_keep_alive(&s, msg);
    return head;
}

int rete_h1_parse_response(const char *buf, size_t len, const rete_h1_limits *limits,
                           rete_view request_method, rete_h1_message *msg, rete_h1_error *err)
{
    const rete_h1_limits lim = limits ? *limits : RETE_H1_LIMITS_DEFAULT;
    h1_msg_reset(msg);
    if (len == 0)
        return RETE_EAGAIN;

    size_t eol;
    RETE_GUARD(h1_find_start_line(buf, len, 0, &lim, 400, err, &eol));

    /* status-line = HTTP-version SP status-code SP [ reason-phrase ]
     * (RFC 9112 §4). */
    if (eol < 12 || buf[8] != ' ')
        return h1_bad(err, "malformed status line");
    RETE_GUARD(h1_parse_version(buf, 8, msg, err));
    int status = 0;
    for (size_t i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return h1_bad(err, "malformed status code");
        status = status * 10 + (buf[i] - '0');
    }
    if (status < 100 || status > 599) /* RFC 9110 §15 */
        return h1_bad(err, "status code out of range");
    msg->status = status;
    if (eol > 12) {
        if (buf[12] != ' ')
            return h1_bad(err, "malformed status line");
        for (size_t i = 13; i < eol; i++)
            if (!is_class(buf[i], C_VALUE))
                return h1_bad(err, "control character in reason phrase");
        msg->reason = rete_view_make(buf + 13, eol - 13);
    }

    h1_scan s = {.is_request = false};
    int head = h1_parse_fields(buf, len, eol + 2, &lim, msg, &s, err);
    if (head < 0)
        return head;
    RETE_GUARD(h1_check_framing(&s, msg, err));

    /* RFC 9112 §6.3 rules 1-2: HEAD responses, 1xx, 204, 304 and 2xx to
     * CONNECT (a tunnel follows) have no body. */
    if (rete_view_eq(request_method, RETE_VIEW_LIT("HEAD")) || status < 200 || status == 204 ||
        status == 304 ||
        (status < 300 && rete_view_eq(request_method, RETE_VIEW_LIT("CONNECT"))))
        msg->body = RETE_H1_BODY_NONE;
    else if (s.te_fields)
        msg->body = RETE_H1_BODY_CHUNKED;
    else if (s.cl_fields)
        msg->body = RETE_H1_BODY_LENGTH;
    else
        msg->body = RETE_H1_BODY_UNTIL_CLOSE; /* rule 8 */
    h1_set_keep_alive(&s, msg);
    if (msg->body == RETE_H1_BODY_UNTIL_CLOSE)
        msg->flags &= ~(unsigned)RETE_H1_F_KEEP_ALIVE;
    if (msg->body != RETE_H1_BODY_LENGTH)
        msg->content_length = 0;
    return head;
}

bool rete_h1_is_hop_by_hop(const rete_h1_message *msg, rete_view name)
{
    /* RFC 9110 §7.6.1 and §7.8, plus Keep-Alive / Proxy-Connection
     * (RFC 9112 §9.3, §C.2.2). */
    static const rete_view fixed[] = {
        RETE_VIEW_LIT("connection"), RETE_VIEW_LIT("keep-alive"),
        RETE_VIEW_LIT("proxy-connection"), RETE_VIEW_LIT("te"),
        RETE_VIEW_LIT("transfer-encoding"), RETE_VIEW_LIT("upgrade"),
        RETE_VIEW_LIT("trailer"),
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (rete_view_ieq(name, fixed[i]))
            return true;
    if (!msg)
        return false;
    for (size_t i = 0; i < msg->n_headers; i++) {
        if (!rete_view_ieq(msg->headers[i].name, RETE_VIEW_LIT("connection")))
            continue;
        h1_list it = h1_list_make(msg->headers[i].value);
        rete_view opt;
        while (h1_list_next(&it, &opt))
            if (opt.len && rete_view_ieq(opt, name))
                return true;
    }
    return false;
}

rete_rc rete_h1_split_target(rete_view target, rete_view *scheme, rete_view *authority,
                             rete_view *path)
{
    *scheme = *authority = *path = RETE_VIEW_NULL;
    if (target.len && target.p[0] == '/') {
        *path = target; /* origin-form */
        return RETE_OK;
    }
    /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 §3.1) */
    size_t i = 0;
    while (i < target.len) {
        char c = target.p[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool other = (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
        if (!(alpha || (i > 0 && other)))
            break;
        i++;
    }
    if (i == 0 || target.len - i < 3 || memcmp(target.p + i, "://", 3) != 0)
        return RETE_EINVAL;
    *scheme = rete_view_make(target.p, i);
    size_t a = i + 3, e = a;
    while (e < target.len && target.p[e] != '/' && target.p[e] != '?' && target.p[e] != '#')
        e++;
    *authority = rete_view_make(target.p + a, e - a);
    if (authority->len == 0 || rete_view_find(*authority, '@') >= 0)
        return RETE_EINVAL; /* RFC 9110 §4.2.4: userinfo is an error */
    /* the same bytes as a Host field (uri-host [":" port]): what would not
     * pass as one must not become the request's authority either (found by
     * fuzz_h1h2_headers: "http://a:<1/" reached the exchange, and the mesh
     * hop's HTTP/2 peer refused the :authority) */
    for (size_t k = 0; k < authority->len; k++)
        if (!is_class(authority->p[k], C_HOST))
            return RETE_EINVAL;
    *path = rete_view_make(target.p + e, target.len - e);
    return RETE_OK;
}

size_t rete_h1_chunk_size_line(uint64_t n, char out[RETE_H1_CHUNK_LINE_MAX])
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t k = 0;
    do {
        tmp[k++] = hex[n & 15];
        n >>= 4;
    } while (n);
    for (size_t i = 0; i < k; i++)
        out[i] = tmp[k - 1 - i];
    out[k] = '\r';
    out[k + 1] = '\n';
    return k + 2;
}

/* ---- chunked transfer coding (RFC 9112 §7.1) ----
 *
 * chunked-body = *chunk last-chunk trailer-section CRLF
 * chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 * One state per grammar position; every byte outside the payload goes
 * through the switch once, so any split of the input decodes the same. */

enum {
    CK_SIZE_FIRST, /* first HEXDIG of chunk-size */
    CK_SIZE,       /* further HEXDIGs */
    CK_SIZE_BWS,   /* BWS after the size: only ';' or more BWS may follow (§7.1.1) */
    CK_EXT,        /* chunk-ext, validated loosely: field-value bytes up to CR */
    CK_SIZE_LF,    /* LF ending the size line */
    CK_DATA,       /* chunk-data */
    CK_DATA_CR,    /* CRLF after chunk-data */
    CK_DATA_LF,
    CK_TRAILER_START, /* start of a trailer field line, or the final CRLF (§7.1.2) */
    CK_TRAILER_NAME,
    CK_TRAILER_VALUE,
    CK_TRAILER_LF,
    CK_END_LF,
    CK_DONE,
    CK_ERROR,
};

/* Bound on a chunk-size line including its extensions. */
#define CK_MAX_SIZE_LINE 4096
/* 16 hex digits fill a uint64_t; more would overflow. */
#define CK_MAX_SIZE_DIGITS 16

void rete_h1_chunked_init(rete_h1_chunked *c)
{
    *c = (rete_h1_chunked){.state = CK_SIZE_FIRST, .max_trailer = 8192};
}

void rete_h1_chunked_free(rete_h1_chunked *c)
{
    rete_free(&c->trailer_buf);
    c->trailer_len = 0;
}

static unsigned ck_hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return (unsigned)(ch - '0');
    return (unsigned)(rete_ascii_lower(ch) - 'a' + 10);
}

/* Append one trailer byte into the lazily allocated, bounded buffer. */
static int ck_trailer_put(rete_h1_chunked *c, char ch)
{
    if (c->trailer_bytes >= c->max_trailer)
        return RETE_ELIMIT;
    if (!c->trailer_buf)
        c->trailer_buf = rete_malloc(c->max_trailer);
    c->trailer_buf[c->trailer_len++] = ch;
    c->trailer_bytes++;
    return RETE_OK;
}

int rete_h1_chunked_decode(rete_h1_chunked *c, const char *buf, size_t len, size_t *consumed,
                           const char **data, size_t *data_len)
{
    *consumed = 0;
    *data = NULL;
    *data_len = 0;
    if (c->state == CK_DONE)
        return 1;
    if (c->state == CK_ERROR)
        return RETE_EINVAL; /* a failed decoder stays failed */
    int rc = RETE_EINVAL;
    size_t i = 0;
    while (i < len) {
        char ch = buf[i];
        switch (c->state) {
        case CK_SIZE_FIRST:
            if (!is_class(ch, C_HEX))
                goto fail;
            c->remaining = ck_hexval(ch);
            c->line_len = 1;
            c->state = CK_SIZE;
            break;
        case CK_SIZE:
            if (++c->line_len > CK_MAX_SIZE_LINE) {
                rc = RETE_ELIMIT;
                goto fail;
            }
            if (is_class(ch, C_HEX)) {
                if (c->line_len > CK_MAX_SIZE_DIGITS) /* line_len == digits here */
                    goto fail;
                c->remaining = (c->remaining << 4) | ck_hexval(ch);
            } else if (ch == ';') {
                c->state = CK_EXT;
            } else if (ch == ' ' || ch == '\t') {
                c->state = CK_SIZE_BWS;
            } else if (ch == '\r') {
                c->state = CK_SIZE_LF;
            } else {
                goto fail;
            }
            break;
        case CK_SIZE_BWS:
            if (++c->line_len > CK_MAX_SIZE_LINE) {
                rc = RETE_ELIMIT;
                goto fail;
            }
            if (ch == ';')
                c->state = CK_EXT;
            else if (ch != ' ' && ch != '\t')
                goto fail; /* whitespace inside the size, or before CR */
            break;
        case CK_EXT:
            if (++c->line_len > CK_MAX_SIZE_LINE) {
                rc = RETE_ELIMIT;
                goto fail;
            }
            if (ch == '\r')
                c->state = CK_SIZE_LF;
            else if (!is_class(ch, C_VALUE))
                goto fail;
            break;
        case CK_SIZE_LF:
            if (ch != '\n')
                goto fail;
            c->state = c->remaining ? CK_DATA : CK_TRAILER_START;
            break;
        case CK_DATA: {
            size_t n = len - i;
            if ((uint64_t)n > c->remaining)
                n = (size_t)c->remaining;
            *data = buf + i;
            *data_len = n;
            c->remaining -= n;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            *consumed = i + n;
            return RETE_OK;
        }
        case CK_DATA_CR:
            if (ch != '\r')
                goto fail;
            c->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (ch != '\n')
                goto fail;
            c->state = CK_SIZE_FIRST;
            break;
        case CK_TRAILER_START:
            if (ch == '\r') {
                c->state = CK_END_LF;
                break;
            }
            if (!is_class(ch, C_TCHAR)) /* also refuses obs-fold (§5.2) */
                goto fail;
            c->state = CK_TRAILER_NAME;
            if ((rc = ck_trailer_put(c, ch)) < 0)
                goto fail;
            break;
        case CK_TRAILER_NAME:
            if (ch == ':')
                c->state = CK_TRAILER_VALUE;
            else if (!is_class(ch, C_TCHAR))
                goto fail;
            if ((rc = ck_trailer_put(c, ch)) < 0)
                goto fail;
            break;
        case CK_TRAILER_VALUE:
            if (ch == '\r')
                c->state = CK_TRAILER_LF;
            else if (!is_class(ch, C_VALUE))
                goto fail;
            if ((rc = ck_trailer_put(c, ch)) < 0)
                goto fail;
            break;
        case CK_TRAILER_LF:
            if (ch != '\n')
                goto fail;
            c->state = CK_TRAILER_START;
            if ((rc = ck_trailer_put(c, ch)) < 0)
                goto fail;
            break;
        case CK_END_LF:
            if (ch != '\n')
                goto fail;
            c->state = CK_DONE;
            c->done = true;
            *consumed = i + 1;
            return 1;
        case CK_ERROR:
        default:
            goto fail;
        }
        i++;
    }
    *consumed = len;
    return RETE_OK;
fail:
    c->state = CK_ERROR;
    *consumed = i;
    return rc < 0 ? rc : RETE_EINVAL;
}

size_t rete_h1_chunked_trailers(const rete_h1_chunked *c, rete_h1_header *out, size_t max)
{
    if (!c->done || !c->trailer_buf)
        return 0;
    /* The buffer holds validated "name:value\r\n" lines. */
    size_t n = 0, p = 0;
    while (p < c->trailer_len && n < max) {
        rete_view line = rete_view_make(c->trailer_buf + p, c->trailer_len - p);
        ptrdiff_t lf = rete_view_find(line, '\n');
        ptrdiff_t colon = rete_view_find(line, ':');
        if (lf < 2 || colon < 0 || colon > lf)
            break;
        out[n].name = rete_view_make(line.p, (size_t)colon);
        out[n].value = rete_view_trim_ows(
            rete_view_make(line.p + colon + 1, (size_t)(lf - 1 - (colon + 1))));
        n++;
        p += (size_t)lf + 1;
    }
    return n;
}
