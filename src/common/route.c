/* HTTP and TCP routing over a config snapshot (see route.h).
 *
 * Implementation choices, where the Gateway API leaves room or GAMMA differs:
 * - Hostnames on routes are ignored: with GAMMA the parentRef (a Service)
 *   already names the destination, so there is no listener hostname to
 *   intersect with (GEP-1426).
 * - GRPCRoute vs HTTPRoute on the same service port: GEP-1426 says the
 *   HTTPRoutes are then ignored (Accepted=False, reason Conflicted). We do
 *   the same per service port: when any GRPCRoute attaches to a port, only
 *   GRPCRoutes are compiled into its table. GRPCRoutes arrive compiled into
 *   the HTTPRoute shape (path "/service/method", exact or regex, plus
 *   headers) and are sorted with the same comparator.
 * - Regular expression paths sort after every PathPrefix, longer pattern
 *   first (the spec leaves their place implementation-specific).
 * - Repeated request headers: the first occurrence is matched (the spec
 *   makes this implementation-specific); no joining, so no copy per request.
 *   Of several header (or query) matches with equivalent names in one match,
 *   only the first is considered, as the spec requires.
 * - Query parameters: split on '&', then on the first '='; a key without
 *   '=' has an empty value; empty pieces are skipped; names and values are
 *   compared as received (no percent-decoding, no '+' to space); a repeated
 *   key matches on its first occurrence.
 * - Regex matching: PCRE2 with PCRE2_ANCHORED | PCRE2_ENDANCHORED (the whole
 *   value must match). Each thread lazily makes one pcre2_match_data with a
 *   single ovector pair and reuses it: we only need match / no match, and
 *   pcre2_match returns 0 ("ovector too small") on a match with captures, so
 *   the request path never allocates. rete_route_thread_cleanup frees it. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "arena.h"
#include "log.h"
#include "route.h"

/* ---- request-time matching ---------------------------------------------- */

static _Thread_local pcre2_match_data *route_md;

void rete_route_thread_cleanup(void)
{
    pcre2_match_data_free(route_md);
    route_md = NULL;
}

static bool regex_match(const rete_regex *re, rete_view v)
{
    if (re == NULL)
        return false;
    if (route_md == NULL) {
        route_md = pcre2_match_data_create(1, NULL);
        if (route_md == NULL)
            return false;
    }
    /* PCRE2 accepts a NULL subject only with length 0 in recent versions. */
    PCRE2_SPTR subject = (PCRE2_SPTR)(v.p ? v.p : "");
    int rc = pcre2_match(re, subject, v.len, 0, PCRE2_ANCHORED | PCRE2_ENDANCHORED, route_md, NULL);
    return rc >= 0;
}

static bool string_match(const rete_string_match *m, rete_view v)
{
    switch (m->kind) {
    case RETE_MATCH_EXACT:
        return rete_view_eq(v, rete_view_make(m->value, m->value_len));
    case RETE_MATCH_REGEX:
        return regex_match(m->re, v);
    case RETE_MATCH_PREFIX:
    default:
        return false; /* not valid for headers and query parameters */
    }
}

/* A PathPrefix value without its trailing slashes: "/" becomes "". */
static rete_view prefix_norm(const rete_string_match *m)
{
    rete_view p = rete_view_make(m->value, m->value ? m->value_len : 0);
    while (p.len && p.p[p.len - 1] == '/')
        p.len--;
    return p;
}

/* Element-wise PathPrefix: "/foo" matches "/foo", "/foo/", "/foo/bar", not
 * "/foobar". */
static bool prefix_match(rete_view prefix, rete_view path)
{
    if (prefix.len == 0)
        return true;
    if (!rete_view_has_prefix(path, prefix))
        return false;
    return path.len == prefix.len || path.p[prefix.len] == '/';
}

static bool path_match(const rete_http_match *m, rete_view path)
{
    if (m == NULL || !m->has_path)
        return true; /* PathPrefix "/" */
    switch (m->path.kind) {
    case RETE_MATCH_EXACT:
        return rete_view_eq(path, rete_view_make(m->path.value, m->path.value_len));
    case RETE_MATCH_PREFIX:
        return prefix_match(prefix_norm(&m->path), path);
    case RETE_MATCH_REGEX:
        return regex_match(m->path.re, path);
    default:
        return false;
    }
}

