#include "arena.h"
#include "alloc.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

typedef struct arena_block {
    struct arena_block *next;
    size_t used;
    size_t size;
    alignas(max_align_t) unsigned char data[];
} arena_block;

struct rete_arena {
    arena_block *head;
    size_t block_size;
    size_t total;
};

rete_arena *rete_arena_new(size_t block_size)
{
    rete_arena *a = rete_calloc(1, sizeof(*a));
    a->block_size = block_size ? block_size : 16384;
    return a;
}

void rete_arena_free(rete_arena *a)
{
    if (!a)
        return;
    for (arena_block *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(a);
}

void rete_arena_reset(rete_arena *a)
{
    arena_block *keep = NULL;
    for (arena_block *b = a->head, *next; b; b = next) {
        next = b->next;
        if (!keep && b->size == a->block_size)
            keep = b;
        else
            free(b);
    }
    if (keep) {
        keep->next = NULL;
        keep->used = 0;
    }
    a->head = keep;
    a->total = 0;
}

void *rete_arena_alloc(rete_arena *a, size_t n)
{
    const size_t align = alignof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    if (!a->head || a->head->size - a->head->used < n) {
        size_t size = n > a->block_size ? n : a->block_size;
        arena_block *b = rete_malloc(sizeof(*b) + size);
        b->next = a->head;
        b->used = 0;
        b->size = size;
        a->head = b;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    a->total += n;
    memset(p, 0, n);
    return p;
}

char *rete_arena_strndup(rete_arena *a, const char *s, size_t n)
{
    char *d = rete_arena_alloc(a, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *rete_arena_strdup(rete_arena *a, const char *s)
{
    return rete_arena_strndup(a, s, strlen(s));
}

size_t rete_arena_grow_(rete_arena *a, void **p, size_t n, size_t cap, size_t elem, size_t want,
                        size_t min_cap)
{
    if (cap >= want)
        return cap;
    size_t ncap = cap > min_cap ? cap : (min_cap ? min_cap : 1);
    while (ncap < want)
        ncap *= 2;
    void *grown = rete_arena_alloc(a, ncap * elem);
    if (n)
        memcpy(grown, *p, n * elem);
    *p = grown;
    return ncap;
}

size_t rete_arena_used(const rete_arena *a)
{
    return a->total;
}
