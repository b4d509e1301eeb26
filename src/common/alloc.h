/* Allocation policy: the proxy and the control plane treat out-of-memory as
 * fatal (as Redis's zmalloc_oom_handler does): a sidecar that cannot allocate
 * a few hundred bytes is better restarted by its supervisor than limping on
 * with silently dropped work. Every allocation goes through these wrappers, so
 * no call site forgets the check. Bounded buffers (header sizes, body windows)
 * keep a misbehaving peer from driving us there. */
#ifndef RETE_ALLOC_H
#define RETE_ALLOC_H

#include <stddef.h>

void *rete_malloc(size_t n);
void *rete_calloc(size_t count, size_t size);
void *rete_realloc(void *p, size_t n);
char *rete_strdup(const char *s);
char *rete_strndup(const char *s, size_t n);

/* Free and NULL the pointer, so no reachable pointer ever points to freed memory. */
#define rete_free(pp)                                                                              \
    do {                                                                                           \
        free(*(pp));                                                                               \
        *(pp) = NULL;                                                                              \
    } while (0)

#endif
