/* Resources (resources.c): documents <-> JSON, validation with the proxy's
 * own loader, the canonical kind names, the API's view of a stored one. */
#ifndef RETE_CONTROL_RESOURCES_H
#define RETE_CONTROL_RESOURCES_H

#include "store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct reted;
struct reted_index;

typedef struct reted_doc {
    json_t *json;                   /* the resource without server-set metadata */
    const char *kind;               /* canonical kind */
    const char *ns;
    const char *name;
    uint64_t expected_version;      /* from metadata.resourceVersion, 0 when absent */
    int index;                      /* position in the stream, empty documents included,
                                       as the proxy's loader counts (errors name it) */
} reted_doc;

/* Errors of an apply or a delete are not a rete_error: they are the body of
 * the operator API's 422 answer, {"error": <summary>, "details": [{"source",
 * "document", "path", "reason"}]}, which retectl prints field by field
 * ("<file>: document <n>: <path>: <reason>", cmd_resources.c) and other
 * clients may read as data (docs/control-plane.md, "Operator API"). A code and one flat message cannot carry the document
 * index and the field path apart, so these functions build that object
 * directly (error_obj in resources.c), and nothing converts it to text and
 * back. */

/* Parse a YAML/JSON stream into documents: RETE_OK, or RETE_EINVAL with
 * *err_json set (the object above; the caller owns it). */
RETE_MUST_CHECK rete_rc reted_parse_docs(const char *text, size_t len, const char *source, reted_doc **docs,
                     size_t *n_docs, json_t **err_json);
void reted_docs_free(reted_doc *docs, size_t n);
/* Validate `docs` (to be written; deleted ones have json NULL) with the
 * proxy's own loader, together with the stored resources the change can
 * break or needs: with `ix` (the index, current: reted_index_current) those
 * are picked from it, the changed documents, their referrers and what they
 * name (resources.c says which); without it, or for a change to a kind the
 * pick does not cover, everything stored. NULL when valid, else an error
 * object naming the document and field path. */
json_t *reted_validate(struct reted *r, const reted_doc *docs, size_t n, const char *source,
                       const struct reted_index *ix);
/* Service clusterIPs before validation (the Kubernetes allocator's job):
 * a Service document without spec.clusterIP gets its stored version's,
 * else, when MeshConfig serviceCIDR is set (in `docs` or stored), a free
 * address of that range, written into the document so that it is stored
 * with it. A given clusterIP another stored Service holds is refused (the
 * validation load holds only what a change touches). NULL, or an error
 * object as reted_validate's (a full range, an address taken). */
json_t *reted_assign_cluster_ips(const reted_doc *docs, size_t n, const char *source,
                                 const struct reted_index *ix);
/* Validate one document that nothing else can reference or break (a
 * Workload a proxy registers): its own schema only, without loading the
 * store. */
json_t *reted_validate_alone(struct reted *r, const reted_doc *doc, const char *source);
/* The canonical kind for a name the user typed ("svc", "httproutes"...), or NULL. */
const char *reted_kind_canonical(const char *name);
/* The stored resource as served by the API: JSON with metadata.resourceVersion
 * and creationTimestamp filled in. */
json_t *reted_resource_json(const rete_store_resource *res);

#endif
