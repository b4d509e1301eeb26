#include "h1_out.h"
#include "alloc.h"
#include "h1_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rete_outbuf_init(rete_outbuf *b)
{
    b->p = b->stack;
    b->len = 0;
    b->cap = sizeof(b->stack);
}

void rete_outbuf_put(rete_outbuf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap * 2;
        while (cap < b->len + n)
            cap *= 2;
        if (b->p == b->stack) {
            b->p = rete_malloc(cap);
            memcpy(b->p, b->stack, b->len);
        } else {
            b->p = rete_realloc(b->p, cap);
        }
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void rete_outbuf_puts(rete_outbuf *b, const char *s)
{
    rete_outbuf_put(b, s, strlen(s));
}

void rete_outbuf_view(rete_outbuf *b, rete_view v)
{
    rete_outbuf_put(b, v.p, v.len);
}

void rete_outbuf_free(rete_outbuf *b)
{
    if (b->p != b->stack)
        free(b->p);
    rete_outbuf_init(b);
}

void rete_h1_put_fields(rete_outbuf *b, const rete_msg *m)
{
    for (uint32_t i = 0; i < m->n_headers; i++) {
        rete_outbuf_view(b, m->headers[i].name);
        rete_outbuf_put(b, ": ", 2);
        rete_outbuf_view(b, m->headers[i].value);
        rete_outbuf_put(b, "\r\n", 2);
    }
}

void rete_h1_put_request_fields(rete_outbuf *b, const rete_msg *m)
{
    static const rete_view framing[] = {
        RETE_VIEW_LIT("host"),       RETE_VIEW_LIT("content-length"),   RETE_VIEW_LIT("transfer-encoding"),
        RETE_VIEW_LIT("connection"), RETE_VIEW_LIT("keep-alive"),       RETE_VIEW_LIT("proxy-connection"),
        RETE_VIEW_LIT("upgrade"),
    };
    for (uint32_t i = 0; i < m->n_headers; i++) {
        rete_view name = m->headers[i].name;
        bool skip = false;
        for (size_t k = 0; k < sizeof(framing) / sizeof(framing[0]) && !skip; k++)
            skip = rete_view_ieq(name, framing[k]);
        if (skip)
            continue;
        rete_outbuf_view(b, name);
        rete_outbuf_put(b, ": ", 2);
        rete_outbuf_view(b, m->headers[i].value);
        rete_outbuf_put(b, "\r\n", 2);
    }
}

void rete_h1_put_chunk_size(rete_outbuf *b, size_t n)
{
    char line[RETE_H1_CHUNK_LINE_MAX];
    rete_outbuf_put(b, line, rete_h1_chunk_size_line(n, line));
}
