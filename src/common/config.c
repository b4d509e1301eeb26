/* The configuration loader: YAML resources -> one immutable rete_config.
 *
 * Three passes over a stream, all allocating from the snapshot's arena:
 *   1. decode every document through its kind's field table (config_fields.c,
 *      decoded by config_schema.c) into a "raw" resource (config_raw.h) that
 *      still names other resources by string;
 *   2. resolve (config_resolve.c): services get their endpoints and traffic
 *      policy, routes their parent and backend services, the proxy its
 *      upstreams, mTLS mode and the authorization policies that select it;
 *   3. rete_route_build_tables (route.c) sorts the routing per service port.
 * The first error stops everything; nothing partial escapes.
 *
 * This file drives the passes, does the first (kinds, API versions,
 * duplicates) and holds the entry points of config.h that are not the
 * reference writer (config_fields.c) or JSON (config_json.c). */
#include "config_raw.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "arena.h"
#include "hash.h"
#include "vec.h"
#include "yaml_doc.h"

#define CONFIG_MAX_FILE (64u << 20)

/* ---- pass 1: documents ------------------------------------------------------------ */

static size_t res_hash(int kind, const char *ns, const char *name)
{
    static const unsigned char sep = 0xff;
    uint64_t h = rete_fnv1a_str(RETE_FNV1A_INIT ^ (uint64_t)kind, ns);
    h = rete_fnv1a_str(rete_fnv1a(h, &sep, 1), name);
    return (size_t)(h ^ (h >> 29));
}

/* The resource already decoded with r's kind, namespace and name, or NULL. */
static raw_res *res_index_find(const loader *l, const raw_res *r)
{
    if (!l->idx_cap)
        return NULL;
    size_t mask = l->idx_cap - 1;
    for (size_t i = res_hash(r->kind->id, r->meta.ns, r->meta.name) & mask;; i = (i + 1) & mask) {
        raw_res *o = l->idx[i];
        if (!o)
            return NULL;
        if (o->kind == r->kind && strcmp(o->meta.name, r->meta.name) == 0 &&
            strcmp(o->meta.ns, r->meta.ns) == 0)
            return o;
    }
}

static void res_index_add(loader *l, raw_res *r)
{
    if ((l->idx_n + 1) * 2 > l->idx_cap) {
        size_t cap = l->idx_cap ? l->idx_cap * 2 : 256;
        raw_res **slots = rete_calloc(cap, sizeof(*slots));
        for (size_t j = 0; j < l->idx_cap; j++) {
            raw_res *o = l->idx[j];
            if (!o)
                continue;
            size_t i = res_hash(o->kind->id, o->meta.ns, o->meta.name) & (cap - 1);
            while (slots[i])
                i = (i + 1) & (cap - 1);
            slots[i] = o;
        }
        free(l->idx);
        l->idx = slots;
        l->idx_cap = cap;
    }
    size_t i = res_hash(r->kind->id, r->meta.ns, r->meta.name) & (l->idx_cap - 1);
    while (l->idx[i])
        i = (i + 1) & (l->idx_cap - 1);
    l->idx[i] = r;
    l->idx_n++;
}

