/* Unit tests for src/common/route.c: tables, precedence, matching, backend
 * choice and the filter helpers. Configs are built by hand (the loader is
 * tested on its own). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string.h>

#include "arena.h"
#include "route.h"

/* ---- fixture -------------------------------------------------------------- */

enum { MAX_ROUTES = 16, MAX_RE = 16 };

typedef struct fx {
    rete_arena *a;
    rete_config cfg;
    rete_http_route routes[MAX_ROUTES];
    rete_tcp_route tcp[4];
    pcre2_code *re[MAX_RE];
    size_t n_re;
} fx;

static const rete_service_port two_ports[] = {
    {.name = "http", .port = 80, .target_port = 8080, .protocol = RETE_PROTO_HTTP},
    {.name = "admin", .port = 9090, .target_port = 9090, .protocol = RETE_PROTO_HTTP},
};
static const rete_service_port one_port[] = {
    {.name = "http", .port = 80, .target_port = 80, .protocol = RETE_PROTO_HTTP},
};
static const rete_service services[] = {
    {.name = "web", .ns = "demo", .ports = two_ports, .n_ports = 2},
    {.name = "api", .ns = "demo", .ports = one_port, .n_ports = 1},
    {.name = "db", .ns = "demo", .ports = one_port, .n_ports = 1},
};
#define WEB (&services[0])
#define API (&services[1])
#define DB (&services[2])

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->a = rete_arena_new(4096);
    f->cfg.services = services;
    f->cfg.n_services = 3;
    f->cfg.http_routes = f->routes;
    f->cfg.tcp_routes = f->tcp;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    for (size_t i = 0; i < f->n_re; i++)
        pcre2_code_free(f->re[i]);
    rete_arena_free(f->a);
    free(f);
    rete_route_thread_cleanup();
    return 0;
}

static rete_regex *compile(fx *f, const char *pattern)
{
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
    assert_non_null(re);
    assert_true(f->n_re < MAX_RE);
    f->re[f->n_re++] = re;
    return re;
}

static void set_string(fx *f, rete_string_match *s, rete_match_kind kind, const char *v)
{
    s->kind = kind;
    s->value = v;
    s->value_len = strlen(v);
    if (kind == RETE_MATCH_REGEX)
        s->re = compile(f, v);
}

/* A match on a path; kind < 0: no path (PathPrefix "/" by default). */
static rete_http_match *mk_match(fx *f, int kind, const char *path)
{
    rete_http_match *m = rete_arena_alloc(f->a, sizeof *m);
    if (kind >= 0) {
        m->has_path = true;
        set_string(f, &m->path, (rete_match_kind)kind, path);
    }
    return m;
}

static void add_string(fx *f, const rete_string_match **arr, size_t *n, int kind, const char *name,
                       const char *value)
{
    rete_string_match *na = rete_arena_alloc(f->a, (*n + 1) * sizeof *na);
    if (*n)
        memcpy(na, *arr, *n * sizeof *na);
    na[*n].name = name;
    set_string(f, &na[*n], (rete_match_kind)kind, value);
    *arr = na;
    (*n)++;
}

static rete_http_match *hdr(fx *f, rete_http_match *m, int kind, const char *name, const char *v)
{
    add_string(f, &m->headers, &m->n_headers, kind, name, v);
    return m;
}

static rete_http_match *qry(fx *f, rete_http_match *m, int kind, const char *name, const char *v)
{
    add_string(f, &m->query, &m->n_query, kind, name, v);
    return m;
}

/* A route with one rule per entry of n_rules, each holding `per_rule`
 * matches taken in order from `matches` (NULL: rules without matches). */
static rete_http_route *add_route_rules(fx *f, const char *ns, const char *name, uint64_t order,
                                        const rete_service *parent, uint16_t port,
                                        rete_http_match **matches, size_t n_rules, size_t per_rule)
{
    assert_true(f->cfg.n_http_routes < MAX_ROUTES);
    rete_http_route *r = &f->routes[f->cfg.n_http_routes++];
    const rete_service **parents = rete_arena_alloc(f->a, sizeof *parents);
    uint16_t *ports = rete_arena_alloc(f->a, sizeof *ports);
    parents[0] = parent;
    ports[0] = port;
    rete_backend_ref *be = rete_arena_alloc(f->a, sizeof *be);
    be->service = parent;
    be->weight = 1;
    rete_http_rule *rules = rete_arena_alloc(f->a, n_rules * sizeof *rules);
    for (size_t k = 0; k < n_rules; k++) {
        if (matches && per_rule) {
            rete_http_match *ms = rete_arena_alloc(f->a, per_rule * sizeof *ms);
            for (size_t j = 0; j < per_rule; j++)
                ms[j] = *matches[k * per_rule + j];
            rules[k].matches = ms;
            rules[k].n_matches = per_rule;
        }
        rules[k].backends = be;
        rules[k].n_backends = 1;
        rules[k].total_weight = 1;
    }
    *r = (rete_http_route){.name = name,
                           .ns = ns,
                           .order = order,
                           .rules = rules,
                           .n_rules = n_rules,
                           .parents = parents,
                           .parent_ports = ports,
                           .n_parents = 1};
    return r;
}

