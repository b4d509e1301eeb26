/* rete-loadgen's HTTP/2 codecs: h2c with prior knowledge (RFC 9113 §3.3),
 * up to --streams concurrent streams per connection, framing by nghttp2.
 *
 * Two request shapes share the session code: plain HTTP/2 (`GET`, done at
 * the response's end) and gRPC unary calls (grpc/doc/PROTOCOL-HTTP2.md):
 * `POST` of one length-prefixed message with `content-type:
 * application/grpc` and `te: trailers`, judged by the HTTP status and the
 * `grpc-status` of the trailers (or of a trailers-only response). */
#include "loadgen.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define GRPC_FRAME_HEADER 5 /* compressed flag, 32-bit big-endian length */

/* One request in flight: the stream's user data. */
typedef struct h2_slot {
    uint64_t index;
    int status;
    int grpc_status; /* -1 until a grpc-status field arrives, -2 if unreadable */
    size_t body_off; /* gRPC: bytes of l->request handed to nghttp2 so far */
    struct h2_slot *next_free;
} h2_slot;

typedef struct h2_conn {
    nghttp2_session *session;
    lg_conn *conn;
    bool grpc;
    h2_slot *free_slots;
    unsigned n_slots;
    h2_slot slots[];
} h2_conn;

static unsigned h2_capacity(const lg *l)
{
    return l->o.streams;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2_slot *slot = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!slot)
        return 0;
    rete_view n = rete_view_make((const char *)name, namelen);
    rete_view v = rete_view_make((const char *)value, valuelen);
    uint64_t num = 0;
    bool numeric = rete_view_to_u64(v, &num);
    if (rete_view_eq(n, RETE_VIEW_LIT(":status"))) {
        if (numeric && num >= 200 && num <= 999) /* 1xx: the final response follows */
            slot->status = (int)num;
    } else if (rete_view_eq(n, RETE_VIEW_LIT("grpc-status"))) {
        slot->grpc_status = numeric && num <= 0xffff ? (int)num : -2;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *user)
{
    h2_conn *h = user;
    h2_slot *slot = nghttp2_session_get_stream_user_data(s, stream_id);
    if (!slot)
        return 0;
    if (error_code == NGHTTP2_NO_ERROR && slot->status && h->grpc)
        lg_grpc_response(h->conn, slot->index, slot->status, slot->grpc_status);
    else if (error_code == NGHTTP2_NO_ERROR && slot->status)
        lg_response(h->conn, slot->index, slot->status);
    else
        lg_request_failed(h->conn, slot->index);
    slot->next_free = h->free_slots;
    h->free_slots = slot;
    return 0;
}

/* Hand nghttp2's pending frames to the socket. */
static void h2_flush(lg_conn *c)
{
    h2_conn *h = c->h2;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->session, &data);
        if (n < 0) {
            lg_conn_fail(c);
            return;
        }
        if (n == 0)
            return;
        lg_conn_write(c, (const char *)data, (size_t)n);
        if (c->cstate != CS_READY)
            return;
    }
}

static void h2_start(lg_conn *c)
{
    unsigned n = c->lg->o.streams;
    h2_conn *h = rete_calloc(1, sizeof(*h) + n * sizeof(h2_slot));
    h->conn = c;
    h->grpc = c->lg->o.codec == &lg_grpc_codec;
    h->n_slots = n;
    for (unsigned i = n; i-- > 0;) {
        h->slots[i].next_free = h->free_slots;
        h->free_slots = &h->slots[i];
    }
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        abort();
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rc = nghttp2_session_client_new(&h->session, cb, h);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        abort();
    c->h2 = h;
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, n},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, settings, 2) != 0) {
        lg_conn_fail(c);
        return;
    }
    h2_flush(c);
}

