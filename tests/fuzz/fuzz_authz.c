/* libFuzzer target for authorization with path normalisation
 * (src/proxy/policy/authz.c after src/common/path_norm.c), the order the
 * sidecar applies them in: any request path is normalised under every
 * MeshConfig mode, then checked against a DENY policy on /admin and an ALLOW
 * policy for one caller's GETs. Besides memory errors it checks the property
 * a bypass would break: a path the app would see as /admin or below it is
 * always denied, and a caller no ALLOW rule names is always denied. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "authz.h"
#include "config.h"
#include "log.h"
#include "path_norm.h"
#include "fuzz.h"

static const char yaml[] =
    "apiVersion: rete.dev/v1alpha1\nkind: Proxy\nmetadata: {name: p, namespace: demo}\n"
    "spec: {serviceAccount: p, inbound: [{port: 80, protocol: HTTP}]}\n"
    "---\napiVersion: networking.rete.dev/v1alpha1\nkind: Workload\n"
    "metadata: {name: p, namespace: demo}\nspec: {address: 10.0.0.1, serviceAccount: p, labels: {app: p}}\n"
    "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: demo}\n"
    "spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin, /admin/*]}}]}]}\n"
    "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-client, namespace: demo}\n"
    "spec: {action: ALLOW, rules: [{from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}],"
    " to: [{operation: {methods: [GET, POST]}}]}]}\n";

static rete_config *cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rete_log_level = RETE_LOG_ERROR;
    rete_config_error e;
    cfg = rete_config_load_buffer(yaml, sizeof(yaml) - 1, "fuzz", 1, &e);
    CHECK(cfg && cfg->n_authz == 2);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 8192)
        return 0;
    static const char *const ids[] = {"spiffe://cluster.local/ns/demo/sa/client",
                                      "spiffe://cluster.local/ns/other/sa/client", NULL};
    const char *id = ids[data[1] % 3];
    const char *rest = (const char *)data + 2, *nl = memchr(rest, '\n', size - 2);
    rete_view method = nl ? rete_view_make(rest, (size_t)(nl - rest)) : RETE_VIEW_LIT("GET");
    rete_view target = nl ? rete_view_make(nl + 1, size - 2 - (size_t)(nl + 1 - rest))
                          : rete_view_make(rest, size - 2);
    char *out = malloc(target.len + 1);
    CHECK(out);
    size_t n = 0;
    rete_path_norm_mode mode = (rete_path_norm_mode)(data[0] % (RETE_PATH_NORM_DECODE_AND_MERGE_SLASHES + 1));
    if (rete_path_normalize(target, mode, out, target.len + 1, &n) == RETE_PATH_OK) {
        rete_view path = rete_view_make(out, n);
        rete_authz_decision d = rete_authz_check_request(cfg, id, method, path, 80, NULL, 0);
        ptrdiff_t q = rete_view_find(path, '?');
        rete_view p = q >= 0 ? rete_view_sub(path, 0, (size_t)q) : path;
        if (rete_view_eq(p, RETE_VIEW_LIT("/admin")) || rete_view_has_prefix(p, RETE_VIEW_LIT("/admin/")))
            CHECK(d.action == RETE_AUTHZ_DENY);
        if (id != ids[0])
            CHECK(d.action == RETE_AUTHZ_DENY);
        if (d.action == RETE_AUTHZ_ALLOW)
            CHECK(rete_view_eq(method, RETE_VIEW_LIT("GET")) || rete_view_eq(method, RETE_VIEW_LIT("POST")));
    }
    free(out);
    return 0;
}