static rete_http_route *add_route(fx *f, const char *name, uint64_t order, rete_http_match *m)
{
    return add_route_rules(f, "demo", name, order, WEB, 80, m ? &m : NULL, 1, m ? 1 : 0);
}

static const rete_route_table *build(fx *f, const rete_service *svc, uint16_t port)
{
    assert_int_equal(rete_route_build_tables(&f->cfg, f->a), RETE_OK);
    for (size_t i = 0; i < f->cfg.n_tables; i++)
        if (f->cfg.tables[i].service == svc && f->cfg.tables[i].port == port)
            return &f->cfg.tables[i];
    fail_msg("no table for %s:%u", svc->name, port);
    return NULL;
}

static const rete_route_entry *req_h(const rete_route_table *t, const char *method,
                                     const char *path, const rete_header *h, size_t nh)
{
    rete_route_request r = {rete_view_cstr(method), rete_view_cstr(path), h, nh};
    return rete_route_match(t, &r);
}

/* Name of the route that wins, or "404". */
static const char *who(const rete_route_table *t, const char *method, const char *path)
{
    const rete_route_entry *e = req_h(t, method, path, NULL, 0);
    return e ? e->route->name : "404";
}

static const char *who_h(const rete_route_table *t, const char *path, const rete_header *h,
                         size_t nh)
{
    const rete_route_entry *e = req_h(t, "GET", path, h, nh);
    return e ? e->route->name : "404";
}

#define H(n, v)                                                                                    \
    {                                                                                              \
        RETE_VIEW_LIT(n), RETE_VIEW_LIT(v)                                                         \
    }

/* ---- precedence ------------------------------------------------------------ */

static void test_exact_beats_prefix(void **state)
{
    fx *f = *state;
    add_route(f, "prefix", 1, mk_match(f, RETE_MATCH_PREFIX, "/foo/bar"));
    add_route(f, "exact", 2, mk_match(f, RETE_MATCH_EXACT, "/foo/bar"));
    const rete_route_table *t = build(f, WEB, 80);
    assert_string_equal(t->entries[0].route->name, "exact");
    assert_string_equal(who(t, "GET", "/foo/bar"), "exact");
    assert_string_equal(who(t, "GET", "/foo/bar?x=1"), "exact");
    assert_string_equal(who(t, "GET", "/foo/bar/"), "prefix");
    assert_string_equal(who(t, "GET", "/foo/bar/baz"), "prefix");
    assert_string_equal(who(t, "GET", "/foo"), "404");
}

static void test_longer_prefix_first(void **state)
{
    fx *f = *state;
    add_route(f, "short", 1, mk_match(f, RETE_MATCH_PREFIX, "/foo"));
    add_route(f, "long", 2, mk_match(f, RETE_MATCH_PREFIX, "/foo/bar/"));
    add_route(f, "root", 0, mk_match(f, RETE_MATCH_PREFIX, "/"));
    const rete_route_table *t = build(f, WEB, 80);
    assert_string_equal(t->entries[0].route->name, "long");
    assert_string_equal(t->entries[2].route->name, "root");
    assert_string_equal(who(t, "GET", "/foo/bar/x"), "long");
    assert_string_equal(who(t, "GET", "/foo/bar"), "long");
    assert_string_equal(who(t, "GET", "/foo/barx"), "short");
    assert_string_equal(who(t, "GET", "/foo"), "short");
    assert_string_equal(who(t, "GET", "/foox"), "root");
}

static void test_regex_after_prefix(void **state)
{
    fx *f = *state;
    add_route(f, "re-short", 0, mk_match(f, RETE_MATCH_REGEX, "/a.*"));
    add_route(f, "re-long", 1, mk_match(f, RETE_MATCH_REGEX, "/api/v[0-9]+/.*"));
    add_route(f, "api", 2, mk_match(f, RETE_MATCH_PREFIX, "/api/v2"));
    const rete_route_table *t = build(f, WEB, 80);
    assert_string_equal(t->entries[0].route->name, "api");
    assert_string_equal(t->entries[1].route->name, "re-long");
    assert_string_equal(t->entries[2].route->name, "re-short");
    assert_string_equal(who(t, "GET", "/api/v2/x"), "api");
    assert_string_equal(who(t, "GET", "/api/v1/x"), "re-long");
    assert_string_equal(who(t, "GET", "/about"), "re-short");
    assert_string_equal(who(t, "GET", "/x"), "404");
}

