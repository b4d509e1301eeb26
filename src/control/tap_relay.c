/* Tap in reted (tap_relay.h): the operator's stream, the proxies' taps, the relay. */
#include "tap_relay.h"

#include "alloc.h"
#include "log.h"
#include "registry.h"
#include "reted.h"
#include "vec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAP_CLIENT_MAX_LINE 4096 /* clients send nothing; a line is a protocol error */

typedef struct tap_client {
    struct tap_client *next;
    reted_tap *tap;
    reted *r;
    rete_http_stream *st;
} tap_client;

struct reted_tap {
    reted_tap *next;
    char id[24];
    char key[1400];     /* kind, namespace, name and filters: clients with the same key share it */
    char kind[16];
    char ns[254];
    char name[254];
    json_t *match;      /* what the proxies get */
    tap_client *clients;
    size_t n_clients;
};

/* Percent-decode a query value into out (NUL-terminated); false when it
 * does not fit or is malformed. */
static bool query_str(const rete_http_req *req, const char *key, char *out, size_t cap)
{
    rete_view v = rete_http_query_get(req, key);
    size_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.p[i];
        if (c == '%') {
            if (i + 2 >= v.len)
                return false;
            char hex[3] = {v.p[i + 1], v.p[i + 2], 0};
            char *end;
            long x = strtol(hex, &end, 16);
            if (*end || x <= 0)
                return false;
            c = (char)x;
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = c;
    }
    out[n] = '\0';
    return true;
}

static void to_clients(reted_tap *t, json_t *obj)
{
    size_t n;
    char *s = rete_http_json_line(obj, &n);
    if (!s)
        return;
    /* a send may cut a client that is too far behind (its on_close unlinks it) */
    for (tap_client *c = t->clients, *next; c; c = next) {
        next = c->next;
        rete_http_stream_send(c->st, s, n);
    }
    free(s);
}

/* Whether proxy p is in tap t's target: its own workload (workload), a
 * workload of the deployment (deploy: NAME or NAME-*), or any proxy
 * (service: the match names the Service, each proxy keeps its requests to
 * it and, on the called side, from it). */
static bool in_target(const reted_tap *t, const reted_proxy *p)
{
    if (!p->stream)
        return false;
    if (strcmp(t->kind, "service") == 0)
        return true;
    if (strcmp(p->ns, t->ns) != 0)
        return false;
    size_t n = strlen(t->name);
    if (strcmp(t->kind, "workload") == 0)
        return strcmp(p->name, t->name) == 0;
    return strcmp(p->name, t->name) == 0 || (strncmp(p->name, t->name, n) == 0 && p->name[n] == '-');
}

static void tell_proxy(const reted_tap *t, reted_proxy *p, bool start)
{
    json_t *m = start ? json_pack("{s:s,s:s,s:O}", "type", "tap", "id", t->id, "match", t->match)
                      : json_pack("{s:s,s:s}", "type", "tap-stop", "id", t->id);
    rete_http_stream_send_json(p->stream, m);
}

static void tap_free(reted *r, reted_tap *t)
{
    for (reted_tap **pp = &r->taps.list; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    r->taps.n--;
    for (reted_proxy *p = r->registry.proxies; p; p = p->next)
        if (p->stream && in_target(t, p))
            tell_proxy(t, p, false);
    rete_info("tap %s (%s %s/%s): last client gone, stopped", t->id, t->kind, t->ns, t->name);
    json_decref(t->match);
    free(t);
}

static void client_on_line(rete_http_stream *st, const char *line, size_t len)
{
    (void)st;
    (void)line;
    (void)len; /* nothing is expected from a client */
}

static void client_on_close(rete_http_stream *st)
{
    tap_client *c = rete_http_stream_owner(st);
    reted_tap *t = c->tap;
    for (tap_client **pp = &t->clients; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    t->n_clients--;
    reted *r = c->r;
    free(c);
    if (!t->n_clients)
        tap_free(r, t);
}

static const rete_http_stream_cbs client_cbs = {client_on_line, client_on_close};

static void bad(rete_http_req *req, int status, const char *msg)
{
    rete_http_respond_jobj(req, status, json_pack("{s:s}", "error", msg));
}

static bool name_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '.'))
            return false;
    return true;
}

