#include "exchange.h"
#include "alloc.h"
#include "log.h"
#include "worker.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const rete_request_path *path;

void rete_request_path_set(const rete_request_path *rp)
{
    path = rp;
}

const rete_request_path *rete_request_path_get(void)
{
    return path;
}

bool rete_ex_normalize_path(rete_exchange *ex)
{
    return path->normalize_path(ex);
}

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

rete_exchange *rete_ex_new(rete_worker *w, const rete_side_ops *ds_ops, void *ds)
{
    rete_exchange *ex = w->ex_pool;
    if (ex) {
        w->ex_pool = ex->next_free;
        w->n_ex_pool--;
        /* Everything but the timer handle, which libuv links by address:
         * a pooled exchange keeps its (stopped) timer for the next one. */
        rete_arena *a = ex->arena;
        bool timer = ex->timer_inited;
        size_t t0 = offsetof(rete_exchange, timer), t1 = t0 + sizeof(ex->timer);
        memset(ex, 0, t0);
        memset((char *)ex + t1, 0, sizeof(*ex) - t1);
        ex->arena = a;
        ex->timer_inited = timer;
    } else {
        ex = rete_calloc(1, sizeof(*ex));
        ex->arena = rete_arena_new(4096);
    }
    ex->worker = w;
    ex->gen = w->gen;
    rete_gen_hold(ex->gen);
    w->active_exchanges++;
    ex->ops[RETE_DOWNSTREAM] = ds_ops;
    ex->side[RETE_DOWNSTREAM] = ds;
    ex->attached[RETE_DOWNSTREAM] = true;
    ex->req.content_length = -1;
    ex->resp.content_length = -1;
    ex->endpoint = -1;
    ex->start_ns = now_ns();
    ex->body_limit = w->gen->cfg->proxy.limits.max_body_buffer;
    return ex;
}

void rete_ex_timer_start(rete_exchange *ex, uv_timer_cb cb, uint64_t ms)
{
    if (!ex->timer_inited) {
        uv_timer_init(&ex->worker->loop, &ex->timer);
        ex->timer.data = ex;
        ex->timer_inited = true;
    }
    uv_timer_start(&ex->timer, cb, ms, 0);
}