static void test_method_beats_no_method(void **state)
{
    fx *f = *state;
    add_route(f, "any", 1, mk_match(f, RETE_MATCH_PREFIX, "/"));
    rete_http_match *m = mk_match(f, RETE_MATCH_PREFIX, "/");
    m->method = "POST";
    add_route(f, "post", 2, m);
    /* a longer path without method still beats a method match */
    add_route(f, "longer", 3, mk_match(f, RETE_MATCH_PREFIX, "/x"));
    const rete_route_table *t = build(f, WEB, 80);
    assert_string_equal(who(t, "POST", "/"), "post");
    assert_string_equal(who(t, "GET", "/"), "any");
    assert_string_equal(who(t, "post", "/"), "any"); /* methods are case-sensitive */
    assert_string_equal(who(t, "POST", "/x/y"), "longer");
}

static void test_more_headers_first(void **state)
{
    fx *f = *state;
    rete_http_match *one = hdr(f, mk_match(f, -1, NULL), RETE_MATCH_EXACT, "x-a", "1");
    rete_http_match *two = hdr(f, mk_match(f, -1, NULL), RETE_MATCH_EXACT, "x-a", "1");
    hdr(f, two, RETE_MATCH_EXACT, "x-b", "2");
    rete_http_match *meth = hdr(f, mk_match(f, -1, NULL), RETE_MATCH_EXACT, "x-c", "3");
    meth->method = "GET";
    add_route(f, "one", 1, one);
    add_route(f, "two", 2, two);
    add_route(f, "method", 3, meth);
    const rete_route_table *t = build(f, WEB, 80);
    rete_header both[] = {H("x-a", "1"), H("x-b", "2")};
    rete_header all[] = {H("x-a", "1"), H("x-b", "2"), H("x-c", "3")};
    assert_string_equal(who_h(t, "/", both, 2), "two");
    assert_string_equal(who_h(t, "/", both, 1), "one");
    assert_string_equal(who_h(t, "/", all, 3), "method"); /* method outranks header count */
    assert_string_equal(who_h(t, "/", NULL, 0), "404");
}

static void test_more_query_first(void **state)
{
    fx *f = *state;
    rete_http_match *one = qry(f, mk_match(f, -1, NULL), RETE_MATCH_EXACT, "a", "1");
    rete_http_match *two = qry(f, mk_match(f, -1, NULL), RETE_MATCH_EXACT, "a", "1");
    qry(f, two, RETE_MATCH_EXACT, "b", "2");
    rete_http_match *h = hdr(f, mk_match(f, -1, NULL), RETE_MATCH_EXACT, "x", "y");
    add_route(f, "one", 1, one);
    add_route(f, "two", 2, two);
    add_route(f, "header", 3, h);
    const rete_route_table *t = build(f, WEB, 80);
    assert_string_equal(who(t, "GET", "/?a=1&b=2"), "two");
    assert_string_equal(who(t, "GET", "/?b=2&a=1"), "two");
    assert_string_equal(who(t, "GET", "/?a=1"), "one");
    rete_header xy[] = {H("x", "y")};
    assert_string_equal(who_h(t, "/?a=1&b=2", xy, 1), "header"); /* headers outrank query */
}

static void test_older_route_first(void **state)
{
    fx *f = *state;
    add_route(f, "young", 7, mk_match(f, RETE_MATCH_PREFIX, "/"));
    add_route(f, "old", 3, mk_match(f, RETE_MATCH_PREFIX, "/"));
    const rete_route_table *t = build(f, WEB, 80);
    assert_string_equal(who(t, "GET", "/a"), "old");
}

static void test_name_tie_break(void **state)
{
    fx *f = *state;
    add_route_rules(f, "b", "a", 5, WEB, 80, NULL, 1, 0);
    add_route_rules(f, "a", "z", 5, WEB, 80, NULL, 1, 0);
    add_route_rules(f, "a-b", "z", 5, WEB, 80, NULL, 1, 0); /* "a-b/z" < "a/z": '-' < '/' */
    const rete_route_table *t = build(f, WEB, 80);
    assert_int_equal(t->n_entries, 3);
    assert_string_equal(t->entries[0].route->ns, "a-b");
    assert_string_equal(t->entries[1].route->ns, "a");
    assert_string_equal(t->entries[2].route->ns, "b");
}

