/* The sidecar's DNS (dns.h). Everything runs on the main loop; UDP sends
 * use uv_udp_try_send (a datagram the kernel will not take now is dropped,
 * as a resolver under load may drop it), so nothing is queued per query. */
#include "dns.h"

#include "alloc.h"
#include "config.h"
#include "dns_wire.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum dns_result { R_MESH, R_FORWARDED, R_TIMEOUT, R_OVERLOAD, R_MALFORMED, R_UPSTREAM_ERROR, R_N };
static const char *const result_names[R_N] = {
    [R_MESH] = "mesh",         [R_FORWARDED] = "forwarded", [R_TIMEOUT] = "timeout",
    [R_OVERLOAD] = "overload", [R_MALFORMED] = "malformed", [R_UPSTREAM_ERROR] = "upstream_error",
};

enum { MAX_UPSTREAMS = 8, SWEEP_MS = 100 };

typedef struct dns_tcp dns_tcp;
typedef struct dns_up_tcp dns_up_tcp;

/* A forwarded query awaiting its upstream answer. */
typedef struct dns_pending {
    bool used;
    uint16_t client_id, up_id;
    unsigned upstream;
    uint64_t deadline;                  /* uv_now, ms */
    struct sockaddr_storage client;     /* UDP client, when tcp is NULL */
    uv_udp_t *sock;                     /* the listener it came to, likewise */
    dns_tcp *tcp;                       /* TCP client; NULL once it closed */
    dns_up_tcp *up_tcp;                 /* its upstream connection, when over_tcp */
    bool over_tcp;
    rete_dns_msg q;                     /* the client's question, for matching and SERVFAIL */
    uint8_t qbuf[RETE_DNS_HEADER + RETE_DNS_MAX_NAME + 4];
} dns_pending;

struct dns_tcp {
    uv_tcp_t h;
    uv_timer_t idle;
    rete_dns *d;
    dns_tcp *prev, *next;
    int slot;                           /* pending forwarded query, -1: none */
    int open;                           /* handles not yet closed */
    bool closing;
    size_t len;
    uint8_t buf[2 + RETE_DNS_TCP_MAX];
};

/* A TCP client's query forwarded upstream over TCP (RFC 7766 section 5: a
 * query that came over TCP goes upstream over TCP, so an answer too large
 * for UDP reaches the client whole). One connection per query, closed once
 * the answer is in, the slot times out or the proxy stops. The answer's
 * length prefix is read first, then the answer into `msg` (at most 64 KiB,
 * the most the prefix can say). */
struct dns_up_tcp {
    uv_tcp_t h;
    uv_connect_t connect;
    uv_write_t write;
    rete_dns *d;
    int slot;                           /* the pending query; -1 once it let go */
    size_t qlen;                        /* the query's length, prefix excluded */
    size_t got, need;                   /* bytes read (prefix included); answer length */
    uint8_t hdr[2];
    uint8_t *msg;
    uint8_t query[2 + RETE_DNS_TCP_MAX];
};

struct rete_dns {
    rete_proxy *p;
    uv_loop_t *loop;
    uv_udp_t udp, udp2;                 /* udp2, tcp2: the twin on the other loopback */
    uv_tcp_t tcp, tcp2;
    uv_udp_t up4, up6;
    uv_timer_t sweep;
    int open;                           /* handles of this struct not yet closed */
    bool stopping;
    struct sockaddr_storage up[MAX_UPSTREAMS];
    unsigned n_up, next_up;
    uint32_t max_in_flight, n_in_flight, timeout_ms, ttl, max_tcp, n_tcp;
    dns_pending *pend;
    uint16_t *by_id;                    /* upstream query ID -> slot + 1 */
    dns_tcp *conns;
    rete_metric res[R_N];
    uint8_t rbuf[65536];
};

static void count(rete_dns *d, enum dns_result r)
{
    rete_metrics_inc(d->p->main_shard, d->res[r], 1);
}

static void maybe_free(rete_dns *d)
{
    if (d->stopping && d->open == 0 && !d->conns) {
        free(d->pend);
        free(d->by_id);
        free(d);
    }
}

