/* Trace context parsers: see trace_ctx.h. */
#include "trace_ctx.h"

#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* both specifications use lower-case hex only */
}

/* n hex chars at p into n/2 bytes; false on a non-hex char. */
static bool unhex(const char *p, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval(p[i]), lo = hexval(p[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

void rete_trace_hex(char *out, const uint8_t *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

bool rete_trace_parse_traceparent(rete_view v, rete_trace_ctx *out)
{
    /* version "-" trace-id "-" parent-id "-" trace-flags: 2+1+32+1+16+1+2 */
    if (v.len < 55 || v.p[2] != '-' || v.p[35] != '-' || v.p[52] != '-')
        return false;
    uint8_t ver, flags;
    rete_trace_ctx c = {0};
    if (!unhex(v.p, 2, &ver) || ver == 0xff || (ver == 0 && v.len != 55) || (ver != 0 && v.len > 55 && v.p[55] != '-'))
        return false;
    if (!unhex(v.p + 3, 32, c.trace_id) || !unhex(v.p + 36, 16, c.span_id) || !unhex(v.p + 53, 2, &flags))
        return false;
    if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
        return false;
    c.has_ids = true;
    c.sampled = (int8_t)(flags & 1);
    *out = c;
    return true;
}

/* A B3 trace id: 16 or 32 hex, not all zero. */
static bool b3_trace_id(rete_view v, uint8_t out[16])
{
    memset(out, 0, 16);
    if (v.len != 16 && v.len != 32)
        return false;
    return unhex(v.p, v.len, out + (32 - v.len) / 2) && !all_zero(out, 16);
}

static bool b3_span_id(rete_view v, uint8_t out[8])
{
    return v.len == 16 && unhex(v.p, 16, out) && !all_zero(out, 8);
}

static int8_t b3_sampled(rete_view v)
{
    if (rete_view_eq(v, RETE_VIEW_LIT("1")) || rete_view_eq(v, RETE_VIEW_LIT("d")) ||
        rete_view_eq(v, RETE_VIEW_LIT("true")))
        return 1;
    if (rete_view_eq(v, RETE_VIEW_LIT("0")) || rete_view_eq(v, RETE_VIEW_LIT("false")))
        return 0;
    return -2; /* invalid */
}

bool rete_trace_parse_b3(rete_view v, rete_trace_ctx *out)
{
    rete_trace_ctx c = {.sampled = -1};
    if (v.len == 1) { /* a decision alone */
        c.sampled = b3_sampled(v);
        if (c.sampled < 0)
            return false;
        *out = c;
        return true;
    }
    rete_view part[4];
    size_t n = 0, at = 0;
    while (at <= v.len && n < 4) {
        ptrdiff_t dash = rete_view_find(rete_view_sub(v, at, v.len - at), '-');
        size_t len = dash < 0 ? v.len - at : (size_t)dash;
        part[n++] = rete_view_sub(v, at, len);
        at += len + 1;
        if (dash < 0)
            break;
    }
    if (at <= v.len || n < 2) /* a fifth field, or a trailing '-' */
        return false;
    if (!b3_trace_id(part[0], c.trace_id) || !b3_span_id(part[1], c.span_id))
        return false;
    if (n >= 3 && (c.sampled = b3_sampled(part[2])) < -1)
        return false;
    uint8_t parent[8];
    if (n == 4 && !b3_span_id(part[3], parent))
        return false;
    c.has_ids = true;
    *out = c;
    return true;
}

bool rete_trace_parse_b3_multi(rete_view trace_id, rete_view span_id, rete_view sampled, rete_view flags,
                               rete_trace_ctx *out)
{
    rete_trace_ctx c = {.sampled = -1};
    if (sampled.len && (c.sampled = b3_sampled(sampled)) < -1)
        return false;
    if (rete_view_eq(flags, RETE_VIEW_LIT("1")))
        c.sampled = 1;
    if (trace_id.len || span_id.len) {
        if (!b3_trace_id(trace_id, c.trace_id) || !b3_span_id(span_id, c.span_id))
            return false;
        c.has_ids = true;
    } else if (c.sampled < 0) {
        return false;
    }
    *out = c;
    return true;
}
