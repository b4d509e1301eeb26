#include "spiffe.h"

#include <stdio.h>
#include <string.h>

bool rete_spiffe_format(char *buf, size_t len, const char *td, const char *ns, const char *sa)
{
    int n = snprintf(buf, len, RETE_SPIFFE_WORKLOAD_FMT, td, ns, sa);
    return n >= 0 && (size_t)n < len;
}

bool rete_spiffe_in_trust_domain(const char *id, const char *td)
{
    if (!td || !id || strncmp(id, RETE_SPIFFE_SCHEME, RETE_SPIFFE_SCHEME_LEN) != 0)
        return false;
    size_t tdl = strlen(td);
    const char *rest = id + RETE_SPIFFE_SCHEME_LEN;
    return tdl > 0 && strncmp(rest, td, tdl) == 0 && rest[tdl] == '/';
}

bool rete_spiffe_parse(const char *id, size_t len, rete_spiffe_parts *out)
{
    if (!rete_spiffe_id_valid(id, len))
        return false;
    /* valid: non-empty trust domain, then non-empty segments */
    rete_view v = rete_view_make(id + RETE_SPIFFE_SCHEME_LEN, len - RETE_SPIFFE_SCHEME_LEN);
    rete_view seg[5];
    size_t n = 0;
    while (v.len && n < 5) {
        ptrdiff_t slash = rete_view_find(v, '/');
        size_t end = slash < 0 ? v.len : (size_t)slash;
        seg[n++] = rete_view_make(v.p, end);
        v = slash < 0 ? RETE_VIEW_NULL : rete_view_sub(v, end + 1, v.len);
    }
    if (n != 5 || v.len || !rete_view_eq(seg[1], RETE_VIEW_LIT("ns")) ||
        !rete_view_eq(seg[3], RETE_VIEW_LIT("sa")))
        return false;
    *out = (rete_spiffe_parts){.td = seg[0], .ns = seg[2], .sa = seg[4]};
    return true;
}

static bool td_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool path_char(char c)
{
    return td_char(c) || (c >= 'A' && c <= 'Z');
}

bool rete_spiffe_id_valid(const char *id, size_t len)
{
    if (!id || len > RETE_SPIFFE_ID_MAX || len < RETE_SPIFFE_SCHEME_LEN ||
        memcmp(id, RETE_SPIFFE_SCHEME, RETE_SPIFFE_SCHEME_LEN) != 0)
        return false;
    size_t i = RETE_SPIFFE_SCHEME_LEN;
    size_t td = i;
    while (i < len && id[i] != '/') {
        if (!td_char(id[i]))
            return false;
        i++;
    }
    if (i == td || i - td > 255) /* §2.1: non-empty; DNS-like length */
        return false;
    /* §2.2: each segment non-empty, not "." or "..", no trailing slash. */
    while (i < len) {
        size_t seg = ++i; /* past '/' */
        while (i < len && id[i] != '/') {
            if (!path_char(id[i]))
                return false;
            i++;
        }
        size_t n = i - seg;
        if (n == 0 || (n == 1 && id[seg] == '.') ||
            (n == 2 && id[seg] == '.' && id[seg + 1] == '.'))
            return false;
    }
    return true;
}

const char *rete_spiffe_principal(const char *id)
{
    if (id && strncmp(id, RETE_SPIFFE_SCHEME, RETE_SPIFFE_SCHEME_LEN) == 0)
        return id + RETE_SPIFFE_SCHEME_LEN;
    return id;
}

bool rete_spiffe_match(const char *pattern, const char *id)
{
    if (!pattern || !id)
        return false;
    rete_view p = rete_view_cstr(rete_spiffe_principal(pattern));
    rete_view v = rete_view_cstr(rete_spiffe_principal(id));
    return v.len > 0 && rete_view_istio_match(p, v);
}

