/* Configuration analysers (istioctl analyze's job), shared by retectl
 * (`retectl analyze`, over what it reads from reted's API) and reted
 * (GET /api/v1/analyze, over its store and registry, for the dashboard).
 *
 * Input: the lists the API serves, as JSON arrays of resources
 * ({apiVersion, kind, metadata, spec}) and of proxies (GET /api/v1/proxies'
 * items). Output: findings [{code, level: Error|Warning, resource: {kind,
 * namespace, name}, message, hint}]; the codes are listed in
 * docs/operations.md ("Analysers"). Pure: no I/O, the clock passed in. */
#ifndef RETE_ANALYZE_H
#define RETE_ANALYZE_H

#include <jansson.h>
#include <stdbool.h>
#include <time.h>

enum {
    RETE_AN_SERVICES,
    RETE_AN_WORKLOADS,
    RETE_AN_HTTPROUTES,
    RETE_AN_GRPCROUTES,
    RETE_AN_AUTHZ,
    RETE_AN_PEERAUTHN,
    RETE_AN_PROXIES,
    RETE_AN_N
};

/* The kinds of the first RETE_AN_PROXIES inputs, as reted's store names
 * them (the API's /api/v1/resources/{kind}, lower case plural). */
extern const char *const rete_analyze_kinds[RETE_AN_PROXIES];

/* The findings over in[] (borrowed; NULL counts as empty). ns: only that
 * namespace's resources and proxies (policies of the root namespace
 * rete-system apply everywhere and are kept; workloads stay whole), NULL:
 * all. *errors: whether a finding is an Error. A new reference. */
json_t *rete_analyze(json_t *const in[RETE_AN_N], const char *ns, time_t now, bool *errors);

#endif
