/* rete-loadgen: open-loop, constant-rate HTTP/1.1 load generator.
 *
 * Request i is due at t0 + i / rate whatever happened to earlier requests
 * (no coordinated omission, as in wrk2 and Gil Tene's talk of that name): when
 * every connection is busy the request waits for one, and its latency still
 * counts from the time it was due, so a stall shows up in the percentiles
 * instead of silently slowing the sender down. Requests go over C keep-alive
 * connections, one request in flight per connection (no pipelining).
 *
 * Send times come from a timerfd armed at the absolute due time of the next
 * request, with the thread's timer slack set to 1 us, so the schedule keeps
 * microsecond precision instead of the millisecond granularity of uv_timer.
 *
 * Output: one JSON object on stdout. Latencies are microseconds. Exit status
 * 0 after a run (errors are reported in the JSON, not in the exit status), 2
 * on bad usage or when the target cannot be connected to at all. */
#include "h1_parse.h"
#include "hdr.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "alloc.h"

#define LG_MAX_CONNS 10000
#define LG_HEAD_MAX 65536
#define LG_MAX_HEADERS 64

enum lg_phase { PH_IDLE, PH_HEAD, PH_BODY_LENGTH, PH_BODY_CHUNKED };
enum lg_cstate { CS_CONNECTING, CS_READY, CS_CLOSING };

struct lg;

/* One keep-alive connection. The libuv handle is embedded; the connection is
 * reused for the next TCP connection only after the close callback ran. */
typedef struct lg_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    struct lg *lg;
    struct lg_conn *next_idle;
    enum lg_cstate cstate;
    enum lg_phase phase;
    bool busy;
    uint64_t req_index;          /* request in flight when busy */
    uint64_t body_left;
    int status;
    bool keep_alive;
    rete_h1_chunked chunked;
    size_t len;                  /* bytes held in buf */
    char buf[LG_HEAD_MAX];
} lg_conn;

typedef struct lg_opts {
    struct sockaddr_in addr;
    char *host;                  /* Host header value */
    char *path;
    unsigned connections;
    double rate;
    double duration;
    double timeout;              /* drain time after the last request is due, seconds */
} lg_opts;

typedef struct lg {
    uv_loop_t *loop;
    lg_opts o;
    char *request;
    size_t request_len;
    lg_conn *conns;
    lg_conn *idle;               /* stack of connected, idle connections */
    unsigned connected;
    uv_poll_t tick_poll;         /* watches tick_fd */
    int tick_fd;                 /* timerfd for the send schedule */
    uv_timer_t connect_timer;    /* gives up when the target does not accept */
    uv_timer_t drain_timer;      /* ends the run after the last due time + timeout */
    uv_signal_t sigint;
    bool started, stopping;
    uint64_t t0;                 /* ns, uv_hrtime clock (CLOCK_MONOTONIC) */
    uint64_t total;              /* requests in the run: rate * duration */
    uint64_t next_send;          /* index of the next request to write */
    uint64_t sent, ok, non2xx, errors, connect_errors;
    uint64_t last_done;          /* ns of the last completed response */
    rete_hdr hist;
} lg;

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
    uint64_t unanswered = l->total - done - l->errors;
    const rete_hdr *h = &l->hist;
    printf("{\"rate\": %.1f, \"duration\": %.3f, \"connections\": %u, \"scheduled\": %" PRIu64
           ", \"sent\": %" PRIu64 ", \"ok\": %" PRIu64 ", \"errors\": %" PRIu64
           ", \"non2xx\": %" PRIu64 ", \"unanswered\": %" PRIu64 ", \"connect_errors\": %" PRIu64
           ", \"p50\": %" PRIu64 ", \"p90\": %" PRIu64 ", \"p99\": %" PRIu64 ", \"p999\": %" PRIu64
           ", \"max\": %" PRIu64 ", \"min\": %" PRIu64 ", \"mean\": %.1f, \"achieved_rate\": %.1f",
           l->o.rate, l->o.duration, l->o.connections, l->total, l->sent, l->ok,
           l->errors + unanswered, l->non2xx, unanswered, l->connect_errors,
           rete_hdr_percentile(h, 50), rete_hdr_percentile(h, 90), rete_hdr_percentile(h, 99),
           rete_hdr_percentile(h, 99.9), h->total ? h->max : 0, h->total ? h->min : 0,
           rete_hdr_mean(h), (double)done / elapsed);
    /* The percentile curve, for plots: [percentile, microseconds] pairs. */
    static const double spectrum[] = {0,  10, 25,   50,    75,    90,     95,
                                      99, 99.5, 99.9, 99.95, 99.99, 99.999, 100};
    printf(", \"spectrum\": [");
    for (size_t i = 0; i < sizeof(spectrum) / sizeof(spectrum[0]); i++)
        printf("%s[%g, %" PRIu64 "]", i ? ", " : "", spectrum[i],
               rete_hdr_percentile(h, spectrum[i]));
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