void reted_tap_api(reted *r, rete_http_req *req)
{
    char kind[16], name[254], ns[254], path[256], method[16], status[8], headers[8];
    if (!query_str(req, "kind", kind, sizeof(kind)) || !query_str(req, "name", name, sizeof(name)) ||
        !query_str(req, "namespace", ns, sizeof(ns)) || !query_str(req, "path", path, sizeof(path)) ||
        !query_str(req, "method", method, sizeof(method)) || !query_str(req, "status", status, sizeof(status)) ||
        !query_str(req, "headers", headers, sizeof(headers))) {
        bad(req, 400, "a query value is too long or badly percent-encoded (path: 255 bytes, method: 15)");
        return;
    }
    if (strcmp(kind, "deploy") != 0 && strcmp(kind, "service") != 0 && strcmp(kind, "workload") != 0) {
        bad(req, 400, "kind: deploy, service or workload");
        return;
    }
    if (!name_ok(name) || !name_ok(ns)) {
        bad(req, 400, "name and namespace: lower-case names");
        return;
    }
    if (path[0] && path[0] != '/') {
        bad(req, 400, "path: a prefix starting with /");
        return;
    }
    for (char *m = method; *m; m++)
        if (!(*m >= 'A' && *m <= 'Z')) {
            bad(req, 400, "method: an HTTP method in capitals (GET, POST...)");
            return;
        }
    char *end = NULL;
    long code = status[0] ? strtol(status, &end, 10) : 0;
    if (status[0] && (*end || code < 0 || code > 999)) {
        bad(req, 400, "status: an HTTP status code (0: no response)");
        return;
    }
    bool with_headers = strcmp(headers, "true") == 0;
    char key[sizeof(((reted_tap *)0)->key)];
    snprintf(key, sizeof(key), "%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%ld\x1f%d", kind, ns, name, path, method, code,
             with_headers);
    reted_tap *t = r->taps.list;
    while (t && strcmp(t->key, key) != 0)
        t = t->next;
    if (t && t->n_clients >= RETED_TAP_MAX_CLIENTS) {
        bad(req, 429, "this tap has as many clients as it may have (8)");
        return;
    }
    if (!t && r->taps.n >= RETED_TAP_MAX) {
        bad(req, 429, "reted runs as many taps as it may (16); try again when one ends");
        return;
    }
    bool created = !t;
    if (!t) {
        t = rete_calloc(1, sizeof(*t));
        snprintf(t->id, sizeof(t->id), "t%llu", (unsigned long long)++r->taps.next_id);
        snprintf(t->key, sizeof(t->key), "%s", key);
        snprintf(t->kind, sizeof(t->kind), "%s", kind);
        snprintf(t->ns, sizeof(t->ns), "%s", ns);
        snprintf(t->name, sizeof(t->name), "%s", name);
        t->match = json_object();
        if (strcmp(kind, "service") == 0) {
            char fqdn[600];
            snprintf(fqdn, sizeof(fqdn), "%s.%s.svc." RETE_CLUSTER_DOMAIN, name, ns);
            json_object_set_new(t->match, "service", json_string(fqdn));
        }
        if (path[0])
            json_object_set_new(t->match, "path", json_string(path));
        if (method[0])
            json_object_set_new(t->match, "method", json_string(method));
        if (status[0])
            json_object_set_new(t->match, "status", json_integer(code ? code : -1));
        if (with_headers)
            json_object_set_new(t->match, "headers", json_true());
        t->next = r->taps.list;
        r->taps.list = t;
        r->taps.n++;
    }
    tap_client *c = rete_calloc(1, sizeof(*c));
    c->tap = t;
    c->r = r;
    c->next = t->clients;
    t->clients = c;
    t->n_clients++;
    r->taps.clients_total++;
    c->st = rete_http_stream_start(req, "application/x-ndjson", &client_cbs, c, TAP_CLIENT_MAX_LINE);
    size_t n = 0;
    json_t *names = json_array();
    for (reted_proxy *p = r->registry.proxies; p; p = p->next)
        if (in_target(t, p)) {
            n++;
            char who[520];
            snprintf(who, sizeof(who), "%s/%s", p->ns, p->name);
            json_array_append_new(names, json_string(who));
            if (created)
                tell_proxy(t, p, true);
        }
    if (created)
        rete_info("tap %s (%s %s/%s): started at %zu proxies", t->id, kind, ns, name, n);
    /* the client learns which proxies were told; each says "started" (for a
     * tap it joined, they already have) */
    rete_http_stream_send_json(c->st, json_pack("{s:s,s:s,s:o,s:O,s:b}", "type", "tap", "id", t->id, "proxies", names, "match",
                               t->match, "shared", !created));
}

size_t reted_tap_count(const reted *r)
{
    return r->taps.n;
}

static reted_tap *tap_by_id(reted *r, const char *id)
{
    reted_tap *t = r->taps.list;
    while (t && id && strcmp(t->id, id) != 0)
        t = t->next;
    return id ? t : NULL;
}

void reted_tap_on_proxy(reted *r, reted_proxy *p, const char *type, json_t *msg)
{
    const char *id = json_string_value(json_object_get(msg, "id"));
    char who[520];
    snprintf(who, sizeof(who), "%s/%s", p->ns, p->name);
    if (strcmp(type, "tap-events") == 0) {
        json_t *dropped = json_object_get(msg, "dropped");
        json_int_t d = json_is_integer(dropped) ? json_integer_value(dropped) : 0;
        if (id && !*id) {
            /* drops the proxy could not put on a tap's events: every tap it is in */
            for (reted_tap *t = r->taps.list, *next; t && d > 0; t = next) {
                next = t->next; /* sending may cut t's last client, and free t */
                if (in_target(t, p))
                    to_clients(t, json_pack("{s:s,s:s,s:I}", "type", "dropped", "proxy", who, "count", d));
            }
            return;
        }
        reted_tap *t = tap_by_id(r, id);
        if (t && d > 0)
            to_clients(t, json_pack("{s:s,s:s,s:I}", "type", "dropped", "proxy", who, "count", d));
        json_t *events = json_object_get(msg, "events");
        size_t i;
        json_t *e;
        json_array_foreach(events, i, e)
        {
            if (!(t = tap_by_id(r, id)))
                return; /* every client was cut */
            if (!json_is_object(e))
                continue;
            /* a proxy speaks for itself: the record names it, whatever it says */
            json_object_set_new(e, "proxy", json_string(who));
            json_object_set_new(e, "type", json_string("request"));
            to_clients(t, json_incref(e));
        }
        return;
    }
    reted_tap *t = tap_by_id(r, id);
    if (!t)
        return;
    if (strcmp(type, "tap-started") == 0) {
        to_clients(t, json_pack("{s:s,s:s}", "type", "started", "proxy", who));
    } else if (strcmp(type, "tap-error") == 0) {
        const char *e = json_string_value(json_object_get(msg, "error"));
        to_clients(t, json_pack("{s:s,s:s,s:s}", "type", "error", "proxy", who, "error", e ? e : "?"));
    }
}

void reted_tap_on_hello(reted *r, reted_proxy *p)
{
    for (reted_tap *t = r->taps.list; t; t = t->next)
        if (in_target(t, p))
            tell_proxy(t, p, true);
}
