/* rete-client: steady HTTP/1.1 traffic for the demo and the system tests.
 *
 * C keep-alive connections share one request (built once at start-up, written
 * from the same buffer every time). An open-loop schedule issues request i at
 * start + i/rate; a connection that is busy delays its share, it never drops
 * it. Every second one line goes to stdout with the running counts and the
 * last second's latency percentiles; a final "done" line sums up the run.
 *
 * Responses are parsed with the project's h1 parser and their bodies
 * discarded as they arrive, so memory stays at one 64 KiB buffer per
 * connection whatever the server sends. */
#include "alloc.h"
#include "h1_parse.h"
#include "log.h"
#include "result.h"
#include "view.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#define CLI_RBUF_CAP 65536u
#define CLI_MAX_HEADERS 32u
#define CLI_MAX_CONC 10000u
#define CLI_BACKOFF_MS 100u /* after a failed connection, so a refused port is not a busy loop */
#define CLI_HIST_SUB 16u    /* histogram: 16 linear buckets per power of two (~6% error) */
#define CLI_HIST_N (CLI_HIST_SUB * 48u)

/* ---------------------------------------------------------------- stats */

typedef struct hist {
    uint64_t n;
    uint64_t b[CLI_HIST_N];
} hist;

static size_t hist_index(uint64_t us)
{
    if (us < CLI_HIST_SUB)
        return (size_t)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us); /* >= 4 */
    size_t idx = (size_t)(e - 3) * CLI_HIST_SUB + (size_t)((us >> (e - 4)) & (CLI_HIST_SUB - 1));
    return idx < CLI_HIST_N ? idx : CLI_HIST_N - 1;
}

/* Upper bound of a bucket, in microseconds. */
static uint64_t hist_value(size_t idx)
{
    if (idx < CLI_HIST_SUB)
        return idx;
    unsigned e = (unsigned)(idx / CLI_HIST_SUB) + 3;
    uint64_t sub = idx % CLI_HIST_SUB;
    return ((CLI_HIST_SUB + sub + 1) << (e - 4)) - 1;
}

static void hist_add(hist *h, uint64_t us)
{
    h->b[hist_index(us)]++;
    h->n++;
}

static double hist_pct_ms(const hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(p * (double)h->n);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < CLI_HIST_N; i++) {
        seen += h->b[i];
        if (seen >= want)
            return (double)hist_value(i) / 1000.0;
    }
    return (double)hist_value(CLI_HIST_N - 1) / 1000.0;
}

static struct {
    uint64_t ok, err, unexpected;
    uint64_t codes[600];
    hist total, interval;
} st;

/* ---------------------------------------------------------------- config */

static struct {
    char host[256]; /* from the URL, for DNS and the Host field */
    char authority[300];
    unsigned port;
    char *target; /* request-target to send */
    const char *proxy;
    const char *method;
    bool absolute_form, json;
    double rate;       /* requests per second; 0 = as fast as the connections go */
    uint64_t count;    /* 0 = unbounded */
    double duration_s; /* 0 = unbounded */
    unsigned concurrency;
    uint64_t timeout_ms;
    int expect_status; /* 0 = any */
    const char *headers[CLI_MAX_HEADERS];
    size_t n_headers;
} cfg = {
    .method = "GET",
    .rate = 10,
    .concurrency = 1,
    .timeout_ms = 10000,
};

/* ---------------------------------------------------------------- state */

enum cc_state { CC_DOWN, CC_CONNECTING, CC_IDLE, CC_BUSY, CC_CLOSING, CC_BACKOFF };

typedef struct cconn {
    uv_tcp_t tcp; /* re-initialised for every new connection, after its close callback */
    uv_connect_t connect;
    uv_write_t write;
    uv_timer_t timer; /* request timeout, or reconnect backoff */
    enum cc_state state;
    bool tcp_open; /* between uv_tcp_init and the close callback */
    bool head_done, in_request;
    uint64_t started_us;
    rete_h1_message msg;
    rete_h1_chunked chunked;
    uint64_t body_left;
    size_t rlen;
    char rbuf[CLI_RBUF_CAP];
} cconn;