static const rete_header *find_header(const rete_route_request *req, rete_view name)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (rete_view_ieq(req->headers[i].name, name))
            return &req->headers[i];
    return NULL;
}

static bool headers_match(const rete_http_match *m, const rete_route_request *req)
{
    for (size_t i = 0; i < m->n_headers; i++) {
        const rete_string_match *hm = &m->headers[i];
        rete_view name = rete_view_cstr(hm->name);
        bool shadowed = false;
        for (size_t j = 0; j < i && !shadowed; j++)
            shadowed = rete_view_ieq(rete_view_cstr(m->headers[j].name), name);
        if (shadowed)
            continue;
        const rete_header *h = find_header(req, name);
        if (h == NULL || !string_match(hm, h->value))
            return false;
    }
    return true;
}

/* The value of the first `name` parameter in `query` (without '?'). */
static bool find_query(rete_view query, rete_view name, rete_view *value)
{
    while (query.len) {
        ptrdiff_t amp = rete_view_find(query, '&');
        rete_view pair = amp < 0 ? query : rete_view_sub(query, 0, (size_t)amp);
        query = amp < 0 ? RETE_VIEW_NULL : rete_view_sub(query, (size_t)amp + 1, query.len);
        if (pair.len == 0)
            continue;
        ptrdiff_t eq = rete_view_find(pair, '=');
        rete_view key = eq < 0 ? pair : rete_view_sub(pair, 0, (size_t)eq);
        if (!rete_view_eq(key, name))
            continue;
        *value = eq < 0 ? rete_view_make(pair.p + pair.len, 0)
                        : rete_view_sub(pair, (size_t)eq + 1, pair.len);
        return true;
    }
    return false;
}

static bool query_match(const rete_http_match *m, rete_view query)
{
    for (size_t i = 0; i < m->n_query; i++) {
        const rete_string_match *qm = &m->query[i];
        rete_view name = rete_view_cstr(qm->name);
        bool shadowed = false;
        for (size_t j = 0; j < i && !shadowed; j++)
            shadowed = rete_view_eq(rete_view_cstr(m->query[j].name), name);
        if (shadowed)
            continue;
        rete_view v;
        if (!find_query(query, name, &v) || !string_match(qm, v))
            return false;
    }
    return true;
}

static void split_path(rete_view full, rete_view *path, rete_view *query)
{
    ptrdiff_t q = rete_view_find(full, '?');
    if (q < 0) {
        *path = full;
        *query = RETE_VIEW_NULL;
    } else {
        *path = rete_view_sub(full, 0, (size_t)q);
        *query = rete_view_sub(full, (size_t)q + 1, full.len);
    }
}

static bool entry_match(const rete_route_entry *e, rete_view path, rete_view query,
                        const rete_route_request *req)
{
    const rete_http_match *m = e->match;
    if (!path_match(m, path))
        return false;
    if (m == NULL)
        return true;
    if (m->method && !rete_view_eq(req->method, rete_view_cstr(m->method)))
        return false;
    return headers_match(m, req) && query_match(m, query);
}

const rete_route_entry *rete_route_match(const rete_route_table *t, const rete_route_request *req)
{
    rete_view path, query;
    split_path(req->path, &path, &query);
    for (size_t i = 0; i < t->n_entries; i++)
        if (entry_match(&t->entries[i], path, query, req))
            return &t->entries[i];
    return NULL;
}

const rete_backend_ref *rete_route_pick_backend(const rete_backend_ref *b, size_t n,
                                                uint32_t total_weight, uint32_t rnd)
{
    if (total_weight == 0)
        return NULL;
    uint32_t r = rnd % total_weight;
    uint64_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc += b[i].weight;
        if (r < acc)
            return &b[i];
    }
    return NULL; /* total_weight larger than the sum: a build bug */
}

/* ---- filters -------------------------------------------------------------- */

/* Appends to a bounded buffer; counts what did not fit (snprintf style). */
typedef struct route_out {
    char *p;
    size_t cap;
    size_t len;
} route_out;

static void out_put(route_out *o, rete_view v)
{
    if (v.len == 0)
        return;
    if (o->len < o->cap) {
        size_t room = o->cap - o->len;
        memcpy(o->p + o->len, v.p, v.len < room ? v.len : room);
    }
    o->len += v.len;
}

static void out_end(route_out *o)
{
    if (o->cap)
        o->p[o->len < o->cap ? o->len : o->cap - 1] = '\0';
}

