#include "cp_client.h"
#include "alloc.h"
#include "config.h"
#include "csr.h"
#include "defaults.h"
#include "file.h"
#include "h1_parse.h"
#include "io.h"
#include "log.h"
#include "proxy.h"
#include "spiffe.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CP_MAX_RESPONSE (8u << 20)
#define CP_BACKOFF_MIN_MS 500
#define CP_BACKOFF_MAX_MS 30000

typedef enum cp_kind { CP_CERT, CP_STREAM } cp_kind;

/* One HTTP/1.1-over-TLS exchange with reted: a certificate request, or the
 * config stream (whose body is newline-delimited JSON without end). */
typedef struct cp_http {
    rete_io io;
    cp_kind kind;
    char *request;
    size_t request_len;
    char *buf;
    size_t len;
    size_t cap;
    bool head_done;
    int status;
    uint64_t body_need;
    bool renewal;
    bool closed;
} cp_http;

static struct {
    rete_proxy *p;
    rete_cp_opts *o;
    rete_tls_ctx *ctx_anon;      /* bootstrap: no client certificate */
    rete_tls_ctx *ctx_cert;      /* stream and renewal: the workload certificate */
    cp_http *stream;
    bool connected;
    bool draining;
    uint32_t backoff_ms;
    uv_timer_t retry_timer;
    uv_timer_t renew_timer;
    uv_timer_t ping_timer;
    uint64_t version;            /* last applied */
    int64_t cert_not_after;
    int64_t cert_not_before;
    int64_t renewed_for;         /* the last renewIssuedBefore honoured */
    char cert_path[4096];
    char key_path[4096];
    char bundle_path[4096];
    char config_path[4096];
    char *pending_key;           /* key of a certificate request in flight */
    struct cp_set {              /* the resources in use, for applying deltas */
        struct cp_entry *v;
        size_t n;
    } set;
} cp;

static void stream_connect(void);
static void schedule_retry(void);
static void on_renew(uv_timer_t *t);
static void retry_renewal(void);
static void stream_send(json_t *msg);

bool rete_cp_connected(void)
{
    return cp.connected;
}

int64_t rete_cp_cert_not_after(void)
{
    return cp.cert_not_after;
}

/* ---- files ---- */

static int write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    rete_error err = {0};
    if (rete_file_write_atomic(path, data, len, mode, &err) < 0) {
        rete_warn("control plane: %s", err.msg);
        return -1;
    }
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    return rete_file_read(path, (size_t)CP_MAX_RESPONSE * 4, len);
}


/* ---- the resource set (full snapshots and deltas) ---- */

/* reted sends resources as a stream of JSON documents, one per line after
 * a "---" separator (docs/control-plane.md); the proxy keeps them keyed by
 * (kind, namespace, name) in the order reted's store lists them, so a set
 * rebuilt from deltas is the very text a full snapshot would be. */
typedef struct cp_entry {
    char *kind;
    char *ns;
    char *name;
    char *doc;
} cp_entry;

static int entry_cmp(const void *pa, const void *pb)
{
    const cp_entry *a = pa, *b = pb;
    int c = strcmp(a->kind, b->kind);
    if (c == 0)
        c = strcmp(a->ns, b->ns);
    if (c == 0)
        c = strcmp(a->name, b->name);
    return c;
}

static void set_free(struct cp_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].kind);
        free(s->v[i].ns);
        free(s->v[i].name);
        free(s->v[i].doc);
    }
    rete_free(&s->v);
    s->n = 0;
}

static void set_add(struct cp_set *s, size_t *cap, const char *kind, const char *ns, const char *name,
                    const char *doc, size_t doc_len)
{
    if (s->n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        s->v = rete_realloc(s->v, *cap * sizeof(*s->v));
    }
    s->v[s->n++] = (cp_entry){rete_strdup(kind), rete_strdup(ns), rete_strdup(name),
                              rete_strndup(doc, doc_len)};
}

