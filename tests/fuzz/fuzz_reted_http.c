/* libFuzzer target for reted's HTTP request handling (src/control/http.c:
 * framing, the strict head parser, admission before the body, keep-alive
 * and pipelining) with both listeners' admission (api.c reted_api_admit:
 * the admin token; proxy_api.c reted_xds_admit: the proxy API's endpoints),
 * fed as raw bytes over a loopback connection to a server on this
 * process's loop. The input's first byte picks the listener (even: the
 * operator API, odd: the proxy API without a client certificate); the rest
 * is what the client sends before it half-closes.
 *
 * Handlers are the target's: they check that
 *  - operator API: no request reaches a handler without "Authorization:
 *    Bearer <the admin token>" unless its path is /healthz, /metrics or
 *    /version (those are answered by the real reted_api_handle);
 *  - proxy API: only /ca/v1/certificates and /healthz reach a handler (the
 *    config stream needs a client certificate, which this client has not);
 *  - a handler's request is well formed: method and path set, path starts
 *    with '/' or is "*", the body is what content-length announced;
 * and that the server closes the connection once the client has
 * half-closed and been answered (nothing is held for a client that left). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "http.h"
#include "log.h"
#include "proxy_api.h"
#include "reted.h"
#include "stats.h"
#include "fuzz.h"

#define TOKEN "fuzz-admin-token-0123456789abcdefABCDEF"

static uv_loop_t loop;
static reted r;
static rete_http_server *srv[2];
static uint16_t port[2];

/* What reted answers without the token: health, metrics, version, and the
 * dashboard's page and assets (no data: every data call needs the token). */
static bool open_path(rete_view p)
{
    return rete_view_eq(p, RETE_VIEW_LIT("/healthz")) || rete_view_eq(p, RETE_VIEW_LIT("/metrics")) ||
           rete_view_eq(p, RETE_VIEW_LIT("/version")) || rete_view_eq(p, RETE_VIEW_LIT("/dashboard")) ||
           rete_view_has_prefix(p, RETE_VIEW_LIT("/dashboard/"));
}

static bool has_token(const rete_http_req *req)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (rete_view_ieq(req->headers[i].name, RETE_VIEW_LIT("authorization")) &&
            rete_view_eq(req->headers[i].value, RETE_VIEW_LIT("Bearer " TOKEN)))
            return true;
    return false;
}

static void check_req(const rete_http_req *req)
{
    CHECK(req->method.len > 0);
    CHECK(req->path.len > 0);
    CHECK(req->body && req->body[req->body_len] == '\0');
}

static void api_handler(rete_http_req *req, void *arg)
{
    check_req(req);
    if (open_path(req->path)) {
        reted_api_handle(req, arg);
        return;
    }
    CHECK(has_token(req));
    rete_http_respond_json(req, 200, "{\"fuzz\":true}");
}

static void xds_handler(rete_http_req *req, void *arg)
{
    (void)arg;
    check_req(req);
    CHECK(rete_view_eq(req->path, RETE_VIEW_LIT("/ca/v1/certificates")) ||
          rete_view_eq(req->path, RETE_VIEW_LIT("/healthz")));
    rete_http_respond_json(req, 200, "{\"fuzz\":true}");
}

static rete_http_server *listen_somewhere(rete_http_handler h, uint16_t *p)
{
    /* a port of its own, from the process id: other fuzzers may run */
    for (int i = 0; i < 200; i++) {
        uint16_t try = (uint16_t)(20000 + ((unsigned)getpid() * 7 + (unsigned)i * 131) % 30000);
        rete_error err = {0};
        rete_http_server *s = rete_http_listen(&r.iol, "127.0.0.1", try, NULL, r.max_request_body, h, &r, &err);
        if (s) {
            *p = try;
            return s;
        }
    }
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rete_log_level = -1;
    CHECK(uv_loop_init(&loop) == 0);
    r.loop = &loop;
    r.iol.loop = &loop;
    snprintf(r.admin_token, sizeof r.admin_token, "%s", TOKEN);
    r.max_request_body = 4096;
    r.max_apply_body = 16384;
    reted_stats_init(&r.stats);
    srv[0] = listen_somewhere(api_handler, &port[0]);
    rete_http_server_set_admit(srv[0], reted_api_admit);
    srv[1] = listen_somewhere(xds_handler, &port[1]);
    rete_http_server_set_admit(srv[1], reted_xds_admit);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 32768)
        return 0;
    int which = data[0] & 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port[which])};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    CHECK(rc == 0 || errno == EINPROGRESS);
    size_t off = 1;
    bool shut = false, eof = false;
    char buf[65536];
    /* bounded: a loopback exchange of at most 32 KiB takes a handful of rounds */
    for (int round = 0; round < 20000 && !eof; round++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (off < size) {
            ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
            else
                CHECK(errno == EAGAIN || errno == ENOTCONN || errno == EPIPE || errno == ECONNRESET);
            if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
                off = size; /* the server refused and closed: fine */
        }
        if (off >= size && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            eof = true;
    }
    CHECK(eof); /* the server let go of a client that left */
    close(fd);
    for (int i = 0; i < 8; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}