static void pipe_clear(rete_pipe *p)
{
    for (rete_chunk *c = p->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    p->head = p->tail = NULL;
    p->bytes = 0;
}

/* The last of an exchange: release what it holds (body chunks, header
 * arena, the configuration generation). Called only from rete_ex_reap, when
 * nothing refers to the exchange any more. */
static void ex_release(rete_exchange *ex, bool keep_arena)
{
    rete_worker *w = ex->worker;
    pipe_clear(&ex->req_body);
    pipe_clear(&ex->resp_body);
    rete_gen_release(w, ex->gen);
    ex->gen = NULL;
    w->active_exchanges--;
    if (keep_arena) {
        rete_arena_reset(ex->arena);
    } else {
        rete_arena_free(ex->arena);
        ex->arena = NULL;
    }
}

static void ex_free_cb(uv_handle_t *h)
{
    free(h->data); /* released by rete_ex_reap; only the struct was left */
}

/* Recycle every exchange let go of since the last call. Runs from the
 * loop's prepare phase and from safe points in the codecs (after a read
 * was processed, after an HTTP/2 stream closed: no exchange on the stack):
 * an HTTP/2 read can open and cancel hundreds of streams, and a loop
 * iteration reads every ready connection, so reaping only once per
 * iteration kept every exchange of every connection read in that
 * iteration alive at once (~5 KB each: 700 MB under distributed
 * rapid-reset churn). A pooled exchange keeps its stopped timer; one that
 * is freed and used its timer needs uv_close before its struct can go: its
 * arena and bodies are released now, the bare struct in the close
 * callback. */
void rete_ex_reap(rete_worker *w)
{
    while (w->ex_reap) {
        rete_exchange *ex = w->ex_reap;
        w->ex_reap = ex->next_free;
        bool pool = w->n_ex_pool < RETE_EX_POOL && !w->draining;
        if (ex->timer_inited && !pool) {
            ex_release(ex, false);
            /* At worker exit the loop's final walk has closed the timer
             * already, and the loop has run its close callbacks. */
            if (uv_is_closing((uv_handle_t *)&ex->timer))
                free(ex);
            else
                uv_close((uv_handle_t *)&ex->timer, ex_free_cb);
            continue;
        }
        ex_release(ex, pool);
        if (!pool) {
            free(ex);
            continue;
        }
        ex->next_free = w->ex_pool;
        w->ex_pool = ex;
        w->n_ex_pool++;
    }
}

void rete_ex_pool_free(rete_worker *w)
{
    rete_ex_reap(w);
    /* the loop's final walk closed the pooled exchanges' timers */
    while (w->ex_pool) {
        rete_exchange *ex = w->ex_pool;
        w->ex_pool = ex->next_free;
        rete_arena_free(ex->arena);
        free(ex);
    }
    w->n_ex_pool = 0;
}

void rete_ex_detach(rete_exchange *ex, rete_side side)
{
    if (!ex->attached[side])
        return;
    if (side == RETE_DOWNSTREAM)
        path->release_share(ex); /* the counter lives in the downstream connection */
    ex->attached[side] = false;
    ex->side[side] = NULL;
    if (side == RETE_DOWNSTREAM && ex->attached[RETE_UPSTREAM] &&
        !(ex->resp_body.end && ex->req_body.end)) {
        /* The client left before the exchange ended: the upstream has
         * nobody to answer. (A complete exchange just waits for the
         * upstream to let go.) */
        if (!ex->done)
            path->finish(ex);
        ex->ops[RETE_UPSTREAM]->on_abort(ex);
        return;
    }
    if (ex->attached[RETE_DOWNSTREAM] || ex->attached[RETE_UPSTREAM])
        return;
    if (!ex->done)
        path->finish(ex);
    if (ex->timer_inited)
        uv_timer_stop(&ex->timer);
    ex->next_free = ex->worker->ex_reap;
    ex->worker->ex_reap = ex;
}

/* ---- heads ---- */

rete_view rete_ex_dup(rete_exchange *ex, rete_view v)
{
    if (v.len == 0)
        return (rete_view){"", 0};
    return rete_view_make(rete_arena_strndup(ex->arena, v.p, v.len), v.len);
}

void rete_msg_add(rete_exchange *ex, rete_msg *m, rete_view name, rete_view value)
{
    if (m->n_headers == m->cap_headers)
        RETE_ARENA_GROW(ex->arena, m->headers, m->n_headers, m->cap_headers, m->n_headers + 1, 16);
    char *n = rete_arena_strndup(ex->arena, name.p, name.len);
    for (size_t i = 0; i < name.len; i++)
        n[i] = rete_ascii_lower(n[i]);
    m->headers[m->n_headers].name = rete_view_make(n, name.len);
    m->headers[m->n_headers].value = rete_ex_dup(ex, value);
    m->n_headers++;
}

rete_view rete_msg_get(const rete_msg *m, rete_view lname)
{
    for (uint32_t i = 0; i < m->n_headers; i++)
        if (rete_view_eq(m->headers[i].name, lname))
            return m->headers[i].value;
    return RETE_VIEW_NULL;
}

void rete_msg_remove(rete_msg *m, rete_view lname)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < m->n_headers; i++)
        if (!rete_view_ieq(m->headers[i].name, lname))
            m->headers[j++] = m->headers[i];
    m->n_headers = j;
}

void rete_msg_set(rete_exchange *ex, rete_msg *m, rete_view lname, rete_view value)
{
    rete_msg_remove(m, lname);
    rete_msg_add(ex, m, lname, value);
}

/* ---- pipes ---- */

/* The request path's body stages see an HTTP body, not a tunnel's bytes,
 * and nothing after its finish stages (a client gone early leaves the
 * upstream's last chunks in flight): what a filter keeps for a request may
 * be released at finish. */