static uv_loop_t *loop;
static cconn *conns;
static uv_timer_t tick_timer, sched_timer;
static uv_signal_t sig_int, sig_term;
static struct sockaddr_storage dest;
static bool have_dest, stopping, finished;
static uint64_t issued, inflight, start_ms, seconds;
static char *request;
static size_t request_len;
static rete_h1_header resp_fields[100];

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000u;
}

static void dispatch(void);
static void dispatch_round(void);
static void finish(void);
static void cc_send(cconn *cc);

/* ---------------------------------------------------------------- connections */

static void cc_on_close(uv_handle_t *h)
{
    cconn *cc = h->data;
    cc->tcp_open = false;
    if (cc->state == CC_CLOSING)
        cc->state = CC_DOWN;
    dispatch();
}

static void cc_on_backoff(uv_timer_t *t)
{
    cconn *cc = t->data;
    cc->state = CC_DOWN;
    dispatch();
}

/* Close the connection; after a failure, keep it out of rotation for a
 * moment before it reconnects. */
static void cc_close(cconn *cc, bool failed)
{
    if (finished || !cc->tcp_open || cc->state == CC_CLOSING || cc->state == CC_BACKOFF)
        return;
    uv_timer_stop(&cc->timer);
    rete_h1_chunked_free(&cc->chunked);
    cc->rlen = 0;
    cc->head_done = false;
    cc->state = CC_CLOSING;
    if (failed && !stopping) {
        cc->state = CC_BACKOFF;
        uv_timer_start(&cc->timer, cc_on_backoff, CLI_BACKOFF_MS, 0);
    }
    uv_close((uv_handle_t *)&cc->tcp, cc_on_close);
}

/* A request ended: success (status > 0) or failure (status 0). */
static void cc_done(cconn *cc, int status, bool reusable)
{
    if (finished || !cc->in_request)
        return;
    uint64_t us = now_us() - cc->started_us;
    cc->in_request = false;
    inflight--;
    if (status > 0) {
        st.ok++;
        st.codes[status]++;
        hist_add(&st.total, us);
        hist_add(&st.interval, us);
        if (cfg.expect_status && status != cfg.expect_status)
            st.unexpected++;
    } else {
        st.err++;
    }
    if (status > 0 && reusable) {
        uv_timer_stop(&cc->timer);
        rete_h1_chunked_free(&cc->chunked);
        cc->head_done = false;
        cc->state = CC_IDLE;
        if (cc->rlen) {
            /* Bytes after a complete response with none requested. */
            cc_close(cc, false);
        }
    } else {
        cc_close(cc, status == 0);
    }
    dispatch();
}

static void cc_on_timeout(uv_timer_t *t)
{
    cconn *cc = t->data;
    if (cc->in_request)
        cc_done(cc, 0, false);
}

/* Consume the response in cc->rbuf. Returns after the response completes,
 * when more bytes are needed, or on a protocol error (which fails the request). */
