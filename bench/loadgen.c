/* rete-loadgen: open-loop, constant-rate HTTP/1.1, HTTP/2 and gRPC load
 * generator.
 *
 * Request i is due at t0 + i / rate whatever happened to earlier requests
 * (no coordinated omission, as in wrk2 and Gil Tene's talk of that name): when
 * no connection can take it the request waits, and its latency still counts
 * from the time it was due, so a stall shows up in the percentiles instead of
 * silently slowing the sender down. Requests go over C keep-alive
 * connections: HTTP/1.1 with one request in flight per connection (no
 * pipelining), or HTTP/2 with prior knowledge (h2c) and up to --streams
 * concurrent streams per connection, or gRPC unary calls over the same h2c
 * connections (--grpc). The protocols are codecs behind one vtable
 * (loadgen.h); this file holds the schedule and the connections.
 *
 * Send times come from a timerfd armed at the absolute due time of the next
 * request, with the thread's timer slack set to 1 us, so the schedule keeps
 * microsecond precision instead of the millisecond granularity of uv_timer.
 *
 * Output: one JSON object on stdout. Latencies are microseconds. Exit status
 * 0 after a run (errors are reported in the JSON, not in the exit status), 2
 * on bad usage or when the target cannot be connected to at all. */
#include "loadgen.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "view.h"

static void conn_connect(lg_conn *c);
static void dispatch(lg *l);

static uint64_t due_time(const lg *l, uint64_t i)
{
    return l->t0 + (uint64_t)((double)i * 1e9 / l->o.rate);
}

/* Number of requests due by `now`, capped at the run's total. */
static uint64_t due_count(const lg *l, uint64_t now)
{
    if (now < l->t0)
        return 0;
    uint64_t n = (uint64_t)((double)(now - l->t0) * l->o.rate / 1e9) + 1;
    return n < l->total ? n : l->total;
}

/* gRPC only: the message size, the calls that failed with a grpc-status, and
 * how often each grpc-status was seen ("missing": answers without one). */
static void print_grpc(const lg *l)
{
    printf(", \"grpc_payload\": %zu, \"grpc_errors\": %" PRIu64 ", \"grpc_status\": {",
           l->o.grpc_payload, l->grpc_errors);
    const char *sep = "";
    for (unsigned i = 0; i < LG_GRPC_CODES; i++) {
        if (!l->grpc_status[i])
            continue;
        printf("%s\"%u\": %" PRIu64, sep, i, l->grpc_status[i]);
        sep = ", ";
    }
    if (l->grpc_status_other) {
        printf("%s\"other\": %" PRIu64, sep, l->grpc_status_other);
        sep = ", ";
    }
    if (l->grpc_status_missing)
        printf("%s\"missing\": %" PRIu64, sep, l->grpc_status_missing);
    printf("}");
}

