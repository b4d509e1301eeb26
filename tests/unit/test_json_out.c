/* Unit tests for src/common/json_out.c: the access log's escaper. The
 * property: whatever bytes a client puts in a field, the line is one valid
 * JSON object whose field decodes (as Latin-1) back to exactly those bytes,
 * and no other key appears. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "json_out.h"
#include "vec.h"

#include <jansson.h>

/* Decode a JSON string value made of code points <= 0xff back to bytes. */
static size_t latin1_bytes(const char *utf8, size_t n, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)utf8[i];
        if (c < 0x80) {
            out[o++] = c;
            i++;
        } else {
            assert_true((c & 0xe0) == 0xc0); /* U+0080..U+00FF: two bytes */
            out[o++] = (unsigned char)(((c & 0x1f) << 6) | ((unsigned char)utf8[i + 1] & 0x3f));
            i += 2;
        }
    }
    return o;
}

static void check_round_trip(const char *value, size_t len)
{
    char line[8192];
    rete_jbuf b;
    rete_jbuf_init(&b, line, sizeof(line), 8);
    rete_jbuf_raw(&b, "{");
    rete_jbuf_str(&b, "path", value, len, 0);
    rete_jbuf_int(&b, "status", 200);
    rete_jbuf_raw_end(&b, "}\n");
    assert_false(b.truncated);
    assert_int_equal(strlen(line), b.len);
    assert_non_null(memchr(line, '\n', b.len));
    assert_ptr_equal(memchr(line, '\n', b.len), line + b.len - 1); /* one line */
    for (size_t i = 0; i < b.len; i++)
        assert_true((unsigned char)line[i] < 0x80); /* pure ASCII */
    json_error_t err;
    json_t *o = json_loads(line, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    assert_non_null(o);
    assert_int_equal(json_object_size(o), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
    json_t *p = json_object_get(o, "path");
    assert_true(json_is_string(p));
    unsigned char back[1024];
    size_t n = latin1_bytes(json_string_value(p), json_string_length(p), back);
    assert_int_equal(n, len);
    assert_memory_equal(back, value, len);
    json_decref(o);
}

static void test_every_byte_value(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        char one = (char)c;
        check_round_trip(&one, 1);
        char three[3] = {'a', (char)c, 'z'};
        check_round_trip(three, 3);
    }
    char all[256];
    for (int c = 0; c < 256; c++)
        all[c] = (char)c;
    check_round_trip(all, sizeof(all));
}

static void test_forged_keys_stay_inside_the_value(void **state)
{
    (void)state;
    const char *forge = "abc\",\"status\":200,\"path\":\"/admin/users/42";
    check_round_trip(forge, strlen(forge));
    const char *nl = "x\"}\n{\"path\":\"/forged";
    check_round_trip(nl, strlen(nl));
    check_round_trip("\\\"", 2);
}

static void test_escape_sizes(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(rete_json_escape(out, sizeof(out), "a\"\\", 3), 5);
    assert_string_equal(out, "a\\\"\\\\");
    assert_int_equal(rete_json_escape(out, sizeof(out), "\x01\xff", 2), 12);
    assert_string_equal(out, "\\u0001\\u00ff");
    /* too small: the size needed, nothing partial */
    assert_int_equal(rete_json_escape(out, 4, "\x01\xff", 2), 12);
    assert_string_equal(out, "");
}

static void test_field_that_does_not_fit_is_left_out_whole(void **state)
{
    (void)state;
    char line[64];
    rete_jbuf b;
    rete_jbuf_init(&b, line, sizeof(line), 4);
    rete_jbuf_raw(&b, "{");
    rete_jbuf_str(&b, "a", "short", 5, 0);
    char big[100];
    memset(big, '"', sizeof(big));
    rete_jbuf_str(&b, "big", big, sizeof(big), 0);
    rete_jbuf_int(&b, "n", 7);
    rete_jbuf_raw_end(&b, "}\n");
    assert_true(b.truncated);
    json_error_t err;
    json_t *o = json_loads(line, 0, &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "a")), "short");
    assert_null(json_object_get(o, "big"));
    assert_int_equal(json_integer_value(json_object_get(o, "n")), 7);
    json_decref(o);
    /* a per-field cap cuts the value, still one valid string */
    rete_jbuf_init(&b, line, sizeof(line), 4);
    rete_jbuf_raw(&b, "{");
    rete_jbuf_str(&b, "p", "abcdef", 6, 3);
    rete_jbuf_raw_end(&b, "}\n");
    assert_true(b.truncated);
    assert_string_equal(line, "{\"p\":\"abc\"}\n");
}

/* Documents: UTF-8 passes through, quotes, backslashes and control
 * characters are escaped, and jansson reads back the exact text. */
static void test_utf8_string_for_documents(void **state)
{
    (void)state;
    const char in[] = "a\"b\\c\nd\te\r\x01 \xc3\xa9\xe2\x82\xac";
    rete_buf b = {0};
    rete_json_append_utf8(&b, in, sizeof(in) - 1);
    assert_string_equal(b.p, "\"a\\\"b\\\\c\\nd\\te\\r\\u0001 \xc3\xa9\xe2\x82\xac\"");
    json_error_t je;
    json_t *j = json_loadb(b.p, b.len, JSON_DECODE_ANY, &je);
    assert_non_null(j);
    assert_int_equal(json_string_length(j), sizeof(in) - 1);
    assert_memory_equal(json_string_value(j), in, sizeof(in) - 1);
    json_decref(j);
    rete_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_byte_value),
        cmocka_unit_test(test_forged_keys_stay_inside_the_value),
        cmocka_unit_test(test_escape_sizes),
        cmocka_unit_test(test_field_that_does_not_fit_is_left_out_whole),
        cmocka_unit_test(test_utf8_string_for_documents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
