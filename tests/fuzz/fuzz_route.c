/* libFuzzer target for HTTP route matching (src/common/route.c) after path
 * normalisation: the input is "METHOD\nPATH\nname: value\n..." matched
 * against a table with every kind of match (Exact, PathPrefix, regular
 * expression, header, query, method). Besides memory errors it checks that a
 * match is deterministic and that an Exact or PathPrefix rule is only chosen
 * for a path it names. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "path_norm.h"
#include "route.h"
#include "fuzz.h"

static const char yaml[] =
    "apiVersion: rete.dev/v1alpha1\nkind: Proxy\nmetadata: {name: p, namespace: demo}\nspec: {serviceAccount: p}\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\n"
    "spec: {selector: {app: web}, ports: [{name: http, port: 80}]}\n"
    "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: demo}\n"
    "spec:\n  parentRefs: [{kind: Service, name: web}]\n  rules:\n"
    "  - matches: [{path: {type: Exact, value: /exact}}]\n    backendRefs: [{name: web, port: 80}]\n"
    "  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: web, port: 80}]\n"
    "  - matches: [{path: {type: RegularExpression, value: '/re/[0-9]+(/.*)?'}}]\n"
    "    backendRefs: [{name: web, port: 80}]\n"
    "  - matches: [{headers: [{name: x-v, value: '2'}], queryParams: [{name: q, value: a}]}]\n"
    "    backendRefs: [{name: web, port: 80}]\n"
    "  - matches: [{method: POST, path: {type: PathPrefix, value: /post}}]\n"
    "    backendRefs: [{name: web, port: 80}]\n";

static rete_config *cfg;

/* Whether path (query cut off) is `prefix` or below it, as Gateway API
 * defines PathPrefix: element-wise. */
static bool under(rete_view path, rete_view prefix)
{
    ptrdiff_t q = rete_view_find(path, '?');
    rete_view p = q >= 0 ? rete_view_sub(path, 0, (size_t)q) : path;
    if (!rete_view_has_prefix(p, prefix))
        return false;
    return p.len == prefix.len || prefix.p[prefix.len - 1] == '/' || p.p[prefix.len] == '/';
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rete_log_level = RETE_LOG_ERROR;
    rete_config_error e;
    cfg = rete_config_load_buffer(yaml, sizeof(yaml) - 1, "fuzz", 1, &e);
    CHECK(cfg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    const rete_route_table *t = rete_config_find_table(cfg, RETE_VIEW_LIT("web"), 80);
    CHECK(t);
    rete_view in = rete_view_make((const char *)data, size), lines[34];
    size_t n = 0;
    while (in.len && n < 34) {
        ptrdiff_t nl = rete_view_find(in, '\n');
        size_t len = nl >= 0 ? (size_t)nl : in.len;
        lines[n++] = rete_view_sub(in, 0, len);
        in = nl >= 0 ? rete_view_sub(in, len + 1, in.len) : RETE_VIEW_NULL;
    }
    if (n < 2)
        return 0;
    rete_header h[32];
    size_t nh = 0;
    for (size_t i = 2; i < n; i++) {
        ptrdiff_t c = rete_view_find(lines[i], ':');
        if (c <= 0)
            continue;
        h[nh++] = (rete_header){rete_view_sub(lines[i], 0, (size_t)c),
                                rete_view_trim_ows(rete_view_sub(lines[i], (size_t)c + 1, lines[i].len))};
    }
    char *out = malloc(lines[1].len + 1);
    CHECK(out);
    size_t plen = 0;
    if (rete_path_normalize(lines[1], RETE_PATH_NORM_BASE, out, lines[1].len + 1, &plen) == RETE_PATH_OK) {
        rete_route_request req = {lines[0], rete_view_make(out, plen), h, nh};
        const rete_route_entry *e = rete_route_match(t, &req);
        CHECK(e == rete_route_match(t, &req));
        if (e && e->match && e->match->path.kind == RETE_MATCH_EXACT) {
            ptrdiff_t q = rete_view_find(req.path, '?');
            rete_view p = q >= 0 ? rete_view_sub(req.path, 0, (size_t)q) : req.path;
            CHECK(rete_view_eq(p, rete_view_cstr(e->match->path.value)));
        }
        if (e && e->match && e->match->path.kind == RETE_MATCH_PREFIX)
            CHECK(under(req.path, rete_view_cstr(e->match->path.value)));
    }
    free(out);
    return 0;
}
