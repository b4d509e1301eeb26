/* Distributed tracing: a filter at the head of both chains, and one exporter
 * thread per proxy.
 *
 * The filter (worker thread). With MeshConfig tracing.collector set, each
 * HTTP request (not a tunnel) is read for a trace context: traceparent,
 * else b3, else x-b3-* (trace_ctx.h). The sampling decision:
 *   - the parent's, when the context carries one (sampled flag, B3 0/1/d);
 *   - none on the mesh listener from a peer proxy that sent no context:
 *     the calling sidecar already decided not to sample (it starts every
 *     trace it samples), so the hop must not start a second, orphan one;
 *   - else head sampling at tracing.sampling percent (default 1%): this is
 *     where a trace starts (the outbound sidecar of the first service, or
 *     the inbound sidecar of a request from outside the mesh).
 * A request not sampled costs one pass over its header names and, where
 * this proxy decides, one draw of a per-thread xorshift generator (no
 * syscall, lock, atomic, clock read or division): nothing is allocated,
 * nothing formatted, no header is changed (an unsampled parent's context
 * passes through as sent); its finish is one flag test. A sampled one
 * gets a span id; the request goes on with this proxy's span as the
 * parent: traceparent is set (always), and b3 / x-b3-* rewritten when the
 * request came with them; tracestate passes through untouched. The outbound chain makes
 * CLIENT spans, the inbound chain SERVER spans: one of each per hop.
 *
 * At the exchange's end a sampled span is copied as a fixed-size record
 * (span_rec, about 1.6 KiB) into the exporter's ring under a mutex (a
 * memcpy). The ring is bounded (--trace-queue-spans, default 2048): a span
 * that finds it full is dropped and counted
 * (rete_proxy_spans_dropped_total), never waited for.
 *
 * The exporter (its own thread, blocking sockets, never a worker's loop)
 * takes up to --trace-batch-spans (default 256) records at a time, every
 * TRACE_FLUSH_MS or as soon as a batch is full, formats them as OTLP/HTTP
 * JSON (ExportTraceServiceRequest's protobuf JSON mapping) or Zipkin v2
 * JSON, and POSTs them with HTTP/1.1 over plain TCP to the collector, one
 * connection per POST (Connection: close), connect and answer each bounded
 * by TRACE_IO_TIMEOUT_MS. A 2xx counts the spans exported, anything else
 * failed (rete_proxy_spans_exported_total, rete_proxy_spans_failed_total).
 * Memory: the ring, one batch's copy and one body buffer, allocated once
 * at start-up. */
#include "filter.h"
#include "json_out.h"
#include "log.h"
#include "proxy.h"
#include "trace_ctx.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TRACE_FLUSH_MS 200       /* a batch that is not full waits at most this */
#define TRACE_IO_TIMEOUT_MS 2000 /* connect, send and the collector's answer, each */
#define TRACE_SPAN_JSON_MAX 16384 /* a span's JSON, worst case (every byte escaped) */

/* ---- the span record ---------------------------------------------------- */

enum { KIND_SERVER = 2, KIND_CLIENT = 3 }; /* OTLP Span.SpanKind */

typedef struct span_rec {
    uint8_t trace_id[16], span_id[8], parent_id[8];
    uint8_t kind;
    uint8_t format; /* rete_trace_format */
    uint16_t server_port;
    int status;     /* 0: no response */
    uint64_t start_ns, end_ns; /* Unix epoch */
    char method[16], proto_version[4], flags[8];
    char path[256], server_address[128], client_address[64], request_id[64];
    char route[128], dst_service[128];
    char src_workload[64], src_ns[64], src_principal[128];
    char dst_workload[64], dst_ns[64], dst_principal[128];
    char svc_name[64], svc_ns[64]; /* this proxy's workload: the resource */
    char collector[200];
} span_rec;

static void cpy(char *dst, size_t cap, rete_view v)
{
    size_t n = v.len < cap - 1 ? v.len : cap - 1;
    if (n)
        memcpy(dst, v.p, n);
    dst[n] = '\0';
}

#define CPY(dst, v) cpy((dst), sizeof(dst), (v))

static rete_view cstr(const char *s)
{
    return s ? rete_view_cstr(s) : RETE_VIEW_NULL;
}

/* ---- the exporter ------------------------------------------------------- */

/* The exporter runs (rete_trace_open .. rete_trace_close). Read by every
 * request: apart from tx, whose first cache line (mu) the exporter and a
 * queueing worker write. */
