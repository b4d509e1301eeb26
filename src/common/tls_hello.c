/* ClientHello server_name extraction (tls_hello.h). Every read goes through
 * one bounded cursor: a short read marks it failed and every later read
 * returns zero, so the parse reads straight down and checks once. */
#include "tls_hello.h"

#include <stdbool.h>

typedef struct hello_cur {
    const uint8_t *p;
    size_t n;
    bool bad;
} hello_cur;

static uint32_t take(hello_cur *c, size_t bytes)
{
    if (c->bad || c->n < bytes) {
        c->bad = true;
        return 0;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < bytes; i++)
        v = v << 8 | c->p[i];
    c->p += bytes;
    c->n -= bytes;
    return v;
}

/* A sub-cursor over the next `bytes` bytes, which this one skips. */
static hello_cur sub(hello_cur *c, size_t bytes)
{
    hello_cur s = {c->p, bytes, c->bad || c->n < bytes};
    if (s.bad) {
        c->bad = true;
        s.n = 0;
        return s;
    }
    c->p += bytes;
    c->n -= bytes;
    return s;
}

/* RFC 1123 host name: LDH labels of 1..63 bytes, 1..253 in all, no
 * leading or trailing dot or hyphen in a label. */
static bool host_name_ok(const uint8_t *p, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = p[i];
        if (ch == '.') {
            if (label == 0 || p[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && !(ch == '-' && label > 0))
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && p[n - 1] != '-';
}

rete_hello_result rete_tls_hello_sni(const uint8_t *buf, size_t len, rete_view *sni)
{
    hello_cur c = {buf, len, false};
    /* §5.1: ContentType handshake(22), legacy_record_version 0x03XX, length */
    if (len < 5)
        return RETE_HELLO_MORE;
    if (take(&c, 1) != 0x16 || take(&c, 1) != 0x03)
        return RETE_HELLO_BAD;
    take(&c, 1);
    size_t rec_len = take(&c, 2);
    if (c.bad)
        return RETE_HELLO_MORE;
    if (rec_len == 0 || rec_len > 16384)
        return RETE_HELLO_BAD;
    if (c.n < rec_len)
        return RETE_HELLO_MORE;
    hello_cur rec = sub(&c, rec_len);
    /* §4: HandshakeType client_hello(1), uint24 length */
    if (take(&rec, 1) != 0x01)
        return RETE_HELLO_BAD;
    size_t hs_len = take(&rec, 3);
    if (rec.bad)
        return RETE_HELLO_BAD;
    if (hs_len > rec.n)
        return RETE_HELLO_NONE; /* continues in the next record */
    hello_cur h = sub(&rec, hs_len);
    /* §4.1.2: legacy_version, random[32], session id<0..32>,
     * cipher_suites<2..2^16-2>, compression methods<1..2^8-1>, extensions */
    take(&h, 2);
    sub(&h, 32);
    size_t sid = take(&h, 1);
    if (sid > 32)
        return RETE_HELLO_BAD;
    sub(&h, sid);
    sub(&h, take(&h, 2));
    sub(&h, take(&h, 1));
    if (h.bad)
        return RETE_HELLO_BAD;
    if (h.n == 0)
        return RETE_HELLO_NONE; /* no extensions (TLS 1.2 and older may omit them) */
    hello_cur exts = sub(&h, take(&h, 2));
    while (!exts.bad && exts.n > 0) {
        uint32_t type = take(&exts, 2);
        hello_cur ext = sub(&exts, take(&exts, 2));
        if (exts.bad)
            return RETE_HELLO_BAD;
        if (type != 0) /* RFC 6066 §3: server_name(0) */
            continue;
        hello_cur list = sub(&ext, take(&ext, 2));
        while (!list.bad && list.n > 0) {
            uint32_t name_type = take(&list, 1);
            hello_cur name = sub(&list, take(&list, 2));
            if (list.bad)
                return RETE_HELLO_BAD;
            if (name_type != 0) /* host_name(0) */
                continue;
            if (!host_name_ok(name.p, name.n))
                return RETE_HELLO_NONE;
            *sni = rete_view_make((const char *)name.p, name.n);
            return RETE_HELLO_SNI;
        }
        return ext.bad || list.bad ? RETE_HELLO_BAD : RETE_HELLO_NONE;
    }
    return exts.bad ? RETE_HELLO_BAD : RETE_HELLO_NONE;
}