static void on_closed(uv_handle_t *h)
{
    rete_dns *d = h->data;
    d->open--;
    maybe_free(d);
}

/* ---- TCP clients ---- */

static void tcp_closed(uv_handle_t *h)
{
    dns_tcp *c = h->data;
    if (--c->open)
        return;
    rete_dns *d = c->d;
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    d->n_tcp--;
    free(c);
    maybe_free(d);
}

static void tcp_close(dns_tcp *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->slot >= 0)
        c->d->pend[c->slot].tcp = NULL; /* its answer is dropped when it comes */
    uv_close((uv_handle_t *)&c->h, tcp_closed);
    uv_close((uv_handle_t *)&c->idle, tcp_closed);
}

typedef struct tcp_write {
    uv_write_t req;
    uint8_t data[];
} tcp_write;

static void tcp_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

/* An answer, length-prefixed (RFC 1035 4.2.2). A client that does not read
 * its answers is closed once more than the largest answer (64 KiB) waits
 * for it. */
static void tcp_send(dns_tcp *c, const uint8_t *msg, size_t len)
{
    if (c->closing)
        return;
    tcp_write *w = rete_malloc(sizeof(*w) + 2 + len);
    w->data[0] = (uint8_t)(len >> 8);
    w->data[1] = (uint8_t)len;
    memcpy(w->data + 2, msg, len);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)(2 + len));
    if (uv_write(&w->req, (uv_stream_t *)&c->h, &b, 1, tcp_written) != 0) {
        free(w);
        tcp_close(c);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->h) > 2 + 65535)
        tcp_close(c);
}

/* ---- answering ---- */

typedef struct dns_client {
    const struct sockaddr *udp; /* and the listener it came to, */
    uv_udp_t *sock;
    dns_tcp *tcp;               /* or a TCP client */
} dns_client;

static void reply(rete_dns *d, dns_client cl, const uint8_t *msg, size_t len)
{
    if (!len)
        return;
    if (cl.tcp) {
        tcp_send(cl.tcp, msg, len);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)msg, (unsigned)len);
    (void)uv_udp_try_send(cl.sock, &b, 1, cl.udp); /* dropped when the socket is full */
}

static void reply_rcode(rete_dns *d, dns_client cl, const rete_dns_msg *q, const uint8_t *qbuf,
                        uint16_t rcode)
{
    uint8_t out[RETE_DNS_UDP_MAX];
    reply(d, cl, out, rete_dns_answer(q, qbuf, rcode, NULL, 0, 0, out, sizeof(out)));
}

/* A mesh name: the Service's clusterIP, or without one (headless, as in
 * Kubernetes) its endpoints' addresses, of the family asked. */
static bool answer_mesh(rete_dns *d, dns_client cl, const rete_dns_msg *q, const uint8_t *qbuf)
{
    const rete_config *cfg = d->p->cfg;
    if (!cfg || q->qclass != RETE_DNS_CLASS_IN || !q->name_text)
        return false;
    const rete_service *svc = rete_config_service_by_name(cfg, rete_view_cstr(q->name));
    if (!svc)
        return false;
    int fam = q->qtype == RETE_DNS_TYPE_A ? AF_INET : q->qtype == RETE_DNS_TYPE_AAAA ? AF_INET6 : 0;
    uint8_t addrs[32 * 16];
    size_t n = 0, size = fam == AF_INET ? 4 : 16;
    if (fam && svc->cluster_ip) {
        if (inet_pton(fam, svc->cluster_ip, addrs) == 1)
            n = 1;
    } else if (fam) {
        for (size_t i = 0; i < svc->n_endpoints && n < 32; i++)
            if (inet_pton(fam, svc->endpoints[i]->address, addrs + n * size) == 1)
                n++;
    }
    uint8_t out[RETE_DNS_UDP_MAX];
    reply(d, cl, out, rete_dns_answer(q, qbuf, RETE_DNS_RCODE_NOERROR, addrs, n, d->ttl, out, sizeof(out)));
    count(d, R_MESH);
    return true;
}