static void conn_closed(uv_handle_t *h)
{
    lg_conn *c = h->data;
    lg *l = c->lg;
    if (l->stopping)
        return;
    conn_connect(c);
}

/* Drop the TCP connection; a request in flight is an error. The close
 * callback opens a fresh connection in the same slot. */
static void conn_fail(lg_conn *c)
{
    lg *l = c->lg;
    if (c->busy) {
        c->busy = false;
        l->errors++;
    }
    if (c->cstate == CS_READY)
        l->connected--;
    c->cstate = CS_CLOSING;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
    maybe_finish(l);
}

static void conn_idle(lg_conn *c)
{
    lg *l = c->lg;
    c->next_idle = l->idle;
    l->idle = c;
}

static void complete(lg_conn *c)
{
    lg *l = c->lg;
    uint64_t now = uv_hrtime();
    uint64_t due = due_time(l, c->req_index);
    rete_hdr_record(&l->hist, now > due ? (now - due) / 1000 : 0);
    if (c->status >= 200 && c->status < 300)
        l->ok++;
    else
        l->non2xx++;
    l->last_done = now;
    c->busy = false;
    c->phase = PH_IDLE;
    if (c->len != 0 || !c->keep_alive) {
        /* Bytes beyond the response, or the server closes: start afresh. */
        if (c->len != 0)
            l->errors++;
        conn_fail(c);
        return;
    }
    conn_idle(c);
    maybe_finish(l);
    if (!l->stopping)
        dispatch(l);
}

static void consume(lg_conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Advance the response state machine over the bytes held in c->buf. */
static void process(lg_conn *c)
{
    lg *l = c->lg;
    while (c->busy) {
        switch (c->phase) {
        case PH_HEAD: {
            rete_h1_header headers[LG_MAX_HEADERS];
            rete_h1_message msg = {.headers = headers};
            rete_h1_error err = {0};
            rete_h1_limits limits = {8192, LG_HEAD_MAX, LG_MAX_HEADERS};
            int n = rete_h1_parse_response(c->buf, c->len, &limits, RETE_VIEW_LIT("GET"), &msg,
                                           &err);
            if (n == RETE_EAGAIN) {
                if (c->len == sizeof(c->buf))
                    conn_fail(c);
                return;
            }
            if (n < 0) {
                fprintf(stderr, "rete-loadgen: bad response: %s\n", err.reason);
                conn_fail(c);
                return;
            }
            if (msg.status < 200) { /* 1xx: the final response follows */
                consume(c, (size_t)n);
                continue;
            }
            consume(c, (size_t)n);
            c->status = msg.status;
            c->keep_alive = (msg.flags & RETE_H1_F_KEEP_ALIVE) != 0;
            switch (msg.body) {
            case RETE_H1_BODY_NONE:
                complete(c);
                return;
            case RETE_H1_BODY_LENGTH:
                c->phase = PH_BODY_LENGTH;
                c->body_left = msg.content_length;
                break;
            case RETE_H1_BODY_CHUNKED:
                c->phase = PH_BODY_CHUNKED;
                rete_h1_chunked_init(&c->chunked);
                break;
            case RETE_H1_BODY_UNTIL_CLOSE:
            default:
                /* A load generator cannot reuse such a connection. */
                fprintf(stderr, "rete-loadgen: response without framing\n");
                conn_fail(c);
                return;
            }
            break;
        }
        case PH_BODY_LENGTH: {
            size_t take = c->len < c->body_left ? c->len : (size_t)c->body_left;
            consume(c, take);
            c->body_left -= take;
            if (c->body_left == 0) {
                complete(c);
                return;
            }
            return;
        }
        case PH_BODY_CHUNKED: {
            /* The decoder stops after each payload span: feed it until it
             * wants more input or reports the end. */
            int rc = RETE_OK;
            while (c->len > 0) {
                size_t used = 0, data_len = 0;
                const char *data = NULL;
                rc = rete_h1_chunked_decode(&c->chunked, c->buf, c->len, &used, &data, &data_len);
                if (rc < 0 || (used == 0 && rc == RETE_OK))
                    break;
                consume(c, used);
                if (rc == 1)
                    break;
            }
            if (rc < 0) {
                fprintf(stderr, "rete-loadgen: bad chunked body\n");
                rete_h1_chunked_free(&c->chunked);
                conn_fail(c);
                return;
            }
            if (rc == 1) {
                rete_h1_chunked_free(&c->chunked);
                complete(c);
            }
            return;
        }
        case PH_IDLE:
        default:
            return;
        }
    }
    (void)l;
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
        conn_fail(c);
        return;
    }
    if (nread == 0)
        return;
    if (!c->busy) {
        /* Unsolicited bytes (or the peer's 408 before closing). */
        c->lg->errors += c->lg->started ? 1 : 0;
        conn_fail(c);
        return;
    }
    c->len += (size_t)nread;
    process(c);
}