static inline void body_stages(rete_exchange *ex, rete_side producer, const char *data, size_t len,
                               bool end)
{
    if (path->body && !ex->tunnel && !ex->done)
        path->body(ex, producer, data, len, end);
}

bool rete_ex_push(rete_exchange *ex, rete_side producer, const char *data, size_t len)
{
    rete_pipe *p = producer == RETE_DOWNSTREAM ? &ex->req_body : &ex->resp_body;
    rete_side consumer = producer == RETE_DOWNSTREAM ? RETE_UPSTREAM : RETE_DOWNSTREAM;
    if (len) {
        body_stages(ex, producer, data, len, false);
        rete_chunk *c = rete_malloc(sizeof(*c) + len);
        c->next = NULL;
        c->len = (uint32_t)len;
        c->off = 0;
        memcpy(c->data, data, len);
        if (p->tail)
            p->tail->next = c;
        else
            p->head = c;
        p->tail = c;
        p->bytes += len;
        if (ex->tunnel) {
            /* Raw bytes: counted here (an HTTP body's are counted by the
             * telemetry filter's body stages). */
            if (producer == RETE_DOWNSTREAM)
                ex->req_bytes += len;
            else
                ex->resp_bytes += len;
            if (ex->tcp_open) /* an open tunnel's bytes: received downstream, sent upstream */
                rete_metrics_inc(ex->worker->shard,
                                 producer == RETE_DOWNSTREAM ? ex->tcp_received : ex->tcp_sent,
                                 len);
        }
    }
    if (ex->attached[consumer] && (consumer == RETE_DOWNSTREAM ? ex->head_sent : true))
        ex->ops[consumer]->on_data(ex);
    p->paused = p->bytes > ex->body_limit;
    return p->paused;
}

void rete_ex_end(rete_exchange *ex, rete_side producer)
{
    rete_pipe *p = producer == RETE_DOWNSTREAM ? &ex->req_body : &ex->resp_body;
    rete_side consumer = producer == RETE_DOWNSTREAM ? RETE_UPSTREAM : RETE_DOWNSTREAM;
    if (p->end)
        return;
    p->end = true;
    body_stages(ex, producer, NULL, 0, true);
    if (ex->attached[consumer] && (consumer == RETE_DOWNSTREAM ? ex->head_sent : true))
        ex->ops[consumer]->on_data(ex);
}

size_t rete_ex_peek(rete_exchange *ex, rete_side consumer, const char **data)
{
    rete_pipe *p = rete_ex_in(ex, consumer);
    if (!p->head) {
        *data = NULL;
        return 0;
    }
    *data = p->head->data + p->head->off;
    return p->head->len - p->head->off;
}

void rete_ex_consume(rete_exchange *ex, rete_side consumer, size_t n)
{
    rete_pipe *p = rete_ex_in(ex, consumer);
    size_t left = n;
    while (left && p->head) {
        rete_chunk *c = p->head;
        size_t avail = c->len - c->off;
        size_t take = left < avail ? left : avail;
        c->off += (uint32_t)take;
        left -= take;
        if (c->off == c->len) {
            p->head = c->next;
            if (!p->head)
                p->tail = NULL;
            free(c);
        }
    }
    p->bytes -= n - left;
    size_t credit = n - left;
    if (p->no_credit) {
        size_t k = p->no_credit < credit ? p->no_credit : credit;
        p->no_credit -= k;
        credit -= k;
    }
    rete_side producer = consumer == RETE_UPSTREAM ? RETE_DOWNSTREAM : RETE_UPSTREAM;
    bool was_paused = p->paused;
    p->paused = p->bytes > ex->body_limit;
    /* Every consumption is reported (HTTP/2 producers return flow-control
     * credit per byte); HTTP/1 producers only act on the paused->free edge. */
    if (ex->attached[producer] && ex->ops[producer]->on_drained && credit > 0)
        ex->ops[producer]->on_drained(ex, credit);
    (void)was_paused;
}

/* ---- the flow ---- */

void rete_ex_request_ready(rete_exchange *ex)
{
    rete_stat(ex->worker, ex->worker->ms.requests, 1);
    path->request(ex);
}

