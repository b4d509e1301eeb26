/* Authorization of inbound requests and tunnels (Istio AuthorizationPolicy,
 * evaluated by policy/authz.c). */
#include "filter.h"
#include "authz.h"
#include "config.h"
#include "log.h"
#include "worker.h"

/* AuthorizationPolicy for one inbound request or tunnel (for the port the
 * inbound-port filter found), before any byte goes to the app: DONE when it
 * was denied and answered (403 naming the policy, or a closed tunnel). */
static rete_filter_verdict authorize(rete_exchange *ex)
{
    uint16_t port = ex->target_port;
    const rete_config *cfg = ex->gen->cfg;
    if (cfg->n_authz == 0)
        return RETE_FILTER_NEXT;
    const char *id = ex->peer_id[0] ? ex->peer_id : NULL;
    rete_view method = rete_tunnel_is_raw(ex) ? RETE_VIEW_NULL : ex->req.method;
    rete_authz_decision d = rete_authz_check_request(cfg, id, method, ex->req.path, port,
                                                     ex->req.headers, ex->req.n_headers);
    if (d.audit)
        rete_info("authz: audit policy %s/%s matched %.*s %.*s from %s", d.audit_policy->ns,
                  d.audit_policy->name, (int)ex->req.method.len, ex->req.method.p,
                  (int)ex->req.path.len, ex->req.path.p, id ? id : ex->downstream_addr);
    if (d.action == RETE_AUTHZ_ALLOW)
        return RETE_FILTER_NEXT;
    rete_stat(ex->worker, ex->worker->ms.authz_denied, 1);
    rete_info("authz: denied %.*s %.*s port %u from %s by policy %s/%s%s", (int)ex->req.method.len,
              ex->req.method.p, (int)ex->req.path.len, ex->req.path.p, port,
              id ? id : ex->downstream_addr, d.policy->ns, d.policy->name,
              d.no_allow_match ? " (no ALLOW policy matched)" : "");
    ex->error = RETE_EXE_DENIED;
    rete_filter_local_text(ex, 403, "RBAC: access denied by policy %s/%s", d.policy->ns, d.policy->name);
    return RETE_FILTER_DONE;
}

const rete_filter rete_filter_authz = {
    .name = "authz",
    .on_request = authorize,
};
