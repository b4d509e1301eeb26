/* Minimal HTTP/1.1 response framing for the load generator; see h1_min.h. */
#include "h1_min.h"

/* Index of the first CRLF at or after `from`, or -1. */
static ptrdiff_t find_crlf(const char *buf, size_t len, size_t from)
{
    for (size_t i = from; i + 1 < len; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n')
            return (ptrdiff_t)i;
    return -1;
}

static int fail(rete_h1_error *err, int rc, const char *reason)
{
    err->status = 502;
    err->reason = reason;
    return rc;
}

int bench_h1_parse_response(const char *buf, size_t len, const rete_h1_limits *limits,
                            rete_view request_method, rete_h1_message *msg, rete_h1_error *err)
{
    ptrdiff_t eol = find_crlf(buf, len, 0);
    if (eol < 0)
        return len > limits->max_start_line ? fail(err, RETE_ELIMIT, "status line too long")
                                             : RETE_EAGAIN;
    rete_view line = rete_view_make(buf, (size_t)eol);
    /* "HTTP/1.x SSS" at least (RFC 9112 §4). */
    if (line.len < 12 || !rete_view_has_prefix(line, RETE_VIEW_LIT("HTTP/1.")) || line.p[8] != ' ')
        return fail(err, RETE_EINVAL, "bad status line");
    msg->minor_version = line.p[7] - '0';
    uint64_t status = 0;
    if (!rete_view_to_u64(rete_view_sub(line, 9, 3), &status) || status < 100 || status > 999)
        return fail(err, RETE_EINVAL, "bad status code");
    msg->status = (int)status;
    msg->reason = rete_view_sub(line, 13, line.len);
    msg->n_headers = 0;
    msg->body = RETE_H1_BODY_UNTIL_CLOSE;
    msg->content_length = 0;
    msg->flags = msg->minor_version >= 1 ? RETE_H1_F_KEEP_ALIVE : 0;

    bool have_length = false, chunked = false;
    size_t pos = (size_t)eol + 2;
    for (;;) {
        eol = find_crlf(buf, len, pos);
        if (eol < 0)
            return len > limits->max_head ? fail(err, RETE_ELIMIT, "head too long") : RETE_EAGAIN;
        if ((size_t)eol == pos) {
            pos += 2;
            break;
        }
        rete_view field = rete_view_make(buf + pos, (size_t)eol - pos);
        pos = (size_t)eol + 2;
        ptrdiff_t colon = rete_view_find(field, ':');
        if (colon <= 0)
            return fail(err, RETE_EINVAL, "bad header field");
        rete_view name = rete_view_sub(field, 0, (size_t)colon);
        rete_view value = rete_view_trim_ows(rete_view_sub(field, (size_t)colon + 1, field.len));
        if (msg->n_headers < limits->max_headers)
            msg->headers[msg->n_headers++] = (rete_h1_header){name, value};
        if (rete_view_ieq(name, RETE_VIEW_LIT("content-length"))) {
            if (have_length || !rete_view_to_u64(value, &msg->content_length))
                return fail(err, RETE_EINVAL, "bad content-length");
            have_length = true;
        } else if (rete_view_ieq(name, RETE_VIEW_LIT("transfer-encoding"))) {
            chunked = rete_view_ihas_suffix(value, RETE_VIEW_LIT("chunked"));
        } else if (rete_view_ieq(name, RETE_VIEW_LIT("connection"))) {
            if (rete_view_ieq(value, RETE_VIEW_LIT("close")))
                msg->flags &= ~(unsigned)RETE_H1_F_KEEP_ALIVE;
            else if (rete_view_ieq(value, RETE_VIEW_LIT("keep-alive")))
                msg->flags |= RETE_H1_F_KEEP_ALIVE;
        }
    }
    /* RFC 9112 §6.3: HEAD, 1xx, 204 and 304 have no body. */
    if (rete_view_eq(request_method, RETE_VIEW_LIT("HEAD")) || msg->status < 200 ||
        msg->status == 204 || msg->status == 304)
        msg->body = RETE_H1_BODY_NONE;
    else if (chunked)
        msg->body = RETE_H1_BODY_CHUNKED;
    else if (have_length)
        msg->body = msg->content_length ? RETE_H1_BODY_LENGTH : RETE_H1_BODY_NONE;
    if (msg->body == RETE_H1_BODY_UNTIL_CLOSE)
        msg->flags &= ~(unsigned)RETE_H1_F_KEEP_ALIVE;
    return (int)pos;
}

enum { CK_SIZE, CK_SIZE_EXT, CK_SIZE_LF, CK_DATA, CK_DATA_CR, CK_DATA_LF, CK_TRAILER, CK_TRAILER_LF };

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = rete_ascii_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* RFC 9112 §7.1: chunk-size [ext] CRLF data CRLF ... 0 CRLF *(trailer CRLF) CRLF.
 * `line_len` counts the bytes of the current trailer line. */
int bench_h1_chunked_skip(rete_h1_chunked *c, const char *buf, size_t len, size_t *consumed)
{
    size_t i = 0;
    while (i < len) {
        char ch = buf[i];
        switch (c->state) {
        case CK_SIZE:
            if (hexval(ch) >= 0) {
                if (c->remaining >> 60)
                    return RETE_EINVAL;
                c->remaining = c->remaining * 16 + (uint64_t)hexval(ch);
                i++;
            } else if (ch == '\r') {
                c->state = CK_SIZE_LF;
                i++;
            } else {
                c->state = CK_SIZE_EXT;
            }
            break;
        case CK_SIZE_EXT:
            if (ch == '\r')
                c->state = CK_SIZE_LF;
            i++;
            break;
        case CK_SIZE_LF:
            if (ch != '\n')
                return RETE_EINVAL;
            i++;
            c->state = c->remaining ? CK_DATA : CK_TRAILER;
            c->line_len = 0;
            break;
        case CK_DATA: {
            size_t take = len - i < c->remaining ? len - i : (size_t)c->remaining;
            c->remaining -= take;
            i += take;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            break;
        }
        case CK_DATA_CR:
            if (ch != '\r')
                return RETE_EINVAL;
            c->state = CK_DATA_LF;
            i++;
            break;
        case CK_DATA_LF:
            if (ch != '\n')
                return RETE_EINVAL;
            c->state = CK_SIZE;
            i++;
            break;
        case CK_TRAILER:
            if (ch == '\r')
                c->state = CK_TRAILER_LF;
            else
                c->line_len++;
            i++;
            break;
        case CK_TRAILER_LF:
            if (ch != '\n')
                return RETE_EINVAL;
            i++;
            if (c->line_len == 0) {
                c->done = true;
                *consumed = i;
                return 1;
            }
            c->line_len = 0;
            c->state = CK_TRAILER;
            break;
        default:
            return RETE_EINVAL;
        }
    }
    *consumed = i;
    return RETE_OK;
}
