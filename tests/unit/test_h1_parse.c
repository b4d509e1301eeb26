/* Unit tests for src/common/h1_parse.c: valid heads of every body kind and
 * flag, the smuggling list (shared with the system tests through
 * smuggling_cases.inc), incremental feeding at every split point, inputs
 * flush against an unreadable page, and the chunked decoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "h1_parse.h"

#include <stdlib.h>
#include <string.h>
#include "guarded.h"

#define LIT(s) (s), (sizeof(s) - 1)
#define MAX_H 100

/* ---- helpers ---- */

static int parse_req(const char *buf, size_t len, rete_h1_message *msg, rete_h1_header *hdrs,
                     rete_h1_error *err)
{
    rete_h1_limits lim = RETE_H1_LIMITS_DEFAULT;
    msg->headers = hdrs;
    return rete_h1_parse_request(buf, len, &lim, msg, err);
}

static int parse_resp(const char *buf, size_t len, const char *method, rete_h1_message *msg,
                      rete_h1_header *hdrs, rete_h1_error *err)
{
    rete_h1_limits lim = RETE_H1_LIMITS_DEFAULT;
    msg->headers = hdrs;
    return rete_h1_parse_response(buf, len, &lim, rete_view_cstr(method), msg, err);
}

static void assert_view(rete_view v, const char *s)
{
    if (!rete_view_eq(v, rete_view_cstr(s)))
        fail_msg("view \"%.*s\" != \"%s\"", (int)v.len, v.p ? v.p : "", s);
}

/* Same parse result, compared field by field as offsets into the inputs. */
static void assert_same_msg(const rete_h1_message *a, const char *abuf, const rete_h1_message *b,
                            const char *bbuf)
{
    assert_int_equal(a->n_headers, b->n_headers);
    assert_int_equal(a->body, b->body);
    assert_int_equal(a->content_length, b->content_length);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->minor_version, b->minor_version);
    assert_int_equal(a->method.p ? a->method.p - abuf : -1, b->method.p ? b->method.p - bbuf : -1);
    assert_int_equal(a->target.len, b->target.len);
    assert_int_equal(a->host.len, b->host.len);
    for (size_t i = 0; i < a->n_headers; i++) {
        assert_int_equal(a->headers[i].name.p - abuf, b->headers[i].name.p - bbuf);
        assert_int_equal(a->headers[i].value.p - abuf, b->headers[i].value.p - bbuf);
        assert_int_equal(a->headers[i].value.len, b->headers[i].value.len);
    }
}

/* Parse `raw` whole, then every prefix (each must be EAGAIN while shorter
 * than the head, the same head afterwards), each from a copy flush against
 * an unreadable page. Returns the head length. `method` NULL = request. */
static int parse_everywhere(const char *raw, size_t len, const char *method, rete_h1_message *out,
                            rete_h1_header *out_hdrs)
{
    rete_h1_error err = {0};
    int head = method ? parse_resp(raw, len, method, out, out_hdrs, &err)
                      : parse_req(raw, len, out, out_hdrs, &err);
    if (head <= 0)
        fail_msg("parse failed rc=%d status=%d reason=%s", head, err.status,
                 err.reason ? err.reason : "");
    for (size_t k = 0; k <= len; k++) {
        guarded g = guard_copy(raw, k);
        rete_h1_message m;
        rete_h1_header hdrs[MAX_H];
        int rc = method ? parse_resp(g.p, k, method, &m, hdrs, &err)
                        : parse_req(g.p, k, &m, hdrs, &err);
        if ((int)k < head) {
            if (rc != RETE_EAGAIN)
                fail_msg("prefix %zu of %d: rc=%d (%s)", k, head, rc, err.reason ? err.reason : "");
        } else {
            assert_int_equal(rc, head);
            assert_same_msg(&m, g.p, out, raw);
        }
        guard_free(&g);
    }
    return head;
}

/* ---- valid requests ---- */

typedef struct req_case {
    const char *raw;
    rete_h1_body body;
    uint64_t content_length;
    unsigned flags;
    int minor;
    size_t n_headers;
    const char *method, *target, *host;
} req_case;

