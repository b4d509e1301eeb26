/* The config stream (docs/control-plane.md, "The config stream"): a hello
 * naming the workload and what the proxy holds (its version and reted's
 * hash of its set, so a replica holding the same set resumes with an empty
 * delta instead of a whole snapshot), then snapshots and deltas answered by
 * ACK or NACK, readiness, pings every 15 s; a stream silent for
 * CP_SILENT_MS (reted pings every 15 s) is given up. Reconnecting goes to
 * the next replica of the list (cp_servers.c) with jittered exponential
 * backoff (0.5 s doubling to 30 s) while the proxy serves what it has. */
#include "alloc.h"
#include "cp_http.h"
#include "cp_state.h"
#include "log.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CP_BACKOFF_MIN_MS 500
#define CP_BACKOFF_MAX_MS 30000
#define CP_PING_MS 15000
#define CP_SILENT_MS 45000

void cp_stream_send(rete_cp *cp, json_t *msg)
{
    if (!cp->stream) {
        json_decref(msg); /* the message is ours either way */
        return;
    }
    char *s = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    size_t n = strlen(s);
    s = rete_realloc(s, n + 2);
    s[n] = '\n';
    cp_http_write(cp->stream, s, n + 1);
    free(s);
}

static void on_config(rete_cp *cp, json_t *m, bool whole)
{
    json_t *renew = json_object_get(m, "renewIssuedBefore");
    cp_certs_on_message(cp, json_string_value(json_object_get(m, "trustBundle")),
                        json_is_integer(renew) ? json_integer_value(renew) : 0);
    const char *nonce = json_string_value(json_object_get(m, "nonce"));
    uint64_t version = (uint64_t)json_integer_value(json_object_get(m, "version"));
    char err[1024] = "";
    if (cp_config_apply(cp, m, whole, err, sizeof(err))) {
        const char *hash = json_string_value(json_object_get(m, "snapshot"));
        cp->snapshot_hash = hash ? strtoull(hash, NULL, 16) : 0; /* absent from older reted: no resume */
        rete_info("control plane: configuration version %llu in use (%s)", (unsigned long long)version,
                  whole ? "full" : "delta");
        cp_stream_send(cp, json_pack("{s:s,s:s,s:I}", "type", "ack", "nonce", nonce ? nonce : "", "version",
                                     (json_int_t)version));
        cp_stream_send(cp, json_pack("{s:s,s:b}", "type", "health", "ready", atomic_load(&cp->p->app_ready)));
        return;
    }
    rete_warn("control plane: rejected configuration version %llu: %s; keeping version %llu",
              (unsigned long long)version, err, (unsigned long long)cp->version);
    if (strncmp(err, "resync", 6) != 0) {
        rete_proxy_count_reload(cp->p, false);
        snprintf(cp->p->last_reload_error, sizeof(cp->p->last_reload_error), "%s", err);
    }
    cp_stream_send(cp, json_pack("{s:s,s:s,s:I,s:s}", "type", "nack", "nonce", nonce ? nonce : "", "version",
                                 (json_int_t)version, "error", err));
}

static void on_line(cp_http *h, const char *line, size_t len)
{
    h->cp->last_rx_ms = uv_now(h->cp->p->loop);
    json_error_t je;
    json_t *m = json_loadb(line, len, 0, &je);
    const char *type = json_string_value(json_object_get(m, "type"));
    if (!type) {
        json_decref(m);
        return;
    }
    if (strcmp(type, "config") == 0 || strcmp(type, "delta") == 0) {
        bool whole = strcmp(type, "config") == 0;
        on_config(h->cp, m, whole);
        json_decref(m);
        /* A whole snapshot's parsed message (several times its text: a few
         * MB in a large mesh) is freed now; give the heap back rather than
         * keep the peak for the proxy's life. */
        if (whole)
            malloc_trim(0);
        return;
    } else if (strcmp(type, "tap") == 0 || strcmp(type, "tap-stop") == 0) {
        cp_tap_on_message(h->cp, type, m);
    } else if (strcmp(type, "error") == 0) {
        const char *e = json_string_value(json_object_get(m, "error"));
        rete_err("control plane: reted refused the stream: %s", e ? e : "?");
    }
    json_decref(m);
}

static void on_open(cp_http *h)
{
    rete_cp *cp = h->cp;
    cp->connected = true;
    rete_metrics_gauge_set(cp->p->metrics, cp->p->ms.cp_connected, 1);
    cp->backoff_ms = 0;
    cp->last_rx_ms = uv_now(cp->p->loop);
    rete_info("control plane: config stream open to %s", cp_server_cur(cp)->name);
}