static void kind_names(char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < RETE_KIND_COUNT && used < size; k++) {
        int w = snprintf(buf + used, size - used, "%s%s", k ? ", " : "", rete_kinds[k].kind);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

static const rete_ynode *doc_get(const rete_ynode *doc, const char *key)
{
    for (size_t i = 0; i < doc->n; i++)
        if (doc->pairs[i].key->kind == RETE_YNODE_SCALAR &&
            strcmp(doc->pairs[i].key->str, key) == 0)
            return doc->pairs[i].value;
    return NULL;
}

static rete_rc decode_document(loader *l, const rete_ynode *doc)
{
    cfg_ctx *ctx = &l->ctx;
    static const char *const top[] = {"apiVersion", "kind", "metadata", "spec"};
    if (doc->kind != RETE_YNODE_MAP)
        return cfg_fail(ctx, "a resource must be a mapping, not %s",
                        doc->kind == RETE_YNODE_SEQ ? "a list" : "a scalar");
    for (size_t i = 0; i < doc->n; i++) {
        const rete_ynode *k = doc->pairs[i].key;
        size_t t = 0;
        while (t < CFG_ARRAY_LEN(top) &&
               !(k->kind == RETE_YNODE_SCALAR && strcmp(k->str, top[t]) == 0))
            t++;
        if (t == CFG_ARRAY_LEN(top))
            return cfg_fail_at(ctx, k->kind == RETE_YNODE_SCALAR ? k->str : "?", "unknown field");
        for (size_t j = 0; j < i; j++)
            if (strcmp(doc->pairs[j].key->str, k->str) == 0)
                return cfg_fail_at(ctx, k->str, "duplicate field");
    }
    const rete_ynode *kind_n = doc_get(doc, "kind"), *api_n = doc_get(doc, "apiVersion");
    if (!kind_n)
        return cfg_fail_at(ctx, "kind", "required");
    const rete_kind *kd = kind_n->kind == RETE_YNODE_SCALAR ? rete_kind_by_name(kind_n->str) : NULL;
    if (!kd) {
        char names[256];
        kind_names(names, sizeof(names));
        return cfg_fail_at(ctx, "kind", "must be one of %s", names);
    }
    if (!api_n)
        return cfg_fail_at(ctx, "apiVersion", "required");
    bool api_ok = false;
    for (size_t i = 0; i < CFG_ARRAY_LEN(kd->api_versions) && kd->api_versions[i]; i++)
        api_ok |= api_n->kind == RETE_YNODE_SCALAR && strcmp(api_n->str, kd->api_versions[i]) == 0;
    if (!api_ok)
        return cfg_fail_at(ctx, "apiVersion", "must be %s for kind %s%s", kd->api_versions[0],
                           kd->kind, kd->api_versions[1] ? " (or an older version of it)" : "");
    const rete_ynode *meta_n = doc_get(doc, "metadata");
    if (!meta_n)
        return cfg_fail_at(ctx, "metadata", "required");

    raw_res *r = rete_arena_alloc(ctx->arena, kd->spec->size);
    r->kind = kd;
    r->doc = ctx->doc;
    size_t mark = cfg_path_key(ctx, "metadata");
    RETE_GUARD(cfg_decode(ctx, &cfg_meta_schema, meta_n, &r->meta));
    cfg_path_pop(ctx, mark);
    if (kd->id == RETE_KIND_SERVICE && strchr(r->meta.name, '.'))
        return cfg_fail_at(ctx, "metadata.name", "a Service name must not contain '.'");
    const raw_res *o = res_index_find(l, r);
    if (o)
        return cfg_fail_at(ctx, "metadata.name", "duplicate %s %s/%s (first in document %d)",
                           kd->kind, r->meta.ns, r->meta.name, o->doc);
    if ((kd->id == RETE_KIND_PROXY || kd->id == RETE_KIND_MESH) && l->head[kd->id])
        return cfg_fail_at(ctx, "kind", "only one %s document is allowed (first in document %d)",
                           kd->kind, l->head[kd->id]->doc);
    mark = cfg_path_key(ctx, "spec");
    RETE_GUARD(cfg_decode(ctx, kd->spec, doc_get(doc, "spec"), r));
    cfg_path_pop(ctx, mark);

    if (l->tail[kd->id])
        l->tail[kd->id]->next = r;
    else
        l->head[kd->id] = r;
    l->tail[kd->id] = r;
    l->count[kd->id]++;
    res_index_add(l, r);
    return RETE_OK;
}

/* ---- public API ------------------------------------------------------------------- */

static void free_regexes(cfg_regex_node *n)
{
    for (; n; n = n->next)
        pcre2_code_free(n->re);
}

static void free_match_regexes(const rete_string_match *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (m[i].re)
            pcre2_code_free(m[i].re);
}

void rete_config_unref(rete_config *cfg)
{
    if (!cfg || atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t r = 0; r < cfg->n_http_routes; r++)
        for (size_t i = 0; i < cfg->http_routes[r].n_rules; i++) {
            const rete_http_rule *rule = &cfg->http_routes[r].rules[i];
            for (size_t m = 0; m < rule->n_matches; m++) {
                free_match_regexes(&rule->matches[m].path, 1);
                free_match_regexes(rule->matches[m].headers, rule->matches[m].n_headers);
                free_match_regexes(rule->matches[m].query, rule->matches[m].n_query);
            }
        }
    rete_arena_free(cfg->arena); /* cfg itself lives in its arena */
}

void rete_config_error_format(const rete_config_error *err, char *buf, size_t size)
{
    char doc[32] = "";
    if (err->document >= 0)
        snprintf(doc, sizeof(doc), "document %d: ", err->document);
    snprintf(buf, size, "%s: %s%s%s%s", err->file[0] ? err->file : "<config>", doc, err->path,
             err->path[0] ? ": " : "", err->reason);
}

/* Pass 1: every document decoded into l's raw resources. */
static rete_rc decode_docs(loader *l, const rete_ynode *const *docs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!docs[i])
            continue;
        l->ctx.doc = (int)i;
        cfg_path_pop(&l->ctx, 0);
        rete_rc rc = decode_document(l, docs[i]);
        if (rc)
            return rc;
    }
    l->ctx.doc = -1;
    l->cfg->docs = docs;
    l->cfg->n_docs = n;
    return RETE_OK;
}

