#include "vec.h"

#include <string.h>

#include "alloc.h"

void rete_grow_(void **p, size_t *cap, size_t elem, size_t want, size_t min_cap)
{
    if (*cap >= want)
        return;
    size_t n = *cap > min_cap ? *cap : (min_cap ? min_cap : 1);
    while (n < want)
        n *= 2;
    *p = rete_realloc(*p, n * elem);
    *cap = n;
}

void rete_buf_reserve(rete_buf *b, size_t extra, size_t min_cap)
{
    RETE_GROW(b->p, b->cap, b->len + extra + 1, min_cap);
}

void rete_buf_append(rete_buf *b, const void *data, size_t n)
{
    rete_buf_reserve(b, n, 256);
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void rete_buf_append_str(rete_buf *b, const char *s)
{
    rete_buf_append(b, s, strlen(s));
}

char *rete_buf_take(rete_buf *b)
{
    char *p = b->p;
    *b = (rete_buf){0};
    return p;
}

void rete_buf_free(rete_buf *b)
{
    rete_free(&b->p);
    b->len = b->cap = 0;
}