void rete_ex_response_ready(rete_exchange *ex)
{
    if (!ex->attached[RETE_DOWNSTREAM] || ex->head_sent)
        return;
    if (path->upstream_response && !ex->tunnel && path->upstream_response(ex))
        return; /* held: a retry replaces it */
    path->response(ex);
    ex->head_sent = true;
    ex->ops[RETE_DOWNSTREAM]->on_head(ex);
    if (ex->attached[RETE_DOWNSTREAM] && (ex->resp_body.head || ex->resp_body.end))
        ex->ops[RETE_DOWNSTREAM]->on_data(ex);
}

void rete_ex_interim(rete_exchange *ex)
{
    if (ex->attached[RETE_DOWNSTREAM] && !ex->head_sent &&
        ex->ops[RETE_DOWNSTREAM]->on_interim)
        ex->ops[RETE_DOWNSTREAM]->on_interim(ex);
}

int rete_ex_error_status(rete_ex_error e)
{
    switch (e) {
    case RETE_EXE_NO_ROUTE: return 404;
    case RETE_EXE_NO_HEALTHY:
    case RETE_EXE_CONNECT:
    case RETE_EXE_CONNECT_TIMEOUT:
    case RETE_EXE_OVERFLOW: return 503;
    case RETE_EXE_UPSTREAM_RESET: return 502;
    case RETE_EXE_TIMEOUT: return 504;
    case RETE_EXE_DENIED: return 403;
    case RETE_EXE_BAD_REQUEST: return 400;
    case RETE_EXE_DOWNSTREAM_TIMEOUT: return 408;
    case RETE_EXE_RATE_LIMITED: return 429;
    case RETE_EXE_FAULT: return 503;
    case RETE_EXE_DOWNSTREAM_RESET:
    case RETE_EXE_NONE:
    default: return 502;
    }
}

const char *rete_ex_error_flag(rete_ex_error e)
{
    switch (e) {
    case RETE_EXE_NO_ROUTE: return "NR";
    case RETE_EXE_NO_HEALTHY: return "UH";
    case RETE_EXE_CONNECT:
    case RETE_EXE_CONNECT_TIMEOUT: return "UF";
    case RETE_EXE_OVERFLOW: return "UO";
    case RETE_EXE_UPSTREAM_RESET: return "UR";
    case RETE_EXE_TIMEOUT: return "UT";
    case RETE_EXE_DOWNSTREAM_RESET: return "DR";
    case RETE_EXE_DENIED: return "RBAC";
    case RETE_EXE_BAD_REQUEST: return "DPE";
    case RETE_EXE_DOWNSTREAM_TIMEOUT: return "SI"; /* Envoy's stream idle timeout */
    case RETE_EXE_FAULT: return "FI";
    case RETE_EXE_RATE_LIMITED: return "RL";
    case RETE_EXE_NONE:
    default: return "-";
    }
}

/* The upstream of a locally answered exchange: it has already produced
 * everything, so it only needs to let go. */
static void local_on_head(rete_exchange *ex) { (void)ex; }
static void local_on_data(rete_exchange *ex)
{
    /* Drop whatever request body still arrives. */
    const char *d;
    size_t n;
    while ((n = rete_ex_peek(ex, RETE_UPSTREAM, &d)) > 0)
        rete_ex_consume(ex, RETE_UPSTREAM, n);
}
static void local_on_abort(rete_exchange *ex)
{
    rete_ex_detach(ex, RETE_UPSTREAM);
}
/* one side table per codec side (exchange.h): the same shape by design. */
static const rete_side_ops local_ops = {
    .name = "local",
    .on_head = local_on_head,
    .on_data = local_on_data,
    .on_drained = NULL,
    .on_abort = local_on_abort,
};

bool rete_ex_upstream_is_local(const rete_exchange *ex)
{
    return ex->attached[RETE_UPSTREAM] && ex->ops[RETE_UPSTREAM] == &local_ops;
}

