#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "vec.h"
#include "h1_parse.h"

#define MAX_RESPONSE (64u << 20)

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void copy_view(char *dst, size_t cap, rete_view v)
{
    size_t n = v.len < cap - 1 ? v.len : cap - 1;
    memcpy(dst, v.p, n);
    dst[n] = '\0';
}

rete_rc rete_ctl_http_parse(const char *buf, size_t len, bool eof, const char *method,
                            rete_ctl_response *resp, rete_error *err)
{
    rete_h1_header headers[100];
    rete_h1_limits lim = RETE_H1_LIMITS_DEFAULT;
    rete_h1_message msg = {.headers = headers};
    rete_h1_error herr = {0};
    int n = rete_h1_parse_response(buf, len, &lim, rete_view_cstr(method), &msg, &herr);
    if (n == RETE_EAGAIN) {
        if (eof)
            return rete_error_set(err, RETE_EINVAL,
                                  "connection closed before a complete response head");
        return RETE_EAGAIN;
    }
    if (n < 0)
        return rete_error_set(err, RETE_EINVAL, "malformed response: %s",
                              herr.reason ? herr.reason : "?");
    const char *body = buf + n;
    size_t avail = len - (size_t)n;
    char *out = NULL;
    size_t out_len = 0;
    switch (msg.body) {
    case RETE_H1_BODY_NONE:
        break;
    case RETE_H1_BODY_LENGTH:
        if (avail < msg.content_length) {
            if (eof)
                return rete_error_set(err, RETE_EINVAL,
                                      "connection closed after %zu of %llu body bytes", avail,
                                      (unsigned long long)msg.content_length);
            return RETE_EAGAIN;
        }
        out_len = (size_t)msg.content_length;
        out = rete_malloc(out_len + 1);
        memcpy(out, body, out_len);
        break;
    case RETE_H1_BODY_UNTIL_CLOSE:
        if (!eof)
            return RETE_EAGAIN;
        out_len = avail;
        out = rete_malloc(out_len + 1);
        memcpy(out, body, out_len);
        break;
    case RETE_H1_BODY_CHUNKED: {
        rete_h1_chunked ch;
        rete_h1_chunked_init(&ch);
        out = rete_malloc(avail + 1);
        int rc = RETE_OK;
        while (avail > 0) {
            size_t used = 0;
            const char *data = NULL;
            size_t dlen = 0;
            rc = rete_h1_chunked_decode(&ch, body, avail, &used, &data, &dlen);
            if (rc < 0)
                break;
            if (dlen) {
                memcpy(out + out_len, data, dlen);
                out_len += dlen;
            }
            body += used;
            avail -= used;
            if (rc == 1)
                break;
            if (used == 0 && dlen == 0)
                break;
        }
        rete_h1_chunked_free(&ch);
        if (rc < 0) {
            free(out);
            return rete_error_set(err, RETE_EINVAL, "malformed chunked body");
        }
        if (rc != 1) {
            free(out);
            if (eof)
                return rete_error_set(err, RETE_EINVAL, "connection closed inside a chunked body");
            return RETE_EAGAIN;
        }
        break;
    }
    default:
        return rete_error_set(err, RETE_EINVAL, "unexpected body framing");
    }
    if (!out)
        out = rete_malloc(1);
    out[out_len] = '\0';
    memset(resp, 0, sizeof(*resp));
    resp->status = msg.status;
    copy_view(resp->reason, sizeof(resp->reason), msg.reason);
    for (size_t i = 0; i < msg.n_headers; i++) {
        if (rete_view_ieq(headers[i].name, RETE_VIEW_LIT("date")))
            copy_view(resp->date, sizeof(resp->date), headers[i].value);
        else if (rete_view_ieq(headers[i].name, RETE_VIEW_LIT("content-type")))
            copy_view(resp->content_type, sizeof(resp->content_type), headers[i].value);
    }
    resp->body = out;
    resp->body_len = out_len;
    return RETE_OK;
}

void rete_ctl_response_free(rete_ctl_response *resp)
{
    rete_free(&resp->body);
    resp->body_len = 0;
}

char *rete_ctl_urlencode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = rete_malloc(strlen(s) * 3 + 1);
    char *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~' || *p == '/') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* "host:port", "[v6]:port", with an optional "http://" and trailing "/". */
static rete_rc split_server(const char *server, char *host, size_t hcap, char *port, size_t pcap,
                            rete_error *err)
{
    if (strncmp(server, "http://", 7) == 0)
        server += 7;
    size_t len = strcspn(server, "/");
    const char *colon = NULL;
    const char *h = server;
    size_t hlen;
    if (server[0] == '[') {
        const char *close = memchr(server, ']', len);
        if (!close || close[1] != ':')
            goto bad;
        h = server + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        for (size_t i = 0; i < len; i++)
            if (server[i] == ':')
                colon = server + i;
        if (!colon)
            goto bad;
        hlen = (size_t)(colon - server);
    }
    size_t plen = len - (size_t)(colon + 1 - server);
    if (hlen == 0 || hlen >= hcap || plen == 0 || plen >= pcap)
        goto bad;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, colon + 1, plen);
    port[plen] = '\0';
    return RETE_OK;