#define KA RETE_H1_F_KEEP_ALIVE
static const req_case req_cases[] = {
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", RETE_H1_BODY_NONE, 0, KA, 1, 1, "GET", "/", "a"},
    {"\r\nGET /x?y=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", RETE_H1_BODY_NONE, 0, KA, 1, 1,
     "GET", "/x?y=1", "example.com:8080"},
    {"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", RETE_H1_BODY_LENGTH, 5, KA,
     1, 2, "POST", "/p", "a"},
    {"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", RETE_H1_BODY_LENGTH, 0, KA, 1, 2,
     "POST", "/p", "a"},
    {"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
     RETE_H1_BODY_CHUNKED, 0, KA, 1, 2, "POST", "/p", "a"},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", RETE_H1_BODY_NONE, 0, 0, 1, 2, "GET",
     "/", "a"},
    {"GET / HTTP/1.0\r\n\r\n", RETE_H1_BODY_NONE, 0, 0, 0, 0, "GET", "/", ""},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", RETE_H1_BODY_NONE, 0, KA, 0, 1, "GET", "/",
     ""},
    {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", RETE_H1_BODY_NONE, 0, 0, 0, 1,
     "GET", "/", ""},
    {"PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\nabc",
     RETE_H1_BODY_LENGTH, 3, KA | RETE_H1_F_EXPECT_CONTINUE, 1, 3, "PUT", "/u", "a"},
    {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
     RETE_H1_BODY_NONE, 0, KA | RETE_H1_F_UPGRADE, 1, 3, "GET", "/ws", "a"},
    {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", RETE_H1_BODY_NONE, 0, KA, 1, 2,
     "GET", "/ws", "a"},
    {"GET / HTTP/1.1\r\nHost: a\r\nTE: deflate;q=0.5, trailers\r\n\r\n", RETE_H1_BODY_NONE, 0,
     KA | RETE_H1_F_HAS_TRAILER_TE, 1, 2, "GET", "/", "a"},
    {"GET http://example.com:81/a/b?c HTTP/1.1\r\nHost: example.com:81\r\n"
     "Proxy-Connection: keep-alive\r\n\r\n",
     RETE_H1_BODY_NONE, 0, KA, 1, 2, "GET", "http://example.com:81/a/b?c", "example.com:81"},
    {"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", RETE_H1_BODY_NONE, 0, KA,
     1, 1, "CONNECT", "example.com:443", "example.com:443"},
    {"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", RETE_H1_BODY_NONE, 0, KA, 1, 1, "OPTIONS", "*",
     "[::1]:80"},
    {"GET / HTTP/1.1\r\nHost:\r\nX-Empty:\r\nX-Tab:\tv\tw\t\r\nX-Utf8: caf\xc3\xa9\r\n\r\n",
     RETE_H1_BODY_NONE, 0, KA, 1, 4, "GET", "/", ""},
    {"M-SEARCH! / HTTP/1.1\r\nhost: a\r\n\r\n", RETE_H1_BODY_NONE, 0, KA, 1, 1, "M-SEARCH!", "/",
     "a"},
};

static void test_valid_requests(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof req_cases / sizeof req_cases[0]; i++) {
        const req_case *c = &req_cases[i];
        rete_h1_message m;
        rete_h1_header hdrs[MAX_H];
        size_t len = strlen(c->raw);
        int head = parse_everywhere(c->raw, len, NULL, &m, hdrs);
        assert_true(head > 0 && (size_t)head <= len);
        assert_int_equal(m.body, c->body);
        assert_int_equal(m.content_length, c->content_length);
        assert_int_equal(m.flags, c->flags);
        assert_int_equal(m.minor_version, c->minor);
        assert_int_equal(m.n_headers, c->n_headers);
        assert_view(m.method, c->method);
        assert_view(m.target, c->target);
        assert_view(m.host, c->host);
        /* The body (if any) follows the head. */
        if (c->body == RETE_H1_BODY_LENGTH)
            assert_int_equal(len - (size_t)head, c->content_length);
    }
}