static bool tx_on;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    span_rec *ring;
    size_t cap, head, n, batch;
    span_rec *out;  /* the batch being exported (exporter thread only) */
    char *body;     /* its JSON (exporter thread only) */
    size_t body_cap;
    bool stop;
    pthread_t thread;
    _Atomic uint64_t exported, failed;
} tx = {.mu = PTHREAD_MUTEX_INITIALIZER}; /* cv: rete_trace_open (CLOCK_MONOTONIC) */

typedef struct jb {
    char *p;
    size_t len, cap;
    bool full;
} jb;

static void put(jb *b, const char *s, size_t n)
{
    if (b->full || b->len + n > b->cap) {
        b->full = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void putc_(jb *b, const char *s)
{
    put(b, s, strlen(s));
}

static void putf(jb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(jb *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A JSON string, quotes included: any byte is kept (json_out.h's escaper). */
static void put_str(jb *b, const char *s)
{
    char tmp[6 * 256 + 3];
    size_t n = strlen(s);
    if (n > 256)
        n = 256;
    tmp[0] = '"';
    size_t w = rete_json_escape(tmp + 1, sizeof(tmp) - 2, s, n);
    if (w > sizeof(tmp) - 3) {
        b->full = true;
        return;
    }
    tmp[1 + w] = '"';
    put(b, tmp, w + 2);
}

/* ---- OTLP/HTTP JSON (opentelemetry-proto trace/v1, JSON mapping: ids as
 * hex, 64-bit integers as strings, enums as numbers) ---- */

/* Span.flags bits (trace.proto SpanFlags) */
#define OTLP_FLAG_SAMPLED 0x01u         /* W3C trace flags, low 8 bits */
#define OTLP_FLAG_HAS_IS_REMOTE 0x100u  /* the next bit is known */
#define OTLP_FLAG_IS_REMOTE 0x200u      /* the parent span is in another process */

static void otlp_attr_str(jb *b, bool *first, const char *key, const char *v)
{
    if (!v[0])
        return;
    putc_(b, *first ? "{\"key\":" : ",{\"key\":");
    *first = false;
    put_str(b, key);
    putc_(b, ",\"value\":{\"stringValue\":");
    put_str(b, v);
    putc_(b, "}}");
}

static void otlp_attr_int(jb *b, bool *first, const char *key, long long v)
{
    putc_(b, *first ? "{\"key\":" : ",{\"key\":");
    *first = false;
    put_str(b, key);
    putf(b, ",\"value\":{\"intValue\":\"%lld\"}}", v);
}

/* Whether the span is an error (OTel HTTP semantic conventions: a client
 * span for 4xx and 5xx, a server span for 5xx; no response at all, both). */
static bool span_error(const span_rec *r)
{
    return r->status == 0 || r->status >= (r->kind == KIND_CLIENT ? 400 : 500);
}

static void otlp_begin(jb *b, const span_rec *r)
{
    putc_(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    bool first = true;
    otlp_attr_str(b, &first, "service.name", r->svc_name);
    otlp_attr_str(b, &first, "service.namespace", r->svc_ns);
    otlp_attr_str(b, &first, "telemetry.sdk.name", "rete-proxy");
    putc_(b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"rete-proxy\",\"version\":\"" RETE_VERSION
             "\"},\"spans\":[");
}

static void common_attrs(const span_rec *r, void (*str)(jb *, bool *, const char *, const char *), jb *b,
                         bool *first)
{
    str(b, first, "http.request.method", r->method);
    str(b, first, "url.path", r->path);
    str(b, first, "url.scheme", "http");
    str(b, first, "server.address", r->server_address);
    str(b, first, "client.address", r->client_address);
    str(b, first, "network.protocol.name", "http");
    str(b, first, "network.protocol.version", r->proto_version);
    str(b, first, "rete.request_id", r->request_id);
    str(b, first, "rete.route", r->route);
    str(b, first, "rete.destination.service", r->dst_service);
    str(b, first, "rete.source.workload", r->src_workload);
    str(b, first, "rete.source.namespace", r->src_ns);
    str(b, first, "rete.source.principal", r->src_principal);
    str(b, first, "rete.destination.workload", r->dst_workload);
    str(b, first, "rete.destination.namespace", r->dst_ns);
    str(b, first, "rete.destination.principal", r->dst_principal);
    str(b, first, "rete.response_flags", r->flags);
}

static void otlp_span(jb *b, const span_rec *r, bool first_span)
{
    char tid[33], sid[17], pid[17];
    rete_trace_hex(tid, r->trace_id, 16);
    rete_trace_hex(sid, r->span_id, 8);
    rete_trace_hex(pid, r->parent_id, 8);
    putf(b, "%s{\"traceId\":\"%s\",\"spanId\":\"%s\"", first_span ? "" : ",", tid, sid);
    if (strcmp(pid, "0000000000000000") != 0)
        putf(b, ",\"parentSpanId\":\"%s\"", pid);
    /* Span.flags: the W3C trace flags (sampled: every exported span is) and
     * whether the parent is remote: it always is when there is one, it came
     * in a header (from the calling sidecar, or from the app forwarding its
     * own sidecar's SERVER span) */
    bool has_parent = strcmp(pid, "0000000000000000") != 0;
    putf(b, ",\"flags\":%u", OTLP_FLAG_SAMPLED | OTLP_FLAG_HAS_IS_REMOTE | (has_parent ? OTLP_FLAG_IS_REMOTE : 0u));
    putc_(b, ",\"name\":");
    put_str(b, r->method);
    putf(b, ",\"kind\":%d,\"startTimeUnixNano\":\"%llu\",\"endTimeUnixNano\":\"%llu\",\"attributes\":[",
         r->kind, (unsigned long long)r->start_ns, (unsigned long long)r->end_ns);
    bool first = true;
    common_attrs(r, otlp_attr_str, b, &first);
    if (r->status)
        otlp_attr_int(b, &first, "http.response.status_code", r->status);
    if (r->server_port)
        otlp_attr_int(b, &first, "server.port", r->server_port);
    if (span_error(r)) {
        char et[16];
        snprintf(et, sizeof(et), "%d", r->status);
        otlp_attr_str(b, &first, "error.type", r->status ? et : r->flags[0] ? r->flags : "_OTHER");
    }
    /* Status.code: 2 = STATUS_CODE_ERROR; unset otherwise (the conventions'
     * advice for HTTP) */
    putc_(b, span_error(r) ? "],\"status\":{\"code\":2}}" : "],\"status\":{}}");
}

static const char otlp_end[] = "]}]}]}";

/* ---- Zipkin v2 JSON (zipkin2-api.yaml ListOfSpans: ids as hex, times in
 * microseconds, tags string to string) ---- */

static void zipkin_tag(jb *b, bool *first, const char *key, const char *v)
{
    if (!v[0])
        return;
    if (!*first)
        putc_(b, ",");
    *first = false;
    put_str(b, key);
    putc_(b, ":");
    put_str(b, v);
}

static void zipkin_span(jb *b, const span_rec *r, bool first_span)
{
    char tid[33], sid[17], pid[17];
    rete_trace_hex(tid, r->trace_id, 16);
    rete_trace_hex(sid, r->span_id, 8);
    rete_trace_hex(pid, r->parent_id, 8);
    putf(b, "%s{\"traceId\":\"%s\",\"id\":\"%s\"", first_span ? "" : ",", tid, sid);
    if (strcmp(pid, "0000000000000000") != 0)
        putf(b, ",\"parentId\":\"%s\"", pid);
    putf(b, ",\"kind\":\"%s\",\"name\":", r->kind == KIND_CLIENT ? "CLIENT" : "SERVER");
    put_str(b, r->method);
    uint64_t dur = r->end_ns > r->start_ns ? (r->end_ns - r->start_ns) / 1000 : 0;
    putf(b, ",\"timestamp\":%llu,\"duration\":%llu,\"localEndpoint\":{\"serviceName\":",
         (unsigned long long)(r->start_ns / 1000), (unsigned long long)(dur ? dur : 1));
    put_str(b, r->svc_name);
    putc_(b, "},\"tags\":{");
    bool first = true;
    common_attrs(r, zipkin_tag, b, &first);
    char n[16];
    if (r->status) {
        snprintf(n, sizeof(n), "%d", r->status);
        zipkin_tag(b, &first, "http.response.status_code", n);
    }
    if (r->server_port) {
        snprintf(n, sizeof(n), "%u", r->server_port);
        zipkin_tag(b, &first, "server.port", n);
    }
    if (span_error(r)) { /* Zipkin marks an error span with the "error" tag */
        snprintf(n, sizeof(n), "%d", r->status);
        zipkin_tag(b, &first, "error", r->status ? n : r->flags[0] ? r->flags : "_OTHER");
    }
    putc_(b, "}}");
}

/* ---- HTTP/1.1 POST to the collector (exporter thread, blocking) ---- */

static int dial(const char *hostport)
{
    char host[200];
    snprintf(host, sizeof(host), "%s", hostport);
    char *colon = strrchr(host, ':');
    if (!colon)
        return -1;
    *colon = '\0';
    const char *port = colon + 1, *h = host;
    if (host[0] == '[' && colon > host + 1 && colon[-1] == ']') {
        colon[-1] = '\0';
        h = host + 1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(h, port, &hints, &res) != 0 || !res)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t el = sizeof(err);
    if (poll(&pfd, 1, TRACE_IO_TIMEOUT_MS) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 ||
        err != 0) {
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    struct timeval tv = {.tv_sec = TRACE_IO_TIMEOUT_MS / 1000, .tv_usec = TRACE_IO_TIMEOUT_MS % 1000 * 1000};
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* POST the body; true on a 2xx answer. */
static bool post(const char *collector, rete_trace_format fmt, const char *body, size_t len)
{
    int fd = dial(collector);
    if (fd < 0)
        return false;
    char head[512];
    int hn = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nUser-Agent: rete-proxy/" RETE_VERSION "\r\nConnection: close\r\n\r\n",
                      fmt == RETE_TRACE_ZIPKIN ? "/api/v2/spans" : "/v1/traces", collector, len);
    bool ok = hn > 0 && (size_t)hn < sizeof(head) && send_all(fd, head, (size_t)hn) && send_all(fd, body, len);
    char st[16];
    size_t got = 0;
    while (ok && got < 12) {
        ssize_t r = recv(fd, st + got, 12 - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            ok = false;
        else
            got += (size_t)r;
    }
    /* "HTTP/1.x 2xx" */
    ok = ok && memcmp(st, "HTTP/1.", 7) == 0 && st[8] == ' ' && st[9] == '2';
    /* Read the rest up to the collector's close (Connection: close), at
     * most 64 KiB: closing with unread bytes would reset the connection
     * under the collector's feet. */
    char sink[4096];
    for (size_t left = 65536; ok && left;) {
        ssize_t r = recv(fd, sink, sizeof(sink), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        left = (size_t)r < left ? left - (size_t)r : 0;
    }
    close(fd);
    return ok;
}

/* Format and send n records that share a collector and a format; the body
 * is cut in several POSTs when it does not fit the buffer. Returns false
 * when a POST failed. */
static bool export_batch(const span_rec *r, size_t n)
{
    bool all_ok = true;
    rete_trace_format fmt = (rete_trace_format)r[0].format;
    size_t i = 0;
    while (i < n) {
        jb b = {.p = tx.body, .cap = tx.body_cap - sizeof(otlp_end)};
        size_t start = i;
        if (fmt == RETE_TRACE_OTLP)
            otlp_begin(&b, &r[i]);
        else
            putc_(&b, "[");
        for (; i < n; i++) {
            size_t mark = b.len;
            if (fmt == RETE_TRACE_OTLP)
                otlp_span(&b, &r[i], i == start);
            else
                zipkin_span(&b, &r[i], i == start);
            if (b.full) { /* send what fits, this one starts the next body */
                b.len = mark;
                b.full = false;
                break;
            }
        }
        if (i == start) { /* cannot happen with TRACE_SPAN_JSON_MAX; never loop */
            atomic_fetch_add(&tx.failed, 1);
            i++;
            continue;
        }
        b.cap += sizeof(otlp_end);
        putc_(&b, fmt == RETE_TRACE_OTLP ? otlp_end : "]");
        bool ok = post(r[start].collector, fmt, b.p, b.len);
        atomic_fetch_add(ok ? &tx.exported : &tx.failed, i - start);
        if (!ok)
            rete_debug("tracing: %zu spans not accepted by %s", i - start, r[start].collector);
        all_ok = all_ok && ok;
    }
    return all_ok;
}

static void *exporter(void *arg)
{
    (void)arg;
    /* its CPU on its own in /proc/PID/task/TID, top -H, perf */
    pthread_setname_np(pthread_self(), "rete-trace");
    pthread_mutex_lock(&tx.mu);
    for (;;) {
        if (tx.n < tx.batch && !tx.stop) {
            struct timespec until; /* tx.cv's clock: a wall-clock step cannot stall export */
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += TRACE_FLUSH_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&tx.cv, &tx.mu, &until);
        }
        if (tx.n == 0) {
            if (tx.stop)
                break;
            continue;
        }
        /* A prefix of the ring that goes to one collector in one format. */
        size_t k = 0;
        const span_rec *first = &tx.ring[tx.head];
        while (k < tx.n && k < tx.batch) {
            const span_rec *r = &tx.ring[(tx.head + k) % tx.cap];
            if (r->format != first->format || strcmp(r->collector, first->collector) != 0)
                break;
            tx.out[k++] = *r;
        }
        tx.head = (tx.head + k) % tx.cap;
        tx.n -= k;
        pthread_mutex_unlock(&tx.mu);
        bool ok = export_batch(tx.out, k);
        pthread_mutex_lock(&tx.mu);
        if (!ok && tx.stop) {
            /* Exiting and the collector failed: the rest is given up (and
             * counted) rather than each batch waiting its timeout. */
            atomic_fetch_add(&tx.failed, tx.n);
            tx.n = 0;
        }
    }
    pthread_mutex_unlock(&tx.mu);
    return NULL;
}

static uint64_t exported_count(void *arg)
{
    (void)arg;
    return atomic_load(&tx.exported);
}

static uint64_t failed_count(void *arg)
{
    (void)arg;
    return atomic_load(&tx.failed);
}

rete_rc rete_trace_open(const rete_trace_opts *o, rete_error *err)
{
    if (o->queue_spans < 1 || o->queue_spans > 1000000)
        return rete_error_set(err, RETE_EINVAL, "--trace-queue-spans: %zu is not in 1..1000000", o->queue_spans);
    if (o->batch_spans < 1 || o->batch_spans > o->queue_spans || o->batch_spans > 10000)
        return rete_error_set(err, RETE_EINVAL, "--trace-batch-spans: %zu is not in 1..min(10000, the queue)",
                              o->batch_spans);
    tx.cap = o->queue_spans;
    tx.batch = o->batch_spans;
    tx.body_cap = tx.batch * 2048 > TRACE_SPAN_JSON_MAX * 4 ? tx.batch * 2048 : TRACE_SPAN_JSON_MAX * 4;
    tx.head = tx.n = 0;
    tx.stop = false;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&tx.cv, &ca) != 0)
        return rete_error_set(err, RETE_ENOMEM, "cannot start the trace exporter");
    pthread_condattr_destroy(&ca);
    tx.ring = malloc(tx.cap * sizeof(span_rec));
    tx.out = malloc(tx.batch * sizeof(span_rec));
    tx.body = malloc(tx.body_cap);
    rete_proxy *p = rete_the_proxy;
    rete_metric m;
    bool ok = tx.ring && tx.out && tx.body;
    if (ok && p && p->metrics) {
        ok = rete_metrics_series(p->metrics, p->mm->spans_exported_total, NULL, 0, &m) == RETE_OK &&
             rete_metrics_counter_fn(p->metrics, m, exported_count, NULL) == RETE_OK &&
             rete_metrics_series(p->metrics, p->mm->spans_failed_total, NULL, 0, &m) == RETE_OK &&
             rete_metrics_counter_fn(p->metrics, m, failed_count, NULL) == RETE_OK;
    }
    if (!ok || pthread_create(&tx.thread, NULL, exporter, NULL) != 0) {
        free(tx.ring);
        free(tx.out);
        free(tx.body);
        tx.ring = tx.out = NULL;
        tx.body = NULL;
        return rete_error_set(err, RETE_ENOMEM, "cannot start the trace exporter");
    }
    tx_on = true;
    return RETE_OK;
}

void rete_trace_close(void)
{
    if (!tx_on)
        return;
    pthread_mutex_lock(&tx.mu);
    tx.stop = true;
    pthread_cond_signal(&tx.cv);
    pthread_mutex_unlock(&tx.mu);
    pthread_join(tx.thread, NULL); /* exports what is queued first, best effort */
    tx_on = false;
    pthread_cond_destroy(&tx.cv);
    free(tx.ring);
    free(tx.out);
    free(tx.body);
    tx.ring = tx.out = NULL;
    tx.body = NULL;
}

/* ---- the filter ---------------------------------------------------------- */

/* xorshift64*, per thread, seeded from the kernel: span and trace ids
 * (unique, not secret) and the sampling draw. */
static uint64_t rnd(void)
{
    static _Thread_local uint64_t x;
    while (x == 0 && getrandom(&x, sizeof(x), 0) != sizeof(x))
        ;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Head sampling's draw: true with probability ppm / 1,000,000. The top 32
 * bits of a draw scaled to [0, 1000000) by a multiply and a shift (no
 * division); 0 and 100% draw nothing. */
static bool draw_ppm(uint32_t ppm)
{
    if (ppm == 0)
        return false;
    if (ppm >= 1000000)
        return true;
    return (uint32_t)(((rnd() >> 32) * 1000000u) >> 32) < ppm;
}

static void rnd_bytes(uint8_t *b, size_t n)
{
    while (n) {
        uint64_t v = rnd();
        size_t k = n < 8 ? n : 8;
        memcpy(b, &v, k);
        b += k;
        n -= k;
    }
}

/* The trace headers of a request, found in one pass over its headers (the
 * first of each name, as rete_msg_get; names are stored lower-case). Most
 * names differ in length from all six, so a header costs a switch. */
enum { H_TP, H_B3, H_TID, H_SID, H_SMP, H_FLG, H_N };

static unsigned find_trace_hdrs(const rete_msg *m, rete_view h[H_N])
{
    unsigned seen = 0; /* bit k: h[k] is set */
    for (uint32_t i = 0; i < m->n_headers; i++) {
        rete_view n = m->headers[i].name;
        int k = -1;
        switch (n.len) {
        case 2:
            k = memcmp(n.p, "b3", 2) == 0 ? H_B3 : -1;
            break;
        case 10:
            k = memcmp(n.p, "x-b3-flags", 10) == 0 ? H_FLG : -1;
            break;
        case 11:
            k = memcmp(n.p, "traceparent", 11) == 0   ? H_TP
                : memcmp(n.p, "x-b3-spanid", 11) == 0 ? H_SID
                                                      : -1;
            break;
        case 12:
            k = memcmp(n.p, "x-b3-traceid", 12) == 0   ? H_TID
                : memcmp(n.p, "x-b3-sampled", 12) == 0 ? H_SMP
                                                       : -1;
            break;
        default:
            break;
        }
        if (k >= 0 && !(seen & 1u << k)) {
            seen |= 1u << k;
            h[k] = m->headers[i].value;
        }
    }
    return seen;
}

/* The request's trace context and the formats it came in. */
static uint8_t read_ctx(const rete_exchange *ex, rete_trace_ctx *c)
{
    rete_view h[H_N]; /* not zeroed: most requests carry none of them */
    unsigned seen = find_trace_hdrs(&ex->req, h);
    if (!seen) {
        *c = (rete_trace_ctx){.sampled = -1};
        return 0;
    }
    for (int k = 0; k < H_N; k++)
        if (!(seen & 1u << k))
            h[k] = RETE_VIEW_NULL;
    uint8_t f = 0;
    bool got = false;
    if (h[H_TP].p) {
        f |= RETE_TRACE_F_W3C;
        got = rete_trace_parse_traceparent(h[H_TP], c);
    }
    if (h[H_B3].p) {
        f |= RETE_TRACE_F_B3;
        got = got || rete_trace_parse_b3(h[H_B3], c);
    }
    if (h[H_TID].p || h[H_SID].p || h[H_SMP].p || h[H_FLG].p) {
        f |= RETE_TRACE_F_B3_MULTI;
        got = got || rete_trace_parse_b3_multi(h[H_TID], h[H_SID], h[H_SMP], h[H_FLG], c);
    }
    if (!got)
        *c = (rete_trace_ctx){.sampled = -1};
    return f;
}

static void set_hex(rete_exchange *ex, const char *name, const uint8_t *b, size_t n)
{
    char h[33];
    rete_trace_hex(h, b, n);
    rete_msg_set(ex, &ex->req, rete_view_cstr(name), rete_ex_dup(ex, rete_view_make(h, 2 * n)));
}

/* The request goes on with this proxy's span as the parent. */
static void propagate(rete_exchange *ex)
{
    char tid[33], sid[17], pid[17], v[100];
    rete_trace_hex(tid, ex->trace.trace_id, 16);
    rete_trace_hex(sid, ex->trace.span_id, 8);
    rete_trace_hex(pid, ex->trace.parent_id, 8);
    int n = snprintf(v, sizeof(v), "00-%s-%s-01", tid, sid);
    rete_msg_set(ex, &ex->req, RETE_VIEW_LIT("traceparent"), rete_ex_dup(ex, rete_view_make(v, (size_t)n)));
    bool root = strcmp(pid, "0000000000000000") == 0;
    if (ex->trace.formats & RETE_TRACE_F_B3) {
        n = snprintf(v, sizeof(v), "%s-%s-1%s%s", tid, sid, root ? "" : "-", root ? "" : pid);
        rete_msg_set(ex, &ex->req, RETE_VIEW_LIT("b3"), rete_ex_dup(ex, rete_view_make(v, (size_t)n)));
    }
    if (ex->trace.formats & RETE_TRACE_F_B3_MULTI) {
        set_hex(ex, "x-b3-traceid", ex->trace.trace_id, 16);
        set_hex(ex, "x-b3-spanid", ex->trace.span_id, 8);
        if (root)
            rete_msg_remove(&ex->req, RETE_VIEW_LIT("x-b3-parentspanid"));
        else
            set_hex(ex, "x-b3-parentspanid", ex->trace.parent_id, 8);
        rete_msg_set(ex, &ex->req, RETE_VIEW_LIT("x-b3-sampled"), RETE_VIEW_LIT("1"));
    }
}

/* A sampled request: its span's ids, and the request goes on with this
 * proxy's span as the parent. Out of line: trace_request's unsampled path
 * then needs no stack frame for it. */
static __attribute__((noinline)) void start_span(rete_exchange *ex, const rete_trace_ctx *c,
                                                  uint8_t formats)
{
    ex->trace.sampled = true;
    ex->trace.formats = formats;
    if (c->has_ids) {
        memcpy(ex->trace.trace_id, c->trace_id, 16);
        memcpy(ex->trace.parent_id, c->span_id, 8);
    } else {
        do
            rnd_bytes(ex->trace.trace_id, 16);
        while (ex->trace.trace_id[0] == 0 && ex->trace.trace_id[15] == 0);
    }
    do
        rnd_bytes(ex->trace.span_id, 8);
    while (ex->trace.span_id[0] == 0 && ex->trace.span_id[7] == 0);
    propagate(ex);
}

/* Whether this proxy traces the request (see the top); when it does,
 * start_span. */
static __attribute__((noinline)) void trace_decide(rete_exchange *ex, const rete_config *cfg)
{
    rete_trace_ctx c;
    uint8_t formats = read_ctx(ex, &c);
    bool sampled;
    if (c.sampled >= 0)
        sampled = c.sampled == 1;
    else if (ex->inbound && ex->peer_id[0])
        sampled = false; /* the calling sidecar decided (see the top) */
    else
        sampled = draw_ppm(cfg->trace_sample_ppm);
    if (sampled)
        start_span(ex, &c, formats);
}

/* Tracing off, or a tunnel: two loads and a test, no stack frame. */
static rete_filter_verdict trace_request(rete_exchange *ex)
{
    const rete_config *cfg = ex->gen->cfg;
    if (cfg->trace_collector && tx_on && !ex->tunnel)
        trace_decide(ex, cfg);
    return RETE_FILTER_NEXT;
}

static const char *label(const rete_workload *wl, const char *key)
{
    for (size_t i = 0; wl && i < wl->n_labels; i++)
        if (strcmp(wl->labels[i].key, key) == 0)
            return wl->labels[i].value;
    return NULL;
}

/* The namespace in spiffe://<td>/ns/<ns>/sa/<sa>. */
static rete_view spiffe_ns(const char *id)
{
    const char *p = strstr(id, "/ns/");
    const char *e = p ? strchr(p + 4, '/') : NULL;
    return e ? rete_view_make(p + 4, (size_t)(e - p - 4)) : RETE_VIEW_NULL;
}

static const char *proto_version(const rete_side_ops *ops)
{
    if (!ops || !ops->name)
        return "";
    return strncmp(ops->name, "h2", 2) == 0 ? "2" : strncmp(ops->name, "h1", 2) == 0 ? "1.1" : "";
}

static void trace_finish(rete_exchange *ex, const rete_filter_end *end)
{
    if (!ex->trace.sampled)
        return;
    span_rec r;
    const rete_config *cfg = ex->gen->cfg;
    memcpy(r.trace_id, ex->trace.trace_id, 16);
    memcpy(r.span_id, ex->trace.span_id, 8);
    memcpy(r.parent_id, ex->trace.parent_id, 8);
    r.kind = ex->inbound ? KIND_SERVER : KIND_CLIENT;
    r.format = (uint8_t)cfg->trace_format;
    r.status = end->status;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    r.end_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
    r.start_ns = r.end_ns > end->duration_ns ? r.end_ns - end->duration_ns : 0;
    CPY(r.method, ex->req.method);
    rete_view path = ex->req.path;
    ptrdiff_t q = rete_view_find(path, '?');
    CPY(r.path, q >= 0 ? rete_view_sub(path, 0, (size_t)q) : path);
    CPY(r.flags, ex->error ? cstr(rete_ex_error_flag(ex->error)) : RETE_VIEW_NULL);
    CPY(r.request_id, rete_msg_get(&ex->req, RETE_VIEW_LIT("x-request-id")));
    /* server.address/port: the authority the request named (host, port) */
    rete_view auth = ex->req.authority;
    ptrdiff_t colon = rete_view_find(auth, ':');
    uint64_t port = 0;
    if (colon >= 0 && auth.p[auth.len - 1] != ']' &&
        rete_view_to_u64(rete_view_sub(auth, (size_t)colon + 1, auth.len - (size_t)colon - 1), &port) &&
        port <= 65535)
        auth = rete_view_sub(auth, 0, (size_t)colon);
    else
        port = ex->inbound ? ex->target_port : ex->orig_port;
    CPY(r.server_address, auth);
    r.server_port = (uint16_t)port;
    const rete_http_route *route = ex->route ? ex->route->route : NULL;
    char rn[200] = "";
    if (route)
        snprintf(rn, sizeof(rn), "%s/%s", route->ns, route->name);
    CPY(r.route, rete_view_cstr(rn));
    const rete_workload *self = ex->gen->self;
    const char *app = label(self, "app");
    CPY(r.svc_name, cstr(app ? app : cfg->proxy.name));
    CPY(r.svc_ns, cstr(cfg->proxy.ns));
    CPY(r.collector, cstr(cfg->trace_collector));
    if (ex->inbound) {
        const rete_service *svc = ex->gen->self_service;
        CPY(r.dst_service, cstr(svc ? svc->fqdn : NULL));
        CPY(r.proto_version, cstr(proto_version(ex->ops[RETE_DOWNSTREAM])));
        /* client.address: the caller's address without the port */
        rete_view da = rete_view_cstr(ex->downstream_addr);
        ptrdiff_t c2 = da.len ? (ptrdiff_t)da.len - 1 : -1;
        while (c2 > 0 && da.p[c2] != ':')
            c2--;
        CPY(r.client_address, c2 > 0 ? rete_view_sub(da, 0, (size_t)c2) : da);
        CPY(r.src_workload, ex->peer_workload);
        CPY(r.src_ns, ex->peer_id[0] ? spiffe_ns(ex->peer_id) : RETE_VIEW_NULL);
        CPY(r.src_principal, rete_view_cstr(ex->peer_id));
        CPY(r.dst_workload, cstr(cfg->proxy.name));
        CPY(r.dst_ns, cstr(cfg->proxy.ns));
        CPY(r.dst_principal, cstr(cfg->proxy.spiffe_id));
    } else {
        const rete_service *svc = ex->service ? ex->service : ex->table ? ex->table->service : NULL;
        const rete_workload *wl = ex->service && ex->endpoint >= 0 ? ex->service->endpoints[ex->endpoint] : NULL;
        CPY(r.dst_service, cstr(svc ? svc->fqdn : NULL));
        CPY(r.proto_version, cstr(wl && wl->in_mesh ? "2" : proto_version(ex->ops[RETE_DOWNSTREAM])));
        r.client_address[0] = '\0';
        CPY(r.src_workload, cstr(cfg->proxy.name));
        CPY(r.src_ns, cstr(cfg->proxy.ns));
        CPY(r.src_principal, cstr(cfg->proxy.spiffe_id));
        CPY(r.dst_workload, cstr(wl ? wl->name : NULL));
        CPY(r.dst_ns, cstr(wl ? wl->ns : NULL));
        CPY(r.dst_principal, cstr(wl && wl->in_mesh ? wl->spiffe_id : NULL));
    }
    pthread_mutex_lock(&tx.mu);
    bool room = tx.n < tx.cap;
    if (room) {
        tx.ring[(tx.head + tx.n) % tx.cap] = r;
        if (++tx.n >= tx.batch)
            pthread_cond_signal(&tx.cv);
    }
    pthread_mutex_unlock(&tx.mu);
    rete_stat(ex->worker, room ? ex->worker->ms.spans_sampled : ex->worker->ms.spans_dropped, 1);
}

const rete_filter rete_filter_trace = {
    .name = "trace",
    .on_request = trace_request,
    .on_finish = trace_finish,
};