static void test_rule_and_match_order(void **state)
{
    fx *f = *state;
    rete_http_match *ms[4] = {
        mk_match(f, RETE_MATCH_PREFIX, "/a"),
        mk_match(f, RETE_MATCH_PREFIX, "/b"),
        mk_match(f, RETE_MATCH_PREFIX, "/b"),
        mk_match(f, RETE_MATCH_PREFIX, "/a"),
    };
    rete_http_route *r = add_route_rules(f, "demo", "r", 1, WEB, 80, ms, 2, 2);
    const rete_route_table *t = build(f, WEB, 80);
    assert_int_equal(t->n_entries, 4);
    /* "/a": rule 0 match 0 before rule 1 match 1; "/b": rule 0 match 1 first */
    assert_ptr_equal(t->entries[0].rule, &r->rules[0]);
    assert_ptr_equal(t->entries[0].match, &r->rules[0].matches[0]);
    assert_ptr_equal(t->entries[1].match, &r->rules[0].matches[1]);
    assert_ptr_equal(t->entries[2].match, &r->rules[1].matches[0]);
    assert_ptr_equal(t->entries[3].match, &r->rules[1].matches[1]);
    const rete_route_entry *e = req_h(t, "GET", "/b/x", NULL, 0);
    assert_ptr_equal(e->rule, &r->rules[0]);
    assert_ptr_equal(e->match, &r->rules[0].matches[1]);
}

static void test_rule_without_matches_is_root_prefix(void **state)
{
    fx *f = *state;
    add_route(f, "catchall", 0, NULL);
    add_route(f, "foo", 9, mk_match(f, RETE_MATCH_PREFIX, "/foo"));
    const rete_route_table *t = build(f, WEB, 80);
    assert_int_equal(t->n_entries, 2);
    assert_null(t->entries[1].match);
    assert_string_equal(who(t, "GET", "/foo/1"), "foo");
    assert_string_equal(who(t, "DELETE", "/anything?x"), "catchall");
    assert_string_equal(who(t, "GET", ""), "catchall");
}

/* ---- matching --------------------------------------------------------------- */

static void test_prefix_element_wise(void **state)
{
    fx *f = *state;
    add_route(f, "foo", 1, mk_match(f, RETE_MATCH_PREFIX, "/foo"));
    add_route(f, "slash", 1, mk_match(f, RETE_MATCH_PREFIX, "/bar/"));
    const rete_route_table *t = build(f, WEB, 80);
    assert_string_equal(who(t, "GET", "/foo"), "foo");
    assert_string_equal(who(t, "GET", "/foo/"), "foo");
    assert_string_equal(who(t, "GET", "/foo/bar"), "foo");
    assert_string_equal(who(t, "GET", "/foo?q=/x"), "foo");
    assert_string_equal(who(t, "GET", "/foobar"), "404");
    assert_string_equal(who(t, "GET", "/fo"), "404");
    assert_string_equal(who(t, "GET", "/Foo"), "404");
    assert_string_equal(who(t, "GET", "/bar"), "slash"); /* trailing '/' ignored */
    assert_string_equal(who(t, "GET", "/bar/x"), "slash");
    assert_string_equal(who(t, "GET", "/barx"), "404");
}

static void test_exact_path_ignores_query(void **state)
{
    fx *f = *state;
    add_route(f, "e", 1, mk_match(f, RETE_MATCH_EXACT, "/foo"));
    const rete_route_table *t = build(f, WEB, 80);
    assert_string_equal(who(t, "GET", "/foo"), "e");
    assert_string_equal(who(t, "GET", "/foo?a=b"), "e");
    assert_string_equal(who(t, "GET", "/foo/"), "404");
    assert_string_equal(who(t, "GET", "/fo"), "404");
}