/* Parse a document stream into `out` (appending); false with err. */
static bool set_parse(const char *text, struct cp_set *out, size_t *cap, char *err, size_t errlen)
{
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len && strncmp(p, "---", 3) != 0) {
            json_error_t je;
            json_t *d = json_loadb(p, len, 0, &je);
            json_t *meta = json_object_get(d, "metadata");
            const char *kind = json_string_value(json_object_get(d, "kind"));
            const char *name = json_string_value(json_object_get(meta, "name"));
            const char *ns = json_string_value(json_object_get(meta, "namespace"));
            if (!kind || !name) {
                snprintf(err, errlen, "resync: a pushed document has no kind or name");
                json_decref(d);
                return false;
            }
            set_add(out, cap, kind, ns ? ns : "default", name, p, len);
            json_decref(d);
        }
        p += len + (nl ? 1 : 0);
    }
    return true;
}

static char *set_text(const struct cp_set *s)
{
    size_t total = 1;
    for (size_t i = 0; i < s->n; i++)
        total += strlen(s->v[i].doc) + 5;
    char *t = rete_malloc(total), *q = t;
    for (size_t i = 0; i < s->n; i++) {
        size_t n = strlen(s->v[i].doc);
        memcpy(q, "---\n", 4);
        memcpy(q + 4, s->v[i].doc, n);
        q[4 + n] = '\n';
        q += n + 5;
    }
    *q = '\0';
    return t;
}

/* The set after a delta: a copy of the current one with `deletes` removed
 * and `upserts` replacing or joining. */
static bool set_apply_delta(const struct cp_set *cur, const char *upserts, json_t *deletes,
                            struct cp_set *out, char *err, size_t errlen)
{
    size_t cap = 0;
    struct cp_set up = {0};
    size_t upcap = 0;
    if (!set_parse(upserts, &up, &upcap, err, errlen)) {
        set_free(&up);
        return false;
    }
    if (up.n > 1) /* qsort wants a non-NULL base even for zero elements */
        qsort(up.v, up.n, sizeof(*up.v), entry_cmp);
    size_t j = 0;
    for (size_t i = 0; i < cur->n; i++) {
        const cp_entry *e = &cur->v[i];
        char key[800];
        snprintf(key, sizeof(key), "%s/%s/%s", e->kind, e->ns, e->name);
        bool gone = false;
        size_t k;
        json_t *v;
        json_array_foreach(deletes, k, v)
            if (json_is_string(v) && strcmp(json_string_value(v), key) == 0)
                gone = true;
        /* upserts that sort before this entry are new */
        while (j < up.n && entry_cmp(&up.v[j], e) < 0) {
            set_add(out, &cap, up.v[j].kind, up.v[j].ns, up.v[j].name, up.v[j].doc, strlen(up.v[j].doc));
            j++;
        }
        if (j < up.n && entry_cmp(&up.v[j], e) == 0) {
            set_add(out, &cap, up.v[j].kind, up.v[j].ns, up.v[j].name, up.v[j].doc, strlen(up.v[j].doc));
            j++;
            continue;
        }
        if (!gone)
            set_add(out, &cap, e->kind, e->ns, e->name, e->doc, strlen(e->doc));
    }
    for (; j < up.n; j++)
        set_add(out, &cap, up.v[j].kind, up.v[j].ns, up.v[j].name, up.v[j].doc, strlen(up.v[j].doc));
    set_free(&up);
    return true;
}

/* When our certificate was issued: reted's CA backdates notBefore by five
 * minutes against clock skew (src/control/ca.h). */
static int64_t cert_issued_at(void)
{
    if (!cp.cert_not_before)
        return 0;
    int64_t t = cp.cert_not_before + 300, now = (int64_t)time(NULL);
    return t < now ? t : now; /* a CA that does not backdate */
}

/* ---- snapshots ---- */

