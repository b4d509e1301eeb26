/* src/common/error.h: rete_error, rete_rc_str, the char-buffer formatters and the
 * OpenSSL-aware suffix; the errors of src/common/file.h's one writer;
 * src/common/http_status.h's reason table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "file.h"
#include "http_status.h"

static void test_set(void **state)
{
    (void)state;
    rete_error e = {0};
    assert_int_equal(e.code, RETE_OK);
    assert_int_equal(rete_error_set(&e, RETE_EINVAL, "field %s: %d", "x", 3), RETE_EINVAL);
    assert_int_equal(e.code, RETE_EINVAL);
    assert_string_equal(e.msg, "field x: 3");
    assert_int_equal(rete_error_set(NULL, RETE_EIO, "nowhere"), RETE_EIO);
}

/* Every code has a name, RETE_ECONFLICT (the store's) included. */
static void test_rc_str(void **state)
{
    (void)state;
    assert_string_equal(rete_rc_str(RETE_OK), "ok");
    assert_string_equal(rete_rc_str(RETE_EINVAL), "invalid input");
    assert_string_equal(rete_rc_str(RETE_ECONFLICT), "conflict");
    assert_string_equal(rete_rc_str(-99), "unknown error");
}

static void test_truncates(void **state)
{
    (void)state;
    char buf[8];
    rete_errf(buf, sizeof buf, "%s", "0123456789");
    assert_string_equal(buf, "0123456");
    rete_errf(NULL, 0, "nothing"); /* no buffer: nothing written */
}

/* A failed OpenSSL call leaves its error queued: rete_error_set_ssl appends
 * it once and clears the queue, so the next message does not carry it. */
static void test_ssl_suffix(void **state)
{
    (void)state;
    ERR_clear_error();
    BIO *b = BIO_new_mem_buf("not pem", -1);
    assert_null(PEM_read_bio_X509(b, NULL, NULL, NULL));
    BIO_free(b);
    assert_true(ERR_peek_error() != 0);
    assert_string_not_equal(rete_ssl_reason("none"), "none"); /* does not clear */
    rete_error e = {0};
    assert_int_equal(rete_error_set_ssl(&e, RETE_EIO, "cert.pem: not a PEM certificate"), RETE_EIO);
    assert_true(strncmp(e.msg, "cert.pem: not a PEM certificate (error:", 39) == 0);
    assert_int_equal(e.msg[strlen(e.msg) - 1], ')');
    assert_true(ERR_peek_error() == 0);
    assert_int_equal(rete_error_set_ssl(&e, RETE_EINVAL, "plain"), RETE_EINVAL);
    assert_string_equal(e.msg, "plain"); /* nothing queued: no suffix */
    assert_int_equal(e.code, RETE_EINVAL);
    assert_string_equal(rete_ssl_reason("none"), "none");
}

/* The one file writer: content and mode on success; on failure the code and
 * "<path>: <reason>", and no temporary file left behind. */
static void test_file_write(void **state)
{
    (void)state;
    char dir[] = "/tmp/rete-test-error-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/key.pem", dir);
    rete_error e = {0};
    assert_int_equal(rete_file_write_atomic(path, "secret", 6, 0600, &e), RETE_OK);
    assert_int_equal(e.code, RETE_OK);
    size_t len = 0;
    char *back = rete_file_read(path, 64, &len);
    assert_non_null(back);
    assert_int_equal(len, 6);
    assert_string_equal(back, "secret");
    free(back);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    char missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s/no-such-dir/x.pem", dir);
    assert_int_equal(rete_file_write_atomic(missing, "x", 1, 0644, &e), RETE_EIO);
    assert_int_equal(e.code, RETE_EIO);
    assert_true(strncmp(e.msg, dir, strlen(dir)) == 0);
    assert_non_null(strstr(e.msg, "No such file or directory"));

    char longp[PATH_MAX + 8];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(rete_file_write_atomic(longp, "x", 1, 0644, &e), RETE_EINVAL);
    assert_int_equal(strlen(e.msg), RETE_ERROR_MSG_MAX - 1); /* "<path>: path too long", truncated */
    assert_int_equal(rete_file_write_atomic(missing, "x", 1, 0644, NULL), RETE_EIO); /* no error wanted */

    char to[PATH_MAX];
    snprintf(to, sizeof to, "%s/moved.pem", dir);
    assert_int_equal(rete_file_rename(path, to, &e), RETE_OK);
    assert_int_equal(rete_file_rename(path, to, &e), RETE_EIO);
    assert_non_null(strstr(e.msg, "rename "));
    assert_int_equal(unlink(to), 0);
    assert_int_equal(rmdir(dir), 0); /* nothing else left in it */
}

static void test_reason(void **state)
{
    (void)state;
    assert_string_equal(rete_http_reason(200), "OK");
    assert_string_equal(rete_http_reason(404), "Not Found");
    assert_string_equal(rete_http_reason(409), "Conflict");
    assert_string_equal(rete_http_reason(502), "Bad Gateway");
    assert_string_equal(rete_http_reason(299), "Status");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_rc_str),
        cmocka_unit_test(test_truncates),
        cmocka_unit_test(test_ssl_suffix),
        cmocka_unit_test(test_file_write),
        cmocka_unit_test(test_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
