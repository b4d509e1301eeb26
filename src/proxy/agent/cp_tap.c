/* Tap on the config stream (docs/control-plane.md, "Tap"): reted's "tap"
 * and "tap-stop" messages start and stop taps (tap.h); while one is on, or
 * records wait, the agent takes the captured records every
 * CP_TAP_FLUSH_MS, formats them as JSON and sends them up the stream as
 * "tap-events" lines of at most CP_TAP_MAX_LINE bytes. A stream that closes
 * stops every tap: reted starts them again on the next stream if its
 * clients are still there. */
#include "alloc.h"
#include "cp_http.h"
#include "cp_state.h"
#include "json_out.h"
#include "log.h"
#include "tap.h"
#include "vec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CP_TAP_FLUSH_MS 250
#define CP_TAP_MAX_LINE (48u << 10) /* reted reads lines of 64 KiB at most */
#define CP_TAP_EVENT_MAX (24u << 10) /* one event, every field escaped 6 to 1 */

static double gauge_active(void *arg)
{
    (void)arg;
    return (double)rete_tap_active();
}

static uint64_t count_of(void *arg)
{
    uint64_t c[3];
    rete_tap_counts(&c[0], &c[1], &c[2]);
    return c[(uintptr_t)arg];
}

void cp_tap_init(rete_cp *cp)
{
    rete_proxy *p = cp->p;
    static const char *const results[3] = {"captured", "dropped_rate", "dropped_queue"};
    rete_metric m;
    bool ok = rete_metrics_series(p->metrics, p->mm->tap_active, NULL, 0, &m) == RETE_OK &&
              rete_metrics_gauge_fn(p->metrics, m, gauge_active, NULL) == RETE_OK;
    for (uintptr_t i = 0; ok && i < 3; i++) {
        rete_view v = rete_view_cstr(results[i]);
        ok = rete_metrics_series(p->metrics, p->mm->tap_events_total, &v, 1, &m) == RETE_OK &&
             rete_metrics_counter_fn(p->metrics, m, count_of, (void *)i) == RETE_OK;
    }
    if (!ok)
        rete_warn("metrics: cannot bind the tap's series");
    uv_timer_init(p->loop, &cp->tap_timer);
    cp->tap_timer.data = cp;
}

static void jstr(rete_buf *b, const char *p, size_t len)
{
    char tmp[6 * 1024 + 3];
    size_t n = rete_json_escape(tmp + 1, sizeof(tmp) - 2, p, len);
    tmp[0] = '"';
    rete_buf_append(b, tmp, n + 1);
    rete_buf_append(b, "\"", 1);
}

#define FIELD(b, key, f) (rete_buf_append_str((b), ",\"" key "\":"), jstr((b), (f).p, (f).len))

/* One record as a JSON object (docs/observability.md, "Tap"). */
static void format_event(rete_buf *b, const rete_tap_record *r, const char *proxy)
{
    char t[160];
    time_t sec = (time_t)(r->start_unix_ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    snprintf(t, sizeof(t), "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"proxy\":", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(r->start_unix_ms % 1000));
    rete_buf_append_str(b, t);
    jstr(b, proxy, strlen(proxy));
    rete_buf_append_str(b, r->inbound ? ",\"direction\":\"inbound\"" : ",\"direction\":\"outbound\"");
    FIELD(b, "method", r->method);
    FIELD(b, "authority", r->authority);
    FIELD(b, "path", r->path);
    snprintf(t, sizeof(t), ",\"status\":%d,\"latencyMs\":%.3f", r->status, (double)r->latency_us / 1000.0);
    rete_buf_append_str(b, t);
    FIELD(b, "route", r->route);
    FIELD(b, "responseFlags", r->flags);
    FIELD(b, "requestId", r->request_id);
    FIELD(b, "service", r->service);
    FIELD(b, "upstream", r->upstream);
    rete_buf_append_str(b, ",\"source\":{\"workload\":");
    jstr(b, r->src_wl.p, r->src_wl.len);
    FIELD(b, "namespace", r->src_ns);
    FIELD(b, "principal", r->src_principal);
    rete_buf_append_str(b, "},\"destination\":{\"workload\":");
    jstr(b, r->dst_wl.p, r->dst_wl.len);
    FIELD(b, "namespace", r->dst_ns);
    FIELD(b, "principal", r->dst_principal);
    rete_buf_append_str(b, "},\"headers\":[");
    size_t off = 0;
    for (uint16_t i = 0; i < r->n_headers && off < r->hdr.len; i++) {
        size_t nl = strnlen(r->hdr.p + off, r->hdr.len - off);
        const char *name = r->hdr.p + off;
        off += nl + 1;
        size_t vl = off < r->hdr.len ? strnlen(r->hdr.p + off, r->hdr.len - off) : 0;
        const char *value = r->hdr.p + off;
        off += vl + 1;
        rete_buf_append_str(b, i ? ",[" : "[");
        jstr(b, name, nl);
        rete_buf_append(b, ",", 1);
        jstr(b, value, vl);
        rete_buf_append(b, "]", 1);
    }
    rete_buf_append_str(b, "]}");
}

static void send_line(rete_cp *cp, rete_buf *line)
{
    rete_buf_append_str(line, "]}\n");
    if (cp->stream)
        cp_http_write(cp->stream, line->p, line->len);
    line->len = 0;
}

/* Take what was captured and send it, one line per tap id (a line full at
 * CP_TAP_MAX_LINE goes and the next starts). */
static rete_tap_record recs[RETE_TAP_QUEUE]; /* one take's records (main loop only) */

static void flush(rete_cp *cp)
{
    size_t n = rete_tap_take(recs, RETE_TAP_QUEUE);
    uint64_t c[3];
    rete_tap_counts(&c[0], &c[1], &c[2]);
    uint64_t dropped = c[1] + c[2] - cp->tap_dropped_told;
    if (!cp->connected || !cp->stream)
        return; /* nobody to tell: the taps stop with the stream */
    char proxy[600];
    snprintf(proxy, sizeof(proxy), "%s/%s", cp->p->cfg ? cp->p->cfg->proxy.ns : "",
             cp->p->cfg ? cp->p->cfg->proxy.name : "");
    rete_buf line = {0}, ev = {0};
    bool *done = rete_calloc(n ? n : 1, sizeof(bool));
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        const char *id = recs[i].id;
        for (size_t j = i; j < n; j++) {
            if (done[j] || strcmp(recs[j].id, id) != 0)
                continue;
            done[j] = true;
            ev.len = 0;
            format_event(&ev, &recs[j], proxy);
            if (line.len && line.len + ev.len + 8 > CP_TAP_MAX_LINE)
                send_line(cp, &line);
            if (!line.len) {
                rete_buf_append_str(&line, "{\"type\":\"tap-events\",\"id\":");
                jstr(&line, id, strlen(id));
                char d[64];
                snprintf(d, sizeof(d), ",\"dropped\":%llu,\"events\":[", (unsigned long long)dropped);
                rete_buf_append_str(&line, d);
                dropped = 0;
            } else {
                rete_buf_append(&line, ",", 1);
            }
            rete_buf_append(&line, ev.p, ev.len);
        }
        send_line(cp, &line);
    }
    if (dropped)
        /* drops without events to carry them: reted gives them to every tap */
        cp_stream_send(cp, json_pack("{s:s,s:s,s:I,s:[]}", "type", "tap-events", "id", "", "dropped",
                                     (json_int_t)dropped, "events"));
    cp->tap_dropped_told = c[1] + c[2];
    free(done);
    rete_buf_free(&line);
    rete_buf_free(&ev);
}

