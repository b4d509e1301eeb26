/* apply, get, delete, describe: the resource verbs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "arena.h"
#include "ctl.h"
#include "files.h"
#include "ctl_kinds.h"
#include "table.h"
#include "yaml_doc.h"
#include "yaml_out.h"

/* ---- apply ---- */

static void print_apply_errors(const char *file, const rete_ctl_response *resp)
{
    json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);
    json_t *details = json_object_get(j, "details");
    size_t i;
    json_t *d;
    if (json_array_size(details) == 0) {
        const char *msg = json_string_value(json_object_get(j, "error"));
        fprintf(stderr, "%s: %s\n", file, msg ? msg : "rejected (422)");
    }
    json_array_foreach(details, i, d)
    {
        const char *src = json_string_value(json_object_get(d, "source"));
        const json_t *doc = json_object_get(d, "document");
        const char *path = json_string_value(json_object_get(d, "path"));
        const char *reason = json_string_value(json_object_get(d, "reason"));
        if (json_is_string(d))
            reason = json_string_value(d);
        (void)src; /* our own name for the file is the one the operator typed */
        fprintf(stderr, "%s: ", file);
        if (json_is_integer(doc) && json_integer_value(doc) >= 0) /* -1: a stored resource */
            fprintf(stderr, "document %" JSON_INTEGER_FORMAT ": ", json_integer_value(doc));
        if (path && *path)
            fprintf(stderr, "%s: ", path);
        fprintf(stderr, "%s\n", reason ? reason : "invalid");
    }
    json_decref(j);
}

/* What apply and delete do with one file behind -f: its name and content. */
typedef int (*file_verb_fn)(rete_ctl *c, const char *file, const char *text, size_t len);

/* Expand -f (files.h), read each file and hand it to `one`, in order; a file
 * that cannot be read is reported and skipped. CTL_EXIT_FAIL when the
 * arguments do not expand or any file failed. */
static int for_each_file(rete_ctl *c, file_verb_fn one)
{
    rete_error err = {0};
    rete_ctl_files files;
    if (rete_ctl_files_expand(c->args.files, c->args.n_files, &files, &err) < 0) {
        fprintf(stderr, "error: %s\n", err.msg);
        rete_ctl_files_free(&files);
        return CTL_EXIT_FAIL;
    }
    int rc = CTL_EXIT_OK;
    for (size_t i = 0; i < files.n; i++) {
        size_t len = 0;
        char *text = rete_ctl_read_file(files.paths[i], &len, &err);
        if (!text)
            fprintf(stderr, "error: %s\n", err.msg);
        if (!text || one(c, files.paths[i], text, len) != CTL_EXIT_OK)
            rc = CTL_EXIT_FAIL;
        free(text);
    }
    rete_ctl_files_free(&files);
    return rc;
}

static int apply_one(rete_ctl *c, const char *file, const char *text, size_t len)
{
    const char *source = strcmp(file, "-") == 0 ? "STDIN" : file;
    char *enc = rete_ctl_urlencode(source);
    size_t plen = strlen(enc) + 32;
    char *path = rete_malloc(plen);
    snprintf(path, plen, "/api/v1/apply?source=%s", enc);
    free(enc);
    rete_ctl_response resp;
    int rc = CTL_EXIT_FAIL;
    if (rete_ctl_call(c, "POST", path, "application/yaml", text, len, &resp) < 0)
        goto out_noresp;
    if (resp.status == 200 || resp.status == 201) {
        json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(j, "results"), i, r)
        {
            char kl[64];
            const char *kind = json_string_value(json_object_get(r, "kind"));
            const char *name = json_string_value(json_object_get(r, "name"));
            const char *action = json_string_value(json_object_get(r, "action"));
            const rete_ctl_kind *k = rete_ctl_kind_lookup(kind);
            printf("%s/%s %s\n",
                   rete_ctl_kind_lower(k      ? k->def->kind
                                       : kind ? kind
                                              : "?",
                                       kl, sizeof(kl)),
                   name ? name : "?", action ? action : "applied");
        }
        if (!j)
            fprintf(stderr, "warning: %s: reted answered %d with no JSON results\n", source,
                    resp.status);
        json_decref(j);
        rc = CTL_EXIT_OK;
    } else if (resp.status == 422 || resp.status == 400) {
        print_apply_errors(source, &resp);
    } else if (resp.status == 409) {
        json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
        const char *msg = json_string_value(json_object_get(j, "error"));
        fprintf(stderr,
                "%s: conflict: %s\nThe resource was changed since this version was read: get it "
                "again (retectl get KIND NAME -o yaml), re-apply your change to it, or drop "
                "metadata.resourceVersion to overwrite.\n",
                source, msg ? msg : "stale resourceVersion");
        json_decref(j);
    } else {
        fprintf(stderr, "%s: ", source);
        rete_ctl_print_server_error(&resp);
    }
    rete_ctl_response_free(&resp);