static void print_result(lg *l)
{
    uint64_t now = uv_hrtime();
    uint64_t done = l->ok + l->non2xx;
    double elapsed = (double)((l->last_done > l->t0 ? l->last_done : now) - l->t0) / 1e9;
    if (elapsed < l->o.duration)
        elapsed = l->o.duration;
    /* Requests never answered (still waiting for a connection, or in flight
     * when the drain time ran out) are errors: a run that cannot keep up
     * must not look clean. */
    uint64_t unanswered = done + l->errors < l->total ? l->total - done - l->errors : 0;
    const rete_hdr *h = &l->hist;
    printf("{\"protocol\": \"%s\", \"rate\": %.1f, \"duration\": %.3f, \"connections\": %u, \"scheduled\": %" PRIu64
           ", \"sent\": %" PRIu64 ", \"ok\": %" PRIu64 ", \"errors\": %" PRIu64
           ", \"non2xx\": %" PRIu64 ", \"unanswered\": %" PRIu64 ", \"connect_errors\": %" PRIu64
           ", \"p50\": %" PRIu64 ", \"p90\": %" PRIu64 ", \"p99\": %" PRIu64 ", \"p999\": %" PRIu64
           ", \"max\": %" PRIu64 ", \"min\": %" PRIu64 ", \"mean\": %.1f, \"achieved_rate\": %.1f",
           l->o.codec->name, l->o.rate, l->o.duration, l->o.connections, l->total, l->sent, l->ok,
           l->errors + unanswered, l->non2xx, unanswered, l->connect_errors,
           rete_hdr_percentile(h, 50), rete_hdr_percentile(h, 90), rete_hdr_percentile(h, 99),
           rete_hdr_percentile(h, 99.9), h->total ? h->max : 0, h->total ? h->min : 0,
           rete_hdr_mean(h), (double)done / elapsed);
    if (l->o.codec == &lg_grpc_codec)
        print_grpc(l);
    /* The percentile curve, for plots: [percentile, microseconds] pairs. */
    static const double spectrum[] = {0,  10, 25,   50,    75,    90,     95,
                                      99, 99.5, 99.9, 99.95, 99.99, 99.999, 100};
    printf(", \"spectrum\": [");
    for (size_t i = 0; i < sizeof(spectrum) / sizeof(spectrum[0]); i++)
        printf("%s[%g, %" PRIu64 "]", i ? ", " : "", spectrum[i],
               rete_hdr_percentile(h, spectrum[i]));
    /* The histogram itself, so runs can be merged: [value, count] for every
     * non-empty bucket, value being the bucket's highest equivalent. */
    printf("], \"histogram\": [");
    bool first = true;
    for (unsigned i = 0; i < RETE_HDR_BUCKETS; i++) {
        if (!h->counts[i])
            continue;
        uint64_t v = rete_hdr_highest_equiv(i);
        printf("%s[%" PRIu64 ", %" PRIu64 "]", first ? "" : ", ", v < h->max ? v : h->max,
               h->counts[i]);
        first = false;
    }
    printf("]}\n");
    fflush(stdout);
}

static void close_noop(uv_handle_t *h)
{
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, close_noop);
}

/* Print the result and close every handle, which lets uv_run return. */
static void stop(lg *l)
{
    if (l->stopping)
        return;
    l->stopping = true;
    print_result(l);
    uv_walk(l->loop, close_walk, NULL);
}

static void maybe_finish(lg *l)
{
    if (l->started && l->ok + l->non2xx + l->errors >= l->total)
        stop(l);
}

/* The ready list: connections that can take another request, newest first. */
static void ready_push(lg_conn *c)
{
    lg *l = c->lg;
    if (c->on_ready || c->cstate != CS_READY || c->inflight >= l->o.codec->capacity(l))
        return;
    c->ready_prev = NULL;
    c->ready_next = l->ready;
    if (l->ready)
        l->ready->ready_prev = c;
    l->ready = c;
    c->on_ready = true;
}

static void ready_remove(lg_conn *c)
{
    if (!c->on_ready)
        return;
    if (c->ready_prev)
        c->ready_prev->ready_next = c->ready_next;
    else
        c->lg->ready = c->ready_next;
    if (c->ready_next)
        c->ready_next->ready_prev = c->ready_prev;
    c->ready_prev = c->ready_next = NULL;
    c->on_ready = false;
}

static void on_retry(uv_timer_t *t)
{
    lg_conn *c = t->data;
    if (!c->lg->stopping)
        conn_connect(c);
}

/* A closed connection is replaced at once, unless connecting failed: then
 * after 50 ms, so a dead target does not turn the run into a busy loop. */
static void conn_closed(uv_handle_t *h)
{
    lg_conn *c = h->data;
    if (c->lg->stopping)
        return;
    if (c->connect_failed)
        uv_timer_start(&c->retry, on_retry, 50, 0);
    else
        conn_connect(c);
}

void lg_conn_fail(lg_conn *c)
{
    lg *l = c->lg;
    if (c->cstate == CS_CLOSING)
        return;
    ready_remove(c);
    if (c->cstate == CS_READY)
        l->connected--;
    c->cstate = CS_CLOSING;
    l->o.codec->reset(c);
    c->inflight = 0;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
    maybe_finish(l);
}

static void count_done(lg_conn *c)
{
    lg *l = c->lg;
    if (c->inflight)
        c->inflight--;
    if (c->cstate == CS_READY)
        ready_push(c);
    maybe_finish(l);
}