static void test_request_details(void **state)
{
    (void)state;
    rete_h1_message m;
    rete_h1_header h[MAX_H];
    rete_h1_error err;
    const char raw[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Tab:\tv\tw\t\r\n"
                       "Connection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n";
    assert_int_equal(parse_req(LIT(raw), &m, h, &err), (int)sizeof(raw) - 1);
    assert_view(h[1].name, "X-Tab");
    assert_view(h[1].value, "v\tw"); /* OWS trimmed, inner HTAB kept */
    assert_view(m.upgrade, "h2c");
    /* HTTP/1.0 ignores Upgrade (RFC 9110 §7.8). */
    const char raw10[] = "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n";
    assert_int_equal(parse_req(LIT(raw10), &m, h, &err), (int)sizeof(raw10) - 1);
    assert_int_equal(m.flags & RETE_H1_F_UPGRADE, 0);
    assert_int_equal(m.upgrade.len, 0);
    /* HTTP/1.0 ignores Expect: 100-continue (RFC 9110 §10.1.1). */
    const char exp10[] = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
    assert_int_equal(parse_req(LIT(exp10), &m, h, &err), (int)sizeof(exp10) - 1);
    assert_int_equal(m.flags & RETE_H1_F_EXPECT_CONTINUE, 0);
    /* Expect with another value is not 100-continue. */
    const char exp[] = "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue-ish\r\n\r\n";
    assert_int_equal(parse_req(LIT(exp), &m, h, &err), (int)sizeof(exp) - 1);
    assert_int_equal(m.flags & RETE_H1_F_EXPECT_CONTINUE, 0);
    /* CONNECT's authority-form target: Host bytes only (fuzz_h1h2_headers). */
    const char conn_bad[] = "CONNECT 1\\.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\n\r\n";
    assert_true(parse_req(LIT(conn_bad), &m, h, &err) < 0);
    assert_string_equal(err.reason, "invalid request-target");
    /* Pipelined second request is not consumed. */
    const char two[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(parse_req(LIT(two), &m, h, &err), (int)(sizeof(two) - 1) / 2);
    /* Largest Content-Length that fits (19 digits). */
    const char big[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n";
    assert_int_equal(parse_req(LIT(big), &m, h, &err), (int)sizeof(big) - 1);
    assert_int_equal(m.content_length, 9999999999999999999ull);
}

/* Each bad byte at each offset of a long value (the 8-byte fast path and
 * its tail), and the allowed non-VCHAR bytes likewise. */
static void test_value_bytes_every_offset(void **state)
{
    (void)state;
    static const unsigned char bad[] = {0x00, 0x01, 0x0a, 0x0b, 0x0d, 0x1f, 0x7f};
    static const unsigned char good[] = {'\t', ' ', 0x21, 0x7e, 0x80, 0xff};
    const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX: v";
    for (size_t off = 0; off < 21; off++) {
        char raw[128];
        size_t n = sizeof pre - 1;
        memcpy(raw, pre, n);
        memset(raw + n, 'a', 21);
        memcpy(raw + n + 21, "z\r\n\r\n", 5);
        size_t len = n + 26;
        for (size_t b = 0; b < sizeof bad; b++) {
            rete_h1_message m;
            rete_h1_header h[MAX_H];
            rete_h1_error err = {0};
            raw[n + off] = (char)bad[b];
            int rc = parse_req(raw, len, &m, h, &err);
            if (rc != RETE_EINVAL || err.status != 400)
                fail_msg("byte 0x%02x at %zu: rc=%d", bad[b], off, rc);
        }
        for (size_t g = 0; g < sizeof good; g++) {
            rete_h1_message m;
            rete_h1_header h[MAX_H];
            rete_h1_error err = {0};
            raw[n + off] = (char)good[g];
            if (parse_req(raw, len, &m, h, &err) != (int)len)
                fail_msg("byte 0x%02x at %zu refused", good[g], off);
        }
    }
}

/* ---- the smuggling list ---- */

typedef struct smuggle_case {
    const char *name;
    const char *prefix;
    size_t prefix_len;
    const char *unit;
    size_t unit_len;
    size_t repeat;
    const char *suffix;
    size_t suffix_len;
    int status;
} smuggle_case;

/* Same cases, same order, as tests/system/smuggling_cases.py (generated). */
#define S(x) x, sizeof(x) - 1
static const smuggle_case smuggling_cases[] = {
#include "smuggling_cases.inc"
};
#undef S

/* prefix + unit * repeat + suffix, malloc'd. */
static char *build_case(const smuggle_case *c, size_t *len)
{
    *len = c->prefix_len + c->unit_len * c->repeat + c->suffix_len;
    char *b = malloc(*len + 1);
    assert_non_null(b);
    memcpy(b, c->prefix, c->prefix_len);
    for (size_t i = 0; i < c->repeat; i++)
        memcpy(b + c->prefix_len + i * c->unit_len, c->unit, c->unit_len);
    memcpy(b + c->prefix_len + c->unit_len * c->repeat, c->suffix, c->suffix_len);
    return b;
}

static void test_smuggling_list(void **state)
{
    (void)state;
    size_t n = sizeof smuggling_cases / sizeof smuggling_cases[0];
    assert_true(n >= 40);
    for (size_t i = 0; i < n; i++) {
        const smuggle_case *c = &smuggling_cases[i];
        size_t len;
        char *raw = build_case(c, &len);
        guarded g = guard_copy(raw, len);
        rete_h1_message m;
        rete_h1_header h[MAX_H];
        rete_h1_error err = {0};
        int rc = parse_req(g.p, len, &m, h, &err);
        if (rc >= 0 || err.status != c->status)
            fail_msg("%s: rc=%d status=%d (%s), want %d", c->name, rc, err.status,
                     err.reason ? err.reason : "", c->status);
        assert_non_null(err.reason);
        int want_rc = (c->status == 414 || c->status == 431) ? RETE_ELIMIT : RETE_EINVAL;
        if (rc != want_rc)
            fail_msg("%s: rc=%d want %d", c->name, rc, want_rc);
        /* No prefix is ever accepted as a complete head. */
        if (len < 2048) {
            for (size_t k = 0; k < len; k++) {
                int prc = parse_req(g.p + len - len, k, &m, h, &err);
                if (prc > 0)
                    fail_msg("%s: prefix %zu accepted", c->name, k);
            }
        }
        guard_free(&g);
        free(raw);
    }
}

/* ---- limits: oversize is caught before the head is complete ---- */

static void test_limits(void **state)
{
    (void)state;
    rete_h1_message m;
    rete_h1_header h[4];
    rete_h1_error err = {0};
    m.headers = h;
    rete_h1_limits lim = {16, 64, 2};
    /* Request line over 16 bytes with no LF yet: 414 now, not EAGAIN. */
    assert_int_equal(rete_h1_parse_request(LIT("GET /aaaaaaaaaaaaaaaa"), &lim, &m, &err),
                     RETE_ELIMIT);
    assert_int_equal(err.status, 414);
    /* Exactly 16 bytes of line is fine. */
    assert_int_equal(rete_h1_parse_request(LIT("GET /aa HTTP/1.0\r\n"), &lim, &m, &err),
                     RETE_EAGAIN);
    assert_int_equal(rete_h1_parse_request(LIT("GET /aa HTTP/1.0\r\n\r\n"), &lim, &m, &err), 20);
    assert_int_equal(rete_h1_parse_request(LIT("GET /aaa HTTP/1.0\r\n\r\n"), &lim, &m, &err),
                     RETE_ELIMIT);
    assert_int_equal(err.status, 414);
    /* Head over 64 bytes, incomplete: 431. */
    assert_int_equal(rete_h1_parse_request(LIT("GET / HTTP/1.0\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                               "aaaaaaaaaaaaaaaaaaaaaaaa"),
                                           &lim, &m, &err),
                     RETE_ELIMIT);
    assert_int_equal(err.status, 431);
    /* Exactly 64 bytes of head is accepted; 65 is not. */
    char buf[80];
    memcpy(buf, "GET / HTTP/1.0\r\nX: ", 19);
    memset(buf + 19, 'a', 64 - 19 - 4);
    memcpy(buf + 60, "\r\n\r\n", 4);
    assert_int_equal(rete_h1_parse_request(buf, 64, &lim, &m, &err), 64);
    memcpy(buf + 19, "b", 1);
    memset(buf + 19, 'a', 64 - 19 - 3);
    memcpy(buf + 61, "\r\n\r\n", 4);
    assert_int_equal(rete_h1_parse_request(buf, 65, &lim, &m, &err), RETE_ELIMIT);
    assert_int_equal(err.status, 431);
    /* Three fields with max_headers 2: 431. */
    assert_int_equal(rete_h1_parse_request(LIT("GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
                                           &lim, &m, &err),
                     RETE_ELIMIT);
    assert_int_equal(err.status, 431);
    /* A response status line that is too long is a 400 (bad gateway upstream). */
    assert_int_equal(rete_h1_parse_response(LIT("HTTP/1.1 200 OKOKOKOKOKOKOK"), &lim,
                                            RETE_VIEW_LIT("GET"), &m, &err),
                     RETE_EINVAL);
    assert_int_equal(err.status, 400);
    assert_int_equal(rete_h1_parse_request(LIT(""), &lim, &m, &err), RETE_EAGAIN);
}

/* ---- responses ---- */

typedef struct resp_case {
    const char *raw;
    const char *method;
    int status;
    rete_h1_body body;
    uint64_t content_length;
    unsigned flags;
    const char *reason;
} resp_case;

static const resp_case resp_cases[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "GET", 200, RETE_H1_BODY_LENGTH, 5, KA,
     "OK"},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "GET", 200,
     RETE_H1_BODY_CHUNKED, 0, KA, "OK"},
    {"HTTP/1.1 200 OK\r\n\r\nuntil close", "GET", 200, RETE_H1_BODY_UNTIL_CLOSE, 0, 0, "OK"},
    {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", "GET", 200, RETE_H1_BODY_LENGTH, 1, 0, "OK"},
    {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", "GET", 200,
     RETE_H1_BODY_LENGTH, 1, KA, "OK"},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", 200, RETE_H1_BODY_NONE, 0, KA, "OK"},
    {"HTTP/1.1 204 No Content\r\n\r\n", "DELETE", 204, RETE_H1_BODY_NONE, 0, KA, "No Content"},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", "GET", 304, RETE_H1_BODY_NONE, 0,
     KA, "Not Modified"},
    {"HTTP/1.1 100 Continue\r\n\r\n", "PUT", 100, RETE_H1_BODY_NONE, 0, KA, "Continue"},
    {"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "GET",
     101, RETE_H1_BODY_NONE, 0, KA | RETE_H1_F_UPGRADE, "Switching Protocols"},
    {"HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", 200, RETE_H1_BODY_NONE, 0, KA,
     "Connection established"},
    {"HTTP/1.1 404 \r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "GET", 404,
     RETE_H1_BODY_LENGTH, 0, 0, ""},
    {"HTTP/1.1 500\r\nContent-Length: 0\r\n\r\n", "GET", 500, RETE_H1_BODY_LENGTH, 0, KA, ""},
};

static void test_valid_responses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof resp_cases / sizeof resp_cases[0]; i++) {
        const resp_case *c = &resp_cases[i];
        rete_h1_message m;
        rete_h1_header hdrs[MAX_H];
        int head = parse_everywhere(c->raw, strlen(c->raw), c->method, &m, hdrs);
        assert_true(head > 0);
        assert_int_equal(m.status, c->status);
        assert_int_equal(m.body, c->body);
        assert_int_equal(m.content_length, c->content_length);
        if (m.flags != c->flags)
            fail_msg("case %zu: flags %u want %u", i, m.flags, c->flags);
        assert_view(m.reason, c->reason);
    }
}

static void test_bad_responses(void **state)
{
    (void)state;
    static const struct {
        const char *raw;
        int status;
    } bad[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"HTTP/1.1 20 OK\r\n\r\n", 400},
        {"HTTP/1.1 2000 OK\r\n\r\n", 400},
        {"HTTP/1.1 099 OK\r\n\r\n", 400},
        {"HTTP/1.1 600 OK\r\n\r\n", 400},
        {"HTTP/1.1  200 OK\r\n\r\n", 400},
        {"HTTP/1.1 200 O\x01K\r\n\r\n", 400},
        {"HTTP/2.0 200 OK\r\n\r\n", 505},
        {"http/1.1 200 OK\r\n\r\n", 400},
        {"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", 400},
        {"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 400},
        {"\r\nHTTP/1.1 200 OK\r\n\r\n", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rete_h1_message m;
        rete_h1_header h[MAX_H];
        rete_h1_error err = {0};
        int rc = parse_resp(bad[i].raw, strlen(bad[i].raw), "GET", &m, h, &err);
        if (rc >= 0 || err.status != bad[i].status)
            fail_msg("bad response %zu: rc=%d status=%d", i, rc, err.status);
    }
}

/* ---- hop-by-hop, targets, chunk-size lines ---- */

static void test_hop_by_hop(void **state)
{
    (void)state;
    rete_h1_message m;
    rete_h1_header h[MAX_H];
    rete_h1_error err;
    const char raw[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Foo , ,close\r\n"
                       "Connection: x-bar\r\nX-Foo: 1\r\nX-Baz: 2\r\n\r\n";
    assert_int_equal(parse_req(LIT(raw), &m, h, &err), (int)sizeof(raw) - 1);
    assert_true(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("x-foo")));
    assert_true(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("X-BAR")));
    assert_true(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("Transfer-Encoding")));
    assert_true(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("keep-alive")));
    assert_true(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("Proxy-Connection")));
    assert_true(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("te")));
    assert_true(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("Trailer")));
    assert_true(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("upgrade")));
    assert_true(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("connection")));
    assert_false(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("X-Baz")));
    assert_false(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("")));
    assert_false(rete_h1_is_hop_by_hop(&m, RETE_VIEW_LIT("Host")));
    assert_false(rete_h1_is_hop_by_hop(NULL, RETE_VIEW_LIT("X-Foo")));
    assert_true(rete_h1_is_hop_by_hop(NULL, RETE_VIEW_LIT("TE")));
}

