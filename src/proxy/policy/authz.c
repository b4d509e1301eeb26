/* Istio AuthorizationPolicy evaluation (see authz.h for the contract).
 *
 * Istio references: security/v1beta1 AuthorizationPolicy ("Rule", "Source",
 * "Operation"), and the "Authorization on TCP traffic" rule that HTTP-only
 * fields make an ALLOW rule match nothing and are dropped from a DENY rule. */
#include "authz.h"
#include "path_norm.h"
#include "spiffe.h"
#include "tls.h"

#include <string.h>

bool rete_authz_str_match(const char *pattern, rete_view value)
{
    if (!pattern)
        return false;
    return rete_view_istio_match(rete_view_cstr(pattern), value);
}

bool rete_authz_in_trust_domain(const char *trust_domain, const char *spiffe_id)
{
    return rete_spiffe_in_trust_domain(spiffe_id, trust_domain);
}

/* The NS of ".../ns/NS/..." right after the trust domain, or an empty view. */
static rete_view spiffe_namespace(const char *id)
{
    if (!id)
        return RETE_VIEW_NULL;
    rete_view v = rete_view_cstr(rete_spiffe_principal(id));
    ptrdiff_t slash = rete_view_find(v, '/');
    if (slash < 0)
        return RETE_VIEW_NULL;
    v = rete_view_sub(v, (size_t)slash + 1, v.len);
    if (!rete_view_has_prefix(v, RETE_VIEW_LIT("ns/")))
        return RETE_VIEW_NULL;
    v = rete_view_sub(v, 3, v.len);
    ptrdiff_t end = rete_view_find(v, '/');
    return end < 0 ? v : rete_view_sub(v, 0, (size_t)end);
}

static bool any_principal(const char *const *pats, size_t n, const char *id)
{
    for (size_t i = 0; i < n && id; i++)
        if (rete_spiffe_match(pats[i], id))
            return true;
    return false;
}

static bool any_str(const char *const *pats, size_t n, rete_view v)
{
    for (size_t i = 0; i < n; i++)
        if (rete_authz_str_match(pats[i], v))
            return true;
    return false;
}

static bool any_port(const uint16_t *ports, size_t n, uint16_t port)
{
    for (size_t i = 0; i < n; i++)
        if (ports[i] == port)
            return true;
    return false;
}

static bool has_http_fields(const rete_authz_rule *r)
{
    return r->n_methods || r->n_not_methods || r->n_paths || r->n_not_paths;
}

static bool has_operation(const rete_authz_rule *r)
{
    return has_http_fields(r) || r->n_ports || r->n_not_ports;
}

/* Every source field present matches (AND); a field matches when any of its
 * values does (OR); a not* field when none does. A NULL id (plaintext) has
 * no principal and no namespace. */
static bool source_match(const rete_authz_rule *r, const char *id)
{
    if (r->n_principals && !any_principal(r->principals, r->n_principals, id))
        return false;
    if (r->n_not_principals && any_principal(r->not_principals, r->n_not_principals, id))
        return false;
    rete_view ns = spiffe_namespace(id);
    if (r->n_namespaces && !(ns.len && any_str(r->namespaces, r->n_namespaces, ns)))
        return false;
    if (r->n_not_namespaces && ns.len && any_str(r->not_namespaces, r->n_not_namespaces, ns))
        return false;
    return true;
}

typedef struct request {
    const char *id;
    bool http;
    rete_view method;
    rete_view path;     /* as forwarded, without the query */
    uint16_t port;
} request;