static void local_response(rete_exchange *ex, int status, const char *content_type,
                           const char *body, size_t len, rete_view location, const rete_view *hdrs,
                           size_t n_hdrs)
{
    if (ex->attached[RETE_UPSTREAM]) {
        /* Replace a failed upstream: it has already been told to go. */
        ex->attached[RETE_UPSTREAM] = false;
    }
    ex->ops[RETE_UPSTREAM] = &local_ops;
    ex->side[RETE_UPSTREAM] = NULL;
    ex->attached[RETE_UPSTREAM] = true;
    pipe_clear(&ex->resp_body);
    ex->resp_body.end = false;
    memset(&ex->resp, 0, sizeof(ex->resp));
    ex->resp.status = status;
    ex->resp.content_length = (int64_t)len;
    if (content_type)
        rete_msg_add(ex, &ex->resp, RETE_VIEW_LIT("content-type"), rete_view_cstr(content_type));
    char cl[24];
    snprintf(cl, sizeof(cl), "%zu", len);
    rete_msg_add(ex, &ex->resp, RETE_VIEW_LIT("content-length"), rete_view_cstr(cl));
    if (location.len)
        rete_msg_add(ex, &ex->resp, RETE_VIEW_LIT("location"), location);
    for (size_t i = 0; i + 1 < n_hdrs; i += 2)
        rete_msg_add(ex, &ex->resp, hdrs[i], hdrs[i + 1]);
    /* The body goes through the body stages before the head goes through
     * the response stage: a local answer is complete before it is sent. */
    if (len)
        rete_ex_push(ex, RETE_UPSTREAM, body, len);
    ex->resp_body.end = true;
    body_stages(ex, RETE_UPSTREAM, NULL, 0, true);
    /* Drain the request body so the downstream can finish reading it. */
    local_on_data(ex);
    rete_ex_response_ready(ex);
    rete_ex_detach(ex, RETE_UPSTREAM);
}

/* gRPC's code for an HTTP status (grpc/doc/http-grpc-status-mapping.md). */
static int grpc_status_for(int status)
{
    switch (status) {
    case 400: return 13; /* INTERNAL */
    case 401: return 16; /* UNAUTHENTICATED */
    case 403: return 7;  /* PERMISSION_DENIED */
    case 404: return 12; /* UNIMPLEMENTED */
    case 429: case 502: case 503: case 504: return 14; /* UNAVAILABLE */
    default: return 2;   /* UNKNOWN */
    }
}

void rete_ex_local_response(rete_exchange *ex, int status, const char *content_type,
                            const char *body, size_t len)
{
    rete_ex_local_response_with(ex, status, -1, false, NULL, 0, content_type, body, len);
}

void rete_ex_local_response_with(rete_exchange *ex, int status, int grpc_code, bool grpc_force,
                                 const rete_view *hdrs_in, size_t n_in, const char *content_type,
                                 const char *body, size_t len)
{
    rete_view ct = rete_msg_get(&ex->req, RETE_VIEW_LIT("content-type"));
    if (!grpc_force && !rete_view_has_prefix(ct, RETE_VIEW_LIT("application/grpc"))) {
        local_response(ex, status, content_type, body, len, RETE_VIEW_NULL, hdrs_in, n_in);
        return;
    }
    /* A gRPC client learns why from grpc-status and grpc-message, as Envoy
     * answers: HTTP 200, no body (trailers-only). grpc-message is the text
     * body, percent-encoded. */
    char msg[1024];
    size_t n = 0;
    for (size_t i = 0; i < len && n + 4 < sizeof(msg); i++) {
        unsigned char b = (unsigned char)body[i];
        if (b == '\n' && i + 1 == len)
            break;
        if (b >= 0x20 && b <= 0x7e && b != '%')
            msg[n++] = (char)b;
        else
            n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%%%02X", b);
    }
    char code[12];
    snprintf(code, sizeof(code), "%d", grpc_code >= 0 ? grpc_code : grpc_status_for(status));
    rete_view hdrs[4 + 8] = {RETE_VIEW_LIT("grpc-status"), rete_ex_dup(ex, rete_view_cstr(code)),
                             RETE_VIEW_LIT("grpc-message"), rete_ex_dup(ex, rete_view_make(msg, n))};
    size_t nh = 4;
    for (size_t i = 0; i + 1 < n_in && nh + 2 <= sizeof(hdrs) / sizeof(hdrs[0]); i += 2) {
        hdrs[nh++] = hdrs_in[i];
        hdrs[nh++] = hdrs_in[i + 1];
    }
    local_response(ex, 200, "application/grpc", NULL, 0, RETE_VIEW_NULL, hdrs, nh);
}