static void test_split_target(void **state)
{
    (void)state;
    rete_view s, a, p;
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("http://example.com:8080/a/b?c=d"), &s, &a, &p),
                     RETE_OK);
    assert_view(s, "http");
    assert_view(a, "example.com:8080");
    assert_view(p, "/a/b?c=d");
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("HTTP://h"), &s, &a, &p), RETE_OK);
    assert_view(s, "HTTP");
    assert_view(a, "h");
    assert_view(p, "");
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("http://h?q"), &s, &a, &p), RETE_OK);
    assert_view(a, "h");
    assert_view(p, "?q");
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("http://[::1]:80/"), &s, &a, &p), RETE_OK);
    assert_view(a, "[::1]:80");
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("/only/path"), &s, &a, &p), RETE_OK);
    assert_int_equal(s.len + a.len, 0);
    assert_view(p, "/only/path");
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("http:///x"), &s, &a, &p), RETE_EINVAL);
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("http://u:p@h/"), &s, &a, &p), RETE_EINVAL);
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("example.com:443"), &s, &a, &p), RETE_EINVAL);
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("*"), &s, &a, &p), RETE_EINVAL);
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("1http://h/"), &s, &a, &p), RETE_EINVAL);
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("http:/"), &s, &a, &p), RETE_EINVAL);
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT(""), &s, &a, &p), RETE_EINVAL);
    /* an authority a Host field could not carry (fuzz_h1h2_headers) */
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("http://a:<080/x"), &s, &a, &p), RETE_EINVAL);
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("http://a b/"), &s, &a, &p), RETE_EINVAL);
    assert_int_equal(rete_h1_split_target(RETE_VIEW_LIT("http://a\xff/"), &s, &a, &p), RETE_EINVAL);
}

