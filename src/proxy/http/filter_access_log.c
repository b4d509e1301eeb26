/* The access log: one JSON line per exchange (rete-proxy --access-log),
 * formatted on the worker, written by one writer thread.
 *
 * Every value an app or a client chose goes through the escaper
 * (json_out.h): a quote in a path or a request id can never add or
 * override a key, and each such field has a length cap so the worst case
 * (every byte escaped to 6) fits the line. No header value is ever logged
 * but the request id and the trace id (never Authorization, Cookie or a
 * key).
 *
 * Off the request path: a worker appends its line to one shared buffer
 * under a mutex (a memcpy; no syscall, no fflush) and the writer thread
 * writes what has gathered every 50 ms or when the buffer is half full, in
 * one write(2). The buffer is bounded (ACCESS_LOG_BUFFER, twice: the one
 * being filled and the one being written); a line that finds it full is
 * dropped and counted (rete_proxy_access_log_dropped_total), never waited
 * for: a slow disk or a stalled stdout reader costs log lines, not latency.
 * At exit the writer writes everything left and stops. */
#include "filter.h"
#include "config.h"
#include "json_out.h"
#include "log.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ACCESS_LOG_BUFFER (1u << 20)
#define ACCESS_LOG_FLUSH_MS 50

/* ---- fields ---- */

typedef void (*field_fn)(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end);

static void str(rete_jbuf *b, const char *key, const char *s)
{
    rete_jbuf_str(b, key, s, strlen(s), 0);
}

static void f_proxy(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    char who[256];
    snprintf(who, sizeof(who), "%s/%s", ex->gen->cfg->proxy.ns, ex->gen->cfg->proxy.name);
    str(b, key, who);
}

static void f_listener(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    str(b, key, ex->listener ? ex->listener : "-");
}

/* When the exchange started, wall clock, RFC 3339 in UTC with milliseconds. */
static void f_start_time(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t wall_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
    uint64_t ago = end->now_ns > ex->start_ns ? end->now_ns - ex->start_ns : 0;
    uint64_t start = wall_ns > ago ? wall_ns - ago : 0;
    time_t sec = (time_t)(start / 1000000000ull);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char t[80];
    snprintf(t, sizeof(t), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(start / 1000000ull % 1000));
    str(b, key, t);
}

static void f_method(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    rete_jbuf_str(b, key, ex->req.method.p, ex->req.method.len, 32);
}

static void f_authority(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    rete_jbuf_str(b, key, ex->req.authority.p, ex->req.authority.len, 256);
}

static void f_path(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    rete_jbuf_str(b, key, ex->req.path.p, ex->req.path.len, 512);
}

/* "tcp" for a tunnel's bytes, else the request's: "grpc" or "http". */
static void f_protocol(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    rete_view ct = rete_msg_get(&ex->req, RETE_VIEW_LIT("content-type"));
    str(b, key, rete_tunnel_is_raw(ex) ? "tcp"
                : rete_view_has_prefix(ct, RETE_VIEW_LIT("application/grpc")) ? "grpc"
                                                                                : "http");
}

static void f_status(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)ex;
    rete_jbuf_int(b, key, end->status);
}

static void f_flags(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    str(b, key, rete_ex_error_flag(ex->error));
}

static void f_duration(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)ex;
    rete_jbuf_num(b, key, (double)end->duration_ns / 1e6);
}

static void f_bytes_in(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    rete_jbuf_int(b, key, (long long)ex->req_bytes);
}

static void f_bytes_out(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    rete_jbuf_int(b, key, (long long)ex->resp_bytes);
}

static const rete_workload *endpoint(const rete_exchange *ex)
{
    return ex->service && ex->endpoint >= 0 ? ex->service->endpoints[ex->endpoint] : NULL;
}

static void f_upstream(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    str(b, key, ex->service ? ex->service->name : "-");
}

/* The endpoint the balancer chose, address:port ("-" when none). */
static void f_upstream_host(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    const rete_workload *wl = endpoint(ex);
    char hp[80] = "-";
    if (wl)
        snprintf(hp, sizeof(hp), "%s:%u", wl->address, ex->target_port);
    str(b, key, hp);
}

