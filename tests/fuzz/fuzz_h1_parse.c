/* libFuzzer target for src/common/h1_parse.c: the input is parsed as a
 * request head, as a response head (to GET and to HEAD), and run through the
 * chunked decoder whole and byte by byte. Besides memory errors (ASan) it
 * checks the parser's contracts: views lie inside the input, a head never
 * exceeds the input, a shorter prefix of an accepted head is never accepted,
 * and the chunked decoder gives the same answer however the input is split. */
#include "h1_parse.h"
#include "fuzz.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_view(rete_view v, const char *buf, size_t len)
{
    if (v.len)
        CHECK(v.p >= buf && v.p + v.len <= buf + len);
}

static void check_msg(const rete_h1_message *m, const char *buf, size_t head)
{
    check_view(m->method, buf, head);
    check_view(m->target, buf, head);
    check_view(m->reason, buf, head);
    check_view(m->host, buf, head);
    check_view(m->upgrade, buf, head);
    for (size_t i = 0; i < m->n_headers; i++) {
        check_view(m->headers[i].name, buf, head);
        check_view(m->headers[i].value, buf, head);
        CHECK(m->headers[i].name.len > 0);
    }
}

static void fuzz_head(const char *buf, size_t len, int response, const char *method)
{
    rete_h1_limits lim = {256, 2048, 16};
    rete_h1_header hdrs[16];
    rete_h1_message m = {.headers = hdrs};
    rete_h1_error err = {0};
    rete_view meth = rete_view_make(method, strlen(method));
    int rc = response ? rete_h1_parse_response(buf, len, &lim, meth, &m, &err)
                      : rete_h1_parse_request(buf, len, &lim, &m, &err);
    if (rc > 0) {
        CHECK((size_t)rc <= len && (size_t)rc <= lim.max_head);
        check_msg(&m, buf, (size_t)rc);
        if (!response)
            CHECK(m.minor_version == 0 || m.host.p != NULL); /* Host present in 1.1 */
        /* One byte less is not a complete head. */
        int rc2 = response ? rete_h1_parse_response(buf, (size_t)rc - 1, &lim, meth, &m, &err)
                           : rete_h1_parse_request(buf, (size_t)rc - 1, &lim, &m, &err);
        CHECK(rc2 <= 0);
    } else if (rc != RETE_EAGAIN) {
        CHECK(rc == RETE_EINVAL || rc == RETE_ELIMIT);
        CHECK(err.reason != NULL);
        CHECK(err.status == 400 || err.status == 414 || err.status == 431 || err.status == 501 ||
              err.status == 505);
    }
}

/* Run the decoder over buf in slices of `step`; returns the final rc and
 * sums payload bytes into *payload. */
static int run_chunked(const char *buf, size_t len, size_t step, uint64_t *payload,
                       size_t *trailers)
{
    rete_h1_chunked c;
    rete_h1_chunked_init(&c);
    c.max_trailer = 512;
    size_t off = 0;
    int rc = RETE_OK;
    *payload = 0;
    while (off < len && rc == RETE_OK) {
        size_t n = len - off < step ? len - off : step;
        size_t used = 0;
        while (used < n && rc == RETE_OK) {
            size_t consumed, dlen;
            const char *data;
            rc = rete_h1_chunked_decode(&c, buf + off + used, n - used, &consumed, &data, &dlen);
            CHECK(consumed <= n - used);
            if (dlen)
                CHECK(data >= buf + off + used && data + dlen <= buf + off + used + consumed);
            *payload += dlen;
            used += consumed;
            if (rc == RETE_OK && consumed == 0)
                CHECK(used == n);
        }
        off += used;
    }
    *trailers = 0;
    if (rc == 1) {
        rete_h1_header t[8];
        *trailers = rete_h1_chunked_trailers(&c, t, 8);
        for (size_t i = 0; i < *trailers; i++)
            CHECK(t[i].name.len > 0);
    }
    rete_h1_chunked_free(&c);
    CHECK(c.trailer_buf == NULL);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    fuzz_head(buf, size, 0, "");
    fuzz_head(buf, size, 1, "GET");
    fuzz_head(buf, size, 1, "HEAD");

    uint64_t p1, p2;
    size_t t1, t2;
    int rc1 = run_chunked(buf, size, size ? size : 1, &p1, &t1);
    int rc2 = run_chunked(buf, size, 1, &p2, &t2);
    CHECK(rc1 == rc2);
    CHECK(p1 == p2 && t1 == t2);
    return 0;
}