static void cc_parse(cconn *cc, bool eof)
{
    while (cc->in_request) {
        if (!cc->head_done) {
            rete_h1_limits limits = RETE_H1_LIMITS_DEFAULT;
            cc->msg = (rete_h1_message){.headers = resp_fields};
            rete_h1_error err;
            int n = rete_h1_parse_response(cc->rbuf, cc->rlen, &limits, rete_view_cstr(cfg.method),
                                           &cc->msg, &err);
            if (n == RETE_EAGAIN) {
                if (eof || cc->rlen == sizeof(cc->rbuf))
                    cc_done(cc, 0, false);
                return;
            }
            if (n < 0) {
                fprintf(stderr, "rete-client: bad response: %s\n", err.reason ? err.reason : "?");
                cc_done(cc, 0, false);
                return;
            }
            memmove(cc->rbuf, cc->rbuf + n, cc->rlen - (size_t)n);
            cc->rlen -= (size_t)n;
            if (cc->msg.status < 200) /* interim (RFC 9110 §15.2): the final one follows */
                continue;
            cc->head_done = true;
            cc->body_left = cc->msg.content_length;
            if (cc->msg.body == RETE_H1_BODY_CHUNKED)
                rete_h1_chunked_init(&cc->chunked);
        }
        int status = cc->msg.status;
        if (status < 100 || status > 599)
            status = 599;
        bool keep = (cc->msg.flags & RETE_H1_F_KEEP_ALIVE) != 0;
        switch (cc->msg.body) {
        case RETE_H1_BODY_NONE:
            cc_done(cc, status, keep);
            return;
        case RETE_H1_BODY_LENGTH: {
            size_t k = cc->rlen < cc->body_left ? cc->rlen : (size_t)cc->body_left;
            memmove(cc->rbuf, cc->rbuf + k, cc->rlen - k);
            cc->rlen -= k;
            cc->body_left -= k;
            if (cc->body_left == 0)
                cc_done(cc, status, keep);
            else if (eof)
                cc_done(cc, 0, false);
            return;
        }
        case RETE_H1_BODY_CHUNKED: {
            size_t used = 0, dlen = 0;
            const char *data;
            int rc = rete_h1_chunked_decode(&cc->chunked, cc->rbuf, cc->rlen, &used, &data, &dlen);
            if (rc < 0) {
                cc_done(cc, 0, false);
                return;
            }
            memmove(cc->rbuf, cc->rbuf + used, cc->rlen - used);
            cc->rlen -= used;
            if (rc == 1) {
                cc_done(cc, status, keep);
                return;
            }
            if (used == 0) {
                if (eof)
                    cc_done(cc, 0, false);
                return;
            }
            break; /* one payload span per call: go round again */
        }
        case RETE_H1_BODY_UNTIL_CLOSE:
            cc->rlen = 0;
            if (eof)
                cc_done(cc, status, false);
            return;
        default:
            cc_done(cc, 0, false);
            return;
        }
    }
}

static void cc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    cconn *cc = h->data;
    buf->base = cc->rbuf + cc->rlen;
    buf->len = sizeof(cc->rbuf) - cc->rlen;
}

static void cc_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    cconn *cc = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (cc->in_request)
            cc_parse(cc, true);
        if (cc->in_request)
            cc_done(cc, 0, false);
        else
            cc_close(cc, nread != UV_EOF);
        return;
    }
    cc->rlen += (size_t)nread;
    if (!cc->in_request) {
        cc_close(cc, true); /* unsolicited bytes */
        return;
    }
    cc_parse(cc, false);
}

static void cc_on_write(uv_write_t *w, int status)
{
    cconn *cc = w->data;
    if (status < 0 && cc->in_request)
        cc_done(cc, 0, false);
}

static void cc_send(cconn *cc)
{
    cc->state = CC_BUSY;
    cc->rlen = 0;
    cc->head_done = false;
    uv_buf_t b = uv_buf_init(request, (unsigned)request_len);
    cc->write.data = cc;
    if (uv_write(&cc->write, (uv_stream_t *)&cc->tcp, &b, 1, cc_on_write) < 0) {
        cc_done(cc, 0, false);
        return;
    }
    uv_timer_start(&cc->timer, cc_on_timeout, cfg.timeout_ms, 0);
}

static void cc_on_connect(uv_connect_t *req, int status)
{
    cconn *cc = req->data;
    if (cc->state != CC_CONNECTING)
        return; /* closed meanwhile */
    if (status < 0) {
        if (!cfg.json)
            fprintf(stderr, "rete-client: connect: %s\n", uv_strerror(status));
        cc_done(cc, 0, false);
        return;
    }
    uv_tcp_nodelay(&cc->tcp, 1);
    if (uv_read_start((uv_stream_t *)&cc->tcp, cc_alloc, cc_on_read) < 0) {
        cc_done(cc, 0, false);
        return;
    }
    cc_send(cc);
}