static rete_rc decode_stream(loader *l, const char *data, size_t len)
{
    rete_ystream stream;
    char yerr[256];
    int ydoc;
    rete_rc rc = rete_yaml_parse(data, len, l->ctx.arena, &stream, yerr, sizeof(yerr), &ydoc);
    if (rc) {
        l->ctx.err->document = ydoc;
        snprintf(l->ctx.err->reason, sizeof(l->ctx.err->reason), "invalid YAML: %s", yerr);
        return rc;
    }
    return decode_docs(l, stream.docs, stream.n_docs);
}

uint16_t rete_config_proxy_mesh_port(const char *data, size_t len)
{
    rete_config_error err;
    memset(&err, 0, sizeof(err));
    rete_arena *arena = rete_arena_new(16384);
    rete_config *cfg = rete_arena_alloc(arena, sizeof(*cfg));
    cfg->arena = arena;
    loader l = {.ctx = {.arena = arena, .err = &err, .doc = -1, .base_dir = ""}, .cfg = cfg};
    uint16_t port = 0;
    if (decode_stream(&l, data, len) == RETE_OK && l.head[RETE_KIND_PROXY])
        port = ((const raw_proxy *)l.head[RETE_KIND_PROXY])->p.mesh.port;
    free(l.idx);
    free_regexes(l.ctx.regexes);
    rete_arena_free(arena);
    return port;
}

/* A load's arena, snapshot and loader, before any document is decoded. */
static rete_config *load_begin(loader *l, const char *source_name, uint64_t version, rete_config_error *err)
{
    memset(err, 0, sizeof(*err));
    err->document = -1;
    snprintf(err->file, sizeof(err->file), "%s", source_name ? source_name : "");

    rete_arena *arena = rete_arena_new(65536);
    rete_config *cfg = rete_arena_alloc(arena, sizeof(*cfg));
    atomic_init(&cfg->refs, 1);
    cfg->arena = arena;
    cfg->version = version;
    snprintf(cfg->source, sizeof(cfg->source), "%s", source_name ? source_name : "");

    *l = (loader){.ctx = {.arena = arena, .err = err, .doc = -1, .base_dir = ""}, .cfg = cfg};
    const char *slash = source_name ? strrchr(source_name, '/') : NULL;
    if (slash)
        l->ctx.base_dir = slash == source_name ? "/"
                                               : rete_arena_strndup(arena, source_name,
                                                                    (size_t)(slash - source_name));
    return cfg;
}