static void up_tcp_closed(uv_handle_t *h)
{
    dns_up_tcp *u = h->data;
    rete_dns *d = u->d;
    free(u->msg);
    free(u);
    d->open--;
    maybe_free(d);
}

static void free_slot(rete_dns *d, dns_pending *s, uint16_t up_id)
{
    if (s->up_tcp) {
        s->up_tcp->slot = -1;
        uv_close((uv_handle_t *)&s->up_tcp->h, up_tcp_closed);
        s->up_tcp = NULL;
    }
    s->used = false;
    d->by_id[up_id] = 0;
    d->n_in_flight--;
}

static int up_tcp_start(rete_dns *d, uint32_t slot, const struct sockaddr *to, const uint8_t *buf,
                        size_t len);

/* Forward buf (the query, whose ID this rewrites) to the next upstream:
 * over UDP for a UDP client, over TCP for a TCP client. */
static void forward(rete_dns *d, dns_client cl, const rete_dns_msg *q, uint8_t *buf, size_t len)
{
    if (!d->n_up) {
        reply_rcode(d, cl, q, buf, RETE_DNS_RCODE_SERVFAIL);
        count(d, R_UPSTREAM_ERROR);
        return;
    }
    if (d->n_in_flight >= d->max_in_flight) {
        reply_rcode(d, cl, q, buf, RETE_DNS_RCODE_REFUSED);
        count(d, R_OVERLOAD);
        return;
    }
    uint32_t slot = 0;
    while (d->pend[slot].used)
        slot++; /* n_in_flight < max_in_flight: one is free */
    uint16_t id = 0;
    for (int tries = 0; tries < 16; tries++) {
        if (uv_random(NULL, NULL, &id, sizeof(id), 0, NULL) != 0 || d->by_id[id])
            id = 0;
        else
            break;
    }
    if (!id || d->by_id[id]) {
        reply_rcode(d, cl, q, buf, RETE_DNS_RCODE_SERVFAIL);
        count(d, R_UPSTREAM_ERROR);
        return;
    }
    dns_pending *s = &d->pend[slot];
    memset(s, 0, offsetof(dns_pending, q));
    s->q = *q;
    memcpy(s->qbuf, buf, q->question_end);
    s->client_id = q->id;
    s->up_id = id;
    s->upstream = d->next_up++ % d->n_up;
    s->deadline = uv_now(d->loop) + d->timeout_ms;
    s->tcp = cl.tcp;
    s->over_tcp = cl.tcp != NULL;
    s->sock = cl.sock;
    if (cl.udp)
        memcpy(&s->client, cl.udp, cl.udp->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                  : sizeof(struct sockaddr_in));
    const struct sockaddr *to = (const struct sockaddr *)&d->up[s->upstream];
    buf[0] = (uint8_t)(id >> 8);
    buf[1] = (uint8_t)id;
    int rc;
    if (cl.tcp) {
        rc = up_tcp_start(d, slot, to, buf, len);
    } else {
        uv_udp_t *sock = to->sa_family == AF_INET6 ? &d->up6 : &d->up4;
        uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
        rc = uv_udp_try_send(sock, &b, 1, to);
    }
    buf[0] = (uint8_t)(q->id >> 8);
    buf[1] = (uint8_t)q->id;
    if (rc < 0) {
        reply_rcode(d, cl, q, buf, RETE_DNS_RCODE_SERVFAIL);
        count(d, R_UPSTREAM_ERROR);
        return;
    }
    s->used = true;
    d->by_id[id] = (uint16_t)(slot + 1);
    d->n_in_flight++;
    if (cl.tcp)
        cl.tcp->slot = (int)slot;
}

/* One query from a client. Returns true when the answer waits on an
 * upstream (a TCP client then stops reading until it comes). */