static void f_route(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    const rete_http_route *r = ex->route ? ex->route->route : NULL;
    char name[300] = "-";
    if (r)
        snprintf(name, sizeof(name), "%s/%s", r->ns, r->name);
    str(b, key, name);
}

/* Both identities: who called (inbound: the peer's certificate; outbound:
 * this proxy) and who answered (outbound: the endpoint's; inbound: this
 * proxy). "-" for a side without mTLS. */
static void f_source_principal(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    const char *id = ex->inbound ? ex->peer_id : ex->gen->cfg->proxy.spiffe_id;
    str(b, key, id && *id ? id : "-");
}

static void f_destination_principal(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    const rete_workload *wl = endpoint(ex);
    const char *id = ex->inbound ? ex->gen->cfg->proxy.spiffe_id
                                 : wl && wl->in_mesh && wl->spiffe_id ? wl->spiffe_id : NULL;
    str(b, key, id && *id ? id : "-");
}

static void f_peer(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    str(b, key, ex->peer_id[0] ? ex->peer_id : ex->downstream_addr);
}

static void f_request_id(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    rete_view rid = rete_msg_get(&ex->req, RETE_VIEW_LIT("x-request-id"));
    rete_jbuf_str(b, key, rid.p, rid.len, 128);
}

/* The W3C trace id of the request's traceparent ("00-<32 hex>-..."), else
 * B3's x-b3-traceid; "" when neither is there. */
static void f_trace_id(rete_jbuf *b, const char *key, rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    rete_view tp = rete_msg_get(&ex->req, RETE_VIEW_LIT("traceparent"));
    rete_view id = RETE_VIEW_NULL;
    if (tp.len >= 55 && tp.p[2] == '-')
        id = rete_view_make(tp.p + 3, 32);
    else
        id = rete_msg_get(&ex->req, RETE_VIEW_LIT("x-b3-traceid"));
    rete_jbuf_str(b, key, id.p, id.len, 32);
}

static const struct {
    const char *name;
    field_fn fn;
} fields[] = {
    {"proxy", f_proxy},
    {"listener", f_listener},
    {"start_time", f_start_time},
    {"method", f_method},
    {"authority", f_authority},
    {"path", f_path},
    {"protocol", f_protocol},
    {"status", f_status},
    {"flags", f_flags},
    {"duration_ms", f_duration},
    {"bytes_in", f_bytes_in},
    {"bytes_out", f_bytes_out},
    {"upstream", f_upstream},
    {"upstream_host", f_upstream_host},
    {"route", f_route},
    {"source_principal", f_source_principal},
    {"destination_principal", f_destination_principal},
    {"peer", f_peer},
    {"request_id", f_request_id},
    {"trace_id", f_trace_id},
};
#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

/* ---- the writer ---- */

static struct {
    bool on;
    int fd;
    bool own_fd;
    unsigned char order[N_FIELDS]; /* the fields a line carries, in order */
    size_t n_order;
    uint32_t sample;               /* of successful exchanges, per 1,000,000 logged */
    pthread_mutex_t mu;
    pthread_cond_t cv;             /* the writer waits on it */
    pthread_cond_t written;        /* rete_access_log_flush waits on it */
    bool writing;
    char *fill, *spare;            /* each ACCESS_LOG_BUFFER bytes */
    size_t len;
    bool stop;
    pthread_t thread;
} al = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .written = PTHREAD_COND_INITIALIZER};

static void write_all(const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(al.fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere to write: the lines are lost, as with a full disk */
        p += w;
        n -= (size_t)w;
    }
}

static void *writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&al.mu);
    for (;;) {
        while (al.len == 0 && !al.stop) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += ACCESS_LOG_FLUSH_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&al.cv, &al.mu, &until);
        }
        if (al.len == 0 && al.stop)
            break;
        char *out = al.fill;
        size_t n = al.len;
        al.fill = al.spare;
        al.spare = out;
        al.len = 0;
        al.writing = true;
        pthread_mutex_unlock(&al.mu);
        write_all(out, n);
        pthread_mutex_lock(&al.mu);
        al.writing = false;
        pthread_cond_broadcast(&al.written);
    }
    pthread_mutex_unlock(&al.mu);
    return NULL;
}