static void test_header_matching(void **state)
{
    fx *f = *state;
    rete_http_match *m = hdr(f, mk_match(f, -1, NULL), RETE_MATCH_EXACT, "X-Env", "Canary");
    hdr(f, m, RETE_MATCH_REGEX, "x-user", "u[0-9]+");
    hdr(f, m, RETE_MATCH_EXACT, "x-env", "ignored"); /* same name: only the first counts */
    add_route(f, "h", 1, m);
    const rete_route_table *t = build(f, WEB, 80);
    rete_header ok[] = {H("x-env", "Canary"), H("X-USER", "u42")};
    assert_string_equal(who_h(t, "/", ok, 2), "h");
    rete_header bad_case[] = {H("x-env", "canary"), H("X-USER", "u42")};
    assert_string_equal(who_h(t, "/", bad_case, 2), "404"); /* values are case-sensitive */
    rete_header re_partial[] = {H("x-env", "Canary"), H("x-user", "u42x")};
    assert_string_equal(who_h(t, "/", re_partial, 2), "404");
    rete_header missing[] = {H("x-env", "Canary")};
    assert_string_equal(who_h(t, "/", missing, 1), "404");
    /* repeated header: the first occurrence is the one matched */
    rete_header first[] = {H("x-user", "u1"), H("X-Env", "Canary"), H("x-user", "nope")};
    assert_string_equal(who_h(t, "/", first, 3), "h");
    rete_header second[] = {H("x-user", "nope"), H("X-Env", "Canary"), H("x-user", "u1")};
    assert_string_equal(who_h(t, "/", second, 3), "404");
}

static void test_regex_anchored(void **state)
{
    fx *f = *state;
    add_route(f, "re", 1, mk_match(f, RETE_MATCH_REGEX, "/a(b)(c)?d"));
    const rete_route_table *t = build(f, WEB, 80);
    assert_string_equal(who(t, "GET", "/abcd"), "re"); /* more captures than the ovector */
    assert_string_equal(who(t, "GET", "/abd"), "re");
    assert_string_equal(who(t, "GET", "/abd?q=1"), "re");
    assert_string_equal(who(t, "GET", "/abdx"), "404");
    assert_string_equal(who(t, "GET", "x/abd"), "404");
    assert_string_equal(who(t, "GET", "/x/abd"), "404");
}

static void test_query_parsing(void **state)
{
    fx *f = *state;
    add_route(f, "a1", 1, qry(f, mk_match(f, -1, NULL), RETE_MATCH_EXACT, "a", "1"));
    add_route(f, "flag", 2, qry(f, mk_match(f, -1, NULL), RETE_MATCH_EXACT, "flag", ""));
    add_route(f, "pct", 3, qry(f, mk_match(f, -1, NULL), RETE_MATCH_EXACT, "q", "a%20b"));
    add_route(f, "re", 4, qry(f, mk_match(f, -1, NULL), RETE_MATCH_REGEX, "n", "[0-9]+"));
    const rete_route_table *t = build(f, WEB, 80);
    assert_string_equal(who(t, "GET", "/?a=1&b=2"), "a1");
    assert_string_equal(who(t, "GET", "/?b=2&a=1"), "a1");
    assert_string_equal(who(t, "GET", "/?a=1&a=2"), "a1");
    assert_string_equal(who(t, "GET", "/?a=2&a=1"), "404"); /* first occurrence only */
    assert_string_equal(who(t, "GET", "/?A=1"), "404");     /* names are case-sensitive */
    assert_string_equal(who(t, "GET", "/?&&a=1&"), "a1");
    assert_string_equal(who(t, "GET", "/?aa=1"), "404");
    assert_string_equal(who(t, "GET", "/?a=11"), "404");
    assert_string_equal(who(t, "GET", "/?flag"), "flag");
    assert_string_equal(who(t, "GET", "/?flag="), "flag");
    assert_string_equal(who(t, "GET", "/?flag=x"), "404");
    assert_string_equal(who(t, "GET", "/?q=a%20b"), "pct");
    assert_string_equal(who(t, "GET", "/?q=a b"), "404"); /* no decoding */
    assert_string_equal(who(t, "GET", "/?n=123"), "re");
    assert_string_equal(who(t, "GET", "/?n=12x"), "404");
    assert_string_equal(who(t, "GET", "/?"), "404");
    assert_string_equal(who(t, "GET", "/"), "404");
    assert_string_equal(who(t, "GET", "/?x=a=1"), "404");
}

/* ---- tables ---------------------------------------------------------------- */

static void test_default_route(void **state)
{
    fx *f = *state;
    add_route(f, "web", 1, mk_match(f, RETE_MATCH_PREFIX, "/"));
    const rete_route_table *t = build(f, API, 80);
    assert_int_equal(f->cfg.n_tables, 4);
    assert_int_equal(t->n_entries, 1);
    const rete_route_entry *e = req_h(t, "GET", "/x?y", NULL, 0);
    assert_non_null(e);
    assert_string_equal(e->route->name, "default");
    assert_null(e->match);
    assert_int_equal(e->rule->n_backends, 1);
    assert_ptr_equal(e->rule->backends[0].service, API);
    assert_int_equal(e->rule->backends[0].port, 80);
    assert_int_equal(e->rule->total_weight, 1);
    /* tcp defaults to the service itself as well */
    assert_int_equal(t->n_tcp_backends, 1);
    assert_ptr_equal(t->tcp_backends[0].service, API);
    assert_int_equal(t->tcp_total_weight, 1);
    /* a routed port gets no default entry */
    const rete_route_table *w = build(f, WEB, 80);
    assert_int_equal(w->n_entries, 1);
    assert_string_equal(w->entries[0].route->name, "web");
}