static bool handle_query(rete_dns *d, dns_client cl, uint8_t *buf, size_t len)
{
    rete_dns_msg q;
    if (rete_dns_parse(buf, len, &q) != RETE_OK) {
        if (len >= RETE_DNS_HEADER && !(buf[2] & 0x80)) {
            uint8_t out[RETE_DNS_HEADER];
            reply(d, cl, out, rete_dns_answer_header(buf, len, RETE_DNS_RCODE_FORMERR, out, sizeof(out)));
        }
        count(d, R_MALFORMED);
        return false;
    }
    if (q.flags & RETE_DNS_FLAG_QR) { /* an answer sent to us: never answered */
        count(d, R_MALFORMED);
        return false;
    }
    if (answer_mesh(d, cl, &q, buf))
        return false;
    forward(d, cl, &q, buf, len);
    return cl.tcp && cl.tcp->slot >= 0;
}

/* ---- UDP ---- */

static void alloc_rbuf(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    rete_dns *d = h->data;
    *b = uv_buf_init((char *)d->rbuf, sizeof(d->rbuf));
}

static void on_udp(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *from,
                   unsigned flags)
{
    rete_dns *d = h->data;
    if (n <= 0 || !from || (flags & UV_UDP_PARTIAL))
        return;
    handle_query(d, (dns_client){.udp = from, .sock = h}, (uint8_t *)b->base, (size_t)n);
}

static bool same_addr(const struct sockaddr *a, const struct sockaddr_storage *b)
{
    if (a->sa_family != b->ss_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static void tcp_resume(dns_tcp *c);

/* An upstream's answer: relayed to the client whose query it answers (same
 * ID, from the upstream it was sent to, same question), else dropped. */
static void on_upstream(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *from,
                        unsigned flags)
{
    rete_dns *d = h->data;
    rete_dns_msg a;
    uint8_t *buf = (uint8_t *)b->base;
    if (n <= 0 || !from || (flags & UV_UDP_PARTIAL) || rete_dns_parse(buf, (size_t)n, &a) != RETE_OK)
        return;
    uint16_t slot1 = d->by_id[a.id];
    if (!slot1)
        return;
    dns_pending *s = &d->pend[slot1 - 1];
    if (s->over_tcp || !(a.flags & RETE_DNS_FLAG_QR) || !same_addr(from, &d->up[s->upstream]) ||
        a.qtype != s->q.qtype || a.qclass != s->q.qclass || strcmp(a.name, s->q.name) != 0)
        return;
    buf[0] = (uint8_t)(s->client_id >> 8);
    buf[1] = (uint8_t)s->client_id;
    dns_tcp *c = s->tcp;
    bool over_tcp = s->over_tcp;
    struct sockaddr_storage client = s->client;
    uv_udp_t *sock = s->sock;
    free_slot(d, s, a.id);
    count(d, R_FORWARDED);
    if (!over_tcp) {
        reply(d, (dns_client){.udp = (const struct sockaddr *)&client, .sock = sock}, buf, (size_t)n);
    } else if (c) {
        c->slot = -1;
        tcp_send(c, buf, (size_t)n);
        tcp_resume(c);
    }
}

/* A pending query that gets no answer: SERVFAIL to its client, counted
 * as `r`, and its slot freed. */
static void fail_slot(rete_dns *d, dns_pending *s, enum dns_result r)
{
    uint16_t up_id = s->up_id;
    dns_tcp *c = s->tcp;
    struct sockaddr_storage client = s->client;
    uv_udp_t *sock = s->sock;
    bool over_tcp = s->over_tcp;
    rete_dns_msg q = s->q;
    uint8_t qbuf[sizeof(s->qbuf)];
    memcpy(qbuf, s->qbuf, q.question_end);
    free_slot(d, s, up_id);
    count(d, r);
    if (!over_tcp) {
        reply_rcode(d, (dns_client){.udp = (const struct sockaddr *)&client, .sock = sock}, &q, qbuf,
                    RETE_DNS_RCODE_SERVFAIL);
    } else if (c) {
        c->slot = -1;
        reply_rcode(d, (dns_client){.tcp = c}, &q, qbuf, RETE_DNS_RCODE_SERVFAIL);
        tcp_resume(c);
    }
}

/* Every SWEEP_MS: queries past their deadline get SERVFAIL. */
static void on_sweep(uv_timer_t *t)
{
    rete_dns *d = t->data;
    uint64_t now = uv_now(d->loop);
    for (uint32_t i = 0; i < d->max_in_flight && d->n_in_flight; i++) {
        dns_pending *s = &d->pend[i];
        if (s->used && s->deadline <= now)
            fail_slot(d, s, R_TIMEOUT);
    }
}

/* ---- upstream over TCP ---- */

static void up_tcp_fail(dns_up_tcp *u)
{
    fail_slot(u->d, &u->d->pend[u->slot], R_UPSTREAM_ERROR);
}

/* The whole answer is in: relayed when it answers the question asked with
 * the ID sent (RFC 7766 section 7), else SERVFAIL. */
static void up_tcp_answer(dns_up_tcp *u)
{
    rete_dns *d = u->d;
    dns_pending *s = &d->pend[u->slot];
    rete_dns_msg a;
    if (rete_dns_parse(u->msg, u->need, &a) != RETE_OK || !(a.flags & RETE_DNS_FLAG_QR) ||
        a.id != s->up_id || a.qtype != s->q.qtype || a.qclass != s->q.qclass ||
        strcmp(a.name, s->q.name) != 0) {
        up_tcp_fail(u);
        return;
    }
    u->msg[0] = (uint8_t)(s->client_id >> 8);
    u->msg[1] = (uint8_t)s->client_id;
    dns_tcp *c = s->tcp;
    free_slot(d, s, a.id); /* u->msg lives until u's close callback */
    count(d, R_FORWARDED);
    if (c) {
        c->slot = -1;
        tcp_send(c, u->msg, u->need);
        tcp_resume(c);
    }
}

static void up_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    dns_up_tcp *u = h->data;
    if (u->got < 2)
        *b = uv_buf_init((char *)u->hdr + u->got, (unsigned)(2 - u->got));
    else
        *b = uv_buf_init((char *)u->msg + (u->got - 2), (unsigned)(u->need - (u->got - 2)));
}

static void up_tcp_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    dns_up_tcp *u = st->data;
    if (u->slot < 0 || n == 0)
        return;
    if (n < 0) { /* closed or failed before the whole answer */
        up_tcp_fail(u);
        return;
    }
    u->got += (size_t)n;
    if (u->got == 2) {
        u->need = (size_t)(u->hdr[0] << 8 | u->hdr[1]);
        if (u->need < RETE_DNS_HEADER) {
            up_tcp_fail(u);
            return;
        }
        u->msg = rete_malloc(u->need);
    } else if (u->got == 2 + u->need) {
        uv_read_stop(st);
        up_tcp_answer(u);
    }
}