/* Start one request on cc, connecting first when needed. */
static void cc_start(cconn *cc)
{
    cc->in_request = true;
    cc->started_us = now_us();
    inflight++;
    issued++;
    if (cc->state == CC_IDLE) {
        cc_send(cc);
        return;
    }
    uv_tcp_init(loop, &cc->tcp);
    cc->tcp_open = true;
    cc->tcp.data = cc;
    cc->connect.data = cc;
    cc->state = CC_CONNECTING;
    uv_timer_start(&cc->timer, cc_on_timeout, cfg.timeout_ms, 0);
    if (uv_tcp_connect(&cc->connect, &cc->tcp, (struct sockaddr *)&dest, cc_on_connect) < 0)
        cc_done(cc, 0, false);
}

/* ---------------------------------------------------------------- schedule */

static bool issuing_over(void)
{
    if (stopping)
        return true;
    if (cfg.count && issued >= cfg.count)
        return true;
    if (cfg.duration_s > 0 && (double)(uv_now(loop) - start_ms) >= cfg.duration_s * 1000.0)
        return true;
    return false;
}

static void on_sched(uv_timer_t *t)
{
    dispatch();
}

/* Issue every request that is due and has a free connection; arm the
 * schedule timer for the next one. */
static void dispatch(void)
{
    /* A request can fail synchronously and call back in here: the outer
     * frame then runs one more round instead of recursing. */
    static bool running, again;
    if (running) {
        again = true;
        return;
    }
    running = true;
    do {
        again = false;
        dispatch_round();
    } while (again && !finished);
    running = false;
}

static void dispatch_round(void)
{
    if (finished || !have_dest)
        return;
    while (!issuing_over() && !finished) {
        if (cfg.rate > 0) {
            uint64_t due = start_ms + (uint64_t)((double)issued * 1000.0 / cfg.rate);
            uint64_t now = uv_now(loop);
            if (due > now) {
                uv_timer_start(&sched_timer, on_sched, due - now, 0);
                return;
            }
        }
        cconn *free_cc = NULL;
        for (unsigned i = 0; i < cfg.concurrency && !free_cc; i++)
            if (conns[i].state == CC_IDLE)
                free_cc = &conns[i];
        for (unsigned i = 0; i < cfg.concurrency && !free_cc; i++)
            if (conns[i].state == CC_DOWN && !conns[i].tcp_open)
                free_cc = &conns[i];
        if (!free_cc)
            return; /* a completion calls dispatch again */
        cc_start(free_cc);
    }
    if (inflight == 0)
        finish();
}

/* ---------------------------------------------------------------- output */

static void print_line(bool final)
{
    hist *h = final ? &st.total : &st.interval;
    double p50 = hist_pct_ms(h, 0.50), p99 = hist_pct_ms(h, 0.99);
    if (cfg.json) {
        json_t *o = json_object();
        json_t *codes = json_object();
        for (int i = 0; i < 600; i++)
            if (st.codes[i]) {
                char k[8];
                snprintf(k, sizeof(k), "%d", i);
                json_object_set_new(codes, k, json_integer((json_int_t)st.codes[i]));
            }
        json_object_set_new(o, "t", json_integer((json_int_t)seconds));
        json_object_set_new(o, "ok", json_integer((json_int_t)st.ok));
        json_object_set_new(o, "err", json_integer((json_int_t)st.err));
        json_object_set_new(o, "codes", codes);
        json_object_set_new(o, "p50_ms", json_real(p50));
        json_object_set_new(o, "p99_ms", json_real(p99));
        if (cfg.expect_status)
            json_object_set_new(o, "unexpected", json_integer((json_int_t)st.unexpected));
        if (final)
            json_object_set_new(o, "done", json_true());
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
        json_decref(o);
        if (!s)
            abort();
        printf("%s\n", s);
        free(s);
    } else {
        char codes[1024];
        size_t n = 0;
        codes[0] = '\0';
        for (int i = 0; i < 600; i++)
            if (st.codes[i] && n < sizeof(codes) - 32) {
                int w = snprintf(codes + n, sizeof(codes) - n, "%s%d:%" PRIu64, n ? "," : "", i,
                                 st.codes[i]);
                if (w > 0)
                    n += (size_t)w;
            }
        printf("%sok=%" PRIu64 " err=%" PRIu64 " codes={%s} p50=%.2fms p99=%.2fms",
               final ? "done " : "", st.ok, st.err, codes, p50, p99);
        if (cfg.expect_status)
            printf(" unexpected=%" PRIu64, st.unexpected);
        printf("\n");
    }
    fflush(stdout);
}