static void on_write(uv_write_t *req, int status)
{
    if (status < 0 && status != UV_ECANCELED)
        conn_fail(req->data);
}

static void send_request(lg_conn *c, uint64_t index)
{
    lg *l = c->lg;
    c->busy = true;
    c->req_index = index;
    c->phase = PH_HEAD;
    c->len = 0;
    l->sent++;
    uv_buf_t b = uv_buf_init(l->request, (unsigned)l->request_len);
    /* Small writes almost always complete at once and skip the write queue. */
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)l->request_len)
        return;
    if (n > 0) {
        b.base += n;
        b.len -= (size_t)n;
    } else if (n != UV_EAGAIN) {
        conn_fail(c);
        return;
    }
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0)
        conn_fail(c);
}

/* Hand every due request to an idle connection, oldest first. */
static void dispatch(lg *l)
{
    if (!l->started || l->stopping)
        return;
    uint64_t due = due_count(l, uv_hrtime());
    while (l->next_send < due && l->idle) {
        lg_conn *c = l->idle;
        l->idle = c->next_idle;
        send_request(c, l->next_send++);
    }
}

static void arm_tick(lg *l)
{
    uint64_t at = due_time(l, l->next_send > due_count(l, uv_hrtime()) ? l->next_send
                                                                      : due_count(l, uv_hrtime()));
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
        conn_fail(c);
        return;
    }
    c->cstate = CS_READY;
    l->connected++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_fail(c);
        return;
    }
    conn_idle(c);
    if (!l->started && l->connected == l->o.connections)
        start_schedule(l);
    else
        dispatch(l);
}

static void conn_connect(lg_conn *c)
{
    lg *l = c->lg;
    c->cstate = CS_CONNECTING;
    c->busy = false;
    c->phase = PH_IDLE;
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
            "Open-loop constant-rate HTTP/1.1 load; latency from the intended send time.\n"
            "JSON result on stdout, latencies in microseconds.\n");
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
    l.o.timeout = 5.0;
    const char *url = NULL;
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},      {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'}, {"connections", required_argument, NULL, 'c'},
        {"host", required_argument, NULL, 'H'},     {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "u:r:d:c:H:t:h", longopts, NULL)) != -1) {
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
        case 'h':
        default:
            usage();
            return opt == 'h' ? 0 : 2;
        }
    }
    if (!url || l.o.rate <= 0 || l.o.duration <= 0 || l.o.connections == 0 ||
        l.o.connections > LG_MAX_CONNS || !parse_url(url, &l.o)) {
        usage();
        return 2;
    }
    l.total = (uint64_t)llround(l.o.rate * l.o.duration);
    if (l.total == 0)
        l.total = 1;
    rete_hdr_init(&l.hist, RETE_HDR_DEFAULT_HIGHEST);

    size_t cap = strlen(l.o.path) + strlen(l.o.host) + 64;
    l.request = rete_malloc(cap);
    l.request_len = (size_t)snprintf(l.request, cap, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n",
                                     l.o.path, l.o.host);

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
        conn_connect(&l.conns[i]);
    }
    uv_timer_start(&l.connect_timer, on_connect_timeout, 5000, 0);

    uv_run(l.loop, UV_RUN_DEFAULT);
    if (!l.stopping)
        stop(&l);
    int rc = l.started ? 0 : 2;
    uv_loop_close(l.loop);
    close(l.tick_fd);
    rete_free(&l.conns);
    rete_free(&l.request);
    rete_free(&l.o.host);
    rete_free(&l.o.path);
    return rc;
}
