/* libFuzzer target for the HTTP/1.1 <-> HTTP/2 header conversion, through
 * the real codecs: the input is an HTTP/1.1 request as an app sends it to
 * the outbound listener. It goes
 *   1. into the HTTP/1.1 server codec (h1_server.c: hop-by-hop fields out,
 *      Host to the authority, te: trailers kept) -> exchange A;
 *   2. A as the HTTP/2 client codec sends it (h2.c: the pseudo-headers,
 *      rete_h2_field_forwarded for every field, content-length), HPACK-
 *      encoded into a HEADERS frame and fed to the HTTP/2 server codec
 *      (on the mesh listener) -> exchange B;
 *   3. B as the HTTP/1.1 client writes it to an app (h1_out.c:
 *      rete_h1_put_request_fields, the request line and host), parsed again
 *      by the strict parser -> request C.
 * Properties, for every request the first step accepts (but one without
 * any authority: HTTP/1.0 without Host, a known gap): the HTTP/2 server
 * accepts it too (nothing the app may send makes the mesh hop refuse it),
 * A, B and C carry the same method, path, authority, body length and fields
 * in the same order (A's fields less those HTTP/2 cannot carry); no
 * connection-specific field, no internal field (x-rete-*,
 * x-forwarded-client-cert) and no te but "trailers" survives any step; C
 * has no transfer-encoding and one content-length at most. */
#include <nghttp2/nghttp2.h>

#include "h1_out.h"
#include "h1_parse.h"
#include "proxy_harness.h"

#define MAX_FIELDS 128

typedef struct req_copy {
    bool seen;
    char method[64], authority[512], path[4096];
    int64_t content_length;
    uint32_t n;
    char names[MAX_FIELDS][256];
    char values[MAX_FIELDS][1024];
    bool fits;
} req_copy;

static req_copy A, B;
static req_copy *cur;

static bool put(char *dst, size_t cap, rete_view v)
{
    if (v.len >= cap)
        return false;
    memcpy(dst, v.p ? v.p : "", v.len);
    dst[v.len] = '\0';
    return true;
}

static void check_fields(const rete_msg *m)
{
    for (uint32_t i = 0; i < m->n_headers; i++) {
        rete_view n = m->headers[i].name;
        CHECK(fh_name_ok(n));
        CHECK(!fh_connection_specific(n));
        CHECK(!rete_view_eq(n, RETE_VIEW_LIT("host")));
        CHECK(!rete_view_eq(n, RETE_VIEW_LIT("content-length")));
        if (rete_view_eq(n, RETE_VIEW_LIT("te")))
            CHECK(rete_view_ieq(m->headers[i].value, RETE_VIEW_LIT("trailers")));
    }
}

static void on_request(rete_exchange *ex)
{
    if (!rete_ex_normalize_path(ex)) {
        rete_ex_local_response(ex, 400, "text/plain", "bad path\n", 9); /* as rete_dispatch does */
        return;
    }
    req_copy *r = cur;
    if (!r->seen) {
        r->seen = true;
        r->fits = put(r->method, sizeof r->method, ex->req.method) &&
                  put(r->authority, sizeof r->authority, ex->req.authority) &&
                  put(r->path, sizeof r->path, ex->req.path) && ex->req.n_headers <= MAX_FIELDS;
        r->content_length = ex->req.content_length;
        r->n = ex->req.n_headers;
        for (uint32_t i = 0; r->fits && i < ex->req.n_headers; i++)
            r->fits = put(r->names[i], sizeof r->names[i], ex->req.headers[i].name) &&
                      put(r->values[i], sizeof r->values[i], ex->req.headers[i].value);
        check_fields(&ex->req);
        /* an app's request: no internal field (the mesh listener keeps them, from a peer) */
        if (r == &A)
            for (uint32_t i = 0; i < ex->req.n_headers; i++)
                CHECK(!rete_is_internal_header(ex->req.headers[i].name));
    }
    rete_ex_local_response(ex, 200, "text/plain", "ok\n", 3);
}

static rete_request_path fuzz_path = {
    .request = on_request,
    .response = fh_nop,
    .finish = fh_nop,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fh_init(&fuzz_path, RETE_L_OUTBOUND);
    return 0;
}

#define NVS(n, v)                                                                                  \
    ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE})

/* Step 2: A as h2.c's client role sends it, as the bytes of a connection
 * (preface, SETTINGS, HEADERS on stream 1). Returns the length. */
static size_t encode_h2(uint8_t *out, size_t cap)
{
    nghttp2_nv nva[MAX_FIELDS + 8];
    size_t n = 0;
    bool connect = strcmp(A.method, "CONNECT") == 0;
    nva[n++] = NVS(":method", A.method);
    nva[n++] = NVS(":authority", A.authority);
    if (!connect) {
        nva[n++] = NVS(":scheme", "http");
        nva[n++] = NVS(":path", A.path);
    }
    for (uint32_t i = 0; i < A.n; i++)
        if (rete_h2_field_forwarded(rete_view_cstr(A.names[i]), rete_view_cstr(A.values[i])))
            nva[n++] = NVS(A.names[i], A.values[i]);
    char cl[24];
    if (A.content_length >= 0 && !connect) {
        snprintf(cl, sizeof cl, "%lld", (long long)A.content_length);
        nva[n++] = NVS("content-length", cl);
    }
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t len = 0;
    memcpy(out, preface, sizeof(preface) - 1);
    len += sizeof(preface) - 1;
    static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    memcpy(out + len, settings, sizeof settings);
    len += sizeof settings;
    nghttp2_hd_deflater *d;
    CHECK(nghttp2_hd_deflate_new(&d, 4096) == 0);
    size_t bound = nghttp2_hd_deflate_bound(d, nva, n);
    CHECK(len + 9 + bound <= cap);
    ssize_t blk = nghttp2_hd_deflate_hd(d, out + len + 9, cap - len - 9, nva, n);
    nghttp2_hd_deflate_del(d);
    CHECK(blk >= 0);
    if (blk > 16384)
        return 0; /* over the default frame size: CONTINUATION is h2.c's business, not this target's */
    uint8_t flags = 0x4; /* END_HEADERS */
    if (A.content_length == 0 && !connect)
        flags |= 0x1; /* END_STREAM */
    uint8_t *h = out + len;
    h[0] = (uint8_t)(blk >> 16);
    h[1] = (uint8_t)(blk >> 8);
    h[2] = (uint8_t)blk;
    h[3] = 1; /* HEADERS */
    h[4] = flags;
    h[5] = h[6] = h[7] = 0;
    h[8] = 1;
    return len + 9 + (size_t)blk;
}