static bool load_cert_times(void)
{
    size_t n;
    char *pem = read_file(cp.cert_path, &n);
    if (!pem)
        return false;
    cp.cert_not_after = rete_cert_not_after_pem(pem, n);
    cp.cert_not_before = rete_cert_not_before_pem(pem, n);
    if (cp.cert_not_after > 0)
        rete_metrics_gauge_set(cp.p->metrics, cp.p->ms.cert_expiry, (double)cp.cert_not_after);
    free(pem);
    return cp.cert_not_after > 0;
}

/* Build and install a snapshot from pushed resources; false with err. */
static bool apply_resources(const char *resources, uint64_t version, char *err, size_t errlen)
{
    size_t plen = strlen(cp.o->proxy_doc), rlen = strlen(resources);
    char *text = rete_malloc(plen + rlen + 8);
    memcpy(text, cp.o->proxy_doc, plen);
    memcpy(text + plen, "\n", 1);
    memcpy(text + plen + 1, resources, rlen + 1);
    rete_config_error e;
    rete_config *cfg = rete_config_load_buffer(text, plen + 1 + rlen, "control-plane", version, &e);
    free(text);
    if (!cfg) {
        rete_config_error_format(&e, err, errlen);
        return false;
    }
    if (!rete_proxy_can_reload(cp.p, cfg, err, errlen)) {
        rete_config_unref(cfg);
        return false;
    }
    rete_tls_set *tls = rete_tls_set_build(cfg, err, errlen);
    if (!tls) {
        rete_config_unref(cfg);
        return false;
    }
    if (rete_proxy_install(cp.p, cfg, tls) < 0) {
        snprintf(err, errlen, "the proxy could not start with this configuration");
        return false;
    }
    cp.version = version;
    return true;
}

/* A new certificate: rebuild the TLS contexts (same configuration). */
static void reinstall_tls(void)
{
    rete_proxy *p = cp.p;
    if (!p->cfg)
        return;
    char err[512];
    rete_tls_set *tls = rete_tls_set_build(p->cfg, err, sizeof(err));
    if (!tls) {
        rete_err("control plane: new certificate unusable: %s", err);
        return;
    }
    rete_proxy_install(p, rete_config_ref(p->cfg), tls);
}

static void save_config(const char *resources, uint64_t version)
{
    json_t *j = json_pack("{s:I,s:s}", "version", (json_int_t)version, "resources", resources);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s || write_file(cp.config_path, s, strlen(s), 0600) != 0)
        rete_warn("control plane: cannot save the configuration to %s", cp.config_path);
    free(s);
}

static bool load_saved_config(void)
{
    char *s = read_file(cp.config_path, NULL);
    if (!s)
        return false;
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    free(s);
    const char *res = json_string_value(json_object_get(j, "resources"));
    json_t *ver = json_object_get(j, "version");
    bool ok = false;
    if (res && json_is_integer(ver)) {
        char err[1024];
        ok = apply_resources(res, (uint64_t)json_integer_value(ver), err, sizeof(err));
        if (!ok)
            rete_warn("control plane: saved configuration unusable: %s", err);
        else
            rete_info("control plane: serving the saved configuration version %llu until reted answers",
                      (unsigned long long)cp.version);
    }
    json_decref(j);
    return ok;
}

/* ---- TLS contexts ---- */

static void rebuild_contexts(void)
{
    rete_error err = {0};
    if (cp.ctx_cert)
        rete_tls_ctx_unref(cp.ctx_cert);
    cp.ctx_cert = rete_tls_cp_client_ctx(cp.cert_path, cp.key_path, cp.bundle_path, &err);
    if (!cp.ctx_cert)
        rete_err("control plane: %s", err.msg);
}

static void expected_reted_id(char *out, size_t len)
{
    rete_spiffe_format(out, len, cp.o->trust_domain ? cp.o->trust_domain : RETE_DEFAULT_TRUST_DOMAIN,
                       RETE_ROOT_NS, RETE_CONTROL_SA);
}

/* ---- HTTP over io ---- */

static void http_close(cp_http *h)
{
    if (h->closed)
        return;
    h->closed = true;
    rete_io_close(&h->io);
}

static void cert_response(cp_http *h, const char *body, size_t len);
static void stream_line(const char *line, size_t len);