static void test_multiple_ports(void **state)
{
    fx *f = *state;
    add_route_rules(f, "demo", "only80", 1, WEB, 80, NULL, 1, 0);
    add_route_rules(f, "demo", "all", 2, WEB, 0, NULL, 1, 0);
    add_route_rules(f, "demo", "other-svc", 0, API, 0, NULL, 1, 0);
    const rete_route_table *t80 = build(f, WEB, 80);
    const rete_route_table *t9090 = build(f, WEB, 9090);
    assert_int_equal(t80->n_entries, 2);
    assert_string_equal(t80->entries[0].route->name, "only80");
    assert_int_equal(t9090->n_entries, 1);
    assert_string_equal(t9090->entries[0].route->name, "all");
    assert_int_equal(t9090->port, 9090);
}

static void test_multiple_parents(void **state)
{
    fx *f = *state;
    rete_http_route *r = add_route_rules(f, "demo", "both", 1, WEB, 9090, NULL, 1, 0);
    static const rete_service *const parents[] = {API, WEB};
    static const uint16_t ports[] = {0, 9090};
    r->parents = parents;
    r->parent_ports = ports;
    r->n_parents = 2;
    assert_string_equal(build(f, API, 80)->entries[0].route->name, "both");
    assert_string_equal(build(f, WEB, 9090)->entries[0].route->name, "both");
    assert_string_equal(build(f, WEB, 80)->entries[0].route->name, "default");
}

static void test_grpc_route_conflicts_http_route(void **state)
{
    fx *f = *state;
    add_route_rules(f, "demo", "http", 1, WEB, 80, NULL, 1, 0);
    rete_http_route *g = add_route(f, "grpc", 2, mk_match(f, RETE_MATCH_EXACT, "/pkg.Echo/Say"));
    g->grpc = true;
    add_route_rules(f, "demo", "http-admin", 1, WEB, 9090, NULL, 1, 0);
    const rete_route_table *t = build(f, WEB, 80);
    assert_int_equal(t->n_entries, 1);
    assert_string_equal(who(t, "POST", "/pkg.Echo/Say"), "grpc");
    assert_string_equal(who(t, "POST", "/other"), "404");
    assert_string_equal(who(build(f, WEB, 9090), "GET", "/"), "http-admin");
}

static void test_tcp_route_selection(void **state)
{
    fx *f = *state;
    static const rete_backend_ref young_be[] = {{.service = API, .port = 80, .weight = 1}};
    static const rete_backend_ref old_be[] = {{.service = DB, .port = 80, .weight = 3},
                                              {.service = API, .port = 80, .weight = 2}};
    f->tcp[0] = (rete_tcp_route){.name = "young",
                                 .ns = "demo",
                                 .parent = WEB,
                                 .parent_port = 0,
                                 .backends = young_be,
                                 .n_backends = 1,
                                 .order = 9};
    f->tcp[1] = (rete_tcp_route){.name = "old",
                                 .ns = "demo",
                                 .parent = WEB,
                                 .parent_port = 80,
                                 .backends = old_be,
                                 .n_backends = 2,
                                 .order = 1};
    f->cfg.n_tcp_routes = 2;
    const rete_route_table *t80 = build(f, WEB, 80);
    assert_ptr_equal(t80->tcp_backends, old_be);
    assert_int_equal(t80->n_tcp_backends, 2);
    assert_int_equal(t80->tcp_total_weight, 5);
    const rete_route_table *t9090 = build(f, WEB, 9090);
    assert_ptr_equal(t9090->tcp_backends, young_be);
    const rete_route_table *api = build(f, API, 80);
    assert_ptr_equal(api->tcp_backends[0].service, API);
    assert_int_equal(api->tcp_backends[0].port, 80);
}

/* ---- backends ---------------------------------------------------------------- */

static uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void test_weighted_pick(void **state)
{
    (void)state;
    const rete_backend_ref b[] = {{.weight = 90}, {.weight = 0}, {.weight = 10}};
    uint32_t seed = 2463534242u;
    size_t count[3] = {0};
    enum { N = 100000 };
    for (int i = 0; i < N; i++) {
        const rete_backend_ref *p = rete_route_pick_backend(b, 3, 100, xorshift32(&seed));
        assert_non_null(p);
        count[p - b]++;
    }
    assert_int_equal(count[1], 0);
    assert_true(count[0] >= 89000 && count[0] <= 91000);
    assert_true(count[2] >= 9000 && count[2] <= 11000);
    /* boundaries of the cumulative walk */
    assert_ptr_equal(rete_route_pick_backend(b, 3, 100, 89), &b[0]);
    assert_ptr_equal(rete_route_pick_backend(b, 3, 100, 90), &b[2]);
    assert_ptr_equal(rete_route_pick_backend(b, 3, 100, 199), &b[2]);
    const rete_backend_ref z[] = {{.weight = 0}, {.weight = 0}};
    assert_null(rete_route_pick_backend(z, 2, 0, 12345));
    assert_null(rete_route_pick_backend(NULL, 0, 0, 1));
}

/* ---- filters ----------------------------------------------------------------- */

static const char *rewrite(fx *f, const char *prefix, const char *repl, const char *path)
{
    static char out[128];
    rete_route_entry e = {.match = prefix ? mk_match(f, RETE_MATCH_PREFIX, prefix) : NULL};
    rete_http_filter fl = {
        .kind = RETE_FILTER_URL_REWRITE, .path_kind = RETE_PATH_PREFIX, .path = repl};
    size_t n = rete_route_rewrite_path(&e, &fl, rete_view_cstr(path), out, sizeof out);
    if (n == 0)
        return "(none)";
    assert_true(n < sizeof out);
    assert_int_equal(strlen(out), n);
    return out;
}

static void test_rewrite_prefix(void **state)
{
    fx *f = *state;
    /* the Gateway API table */
    assert_string_equal(rewrite(f, "/foo", "/xyz", "/foo/bar"), "/xyz/bar");
    assert_string_equal(rewrite(f, "/foo", "/xyz/", "/foo/bar"), "/xyz/bar");
    assert_string_equal(rewrite(f, "/foo/", "/xyz", "/foo/bar"), "/xyz/bar");
    assert_string_equal(rewrite(f, "/foo/", "/xyz/", "/foo/bar"), "/xyz/bar");
    assert_string_equal(rewrite(f, "/foo", "/xyz", "/foo"), "/xyz");
    assert_string_equal(rewrite(f, "/foo", "/xyz", "/foo/"), "/xyz/");
    assert_string_equal(rewrite(f, "/foo", "/", "/foo/bar"), "/bar");
    assert_string_equal(rewrite(f, "/foo", "/", "/foo"), "/");
    assert_string_equal(rewrite(f, "/foo", "/", "/foo/"), "/");
    assert_string_equal(rewrite(f, "/", "/xyz", "/foo"), "/xyz/foo");
    assert_string_equal(rewrite(f, NULL, "/xyz", "/foo"), "/xyz/foo");
    assert_string_equal(rewrite(f, "/foo", "/xyz", "/foo/bar?a=1&b"), "/xyz/bar?a=1&b");
    assert_string_equal(rewrite(f, "/foo", "/xyz", "/foobar"), "(none)");
}

static void test_rewrite_full_and_errors(void **state)
{
    fx *f = *state;
    char out[16];
    rete_route_entry exact = {.match = mk_match(f, RETE_MATCH_EXACT, "/old")};
    rete_http_filter full = {
        .kind = RETE_FILTER_URL_REWRITE, .path_kind = RETE_PATH_FULL, .path = "/new"};
    size_t n = rete_route_rewrite_path(&exact, &full, RETE_VIEW_LIT("/old?x=1"), out, sizeof out);
    assert_int_equal(n, 8);
    assert_string_equal(out, "/new?x=1");
    rete_http_filter keep = {.kind = RETE_FILTER_URL_REWRITE, .path_kind = RETE_PATH_KEEP};
    n = rete_route_rewrite_path(&exact, &keep, RETE_VIEW_LIT("/old"), out, sizeof out);
    assert_int_equal(n, 4);
    assert_string_equal(out, "/old");
    /* ReplacePrefixMatch needs a PathPrefix match */
    rete_http_filter pre = {
        .kind = RETE_FILTER_URL_REWRITE, .path_kind = RETE_PATH_PREFIX, .path = "/x"};
    assert_int_equal(rete_route_rewrite_path(&exact, &pre, RETE_VIEW_LIT("/old"), out, sizeof out),
                     0);
    /* truncation: snprintf-style length, NUL-terminated */
    rete_http_filter longer = {.kind = RETE_FILTER_URL_REWRITE,
                               .path_kind = RETE_PATH_FULL,
                               .path = "/a-very-long-replacement"};
    n = rete_route_rewrite_path(&exact, &longer, RETE_VIEW_LIT("/old"), out, sizeof out);
    assert_int_equal(n, 24);
    assert_int_equal(strlen(out), sizeof out - 1);
}

