#include "alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

static _Noreturn void oom(size_t n)
{
    fprintf(stderr, "rete: out of memory allocating %zu bytes\n", n);
    abort();
}

void *rete_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *rete_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        oom(count * size);
    return p;
}

void *rete_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *rete_strndup(const char *s, size_t n)
{
    char *d = rete_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *rete_strdup(const char *s)
{
    return rete_strndup(s, strlen(s));
}

#if defined(__GLIBC__)
void rete_alloc_trim(void)
{
    malloc_trim(0);
}

size_t rete_alloc_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
#else
void rete_alloc_trim(void)
{
}

size_t rete_alloc_in_use(void)
{
    return 0;
}
#endif