static void on_answer(cp_http *h, int status, const char *body, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    const char *e = json_string_value(json_object_get(j, "error"));
    rete_err("control plane: config stream refused (%d): %s", status, e ? e : "no reason given");
    json_decref(j);
}

static void on_close(cp_http *h, bool ok)
{
    rete_cp *cp = h->cp;
    (void)ok;
    cp->stream = NULL;
    if (cp->connected)
        rete_warn("control plane: config stream to %s closed; serving version %llu meanwhile",
                  cp_server_cur(cp)->name, (unsigned long long)cp->version);
    cp->connected = false;
    cp_tap_stream_closed(cp);
    rete_metrics_gauge_set(cp->p->metrics, cp->p->ms.cp_connected, 0);
    if (cp->draining)
        return;
    /* Lost, refused or never reached: the next replica, after the backoff
     * (the first retry after an open stream within 0.5 s). */
    cp_server_failed(cp);
    cp_stream_schedule_retry(cp);
}

/* one callback table per kind of exchange with reted (cp_http.h): the same shape by design. */
static const cp_http_cbs stream_cbs = {
    .on_answer = on_answer,
    .on_open = on_open,
    .on_line = on_line,
    .on_close = on_close,
};

void cp_stream_connect(rete_cp *cp)
{
    if (cp->stream || cp->draining || !cp->ctx_cert)
        return;
    /* The hello goes right after the request head: reted reads it as the
     * stream's first line once it has answered 200. */
    json_t *hello = json_pack("{s:s,s:O,s:I,s:b}", "type", "hello", "workload", cp->o->workload, "version",
                              (json_int_t)cp->version, "ready", atomic_load(&cp->p->app_ready));
    if (cp->snapshot_hash) {
        char hash[24];
        snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)cp->snapshot_hash);
        json_object_set_new(hello, "snapshot", json_string(hash));
    }
    char *s = json_dumps(hello, JSON_COMPACT);
    json_decref(hello);
    size_t n = strlen(s);
    s = rete_realloc(s, n + 2);
    memcpy(s + n, "\n", 2);
    cp->stream = cp_http_start(cp, cp->ctx_cert, true, "GET", "/xds/v1/stream", NULL, s, &stream_cbs);
    free(s);
    if (!cp->stream) {
        cp_server_failed(cp);
        cp_stream_schedule_retry(cp);
    }
}

static void on_retry(uv_timer_t *t)
{
    rete_cp *cp = t->data;
    if (cp->cert_not_after && cp->cert_not_after > (int64_t)time(NULL))
        cp_stream_connect(cp);
    else
        cp_certs_request(cp, false);
}

void cp_stream_schedule_retry(rete_cp *cp)
{
    if (cp->draining || uv_is_active((uv_handle_t *)&cp->retry_timer))
        return;
    /* Jittered exponential backoff: full jitter over [backoff/2, backoff]. */
    cp->backoff_ms = cp->backoff_ms ? cp->backoff_ms * 2 : CP_BACKOFF_MIN_MS;
    if (cp->backoff_ms > CP_BACKOFF_MAX_MS)
        cp->backoff_ms = CP_BACKOFF_MAX_MS;
    uint64_t ms = cp->backoff_ms / 2 + (uint64_t)rand() % (cp->backoff_ms / 2 + 1);
    cp->retry_timer.data = cp;
    uv_timer_start(&cp->retry_timer, on_retry, ms, 0);
}

static void on_ping(uv_timer_t *t)
{
    rete_cp *cp = t->data;
    if (!cp->connected)
        return;
    if (uv_now(cp->p->loop) - cp->last_rx_ms > CP_SILENT_MS) {
        /* A replica that stopped answering without closing (its host gone,
         * its loop stuck): give the stream up; on_close moves on. */
        rete_warn("control plane: no word from %s for %d s: closing the config stream", cp_server_cur(cp)->name,
                  CP_SILENT_MS / 1000);
        cp_http_close(cp->stream);
        return;
    }
    cp_stream_send(cp, json_pack("{s:s}", "type", "ping"));
}

void cp_stream_start_timers(rete_cp *cp)
{
    cp->ping_timer.data = cp;
    uv_timer_start(&cp->ping_timer, on_ping, CP_PING_MS, CP_PING_MS);
}