/* Pass 2 after a decode that returned rc: the snapshot, or NULL. */
static rete_config *load_end(loader *l, rete_rc rc)
{
    if (rc == RETE_OK)
        rc = cfg_resolve(l);
    free(l->idx);
    l->idx = NULL;
    if (rc == RETE_OK)
        return l->cfg;
    free_regexes(l->ctx.regexes);
    rete_arena_free(l->ctx.arena);
    return NULL;
}

rete_config *rete_config_load_buffer(const char *data, size_t len, const char *source_name,
                                     uint64_t version, rete_config_error *err)
{
    loader l;
    load_begin(&l, source_name, version, err);
    return load_end(&l, decode_stream(&l, data, len));
}

rete_config *rete_config_load_docs(const char *head, size_t head_len, rete_config_doc *docs, size_t n,
                                   const char *source_name, uint64_t version, rete_config_error *err)
{
    loader l;
    load_begin(&l, source_name, version, err);
    rete_ystream stream = {0};
    if (head) {
        char yerr[256];
        int ydoc;
        if (rete_yaml_parse(head, head_len, l.ctx.arena, &stream, yerr, sizeof(yerr), &ydoc)) {
            err->document = ydoc;
            snprintf(err->reason, sizeof(err->reason), "invalid YAML: %s", yerr);
            return load_end(&l, RETE_EINVAL);
        }
    }
    size_t total = stream.n_docs + n;
    const rete_ynode **trees = rete_arena_alloc(l.ctx.arena, (total ? total : 1) * sizeof(*trees));
    memcpy(trees, stream.docs, stream.n_docs * sizeof(*trees));
    for (size_t i = 0; i < n; i++) {
        const rete_ynode *t = docs[i].json ? rete_ynode_from_json(docs[i].json, l.ctx.arena)
                                           : rete_ynode_copy(docs[i].tree, l.ctx.arena);
        if (!t) {
            err->document = (int)(stream.n_docs + i);
            snprintf(err->reason, sizeof(err->reason), "document nested too deep or too large");
            return load_end(&l, RETE_ELIMIT);
        }
        trees[stream.n_docs + i] = t;
    }
    rete_config *cfg = load_end(&l, decode_docs(&l, trees, total));
    if (cfg)
        for (size_t i = 0; i < n; i++)
            docs[i].tree = trees[stream.n_docs + i];
    return cfg;
}

rete_config *rete_config_rebuild(const rete_config *cfg, const rete_external_addrs *ext, size_t n_ext,
                                 rete_config_error *err)
{
    loader l;
    load_begin(&l, cfg->source, cfg->version, err);
    l.ext = ext;
    l.n_ext = n_ext;
    const rete_ynode **trees = rete_arena_alloc(l.ctx.arena, (cfg->n_docs + 1) * sizeof(*trees));
    for (size_t i = 0; i < cfg->n_docs; i++) {
        trees[i] = cfg->docs[i] ? rete_ynode_copy(cfg->docs[i], l.ctx.arena) : NULL;
        if (cfg->docs[i] && !trees[i]) {
            err->document = (int)i;
            snprintf(err->reason, sizeof(err->reason), "document nested too deep or too large");
            return load_end(&l, RETE_ELIMIT);
        }
    }
    return load_end(&l, decode_docs(&l, trees, cfg->n_docs));
}

rete_config *rete_config_load_file(const char *path, uint64_t version, rete_config_error *err)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    size_t len = 0, cap = 0;
    if (!f)
        goto io_error;
    for (;;) {
        if (len == cap) {
            if (cap >= CONFIG_MAX_FILE) {
                fclose(f);
                rete_free(&data);
                memset(err, 0, sizeof(*err));
                err->document = -1;
                snprintf(err->file, sizeof(err->file), "%s", path);
                snprintf(err->reason, sizeof(err->reason), "larger than %u bytes", CONFIG_MAX_FILE);
                return NULL;
            }
            RETE_GROW(data, cap, len + 1, 65536);
        }
        size_t got = fread(data + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed)
        goto io_error;
    rete_config *cfg = rete_config_load_buffer(data, len, path, version, err);
    rete_free(&data);
    return cfg;

io_error : {
    int e = errno;
    rete_free(&data);
    memset(err, 0, sizeof(*err));
    err->document = -1;
    snprintf(err->file, sizeof(err->file), "%s", path);
    snprintf(err->reason, sizeof(err->reason), "cannot read: %s", strerror(e));
    return NULL;
}
}