static void on_tap_timer(uv_timer_t *t)
{
    rete_cp *cp = t->data;
    flush(cp);
    if (!rete_tap_active())
        uv_timer_stop(&cp->tap_timer);
}

static bool parse_match(json_t *m, rete_tap_match *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const char *id = json_string_value(json_object_get(m, "id"));
    json_t *match = json_object_get(m, "match");
    if (!id || !*id || strlen(id) >= sizeof(out->id) || (match && !json_is_object(match))) {
        snprintf(err, errlen, "tap: an id of 1 to %zu bytes and a match object", sizeof(out->id) - 1);
        return false;
    }
    snprintf(out->id, sizeof(out->id), "%s", id);
    static const struct {
        const char *key;
        size_t off, size;
    } strs[] = {
        {"service", offsetof(rete_tap_match, service), sizeof(out->service)},
        {"path", offsetof(rete_tap_match, path), sizeof(out->path)},
        {"method", offsetof(rete_tap_match, method), sizeof(out->method)},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        json_t *v = json_object_get(match, strs[i].key);
        if (!v)
            continue;
        if (!json_is_string(v) || json_string_length(v) >= strs[i].size) {
            snprintf(err, errlen, "tap: match.%s: a string of at most %zu bytes", strs[i].key, strs[i].size - 1);
            return false;
        }
        memcpy((char *)out + strs[i].off, json_string_value(v), json_string_length(v) + 1);
    }
    json_t *st = json_object_get(match, "status");
    if (st && (!json_is_integer(st) || json_integer_value(st) < -1 || json_integer_value(st) > 999)) {
        snprintf(err, errlen, "tap: match.status: an HTTP status, or -1 for none");
        return false;
    }
    out->status = st ? (int)json_integer_value(st) : 0;
    out->headers = json_is_true(json_object_get(match, "headers"));
    return true;
}

void cp_tap_on_message(rete_cp *cp, const char *type, json_t *m)
{
    if (strcmp(type, "tap-stop") == 0) {
        const char *id = json_string_value(json_object_get(m, "id"));
        if (id) {
            rete_tap_stop(id);
            rete_info("control plane: tap %s stopped (%zu on)", id, rete_tap_active());
        }
        return;
    }
    rete_tap_match match;
    char err[200];
    rete_error e = {0};
    const char *id = json_string_value(json_object_get(m, "id"));
    if (!parse_match(m, &match, err, sizeof(err))) {
        cp_stream_send(cp, json_pack("{s:s,s:s,s:s}", "type", "tap-error", "id", id ? id : "", "error", err));
        return;
    }
    if (rete_tap_start(&match, &e) != RETE_OK) {
        cp_stream_send(cp, json_pack("{s:s,s:s,s:s}", "type", "tap-error", "id", match.id, "error", e.msg));
        return;
    }
    rete_info("control plane: tap %s started (%zu on)", match.id, rete_tap_active());
    if (!uv_is_active((uv_handle_t *)&cp->tap_timer))
        uv_timer_start(&cp->tap_timer, on_tap_timer, CP_TAP_FLUSH_MS, CP_TAP_FLUSH_MS);
    cp_stream_send(cp, json_pack("{s:s,s:s}", "type", "tap-started", "id", match.id));
}

void cp_tap_stream_closed(rete_cp *cp)
{
    if (rete_tap_active())
        rete_info("control plane: stream closed: stopping %zu taps", rete_tap_active());
    rete_tap_stop(NULL);
    (void)rete_tap_take(recs, RETE_TAP_QUEUE); /* nobody to send them to */
    uv_timer_stop(&cp->tap_timer);
}

void cp_tap_close(rete_cp *cp)
{
    cp_tap_stream_closed(cp);
    uv_close((uv_handle_t *)&cp->tap_timer, NULL);
}
