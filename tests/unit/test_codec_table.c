/* The codec table (src/proxy/core/codec.h) as rete_codecs_register fills it,
 * and the request path dispatch.c hands the exchange: every row has the
 * sides its codec has, no more, and the worker's flush order is kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "codec.h"
#include "codecs.h"
#include "dispatch.h"
#include "exchange.h"
#include "h1_client.h"
#include "h1_server.h"
#include "h2.h"
#include "tcp.h"

static int setup(void **state)
{
    (void)state;
    rete_codecs_register();
    rete_http_register();
    return 0;
}

static void test_rows(void **state)
{
    (void)state;
    assert_ptr_equal(rete_codec_get(RETE_CODEC_H2), &rete_codec_h2);
    assert_ptr_equal(rete_codec_get(RETE_CODEC_H1_SERVER), &rete_codec_h1_server);
    assert_ptr_equal(rete_codec_get(RETE_CODEC_H1_CLIENT), &rete_codec_h1_client);
    assert_ptr_equal(rete_codec_get(RETE_CODEC_TCP), &rete_codec_tcp);
    assert_null(rete_codec_at(RETE_CODEC_N));
    assert_null(rete_codec_at((rete_codec_id)-1));
}

static void test_sides(void **state)
{
    (void)state;
    /* HTTP/2: both sides, a flush and per-thread nghttp2 state. */
    const rete_codec *h2 = rete_codec_get(RETE_CODEC_H2);
    assert_ptr_equal(h2->server_start, rete_h2_server_start);
    assert_non_null(h2->upstream_start);
    assert_ptr_equal(h2->flush_all, rete_h2_flush_all);
    assert_ptr_equal(h2->thread_cleanup, rete_h2_thread_cleanup);
    /* HTTP/1.1 is two rows: the server never dials, the client never accepts. */
    const rete_codec *h1s = rete_codec_get(RETE_CODEC_H1_SERVER);
    assert_ptr_equal(h1s->server_start, rete_h1_server_start);
    assert_null(h1s->upstream_start);
    assert_ptr_equal(h1s->flush_all, rete_h1_flush_all);
    const rete_codec *h1c = rete_codec_get(RETE_CODEC_H1_CLIENT);
    assert_null(h1c->server_start);
    assert_non_null(h1c->upstream_start);
    assert_null(h1c->flush_all);
    /* TCP: both sides, nothing queued between loop turns. */
    const rete_codec *tcp = rete_codec_get(RETE_CODEC_TCP);
    assert_ptr_equal(tcp->server_start, rete_tcp_server_start);
    assert_non_null(tcp->upstream_start);
    assert_null(tcp->flush_all);
    assert_null(tcp->thread_cleanup);
}

static void test_names_distinct(void **state)
{
    (void)state;
    for (int i = 0; i < RETE_CODEC_N; i++)
        for (int j = i + 1; j < RETE_CODEC_N; j++)
            assert_string_not_equal(rete_codec_get((rete_codec_id)i)->name,
                                    rete_codec_get((rete_codec_id)j)->name);
}

/* The worker flushes the table in id order: HTTP/2 frames before the
 * HTTP/1.1 heads, as before the table existed. */
static void test_flush_order(void **state)
{
    (void)state;
    int h2 = -1, h1 = -1;
    for (int i = 0; i < RETE_CODEC_N; i++) {
        const rete_codec *k = rete_codec_at((rete_codec_id)i);
        if (k->flush_all == rete_h2_flush_all)
            h2 = i;
        if (k->flush_all == rete_h1_flush_all)
            h1 = i;
    }
    assert_true(h2 >= 0 && h1 >= 0 && h2 < h1);
}

static void test_request_path(void **state)
{
    (void)state;
    const rete_request_path *rp = rete_request_path_get();
    assert_non_null(rp);
    assert_ptr_equal(rp->request, rete_dispatch);
    assert_ptr_equal(rp->normalize_path, rete_dispatch_normalize_path);
    assert_ptr_equal(rp->response, rete_dispatch_response_filters);
    assert_ptr_equal(rp->finish, rete_dispatch_finish);
    assert_ptr_equal(rp->release_share, rete_dispatch_release_share);
    assert_non_null(rp->gen_free);
}

static void test_internal_header(void **state)
{
    (void)state;
    assert_true(rete_is_internal_header(RETE_VIEW_LIT("X-Forwarded-Client-Cert")));
    assert_true(rete_is_internal_header(RETE_VIEW_LIT(RETE_TARGET_PORT_HEADER)));
    assert_true(rete_is_internal_header(RETE_VIEW_LIT("X-RETE-anything")));
    assert_false(rete_is_internal_header(RETE_VIEW_LIT("x-ret")));
    assert_false(rete_is_internal_header(RETE_VIEW_LIT("x-request-id")));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),          cmocka_unit_test(test_sides),
        cmocka_unit_test(test_names_distinct), cmocka_unit_test(test_flush_order),
        cmocka_unit_test(test_request_path),  cmocka_unit_test(test_internal_header),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