static bool rule_match(const rete_authz_rule *r, rete_authz_action action, const request *q)
{
    if (!source_match(r, q->id))
        return false;
    bool http_fields = q->http;
    if (!q->http && has_http_fields(r)) {
        if (action != RETE_AUTHZ_DENY)
            return false; /* Istio: an ALLOW rule that needs HTTP never matches TCP */
        http_fields = false; /* and a DENY rule ignores what TCP cannot have */
    }
    if (http_fields) {
        if (r->n_methods && !any_str(r->methods, r->n_methods, q->method))
            return false;
        if (r->n_not_methods && any_str(r->not_methods, r->n_not_methods, q->method))
            return false;
        if (r->n_paths && !any_str(r->paths, r->n_paths, q->path))
            return false;
        if (r->n_not_paths && any_str(r->not_paths, r->n_not_paths, q->path))
            return false;
    }
    if (r->n_ports && !any_port(r->ports, r->n_ports, q->port))
        return false;
    if (r->n_not_ports && any_port(r->not_ports, r->n_not_ports, q->port))
        return false;
    return true;
}

static bool policy_match(const rete_authz_policy *p, const request *q)
{
    for (size_t i = 0; i < p->n_rules; i++)
        if (rule_match(&p->rules[i], p->action, q))
            return true;
    return false; /* no rules: matches nothing */
}

bool rete_authz_admit_peer(const rete_config *cfg, const char *spiffe_id, const char **policy_out)
{
    if (policy_out)
        *policy_out = NULL;
    if (!spiffe_id || !rete_authz_in_trust_domain(cfg->proxy.trust_domain, spiffe_id))
        return false;
    const rete_authz_policy *first_allow = NULL;
    bool admitted = false;
    for (size_t i = 0; i < cfg->n_authz; i++) {
        const rete_authz_policy *p = &cfg->authz[i];
        for (size_t k = 0; k < p->n_rules; k++) {
            const rete_authz_rule *r = &p->rules[k];
            if (p->action == RETE_AUTHZ_DENY && !has_operation(r) && source_match(r, spiffe_id)) {
                if (policy_out)
                    *policy_out = p->name;
                return false;
            }
            if (p->action == RETE_AUTHZ_ALLOW && source_match(r, spiffe_id))
                admitted = true;
        }
        if (p->action == RETE_AUTHZ_ALLOW && !first_allow)
            first_allow = p;
    }
    if (first_allow && !admitted) {
        if (policy_out)
            *policy_out = first_allow->name;
        return false;
    }
    return true;
}

rete_authz_decision rete_authz_check_request(const rete_config *cfg, const char *spiffe_id,
                                             rete_view method, rete_view path, uint16_t port,
                                             const rete_header *headers, size_t n)
{
    (void)headers;
    (void)n;
    rete_authz_decision d = {.action = RETE_AUTHZ_ALLOW};
    if (cfg->n_authz == 0)
        return d;
    /* The path is the one that will be forwarded (normalised where the
     * request entered, dispatch.c): matching anything else is the bypass of
     * issue 8 item 4. */
    request q = {.id = spiffe_id, .http = method.p != NULL, .method = method, .port = port};
    if (q.http)
        q.path = rete_path_without_query(path);
    const rete_authz_policy *first_allow = NULL;
    for (size_t i = 0; i < cfg->n_authz; i++) {
        const rete_authz_policy *p = &cfg->authz[i];
        if (p->action == RETE_AUTHZ_AUDIT && !d.audit && policy_match(p, &q)) {
            d.audit = true;
            d.audit_policy = p;
        }
    }
    for (size_t i = 0; i < cfg->n_authz; i++) {
        const rete_authz_policy *p = &cfg->authz[i];
        if (p->action == RETE_AUTHZ_DENY && policy_match(p, &q)) {
            d.action = RETE_AUTHZ_DENY;
            d.policy = p;
            return d;
        }
    }
    for (size_t i = 0; i < cfg->n_authz; i++) {
        const rete_authz_policy *p = &cfg->authz[i];
        if (p->action != RETE_AUTHZ_ALLOW)
            continue;
        if (!first_allow)
            first_allow = p;
        if (policy_match(p, &q)) {
            d.policy = p;
            return d;
        }
    }
    if (first_allow) {
        d.action = RETE_AUTHZ_DENY;
        d.policy = first_allow;
        d.no_allow_match = true;
    }
    return d;
}
