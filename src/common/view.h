/* Pointer+length views over bytes we do not own (HAProxy's ist, s2n's stuffer).
 * Network bytes are never NUL-terminated: everything that reads them goes
 * through these helpers, never through strstr/sscanf/strcpy. */
#ifndef RETE_VIEW_H
#define RETE_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct rete_view {
    const char *p;
    size_t len;
} rete_view;

/* One header field as views: the shape every codec hands to the router. */
typedef struct rete_header {
    rete_view name;
    rete_view value;
} rete_header;

#define RETE_VIEW_LIT(s) ((rete_view){(s), sizeof(s) - 1})
#define RETE_VIEW_NULL ((rete_view){NULL, 0})

static inline rete_view rete_view_make(const char *p, size_t len)
{
    return (rete_view){p, len};
}

static inline rete_view rete_view_cstr(const char *s)
{
    return (rete_view){s, s ? strlen(s) : 0};
}

static inline bool rete_view_eq(rete_view a, rete_view b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline char rete_ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}

/* ASCII case-insensitive equality (header names, methods are case-sensitive). */
static inline bool rete_view_ieq(rete_view a, rete_view b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++)
        if (rete_ascii_lower(a.p[i]) != rete_ascii_lower(b.p[i]))
            return false;
    return true;
}

static inline bool rete_view_has_prefix(rete_view v, rete_view prefix)
{
    return v.len >= prefix.len && memcmp(v.p, prefix.p, prefix.len) == 0;
}

static inline bool rete_view_ihas_suffix(rete_view v, rete_view suffix)
{
    return v.len >= suffix.len &&
           rete_view_ieq(rete_view_make(v.p + v.len - suffix.len, suffix.len), suffix);
}

/* Istio's string match (AuthorizationPolicy values, principals): "*"
 * matches any non-empty value, "prefix*" and "*suffix" match by prefix and
 * suffix, anything else exactly. Case-sensitive. */
static inline bool rete_view_istio_match(rete_view pattern, rete_view v)
{
    rete_view p = pattern;
    if (p.len == 1 && p.p[0] == '*')
        return v.len > 0;
    if (p.len > 1 && p.p[p.len - 1] == '*')
        return rete_view_has_prefix(v, rete_view_make(p.p, p.len - 1));
    if (p.len > 1 && p.p[0] == '*') {
        rete_view suf = rete_view_make(p.p + 1, p.len - 1);
        return v.len >= suf.len && memcmp(v.p + v.len - suf.len, suf.p, suf.len) == 0;
    }
    return rete_view_eq(p, v);
}

/* Index of the first `c` in v, or -1. */
static inline ptrdiff_t rete_view_find(rete_view v, char c)
{
    const char *hit = v.len ? memchr(v.p, c, v.len) : NULL;
    return hit ? hit - v.p : -1;
}

static inline rete_view rete_view_sub(rete_view v, size_t from, size_t len)
{
    if (from > v.len)
        from = v.len;
    if (len > v.len - from)
        len = v.len - from;
    return (rete_view){v.p + from, len};
}

/* Strip optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends. */
static inline rete_view rete_view_trim_ows(rete_view v)
{
    while (v.len && (v.p[0] == ' ' || v.p[0] == '\t')) {
        v.p++;
        v.len--;
    }
    while (v.len && (v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t'))
        v.len--;
    return v;
}

/* Parse a whole view as a decimal uint64 with no sign, no spaces and no
 * overflow. Returns false on any deviation. */
static inline bool rete_view_to_u64(rete_view v, uint64_t *out)
{
    if (v.len == 0 || v.len > 19)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    *out = n;
    return true;
}

#endif