static void up_tcp_written(uv_write_t *req, int status)
{
    dns_up_tcp *u = req->handle->data;
    if (u->slot >= 0 && status < 0)
        up_tcp_fail(u);
}

static void up_tcp_connected(uv_connect_t *req, int status)
{
    dns_up_tcp *u = req->handle->data;
    if (u->slot < 0)
        return;
    uv_buf_t b = uv_buf_init((char *)u->query, (unsigned)(2 + u->qlen));
    if (status < 0 || uv_write(&u->write, (uv_stream_t *)&u->h, &b, 1, up_tcp_written) != 0 ||
        uv_read_start((uv_stream_t *)&u->h, up_tcp_alloc, up_tcp_read) != 0)
        up_tcp_fail(u);
}

/* Connect to `to` and send buf (len <= RETE_DNS_TCP_MAX), length-prefixed,
 * for pend[slot]; the slot owns the connection from here. A libuv error
 * when the connection cannot even be started. */
static int up_tcp_start(rete_dns *d, uint32_t slot, const struct sockaddr *to, const uint8_t *buf,
                        size_t len)
{
    dns_up_tcp *u = rete_calloc(1, sizeof(*u));
    u->d = d;
    u->slot = (int)slot;
    u->qlen = len;
    u->query[0] = (uint8_t)(len >> 8);
    u->query[1] = (uint8_t)len;
    memcpy(u->query + 2, buf, len);
    uv_tcp_init(d->loop, &u->h);
    u->h.data = u;
    d->open++;
    int rc = uv_tcp_connect(&u->connect, &u->h, to, up_tcp_connected);
    if (rc != 0) {
        u->slot = -1;
        uv_close((uv_handle_t *)&u->h, up_tcp_closed);
        return rc;
    }
    d->pend[slot].up_tcp = u;
    return 0;
}