static void http_on_data(rete_io *io, const char *data, size_t len)
{
    cp_http *h = io->owner;
    if (h->len + len > CP_MAX_RESPONSE + (h->kind == CP_STREAM ? 0 : 65536)) {
        rete_warn("control plane: answer too large");
        http_close(h);
        return;
    }
    if (h->len + len > h->cap) {
        size_t cap = h->cap ? h->cap : 16384;
        while (cap < h->len + len)
            cap *= 2;
        h->buf = rete_realloc(h->buf, cap);
        h->cap = cap;
    }
    memcpy(h->buf + h->len, data, len);
    h->len += len;
    if (!h->head_done) {
        rete_header fields[64];
        rete_h1_message m = {0};
        m.headers = fields;
        rete_h1_limits lim = {8192, 65536, 64};
        rete_h1_error e;
        int r = rete_h1_parse_response(h->buf, h->len, &lim, RETE_VIEW_LIT("POST"), &m, &e);
        if (r == RETE_EAGAIN)
            return;
        if (r < 0) {
            rete_warn("control plane: bad answer from reted: %s", e.reason);
            http_close(h);
            return;
        }
        h->head_done = true;
        h->status = m.status;
        h->body_need = m.body == RETE_H1_BODY_LENGTH ? m.content_length : 0;
        memmove(h->buf, h->buf + r, h->len - (size_t)r);
        h->len -= (size_t)r;
        if (h->kind == CP_STREAM && h->status != 200) {
            h->body_need = m.body == RETE_H1_BODY_LENGTH ? m.content_length : 0;
            h->kind = CP_CERT; /* read the error body like a one-shot answer */
        } else if (h->kind == CP_STREAM) {
            cp.connected = true;
            rete_metrics_gauge_set(cp.p->metrics, cp.p->ms.cp_connected, 1);
            cp.backoff_ms = 0;
            rete_info("control plane: config stream open to %s", cp.o->server);
        }
    }
    if (h->kind == CP_CERT) {
        if (h->len < h->body_need)
            return;
        cert_response(h, h->buf, (size_t)h->body_need);
        http_close(h);
        return;
    }
    size_t start = 0;
    while (!h->closed) {
        char *nl = memchr(h->buf + start, '\n', h->len - start);
        if (!nl)
            break;
        size_t n = (size_t)(nl - (h->buf + start));
        stream_line(h->buf + start, n);
        start += n + 1;
    }
    if (h->closed)
        return;
    memmove(h->buf, h->buf + start, h->len - start);
    h->len -= start;
}

static void http_on_eof(rete_io *io)
{
    http_close(io->owner);
}

static void http_on_error(rete_io *io, const char *why)
{
    cp_http *h = io->owner;
    rete_warn("control plane: connection to %s: %s", cp.o->server, why ? why : "error");
    http_close(h);
}

static void http_on_ready(rete_io *io, int status, const char *why)
{
    cp_http *h = io->owner;
    if (status < 0) {
        rete_warn("control plane: cannot reach %s: %s", cp.o->server, why && *why ? why : "connect failed");
        http_close(h);
        return;
    }
    uv_buf_t b = uv_buf_init(h->request, (unsigned)h->request_len);
    if (rete_io_write(io, &b, 1) < 0)
        http_close(h);
}

static void http_on_close(rete_io *io)
{
    cp_http *h = io->owner;
    bool was_stream = h == cp.stream;
    if (was_stream) {
        cp.stream = NULL;
        if (cp.connected)
            rete_warn("control plane: config stream to %s closed; serving version %llu meanwhile",
                      cp.o->server, (unsigned long long)cp.version);
        cp.connected = false;
        rete_metrics_gauge_set(cp.p->metrics, cp.p->ms.cp_connected, 0);
    }
    bool failed_cert = h->kind == CP_CERT && h->status != 200;
    bool failed_renewal = failed_cert && h->renewal;
    free(h->request);
    free(h->buf);
    free(h);
    if (cp.draining)
        return;
    if (failed_renewal)
        retry_renewal();
    else if (was_stream || failed_cert)
        schedule_retry();
}

