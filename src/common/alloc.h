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

/* Give the allocator's free memory back to the operating system. glibc
 * keeps freed heap memory for reuse (and raises its mmap threshold after
 * large frees, so later large blocks land in the heap too): a process that
 * builds and drops megabyte buffers in bursts keeps its peak footprint
 * resident for good. Costs a walk of the free lists; call it when a burst
 * is over, not per allocation. A no-op where the allocator returns memory
 * by itself. */
void rete_alloc_trim(void);
/* Bytes the allocator has handed out and not had back (0 when unknown). */
size_t rete_alloc_in_use(void);

/* Free and NULL the pointer, so no reachable pointer ever points to freed memory. */
#define rete_free(pp)                                                                              \
    do {                                                                                           \
        free(*(pp));                                                                               \
        *(pp) = NULL;                                                                              \
    } while (0)

#endif