static void test_chunk_size_line(void **state)
{
    (void)state;
    char out[RETE_H1_CHUNK_LINE_MAX];
    size_t n = rete_h1_chunk_size_line(0, out);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "0\r\n", 3);
    n = rete_h1_chunk_size_line(0x1a2b, out);
    assert_memory_equal(out, "1a2b\r\n", n);
    n = rete_h1_chunk_size_line(UINT64_MAX, out);
    assert_int_equal(n, RETE_H1_CHUNK_LINE_MAX);
    assert_memory_equal(out, "ffffffffffffffff\r\n", n);
}

/* ---- chunked decoder ---- */

/* Feed `in` in slices of `step` bytes (each slice copied flush against an
 * unreadable page); collect the payload into `out`. Returns the final rc and
 * the total bytes consumed. */
static int chunked_run(rete_h1_chunked *c, const char *in, size_t len, size_t step, char *out,
                       size_t *out_len, size_t *used)
{
    *out_len = 0;
    *used = 0;
    int rc = RETE_OK;
    while (*used < len) {
        size_t n = len - *used < step ? len - *used : step;
        guarded g = guard_copy(in + *used, n);
        size_t off = 0;
        while (off < n) {
            size_t consumed;
            const char *data;
            size_t dlen;
            rc = rete_h1_chunked_decode(c, g.p + off, n - off, &consumed, &data, &dlen);
            assert_true(consumed <= n - off);
            if (dlen) {
                assert_true(data >= g.p + off && data + dlen <= g.p + off + consumed);
                memcpy(out + *out_len, data, dlen);
                *out_len += dlen;
            }
            off += consumed;
            if (rc != RETE_OK)
                break;
        }
        *used += off;
        guard_free(&g);
        if (rc != RETE_OK)
            break;
    }
    return rc;
}