/* Write the new path (query kept) to o; false when the modifier cannot apply. */
static bool rewrite_into(const rete_route_entry *e, const rete_http_filter *f, rete_view full,
                         route_out *o)
{
    rete_view path, query;
    split_path(full, &path, &query);
    switch (f->path_kind) {
    case RETE_PATH_KEEP:
        out_put(o, path);
        break;
    case RETE_PATH_FULL:
        out_put(o, rete_view_cstr(f->path));
        break;
    case RETE_PATH_PREFIX: {
        const rete_http_match *m = e ? e->match : NULL;
        rete_view prefix = RETE_VIEW_NULL; /* no match or no path: PathPrefix "/" */
        if (m && m->has_path) {
            if (m->path.kind != RETE_MATCH_PREFIX)
                return false;
            prefix = prefix_norm(&m->path);
        }
        if (!prefix_match(prefix, path))
            return false;
        rete_view repl = rete_view_cstr(f->path);
        while (repl.len && repl.p[repl.len - 1] == '/')
            repl.len--;
        rete_view rest = rete_view_sub(path, prefix.len, path.len);
        if (repl.len == 0 && rest.len == 0)
            rest = RETE_VIEW_LIT("/");
        out_put(o, repl);
        out_put(o, rest);
        break;
    }
    default:
        return false;
    }
    if (query.p) {
        out_put(o, RETE_VIEW_LIT("?"));
        out_put(o, query);
    }
    return true;
}

size_t rete_route_rewrite_path(const rete_route_entry *e, const rete_http_filter *f, rete_view path,
                               char *out, size_t outlen)
{
    route_out o = {out, outlen, 0};
    if (!rewrite_into(e, f, path, &o))
        return 0;
    out_end(&o);
    return o.len;
}

static uint16_t scheme_port(rete_view scheme)
{
    if (rete_view_ieq(scheme, RETE_VIEW_LIT("http")))
        return 80;
    if (rete_view_ieq(scheme, RETE_VIEW_LIT("https")))
        return 443;
    return 0;
}

/* The host of an authority: drop ":port", keep "[v6]" brackets. */
static rete_view authority_host(rete_view a)
{
    if (a.len && a.p[0] == '[') {
        ptrdiff_t close = rete_view_find(a, ']');
        return close < 0 ? a : rete_view_sub(a, 0, (size_t)close + 1);
    }
    ptrdiff_t colon = rete_view_find(a, ':');
    return colon < 0 ? a : rete_view_sub(a, 0, (size_t)colon);
}

int rete_route_redirect_location(const rete_route_entry *e, const rete_http_filter *f,
                                 const rete_route_redirect_req *req, char *out, size_t outlen,
                                 int *status)
{
    rete_view scheme = f->scheme ? rete_view_cstr(f->scheme) : req->scheme;
    rete_view host = f->hostname ? rete_view_cstr(f->hostname) : authority_host(req->host);
    uint16_t port = f->port ? f->port : f->scheme ? scheme_port(scheme) : req->port;

    route_out o = {out, outlen, 0};
    out_put(&o, scheme);
    out_put(&o, RETE_VIEW_LIT("://"));
    out_put(&o, host);
    if (port != 0 && port != scheme_port(scheme)) {
        char num[8];
        int n = snprintf(num, sizeof num, ":%u", (unsigned)port);
        out_put(&o, rete_view_make(num, (size_t)n));
    }
    if (!rewrite_into(e, f, req->path, &o))
        return RETE_EINVAL;
    if (o.len >= outlen || o.len > (size_t)INT32_MAX)
        return RETE_ELIMIT;
    out_end(&o);
    *status = f->status_code ? f->status_code : 302;
    return (int)o.len;
}

/* ---- build time ----------------------------------------------------------- */

typedef struct route_sort_item {
    rete_route_entry e;
    size_t route_idx; /* in cfg->http_routes: the last, total tie-break */
    size_t rule_idx;
    size_t match_idx;
} route_sort_item;

enum { PATH_CLASS_EXACT, PATH_CLASS_PREFIX, PATH_CLASS_REGEX };