static void on_tick(uv_timer_t *t)
{
    seconds++;
    print_line(false);
    memset(&st.interval, 0, sizeof(st.interval));
    dispatch(); /* the --duration deadline is checked here too */
}

static void on_closed_noop(uv_handle_t *h) {}

static void finish(void)
{
    if (finished)
        return;
    finished = true;
    print_line(true);
    uv_close((uv_handle_t *)&tick_timer, on_closed_noop);
    uv_close((uv_handle_t *)&sched_timer, on_closed_noop);
    uv_close((uv_handle_t *)&sig_int, on_closed_noop);
    uv_close((uv_handle_t *)&sig_term, on_closed_noop);
    for (unsigned i = 0; i < cfg.concurrency; i++) {
        cconn *cc = &conns[i];
        uv_close((uv_handle_t *)&cc->timer, on_closed_noop);
        if (cc->tcp_open && cc->state != CC_CLOSING && cc->state != CC_BACKOFF)
            uv_close((uv_handle_t *)&cc->tcp, cc_on_close);
        cc->state = CC_CLOSING; /* a cancelled connect or write then does nothing */
        rete_h1_chunked_free(&cc->chunked);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    stopping = true;
    /* In-flight requests are abandoned and counted as errors. */
    for (unsigned i = 0; i < cfg.concurrency; i++)
        if (conns[i].in_request) {
            conns[i].in_request = false;
            inflight--;
            st.err++;
        }
    finish();
}

/* ---------------------------------------------------------------- start-up */

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    if (status < 0 || !res) {
        fprintf(stderr, "rete-client: resolve %s: %s\n", cfg.host, uv_strerror(status));
        st.err++;
        stopping = true;
        finish();
    } else {
        memcpy(&dest, res->ai_addr, res->ai_addrlen);
        have_dest = true;
        start_ms = uv_now(loop);
        dispatch();
    }
    uv_freeaddrinfo(res);
}

/* http://HOST[:PORT][/path] -> cfg.host, cfg.port, cfg.authority, origin-form path. */
static bool parse_url(const char *url, char **path_out)
{
    rete_view u = rete_view_cstr(url);
    if (!rete_view_has_prefix(u, RETE_VIEW_LIT("http://")))
        return false;
    u = rete_view_sub(u, 7, u.len);
    ptrdiff_t slash = rete_view_find(u, '/');
    rete_view auth = slash < 0 ? u : rete_view_sub(u, 0, (size_t)slash);
    rete_view path = slash < 0 ? RETE_VIEW_LIT("/") : rete_view_sub(u, (size_t)slash, u.len);
    if (auth.len == 0 || auth.len >= sizeof(cfg.host) || rete_view_find(auth, '@') >= 0)
        return false;
    rete_view host = auth;
    cfg.port = 80;
    ptrdiff_t colon = -1;
    if (auth.p[0] == '[') {
        ptrdiff_t close = rete_view_find(auth, ']');
        if (close < 0)
            return false;
        host = rete_view_sub(auth, 1, (size_t)close - 1);
        if ((size_t)close + 1 < auth.len) {
            if (auth.p[close + 1] != ':')
                return false;
            colon = close + 1;
        }
    } else {
        colon = rete_view_find(auth, ':');
        if (colon >= 0)
            host = rete_view_sub(auth, 0, (size_t)colon);
    }
    if (colon >= 0) {
        uint64_t port;
        if (!rete_view_to_u64(rete_view_sub(auth, (size_t)colon + 1, auth.len), &port) ||
            port == 0 || port > 65535)
            return false;
        cfg.port = (unsigned)port;
    }
    if (host.len == 0)
        return false;
    for (size_t i = 0; i < u.len; i++)
        if ((unsigned char)u.p[i] <= 0x20 || u.p[i] == 0x7f)
            return false; /* no spaces or controls in the request line */
    memcpy(cfg.host, host.p, host.len);
    cfg.host[host.len] = '\0';
    memcpy(cfg.authority, auth.p, auth.len);
    cfg.authority[auth.len] = '\0';
    *path_out = rete_strndup(path.p, path.len);
    return true;
}