const rete_route_table *rete_config_table_for(const rete_config *cfg, const rete_service *svc,
                                              uint16_t port)
{
    for (size_t i = 0; i < cfg->n_tables; i++)
        if (cfg->tables[i].service == svc && cfg->tables[i].port == port)
            return &cfg->tables[i];
    return NULL;
}

/* Whether IP literals a and b are the same address (any spelling). */
static bool same_ip(const unsigned char *a, int fam, const char *b)
{
    unsigned char bb[16];
    if ((strchr(b, ':') ? AF_INET6 : AF_INET) != fam || inet_pton(fam, b, bb) != 1)
        return false;
    return memcmp(a, bb, fam == AF_INET ? 4 : 16) == 0;
}

const rete_route_table *rete_config_find_by_addr(const rete_config *cfg, const char *ip, uint16_t port)
{
    unsigned char bin[16];
    int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(fam, ip, bin) != 1)
        return NULL;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const rete_service *svc = &cfg->services[i];
        if (svc->cluster_ip && same_ip(bin, fam, svc->cluster_ip))
            return rete_config_table_for(cfg, svc, port);
    }
    for (size_t i = 0; i < cfg->n_services; i++) {
        const rete_service *svc = &cfg->services[i];
        for (size_t e = 0; e < svc->n_endpoints; e++) {
            if (!same_ip(bin, fam, svc->endpoints[e]->address))
                continue;
            for (size_t k = 0; k < svc->n_ports; k++) {
                uint16_t target = svc->ports[k].target_port ? svc->ports[k].target_port : svc->ports[k].port;
                if (target == port)
                    return rete_config_table_for(cfg, svc, svc->ports[k].port);
            }
            break;
        }
    }
    return NULL;
}

const rete_route_table *rete_config_find_table(const rete_config *cfg, rete_view authority,
                                               uint16_t default_port)
{
    rete_view host = authority;
    uint64_t port = 0;
    ptrdiff_t colon = -1;
    for (size_t i = authority.len; i-- > 0;)
        if (authority.p[i] == ':') {
            colon = (ptrdiff_t)i;
            break;
        }
    if (colon >= 0) {
        if (!rete_view_to_u64(rete_view_sub(authority, (size_t)colon + 1, authority.len), &port) ||
            port == 0 || port > 65535)
            return NULL; /* also IPv6 literals: never a service name */
        host = rete_view_sub(authority, 0, (size_t)colon);
    }
    const rete_service *svc =
        cfg_service_by_host(cfg->services, cfg->n_services, host, cfg->proxy.ns);
    if (!svc || svc->n_ports == 0)
        return NULL;
    if (port)
        return rete_config_table_for(cfg, svc, (uint16_t)port);
    if (default_port && cfg_service_has_port(svc, default_port))
        return rete_config_table_for(cfg, svc, default_port);
    if (cfg_service_has_port(svc, 80))
        return rete_config_table_for(cfg, svc, 80);
    if (svc->n_ports == 1)
        return rete_config_table_for(cfg, svc, svc->ports[0].port);
    for (size_t i = 0; i < svc->n_ports; i++)
        if (svc->ports[i].protocol != RETE_PROTO_TCP)
            return rete_config_table_for(cfg, svc, svc->ports[i].port);
    return NULL;
}

const rete_service *rete_config_service_by_name(const rete_config *cfg, rete_view name)
{
    return cfg_service_by_host(cfg->services, cfg->n_services, name, cfg->proxy.ns);
}