static int path_class(const rete_http_match *m, size_t *len)
{
    if (m == NULL || !m->has_path) {
        *len = 0; /* PathPrefix "/" */
        return PATH_CLASS_PREFIX;
    }
    switch (m->path.kind) {
    case RETE_MATCH_EXACT:
        *len = m->path.value_len;
        return PATH_CLASS_EXACT;
    case RETE_MATCH_PREFIX:
        *len = prefix_norm(&m->path).len;
        return PATH_CLASS_PREFIX;
    case RETE_MATCH_REGEX:
    default:
        *len = m->path.value_len;
        return PATH_CLASS_REGEX;
    }
}

/* Compare "{ns}/{name}" of two routes without building the strings. */
static int ns_name_cmp(const rete_http_route *a, const rete_http_route *b)
{
    const char *as[3] = {a->ns ? a->ns : "", "/", a->name ? a->name : ""};
    const char *bs[3] = {b->ns ? b->ns : "", "/", b->name ? b->name : ""};
    size_t ai = 0, bi = 0;
    const char *ap = as[0], *bp = bs[0];
    for (;;) {
        while (*ap == '\0' && ai < 2)
            ap = as[++ai];
        while (*bp == '\0' && bi < 2)
            bp = bs[++bi];
        unsigned char ac = (unsigned char)*ap, bc = (unsigned char)*bp;
        if (ac != bc)
            return ac < bc ? -1 : 1;
        if (ac == '\0')
            return 0;
        ap++;
        bp++;
    }
}

#define CMP_ASC(x, y)                                                                              \
    do {                                                                                           \
        if ((x) != (y))                                                                            \
            return (x) < (y) ? -1 : 1;                                                             \
    } while (0)

/* Gateway API HTTPRouteRule precedence; a total order, so qsort is stable
 * in effect. */
static int entry_cmp(const void *pa, const void *pb)
{
    const route_sort_item *a = pa, *b = pb;
    const rete_http_match *ma = a->e.match, *mb = b->e.match;
    size_t alen, blen;
    int ac = path_class(ma, &alen), bc = path_class(mb, &blen);
    CMP_ASC(ac, bc);     /* Exact, then PathPrefix, then RegularExpression */
    CMP_ASC(blen, alen); /* longer first */
    bool am = ma && ma->method, bm = mb && mb->method;
    CMP_ASC(bm, am);
    size_t ah = ma ? ma->n_headers : 0, bh = mb ? mb->n_headers : 0;
    CMP_ASC(bh, ah);
    size_t aq = ma ? ma->n_query : 0, bq = mb ? mb->n_query : 0;
    CMP_ASC(bq, aq);
    CMP_ASC(a->e.route->order, b->e.route->order); /* oldest first */
    int c = ns_name_cmp(a->e.route, b->e.route);
    if (c)
        return c;
    CMP_ASC(a->route_idx, b->route_idx);
    CMP_ASC(a->rule_idx, b->rule_idx);
    CMP_ASC(a->match_idx, b->match_idx);
    return 0;
}

static bool route_attaches(const rete_http_route *r, const rete_service *svc, uint16_t port)
{
    for (size_t i = 0; i < r->n_parents; i++)
        if (r->parents[i] == svc &&
            (r->parent_ports == NULL || r->parent_ports[i] == 0 || r->parent_ports[i] == port))
            return true;
    return false;
}

static bool tcp_route_attaches(const rete_tcp_route *r, const rete_service *svc, uint16_t port)
{
    return r->parent == svc && (r->parent_port == 0 || r->parent_port == port);
}

static int tcp_route_older(const rete_tcp_route *a, const rete_tcp_route *b)
{
    if (a->order != b->order)
        return a->order < b->order;
    const rete_http_route ha = {.name = a->name, .ns = a->ns};
    const rete_http_route hb = {.name = b->name, .ns = b->ns};
    return ns_name_cmp(&ha, &hb) < 0;
}

static uint32_t sum_weights(const rete_backend_ref *b, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i].weight;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* A synthetic route "default": everything to the service port itself. */
static const rete_http_route *default_route(rete_arena *arena, const rete_service *svc,
                                            uint16_t port, const rete_backend_ref *self)
{
    rete_http_rule *rule = rete_arena_alloc(arena, sizeof *rule);
    rule->backends = self;
    rule->n_backends = 1;
    rule->total_weight = self->weight;
    rule->retry.on_connect_failure = true;

    const rete_service **parents = rete_arena_alloc(arena, sizeof *parents);
    uint16_t *ports = rete_arena_alloc(arena, sizeof *ports);
    parents[0] = svc;
    ports[0] = port;

    rete_http_route *r = rete_arena_alloc(arena, sizeof *r);
    r->name = "default";
    r->ns = svc->ns;
    r->rules = rule;
    r->n_rules = 1;
    r->parents = parents;
    r->parent_ports = ports;
    r->n_parents = 1;
    return r;
}

