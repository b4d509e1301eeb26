/* The proxy API (proxy_api.h): the proxy-facing side of reted (15012,
 * TLS): certificate issuance, the config streams, and registration of the
 * workloads that proxies announce into the registry (registry.h).
 * Protocol: docs/control-plane.md. */
#include "proxy_api.h"

#include "alloc.h"
#include "compiler.h"
#include "golden.h"
#include "json_out.h"
#include "log.h"
#include "vec.h"
#include "push.h"
#include "registry.h"
#include "resources.h"
#include "reted.h"
#include "spiffe.h"
#include "tap_relay.h"
#include "token.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What a proxy sends on its stream is small (hello, ACK, NACK with an
 * error of a few hundred bytes, health, tap records in lines of at most
 * 48 KiB (cp_tap.c), a stats summary of at most
 * RETE_GOLDEN_MAX_REPORT_BYTES of entries): a longer line closes it. */
#define XDS_MAX_LINE (64u << 10)

/* spiffe://<td>/ns/<ns>/sa/<sa> -> ns, sa; false when not of that shape or
 * not in our trust domain. */
static bool split_spiffe(const reted *r, const char *id, char *ns, size_t nslen, char *sa, size_t salen)
{
    rete_spiffe_parts p;
    if (!rete_spiffe_parse(id, strlen(id), &p) || !rete_view_eq(p.td, rete_view_cstr(r->trust_domain)) ||
        p.ns.len >= nslen || p.sa.len >= salen)
        return false;
    snprintf(ns, nslen, "%.*s", (int)p.ns.len, p.ns.p);
    snprintf(sa, salen, "%.*s", (int)p.sa.len, p.sa.p);
    return true;
}

/* ---- certificates ---- */

/* The issuance answer, written directly: it is mostly PEM, which a JSON
 * library would copy into a tree and then escape again (a tenth of an
 * issuance's CPU time). */
static void respond_certificate(rete_http_req *req, const char *chain, const char *bundle,
                                int64_t not_after, const char *spiffe)
{
    rete_buf b = {0};
    rete_buf_reserve(&b, strlen(chain) + strlen(bundle) + strlen(spiffe) + 256, 0);
    rete_buf_append_str(&b, "{\"certChain\":");
    rete_json_append_utf8(&b, chain, strlen(chain));
    rete_buf_append_str(&b, ",\"trustBundle\":");
    rete_json_append_utf8(&b, bundle, strlen(bundle));
    char mid[64];
    rete_buf_append(&b, mid, (size_t)snprintf(mid, sizeof(mid), ",\"expiresAt\":%lld,\"spiffeId\":", (long long)not_after));
    rete_json_append_utf8(&b, spiffe, strlen(spiffe));
    rete_buf_append(&b, "}", 1);
    rete_http_respond(req, 200, "application/json", b.p, b.len, NULL);
    rete_buf_free(&b);
}

/* A renewal: the client presented `presented` and got `issued`. The
 * stream of that identity whose certificate it renewed (the stream's own,
 * or the one recorded at its last renewal: a renewal whose answer was lost
 * is retried with the older one) holds `issued` from now on. The stream
 * stays on the certificate it was opened with (rete-proxy does not
 * reconnect after a renewal), so what reted signed is what it knows of the
 * proxy's newest certificate; a replica of the same service account renews
 * its own certificate, not this stream's. */
static void record_renewal(reted *r, const char *spiffe, const rete_cert_facts *presented,
                           const rete_cert_facts *issued)
{
    for (reted_proxy *p = r->registry.proxies; p; p = p->next) {
        if (!p->stream || strcmp(p->spiffe_id, spiffe) != 0)
            continue;
        if (rete_cert_same_serial(&p->stream_cert, presented) || rete_cert_same_serial(&p->cert, presented)) {
            p->cert = *issued;
            rete_debug("ca: %s/%s renewed its certificate, valid until %lld", p->ns, p->name,
                       (long long)issued->not_after);
        }
    }
}

static void ca_certificates(reted *r, rete_http_req *req)
{
    json_error_t je;
    json_t *in = json_loadb(req->body, req->body_len, 0, &je);
    const char *csr = NULL, *token = NULL;
    if (!in || json_unpack(in, "{s:s,s?s}", "csr", &csr, "token", &token) != 0) {
        json_decref(in);
        rete_http_respond_jobj(req, 400, json_pack("{s:s}", "error", "body: {\"csr\": PEM, \"token\": \"...\"}"));
        return;
    }
    char spiffe[1024];
    if (token) {
        char id[33];
        uint8_t hash[32];
        rete_store_token t;
        rete_rc rc = rete_token_parse(token, id, hash);
        if (rc == RETE_OK)
            rc = r->store->ops->token_use(r->store, id, hash, reted_now(), &t);
        if (rc == RETE_EIO) { /* the store, not the token: the proxy retries */
            json_decref(in);
            rete_http_respond_jobj(req, 503, json_pack("{s:s}", "error", "the store is unavailable; retry"));
            return;
        }
        if (rc < 0) {
            reted_count(&r->stats, r->stats.certs_refused);
            json_decref(in);
            rete_info("ca: refused a certificate request from %s: token %s", req->peer_addr,
                      rc == RETE_ELIMIT ? "expired or used up" : "unknown");
            rete_http_respond_jobj(req, 403, json_pack("{s:s}", "error",
                                            rc == RETE_ELIMIT ? "join token expired or used up"
                                                              : "join token unknown"));
            return;
        }
        rete_spiffe_format(spiffe, sizeof(spiffe), r->trust_domain, t.ns, t.sa);
    } else if (req->peer_id[0]) {
        /* Renewal: the current certificate authorises a new one for itself. */
        snprintf(spiffe, sizeof(spiffe), "%s", req->peer_id);
    } else {
        reted_count(&r->stats, r->stats.certs_refused);
        json_decref(in);
        rete_http_respond_jobj(req, 401, json_pack("{s:s}", "error",
                                        "a join token or a client certificate is required"));
        return;
    }
    rete_error err = {0};
    rete_cert_facts issued;
    char *chain = rete_ca_sign_csr_facts(r->ca, csr, strlen(csr), spiffe, reted_cert_ttl(r), &issued, &err);
    json_decref(in);
    if (!chain) {
        reted_count(&r->stats, r->stats.certs_refused);
        rete_http_respond_jobj(req, 400, json_pack("{s:s}", "error", err.msg));
        return;
    }
    reted_count(&r->stats, r->stats.certs_issued);
    if (!token && req->peer_cert)
        record_renewal(r, spiffe, req->peer_cert, &issued);
    respond_certificate(req, chain, rete_ca_bundle_pem(r->ca), issued.not_after, spiffe);
    free(chain);
}

