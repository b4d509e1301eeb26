/* Request-path normalisation: see path_norm.h for the contract.
 *
 * Two passes over bounded buffers: decode (escapes, backslashes) from the
 * target into out, then remove dot segments (and merge slashes) in place in
 * out. The second pass never writes past what it has read (each "/seg" it
 * keeps was consumed first), so in place is safe; a ".." only walks back over
 * bytes it wrote, each at most once, so both passes are linear. */
#include "path_norm.h"

#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = rete_ascii_lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool unreserved(int c)
{
    /* RFC 3986 §2.3 */
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Bytes never valid in a request-target (RFC 9112 §3.2, RFC 3986 §2):
 * what HTTP/1.1's parser refuses too, checked again for HTTP/2's :path. */
static rete_path_norm_result check_bytes(rete_view t)
{
    for (size_t i = 0; i < t.len; i++) {
        unsigned char c = (unsigned char)t.p[i];
        if (c == '#')
            return RETE_PATH_FRAGMENT;
        if (c <= 0x20 || c >= 0x7f)
            return RETE_PATH_BAD_CHAR;
    }
    return RETE_PATH_OK;
}

/* "%00" in the path: decoded by the app into a NUL, which C apps read as
 * the end of the path. */
static bool has_encoded_nul(rete_view path)
{
    for (size_t i = 0; i + 2 < path.len; i++)
        if (path.p[i] == '%' && path.p[i + 1] == '0' && path.p[i + 2] == '0')
            return true;
    return false;
}

static const char HEX[] = "0123456789ABCDEF";

/* Pass 1: path (no query) into out; returns the length through *n. */
static rete_path_norm_result decode(rete_view path, bool decode_slashes, char *out, size_t cap,
                                    size_t *n)
{
    size_t o = 0;
    for (size_t i = 0; i < path.len; i++) {
        char c = path.p[i];
        if (o >= cap)
            return RETE_PATH_TOO_LONG;
        if (c == '\\') {
            if (!decode_slashes)
                return RETE_PATH_BACKSLASH;
            out[o++] = '/';
            continue;
        }
        if (c != '%') {
            out[o++] = c;
            continue;
        }
        int hi = i + 2 < path.len ? hexval(path.p[i + 1]) : -1;
        int lo = i + 2 < path.len ? hexval(path.p[i + 2]) : -1;
        if (hi < 0 || lo < 0)
            return RETE_PATH_BAD_ESCAPE;
        int v = hi * 16 + lo;
        i += 2;
        if (v == '/' || v == '\\') {
            if (!decode_slashes)
                return RETE_PATH_ESCAPED_SLASH;
            out[o++] = '/';
        } else if (unreserved(v)) {
            out[o++] = (char)v;
        } else {
            if (o + 3 > cap)
                return RETE_PATH_TOO_LONG;
            out[o++] = '%';
            out[o++] = HEX[hi];
            out[o++] = HEX[lo];
        }
    }
    *n = o;
    return RETE_PATH_OK;
}

static bool is_dot_segment_with_params(rete_view seg)
{
    return (seg.len >= 2 && seg.p[0] == '.' && seg.p[1] == ';') ||
           (seg.len >= 3 && seg.p[0] == '.' && seg.p[1] == '.' && seg.p[2] == ';');
}

/* Pass 2, in place over buf[0..n) which starts with '/': RFC 3986 §5.2.4
 * remove_dot_segments, optionally dropping empty segments (merge). */
static rete_path_norm_result remove_dots(char *buf, size_t n, bool merge, size_t *out_n)
{
    size_t o = 0;
    size_t i = 1; /* past the leading '/' */
    for (;;) {
        size_t start = i;
        while (i < n && buf[i] != '/')
            i++;
        rete_view seg = rete_view_make(buf + start, i - start);
        bool last = i >= n;
        bool dir = false; /* the path ends in a directory: trailing '/' */
        if (seg.len == 1 && seg.p[0] == '.') {
            dir = last;
        } else if (seg.len == 2 && seg.p[0] == '.' && seg.p[1] == '.') {
            while (o > 0 && buf[o - 1] != '/')
                o--;
            if (o > 0)
                o--; /* and the '/' before the popped segment */
            dir = last;
        } else if (is_dot_segment_with_params(seg)) {
            return RETE_PATH_AMBIGUOUS_SEGMENT;
        } else if (seg.len == 0 && merge && !last) {
            /* "//": one slash */
        } else {
            buf[o++] = '/';
            memmove(buf + o, seg.p, seg.len);
            o += seg.len;
        }
        if (last) {
            if (dir || o == 0)
                buf[o++] = '/';
            break;
        }
        i++; /* the '/' */
    }
    *out_n = o;
    return RETE_PATH_OK;
}

rete_view rete_path_without_query(rete_view target)
{
    ptrdiff_t q = rete_view_find(target, '?');
    return q < 0 ? target : rete_view_make(target.p, (size_t)q);
}

rete_path_norm_result rete_path_normalize(rete_view target, rete_path_norm_mode mode, char *out,
                                          size_t cap, size_t *out_len)
{
    *out_len = 0;
    if (target.len == 0)
        return RETE_PATH_NOT_ORIGIN_FORM;
    rete_path_norm_result r = check_bytes(target);
    if (r != RETE_PATH_OK)
        return r;
    /* Only origin form is forwarded: asterisk form (OPTIONS *) addresses the
     * proxy itself (RFC 9112 §3.2.4) and carries no path to authorise. */
    if (target.p[0] != '/')
        return RETE_PATH_NOT_ORIGIN_FORM;
    rete_view path = rete_path_without_query(target);
    rete_view query = rete_view_make(target.p + path.len, target.len - path.len);
    if (has_encoded_nul(path))
        return RETE_PATH_BAD_CHAR;
    size_t n = 0;
    switch (mode) {
    case RETE_PATH_NORM_NONE:
        if (path.len > cap)
            return RETE_PATH_TOO_LONG;
        memcpy(out, path.p, path.len);
        n = path.len;
        break;
    case RETE_PATH_NORM_BASE:
    case RETE_PATH_NORM_MERGE_SLASHES:
    case RETE_PATH_NORM_DECODE_AND_MERGE_SLASHES: {
        bool decode_slashes = mode == RETE_PATH_NORM_DECODE_AND_MERGE_SLASHES;
        r = decode(path, decode_slashes, out, cap, &n);
        if (r != RETE_PATH_OK)
            return r;
        r = remove_dots(out, n, mode != RETE_PATH_NORM_BASE, &n);
        if (r != RETE_PATH_OK)
            return r;
        break;
    }
    default:
        return RETE_PATH_NOT_ORIGIN_FORM;
    }
    if (query.len > cap - n)
        return RETE_PATH_TOO_LONG;
    memcpy(out + n, query.p, query.len);
    *out_len = n + query.len;
    return RETE_PATH_OK;
}

const char *rete_path_norm_reason(rete_path_norm_result r)
{
    switch (r) {
    case RETE_PATH_OK: return "ok";
    case RETE_PATH_NOT_ORIGIN_FORM: return "not_origin_form";
    case RETE_PATH_FRAGMENT: return "fragment";
    case RETE_PATH_BAD_CHAR: return "bad_char";
    case RETE_PATH_BAD_ESCAPE: return "bad_escape";
    case RETE_PATH_ESCAPED_SLASH: return "escaped_slash";
    case RETE_PATH_BACKSLASH: return "backslash";
    case RETE_PATH_AMBIGUOUS_SEGMENT: return "ambiguous_segment";
    case RETE_PATH_TOO_LONG: return "too_long";
    case RETE_PATH_RESULT_COUNT:
    default: return "unknown";
    }
}

const char *rete_path_norm_mode_name(rete_path_norm_mode m)
{
    switch (m) {
    case RETE_PATH_NORM_NONE: return "NONE";
    case RETE_PATH_NORM_BASE: return "BASE";
    case RETE_PATH_NORM_MERGE_SLASHES: return "MERGE_SLASHES";
    case RETE_PATH_NORM_DECODE_AND_MERGE_SLASHES: return "DECODE_AND_MERGE_SLASHES";
    default: return "?";
    }
}