static nghttp2_nv nv(const char *name, const char *value)
{
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                        NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

/* The gRPC request body: the run's one message, from the slot's offset. */
static ssize_t grpc_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *user)
{
    h2_slot *slot = src->ptr;
    const lg *l = ((h2_conn *)user)->conn->lg;
    size_t n = l->request_len - slot->body_off;
    if (n > length)
        n = length;
    memcpy(buf, l->request + slot->body_off, n);
    slot->body_off += n;
    if (slot->body_off == l->request_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Start request `index` on a free stream slot, with the gRPC message as its
 * body when `body` is set. */
static void submit(lg_conn *c, uint64_t index, const nghttp2_nv *hdrs, size_t n_hdrs, bool body)
{
    h2_conn *h = c->h2;
    h2_slot *slot = h->free_slots;
    if (!slot) { /* cannot happen: inflight is bounded by the slot count */
        lg_request_failed(c, index);
        return;
    }
    h->free_slots = slot->next_free;
    slot->index = index;
    slot->status = 0;
    slot->grpc_status = -1;
    slot->body_off = 0;
    nghttp2_data_provider prd = {.source.ptr = slot, .read_callback = grpc_read};
    if (nghttp2_submit_request(h->session, NULL, hdrs, n_hdrs, body ? &prd : NULL, slot) < 0) {
        slot->next_free = h->free_slots;
        h->free_slots = slot;
        lg_request_failed(c, index);
    }
}

static void h2_send(lg_conn *c, uint64_t index)
{
    const lg *l = c->lg;
    const nghttp2_nv hdrs[] = {nv(":method", "GET"), nv(":scheme", "http"),
                               nv(":authority", l->o.host), nv(":path", l->o.path)};
    submit(c, index, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), false);
}

static void grpc_send(lg_conn *c, uint64_t index)
{
    const lg *l = c->lg;
    const nghttp2_nv hdrs[] = {nv(":method", "POST"),
                               nv(":scheme", "http"),
                               nv(":authority", l->o.host),
                               nv(":path", l->o.path),
                               nv("content-type", "application/grpc"),
                               nv("te", "trailers")};
    submit(c, index, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), true);
}

/* The one request message of the run, framed (gRPC Length-Prefixed-Message,
 * not compressed): a protobuf message whose field 1 (wire type 2, bytes)
 * holds --grpc-payload bytes, so protobuf-aware servers can parse it. */
static void grpc_prepare(lg *l)
{
    size_t payload = l->o.grpc_payload;
    uint8_t varint[10];
    size_t vlen = 0;
    for (size_t v = payload; vlen == 0 || v; v >>= 7)
        varint[vlen++] = (uint8_t)((v & 0x7f) | (v >> 7 ? 0x80 : 0));
    size_t msg = 1 + vlen + payload;
    l->request_len = GRPC_FRAME_HEADER + msg;
    uint8_t *p = rete_malloc(l->request_len);
    p[0] = 0;
    p[1] = (uint8_t)(msg >> 24);
    p[2] = (uint8_t)(msg >> 16);
    p[3] = (uint8_t)(msg >> 8);
    p[4] = (uint8_t)msg;
    p[5] = 0x0a; /* field 1, length-delimited */
    memcpy(p + 6, varint, vlen);
    for (size_t i = 0; i < payload; i++)
        p[6 + vlen + i] = (uint8_t)"hello"[i % 5];
    l->request = (char *)p;
}

static void h2_on_data(lg_conn *c)
{
    h2_conn *h = c->h2;
    ssize_t n = nghttp2_session_mem_recv(h->session, (const uint8_t *)c->buf, c->len);
    c->len = 0;
    if (n < 0) {
        fprintf(stderr, "rete-loadgen: HTTP/2 error: %s\n", nghttp2_strerror((int)n));
        lg_conn_fail(c);
        return;
    }
    if (c->cstate == CS_READY)
        h2_flush(c); /* SETTINGS ack, WINDOW_UPDATE, PING ack */
    if (c->cstate == CS_READY && !nghttp2_session_want_read(h->session) &&
        !nghttp2_session_want_write(h->session))
        lg_conn_fail(c); /* GOAWAY received and every stream done */
}

static void h2_reset(lg_conn *c)
{
    h2_conn *h = c->h2;
    if (!h)
        return;
    c->h2 = NULL;
    /* Every slot not on the free list is a request in flight. */
    bool *is_free = rete_calloc(h->n_slots, sizeof(bool));
    for (h2_slot *s = h->free_slots; s; s = s->next_free)
        is_free[s - h->slots] = true;
    for (unsigned i = 0; i < h->n_slots; i++)
        if (!is_free[i])
            lg_request_failed(c, h->slots[i].index);
    free(is_free);
    nghttp2_session_del(h->session);
    free(h);
}

const lg_codec lg_h2_codec = {
    .name = "h2c",
    .prepare = NULL,
    .capacity = h2_capacity,
    .start = h2_start,
    .send = h2_send,
    .flush = h2_flush,
    .on_data = h2_on_data,
    .reset = h2_reset,
};

const lg_codec lg_grpc_codec = {
    .name = "grpc",
    .prepare = grpc_prepare,
    .capacity = h2_capacity,
    .start = h2_start,
    .send = grpc_send,
    .flush = h2_flush,
    .on_data = h2_on_data,
    .reset = h2_reset,
};
