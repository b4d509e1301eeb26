/* Path normaliser (src/common/path_norm.c): the case list shared with the
 * system test (tests/system/path_cases.py -> path_cases.inc), every input
 * flush against an unreadable page and every output into a buffer exactly as
 * long as the input, so an over-read or an over-write crashes the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "path_norm.h"

#include <stdlib.h>
#include <string.h>
#include "guarded.h"

typedef struct expect {
    const char *path; /* NULL: refused */
    size_t len;
} expect;

typedef struct path_case {
    const char *name;
    const char *raw;
    size_t raw_len;
    expect exp[4]; /* NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES */
} path_case;

#define S(x) x, sizeof(x) - 1
#define P(x) {x, sizeof(x) - 1}
#define R {NULL, 0}
static const path_case cases[] = {
#include "path_cases.inc"
};

static const rete_path_norm_mode modes[4] = {RETE_PATH_NORM_NONE, RETE_PATH_NORM_BASE,
                                             RETE_PATH_NORM_MERGE_SLASHES,
                                             RETE_PATH_NORM_DECODE_AND_MERGE_SLASHES};

static rete_path_norm_result run(const char *raw, size_t len, rete_path_norm_mode mode, char *res,
                                 size_t *res_len)
{
    guarded in = guard_alloc(len), out = guard_alloc(len);
    if (len)
        memcpy(in.p, raw, len);
    size_t n = 99;
    rete_path_norm_result r = rete_path_normalize(rete_view_make(in.p, len), mode, out.p, len, &n);
    if (r == RETE_PATH_OK) {
        assert_true(n <= len);
        memcpy(res, out.p, n);
        *res_len = n;
    }
    guard_free(&in);
    guard_free(&out);
    return r;
}

static void test_shared_cases(void **state)
{
    (void)state;
    static char res[8192], again[8192];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const path_case *c = &cases[i];
        for (size_t m = 0; m < 4; m++) {
            size_t n = 0;
            rete_path_norm_result r = run(c->raw, c->raw_len, modes[m], res, &n);
            const expect *e = &c->exp[m];
            if (!e->path) {
                if (r == RETE_PATH_OK)
                    fail_msg("%s %s: want refused, got \"%.*s\"", c->name,
                             rete_path_norm_mode_name(modes[m]), (int)n, res);
                continue;
            }
            if (r != RETE_PATH_OK)
                fail_msg("%s %s: refused (%s)", c->name, rete_path_norm_mode_name(modes[m]),
                         rete_path_norm_reason(r));
            if (n != e->len || memcmp(res, e->path, n) != 0)
                fail_msg("%s %s: got \"%.*s\", want \"%.*s\"", c->name,
                         rete_path_norm_mode_name(modes[m]), (int)n, res, (int)e->len, e->path);
            /* Idempotent: the app sidecar normalises again what the client
             * sidecar forwarded, and must forward the same bytes. */
            size_t n2 = 0;
            assert_int_equal(run(res, n, modes[m], again, &n2), RETE_PATH_OK);
            assert_int_equal(n2, n);
            assert_memory_equal(again, res, n);
        }
    }
}

static void test_reasons(void **state)
{
    (void)state;
    char res[64];
    size_t n;
    struct {
        const char *raw;
        rete_path_norm_result r;
    } t[] = {
        {"", RETE_PATH_NOT_ORIGIN_FORM},         {"*", RETE_PATH_NOT_ORIGIN_FORM},
        {"/a#b", RETE_PATH_FRAGMENT},            {"/a\x01", RETE_PATH_BAD_CHAR},
        {"/a%00", RETE_PATH_BAD_CHAR},           {"/\xc3\xa9", RETE_PATH_BAD_CHAR},
        {"/a%g0", RETE_PATH_BAD_ESCAPE},         {"/a%2F", RETE_PATH_ESCAPED_SLASH},
        {"/a%5c", RETE_PATH_ESCAPED_SLASH},      {"/a\\b", RETE_PATH_BACKSLASH},
        {"/a/..;/b", RETE_PATH_AMBIGUOUS_SEGMENT},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        assert_int_equal(run(t[i].raw, strlen(t[i].raw), RETE_PATH_NORM_BASE, res, &n), t[i].r);
        assert_string_not_equal(rete_path_norm_reason(t[i].r), "unknown");
    }
}

static void test_small_buffer_is_too_long(void **state)
{
    (void)state;
    char out[4];
    size_t n;
    assert_int_equal(rete_path_normalize(RETE_VIEW_LIT("/abcdef"), RETE_PATH_NORM_BASE, out,
                                         sizeof(out), &n),
                     RETE_PATH_TOO_LONG);
    assert_int_equal(rete_path_normalize(RETE_VIEW_LIT("/a?bcdef"), RETE_PATH_NORM_NONE, out,
                                         sizeof(out), &n),
                     RETE_PATH_TOO_LONG);
    assert_int_equal(rete_path_normalize(RETE_VIEW_LIT("/%7e"), RETE_PATH_NORM_BASE, out, 1, &n),
                     RETE_PATH_TOO_LONG);
    assert_int_equal(rete_path_normalize(RETE_VIEW_LIT("/a/../b"), RETE_PATH_NORM_BASE, out,
                                         sizeof(out), &n),
                     RETE_PATH_TOO_LONG); /* the decode pass needs the room first */
}

/* Every target of up to three bytes from a small alphabet, under every mode:
 * no crash, no over-read, result never longer than the input, idempotent. */
static void test_exhaustive_short(void **state)
{
    (void)state;
    static const char alpha[] = "/.%2eF5c;?#\\a";
    const size_t k = sizeof(alpha) - 1;
    char raw[4], res[8], again[8];
    for (size_t len = 1; len <= 4; len++) {
        size_t total = 1;
        for (size_t i = 1; i < len; i++)
            total *= k;
        for (size_t v = 0; v < total; v++) {
            raw[0] = '/';
            size_t x = v;
            for (size_t i = 1; i < len; i++, x /= k)
                raw[i] = alpha[x % k];
            for (size_t m = 0; m < 4; m++) {
                size_t n = 0, n2 = 0;
                if (run(raw, len, modes[m], res, &n) != RETE_PATH_OK)
                    continue;
                assert_true(n >= 1 && res[0] == '/');
                assert_int_equal(run(res, n, modes[m], again, &n2), RETE_PATH_OK);
                assert_int_equal(n2, n);
                assert_memory_equal(again, res, n);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_cases),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_small_buffer_is_too_long),
        cmocka_unit_test(test_exhaustive_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