/* ---- TCP ---- */

static void tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    dns_tcp *c = h->data;
    *b = uv_buf_init((char *)c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

/* Answer the whole queries buffered, one at a time: stop at one that waits
 * on an upstream (reading stops until it is answered). */
static void tcp_process(dns_tcp *c)
{
    while (!c->closing && c->slot < 0 && c->len >= 2) {
        size_t mlen = (size_t)(c->buf[0] << 8 | c->buf[1]);
        if (mlen < RETE_DNS_HEADER || mlen > RETE_DNS_TCP_MAX) {
            count(c->d, R_MALFORMED);
            tcp_close(c);
            return;
        }
        if (c->len < 2 + mlen)
            break;
        uv_timer_again(&c->idle);
        handle_query(c->d, (dns_client){.tcp = c}, c->buf + 2, mlen);
        memmove(c->buf, c->buf + 2 + mlen, c->len - 2 - mlen);
        c->len -= 2 + mlen;
    }
    if (c->closing)
        return;
    if (c->slot >= 0)
        uv_read_stop((uv_stream_t *)&c->h);
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    dns_tcp *c = s->data;
    if (n < 0) {
        tcp_close(c);
        return;
    }
    c->len += (size_t)n;
    tcp_process(c);
}

static void tcp_resume(dns_tcp *c)
{
    tcp_process(c);
    if (!c->closing && c->slot < 0)
        uv_read_start((uv_stream_t *)&c->h, tcp_alloc, on_tcp_read);
}

static void on_tcp_idle(uv_timer_t *t)
{
    tcp_close(t->data);
}

static void on_tcp_conn(uv_stream_t *server, int status)
{
    rete_dns *d = server->data;
    if (status < 0)
        return;
    dns_tcp *c = rete_calloc(1, sizeof(*c));
    c->d = d;
    c->slot = -1;
    uv_tcp_init(d->loop, &c->h);
    uv_timer_init(d->loop, &c->idle);
    c->h.data = c->idle.data = c;
    c->open = 2;
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    d->n_tcp++;
    if (uv_accept(server, (uv_stream_t *)&c->h) != 0 || d->n_tcp > d->max_tcp) {
        if (d->n_tcp > d->max_tcp)
            count(d, R_OVERLOAD);
        tcp_close(c);
        return;
    }
    uv_timer_start(&c->idle, on_tcp_idle, d->timeout_ms, d->timeout_ms);
    uv_read_start((uv_stream_t *)&c->h, tcp_alloc, on_tcp_read);
}

/* ---- start / stop ---- */

int rete_dns_read_resolv_conf(const char *path, char (*out)[46], int max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512];
    int n = 0;
    while (n < max && fgets(line, sizeof(line), f)) {
        char addr[128];
        if (sscanf(line, " nameserver %127s", addr) != 1)
            continue;
        char *zone = strchr(addr, '%');
        if (zone)
            *zone = '\0';
        unsigned char bin[16];
        int fam = strchr(addr, ':') ? AF_INET6 : AF_INET;
        if (inet_pton(fam, addr, bin) == 1)
            inet_ntop(fam, bin, out[n++], 46);
    }
    fclose(f);
    return n;
}

/* 127.0.0.1 and ::1 are each other's twin (listen_twin). */
static bool is_loopback_twin(const char *a, const char *b)
{
    return (strcmp(a, "::1") == 0 && strcmp(b, "127.0.0.1") == 0) ||
           (strcmp(a, "127.0.0.1") == 0 && strcmp(b, "::1") == 0);
}

