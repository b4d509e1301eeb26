/* Unit tests for src/common/view.h and arena.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "arena.h"
#include "view.h"

static void test_view_compare(void **state)
{
    (void)state;
    assert_true(rete_view_eq(RETE_VIEW_LIT("abc"), rete_view_cstr("abc")));
    assert_false(rete_view_eq(RETE_VIEW_LIT("abc"), RETE_VIEW_LIT("abd")));
    assert_true(rete_view_ieq(RETE_VIEW_LIT("Content-Length"), RETE_VIEW_LIT("content-length")));
    assert_false(rete_view_ieq(RETE_VIEW_LIT("Content-Length"), RETE_VIEW_LIT("content-lengt")));
    assert_true(rete_view_has_prefix(RETE_VIEW_LIT("/api/v1"), RETE_VIEW_LIT("/api")));
    assert_true(rete_view_ihas_suffix(RETE_VIEW_LIT("echo.demo.SVC"), RETE_VIEW_LIT(".svc")));
    assert_int_equal(rete_view_find(RETE_VIEW_LIT("host:80"), ':'), 4);
    assert_int_equal(rete_view_find(RETE_VIEW_LIT("host"), ':'), -1);
}

static void test_view_trim_and_numbers(void **state)
{
    (void)state;
    rete_view v = rete_view_trim_ows(RETE_VIEW_LIT(" \t 42 \t"));
    assert_true(rete_view_eq(v, RETE_VIEW_LIT("42")));
    uint64_t n = 0;
    assert_true(rete_view_to_u64(v, &n));
    assert_int_equal(n, 42);
    assert_false(rete_view_to_u64(RETE_VIEW_LIT("+1"), &n));
    assert_false(rete_view_to_u64(RETE_VIEW_LIT("1 2"), &n));
    assert_false(rete_view_to_u64(RETE_VIEW_LIT(""), &n));
    assert_false(rete_view_to_u64(RETE_VIEW_LIT("99999999999999999999"), &n));
}

static void test_arena(void **state)
{
    (void)state;
    rete_arena *a = rete_arena_new(64);
    char *s = rete_arena_strdup(a, "hello");
    assert_string_equal(s, "hello");
    unsigned char *big = rete_arena_alloc(a, 1000); /* larger than a block */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(big[i], 0);
    assert_true(rete_arena_used(a) >= 1006);
    assert_int_equal((uintptr_t)big % _Alignof(max_align_t), 0);
    rete_arena_free(a);
}

/* A reset arena hands out zeroed memory again from its kept block (pooled
 * exchanges reuse their arena between requests). */
static void test_arena_reset(void **state)
{
    (void)state;
    rete_arena *a = rete_arena_new(64);
    unsigned char *p = rete_arena_alloc(a, 32);
    memset(p, 0xab, 32);
    unsigned char *big = rete_arena_alloc(a, 1000);
    memset(big, 0xcd, 1000);
    rete_arena_alloc(a, 48); /* a second block of the arena's size */
    rete_arena_reset(a);
    assert_int_equal(rete_arena_used(a), 0);
    unsigned char *q = rete_arena_alloc(a, 64);
    for (size_t i = 0; i < 64; i++)
        assert_int_equal(q[i], 0);
    unsigned char *r = rete_arena_alloc(a, 2000); /* still grows past the kept block */
    r[1999] = 1;
    assert_true(rete_arena_used(a) >= 2064);
    rete_arena_reset(a);
    rete_arena_reset(a); /* twice: nothing left to free */
    assert_non_null(rete_arena_strdup(a, "again"));
    rete_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_compare),
        cmocka_unit_test(test_view_trim_and_numbers),
        cmocka_unit_test(test_arena),
        cmocka_unit_test(test_arena_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
