/* Authorization: Istio AuthorizationPolicy semantics over the policies that
 * select this workload (cfg->authz, built by src/common/config_resolve.c).
 * Pure functions: no I/O, no allocation, no logging; the callers (conn.c for
 * connections, dispatch.c for requests) act on the answers.
 *
 * The model: each rete_authz_rule is one source AND one operation (the
 * loader expands an Istio rule's from[] x to[] into rules OR'd together);
 * inside a source or an operation every field present must match (AND),
 * inside a field any value may match (OR), and a not* field matches when no
 * value does. A policy matches when any of its rules does; a policy with no
 * rules matches nothing.
 *
 * A request is denied when any DENY policy matches, else when at least one
 * ALLOW policy selects the workload and none matches; AUDIT policies only
 * flag it. */
#ifndef RETE_PROXY_AUTHZ_H
#define RETE_PROXY_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config-t.h"
#include "view.h"

typedef struct rete_authz_decision {
    rete_authz_action action;          /* RETE_AUTHZ_ALLOW or RETE_AUTHZ_DENY, never AUDIT */
    /* DENY: the DENY policy that matched or, when no ALLOW policy matched,
     * the first ALLOW policy (the one to name in a 403). ALLOW: the ALLOW
     * policy that matched, NULL when no ALLOW policy applies. */
    const rete_authz_policy *policy;
    bool no_allow_match;               /* DENY because no ALLOW policy matched */
    bool audit;                        /* an AUDIT policy matched */
    const rete_authz_policy *audit_policy;
} rete_authz_decision;

/* Connection-level admission for the mesh listener, decided on the peer's
 * verified SPIFFE ID alone, before any request is read. Refuses (false) a
 * peer that is NULL, not a SPIFFE ID of the proxy's trust domain, matched by
 * a DENY rule that has source conditions only (nothing about the request), or
 * (when at least one ALLOW policy selects this workload) matched by no ALLOW
 * rule's source conditions (a rule without source conditions can match
 * anyone). A peer admitted here still goes through rete_authz_check_request
 * for each request. *policy_out (when not NULL) gets the name of the policy
 * that refused the peer, or NULL (admitted, or outside the trust domain). */
bool rete_authz_admit_peer(const rete_config *cfg, const char *spiffe_id, const char **policy_out);

/* Whether spiffe_id is "spiffe://<trust_domain>/..." (exactly that domain). */
bool rete_authz_in_trust_domain(const char *trust_domain, const char *spiffe_id);

/* Request-level decision. spiffe_id: the peer's verified ID, NULL for a
 * plaintext peer (then principals/namespaces never match, and their not*
 * forms always do). method/path: the HTTP request's; path is the one
 * that will be forwarded, already normalised (rete_dispatch_normalize_path,
 * MeshConfig pathNormalization), and is matched without its query and
 * without being normalised again: what is authorised is what the app sees. For an
 * opaque tunnel (TCP, CONNECT) pass method with a NULL pointer: then rules
 * with HTTP-only fields (methods, paths and their not* forms) match nothing
 * in ALLOW/AUDIT policies, and those fields are ignored in DENY policies
 * (Istio's TCP rule). port: the destination app port. headers: reserved for
 * `when` conditions (the loader rejects them today). */
rete_authz_decision rete_authz_check_request(const rete_config *cfg, const char *spiffe_id,
                                             rete_view method, rete_view path, uint16_t port,
                                             const rete_header *headers, size_t n);

/* Istio string matching for everything but principals: exact, "*" (any
 * non-empty value), "prefix*" or "*suffix". */
bool rete_authz_str_match(const char *pattern, rete_view value);

#endif