/* ---- registration: what a hello may claim ----
 *
 * The rules (docs/control-plane.md, "Registration"): a hello is bound to the
 * identity of the client certificate (namespace, service account) and to
 * what the operator declared for that identity:
 * - a Workload record belongs to one identity: the one whose stream created
 *   it (annotation rete.dev/registered-by: proxy, spec.serviceAccount), or
 *   the one the operator declared it for (an applied Workload's
 *   serviceAccount). Only that identity may attach to it; a stream of
 *   another identity is refused, a stream of the same identity (a restart)
 *   takes over from the live one;
 * - an operator's record is never written or deleted by a proxy: the hello
 *   must match it (same address, labels and egress it carries or fewer);
 * - a record a proxy creates may carry the labels and egress one
 *   WorkloadGroup of its service account (same namespace) admits; with no
 *   WorkloadGroup for the account, no labels, and the egress MeshConfig
 *   defaultEgress allows;
 * - the hello's address is the connection's source address unless reted
 *   runs with --registration-address-check off (proxies behind NAT).
 * Claims beyond that are refused (not trimmed): a trimmed registration
 * would serve with less than the proxy believes it has, silently. */

typedef reted_reg_reason reg_reason;

/* The IP literal s as bytes (IPv4-mapped IPv6 as IPv4); false if not one. */
static bool ip_bytes(const char *s, uint8_t out[16], size_t *len)
{
    if (inet_pton(AF_INET, s, out) == 1) {
        *len = 4;
        return true;
    }
    if (inet_pton(AF_INET6, s, out) != 1)
        return false;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(out, mapped, 12) == 0) {
        memmove(out, out + 12, 4);
        *len = 4;
    } else {
        *len = 16;
    }
    return true;
}

static bool same_ip(const char *a, const char *b)
{
    uint8_t x[16], y[16];
    size_t xl, yl;
    return ip_bytes(a, x, &xl) && ip_bytes(b, y, &yl) && xl == yl && memcmp(x, y, xl) == 0;
}

/* The host part of a peer address "ip:port" into out. */
static void peer_ip(const char *peer, char *out, size_t len)
{
    const char *colon = strrchr(peer, ':');
    size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
    snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), peer);
}

/* "k=v,k=v" of a labels object, for messages (bounded by out). */
static void labels_text(json_t *labels, char *out, size_t len)
{
    const char *k;
    json_t *v;
    size_t o = 0;
    out[0] = '\0';
    json_object_foreach(labels, k, v)
    {
        int n = snprintf(out + o, len - o, "%s%s=%s", o ? "," : "", k,
                         json_is_string(v) ? json_string_value(v) : "?");
        if (n < 0 || (size_t)n >= len - o)
            break;
        o += (size_t)n;
    }
}

/* Every claimed label is one of `allowed` (same key, same value). */
static bool labels_within(json_t *claimed, json_t *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(claimed, k, v)
    {
        json_t *a = json_object_get(allowed, k);
        if (!json_is_string(v) || !json_is_string(a) || !json_equal(v, a))
            return false;
    }
    return true;
}

/* Does the egress pattern `a` cover the host `c` (both "NS/NAME", NS may be
 * "." for `ns` or "*", NAME may be "*")? A wildcard is covered only by a
 * wildcard. */
static bool egress_covers(const char *a, const char *c, const char *ns)
{
    const char *as = strchr(a, '/'), *cs = strchr(c, '/');
    if (!as || !cs)
        return false;
    size_t anl = (size_t)(as - a), cnl = (size_t)(cs - c);
    const char *an = a, *cn = c;
    if (anl == 1 && a[0] == '.')
        an = ns, anl = strlen(ns);
    if (cnl == 1 && c[0] == '.')
        cn = ns, cnl = strlen(ns);
    bool ns_ok = (anl == 1 && an[0] == '*') ||
                 (!(cnl == 1 && cn[0] == '*') && anl == cnl && memcmp(an, cn, anl) == 0);
    bool name_ok = strcmp(as + 1, "*") == 0 || (strcmp(cs + 1, "*") != 0 && strcmp(as + 1, cs + 1) == 0);
    return ns_ok && name_ok;
}

/* The first claimed egress host no pattern of `allowed` covers, or NULL
 * when all are covered. allowed NULL: the whole mesh. */