out_noresp:
    free(path);
    return rc;
}

int rete_ctl_cmd_apply(rete_ctl *c)
{
    if (c->args.n_files == 0)
        return rete_ctl_usage_error(c, "apply needs -f FILE, -f DIR or -f -");
    if (c->args.n_pos)
        return rete_ctl_usage_error(c, "unexpected argument \"%s\"", c->args.pos[0]);
    return for_each_file(c, apply_one);
}

/* ---- shared: KIND [NAME] or KIND/NAME ---- */

typedef struct target {
    const rete_ctl_kind *kind;
    const char *name; /* NULL: all */
    char buf[256];
} target;

static int parse_target(rete_ctl *c, target *t, bool name_required)
{
    memset(t, 0, sizeof(*t));
    if (c->args.n_pos == 0)
        return rete_ctl_usage_error(c, "which kind? (one of: service, workload, httproute, "
                                       "grpcroute, tcproute, destinationrule, "
                                       "authorizationpolicy, peerauthentication, meshconfig)");
    const char *word = c->args.pos[0];
    const char *slash = strchr(word, '/');
    if (slash) {
        snprintf(t->buf, sizeof(t->buf), "%.*s", (int)(slash - word), word);
        t->name = slash + 1;
        word = t->buf;
        if (c->args.n_pos > 1)
            return rete_ctl_usage_error(c, "unexpected argument \"%s\"", c->args.pos[1]);
    } else {
        if (c->args.n_pos > 2)
            return rete_ctl_usage_error(c, "unexpected argument \"%s\"", c->args.pos[2]);
        t->name = c->args.n_pos > 1 ? c->args.pos[1] : NULL;
    }
    t->kind = rete_ctl_kind_lookup(word);
    if (!t->kind) {
        fprintf(stderr,
                "error: the server doesn't have a resource type \"%s\" (known: svc, wl, "
                "httproute, grpcroute, tcproute, dr, authorizationpolicy, peerauthentication, "
                "meshconfig)\n",
                word);
        return CTL_EXIT_USAGE;
    }
    if (t->name && !*t->name)
        return rete_ctl_usage_error(c, "empty resource name");
    if (name_required && !t->name)
        return rete_ctl_usage_error(c, "%s needs a NAME", c->verb);
    return -1;
}

static char *resource_path(const rete_ctl_kind *k, const char *ns, const char *name)
{
    char *ens = rete_ctl_urlencode(ns), *ename = rete_ctl_urlencode(name);
    size_t len = strlen(k->def->kind) + strlen(ens) + strlen(ename) + 40;
    char *p = rete_malloc(len);
    snprintf(p, len, "/api/v1/resources/%s/%s/%s", k->def->kind, ens, ename);
    free(ens);
    free(ename);
    return p;
}

static void not_found(const rete_ctl_kind *k, const char *ns, const char *name)
{
    fprintf(stderr, "Error from server (NotFound): %s \"%s\" not found in namespace \"%s\"\n",
            k->def->plural, name, ns);
}

static const char *meta_str(const json_t *res, const char *key)
{
    const char *s = json_string_value(json_object_get(json_object_get(res, "metadata"), key));
    return s ? s : "";
}