static const rete_io_cbs http_cbs = {
    .on_data = http_on_data,
    .on_eof = http_on_eof,
    .on_error = http_on_error,
    .on_ready = http_on_ready,
    .on_drain = NULL,
    .on_close = http_on_close,
};

static cp_http *http_start(cp_kind kind, rete_tls_ctx *ctx, const char *method, const char *path,
                           const char *body)
{
    char host[256];
    const char *colon = strrchr(cp.o->server, ':');
    if (!colon || (size_t)(colon - cp.o->server) >= sizeof(host))
        return NULL;
    memcpy(host, cp.o->server, (size_t)(colon - cp.o->server));
    host[colon - cp.o->server] = '\0';
    uint16_t port = (uint16_t)strtoul(colon + 1, NULL, 10);
    char expected[512];
    expected_reted_id(expected, sizeof(expected));
    rete_tls_session *s = rete_tls_session_new_client(ctx, expected, NULL);
    if (!s)
        return NULL;
    cp_http *h = rete_calloc(1, sizeof(*h));
    h->kind = kind;
    size_t blen = body ? strlen(body) : 0;
    h->request = rete_malloc(512 + blen);
    h->request_len = (size_t)snprintf(h->request, 512,
                                      "%s %s HTTP/1.1\r\nhost: reted\r\ncontent-type: application/json\r\n"
                                      "content-length: %zu\r\n\r\n",
                                      method, path, blen);
    memcpy(h->request + h->request_len, body ? body : "", blen);
    h->request_len += blen;
    /* From the workload's own address: reted registers only the address a
     * proxy's connection comes from (docs/control-plane.md, Registration). */
    if (rete_io_connect_from(&h->io, &cp.p->iol, cp.o->address, host, port, s, &http_cbs, h) < 0) {
        rete_tls_session_free(s);
        free(h->request);
        free(h);
        return NULL;
    }
    return h;
}

/* ---- certificates ---- */

static void schedule_renewal(void)
{
    /* About half-life from issuance, with jitter (±10% of the lifetime),
     * never sooner than 1 s (a certificate found half-spent at start-up is
     * renewed at once). */
    int64_t now = (int64_t)time(NULL);
    int64_t issued = cert_issued_at() ? cert_issued_at() : now;
    int64_t life = cp.cert_not_after - issued;
    if (life < 2)
        life = 2;
    int64_t at = issued + life / 2 + (int64_t)((double)life * 0.1 * ((double)rand() / RAND_MAX - 0.5));
    uint64_t ms = at > now ? (uint64_t)(at - now) * 1000 : 1000;
    uv_timer_start(&cp.renew_timer, on_renew, ms, 0);
}

/* A renewal failed (reted unreachable or refusing): try again while the
 * certificate lasts, after a tenth of what is left, between 1 and 30 s. The
 * stream's reconnect backoff never renews, so without this a proxy that
 * missed its half-life renewal would run into expiry. */
static void retry_renewal(void)
{
    int64_t left = cp.cert_not_after - (int64_t)time(NULL);
    uint64_t ms = left > 10 ? (uint64_t)(left / 10) * 1000 : 1000;
    if (ms > 30000)
        ms = 30000;
    /* Said, so an operator (and a test) sees a renewal at risk before the
     * certificate runs out. */
    rete_warn("control plane: certificate renewal failed; retrying in %llu ms (certificate valid "
              "for %lld s more)",
              (unsigned long long)ms, (long long)left);
    uv_timer_start(&cp.renew_timer, on_renew, ms, 0);
}