/* An answer: its latency counts, from the time request `index` was due. */
static void answered(lg_conn *c, uint64_t index, bool ok)
{
    lg *l = c->lg;
    uint64_t now = uv_hrtime();
    uint64_t due = due_time(l, index);
    rete_hdr_record(&l->hist, now > due ? (now - due) / 1000 : 0);
    if (ok)
        l->ok++;
    else
        l->non2xx++;
    l->last_done = now;
    count_done(c);
}

void lg_response(lg_conn *c, uint64_t index, int status)
{
    answered(c, index, status >= 200 && status < 300);
}

void lg_request_failed(lg_conn *c, uint64_t index)
{
    c->lg->errors++;
    count_done(c);
}

void lg_grpc_response(lg_conn *c, uint64_t index, int status, int grpc_status)
{
    lg *l = c->lg;
    if (grpc_status == -1)
        l->grpc_status_missing++;
    else if (grpc_status >= 0 && grpc_status < LG_GRPC_CODES)
        l->grpc_status[grpc_status]++;
    else
        l->grpc_status_other++;
    if (status != 200) {
        answered(c, index, false);
    } else if (grpc_status == 0) {
        answered(c, index, true);
    } else {
        /* A failed call, like a reset stream: no latency, since a fast
         * failure must not make the percentiles look better. */
        l->grpc_errors++;
        lg_request_failed(c, index);
    }
}

typedef struct lg_write {
    uv_write_t req;
    char data[];
} lg_write;

static void on_write(uv_write_t *req, int status)
{
    lg_conn *c = req->data;
    free(req);
    if (status < 0 && status != UV_ECANCELED)
        lg_conn_fail(c);
}

void lg_conn_write(lg_conn *c, const char *data, size_t len)
{
    if (c->cstate != CS_READY || len == 0)
        return;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    /* Small writes almost always complete at once and skip the write queue. */
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)len)
        return;
    if (n < 0 && n != UV_EAGAIN) {
        lg_conn_fail(c);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    lg_write *w = rete_malloc(sizeof(*w) + len - done);
    memcpy(w->data, data + done, len - done);
    w->req.data = c;
    b = uv_buf_init(w->data, (unsigned)(len - done));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        free(w);
        lg_conn_fail(c);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    lg_conn *c = h->data;
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    lg_conn *c = s->data;
    if (nread < 0) {
        lg_conn_fail(c);
        return;
    }
    if (nread == 0 || c->cstate != CS_READY)
        return;
    c->len += (size_t)nread;
    c->lg->o.codec->on_data(c);
    if (!c->lg->stopping)
        dispatch(c->lg);
}

/* Hand every due request to a connection that can take it, oldest first. */
static void dispatch(lg *l)
{
    if (!l->started || l->stopping)
        return;
    const lg_codec *codec = l->o.codec;
    unsigned cap = codec->capacity(l);
    uint64_t due = due_count(l, uv_hrtime());
    while (l->next_send < due && l->ready) {
        lg_conn *c = l->ready;
        while (l->next_send < due && c->inflight < cap && c->cstate == CS_READY) {
            c->inflight++;
            l->sent++;
            codec->send(c, l->next_send++);
        }
        if (c->cstate == CS_READY && codec->flush)
            codec->flush(c);
        if (c->cstate == CS_READY && c->inflight < cap)
            break; /* nothing more is due */
        ready_remove(c);
    }
}

