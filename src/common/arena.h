/* A bump allocator that owns everything of one lifetime (a config snapshot,
 * a request): allocate many times, free once (nginx's ngx_pool_t). */
#ifndef RETE_ARENA_H
#define RETE_ARENA_H

#include <stddef.h>

typedef struct rete_arena rete_arena;

rete_arena *rete_arena_new(size_t block_size);
void rete_arena_free(rete_arena *a);
/* Forget everything allocated, keeping one block of the arena's block size
 * for reuse (pooled owners: an exchange's arena between requests). */
void rete_arena_reset(rete_arena *a);
/* Zeroed, aligned for any type; aborts on out-of-memory (alloc.h policy). */
void *rete_arena_alloc(rete_arena *a, size_t n);
char *rete_arena_strdup(rete_arena *a, const char *s);
char *rete_arena_strndup(rete_arena *a, const char *s, size_t n);
/* Grow-by-doubling for an array that lives in arena a (vec.h's RETE_GROW
 * for arena memory): when `cap` < want, a zeroed array of double the
 * capacity (at least min_cap, at least want) is taken from the arena, the
 * `n` used elements are copied into it and *p points to it; the old array
 * stays in the arena until it is reset. Returns the capacity. */
size_t rete_arena_grow_(rete_arena *a, void **p, size_t n, size_t cap, size_t elem, size_t want,
                        size_t min_cap);
/* ptr: an lvalue pointer to the elements; cap: an lvalue of any unsigned type. */
#define RETE_ARENA_GROW(a, ptr, n, cap, want, min_cap)                                             \
    ((cap) = rete_arena_grow_((a), (void **)&(ptr), (n), (cap), sizeof(*(ptr)), (want), (min_cap)))

/* Bytes handed out so far (for metrics and memory accounting). */
size_t rete_arena_used(const rete_arena *a);

#endif