/* Entries for one service port, sorted; `scratch` holds room for them all. */
static void build_one(rete_config *cfg, rete_arena *arena, const rete_service *svc, uint16_t port,
                      route_sort_item *scratch, rete_route_table *t)
{
    t->service = svc;
    t->port = port;

    rete_backend_ref *self = rete_arena_alloc(arena, sizeof *self);
    self->service = svc;
    self->port = port;
    self->weight = 1;

    /* GEP-1426: a GRPCRoute on the port makes its HTTPRoutes conflicted. */
    bool grpc = false;
    for (size_t i = 0; i < cfg->n_http_routes && !grpc; i++)
        grpc = cfg->http_routes[i].grpc && route_attaches(&cfg->http_routes[i], svc, port);

    size_t n = 0;
    for (size_t i = 0; i < cfg->n_http_routes; i++) {
        const rete_http_route *r = &cfg->http_routes[i];
        if (r->grpc != grpc || !route_attaches(r, svc, port))
            continue;
        for (size_t k = 0; k < r->n_rules; k++) {
            const rete_http_rule *rule = &r->rules[k];
            size_t nm = rule->n_matches ? rule->n_matches : 1;
            for (size_t j = 0; j < nm; j++)
                scratch[n++] = (route_sort_item){
                    .e = {r, rule, rule->n_matches ? &rule->matches[j] : NULL},
                    .route_idx = i,
                    .rule_idx = k,
                    .match_idx = j,
                };
        }
    }
    if (n == 0) {
        const rete_http_route *r = default_route(arena, svc, port, self);
        scratch[n++] = (route_sort_item){.e = {r, &r->rules[0], NULL}, .route_idx = SIZE_MAX};
    }
    qsort(scratch, n, sizeof *scratch, entry_cmp);

    rete_route_entry *entries = rete_arena_alloc(arena, n * sizeof *entries);
    for (size_t i = 0; i < n; i++)
        entries[i] = scratch[i].e;
    t->entries = entries;
    t->n_entries = n;

    const rete_tcp_route *tcp = NULL;
    for (size_t i = 0; i < cfg->n_tcp_routes; i++) {
        const rete_tcp_route *r = &cfg->tcp_routes[i];
        if (tcp_route_attaches(r, svc, port) && (tcp == NULL || tcp_route_older(r, tcp)))
            tcp = r;
    }
    if (tcp) {
        t->tcp_backends = tcp->backends;
        t->n_tcp_backends = tcp->n_backends;
        t->tcp_total_weight = sum_weights(tcp->backends, tcp->n_backends);
    } else {
        t->tcp_backends = self;
        t->n_tcp_backends = 1;
        t->tcp_total_weight = 1;
    }
}

rete_rc rete_route_build_tables(rete_config *cfg, rete_arena *arena)
{
    if (cfg == NULL || arena == NULL)
        return RETE_EINVAL;

    size_t n_tables = 0;
    for (size_t i = 0; i < cfg->n_services; i++)
        n_tables += cfg->services[i].n_ports;

    /* The most entries any one table can have: every match of every route. */
    size_t max_entries = 1;
    for (size_t i = 0; i < cfg->n_http_routes; i++)
        for (size_t k = 0; k < cfg->http_routes[i].n_rules; k++) {
            size_t nm = cfg->http_routes[i].rules[k].n_matches;
            max_entries += nm ? nm : 1;
        }

    rete_route_table *tables = rete_arena_alloc(arena, (n_tables ? n_tables : 1) * sizeof *tables);
    route_sort_item *scratch = rete_calloc(max_entries, sizeof *scratch);

    size_t t = 0;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const rete_service *svc = &cfg->services[i];
        for (size_t j = 0; j < svc->n_ports; j++)
            build_one(cfg, arena, svc, svc->ports[j].port, scratch, &tables[t++]);
    }
    rete_free(&scratch);

    cfg->tables = tables;
    cfg->n_tables = n_tables;
    rete_debug("route: %zu tables built", n_tables);
    return RETE_OK;
}