static void build_request(const char *path)
{
    bool has_host = false;
    size_t cap = 512 + strlen(path) + 2 * sizeof(cfg.authority);
    for (size_t i = 0; i < cfg.n_headers; i++) {
        cap += strlen(cfg.headers[i]) + 2;
        if (strncasecmp(cfg.headers[i], "host:", 5) == 0)
            has_host = true;
    }
    request = rete_malloc(cap);
    int n =
        snprintf(request, cap, "%s %s%s%s HTTP/1.1\r\n", cfg.method,
                 cfg.absolute_form ? "http://" : "", cfg.absolute_form ? cfg.authority : "", path);
    if (!has_host)
        n += snprintf(request + n, cap - (size_t)n, "Host: %s\r\n", cfg.authority);
    n += snprintf(request + n, cap - (size_t)n, "User-Agent: rete-client/%s\r\n", RETE_VERSION);
    for (size_t i = 0; i < cfg.n_headers; i++)
        n += snprintf(request + n, cap - (size_t)n, "%s\r\n", cfg.headers[i]);
    n += snprintf(request + n, cap - (size_t)n, "\r\n");
    request_len = (size_t)n;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: rete-client --url http://HOST[:PORT]/path [options]\n"
               "  --url URL               target (http only)\n"
               "  --proxy IP:PORT         connect here instead of HOST:PORT; Host stays the URL's\n"
               "  --absolute-form         send the absolute URL as request-target (proxy style)\n"
               "  --rate N[/s]            requests per second, 0 = unpaced (default 10)\n"
               "  --count N               stop after N requests\n"
               "  --duration S            stop issuing after S seconds\n"
               "  --concurrency C         keep-alive connections (default 1)\n"
               "  --header 'Name: Value'  extra request header (repeatable)\n"
               "  --method M              request method (default GET; no body is sent)\n"
               "  --timeout MS            per-request timeout (default 10000)\n"
               "  --expect-status CODE    exit non-zero unless every response has this status\n"
               "  --json                  print JSON lines instead of text\n"
               "exit 0 when every request got a response (and the expected status)\n");
}

