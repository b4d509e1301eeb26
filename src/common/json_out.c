#include "json_out.h"
#include "vec.h"

#include <stdio.h>
#include <string.h>

static const char hex[] = "0123456789abcdef";

/* Escaped form of byte c into e; returns its length (1, 2 or 6). */
static size_t escape_byte(unsigned char c, char e[6])
{
    if (c == '"' || c == '\\') {
        e[0] = '\\';
        e[1] = (char)c;
        return 2;
    }
    if (c >= 0x20 && c < 0x7f) {
        e[0] = (char)c;
        return 1;
    }
    memcpy(e, "\\u00", 4);
    e[4] = hex[c >> 4];
    e[5] = hex[c & 15];
    return 6;
}

size_t rete_json_escape(char *out, size_t cap, const char *in, size_t len)
{
    size_t need = 0;
    for (size_t i = 0; i < len; i++) {
        char e[6];
        need += escape_byte((unsigned char)in[i], e);
    }
    if (need + 1 > cap) {
        if (cap)
            out[0] = '\0';
        return need;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++)
        o += escape_byte((unsigned char)in[i], out + o);
    out[o] = '\0';
    return o;
}

void rete_jbuf_init(rete_jbuf *b, char *mem, size_t size, size_t reserve)
{
    b->p = mem;
    b->len = 0;
    b->cap = size > reserve ? size - reserve : 0;
    b->truncated = false;
    if (size)
        mem[0] = '\0';
}

/* Fields are appended whole or not at all: a field that does not fit is
 * rolled back, so the line stays valid JSON and `truncated` tells. */
static bool put(rete_jbuf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap)
        return false;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return true;
}

void rete_jbuf_raw(rete_jbuf *b, const char *s)
{
    if (!put(b, s, strlen(s)))
        b->truncated = true;
}

static bool key(rete_jbuf *b, const char *k)
{
    if (b->len && b->p[b->len - 1] != '{' && !put(b, ",", 1))
        return false;
    /* keys are the caller's literals */
    return put(b, "\"", 1) && put(b, k, strlen(k)) && put(b, "\":", 2);
}

void rete_jbuf_str(rete_jbuf *b, const char *k, const char *value, size_t len, size_t max)
{
    size_t mark = b->len;
    if (max && len > max) {
        len = max;
        b->truncated = true;
    }
    bool ok = key(b, k) && put(b, "\"", 1);
    for (size_t i = 0; ok && i < len; i++) {
        char e[6];
        ok = put(b, e, escape_byte((unsigned char)value[i], e));
    }
    if (!(ok && put(b, "\"", 1))) {
        b->len = mark;
        b->truncated = true;
    }
}

static void number(rete_jbuf *b, const char *k, const char *n, int len)
{
    size_t mark = b->len;
    if (!(key(b, k) && put(b, n, (size_t)len))) {
        b->len = mark;
        b->truncated = true;
    }
}

void rete_jbuf_int(rete_jbuf *b, const char *k, long long v)
{
    char n[24];
    number(b, k, n, snprintf(n, sizeof(n), "%lld", v));
}

void rete_jbuf_num(rete_jbuf *b, const char *k, double v)
{
    char n[40];
    number(b, k, n, snprintf(n, sizeof(n), "%.3f", v));
}

void rete_jbuf_raw_end(rete_jbuf *b, const char *s)
{
    /* The reserve set aside by rete_jbuf_init is beyond cap: room for s. */
    size_t n = strlen(s);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void rete_json_append_utf8(rete_buf *b, const char *s, size_t len)
{
    rete_buf_reserve(b, len + 2, 64);
    rete_buf_append(b, "\"", 1);
    size_t run = 0; /* bytes since the last escape, appended in one go */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        rete_buf_append(b, s + run, i - run);
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof(esc), "\\%c", c);
        else if (c == '\n' || c == '\t' || c == '\r') /* PEM and text: the short forms */
            snprintf(esc, sizeof(esc), "\\%c", c == '\n' ? 'n' : c == '\t' ? 't' : 'r');
        else
            snprintf(esc, sizeof(esc), "\\u%04x", c);
        rete_buf_append_str(b, esc);
        run = i + 1;
    }
    rete_buf_append(b, s + run, len - run);
    rete_buf_append(b, "\"", 1);
}