static void arm_tick(lg *l)
{
    uint64_t due = due_count(l, uv_hrtime());
    uint64_t at = due_time(l, l->next_send > due ? l->next_send : due);
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(at / 1000000000u);
    its.it_value.tv_nsec = (long)(at % 1000000000u);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    if (timerfd_settime(l->tick_fd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        perror("rete-loadgen: timerfd_settime");
}

static void on_drain_timeout(uv_timer_t *t)
{
    stop(t->data);
}

static void on_tick(uv_poll_t *p, int status, int events)
{
    lg *l = p->data;
    uint64_t expirations;
    if (read(l->tick_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        perror("rete-loadgen: timerfd read");
    dispatch(l);
    if (l->stopping)
        return;
    if (due_count(l, uv_hrtime()) >= l->total) {
        /* Everything is due: stop ticking and bound the wait for the rest. */
        uv_poll_stop(&l->tick_poll);
        uv_timer_start(&l->drain_timer, on_drain_timeout, (uint64_t)(l->o.timeout * 1000), 0);
        return;
    }
    arm_tick(l);
}

static void start_schedule(lg *l)
{
    uv_timer_stop(&l->connect_timer);
    l->started = true;
    l->t0 = uv_hrtime();
    dispatch(l);
    arm_tick(l);
    if (uv_poll_start(&l->tick_poll, UV_READABLE, on_tick) != 0) {
        fprintf(stderr, "rete-loadgen: cannot watch the timerfd\n");
        stop(l);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    lg_conn *c = req->data;
    lg *l = c->lg;
    if (status < 0) {
        if (status == UV_ECANCELED)
            return;
        l->connect_errors++;
        if (!l->started && l->connect_errors > 4u * l->o.connections) {
            fprintf(stderr, "rete-loadgen: cannot connect: %s\n", uv_strerror(status));
            stop(l);
            return;
        }
        c->cstate = CS_CLOSING;
        c->connect_failed = true;
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
        return;
    }
    c->connect_failed = false;
    c->cstate = CS_READY;
    l->connected++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        lg_conn_fail(c);
        return;
    }
    l->o.codec->start(c);
    if (c->cstate != CS_READY)
        return;
    ready_push(c);
    if (!l->started && l->connected == l->o.connections)
        start_schedule(l);
    else
        dispatch(l);
}

static void conn_connect(lg_conn *c)
{
    lg *l = c->lg;
    c->cstate = CS_CONNECTING;
    c->inflight = 0;
    c->len = 0;
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&l->o.addr,
                            on_connect);
    if (rc != 0) {
        fprintf(stderr, "rete-loadgen: connect: %s\n", uv_strerror(rc));
        l->connect_errors++;
        c->cstate = CS_CLOSING;
        c->connect_failed = true;
        uv_close((uv_handle_t *)&c->tcp, l->started ? conn_closed : close_noop);
    }
}

static void on_connect_timeout(uv_timer_t *t)
{
    lg *l = t->data;
    fprintf(stderr, "rete-loadgen: only %u of %u connections up after 5 s\n", l->connected,
            l->o.connections);
    if (l->connected == 0) {
        stop(l);
        return;
    }
    start_schedule(l);
}

static void on_sigint(uv_signal_t *s, int signum)
{
    stop(s->data);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: rete-loadgen --url http://IP:PORT/PATH --rate R --duration S\n"
            "                    [--connections C] [--host HOST] [--timeout S]\n"
            "                    [--http2 [--streams N]]\n"
            "                    [--grpc /SERVICE/METHOD [--grpc-payload BYTES] [--streams N]]\n"
            "Open-loop constant-rate HTTP/1.1 (or h2c, or gRPC unary over h2c) load; latency\n"
            "from the intended send time. JSON result on stdout, latencies in microseconds.\n");
}

/* Split http://IP:PORT/PATH. Only numeric IPv4 addresses: no DNS in a bench. */
static bool parse_url(const char *url, lg_opts *o)
{
    static const char scheme[] = "http://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return false;
    const char *auth = url + sizeof(scheme) - 1;
    const char *slash = strchr(auth, '/');
    size_t alen = slash ? (size_t)(slash - auth) : strlen(auth);
    char *authority = rete_strndup(auth, alen);
    char *colon = strrchr(authority, ':');
    int port = 80;
    if (colon) {
        *colon = '\0';
        port = atoi(colon + 1);
    }
    bool ok = port > 0 && port < 65536 && uv_ip4_addr(authority, port, &o->addr) == 0;
    if (colon)
        *colon = ':';
    if (!o->host)
        o->host = authority;
    else
        free(authority);
    o->path = rete_strdup(slash ? slash : "/");
    return ok;
}

int main(int argc, char **argv)
{
    static lg l;
    l.o.connections = 16;
    l.o.streams = 100;
    l.o.timeout = 5.0;
    l.o.grpc_payload = 5;
    l.o.codec = &lg_h1_codec;
    const char *url = NULL, *grpc_method = NULL;
    bool bad_payload = false;
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},      {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'}, {"connections", required_argument, NULL, 'c'},
        {"host", required_argument, NULL, 'H'},     {"timeout", required_argument, NULL, 't'},
        {"http2", no_argument, NULL, '2'},          {"streams", required_argument, NULL, 's'},
        {"grpc", required_argument, NULL, 'g'},     {"grpc-payload", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    uint64_t n = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "u:r:d:c:H:t:2s:g:P:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'u':
            url = optarg;
            break;
        case 'r':
            l.o.rate = atof(optarg);
            break;
        case 'd':
            l.o.duration = atof(optarg);
            break;
        case 'c':
            l.o.connections = (unsigned)atoi(optarg);
            break;
        case 'H':
            l.o.host = rete_strdup(optarg);
            break;
        case 't':
            l.o.timeout = atof(optarg);
            break;
        case '2':
            l.o.codec = &lg_h2_codec;
            break;
        case 's':
            l.o.streams = (unsigned)atoi(optarg);
            break;
        case 'g':
            grpc_method = optarg;
            break;
        case 'P':
            bad_payload = !rete_view_to_u64(rete_view_cstr(optarg), &n) || n > LG_GRPC_MAX_PAYLOAD;
            l.o.grpc_payload = (size_t)n;
            break;
        case 'h':
        default:
            usage();
            return opt == 'h' ? 0 : 2;
        }
    }
    if (!url || l.o.rate <= 0 || l.o.duration <= 0 || l.o.connections == 0 ||
        l.o.connections > LG_MAX_CONNS || l.o.streams == 0 || bad_payload ||
        (grpc_method && grpc_method[0] != '/') || !parse_url(url, &l.o)) {
        usage();
        return 2;
    }
    if (grpc_method) {
        /* The method is the :path; the URL gives only the address. */
        l.o.codec = &lg_grpc_codec;
        free(l.o.path);
        l.o.path = rete_strdup(grpc_method);
    }
    l.total = (uint64_t)llround(l.o.rate * l.o.duration);
    if (l.total == 0)
        l.total = 1;
    rete_hdr_init(&l.hist, RETE_HDR_DEFAULT_HIGHEST);
    if (l.o.codec->prepare)
        l.o.codec->prepare(&l);

    /* Timer slack defaults to 50 us; the schedule wants better. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    l.tick_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (l.tick_fd < 0) {
        perror("rete-loadgen: timerfd_create");
        return 2;
    }

    l.loop = uv_default_loop();
    uv_poll_init(l.loop, &l.tick_poll, l.tick_fd);
    l.tick_poll.data = &l;
    uv_timer_init(l.loop, &l.connect_timer);
    l.connect_timer.data = &l;
    uv_timer_init(l.loop, &l.drain_timer);
    l.drain_timer.data = &l;
    uv_signal_init(l.loop, &l.sigint);
    l.sigint.data = &l;
    uv_signal_start(&l.sigint, on_sigint, SIGINT);

    l.conns = rete_calloc(l.o.connections, sizeof(*l.conns));
    for (unsigned i = 0; i < l.o.connections; i++) {
        l.conns[i].lg = &l;
        uv_timer_init(l.loop, &l.conns[i].retry);
        l.conns[i].retry.data = &l.conns[i];
        conn_connect(&l.conns[i]);
    }
    uv_timer_start(&l.connect_timer, on_connect_timeout, 5000, 0);

    uv_run(l.loop, UV_RUN_DEFAULT);
    if (!l.stopping)
        stop(&l);
    /* Connections still open at the end keep codec state (an HTTP/2
     * session): release it, the results are printed already. */
    for (unsigned i = 0; i < l.o.connections; i++)
        l.o.codec->reset(&l.conns[i]);
    int rc = l.started ? 0 : 2;
    uv_loop_close(l.loop);
    close(l.tick_fd);
    rete_free(&l.conns);
    rete_free(&l.request);
    rete_free(&l.o.host);
    rete_free(&l.o.path);
    return rc;
}
