#include "cp_http.h"
#include "alloc.h"
#include "defaults.h"
#include "h1_parse.h"
#include "log.h"
#include "spiffe.h"
#include "vec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cp_http_close(cp_http *h)
{
    if (h->closed)
        return;
    h->closed = true;
    rete_io_close(&h->io);
}

bool cp_http_write(cp_http *h, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    if (h->closed || rete_io_write(&h->io, &b, 1) < 0) {
        cp_http_close(h);
        return false;
    }
    return true;
}

/* The answer's head, once it is all there; false when the exchange ends. */
static bool read_head(cp_http *h)
{
    rete_header fields[64];
    rete_h1_message m = {0};
    m.headers = fields;
    rete_h1_limits lim = {8192, 65536, 64};
    rete_h1_error e;
    int r = rete_h1_parse_response(h->buf, h->len, &lim, RETE_VIEW_LIT("POST"), &m, &e);
    if (r == RETE_EAGAIN)
        return true;
    if (r < 0) {
        rete_warn("control plane: bad answer from reted: %s", e.reason);
        cp_http_close(h);
        return false;
    }
    h->status = m.status;
    h->body_need = m.body == RETE_H1_BODY_LENGTH ? m.content_length : 0;
    memmove(h->buf, h->buf + r, h->len - (size_t)r);
    h->len -= (size_t)r;
    if (h->stream && h->status == 200) {
        h->handled_ok = true;
        h->cbs->on_open(h);
    } else {
        h->stream = false; /* a refused stream: read its error body like a one-shot answer */
    }
    return !h->closed;
}

static void on_data(rete_io *io, const char *data, size_t len)
{
    cp_http *h = io->owner;
    if (h->len + len > CP_MAX_RESPONSE + (h->stream ? 0 : 65536)) {
        rete_warn("control plane: answer too large");
        cp_http_close(h);
        return;
    }
    RETE_GROW(h->buf, h->cap, h->len + len, 16384);
    memcpy(h->buf + h->len, data, len);
    h->len += len;
    if (!h->status && (!read_head(h) || !h->status))
        return;
    if (!h->stream) {
        if (h->len < h->body_need)
            return;
        h->handled_ok = h->status == 200;
        h->cbs->on_answer(h, h->status, h->buf, (size_t)h->body_need);
        cp_http_close(h);
        return;
    }
    size_t start = 0;
    while (!h->closed) {
        char *nl = memchr(h->buf + start, '\n', h->len - start);
        if (!nl)
            break;
        size_t n = (size_t)(nl - (h->buf + start));
        h->cbs->on_line(h, h->buf + start, n);
        start += n + 1;
    }
    if (h->closed)
        return;
    memmove(h->buf, h->buf + start, h->len - start);
    h->len -= start;
}

static void on_eof(rete_io *io)
{
    cp_http_close(io->owner);
}

static void on_error(rete_io *io, const char *why)
{
    cp_http *h = io->owner;
    rete_warn("control plane: connection to %s: %s", cp_server_cur(h->cp)->name, why ? why : "error");
    cp_http_close(h);
}

static void on_ready(rete_io *io, int status, const char *why)
{
    cp_http *h = io->owner;
    if (status < 0) {
        rete_warn("control plane: cannot reach %s: %s", cp_server_cur(h->cp)->name,
                  why && *why ? why : "connect failed");
        cp_http_close(h);
        return;
    }
    cp_http_write(h, h->request, h->request_len);
    rete_free(&h->request);
}

static void on_close(rete_io *io)
{
    cp_http *h = io->owner;
    h->cbs->on_close(h, h->handled_ok);
    free(h->request);
    free(h->buf);
    free(h);
}

/* one io callback table per owner of a connection (io.h): the same shape by design. */
static const rete_io_cbs io_cbs = {
    .on_data = on_data,
    .on_eof = on_eof,
    .on_error = on_error,
    .on_ready = on_ready,
    .on_drain = NULL,
    .on_close = on_close,
};

cp_http *cp_http_start(rete_cp *cp, rete_tls_ctx *ctx, bool stream, const char *method, const char *path,
                       const char *body, const char *extra, const cp_http_cbs *cbs)
{
    const cp_server *srv = cp_server_cur(cp);
    char expected[512];
    rete_spiffe_format(expected, sizeof(expected), cp->o->trust_domain ? cp->o->trust_domain : RETE_DEFAULT_TRUST_DOMAIN,
                       RETE_ROOT_NS, RETE_CONTROL_SA);
    rete_tls_session *s = rete_tls_session_new_client(ctx, expected, NULL);
    if (!s)
        return NULL;
    cp_http *h = rete_calloc(1, sizeof(*h));
    h->cp = cp;
    h->cbs = cbs;
    h->stream = stream;
    rete_buf req = {0};
    char head[512];
    size_t blen = body ? strlen(body) : 0;
    rete_buf_append(&req, head,
                    (size_t)snprintf(head, sizeof(head),
                                     "%s %s HTTP/1.1\r\nhost: reted\r\ncontent-type: application/json\r\n"
                                     "content-length: %zu\r\n\r\n",
                                     method, path, blen));
    rete_buf_append(&req, body ? body : "", blen);
    if (extra)
        rete_buf_append_str(&req, extra);
    h->request_len = req.len;
    h->request = rete_buf_take(&req);
    if (rete_io_connect_from(&h->io, &cp->p->iol, cp->o->address, srv->ip, srv->port, s, &io_cbs, h) < 0) {
        rete_tls_session_free(s);
        free(h->request);
        free(h);
        return NULL;
    }
    /* A replica that does not answer (gone with its address, packets
     * dropped) fails the exchange like one that refuses: the caller moves on. */
    rete_io_connect_timeout(&h->io, CP_CONNECT_TIMEOUT_MS);
    return h;
}
