/* Unit tests for src/proxy/codec/h1_out.c: a request head sent upstream over
 * HTTP/1.1 never carries a framing or connection field of its own, whatever
 * a downstream codec let into the message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "h1_out.h"

#include <string.h>

static void test_request_fields_drop_framing_and_connection_fields(void **state)
{
    (void)state;
    rete_header h[] = {
        {RETE_VIEW_LIT("accept"), RETE_VIEW_LIT("*/*")},
        {RETE_VIEW_LIT("Transfer-Encoding"), RETE_VIEW_LIT("chunked")},
        {RETE_VIEW_LIT("content-length"), RETE_VIEW_LIT("5")},
        {RETE_VIEW_LIT("Host"), RETE_VIEW_LIT("evil")},
        {RETE_VIEW_LIT("connection"), RETE_VIEW_LIT("close, x-a")},
        {RETE_VIEW_LIT("keep-alive"), RETE_VIEW_LIT("timeout=5")},
        {RETE_VIEW_LIT("Proxy-Connection"), RETE_VIEW_LIT("keep-alive")},
        {RETE_VIEW_LIT("upgrade"), RETE_VIEW_LIT("websocket")},
        {RETE_VIEW_LIT("te"), RETE_VIEW_LIT("trailers")},
        {RETE_VIEW_LIT("x-request-id"), RETE_VIEW_LIT("abc")},
    };
    rete_msg m = {.headers = h, .n_headers = sizeof(h) / sizeof(h[0])};
    rete_outbuf b;
    rete_outbuf_init(&b);
    rete_h1_put_request_fields(&b, &m);
    const char want[] = "accept: */*\r\nte: trailers\r\nx-request-id: abc\r\n";
    assert_int_equal(b.len, sizeof(want) - 1);
    assert_memory_equal(b.p, want, b.len);
    rete_outbuf_free(&b);
    /* rete_h1_put_fields keeps everything (responses keep the upstream's
     * content-length on purpose). */
    rete_outbuf_init(&b);
    rete_h1_put_fields(&b, &m);
    assert_non_null(memmem(b.p, b.len, "content-length: 5\r\n", 19));
    rete_outbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_fields_drop_framing_and_connection_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