static void test_chunked_valid(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *payload;
        size_t n_trailers;
    } ok[] = {
        {"5\r\nhello\r\n0\r\n\r\n", "hello", 0},
        {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 0},
        {"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij", 0},
        {"0000000000000005\r\nhello\r\n000\r\n\r\n", "hello", 0},
        {"5;name=value;flag\r\nhello\r\n0;last\r\n\r\n", "hello", 0},
        {"5 ; name = \"quoted; value\"\r\nhello\r\n0\r\n\r\n", "hello", 0},
        {"5\t;x\r\nhello\r\n0\r\n\r\n", "hello", 0},
        {"3\r\na\r\n\r\n0\r\n\r\n", "a\r\n", 0},
        {"0\r\n\r\n", "", 0},
        {"2\r\nhi\r\n0\r\nX-Sum: abc \r\nY:\tspaced value\t\r\n\r\n", "hi", 2},
        {"0\r\nEmpty:\r\n\r\n", "", 1},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t len = strlen(ok[i].in);
        for (size_t step = 1; step <= len; step = step == 1 ? 2 : (step == 2 ? 7 : len + 1)) {
            if (step == len + 1)
                break;
            rete_h1_chunked c;
            rete_h1_chunked_init(&c);
            char out[256];
            size_t out_len, used;
            int rc = chunked_run(&c, ok[i].in, len, step, out, &out_len, &used);
            if (rc != 1)
                fail_msg("chunked ok %zu step %zu: rc=%d", i, step, rc);
            assert_int_equal(used, len);
            assert_int_equal(out_len, strlen(ok[i].payload));
            assert_memory_equal(out, ok[i].payload, out_len);
            rete_h1_header t[4];
            assert_int_equal(rete_h1_chunked_trailers(&c, t, 4), ok[i].n_trailers);
            if (ok[i].n_trailers == 2) {
                assert_view(t[0].name, "X-Sum");
                assert_view(t[0].value, "abc");
                assert_view(t[1].name, "Y");
                assert_view(t[1].value, "spaced value");
                assert_int_equal(rete_h1_chunked_trailers(&c, t, 1), 1);
            } else {
                assert_true(ok[i].n_trailers == 1 || c.trailer_buf == NULL); /* lazy */
            }
            rete_h1_chunked_free(&c);
            assert_null(c.trailer_buf);
        }
        /* Whole input in one slice. */
        rete_h1_chunked c;
        rete_h1_chunked_init(&c);
        char out[256];
        size_t out_len, used;
        assert_int_equal(chunked_run(&c, ok[i].in, len, len, out, &out_len, &used), 1);
        assert_int_equal(used, len);
        rete_h1_chunked_free(&c);
    }
}