/* GET one resource; prints errors. Returns the resource or NULL. */
static json_t *get_one(rete_ctl *c, const rete_ctl_kind *k, const char *ns, const char *name)
{
    rete_ctl_response resp;
    json_t *j = NULL;
    char *path = resource_path(k, ns, name);
    int st = rete_ctl_call_json(c, "GET", path, NULL, &j, &resp);
    free(path);
    if (st < 0)
        return NULL;
    if (st == 404) {
        not_found(k, ns, name);
    } else if (st != 200) {
        rete_ctl_print_server_error(&resp);
    } else if (!json_is_object(j)) {
        fprintf(stderr, "error: reted answered with something that is not a JSON object\n");
    } else {
        rete_ctl_response_free(&resp);
        return j;
    }
    json_decref(j);
    rete_ctl_response_free(&resp);
    return NULL;
}

static int cmp_items(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int r = strcmp(meta_str(x, "namespace"), meta_str(y, "namespace"));
    return r ? r : strcmp(meta_str(x, "name"), meta_str(y, "name"));
}

/* GET a list; ns NULL means every namespace. Returns a sorted JSON array or NULL. */
static json_t *get_list(rete_ctl *c, const rete_ctl_kind *k, const char *ns)
{
    char path[512];
    if (ns) {
        char *e = rete_ctl_urlencode(ns);
        snprintf(path, sizeof(path), "/api/v1/resources/%s?namespace=%s", k->def->kind, e);
        free(e);
    } else {
        snprintf(path, sizeof(path), "/api/v1/resources/%s", k->def->kind);
    }
    json_t *items = rete_ctl_get_list(c, path, (const char *const[]){"items", NULL},
                                      "reted's answer has no \"items\" list");
    if (!items)
        return NULL;
    size_t n = json_array_size(items);
    json_t **v = rete_calloc(n ? n : 1, sizeof(json_t *));
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(items, i);
    qsort(v, n, sizeof(json_t *), cmp_items);
    json_t *sorted = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(sorted, v[i]);
    free(v);
    json_decref(items);
    return sorted;
}

static void age_of(const json_t *res, time_t now, char *buf, size_t len)
{
    time_t t;
    const json_t *ts = json_object_get(json_object_get(res, "metadata"), "creationTimestamp");
    if (rete_ctl_json_time(ts, &t))
        rete_ctl_format_age((int64_t)(now - t), buf, len);
    else
        snprintf(buf, len, "<unknown>");
}

static void print_table(const rete_ctl_kind *k, const json_t *items, bool all_ns, bool wide)
{
    const char *cells[2 + RETE_CTL_MAX_COLS + 1];
    char bufs[RETE_CTL_MAX_COLS + 1][1024];
    size_t n = 0;
    rete_ctl_table t;
    if (all_ns)
        cells[n++] = "NAMESPACE";
    cells[n++] = "NAME";
    for (size_t i = 0; i < RETE_CTL_MAX_COLS && k->cols[i].header; i++)
        if (!k->cols[i].wide)
            cells[n++] = k->cols[i].header;
    cells[n++] = "AGE";
    for (size_t i = 0; wide && i < RETE_CTL_MAX_COLS && k->cols[i].header; i++)
        if (k->cols[i].wide)
            cells[n++] = k->cols[i].header;
    rete_ctl_table_init(&t, n);
    rete_ctl_table_add_row(&t, cells);
    time_t now = time(NULL);
    size_t idx;
    json_t *res;
    json_array_foreach(items, idx, res)
    {
        size_t m = 0, b = 0;
        if (all_ns)
            cells[m++] = meta_str(res, "namespace");
        cells[m++] = meta_str(res, "name");
        for (size_t i = 0; i < RETE_CTL_MAX_COLS && k->cols[i].header; i++)
            if (!k->cols[i].wide) {
                k->cols[i].cell(res, bufs[b], sizeof(bufs[b]));
                cells[m++] = bufs[b++];
            }
        age_of(res, now, bufs[b], sizeof(bufs[b]));
        cells[m++] = bufs[b++];
        for (size_t i = 0; wide && i < RETE_CTL_MAX_COLS && k->cols[i].header; i++)
            if (k->cols[i].wide) {
                k->cols[i].cell(res, bufs[b], sizeof(bufs[b]));
                cells[m++] = bufs[b++];
            }
        rete_ctl_table_add_row(&t, cells);
    }
    rete_ctl_table_print(&t, stdout);
    rete_ctl_table_free(&t);
}