static const char *egress_outside(json_t *claimed, json_t *allowed, const char *ns)
{
    size_t i, j;
    json_t *c, *a;
    json_array_foreach(claimed, i, c)
    {
        const char *cs = json_string_value(c);
        if (!cs)
            return "(not a string)";
        bool ok = !allowed;
        json_array_foreach(allowed, j, a)
        {
            ok = ok || (json_is_string(a) && egress_covers(json_string_value(a), cs, ns));
        }
        if (!ok)
            return cs;
    }
    return NULL;
}

/* A hello's reads: the index when no change since its last sync touched
 * what is read (reted_index_clean), else the store. On etcd the index
 * follows other replicas' writes through the watch (milliseconds behind):
 * the Workload's write below is conditional on the version read, so a
 * stale read of it costs a retry, never a lost write; when the text read
 * is the one the hello would write, nothing is written and a newer stored
 * version, if any, stays (the watch brings it). */
static void index_entry_resource(const reted_ires *e, rete_store_resource *out)
{
    *out = (rete_store_resource){e->kind, e->ns, e->name, e->json->data, e->version, 0, 0};
}

static rete_rc hello_list(reted *r, const char *kind, const char *ns, rete_store_each_fn fn, void *arg)
{
    const reted_index *ix = reted_index_clean(r, kind, ns, NULL);
    if (!ix)
        return r->store->ops->list(r->store, kind, ns, fn, arg);
    size_t first, end;
    reted_index_range(ix, kind, ns, &first, &end);
    for (size_t i = first; i < end; i++) {
        rete_store_resource res;
        index_entry_resource(ix->v[i], &res);
        if (!fn(&res, arg))
            break;
    }
    return RETE_OK;
}

/* The stored Workload ns/name: RETE_OK (*out filled), RETE_ENOTFOUND, or
 * the store's failure. */
static rete_rc hello_get_workload(reted *r, const char *ns, const char *name, rete_store_resource *out)
{
    const reted_index *ix = reted_index_clean(r, "Workload", ns, name);
    if (!ix)
        return r->store->ops->get(r->store, "Workload", ns, name, out);
    const reted_ires *e = reted_index_get(ix, "Workload", ns, name);
    if (!e)
        return RETE_ENOTFOUND;
    index_entry_resource(e, out);
    return RETE_OK;
}

typedef struct groups_ctx {
    const char *sa;
    json_t *groups;      /* the specs of the account's WorkloadGroups */
    json_t *mesh_egress; /* MeshConfig defaultEgress, or NULL */
} groups_ctx;

static bool collect_group(const rete_store_resource *res, void *arg)
{
    groups_ctx *g = arg;
    json_t *doc = json_loads(res->json, 0, NULL);
    json_t *spec = json_object_get(doc, "spec");
    if (strcmp(res->kind, "MeshConfig") == 0) {
        json_t *e = json_object_get(spec, "defaultEgress");
        if (json_array_size(e) && !g->mesh_egress)
            g->mesh_egress = json_incref(e);
    } else {
        const char *sa = json_string_value(json_object_get(spec, "serviceAccount"));
        if (sa && strcmp(sa, g->sa) == 0)
            json_array_append(g->groups, spec);
    }
    json_decref(doc);
    return true;
}

/* A hello's claims, and what reted found about them. */
typedef struct hello_claim {
    const char *ns, *sa, *spiffe, *name, *address;
    json_t *labels;  /* the claimed labels (an empty object when none) */
    json_t *egress;  /* the claimed egress, or NULL */
    json_t *record;  /* the stored Workload, or NULL */
    char *record_text;   /* its JSON text as stored (NULL when none) */
    uint64_t record_version; /* its version as read (0 when none) */
    bool operator_record; /* stored and not created by a proxy */
    json_t *grant_egress; /* to write when the hello claims none: the group's */
} hello_claim;