static bool valid_header_arg(const char *h)
{
    const char *colon = strchr(h, ':');
    if (!colon || colon == h)
        return false;
    for (const char *p = h; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t')
            return false;
    for (const char *p = h; p < colon; p++)
        if (*p == ' ' || *p == '\t')
            return false;
    return true;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"proxy", required_argument, NULL, 'p'},
        {"absolute-form", no_argument, NULL, 'A'},
        {"rate", required_argument, NULL, 'r'},
        {"count", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"concurrency", required_argument, NULL, 'c'},
        {"header", required_argument, NULL, 'H'},
        {"method", required_argument, NULL, 'm'},
        {"timeout", required_argument, NULL, 't'},
        {"expect-status", required_argument, NULL, 'e'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL;
    int opt;
    uint64_t u;
    char *end;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'u':
            url = optarg;
            break;
        case 'p':
            cfg.proxy = optarg;
            break;
        case 'A':
            cfg.absolute_form = true;
            break;
        case 'r':
            errno = 0;
            cfg.rate = strtod(optarg, &end);
            if (errno || end == optarg || (*end && strcmp(end, "/s") != 0) || !(cfg.rate >= 0) ||
                cfg.rate > 1e6) {
                fprintf(stderr, "rete-client: bad --rate %s\n", optarg);
                return 2;
            }
            break;
        case 'n':
            if (!rete_view_to_u64(rete_view_cstr(optarg), &cfg.count) || cfg.count == 0) {
                fprintf(stderr, "rete-client: bad --count %s\n", optarg);
                return 2;
            }
            break;
        case 'd':
            errno = 0;
            cfg.duration_s = strtod(optarg, &end);
            if (errno || *end || end == optarg || !(cfg.duration_s > 0) || cfg.duration_s > 1e7) {
                fprintf(stderr, "rete-client: bad --duration %s\n", optarg);
                return 2;
            }
            break;
        case 'c':
            if (!rete_view_to_u64(rete_view_cstr(optarg), &u) || u == 0 || u > CLI_MAX_CONC) {
                fprintf(stderr, "rete-client: --concurrency must be 1..%u\n", CLI_MAX_CONC);
                return 2;
            }
            cfg.concurrency = (unsigned)u;
            break;
        case 'H':
            if (cfg.n_headers >= CLI_MAX_HEADERS || !valid_header_arg(optarg)) {
                fprintf(stderr, "rete-client: bad --header '%s' (Name: Value, at most %u)\n",
                        optarg, CLI_MAX_HEADERS);
                return 2;
            }
            cfg.headers[cfg.n_headers++] = optarg;
            break;
        case 'm':
            for (const char *p = optarg; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || *p == '-')) {
                    fprintf(stderr, "rete-client: bad --method\n");
                    return 2;
                }
            if (!*optarg)
                return 2;
            cfg.method = optarg;
            break;
        case 't':
            if (!rete_view_to_u64(rete_view_cstr(optarg), &cfg.timeout_ms) || cfg.timeout_ms == 0 ||
                cfg.timeout_ms > 3600000) {
                fprintf(stderr, "rete-client: bad --timeout %s\n", optarg);
                return 2;
            }
            break;
        case 'e':
            if (!rete_view_to_u64(rete_view_cstr(optarg), &u) || u < 100 || u > 599) {
                fprintf(stderr, "rete-client: bad --expect-status %s\n", optarg);
                return 2;
            }
            cfg.expect_status = (int)u;
            break;
        case 'j':
            cfg.json = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    char *path = NULL;
    if (optind != argc || !url) {
        usage(stderr);
        return 2;
    }
    if (!parse_url(url, &path)) {
        fprintf(stderr, "rete-client: bad --url %s (want http://HOST[:PORT]/path)\n", url);
        return 2;
    }
    build_request(path);
    free(path);

    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    conns = rete_calloc(cfg.concurrency, sizeof(*conns));
    for (unsigned i = 0; i < cfg.concurrency; i++) {
        uv_timer_init(loop, &conns[i].timer);
        conns[i].timer.data = &conns[i];
        conns[i].tcp.data = &conns[i];
    }
    uv_timer_init(loop, &tick_timer);
    uv_timer_init(loop, &sched_timer);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_timer_start(&tick_timer, on_tick, 1000, 1000);

    uv_getaddrinfo_t gai;
    if (cfg.proxy) {
        /* A literal address: no resolver needed. */
        char host[INET6_ADDRSTRLEN];
        const char *colon = strrchr(cfg.proxy, ':');
        uint64_t port;
        size_t hl = colon ? (size_t)(colon - cfg.proxy) : 0;
        const char *h = cfg.proxy;
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
            h++;
            hl -= 2;
        }
        if (!colon || hl == 0 || hl >= sizeof(host) ||
            !rete_view_to_u64(rete_view_cstr(colon + 1), &port) || port == 0 || port > 65535) {
            fprintf(stderr, "rete-client: bad --proxy %s (want IP:PORT)\n", cfg.proxy);
            return 2;
        }
        memcpy(host, h, hl);
        host[hl] = '\0';
        if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&dest) != 0 &&
            uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&dest) != 0) {
            fprintf(stderr, "rete-client: bad --proxy %s (want IP:PORT)\n", cfg.proxy);
            return 2;
        }
        have_dest = true;
        start_ms = uv_now(loop);
        dispatch();
    } else {
        /* Resolution runs on libuv's thread pool, off the loop thread. */
        char port[8];
        snprintf(port, sizeof(port), "%u", cfg.port);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        int rc = uv_getaddrinfo(loop, &gai, on_resolved, cfg.host, port, &hints);
        if (rc < 0) {
            fprintf(stderr, "rete-client: resolve %s: %s\n", cfg.host, uv_strerror(rc));
            return 1;
        }
    }

    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    free(conns);
    free(request);
    if (st.err || st.unexpected || (cfg.count && st.ok < cfg.count))
        return 1;
    return 0;
}