/* ---- get ---- */

int rete_ctl_cmd_get(rete_ctl *c)
{
    target t;
    int u = parse_target(c, &t, false);
    if (u >= 0)
        return u;
    const char *o = c->args.output ? c->args.output : "table";
    if (strcmp(o, "table") && strcmp(o, "wide") && strcmp(o, "json") && strcmp(o, "yaml") &&
        strcmp(o, "name"))
        return rete_ctl_usage_error(c,
                                    "unknown output format \"%s\" (table, wide, json, yaml, "
                                    "name)",
                                    o);
    bool all = (c->args.seen & CTL_F_ALL_NS) != 0;
    if (all && t.name)
        return rete_ctl_usage_error(c, "a resource cannot be retrieved by name across all "
                                       "namespaces");
    if (all && c->args.ns)
        return rete_ctl_usage_error(c, "-A and -n cannot be used together");
    const char *ns = rete_ctl_ns(c);
    json_t *items;
    if (t.name) {
        json_t *one = get_one(c, t.kind, ns, t.name);
        if (!one)
            return CTL_EXIT_FAIL;
        if (!strcmp(o, "json") || !strcmp(o, "yaml")) {
            int rc = !strcmp(o, "json") ? rete_ctl_print_json(one) : rete_ctl_print_yaml(one);
            json_decref(one);
            return rc;
        }
        items = json_array();
        json_array_append_new(items, one);
    } else {
        items = get_list(c, t.kind, all ? NULL : ns);
        if (!items)
            return CTL_EXIT_FAIL;
    }
    int rc = CTL_EXIT_OK;
    if (!strcmp(o, "json") || !strcmp(o, "yaml")) {
        json_t *list =
            json_pack("{s:s, s:s, s:O}", "apiVersion", "v1", "kind", "List", "items", items);
        rc = !strcmp(o, "json") ? rete_ctl_print_json(list) : rete_ctl_print_yaml(list);
        json_decref(list);
    } else if (!strcmp(o, "name")) {
        size_t i;
        json_t *res;
        char kl[64];
        json_array_foreach(items, i, res)
            printf("%s/%s\n", rete_ctl_kind_lower(t.kind->def->kind, kl, sizeof(kl)),
                   meta_str(res, "name"));
    } else if (json_array_size(items) == 0) {
        if (all)
            fprintf(stderr, "No resources found\n");
        else
            fprintf(stderr, "No resources found in %s namespace.\n", ns);
    } else {
        print_table(t.kind, items, all, !strcmp(o, "wide"));
    }
    json_decref(items);
    return rc;
}

/* ---- delete ---- */

static int delete_one(rete_ctl *c, const rete_ctl_kind *k, const char *kind_word, const char *ns,
                      const char *name)
{
    rete_ctl_response resp;
    char kl[64];
    char *path;
    if (k) {
        path = resource_path(k, ns, name);
    } else {
        /* a kind retectl does not know: let reted judge it */
        rete_kind def = {.kind = kind_word, .plural = kind_word};
        rete_ctl_kind tmp = {.def = &def};
        path = resource_path(&tmp, ns, name);
    }
    int rc = CTL_EXIT_FAIL;
    if (rete_ctl_call(c, "DELETE", path, NULL, NULL, 0, &resp) < 0) {
        free(path);
        return rc;
    }
    free(path);
    const char *kind = k ? k->def->kind : kind_word;
    if (resp.status == 200 || resp.status == 204) {
        printf("%s \"%s\" deleted\n", rete_ctl_kind_lower(kind, kl, sizeof(kl)), name);
        rc = CTL_EXIT_OK;
    } else if (resp.status == 404) {
        fprintf(stderr, "Error from server (NotFound): %s \"%s\" not found in namespace \"%s\"\n",
                k ? k->def->plural : kind_word, name, ns);
    } else if (resp.status == 409) {
        fprintf(stderr, "error: cannot delete %s \"%s\" (409 Conflict): ",
                rete_ctl_kind_lower(kind, kl, sizeof(kl)), name);
        rete_ctl_print_server_error(&resp);
    } else {
        rete_ctl_print_server_error(&resp);
    }
    rete_ctl_response_free(&resp);
    return rc;
}

