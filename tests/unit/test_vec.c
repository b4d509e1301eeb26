/* src/common/vec.h, arena.h's RETE_ARENA_GROW, oatable.h and hash.h: growth,
 * ownership, FNV-1a's published test vectors and MurmurHash3's finaliser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "hash.h"
#include "oatable.h"
#include "vec.h"

static void test_grow(void **state)
{
    (void)state;
    int *p = NULL;
    size_t cap = 0;
    RETE_GROW(p, cap, 1, 16);
    assert_int_equal(cap, 16);
    p[15] = 1;
    RETE_GROW(p, cap, 16, 16); /* enough already: untouched */
    assert_int_equal(cap, 16);
    RETE_GROW(p, cap, 17, 16);
    assert_int_equal(cap, 32);
    RETE_GROW(p, cap, 1000, 16);
    assert_int_equal(cap, 1024);
    assert_int_equal(p[15], 1); /* kept across moves */
    free(p);
    p = NULL;
    cap = 0;
    RETE_GROW(p, cap, 3, 0); /* no minimum: from 1 */
    assert_int_equal(cap, 4);
    free(p);
}

static void test_vector(void **state)
{
    (void)state;
    RETE_VECTOR(size_t) v = {0};
    for (size_t i = 0; i < 1000; i++)
        *rete_vector_push(&v) = i * 3;
    assert_int_equal(v.n, 1000);
    assert_true(v.cap >= 1000 && v.cap < 2000);
    for (size_t i = 0; i < v.n; i++)
        assert_int_equal(v.v[i], i * 3);
    rete_vector_free(&v);
    assert_null(v.v);
    assert_int_equal(v.n + v.cap, 0);
}

static void test_buf(void **state)
{
    (void)state;
    rete_buf b = {0};
    rete_buf_append(&b, "", 0);
    assert_non_null(b.p);
    assert_string_equal(b.p, "");
    for (int i = 0; i < 500; i++)
        rete_buf_append_str(&b, "abc");
    assert_int_equal(b.len, 1500);
    assert_int_equal(b.p[b.len], '\0');
    assert_memory_equal(b.p + 1497, "abc", 3);
    char *s = rete_buf_take(&b);
    assert_null(b.p);
    assert_int_equal(strlen(s), 1500);
    free(s);
    rete_buf_reserve(&b, 10, 4096);
    assert_int_equal(b.cap, 4096);
    rete_buf_free(&b);
    assert_null(b.p);
}

static void test_fnv1a(void **state)
{
    (void)state;
    /* from the FNV reference test suite (fnv-1a 64) */
    assert_true(rete_fnv1a(RETE_FNV1A_INIT, "", 0) == 0xcbf29ce484222325ull);
    assert_true(rete_fnv1a(RETE_FNV1A_INIT, "a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(rete_fnv1a(RETE_FNV1A_INIT, "foobar", 6) == 0x85944171f73967e8ull);
    assert_true(rete_fnv1a_str(RETE_FNV1A_INIT, "foobar") == 0x85944171f73967e8ull);
    /* chaining equals hashing the concatenation */
    assert_true(rete_fnv1a(rete_fnv1a(RETE_FNV1A_INIT, "foo", 3), "bar", 3) ==
                rete_fnv1a(RETE_FNV1A_INIT, "foobar", 6));
}

static void test_fmix64(void **state)
{
    (void)state;
    assert_true(rete_fmix64(0) == 0);
    assert_true(rete_fmix64(1) == 0xb456bcfc34c2cb2cull);
}

static void test_arena_grow(void **state)
{
    (void)state;
    rete_arena *a = rete_arena_new(256);
    uint32_t *p = NULL;
    uint32_t cap = 0; /* any unsigned type */
    size_t n = 0;
    for (uint32_t i = 0; i < 100; i++) {
        if (n == cap)
            RETE_ARENA_GROW(a, p, n, cap, n + 1, 16);
        p[n++] = i;
    }
    assert_int_equal(cap, 128);
    for (uint32_t i = 0; i < 100; i++)
        assert_int_equal(p[i], i); /* kept across moves */
    assert_int_equal(p[100], 0);   /* arena memory is zeroed */
    RETE_ARENA_GROW(a, p, n, cap, 10, 16); /* enough already: untouched */
    assert_int_equal(cap, 128);
    rete_arena_free(a);
}

typedef struct {
    uint64_t hash; /* 0: empty */
    int v;
} oa_ent;

static bool oa_slot_hash(const void *slot, const void *ctx, uint64_t *h)
{
    (void)ctx;
    *h = ((const oa_ent *)slot)->hash;
    return *h != 0;
}

static oa_ent *oa_find(oa_ent *t, size_t cap, uint64_t h)
{
    for (size_t j = cap ? RETE_OA_FIRST(h, cap) : 0; cap && t[j].hash; j = RETE_OA_NEXT(j, cap))
        if (t[j].hash == h)
            return &t[j];
    return NULL;
}

/* Every entry is found after the table grew many times, also when all
 * hashes start at the same slot; the load stays at most one half. */
static void test_oatable(void **state)
{
    (void)state;
    oa_ent *t = NULL;
    size_t cap = 0, n = 0;
    for (int i = 1; i <= 300; i++) {
        uint64_t h = i <= 100 ? (uint64_t)i << 32 : rete_fmix64((uint64_t)i); /* first 100 collide */
        RETE_OA_RESERVE(t, cap, n + 1, 16, oa_slot_hash, NULL);
        size_t j = RETE_OA_FIRST(h, cap);
        while (t[j].hash)
            j = RETE_OA_NEXT(j, cap);
        t[j] = (oa_ent){h, i};
        n++;
        assert_true(n * 2 <= cap);
    }
    assert_int_equal(cap, 1024);
    for (int i = 1; i <= 300; i++) {
        uint64_t h = i <= 100 ? (uint64_t)i << 32 : rete_fmix64((uint64_t)i);
        oa_ent *e = oa_find(t, cap, h);
        assert_non_null(e);
        assert_int_equal(e->v, i);
    }
    assert_null(oa_find(t, cap, 7));
    assert_false(RETE_OA_RESERVE(t, cap, n + 1, 16, oa_slot_hash, NULL)); /* room already */
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grow),
        cmocka_unit_test(test_vector),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_fnv1a),
        cmocka_unit_test(test_fmix64),
        cmocka_unit_test(test_arena_grow),
        cmocka_unit_test(test_oatable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