void rete_ex_local_redirect(rete_exchange *ex, int status, rete_view location)
{
    local_response(ex, status, NULL, NULL, 0, location, NULL, 0);
}

void rete_ex_retry_reset(rete_exchange *ex, const char *replay, size_t len)
{
    if (ex->attached[RETE_UPSTREAM])
        ex->ops[RETE_UPSTREAM]->on_abort(ex); /* lets go (rete_ex_detach) */
    ex->attached[RETE_UPSTREAM] = false;
    ex->side[RETE_UPSTREAM] = NULL;
    ex->error = RETE_EXE_NONE;
    ex->error_detail[0] = '\0';
    memset(&ex->resp, 0, sizeof(ex->resp));
    ex->resp.content_length = -1;
    pipe_clear(&ex->resp_body);
    ex->resp_body.end = false;
    ex->resp_body.paused = false;
    memset(&ex->resp_body.trailers, 0, sizeof(ex->resp_body.trailers));
    ex->resp_bytes = 0;
    /* What the failed try did not consume is in `replay` too. */
    rete_pipe *p = &ex->req_body;
    size_t unconsumed = p->bytes;
    pipe_clear(p);
    p->no_credit = 0;
    if (len) {
        rete_chunk *c = rete_malloc(sizeof(*c) + len);
        c->next = NULL;
        c->len = (uint32_t)len;
        c->off = 0;
        memcpy(c->data, replay, len);
        p->head = p->tail = c;
        p->bytes = len;
        p->no_credit = len > unconsumed ? len - unconsumed : 0;
    }
}

void rete_ex_fail(rete_exchange *ex, rete_side side, rete_ex_error err, const char *detail)
{
    if (ex->error == RETE_EXE_NONE) {
        ex->error = err;
        snprintf(ex->error_detail, sizeof(ex->error_detail), "%s", detail ? detail : "");
    }
    if (side == RETE_UPSTREAM) {
        ex->attached[RETE_UPSTREAM] = false;
        ex->side[RETE_UPSTREAM] = NULL;
        if (!ex->attached[RETE_DOWNSTREAM]) {
            ex->attached[RETE_UPSTREAM] = true; /* let detach do the freeing */
            rete_ex_detach(ex, RETE_UPSTREAM);
            return;
        }
        if (!ex->head_sent && !ex->tunnel && path->upstream_failed && path->upstream_failed(ex))
            return; /* a retry */
        if (!ex->head_sent) {
            char body[256];
            int n = snprintf(body, sizeof(body), "upstream %s: %s\n", rete_ex_error_flag(err),
                             detail ? detail : "");
            if (ex->tunnel) {
                ex->attached[RETE_UPSTREAM] = true;
                rete_ex_detach(ex, RETE_UPSTREAM);
                if (ex->attached[RETE_DOWNSTREAM])
                    ex->ops[RETE_DOWNSTREAM]->on_abort(ex);
                return;
            }
            rete_ex_local_response(ex, rete_ex_error_status(err), "text/plain", body,
                                   (size_t)(n < 0 ? 0 : n));
            return;
        }
        ex->attached[RETE_UPSTREAM] = true;
        rete_ex_detach(ex, RETE_UPSTREAM);
        if (ex->attached[RETE_DOWNSTREAM])
            ex->ops[RETE_DOWNSTREAM]->on_abort(ex);
        return;
    }
    /* Downstream failed: nobody to answer. */
    rete_ex_detach(ex, RETE_DOWNSTREAM);
}