static void test_chunked_stops_at_end(void **state)
{
    (void)state;
    rete_h1_chunked c;
    rete_h1_chunked_init(&c);
    const char in[] = "1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    size_t consumed;
    const char *data;
    size_t dlen;
    /* The size line and the payload come back from one call. */
    assert_int_equal(rete_h1_chunked_decode(&c, LIT(in), &consumed, &data, &dlen), RETE_OK);
    assert_int_equal(consumed, 4);
    assert_int_equal(dlen, 1);
    assert_int_equal(*data, 'x');
    size_t off = 4;
    assert_int_equal(rete_h1_chunked_decode(&c, in + off, sizeof in - 1 - off, &consumed, &data, &dlen),
                     1);
    assert_int_equal(off + consumed, 11); /* the pipelined request is left alone */
    assert_true(c.done);
    assert_int_equal(rete_h1_chunked_decode(&c, in + 11, 4, &consumed, &data, &dlen), 1);
    assert_int_equal(consumed, 0);
    rete_h1_chunked_free(&c);
}

static void test_chunked_malformed(void **state)
{
    (void)state;
#define S(x) x, sizeof(x) - 1
    static const struct {
        const char *in;
        size_t len;
        int rc;
    } bad[] = {
        {S("g\r\n"), RETE_EINVAL},
        {S("\r\n"), RETE_EINVAL},
        {S("-1\r\n"), RETE_EINVAL},
        {S("+1\r\nx\r\n0\r\n\r\n"), RETE_EINVAL},
        {S("0x5\r\nhello\r\n0\r\n\r\n"), RETE_EINVAL},
        {S("1 2\r\n"), RETE_EINVAL},
        {S(" 5\r\nhello\r\n"), RETE_EINVAL},
        {S("5 \r\nhello\r\n"), RETE_EINVAL},
        {S("10000000000000000\r\n"), RETE_EINVAL},      /* 17 digits: overflow */
        {S("00000000000000005\r\nhello\r\n"), RETE_EINVAL}, /* 17 digits even if small */
        {S("5\nhello\r\n0\r\n\r\n"), RETE_EINVAL},      /* bare LF */
        {S("5\rhello\r\n"), RETE_EINVAL},               /* bare CR */
        {S("5\r\nhelloX\r\n0\r\n\r\n"), RETE_EINVAL},   /* missing CRLF after data */
        {S("5\r\nhello\n0\r\n\r\n"), RETE_EINVAL},      /* bare LF after data */
        {S("5\r\nhello\r0\r\n\r\n"), RETE_EINVAL},
        {S("5;a\x01" "b\r\nhello\r\n0\r\n\r\n"), RETE_EINVAL}, /* CTL in extension */
        {S("5;a\nhello\r\n0\r\n\r\n"), RETE_EINVAL},
        {S("5;a\x00" "b\r\nhello\r\n"), RETE_EINVAL},
        {S("0\r\n\n"), RETE_EINVAL},                    /* bare LF ending the body */
        {S("0\r\nX: a\n\r\n"), RETE_EINVAL},
        {S("0\r\n X: a\r\n\r\n"), RETE_EINVAL},         /* obs-fold / leading space */
        {S("0\r\nX: a\r\n b\r\n\r\n"), RETE_EINVAL},    /* obs-fold */
        {S("0\r\nX : a\r\n\r\n"), RETE_EINVAL},         /* space before colon */
        {S("0\r\n: a\r\n\r\n"), RETE_EINVAL},           /* empty trailer name */
        {S("0\r\nNoColon\r\n\r\n"), RETE_EINVAL},
        {S("0\r\nX: a\x7f\r\n\r\n"), RETE_EINVAL},
        {S("0\r\nX: a\rb\r\n\r\n"), RETE_EINVAL},
        {S("0\r\n\rX"), RETE_EINVAL},
    };
#undef S
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = bad[i].len;
        for (size_t step = 1; step <= len; step += len - 1 ? len - 1 : 1) {
            rete_h1_chunked c;
            rete_h1_chunked_init(&c);
            char out[256];
            size_t out_len, used;
            int rc = chunked_run(&c, bad[i].in, len, step, out, &out_len, &used);
            if (rc != bad[i].rc)
                fail_msg("chunked bad %zu step %zu: rc=%d want %d", i, step, rc, bad[i].rc);
            /* The decoder stays failed. */
            size_t consumed;
            const char *data;
            size_t dlen;
            assert_int_equal(rete_h1_chunked_decode(&c, LIT("0\r\n\r\n"), &consumed, &data, &dlen),
                             RETE_EINVAL);
            assert_int_equal(rete_h1_chunked_decode(&c, "", 0, &consumed, &data, &dlen),
                             RETE_EINVAL);
            rete_h1_chunked_free(&c);
            if (len == 1)
                break;
        }
    }
}