static const char *location(fx *f, const rete_http_filter *fl, const char *scheme, const char *host,
                            uint16_t port, const char *path, int *status)
{
    static char out[256];
    rete_route_entry e = {.match = mk_match(f, RETE_MATCH_PREFIX, "/foo")};
    rete_route_redirect_req r = {rete_view_cstr(scheme), rete_view_cstr(host), port,
                                 rete_view_cstr(path)};
    int n = rete_route_redirect_location(&e, fl, &r, out, sizeof out, status);
    assert_true(n > 0);
    assert_int_equal(strlen(out), (size_t)n);
    return out;
}

static void test_redirect_location(void **state)
{
    fx *f = *state;
    int st = 0;
    rete_http_filter https = {.kind = RETE_FILTER_REDIRECT, .scheme = "https"};
    assert_string_equal(location(f, &https, "http", "web.demo:8080", 8080, "/foo/a?b=1", &st),
                        "https://web.demo/foo/a?b=1");
    assert_int_equal(st, 302);
    rete_http_filter keep = {.kind = RETE_FILTER_REDIRECT, .status_code = 301};
    assert_string_equal(location(f, &keep, "http", "web.demo:8080", 8080, "/x", &st),
                        "http://web.demo:8080/x");
    assert_int_equal(st, 301);
    assert_string_equal(location(f, &keep, "http", "web.demo", 80, "/x", &st), "http://web.demo/x");
    assert_string_equal(location(f, &keep, "http", "[fd00::1]:8080", 8080, "/x", &st),
                        "http://[fd00::1]:8080/x");
    rete_http_filter port = {.kind = RETE_FILTER_REDIRECT,
                             .scheme = "https",
                             .port = 8443,
                             .hostname = "secure.example"};
    assert_string_equal(location(f, &port, "http", "web", 80, "/", &st),
                        "https://secure.example:8443/");
    rete_http_filter p443 = {.kind = RETE_FILTER_REDIRECT, .port = 443, .scheme = "https"};
    assert_string_equal(location(f, &p443, "http", "web", 80, "/", &st), "https://web/");
    rete_http_filter p80 = {.kind = RETE_FILTER_REDIRECT, .port = 80};
    assert_string_equal(location(f, &p80, "https", "web", 443, "/", &st), "https://web:80/");
    rete_http_filter pre = {
        .kind = RETE_FILTER_REDIRECT, .path_kind = RETE_PATH_PREFIX, .path = "/bar"};
    assert_string_equal(location(f, &pre, "http", "web", 80, "/foo/x?y", &st),
                        "http://web/bar/x?y");
    rete_http_filter full = {
        .kind = RETE_FILTER_REDIRECT, .path_kind = RETE_PATH_FULL, .path = "/moved"};
    assert_string_equal(location(f, &full, "http", "web", 80, "/foo/x", &st), "http://web/moved");

    /* errors: too small a buffer, a prefix modifier that cannot apply */
    char tiny[8];
    rete_route_entry e = {.match = mk_match(f, RETE_MATCH_EXACT, "/foo")};
    rete_route_redirect_req r = {RETE_VIEW_LIT("http"), RETE_VIEW_LIT("web"), 80,
                                 RETE_VIEW_LIT("/foo")};
    assert_int_equal(rete_route_redirect_location(&e, &keep, &r, tiny, sizeof tiny, &st),
                     RETE_ELIMIT);
    assert_int_equal(rete_route_redirect_location(&e, &pre, &r, tiny, sizeof tiny, &st),
                     RETE_EINVAL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_exact_beats_prefix),
        T(test_longer_prefix_first),
        T(test_regex_after_prefix),
        T(test_method_beats_no_method),
        T(test_more_headers_first),
        T(test_more_query_first),
        T(test_older_route_first),
        T(test_name_tie_break),
        T(test_rule_and_match_order),
        T(test_rule_without_matches_is_root_prefix),
        T(test_prefix_element_wise),
        T(test_exact_path_ignores_query),
        T(test_header_matching),
        T(test_regex_anchored),
        T(test_query_parsing),
        T(test_default_route),
        T(test_multiple_ports),
        T(test_multiple_parents),
        T(test_grpc_route_conflicts_http_route),
        T(test_tcp_route_selection),
        T(test_weighted_pick),
        T(test_rewrite_prefix),
        T(test_rewrite_full_and_errors),
        T(test_redirect_location),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