static void set_upstreams(rete_dns *d, const rete_dns_spec *spec)
{
    char from_file[3][46];
    const char *list[MAX_UPSTREAMS];
    int n = 0;
    for (size_t i = 0; i < spec->n_upstreams && n < MAX_UPSTREAMS; i++)
        list[n++] = spec->upstreams[i];
    if (!spec->n_upstreams) {
        int k = rete_dns_read_resolv_conf(spec->resolv_conf, from_file, 3);
        if (k < 0)
            rete_warn("dns: cannot read %s: queries for other names get SERVFAIL", spec->resolv_conf);
        for (int i = 0; i < k; i++)
            list[n++] = from_file[i];
    }
    for (int i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        int rc = strchr(list[i], ':') ? uv_ip6_addr(list[i], 53, (struct sockaddr_in6 *)&ss)
                                      : uv_ip4_addr(list[i], 53, (struct sockaddr_in *)&ss);
        if (rc != 0)
            continue;
        /* our own listener (a resolv.conf naming it): forwarding would loop */
        if (spec->listen.port == 53 && (strcmp(list[i], spec->listen.host) == 0 ||
                                        is_loopback_twin(list[i], spec->listen.host))) {
            rete_warn("dns: upstream %s is this listener; skipped", list[i]);
            continue;
        }
        d->up[d->n_up++] = ss;
    }
    if (!d->n_up)
        rete_warn("dns: no upstream resolver: queries for other names get SERVFAIL");
}

/* A listener on 127.0.0.1 or ::1 gets its twin on the other loopback, same
 * port: `rete-proxy init --dns-port` sends the app's IPv4 queries to
 * 127.0.0.1 and its IPv6 ones to ::1. Where that address does not exist
 * (no IPv6), only a notice. */
static void listen_twin(rete_dns *d, const char *host, uint16_t port)
{
    struct sockaddr_storage ss;
    const char *other;
    int rc;
    if (strcmp(host, "127.0.0.1") == 0) {
        other = "::1";
        rc = uv_ip6_addr(other, port, (struct sockaddr_in6 *)&ss);
    } else if (strcmp(host, "::1") == 0) {
        other = "127.0.0.1";
        rc = uv_ip4_addr(other, port, (struct sockaddr_in *)&ss);
    } else {
        return;
    }
    if (rc == 0 && (rc = uv_udp_bind(&d->udp2, (struct sockaddr *)&ss, 0)) == 0 &&
        (rc = uv_tcp_bind(&d->tcp2, (struct sockaddr *)&ss, 0)) == 0 &&
        (rc = uv_listen((uv_stream_t *)&d->tcp2, 64, on_tcp_conn)) == 0 &&
        (rc = uv_udp_recv_start(&d->udp2, alloc_rbuf, on_udp)) == 0) {
        rete_info("dns: also listening on %s:%u (UDP, TCP)", other, port);
        return;
    }
    rete_info("dns: no listener on %s:%u beside %s: %s", other, port, host, uv_strerror(rc));
}