rete_rc rete_access_log_open(const rete_access_log_opts *o, rete_error *err)
{
    if (strcmp(o->path, "-") == 0) {
        al.fd = STDOUT_FILENO;
    } else {
        al.fd = open(o->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (al.fd < 0)
            return rete_error_set(err, RETE_EIO, "cannot open access log %s: %s", o->path, strerror(errno));
        al.own_fd = true;
    }
    al.n_order = 0;
    if (o->fields && *o->fields) {
        const char *p = o->fields;
        while (*p) {
            size_t len = strcspn(p, ",");
            size_t i = 0;
            while (i < N_FIELDS && !(strlen(fields[i].name) == len && strncmp(fields[i].name, p, len) == 0))
                i++;
            if (i == N_FIELDS || al.n_order == N_FIELDS) {
                rete_access_log_close();
                return rete_error_set(err, RETE_EINVAL, "--access-log-fields: unknown field \"%.*s\"", (int)len,
                                      p);
            }
            al.order[al.n_order++] = (unsigned char)i;
            p += len + (p[len] == ',');
        }
    } else {
        for (size_t i = 0; i < N_FIELDS; i++)
            al.order[al.n_order++] = (unsigned char)i;
    }
    if (o->sample_percent < 0 || o->sample_percent > 100) {
        rete_access_log_close();
        return rete_error_set(err, RETE_EINVAL, "--access-log-sample: %g is not a percentage (0 to 100)",
                              o->sample_percent);
    }
    al.sample = (uint32_t)(o->sample_percent * 10000.0 + 0.5);
    al.stop = false;
    al.len = 0;
    al.fill = malloc(ACCESS_LOG_BUFFER);
    al.spare = malloc(ACCESS_LOG_BUFFER);
    if (!al.fill || !al.spare || pthread_create(&al.thread, NULL, writer, NULL) != 0) {
        rete_access_log_close();
        return rete_error_set(err, RETE_ENOMEM, "cannot start the access log's writer");
    }
    al.on = true;
    return RETE_OK;
}

void rete_access_log_flush(void)
{
    if (!al.on)
        return;
    pthread_mutex_lock(&al.mu);
    while (al.len || al.writing) {
        pthread_cond_signal(&al.cv);
        pthread_cond_wait(&al.written, &al.mu);
    }
    pthread_mutex_unlock(&al.mu);
}

void rete_access_log_close(void)
{
    if (al.on) {
        pthread_mutex_lock(&al.mu);
        al.stop = true;
        pthread_cond_signal(&al.cv);
        pthread_mutex_unlock(&al.mu);
        pthread_join(al.thread, NULL);
        al.on = false;
    }
    if (al.own_fd)
        close(al.fd);
    al.own_fd = false;
    free(al.fill);
    free(al.spare);
    al.fill = al.spare = NULL;
}

/* Whether this exchange is logged: every error (a status of 400 or more,
 * none at all, or a response flag), a sample of the rest. */
static bool sampled(const rete_exchange *ex, const rete_filter_end *end)
{
    if (al.sample >= 1000000 || end->status >= 400 || end->status == 0 || ex->error)
        return true;
    static _Thread_local uint64_t x = 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return (uint32_t)(x % 1000000) < al.sample;
}

static void access_log(rete_exchange *ex, const rete_filter_end *end)
{
    if (!al.on || !sampled(ex, end))
        return;
    char line[8192];
    rete_jbuf b;
    rete_jbuf_init(&b, line, sizeof(line), 32);
    rete_jbuf_raw(&b, "{");
    for (size_t i = 0; i < al.n_order; i++)
        fields[al.order[i]].fn(&b, fields[al.order[i]].name, ex, end);
    if (b.truncated)
        rete_jbuf_raw(&b, ",\"truncated\":true");
    rete_jbuf_raw_end(&b, "}\n");
    size_t n = strlen(line);
    pthread_mutex_lock(&al.mu);
    bool room = al.len + n <= ACCESS_LOG_BUFFER;
    if (room) {
        memcpy(al.fill + al.len, line, n);
        al.len += n;
        if (al.len >= ACCESS_LOG_BUFFER / 2)
            pthread_cond_signal(&al.cv);
    }
    pthread_mutex_unlock(&al.mu);
    if (!room)
        rete_stat(ex->worker, ex->worker->ms.access_log_dropped, 1);
}

const rete_filter rete_filter_access_log = {
    .name = "access-log",
    .on_finish = access_log,
};
