/* rete-loadgen's HTTP/2 codec: h2c with prior knowledge (RFC 9113 §3.3),
 * up to --streams concurrent streams per connection, framing by nghttp2. */
#include "loadgen.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

/* One request in flight: the stream's user data. */
typedef struct h2_slot {
    uint64_t index;
    int status;
    struct h2_slot *next_free;
} h2_slot;

typedef struct h2_conn {
    nghttp2_session *session;
    lg_conn *conn;
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
    if (frame->hd.type != NGHTTP2_HEADERS || namelen != 7 || memcmp(name, ":status", 7) != 0)
        return 0;
    h2_slot *slot = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    uint64_t status = 0;
    if (slot && rete_view_to_u64(rete_view_make((const char *)value, valuelen), &status) &&
        status >= 200)
        slot->status = (int)status;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *user)
{
    h2_conn *h = user;
    h2_slot *slot = nghttp2_session_get_stream_user_data(s, stream_id);
    if (!slot)
        return 0;
    if (error_code == NGHTTP2_NO_ERROR && slot->status)
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

static void h2_send(lg_conn *c, uint64_t index)
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
    const lg *l = c->lg;
    const nghttp2_nv hdrs[] = {nv(":method", "GET"), nv(":scheme", "http"),
                               nv(":authority", l->o.host), nv(":path", l->o.path)};
    if (nghttp2_submit_request(h->session, NULL, hdrs, 4, NULL, slot) < 0) {
        slot->next_free = h->free_slots;
        h->free_slots = slot;
        lg_request_failed(c, index);
    }
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
    .capacity = h2_capacity,
    .start = h2_start,
    .send = h2_send,
    .flush = h2_flush,
    .on_data = h2_on_data,
    .reset = h2_reset,
};
