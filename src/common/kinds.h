/* The resource kinds: one table that every part of rete reads, so a new kind
 * is added in one place. A row holds what each reader needs of a kind:
 *   - the loader (config.c): the kind name, the apiVersions it accepts, the
 *     spec's field table (config_fields.c) and the reference doc's text;
 *   - reted (resources.c, api.c) and retectl (ctl/kinds.c): the words an
 *     operator may type for it — kind, plural and short names, matched
 *     case-insensitively by rete_kind_lookup, the one resolver both use;
 *   - reted's index and compiler (mesh_index.c, compiler.c): its index class,
 *     which says how a snapshot scopes the kind.
 * retectl adds its `get` columns in its own table, keyed by rete_kind_id.
 * The table is constant data; lookups are linear (a dozen rows). */
#ifndef RETE_COMMON_KINDS_H
#define RETE_COMMON_KINDS_H

#include <stddef.h>

struct cfg_schema;

/* Also the loader's processing and documentation order. */
typedef enum rete_kind_id {
    RETE_KIND_PROXY,
    RETE_KIND_SERVICE,
    RETE_KIND_WORKLOAD,
    RETE_KIND_HTTP_ROUTE,
    RETE_KIND_GRPC_ROUTE,
    RETE_KIND_TCP_ROUTE,
    RETE_KIND_DESTINATION_RULE,
    RETE_KIND_PEER_AUTHN,
    RETE_KIND_AUTHZ,
    RETE_KIND_MESH,
    RETE_KIND_WORKLOAD_GROUP,
    RETE_KIND_RATE_LIMIT,
    RETE_KIND_COUNT
} rete_kind_id;

/* How reted's index and compiler treat a stored kind. */
typedef enum rete_kind_class {
    RETE_KC_NONE,     /* not a stored resource: the Proxy document of a static configuration */
    RETE_KC_SERVICE,  /* Service: selects Workloads of its namespace */
    RETE_KC_WORKLOAD, /* Workload: an endpoint */
    RETE_KC_ROUTE,    /* attaches to Services by parentRefs, in every namespace */
    RETE_KC_DR,       /* DestinationRule: attaches to one Service by host */
    RETE_KC_POLICY,   /* selects workloads of its namespace, or all from the root namespace */
    RETE_KC_MESH,     /* MeshConfig: in every snapshot */
    RETE_KC_GROUP,    /* WorkloadGroup: read by the registry, never in a snapshot */
} rete_kind_class;

#define RETE_KIND_MAX_SHORT 4
#define RETE_KIND_MAX_API 4

typedef struct rete_kind {
    rete_kind_id id;
    const char *kind;                               /* "HTTPRoute" */
    const char *plural;                             /* "httproutes" */
    const char *short_names[RETE_KIND_MAX_SHORT];   /* "svc", "dr"; NULL-terminated */
    const char *api_versions[RETE_KIND_MAX_API];    /* the first is current; NULL ends */
    const struct cfg_schema *spec;                  /* the loader's field table of `spec` */
    rete_kind_class index_class;
    const char *doc;                                /* one paragraph for config-reference.md */
} rete_kind;

/* Every kind, indexed by its id. */
extern const rete_kind rete_kinds[RETE_KIND_COUNT];

/* The kind named exactly (case-sensitive, as in a document's `kind:`), or NULL. */
const rete_kind *rete_kind_by_name(const char *kind);

/* The resource kind an operator's word names — its kind, plural or a short
 * name, any case — or NULL. Only kinds reted stores (index_class != NONE):
 * the resolver of reted's API and of retectl alike. NULL word: NULL. */
const rete_kind *rete_kind_lookup(const char *word);

/* The order resources are listed in everywhere: (kind, namespace, name),
 * bytewise — reted's store (SQLite BINARY collation on its primary key),
 * its index, a snapshot's entries and the set a proxy keeps. <0, 0, >0. */
int rete_resource_key_cmp(const char *kind_a, const char *ns_a, const char *name_a, const char *kind_b,
                          const char *ns_b, const char *name_b);

#endif
