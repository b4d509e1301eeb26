/* Growable arrays and byte buffers: the one grow-by-doubling of the project
 * (h2o's H2O_VECTOR is the model). Out of memory aborts, as every rete
 * allocation does (alloc.h), so growing never fails. Capacity doubles from
 * a minimum the caller picks, so n pushes cost O(n) copies in all.
 *
 *   RETE_VECTOR(char *) names = {0};
 *   *rete_vector_push(&names) = rete_strdup("a");
 *   ... names.v[i] for i < names.n ...
 *   rete_vector_free(&names);
 *
 * Existing structs with their own field names grow through RETE_GROW:
 *   RETE_GROW(reg->series, reg->capseries, reg->nseries + 1, 64);
 */
#ifndef RETE_COMMON_VEC_H
#define RETE_COMMON_VEC_H

#include <stddef.h>
#include <stdlib.h>

/* Make *p (an array of elements of `elem` bytes, `*cap` of them) hold at
 * least `want`: doubles *cap from max(*cap, min_cap) until it does and
 * reallocates. Does nothing when *cap >= want. May move *p. */
void rete_grow_(void **p, size_t *cap, size_t elem, size_t want, size_t min_cap);

/* ptr: an lvalue pointer to the elements; cap: an lvalue size_t. */
#define RETE_GROW(ptr, cap, want, min_cap)                                                         \
    rete_grow_((void **)&(ptr), &(cap), sizeof(*(ptr)), (want), (min_cap))

#define RETE_VECTOR(T)                                                                             \
    struct {                                                                                       \
        T *v;                                                                                      \
        size_t n, cap;                                                                             \
    }

/* Room for `want` elements in all. */
#define rete_vector_reserve(vec, want) RETE_GROW((vec)->v, (vec)->cap, (want), 8)
/* A pointer to a new last element (uninitialised). */
#define rete_vector_push(vec) (rete_vector_reserve((vec), (vec)->n + 1), &(vec)->v[(vec)->n++])
/* Free the elements' array (not what they point to); the vector is empty. */
#define rete_vector_free(vec)                                                                      \
    do {                                                                                           \
        free((vec)->v);                                                                            \
        (vec)->v = NULL;                                                                           \
        (vec)->n = (vec)->cap = 0;                                                                 \
    } while (0)

/* Bytes, kept NUL-terminated after the first append (p[len] == '\0'), so a
 * text buffer can be handed to string functions as it is. */
typedef struct rete_buf {
    char *p;
    size_t len, cap;
} rete_buf;

/* Room for `extra` more bytes and the NUL; at least `min_cap` when it first allocates. */
void rete_buf_reserve(rete_buf *b, size_t extra, size_t min_cap);
void rete_buf_append(rete_buf *b, const void *data, size_t n);
void rete_buf_append_str(rete_buf *b, const char *s);
/* The bytes, ownership to the caller (NULL when nothing was appended); b is empty. */
char *rete_buf_take(rete_buf *b);
void rete_buf_free(rete_buf *b);

#endif