/* Step 3: B as h1_client.c writes it, parsed again. */
static void check_h1(void)
{
    rete_outbuf b;
    rete_outbuf_init(&b);
    rete_outbuf_puts(&b, B.method);
    rete_outbuf_put(&b, " ", 1);
    rete_outbuf_puts(&b, B.path);
    rete_outbuf_puts(&b, " HTTP/1.1\r\nhost: ");
    rete_outbuf_puts(&b, B.authority);
    rete_outbuf_put(&b, "\r\n", 2);
    rete_msg m = {0};
    rete_header fields[MAX_FIELDS];
    m.headers = fields;
    for (uint32_t i = 0; i < B.n; i++) {
        fields[i].name = rete_view_cstr(B.names[i]);
        fields[i].value = rete_view_cstr(B.values[i]);
    }
    m.n_headers = B.n;
    rete_h1_put_request_fields(&b, &m);
    if (B.content_length >= 0) {
        char cl[48];
        snprintf(cl, sizeof cl, "content-length: %lld\r\n", (long long)B.content_length);
        rete_outbuf_puts(&b, cl);
    }
    rete_outbuf_put(&b, "\r\n", 2);
    rete_header parsed[MAX_FIELDS + 4];
    rete_h1_message pm = {0};
    pm.headers = parsed;
    rete_h1_limits lim = {8192, 65536, MAX_FIELDS + 4};
    rete_h1_error err = {0};
    int r = rete_h1_parse_request(b.p, b.len, &lim, &pm, &err);
    CHECK(r == (int)b.len);
    CHECK(rete_view_eq(pm.method, rete_view_cstr(B.method)));
    CHECK(rete_view_eq(pm.target, rete_view_cstr(B.path)));
    CHECK(rete_view_eq(pm.host, rete_view_cstr(B.authority)));
    CHECK(pm.body == (B.content_length >= 0 ? RETE_H1_BODY_LENGTH : RETE_H1_BODY_NONE));
    CHECK(B.content_length < 0 || pm.content_length == (uint64_t)B.content_length);
    uint32_t k = 0;
    for (size_t i = 0; i < pm.n_headers; i++) {
        rete_view n = pm.headers[i].name;
        CHECK(!rete_view_ieq(n, RETE_VIEW_LIT("transfer-encoding")));
        if (rete_view_ieq(n, RETE_VIEW_LIT("host")) || rete_view_ieq(n, RETE_VIEW_LIT("content-length")))
            continue;
        CHECK(k < B.n && rete_view_eq(n, rete_view_cstr(B.names[k])) &&
              rete_view_eq(pm.headers[i].value, rete_view_cstr(B.values[k])));
        k++;
    }
    CHECK(k == B.n);
    rete_outbuf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    memset(&A, 0, sizeof A);
    memset(&B, 0, sizeof B);
    /* step 1 */
    cur = &A;
    fh.listener.kind = RETE_L_OUTBOUND;
    rete_conn *c = fh_conn();
    rete_h1_server_start(c, (const char *)data, size);
    fh_close(c);
    /* An HTTP/1.0 request without Host has no authority, which HTTP/2
     * cannot carry (nghttp2 refuses a request without :authority or host):
     * a known gap (docs/security.md), not checked here. */
    if (!A.seen || !A.fits || !A.authority[0])
        return 0;
    /* step 2 */
    static uint8_t wire[1 << 20];
    size_t len = encode_h2(wire, sizeof wire);
    if (!len)
        return 0;
    cur = &B;
    fh.listener.kind = RETE_L_MESH;
    c = fh_conn();
    rete_h2_server_start(c, (const char *)wire, len);
    fh_close(c);
    CHECK(B.seen && B.fits);
    CHECK(strcmp(A.method, B.method) == 0 && strcmp(A.authority, B.authority) == 0);
    CHECK(strcmp(A.method, "CONNECT") == 0 || strcmp(A.path, B.path) == 0);
    CHECK(B.content_length == (strcmp(A.method, "CONNECT") == 0 ? -1 : A.content_length));
    uint32_t k = 0;
    for (uint32_t i = 0; i < A.n; i++) {
        if (!rete_h2_field_forwarded(rete_view_cstr(A.names[i]), rete_view_cstr(A.values[i])))
            continue;
        CHECK(k < B.n && strcmp(A.names[i], B.names[k]) == 0 && strcmp(A.values[i], B.values[k]) == 0);
        k++;
    }
    CHECK(k == B.n);
    /* step 3 */
    if (getenv("FH_DEBUG"))
        fprintf(stderr, "round trip: %s %s %s, %u fields\n", B.method, B.authority, B.path, B.n);
    if (strcmp(B.method, "CONNECT") != 0)
        check_h1();
    return 0;
}