bad:
    return rete_error_set(err, RETE_EINVAL, "bad server address \"%s\" (want HOST:PORT)", server);
}

/* A connected non-blocking socket, or -1 with err (RETE_EIO). */
static int connect_to(const char *host, const char *port, long long deadline, rete_error *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        rete_error_set(err, RETE_EIO, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            long long left = deadline - now_ms();
            int pr = left > 0 ? poll(&pfd, 1, (int)left) : 0;
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (pr == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
                break;
            last_errno = pr == 0 ? ETIMEDOUT : soerr ? soerr : errno;
        } else {
            last_errno = errno;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        rete_error_set(err, RETE_EIO, "cannot connect: %s", strerror(last_errno));
    return fd;
}

static bool wait_fd(int fd, short events, long long deadline)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return false;
        int pr = poll(&pfd, 1, (int)left);
        if (pr > 0)
            return true;
        if (pr < 0 && errno != EINTR)
            return false;
    }
}

rete_rc rete_ctl_http_do(const rete_ctl_http *c, const char *method, const char *path,
                         const char *content_type, const char *body, size_t body_len,
                         rete_ctl_response *resp, rete_error *err)
{
    char host[256], port[16];
    long long deadline = now_ms() + (c->timeout_ms > 0 ? c->timeout_ms : 10000);
    RETE_GUARD(split_server(c->server, host, sizeof(host), port, sizeof(port), err));
    if (c->verbose)
        fprintf(stderr, "> %s http://%s%s (%zu bytes)\n", method, c->server, path, body_len);
    int fd = connect_to(host, port, deadline, err);
    if (fd < 0) {
        resp->unreachable = true;
        return RETE_EIO;
    }

    size_t hcap = 1024 + strlen(path) + (c->token ? strlen(c->token) : 0);
    char *head = rete_malloc(hcap);
    int hlen = snprintf(head, hcap,
                        "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: retectl/" RETE_VERSION
                        "\r\nAccept: application/json\r\nConnection: close\r\n",
                        method, path, c->server);
    if (c->token)
        hlen +=
            snprintf(head + hlen, hcap - (size_t)hlen, "Authorization: Bearer %s\r\n", c->token);
    if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)
        hlen += snprintf(head + hlen, hcap - (size_t)hlen,
                         "Content-Type: %s\r\nContent-Length: %zu\r\n",
                         content_type ? content_type : "application/json", body_len);
    hlen += snprintf(head + hlen, hcap - (size_t)hlen, "\r\n");

    rete_rc rc = RETE_EIO;
    char *in = NULL;
    size_t in_len = 0, in_cap = 0;
    const struct {
        const char *p;
        size_t n;
    } parts[2] = {{head, (size_t)hlen}, {body, body ? body_len : 0}};
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (off < parts[i].n) {
            ssize_t w = send(fd, parts[i].p + off, parts[i].n - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
            } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (!wait_fd(fd, POLLOUT, deadline)) {
                    rete_error_set(err, RETE_EIO, "timed out sending the request");
                    goto out;
                }
            } else {
                rete_error_set(err, RETE_EIO, "send: %s", strerror(errno));
                goto out;
            }
        }
    }
    bool eof = false;
    for (;;) {
        RETE_GROW(in, in_cap, in_len + 16384, 32768);
        ssize_t r = recv(fd, in + in_len, in_cap - in_len, 0);
        if (r > 0) {
            in_len += (size_t)r;
            if (in_len > MAX_RESPONSE) {
                rete_error_set(err, RETE_EIO, "response larger than %u bytes", MAX_RESPONSE);
                goto out;
            }
        } else if (r == 0) {
            eof = true;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (!wait_fd(fd, POLLIN, deadline)) {
                rete_error_set(err, RETE_EIO, "timed out waiting for the response");
                goto out;
            }
            continue;
        } else {
            rete_error_set(err, RETE_EIO, "recv: %s", strerror(errno));
            goto out;
        }
        rc = rete_ctl_http_parse(in, in_len, eof, method, resp, err);
        if (rc != RETE_EAGAIN)
            break;
        rc = RETE_EIO;
    }
    if (rc == RETE_OK && c->verbose)
        fprintf(stderr, "< %d %s (%zu bytes)\n", resp->status, resp->reason, resp->body_len);