static void request_certificate(bool renewal)
{
    char spiffe[800];
    rete_error err = {0};
    rete_spiffe_format(spiffe, sizeof(spiffe),
                       cp.o->trust_domain ? cp.o->trust_domain : RETE_DEFAULT_TRUST_DOMAIN, cp.o->ns,
                       cp.o->sa);
    char *key = NULL;
    char *csr = rete_csr_new(spiffe, &key, &err);
    if (!csr) {
        rete_err("control plane: CSR: %s", err.msg);
        return;
    }
    json_t *body = json_pack("{s:s}", "csr", csr);
    free(csr);
    if (!renewal) {
        char *tok = read_file(cp.o->token_file, NULL);
        if (!tok) {
            rete_err("control plane: cannot read the join token %s", cp.o->token_file);
            free(key);
            json_decref(body);
            return;
        }
        tok[strcspn(tok, "\r\n ")] = '\0';
        json_object_set_new(body, "token", json_string(tok));
        free(tok);
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    cp_http *h = http_start(CP_CERT, renewal ? cp.ctx_cert : cp.ctx_anon, "POST", "/ca/v1/certificates", text);
    free(text);
    if (!h) {
        free(key);
        if (renewal)
            retry_renewal();
        else
            schedule_retry();
        return;
    }
    h->renewal = renewal;
    free(cp.pending_key);
    cp.pending_key = key;
}

static void cert_response(cp_http *h, const char *body, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    const char *chain = json_string_value(json_object_get(j, "certChain"));
    const char *bundle = json_string_value(json_object_get(j, "trustBundle"));
    if (h->status != 200 || !chain || !bundle || !cp.pending_key) {
        const char *e = json_string_value(json_object_get(j, "error"));
        rete_err("control plane: certificate %s refused (%d): %s", h->renewal ? "renewal" : "request",
                 h->status, e ? e : "no certificate in the answer");
        h->status = h->status == 200 ? 500 : h->status;
        json_decref(j);
        return;
    }
    /* Key first, then the certificate: a crash in between leaves a key
     * without a matching certificate, which the next start notices. */
    if (write_file(cp.key_path, cp.pending_key, strlen(cp.pending_key), 0600) != 0 ||
        write_file(cp.cert_path, chain, strlen(chain), 0644) != 0 ||
        write_file(cp.bundle_path, bundle, strlen(bundle), 0644) != 0) {
        rete_err("control plane: cannot write the certificate to %s", cp.o->data_dir);
        h->status = 500;
        json_decref(j);
        return;
    }
    rete_free(&cp.pending_key);
    load_cert_times();
    rete_info("control plane: %s certificate for %s/%s valid until %lld",
              h->renewal ? "renewed" : "got a", cp.o->ns, cp.o->sa, (long long)cp.cert_not_after);
    json_decref(j);
    rebuild_contexts();
    reinstall_tls();
    schedule_renewal();
    /* reted records a renewed certificate for our stream itself (it signed
     * it, for the certificate the stream was opened with): nothing to tell
     * it, and what we would say of our certificate is not taken anyway. */
    if (!h->renewal)
        stream_connect();
}

static void on_renew(uv_timer_t *t)
{
    (void)t;
    request_certificate(true);
}

/* ---- the stream ---- */

static void stream_send(json_t *msg)
{
    if (!cp.stream) {
        json_decref(msg); /* the message is ours either way */
        return;
    }
    char *s = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    size_t n = strlen(s);
    s = rete_realloc(s, n + 2);
    s[n] = '\n';
    uv_buf_t b = uv_buf_init(s, (unsigned)(n + 1));
    if (rete_io_write(&cp.stream->io, &b, 1) < 0)
        http_close(cp.stream);
    free(s);
}

static void stream_line(const char *line, size_t len)
{
    json_error_t je;
    json_t *m = json_loadb(line, len, 0, &je);
    const char *type = json_string_value(json_object_get(m, "type"));
    if (!type) {
        json_decref(m);
        return;
    }
    if (strcmp(type, "config") == 0 || strcmp(type, "delta") == 0) {
        /* A new trust bundle (CA rotation) goes to disk before the snapshot
         * is built: the snapshot's TLS contexts read it from there. */
        const char *bundle = json_string_value(json_object_get(m, "trustBundle"));
        if (bundle && *bundle) {
            size_t n = 0;
            char *cur = read_file(cp.bundle_path, &n);
            if (!cur || n != strlen(bundle) || memcmp(cur, bundle, n) != 0) {
                if (write_file(cp.bundle_path, bundle, strlen(bundle), 0644) == 0) {
                    rete_info("control plane: new trust bundle");
                    rebuild_contexts();
                }
            }
            free(cur);
        }
        json_t *renew = json_object_get(m, "renewIssuedBefore");
        int64_t rb = json_is_integer(renew) ? json_integer_value(renew) : 0;
        if (rb > cp.renewed_for && cert_issued_at() <= rb) {
            /* The CA switched roots: renew now (with jitter, so a mesh does
             * not ask all at once), from the new root. */
            cp.renewed_for = rb;
            rete_info("control plane: the CA asks for new certificates; renewing");
            uv_timer_start(&cp.renew_timer, on_renew, (uint64_t)(rand() % 2000), 0);
        }
        const char *nonce = json_string_value(json_object_get(m, "nonce"));
        uint64_t version = (uint64_t)json_integer_value(json_object_get(m, "version"));
        char err[1024] = "";
        struct cp_set next = {0};
        size_t cap = 0;
        bool ok;
        if (strcmp(type, "config") == 0) {
            const char *res = json_string_value(json_object_get(m, "resources"));
            ok = res && set_parse(res, &next, &cap, err, sizeof(err));
        } else {
            uint64_t base = (uint64_t)json_integer_value(json_object_get(m, "base"));
            const char *ups = json_string_value(json_object_get(m, "upserts"));
            if (base != cp.version) {
                snprintf(err, sizeof(err), "resync: delta from version %llu, this proxy is at %llu",
                         (unsigned long long)base, (unsigned long long)cp.version);
                ok = false;
            } else {
                ok = ups && set_apply_delta(&cp.set, ups, json_object_get(m, "deletes"), &next, err,
                                            sizeof(err));
            }
        }
        char *text = ok ? set_text(&next) : NULL;
        ok = ok && apply_resources(text, version, err, sizeof(err));
        if (ok) {
            set_free(&cp.set);
            cp.set = next;
            save_config(text, version);
            rete_info("control plane: configuration version %llu in use (%s)", (unsigned long long)version,
                      strcmp(type, "config") == 0 ? "full" : "delta");
            stream_send(json_pack("{s:s,s:s,s:I}", "type", "ack", "nonce", nonce ? nonce : "",
                                  "version", (json_int_t)version));
            stream_send(json_pack("{s:s,s:b}", "type", "health", "ready", 1));
        } else {
            set_free(&next);
            rete_warn("control plane: rejected configuration version %llu: %s; keeping version %llu",
                      (unsigned long long)version, err, (unsigned long long)cp.version);
            if (strncmp(err, "resync", 6) != 0) {
                rete_proxy_count_reload(cp.p, false);
                snprintf(cp.p->last_reload_error, sizeof(cp.p->last_reload_error), "%s", err);
            }
            stream_send(json_pack("{s:s,s:s,s:I,s:s}", "type", "nack", "nonce", nonce ? nonce : "",
                                  "version", (json_int_t)version, "error", err));
        }
        free(text);
    } else if (strcmp(type, "error") == 0) {
        const char *e = json_string_value(json_object_get(m, "error"));
        rete_err("control plane: reted refused the stream: %s", e ? e : "?");
    }
    json_decref(m);
}

static void stream_connect(void)
{
    if (cp.stream || cp.draining || !cp.ctx_cert)
        return;
    cp.stream = http_start(CP_STREAM, cp.ctx_cert, "GET", "/xds/v1/stream", NULL);
    if (!cp.stream) {
        schedule_retry();
        return;
    }
    json_t *hello = json_pack("{s:s,s:O,s:I}", "type", "hello", "workload", cp.o->workload, "version",
                              (json_int_t)cp.version);
    /* The hello goes right after the request head: reted reads it as the
     * stream's first line once it has answered 200. */
    char *s = json_dumps(hello, JSON_COMPACT);
    json_decref(hello);
    size_t n = strlen(s);
    cp.stream->request = rete_realloc(cp.stream->request, cp.stream->request_len + n + 2);
    memcpy(cp.stream->request + cp.stream->request_len, s, n);
    cp.stream->request[cp.stream->request_len + n] = '\n';
    cp.stream->request_len += n + 1;
    free(s);
}

static void on_retry(uv_timer_t *t)
{
    (void)t;
    if (cp.cert_not_after && cp.cert_not_after > (int64_t)time(NULL))
        stream_connect();
    else
        request_certificate(false);
}

static void schedule_retry(void)
{
    if (cp.draining || uv_is_active((uv_handle_t *)&cp.retry_timer))
        return;
    /* Jittered exponential backoff: full jitter over [backoff/2, backoff]. */
    cp.backoff_ms = cp.backoff_ms ? cp.backoff_ms * 2 : CP_BACKOFF_MIN_MS;
    if (cp.backoff_ms > CP_BACKOFF_MAX_MS)
        cp.backoff_ms = CP_BACKOFF_MAX_MS;
    uint64_t ms = cp.backoff_ms / 2 + (uint64_t)rand() % (cp.backoff_ms / 2 + 1);
    uv_timer_start(&cp.retry_timer, on_retry, ms, 0);
}

static void on_ping(uv_timer_t *t)
{
    (void)t;
    if (cp.connected)
        stream_send(json_pack("{s:s}", "type", "ping"));
}

int rete_cp_start(rete_proxy *p, rete_cp_opts *o)
{
    cp.p = p;
    cp.o = o;
    srand((unsigned)(time(NULL) ^ getpid()));
    if (mkdir(o->data_dir, 0700) != 0 && errno != EEXIST) {
        rete_err("control plane: cannot create %s: %s", o->data_dir, strerror(errno));
        return -1;
    }
    snprintf(cp.cert_path, sizeof(cp.cert_path), "%s/cert.pem", o->data_dir);
    snprintf(cp.key_path, sizeof(cp.key_path), "%s/key.pem", o->data_dir);
    snprintf(cp.bundle_path, sizeof(cp.bundle_path), "%s/bundle.pem", o->data_dir);
    snprintf(cp.config_path, sizeof(cp.config_path), "%s/config.json", o->data_dir);
    rete_error err = {0};
    cp.ctx_anon = rete_tls_cp_client_ctx(NULL, NULL, o->ca_file, &err);
    if (!cp.ctx_anon) {
        rete_err("control plane: %s", err.msg);
        return -1;
    }
    uv_timer_init(p->loop, &cp.retry_timer);
    uv_timer_init(p->loop, &cp.renew_timer);
    uv_timer_init(p->loop, &cp.ping_timer);
    uv_timer_start(&cp.ping_timer, on_ping, 15000, 15000);
    bool have_cert = load_cert_times() && cp.cert_not_after > (int64_t)time(NULL) + 5;
    if (have_cert) {
        rebuild_contexts();
        load_saved_config();
        schedule_renewal();
        stream_connect();
        return 0;
    }
    if (!o->token_file) {
        rete_err("control plane: no valid certificate in %s and no --token-file to get one",
                 o->data_dir);
        return -1;
    }
    request_certificate(false);
    return 0;
}

void rete_cp_drain(rete_proxy *p)
{
    (void)p;
    if (cp.draining)
        return;
    stream_send(json_pack("{s:s}", "type", "drain"));
    cp.draining = true;
    set_free(&cp.set); /* no snapshot will be built any more */
    uv_timer_stop(&cp.retry_timer);
    uv_timer_stop(&cp.renew_timer);
    uv_timer_stop(&cp.ping_timer);
    uv_close((uv_handle_t *)&cp.retry_timer, NULL);
    uv_close((uv_handle_t *)&cp.renew_timer, NULL);
    uv_close((uv_handle_t *)&cp.ping_timer, NULL);
    if (cp.stream) {
        rete_io_shutdown(&cp.stream->io);
        http_close(cp.stream);
    }
}