static reg_reason refuse_with(char *err, size_t errlen, reg_reason why, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static reg_reason refuse_with(char *err, size_t errlen, reg_reason why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return why;
}

/* Labels and egress of a hello that creates or refreshes its own record:
 * admitted by one WorkloadGroup of its account, or (no group) no labels
 * and an egress within MeshConfig defaultEgress. RETED_REG_N when admitted. */
static reg_reason check_grant(reted *r, hello_claim *h, char *err, size_t errlen)
{
    groups_ctx g = {h->sa, json_array(), NULL};
    if (hello_list(r, "WorkloadGroup", h->ns, collect_group, &g) < 0 ||
        hello_list(r, "MeshConfig", NULL, collect_group, &g) < 0) {
        json_decref(g.groups);
        json_decref(g.mesh_egress);
        return refuse_with(err, errlen, RETED_REG_INVALID, "hello: store unavailable");
    }
    char lt[512];
    labels_text(h->labels, lt, sizeof(lt));
    reg_reason why = RETED_REG_N;
    const char *outside = NULL;
    if (json_array_size(g.groups) == 0) {
        if (json_object_size(h->labels))
            why = refuse_with(err, errlen, RETED_REG_LABELS,
                              "hello: labels %s are not admitted for %s: no WorkloadGroup of service "
                              "account %s in namespace %s",
                              lt, h->spiffe, h->sa, h->ns);
        else if ((outside = egress_outside(h->egress, g.mesh_egress, h->ns)))
            why = refuse_with(err, errlen, RETED_REG_EGRESS,
                              "hello: egress %s is not admitted for %s: outside MeshConfig "
                              "defaultEgress (and no WorkloadGroup of service account %s in "
                              "namespace %s)",
                              outside, h->spiffe, h->sa, h->ns);
    } else {
        size_t i;
        json_t *spec;
        bool labels_ok = false;
        why = RETED_REG_LABELS;
        json_array_foreach(g.groups, i, spec)
        {
            if (!labels_within(h->labels, json_object_get(spec, "labels")))
                continue;
            labels_ok = true;
            json_t *ge = json_object_get(spec, "egress");
            json_t *allowed = json_array_size(ge) ? ge : g.mesh_egress;
            const char *o = egress_outside(h->egress, allowed, h->ns);
            if (!o) {
                why = RETED_REG_N;
                if (!h->egress && json_array_size(ge))
                    h->grant_egress = json_incref(ge);
                break;
            }
            outside = outside ? outside : o;
        }
        if (why != RETED_REG_N && !labels_ok)
            refuse_with(err, errlen, RETED_REG_LABELS,
                        "hello: labels %s are not admitted for %s: no WorkloadGroup of service "
                        "account %s in namespace %s allows them",
                        lt, h->spiffe, h->sa, h->ns);
        else if (why != RETED_REG_N)
            why = refuse_with(err, errlen, RETED_REG_EGRESS,
                              "hello: egress %s is not admitted for %s: outside the egress of every "
                              "WorkloadGroup of service account %s in namespace %s that admits its "
                              "labels",
                              outside, h->spiffe, h->sa, h->ns);
    }
    json_decref(g.groups);
    json_decref(g.mesh_egress);
    return why;
}

/* A record's owner: its spec.serviceAccount ("default" when absent, as the
 * loader reads it), and whether a proxy created it. */
static const char *record_sa(json_t *rec)
{
    const char *sa = json_string_value(json_object_get(json_object_get(rec, "spec"), "serviceAccount"));
    return sa ? sa : "default";
}

/* Everything a hello may claim, checked (the rules above). RETED_REG_N when it
 * may register; else the reason, with a message in err. */
static reg_reason check_hello(reted *r, rete_http_stream *st, hello_claim *h, char *err, size_t errlen)
{
    if (!r->registry.address_check_off) {
        char from[64];
        peer_ip(rete_http_stream_peer_addr(st), from, sizeof(from));
        if (!same_ip(from, h->address))
            return refuse_with(err, errlen, RETED_REG_ADDRESS,
                               "hello: address %s is not this proxy's: its connection comes from %s "
                               "(rete-proxy connects from its --address; behind NAT run reted "
                               "--registration-address-check off)",
                               h->address, from);
    }
    reted_proxy *live = reted_proxy_find(r, h->ns, h->name);
    if (live && live->stream && strcmp(live->sa, h->sa) != 0)
        return refuse_with(err, errlen, RETED_REG_OWNER,
                           "hello: Workload %s/%s is connected as another identity (%s)", h->ns,
                           h->name, live->spiffe_id);
    rete_store_resource res;
    rete_rc rc = hello_get_workload(r, h->ns, h->name, &res);
    if (rc != RETE_OK && rc != RETE_ENOTFOUND)
        return refuse_with(err, errlen, RETED_REG_INVALID, "hello: store unavailable");
    if (rc == RETE_OK) {
        h->record = json_loads(res.json, 0, NULL);
        h->record_text = rete_strdup(res.json);
        h->record_version = res.resource_version;
    }
    if (!h->record)
        return check_grant(r, h, err, errlen);
    h->operator_record = !reted_record_by_proxy(h->record);
    if (strcmp(record_sa(h->record), h->sa) != 0)
        return refuse_with(err, errlen, RETED_REG_OWNER,
                           "hello: Workload %s/%s belongs to another identity (service account %s, "
                           "%s)",
                           h->ns, h->name, record_sa(h->record),
                           h->operator_record ? "declared by the operator" : "registered by its proxy");
    if (!h->operator_record)
        return check_grant(r, h, err, errlen);
    /* The operator's record: the hello must match it, it is never rewritten. */
    json_t *spec = json_object_get(h->record, "spec");
    const char *addr = json_string_value(json_object_get(spec, "address"));
    if (!addr || !same_ip(addr, h->address))
        return refuse_with(err, errlen, RETED_REG_ADDRESS,
                           "hello: address %s differs from the address the operator declared for "
                           "Workload %s/%s (%s)",
                           h->address, h->ns, h->name, addr ? addr : "none");
    if (!labels_within(h->labels, json_object_get(spec, "labels"))) {
        char lt[512];
        labels_text(h->labels, lt, sizeof(lt));
        return refuse_with(err, errlen, RETED_REG_LABELS,
                           "hello: labels %s are not admitted: Workload %s/%s, declared by the "
                           "operator, does not carry them",
                           lt, h->ns, h->name);
    }
    /* The record's egress is the one in force (the claim is not written):
     * a different claim would be configuration accepted and not applied. */
    json_t *re = json_object_get(spec, "egress");
    if (h->egress && !json_equal(h->egress, re))
        return refuse_with(err, errlen, RETED_REG_EGRESS,
                           "hello: egress is not admitted: Workload %s/%s, declared by the "
                           "operator, %s; the operator sets it there",
                           h->ns, h->name, re ? "has another egress" : "sets none");
    return RETED_REG_N;
}

/* Write (or refresh) the Workload a proxy registers, from its checked claims. */
static reg_reason register_workload(reted *r, json_t *wl, hello_claim *h, char *err, size_t errlen,
                                    bool *conflict)
{
    json_t *mesh_port = json_object_get(wl, "meshPort");
    json_t *doc = json_pack("{s:s,s:s,s:{s:s,s:s,s:{s:s}},s:{s:s,s:s}}", "apiVersion",
                            "networking.rete.dev/v1alpha1", "kind", "Workload", "metadata", "name",
                            h->name, "namespace", h->ns, "annotations", "rete.dev/registered-by",
                            "proxy", "spec", "address", h->address, "serviceAccount", h->sa);
    if (!doc)
        return refuse_with(err, errlen, RETED_REG_MALFORMED, "hello: workload.name and workload.address are required");
    json_t *spec = json_object_get(doc, "spec");
    if (json_object_size(h->labels))
        json_object_set(spec, "labels", h->labels);
    if (json_is_integer(mesh_port))
        json_object_set(spec, "meshPort", mesh_port);
    if (h->egress)
        json_object_set(spec, "egress", h->egress);
    else if (h->grant_egress)
        json_object_set(spec, "egress", h->grant_egress);
    reted_doc d = {doc, "Workload", h->ns, h->name, 0, 0};
    /* A Workload is selected by labels, never named by another resource:
     * checking it alone is enough (checking it against the whole store on
     * every hello made connecting N proxies cost N x store). */
    json_t *verr = reted_validate_alone(r, &d, "hello");
    if (verr) {
        json_t *det = json_array_get(json_object_get(verr, "details"), 0);
        snprintf(err, errlen, "hello: workload rejected: %s: %s",
                 json_string_value(json_object_get(det, "path")),
                 json_string_value(json_object_get(det, "reason")));
        json_decref(verr);
        json_decref(doc);
        return RETED_REG_INVALID;
    }
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    /* A proxy reconnecting registers what it registered before: the text
     * as stored, nothing to write (on etcd a reconnect storm's hellos then
     * cost only their registrations, written in batches: registry.c). */
    if (h->record_text && strcmp(h->record_text, text) == 0) {
        free(text);
        return RETED_REG_N;
    }
    /* Written only over the version checked (or only if still absent):
     * another writer in between is a conflict, and the caller checks again. */
    rete_store_write w = {"Workload", h->ns, h->name, text, h->record ? h->record_version : UINT64_MAX};
    size_t failed;
    rete_rc rc = r->store->ops->apply(r->store, &w, 1, &failed);
    free(text);
    if (rc == RETE_ECONFLICT) {
        *conflict = true;
        return refuse_with(err, errlen, RETED_REG_INVALID,
                           "hello: Workload %s/%s changed while it was being registered", h->ns, h->name);
    }
    if (rc < 0)
        return refuse_with(err, errlen, RETED_REG_INVALID, "hello: store write failed");
    if (!w.unchanged)
        reted_changed(r, "Workload", h->ns, h->name);
    return RETED_REG_N;
}

/* A proxy's readiness as it reports it (hello, health): a change marks its
 * Workload changed, so every snapshot holding it is compiled again with the
 * Workload's spec.ready (compiler.c) and pushed, as a delta of that one
 * document, to every proxy that routes to it. On a replicated store the
 * holder writes it into the proxy's registration too (put_too), so every
 * other replica marks it the same (registry.c). */
static void set_ready(reted *r, const reted_proxy *p, bool ready, bool put_too)
{
    if (!reted_registry_apply_ready(r, p->ns, p->name, ready))
        return;
    rete_info("xds: %s/%s reports %s", p->ns, p->name,
              ready ? "ready: its Workload takes traffic again" : "not ready: its Workload takes no traffic");
    if (put_too)
        reted_registration_hold(r, p->ns, p->name, ready);
}

/* Remove the Workload of a proxy that drained or expired: only a record its
 * own identity's stream created, never the operator's, and on a replicated
 * store only while no other replica holds its stream. */
static void deregister(reted *r, reted_proxy *p)
{
    reted_workload_set_ready(r, p->ns, p->name, true); /* gone: nothing of its readiness is kept */
    reted_registration_release(r, p->ns, p->name, p->sa);
}

/* ---- streams ---- */

static void stream_refuse(rete_http_stream *st, const char *why)
{
    rete_warn("xds: refusing stream from %s (%s): %s", rete_http_stream_peer_addr(st),
              rete_http_stream_peer_id(st), why);
    rete_http_stream_send_json(st, json_pack("{s:s,s:s}", "type", "error", "error", why));
    rete_http_stream_close(st);
}

static reted_proxy *proxy_of(reted *r, rete_http_stream *st);

/* The proxy's stream is its no more (closed, replaced): the stream's tag
 * (proxy_of) is cleared with it, so a proxy freed later is never reached
 * from a stream still closing. */
static void stream_detach(reted_proxy *p)
{
    if (p->stream)
        rete_http_stream_set_tag(p->stream, NULL);
    p->stream = NULL;
}

/* A proxy's five names into one allocation of their own lengths (each
 * bounded as registry-t.h says); the previous one, which the arguments may
 * point into, is freed after the copy. */
static void set_names(reted_proxy *p, const char *ns, const char *name, const char *sa, const char *spiffe_id,
                      const char *address)
{
    const char *src[5] = {ns, name, sa, spiffe_id, address};
    const size_t max[5] = {RETED_PROXY_NAME_MAX, RETED_PROXY_NAME_MAX, RETED_PROXY_NAME_MAX,
                           RETED_PROXY_SPIFFE_ID_MAX, RETED_PROXY_ADDRESS_MAX};
    size_t len[5], total = 0;
    for (int i = 0; i < 5; i++) {
        len[i] = strnlen(src[i], max[i]);
        total += len[i] + 1;
    }
    char *names = rete_malloc(total), *w = names;
    const char **dst[5] = {&p->ns, &p->name, &p->sa, &p->spiffe_id, &p->address};
    for (int i = 0; i < 5; i++) {
        memcpy(w, src[i], len[i]);
        w[len[i]] = '\0';
        *dst[i] = w;
        w += len[i] + 1;
    }
    free(p->names);
    p->names = names;
}

static void hello_refuse(reted *r, rete_http_stream *st, reg_reason why, const char *msg)
{
    reted_count(&r->stats, r->stats.registrations_refused[why]);
    stream_refuse(st, msg);
}

static void on_hello(reted *r, rete_http_stream *st, json_t *msg)
{
    const char *peer = rete_http_stream_peer_id(st);
    char ns[254], sa[254];
    if (!split_spiffe(r, peer, ns, sizeof(ns), sa, sizeof(sa))) {
        hello_refuse(r, st, RETED_REG_IDENTITY, "client certificate is not a workload identity of this trust domain");
        return;
    }
    /* One stream, one record: a second hello would hold a second one. */
    if (proxy_of(r, st)) {
        hello_refuse(r, st, RETED_REG_MALFORMED, "hello: one hello per stream");
        return;
    }
    json_t *wl = json_object_get(msg, "workload");
    const char *wns = json_string_value(json_object_get(wl, "namespace"));
    const char *wsa = json_string_value(json_object_get(wl, "serviceAccount"));
    const char *name = json_string_value(json_object_get(wl, "name"));
    const char *address = json_string_value(json_object_get(wl, "address"));
    json_t *labels = json_object_get(wl, "labels");
    json_t *egress = json_object_get(wl, "egress");
    if (!json_is_object(wl) || !name || !address || (labels && !json_is_object(labels)) ||
        (egress && !json_is_array(egress))) {
        hello_refuse(r, st, RETED_REG_MALFORMED,
                     "hello: workload.name and workload.address are required (labels an object, "
                     "egress a list)");
        return;
    }
    /* One workload cannot speak for another namespace or service account. */
    if ((wns && strcmp(wns, ns) != 0) || (wsa && strcmp(wsa, sa) != 0)) {
        char why[700];
        snprintf(why, sizeof(why), "hello names %s/%s but the certificate is %s",
                 wns ? wns : ns, wsa ? wsa : sa, peer);
        hello_refuse(r, st, RETED_REG_IDENTITY, why);
        return;
    }
    char err[1024];
    reg_reason why;
    bool operator_record, registered = false;
    for (int attempt = 0;; attempt++) {
        hello_claim h = {ns, sa, peer, name, address, labels ? json_incref(labels) : json_object(),
                         egress, NULL, NULL, 0, false, NULL};
        why = check_hello(r, st, &h, err, sizeof(err));
        /* Replicated: this replica holds the stream from now on, queued
         * to be recorded with the other registrations of this loop turn
         * (registry.c; the leader's sweep expires a Workload only after
         * nobody has held it for the grace period, in one transaction
         * with that check). */
        if (why == RETED_REG_N && !registered) {
            reted_registration_hold(r, ns, name, !json_is_false(json_object_get(msg, "ready")));
            registered = true;
        }
        bool conflict = false;
        if (why == RETED_REG_N && !h.operator_record)
            why = register_workload(r, wl, &h, err, sizeof(err), &conflict);
        operator_record = h.operator_record;
        json_decref(h.labels);
        json_decref(h.record);
        free(h.record_text);
        json_decref(h.grant_egress);
        if (!conflict || attempt > 0)
            break;
        /* The Workload moved since it was read (another replica's write
         * the watch has not brought yet): read it from the store and
         * check the claims against it once more. */
        reted_changed(r, "Workload", ns, name);
    }
    if (why != RETED_REG_N) {
        hello_refuse(r, st, why, err);
        return;
    }
    reted_count(&r->stats, r->stats.registrations_ok);
    reted_proxy *p = reted_proxy_find(r, ns, name);
    if (p && p->stream && p->stream != st) {
        /* The same identity again (check_hello refused any other): a
         * restarted proxy; the new stream wins. */
        rete_info("xds: %s/%s reconnected as %s: closing its previous stream", ns, name, peer);
        rete_http_stream *old = p->stream;
        stream_detach(p);
        rete_http_stream_close(old);
    }
    if (!p) {
        p = rete_calloc(1, sizeof(*p));
        set_names(p, ns, name, sa, peer, address);
        reted_proxy_add(r, p);
    } else {
        set_names(p, p->ns, p->name, sa, peer, address); /* same ns/name: its bucket stays */
    }
    p->stream = st;
    rete_http_stream_set_tag(st, p);
    p->connected_unix = p->last_seen_unix = reted_now();
    p->disconnected_unix = 0;
    p->nacked = false;
    rete_free(&p->nack_error);
    /* The hello says whether its app is ready (its readiness probe; absent
     * from older proxies: ready), so a Workload whose app is not ready yet
     * is never pushed as ready to the others. */
    json_t *hello_ready = json_object_get(msg, "ready");
    p->ready = !json_is_false(hello_ready);
    set_ready(r, p, p->ready, false); /* its registration says it already */
    /* The certificate is the one the stream was verified with; what the
     * hello says of it (certIssuedAt, certExpiresAt, sent by older proxies)
     * is not read: the CA rotation's finish and proxy-status rely on it. */
    const rete_cert_facts *pc = rete_http_stream_peer_cert(st);
    if (pc)
        p->stream_cert = *pc;
    else
        memset(&p->stream_cert, 0, sizeof(p->stream_cert)); /* counts as no root's */
    p->cert = p->stream_cert;
    /* Nothing is acked on a new stream yet. The version the proxy says it
     * holds only keeps the numbering going up (it is not shown as acked). */
    json_t *ver = json_object_get(msg, "version");
    json_int_t held = json_is_integer(ver) ? json_integer_value(ver) : 0;
    p->acked_version = 0;
    p->sent_version = held > 0 ? (uint64_t)held : 0;
    /* A new stream gets a whole snapshot, unless the proxy holds what it
     * would be (a proxy moving from another replica, or back after a blip):
     * then an empty delta resumes it. */
    const char *held_hash = json_string_value(json_object_get(msg, "snapshot"));
    rete_info("xds: %s/%s connected from %s as %s%s", ns, name, rete_http_stream_peer_addr(st), peer,
              operator_record ? " (the Workload the operator declared)" : "");
    reted_push_resume(r, p, p->sent_version, held_hash ? strtoull(held_hash, NULL, 16) : 0);
    reted_tap_on_hello(r, p);
}

static reted_proxy *proxy_of(reted *r, rete_http_stream *st)
{
    (void)r;
    reted_proxy *p = rete_http_stream_tag(st);
    return p && p->stream == st ? p : NULL;
}

static void on_line(rete_http_stream *st, const char *line, size_t len)
{
    reted *r = rete_http_stream_owner(st);
    if (len == 0)
        return;
    json_error_t je;
    json_t *msg = json_loadb(line, len, 0, &je);
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!msg || !type) {
        json_decref(msg);
        stream_refuse(st, "malformed message");
        return;
    }
    reted_proxy *p = proxy_of(r, st);
    if (strcmp(type, "hello") == 0) {
        on_hello(r, st, msg);
    } else if (!p) {
        stream_refuse(st, "say hello first");
    } else if (strcmp(type, "ack") == 0 || strcmp(type, "nack") == 0) {
        const char *nonce = json_string_value(json_object_get(msg, "nonce"));
        json_t *ver = json_object_get(msg, "version");
        p->last_seen_unix = reted_now();
        if (nonce && strcmp(nonce, p->nonce) == 0) {
            if (type[0] == 'a') {
                /* The nonce names what was sent; the version an ACK claims
                 * beside it is not taken (one never sent would show as
                 * acked). */
                if (json_is_integer(ver) && (uint64_t)json_integer_value(ver) != p->sent_version)
                    rete_debug("xds: %s/%s acked nonce %s as version %lld; it was sent as %llu", p->ns,
                               p->name, nonce, (long long)json_integer_value(ver),
                               (unsigned long long)p->sent_version);
                p->acked_version = p->sent_version;
                p->nacked = false;
                rete_free(&p->nack_error);
                reted_count(&r->stats, r->stats.acks);
            } else {
                const char *e = json_string_value(json_object_get(msg, "error"));
                if (e && strncmp(e, "resync", 6) == 0) {
                    /* The proxy missed a step: send it everything again. */
                    json_decref(msg);
                    reted_push(r, p, true);
                    return;
                }
                p->nacked = true;
                free(p->nack_error);
                const char *why = e ? e : "rejected";
                p->nack_error = rete_strndup(why, strnlen(why, 511)); /* kept bounded */
                reted_count(&r->stats, r->stats.nacks);
                rete_warn("xds: %s/%s rejected version %llu: %s", p->ns, p->name,
                          (unsigned long long)p->sent_version, p->nack_error);
            }
        }
    } else if (strcmp(type, "health") == 0) {
        /* Readiness is the proxy's own state, shown as such; certificate
         * claims in a health (older proxies send them) are not read. */
        p->ready = json_is_true(json_object_get(msg, "ready"));
        p->last_seen_unix = reted_now();
        set_ready(r, p, p->ready, true);
    } else if (strcmp(type, "stats") == 0) {
        reted_golden_result res;
        p->last_seen_unix = reted_now();
        if (reted_golden_ingest(&r->golden, msg, p->ns, p->name, (int64_t)(uv_now(r->loop) / 1000), &res)) {
            reted_count(&r->stats, r->stats.golden_reports);
            rete_metrics_inc(r->stats.shard, r->stats.golden_entries[0], res.accepted);
            rete_metrics_inc(r->stats.shard, r->stats.golden_entries[1], res.refused);
            rete_metrics_inc(r->stats.shard, r->stats.golden_entries[2], res.dropped);
        }
    } else if (strcmp(type, "endpoints") == 0) {
        /* What this proxy holds out, shown as its own view (bounded by the
         * stream's line size; only kept while it is well-formed). Empty,
         * as almost always, it is kept as NULL, shown the same: an empty
         * array and object cost ~300 bytes a proxy. */
        json_t *out = json_object_get(msg, "out");
        p->last_seen_unix = reted_now();
        if (json_is_array(out) && json_array_size(out) <= RETE_GOLDEN_MAX_OUT_ENDPOINTS) {
            json_decref(p->endpoints_out);
            p->endpoints_out = json_array_size(out) ? json_incref(out) : NULL;
        }
        json_t *budget = json_object_get(msg, "retryBudgetExhausted");
        if (json_is_object(budget) && json_object_size(budget) <= RETE_GOLDEN_MAX_OUT_ENDPOINTS) {
            json_decref(p->budget_exhausted);
            p->budget_exhausted = json_object_size(budget) ? json_incref(budget) : NULL;
        }
    } else if (strncmp(type, "tap-", 4) == 0) {
        p->last_seen_unix = reted_now();
        reted_tap_on_proxy(r, p, type, msg);
    } else if (strcmp(type, "ping") == 0) {
        p->last_seen_unix = reted_now();
    } else if (strcmp(type, "drain") == 0) {
        rete_info("xds: %s/%s is draining: deregistering", p->ns, p->name);
        stream_detach(p);
        deregister(r, p);
        p->disconnected_unix = reted_now() - (int64_t)r->registry.grace_seconds; /* expire now */
        rete_http_stream_close(st);
    }
    json_decref(msg);
}

