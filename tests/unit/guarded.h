/* Test buffers flush against a PROT_NONE page (picohttpparser's test.c): the
 * `len` usable bytes end exactly where an unreadable, unwritable page
 * starts, so a parser that reads one byte past its input, or a writer that
 * writes one past its output, crashes the test instead of passing it.
 * For the cmocka unit tests that feed parsers and normalisers. */
#ifndef RETE_TEST_GUARDED_H
#define RETE_TEST_GUARDED_H

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct guarded {
    char *map;
    size_t map_len;
    char *p; /* p + len is the first unusable byte */
} guarded;

static inline guarded guard_alloc(size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (len + page - 1) / page;
    if (data_pages == 0)
        data_pages = 1;
    guarded g;
    g.map_len = (data_pages + 1) * page;
    g.map = mmap(NULL, g.map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g.map != MAP_FAILED);
    assert_int_equal(mprotect(g.map + data_pages * page, page, PROT_NONE), 0);
    g.p = g.map + data_pages * page - len;
    return g;
}

/* A guarded copy of src[0..len). */
static inline guarded guard_copy(const char *src, size_t len)
{
    guarded g = guard_alloc(len);
    if (len)
        memcpy(g.p, src, len);
    return g;
}

static inline void guard_free(guarded *g)
{
    munmap(g->map, g->map_len);
}

#endif
