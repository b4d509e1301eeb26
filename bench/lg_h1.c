/* rete-loadgen's HTTP/1.1 codec: one request in flight per keep-alive
 * connection, responses framed with the project's parser (h1_parse.h). */
#include "loadgen.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"

#define H1_MAX_HEADERS 64

enum { PH_IDLE, PH_HEAD, PH_BODY_LENGTH, PH_BODY_CHUNKED };

/* The run's one request, sent as is on every connection. */
static void h1_prepare(lg *l)
{
    size_t cap = strlen(l->o.path) + strlen(l->o.host) + 64;
    l->request = rete_malloc(cap);
    l->request_len = (size_t)snprintf(l->request, cap, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n",
                                      l->o.path, l->o.host);
}

static unsigned h1_capacity(const lg *l)
{
    return 1;
}

static void h1_start(lg_conn *c)
{
    c->h1.phase = PH_IDLE;
}

static void h1_send(lg_conn *c, uint64_t index)
{
    c->h1.index = index;
    c->h1.phase = PH_HEAD;
    c->len = 0;
    /* The request bytes are the run's one immutable buffer. */
    lg_conn_write(c, c->lg->request, c->lg->request_len);
}

static void consume(lg_conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static void h1_done(lg_conn *c)
{
    lg_h1_state *h = &c->h1;
    h->phase = PH_IDLE;
    /* Bytes beyond the response (the server is confused), or a server that
     * closes: start afresh. */
    bool reuse = c->len == 0 && h->keep_alive;
    lg_response(c, h->index, h->status);
    if (!reuse)
        lg_conn_fail(c);
}

/* Read the head; returns false when more bytes are needed or the connection failed. */
static bool h1_head(lg_conn *c)
{
    lg_h1_state *h = &c->h1;
    rete_h1_header headers[H1_MAX_HEADERS];
    rete_h1_message msg = {.headers = headers};
    rete_h1_error err = {0};
    rete_h1_limits limits = {8192, LG_READ_BUF, H1_MAX_HEADERS};
    int n = rete_h1_parse_response(c->buf, c->len, &limits, RETE_VIEW_LIT("GET"), &msg, &err);
    if (n == RETE_EAGAIN) {
        if (c->len == sizeof(c->buf))
            lg_conn_fail(c);
        return false;
    }
    if (n < 0) {
        fprintf(stderr, "rete-loadgen: bad response: %s\n", err.reason);
        lg_conn_fail(c);
        return false;
    }
    consume(c, (size_t)n);
    if (msg.status < 200) /* 1xx: the final response follows (RFC 9110 §15.2) */
        return true;
    h->status = msg.status;
    h->keep_alive = (msg.flags & RETE_H1_F_KEEP_ALIVE) != 0;
    switch (msg.body) {
    case RETE_H1_BODY_NONE:
        h1_done(c);
        return false;
    case RETE_H1_BODY_LENGTH:
        h->phase = PH_BODY_LENGTH;
        h->body_left = msg.content_length;
        return true;
    case RETE_H1_BODY_CHUNKED:
        h->phase = PH_BODY_CHUNKED;
        rete_h1_chunked_init(&h->chunked);
        return true;
    case RETE_H1_BODY_UNTIL_CLOSE:
    default:
        /* A load generator cannot reuse such a connection. */
        fprintf(stderr, "rete-loadgen: response without framing\n");
        lg_conn_fail(c);
        return false;
    }
}

static void h1_on_data(lg_conn *c)
{
    lg_h1_state *h = &c->h1;
    if (h->phase == PH_IDLE) {
        /* Unsolicited bytes (or the peer's 408 before closing). */
        lg_conn_fail(c);
        return;
    }
    if (h->phase == PH_HEAD && !h1_head(c))
        return;
    if (h->phase == PH_BODY_LENGTH) {
        size_t take = c->len < h->body_left ? c->len : (size_t)h->body_left;
        consume(c, take);
        h->body_left -= take;
        if (h->body_left == 0)
            h1_done(c);
        return;
    }
    if (h->phase == PH_BODY_CHUNKED) {
        /* The decoder stops after each payload span: feed it until it wants
         * more input or reports the end. */
        int rc = RETE_OK;
        while (c->len > 0) {
            size_t used = 0, data_len = 0;
            const char *data = NULL;
            rc = rete_h1_chunked_decode(&h->chunked, c->buf, c->len, &used, &data, &data_len);
            if (rc < 0 || (used == 0 && rc == RETE_OK))
                break;
            consume(c, used);
            if (rc == 1)
                break;
        }
        if (rc < 0) {
            fprintf(stderr, "rete-loadgen: bad chunked body\n");
            lg_conn_fail(c);
        } else if (rc == 1) {
            rete_h1_chunked_free(&h->chunked);
            h1_done(c);
        }
    }
}

static void h1_reset(lg_conn *c)
{
    lg_h1_state *h = &c->h1;
    if (h->phase == PH_BODY_CHUNKED)
        rete_h1_chunked_free(&h->chunked);
    if (h->phase != PH_IDLE)
        lg_request_failed(c, h->index);
    h->phase = PH_IDLE;
}

const lg_codec lg_h1_codec = {
    .name = "http/1.1",
    .prepare = h1_prepare,
    .capacity = h1_capacity,
    .start = h1_start,
    .send = h1_send,
    .flush = NULL,
    .on_data = h1_on_data,
    .reset = h1_reset,
};