static void on_stream_close(rete_http_stream *st)
{
    reted *r = rete_http_stream_owner(st);
    reted_proxy *p = proxy_of(r, st);
    if (!p)
        return;
    rete_info("xds: %s/%s disconnected", p->ns, p->name);
    stream_detach(p);
    p->disconnected_unix = reted_now();
}

static const rete_http_stream_cbs stream_cbs = {on_line, on_stream_close};

/* Join tokens are kept an hour past their expiry (a late user still hears
 * "expired", not "unknown"), then deleted: the store does not grow with
 * every workload ever started. */
#define RETED_TOKEN_KEEP_S 3600

void reted_tick(reted *r)
{
    int64_t now = reted_now();
    size_t pruned = 0;
    /* once per mesh: by the leader (every replica's delete is guarded anyway) */
    if (r->leading && r->store->ops->token_prune(r->store, now - RETED_TOKEN_KEEP_S, &pruned) == RETE_OK && pruned)
        rete_info("ca: deleted %zu join tokens expired for over an hour", pruned);
    reted_registration_sweep(r); /* the leader's, on a replicated store */
    reted_push_tick(r);
    reted_proxy **pp = &r->registry.proxies;
    while (*pp) {
        reted_proxy *p = *pp;
        if (p->stream) {
            rete_http_stream_send_json(p->stream, json_pack("{s:s}", "type", "ping"));
            /* (a ping to a reader too far behind closes its stream) */
            if (p->stream && p->cert.not_after && now >= p->cert.not_after) {
                /* The handshake checked the certificate once; a stream
                 * outliving it (and every renewal reted knows of) would
                 * keep an identity that no longer holds a certificate
                 * subscribed. The proxy reconnects with the certificate it
                 * has, if it has a valid one. */
                rete_warn("xds: %s/%s: its certificate expired at %lld: closing its stream", p->ns, p->name,
                          (long long)p->cert.not_after);
                reted_count(&r->stats, r->stats.closed_cert_expired);
                rete_http_stream *st = p->stream;
                stream_detach(p);
                p->disconnected_unix = now;
                rete_http_stream_close(st);
            } else if (p->stream && now - p->last_seen_unix > 45) {
                rete_warn("xds: %s/%s silent for 45 s: closing its stream", p->ns, p->name);
                rete_http_stream *st = p->stream;
                stream_detach(p);
                p->disconnected_unix = now;
                rete_http_stream_close(st);
            }
        } else if (p->disconnected_unix && now - p->disconnected_unix >= (int64_t)r->registry.grace_seconds) {
            rete_info("xds: %s/%s gone for %u s: removing it from the registry", p->ns, p->name,
                      r->registry.grace_seconds);
            deregister(r, p);
            reted_proxy_unlink(r, pp);
            reted_proxy_free(r, p);
            continue;
        }
        pp = &p->next;
    }
}