out:
    free(head);
    free(in);
    close(fd);
    return rc;
}

rete_rc rete_ctl_http_stream(const rete_ctl_http *c, const char *path, rete_ctl_line_fn fn, void *arg,
                             rete_ctl_response *resp, bool *server_closed, rete_error *err)
{
    char host[256], port[16];
    long long deadline = now_ms() + (c->timeout_ms > 0 ? c->timeout_ms : 10000);
    memset(resp, 0, sizeof(*resp));
    *server_closed = false;
    RETE_GUARD(split_server(c->server, host, sizeof(host), port, sizeof(port), err));
    if (c->verbose)
        fprintf(stderr, "> GET http://%s%s (stream)\n", c->server, path);
    int fd = connect_to(host, port, deadline, err);
    if (fd < 0)
        return RETE_EIO;
    size_t hcap = 1024 + strlen(path) + (c->token ? strlen(c->token) : 0);
    char *head = rete_malloc(hcap);
    int hlen = snprintf(head, hcap,
                        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: retectl/" RETE_VERSION
                        "\r\nAccept: application/x-ndjson\r\nConnection: close\r\n",
                        path, c->server);
    if (c->token)
        hlen += snprintf(head + hlen, hcap - (size_t)hlen, "Authorization: Bearer %s\r\n", c->token);
    hlen += snprintf(head + hlen, hcap - (size_t)hlen, "\r\n");
    rete_rc rc = RETE_EIO;
    char *in = NULL;
    size_t in_len = 0, in_cap = 0, off = 0;
    bool streaming = false;
    size_t sent = 0;
    while (sent < (size_t)hlen) {
        ssize_t w = send(fd, head + sent, (size_t)hlen - sent, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_fd(fd, POLLOUT, deadline)) {
                rete_error_set(err, RETE_EIO, "timed out sending the request");
                goto out;
            }
        } else {
            rete_error_set(err, RETE_EIO, "send: %s", strerror(errno));
            goto out;
        }
    }
    for (;;) {
        /* lines of the body already in */
        while (streaming) {
            char *nl = memchr(in + off, '\n', in_len - off);
            if (!nl)
                break;
            size_t len = (size_t)(nl - (in + off));
            if (!fn(arg, in + off, len)) {
                rc = RETE_OK;
                goto out;
            }
            off += len + 1;
        }
        if (streaming && off) {
            memmove(in, in + off, in_len - off);
            in_len -= off;
            off = 0;
        }
        if (streaming && in_len > RETE_CTL_STREAM_MAX_LINE) {
            rete_error_set(err, RETE_EIO, "a line longer than %u bytes", RETE_CTL_STREAM_MAX_LINE);
            goto out;
        }
        RETE_GROW(in, in_cap, in_len + 16384, 32768);
        ssize_t r = recv(fd, in + in_len, in_cap - in_len, 0);
        if (r > 0) {
            in_len += (size_t)r;
        } else if (r == 0) {
            if (streaming) {
                *server_closed = true;
                rc = RETE_OK;
                goto out;
            }
            rc = rete_ctl_http_parse(in, in_len, true, "GET", resp, err);
            goto out;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (streaming) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                if (poll(&pfd, 1, RETE_CTL_STREAM_TICK_MS) == 0 && !fn(arg, NULL, 0)) {
                    rc = RETE_OK;
                    goto out;
                }
            } else if (!wait_fd(fd, POLLIN, deadline)) {
                rete_error_set(err, RETE_EIO, "timed out waiting for the response");
                goto out;
            }
            continue;
        } else {
            rete_error_set(err, RETE_EIO, "recv: %s", strerror(errno));
            goto out;
        }
        if (streaming)
            continue;
        rete_h1_header headers[100];
        rete_h1_limits lim = RETE_H1_LIMITS_DEFAULT;
        rete_h1_message msg = {.headers = headers};
        rete_h1_error herr = {0};
        int n = rete_h1_parse_response(in, in_len, &lim, RETE_VIEW_LIT("GET"), &msg, &herr);
        if (n == RETE_EAGAIN)
            continue;
        if (n < 0) {
            rete_error_set(err, RETE_EINVAL, "malformed response: %s", herr.reason ? herr.reason : "?");
            goto out;
        }
        if (msg.status != 200 || msg.body != RETE_H1_BODY_UNTIL_CLOSE) {
            /* an error answer: read it whole */
            rc = rete_ctl_http_parse(in, in_len, false, "GET", resp, err);
            if (rc != RETE_EAGAIN)
                goto out;
            continue;
        }
        resp->status = 200;
        if (c->verbose)
            fprintf(stderr, "< 200 (streaming)\n");
        streaming = true;
        off = (size_t)n;
    }
out:
    free(head);
    free(in);
    close(fd);
    return rc;
}