static const rete_ynode *ymap_get(const rete_ynode *map, const char *key)
{
    if (!map || map->kind != RETE_YNODE_MAP)
        return NULL;
    for (size_t i = 0; i < map->n; i++)
        if (map->pairs[i].key->kind == RETE_YNODE_SCALAR &&
            strcmp(map->pairs[i].key->str, key) == 0)
            return map->pairs[i].value;
    return NULL;
}

static const char *ystr(const rete_ynode *n)
{
    return n && n->kind == RETE_YNODE_SCALAR && !rete_ynode_is_null(n) ? n->str : NULL;
}

static int delete_file(rete_ctl *c, const char *file, const char *text, size_t len)
{
    char err[512]; /* the loader's rete_yaml_parse still writes a char buffer */
    rete_arena *a = rete_arena_new(16384);
    rete_ystream ys;
    int err_doc = 0, rc = CTL_EXIT_OK;
    if (rete_yaml_parse(text, len, a, &ys, err, sizeof(err), &err_doc) < 0) {
        fprintf(stderr, "%s: document %d: %s\n", file, err_doc, err);
        rc = CTL_EXIT_FAIL;
        goto out;
    }
    for (size_t i = 0; i < ys.n_docs; i++) {
        const rete_ynode *doc = ys.docs[i];
        if (!doc)
            continue;
        const char *kind = ystr(ymap_get(doc, "kind"));
        const rete_ynode *meta = ymap_get(doc, "metadata");
        const char *name = ystr(ymap_get(meta, "name"));
        const char *ns = ystr(ymap_get(meta, "namespace"));
        if (!kind || !name) {
            fprintf(stderr, "%s: document %zu: kind and metadata.name are needed to delete\n", file,
                    i);
            rc = CTL_EXIT_FAIL;
            continue;
        }
        if (delete_one(c, rete_ctl_kind_lookup(kind), kind, ns ? ns : rete_ctl_ns(c), name) !=
            CTL_EXIT_OK)
            rc = CTL_EXIT_FAIL;
    }
out:
    rete_arena_free(a);
    return rc;
}

int rete_ctl_cmd_delete(rete_ctl *c)
{
    if (c->args.n_files) {
        if (c->args.n_pos)
            return rete_ctl_usage_error(c, "give either -f FILE or KIND NAME, not both");
        return for_each_file(c, delete_file);
    }
    target t;
    int u = parse_target(c, &t, true);
    if (u >= 0)
        return u;
    return delete_one(c, t.kind, t.kind->def->kind, rete_ctl_ns(c), t.name);
}

/* ---- describe ---- */

static void print_indented_yaml(const json_t *v, const char *indent)
{
    char *y = rete_ctl_yaml_string(v, NULL);
    if (!y)
        return;
    for (char *line = y; *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        printf("%s%.*s\n", indent, (int)n, line);
        line += n + (nl ? 1 : 0);
    }
    free(y);
}

static bool labels_match(const json_t *selector, const json_t *labels)
{
    const char *k;
    json_t *v;
    if (json_object_size(selector) == 0)
        return false;
    json_object_foreach((json_t *)selector, k, v)
    {
        const json_t *have = json_object_get(labels, k);
        if (!json_is_string(have) || !json_equal(have, v))
            return false;
    }
    return true;
}