/* Route limits from the head: the join token travels in the body, so a
 * certificate request is let in without a credential but bounded to a
 * CSR's size; the stream needs the client certificate (401 before
 * anything else); everything else is refused before its body. */
void reted_xds_admit(const rete_http_req *head, void *arg, rete_http_admit *out)
{
    const reted *r = arg;
    out->max_body = 0;
    if (rete_view_eq(head->path, RETE_VIEW_LIT("/ca/v1/certificates"))) {
        out->max_body = r->max_request_body;
    } else if (rete_view_eq(head->path, RETE_VIEW_LIT("/xds/v1/stream"))) {
        if (!head->peer_id[0]) {
            out->status = 401;
            out->reason = RETE_HTTP_REFUSED_UNAUTHORIZED;
            out->error = "the config stream needs a client certificate";
        }
    } else if (!rete_view_eq(head->path, RETE_VIEW_LIT("/healthz"))) {
        out->status = 404;
        out->reason = RETE_HTTP_REFUSED_NOT_FOUND;
        out->error = "unknown endpoint";
    }
}

void reted_xds_handle(rete_http_req *req, void *arg)
{
    reted *r = arg;
    if (rete_view_eq(req->path, RETE_VIEW_LIT("/ca/v1/certificates")) &&
        rete_view_eq(req->method, RETE_VIEW_LIT("POST"))) {
        ca_certificates(r, req);
        return;
    }
    if (rete_view_eq(req->path, RETE_VIEW_LIT("/xds/v1/stream")) &&
        rete_view_eq(req->method, RETE_VIEW_LIT("GET"))) {
        if (!req->peer_id[0]) {
            rete_http_respond_json(req, 401, "{\"error\":\"the config stream needs a client certificate\"}");
            return;
        }
        rete_http_stream_start(req, "application/x-ndjson", &stream_cbs, r, XDS_MAX_LINE);
        return;
    }
    if (rete_view_eq(req->path, RETE_VIEW_LIT("/healthz"))) {
        rete_http_respond(req, 200, "text/plain", "ok\n", 3, NULL);
        return;
    }
    rete_http_respond_json(req, 404, "{\"error\":\"unknown endpoint\"}");
}