static void test_chunked_limits(void **state)
{
    (void)state;
    /* Size line with 5000 bytes of extension: ELIMIT. */
    size_t len = 5000;
    char *in = malloc(len);
    assert_non_null(in);
    memcpy(in, "5;", 2);
    memset(in + 2, 'a', len - 2);
    rete_h1_chunked c;
    rete_h1_chunked_init(&c);
    char out[16];
    size_t out_len, used;
    assert_int_equal(chunked_run(&c, in, len, 1, out, &out_len, &used), RETE_ELIMIT);
    rete_h1_chunked_free(&c);
    free(in);

    /* Trailer section larger than max_trailer: ELIMIT, buffer freed by free(). */
    rete_h1_chunked_init(&c);
    c.max_trailer = 16;
    const char tr[] = "0\r\nX: 0123456789abcdef\r\n\r\n";
    assert_int_equal(chunked_run(&c, LIT(tr), 3, out, &out_len, &used), RETE_ELIMIT);
    rete_h1_chunked_free(&c);
    assert_null(c.trailer_buf);

    /* Exactly max_trailer bytes fit ("X: 0123456789\r\n" is 15 + "\r\n"). */
    rete_h1_chunked_init(&c);
    c.max_trailer = 15;
    const char fit[] = "0\r\nX: 0123456789\r\n\r\n";
    assert_int_equal(chunked_run(&c, LIT(fit), 1, out, &out_len, &used), 1);
    rete_h1_header t[2];
    assert_int_equal(rete_h1_chunked_trailers(&c, t, 2), 1);
    assert_view(t[0].value, "0123456789");
    rete_h1_chunked_free(&c);

    /* Largest chunk size parses; the decoder then waits for data. */
    rete_h1_chunked_init(&c);
    assert_int_equal(chunked_run(&c, LIT("ffffffffffffffff\r\nab"), 5, out, &out_len, &used),
                     RETE_OK);
    assert_int_equal(out_len, 2);
    assert_int_equal(c.remaining, UINT64_MAX - 2);
    rete_h1_chunked_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_requests),   cmocka_unit_test(test_request_details),
        cmocka_unit_test(test_value_bytes_every_offset),
        cmocka_unit_test(test_smuggling_list),   cmocka_unit_test(test_limits),
        cmocka_unit_test(test_valid_responses),  cmocka_unit_test(test_bad_responses),
        cmocka_unit_test(test_hop_by_hop),       cmocka_unit_test(test_split_target),
        cmocka_unit_test(test_chunk_size_line),  cmocka_unit_test(test_chunked_valid),
        cmocka_unit_test(test_chunked_stops_at_end), cmocka_unit_test(test_chunked_malformed),
        cmocka_unit_test(test_chunked_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