rete_dns *rete_dns_start(rete_proxy *p, rete_error *err)
{
    const rete_dns_spec *spec = &p->cfg->proxy.dns;
    rete_dns *d = rete_calloc(1, sizeof(*d));
    d->p = p;
    d->loop = p->loop;
    d->max_in_flight = spec->max_in_flight;
    d->timeout_ms = spec->timeout_ms;
    d->ttl = spec->ttl_s;
    d->max_tcp = spec->max_tcp_connections;
    d->pend = rete_calloc(d->max_in_flight, sizeof(*d->pend));
    d->by_id = rete_calloc(65536, sizeof(*d->by_id));
    static const char *const l_result[] = {"result"};
    rete_metric_desc desc = {
        .name = "rete_proxy_dns_queries_total",
        .help = "DNS queries the sidecar received, by result (mesh: answered from the mesh; "
                "forwarded: an upstream answer relayed; timeout, upstream_error: SERVFAIL; "
                "overload: REFUSED past spec.dns.maxInFlight or a TCP client past "
                "maxTCPConnections; malformed).",
        .type = RETE_METRIC_COUNTER,
        .labels = l_result,
        .nlabels = 1,
    };
    rete_metric_family fam;
    if (rete_metrics_declare(p->metrics, &desc, &fam) != RETE_OK)
        abort(); /* a programming error: the name is fixed */
    for (int r = 0; r < R_N; r++) {
        rete_view v = rete_view_cstr(result_names[r]);
        if (rete_metrics_series(p->metrics, fam, &v, 1, &d->res[r]) != RETE_OK)
            abort();
    }
    set_upstreams(d, spec);

    struct sockaddr_storage ss;
    const char *host = spec->listen.host;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, spec->listen.port, (struct sockaddr_in6 *)&ss)
                               : uv_ip4_addr(host, spec->listen.port, (struct sockaddr_in *)&ss);
    uv_udp_init(d->loop, &d->udp);
    uv_tcp_init(d->loop, &d->tcp);
    uv_udp_init(d->loop, &d->udp2);
    uv_tcp_init(d->loop, &d->tcp2);
    d->udp2.data = d->tcp2.data = d;
    uv_udp_init(d->loop, &d->up4);
    uv_udp_init(d->loop, &d->up6);
    uv_timer_init(d->loop, &d->sweep);
    d->udp.data = d->tcp.data = d->up4.data = d->up6.data = d->sweep.data = d;
    d->open = 7;
    struct sockaddr_in any4;
    struct sockaddr_in6 any6;
    uv_ip4_addr("0.0.0.0", 0, &any4);
    uv_ip6_addr("::", 0, &any6);
    const char *what = "listen address";
    if (rc == 0 && (what = "UDP bind", rc = uv_udp_bind(&d->udp, (struct sockaddr *)&ss, 0)) == 0 &&
        (what = "TCP bind", rc = uv_tcp_bind(&d->tcp, (struct sockaddr *)&ss, 0)) == 0 &&
        (what = "TCP listen", rc = uv_listen((uv_stream_t *)&d->tcp, 64, on_tcp_conn)) == 0 &&
        (what = "upstream socket", rc = uv_udp_bind(&d->up4, (struct sockaddr *)&any4, 0)) == 0 &&
        (rc = uv_udp_recv_start(&d->udp, alloc_rbuf, on_udp)) == 0 &&
        (rc = uv_udp_recv_start(&d->up4, alloc_rbuf, on_upstream)) == 0) {
        /* IPv6 upstreams only when the host has IPv6 */
        if (uv_udp_bind(&d->up6, (struct sockaddr *)&any6, UV_UDP_IPV6ONLY) == 0)
            (void)uv_udp_recv_start(&d->up6, alloc_rbuf, on_upstream);
        uv_timer_start(&d->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
        listen_twin(d, host, spec->listen.port);
        rete_info("dns: listening on %s:%u (UDP, TCP), %u upstream(s)", host, spec->listen.port,
                  d->n_up);
        return d;
    }
    (void)rete_error_set(err, RETE_EIO, "spec.dns.listen %s:%u: %s: %s", host, spec->listen.port, what,
                   uv_strerror(rc));
    rete_dns_stop(d);
    return NULL;
}

void rete_dns_stop(rete_dns *d)
{
    if (!d || d->stopping)
        return;
    d->stopping = true;
    for (dns_tcp *c = d->conns; c; c = c->next)
        tcp_close(c);
    for (uint32_t i = 0; i < d->max_in_flight; i++)
        if (d->pend[i].up_tcp) {
            d->pend[i].up_tcp->slot = -1;
            uv_close((uv_handle_t *)&d->pend[i].up_tcp->h, up_tcp_closed);
            d->pend[i].up_tcp = NULL;
        }
    uv_close((uv_handle_t *)&d->udp, on_closed);
    uv_close((uv_handle_t *)&d->tcp, on_closed);
    uv_close((uv_handle_t *)&d->udp2, on_closed);
    uv_close((uv_handle_t *)&d->tcp2, on_closed);
    uv_close((uv_handle_t *)&d->up4, on_closed);
    uv_close((uv_handle_t *)&d->up6, on_closed);
    uv_close((uv_handle_t *)&d->sweep, on_closed);
}
