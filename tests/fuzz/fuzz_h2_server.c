/* libFuzzer target for the HTTP/2 server side fed as bytes: rete's nghttp2
 * session and callbacks (src/proxy/codec/h2.c) on a downstream connection
 * of the harness (proxy_harness.h). The input's first byte picks the
 * listener (even: outbound, odd: the mesh listener with a verified peer);
 * the rest follows the client connection preface, as if read from the
 * socket. Besides memory errors and leaks it checks
 *  - every request head that reaches the request path is what the codec
 *    promises: a method, a path (but for CONNECT), lowercase field names,
 *    no pseudo-header, host, content-length or connection-specific field
 *    (RFC 9113 §8.2.2), te only as "trailers", and off the mesh listener
 *    no internal field (x-rete-*, x-forwarded-client-cert), in the head or
 *    the trailers;
 *  - every stream ends: once the connection is closed no exchange, no
 *    connection and no libuv handle is left, and the generation is held by
 *    nobody but the worker. */
#include "proxy_harness.h"

static unsigned n_requests;

static void check_fields(const rete_exchange *ex, const rete_msg *m, bool trailers)
{
    bool mesh = fh.listener.kind == RETE_L_MESH;
    for (uint32_t i = 0; i < m->n_headers; i++) {
        rete_view n = m->headers[i].name;
        CHECK(fh_name_ok(n));
        CHECK(!fh_connection_specific(n));
        CHECK(mesh || !rete_is_internal_header(n));
        if (trailers)
            continue;
        CHECK(!rete_view_eq(n, RETE_VIEW_LIT("host")));
        CHECK(!rete_view_eq(n, RETE_VIEW_LIT("content-length")));
        if (rete_view_eq(n, RETE_VIEW_LIT("te")))
            CHECK(rete_view_ieq(m->headers[i].value, RETE_VIEW_LIT("trailers")));
    }
    (void)ex;
}

static void on_request(rete_exchange *ex)
{
    if (!rete_ex_normalize_path(ex)) {
        rete_ex_local_response(ex, 400, "text/plain", "bad path\n", 9); /* as rete_dispatch does */
        return;
    }
    n_requests++;
    CHECK(ex->req.method.len > 0);
    CHECK(ex->tunnel || ex->req.path.len > 0);
    CHECK(ex->req.scheme.len > 0);
    check_fields(ex, &ex->req, false);
    static const char body[] = "fuzzed\n";
    if (ex->tunnel)
        rete_ex_local_response(ex, 403, "text/plain", "no\n", 3);
    else
        rete_ex_local_response(ex, 200, "text/plain", body, sizeof(body) - 1);
}

static void on_body(rete_exchange *ex, rete_side producer, const char *data, size_t len, bool end)
{
    (void)data;
    (void)len;
    if (producer == RETE_DOWNSTREAM && end)
        check_fields(ex, &ex->req_body.trailers, true);
}

static rete_request_path fuzz_path = {
    .request = on_request,
    .response = fh_nop,
    .body = on_body,
    .finish = fh_nop,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fh_init(&fuzz_path, RETE_L_OUTBOUND);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (size < 1 || size > 65536)
        return 0;
    fh.listener.kind = (data[0] & 1) ? RETE_L_MESH : RETE_L_OUTBOUND;
    size_t len = sizeof(preface) - 1 + size - 1;
    char *in = malloc(len);
    CHECK(in);
    memcpy(in, preface, sizeof(preface) - 1);
    memcpy(in + sizeof(preface) - 1, data + 1, size - 1);
    rete_conn *c = fh_conn();
    rete_h2_server_start(c, in, len);
    free(in);
    fh_close(c);
    return 0;
}