/* The workloads a Service selects, as kubectl shows Endpoints. */
static void describe_endpoints(rete_ctl *c, const json_t *svc, const char *ns)
{
    const rete_ctl_kind *wk = rete_ctl_kind_lookup("Workload");
    const json_t *sel = json_object_get(json_object_get(svc, "spec"), "selector");
    json_t *wls = get_list(c, wk, ns);
    size_t i, shown = 0;
    json_t *w;
    printf("Endpoints:\n");
    json_array_foreach(wls, i, w)
    {
        const json_t *spec = json_object_get(w, "spec");
        const json_t *labels = json_object_get(spec, "labels");
        if (!json_object_size(labels))
            labels = json_object_get(json_object_get(w, "metadata"), "labels");
        if (!labels_match(sel, labels))
            continue;
        const char *addr = json_string_value(json_object_get(spec, "address"));
        printf("  %s (%s)\n", addr ? addr : "?", meta_str(w, "name"));
        shown++;
    }
    if (!shown)
        printf("  <none>\n");
    json_decref(wls);
}

static void describe_resource(rete_ctl *c, const rete_ctl_kind *k, const json_t *res)
{
    const json_t *meta = json_object_get(res, "metadata");
    char buf[1024];
    time_t t;
    printf("%-18s%s\n", "Name:", meta_str(res, "name"));
    printf("%-18s%s\n", "Namespace:", meta_str(res, "namespace"));
    printf("%-18s%s\n", "Kind:", k->def->kind);
    rete_ctl_cell_map(json_object_get(meta, "labels"), buf, sizeof(buf));
    printf("%-18s%s\n", "Labels:", buf);
    rete_ctl_cell_map(json_object_get(meta, "annotations"), buf, sizeof(buf));
    printf("%-18s%s\n", "Annotations:", buf);
    const json_t *rv = json_object_get(meta, "resourceVersion");
    if (json_is_string(rv))
        printf("%-18s%s\n", "Resource Version:", json_string_value(rv));
    else if (json_is_integer(rv))
        printf("%-18s%" JSON_INTEGER_FORMAT "\n", "Resource Version:", json_integer_value(rv));
    if (rete_ctl_json_time(json_object_get(meta, "creationTimestamp"), &t)) {
        char age[32], when[64];
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        rete_ctl_format_age((int64_t)(time(NULL) - t), age, sizeof(age));
        printf("%-18s%s (%s ago)\n", "Created:", when, age);
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)res, key, v)
    {
        if (!strcmp(key, "metadata") || !strcmp(key, "kind") || !strcmp(key, "apiVersion"))
            continue;
        printf("%c%s:", key[0] >= 'a' && key[0] <= 'z' ? key[0] - 32 : key[0], key + 1);
        if (json_is_object(v) || json_is_array(v)) {
            printf("\n");
            print_indented_yaml(v, "  ");
        } else {
            printf(" ");
            print_indented_yaml(v, "");
        }
    }
    if (!strcmp(k->def->kind, "Service"))
        describe_endpoints(c, res, meta_str(res, "namespace"));
}

int rete_ctl_cmd_describe(rete_ctl *c)
{
    target t;
    int u = parse_target(c, &t, false);
    if (u >= 0)
        return u;
    const char *ns = rete_ctl_ns(c);
    if (t.name) {
        json_t *one = get_one(c, t.kind, ns, t.name);
        if (!one)
            return CTL_EXIT_FAIL;
        describe_resource(c, t.kind, one);
        json_decref(one);
        return CTL_EXIT_OK;
    }
    json_t *items = get_list(c, t.kind, ns);
    if (!items)
        return CTL_EXIT_FAIL;
    size_t i;
    json_t *res;
    json_array_foreach(items, i, res)
    {
        if (i)
            printf("\n\n");
        describe_resource(c, t.kind, res);
    }
    if (json_array_size(items) == 0)
        fprintf(stderr, "No resources found in %s namespace.\n", ns);
    json_decref(items);
    return CTL_EXIT_OK;
}
