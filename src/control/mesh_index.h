/* reted's in-memory index of the store: every resource's key, version and
 * JSON text, with the few fields the compiler scopes by (selectors, labels,
 * route parents and backends, DestinationRule hosts, egress lists) parsed
 * once. Kept current from the keys the API and the registry change, so one
 * change costs one store read and one parse, not a pass over the mesh. */
#ifndef RETE_CONTROL_MESH_INDEX_H
#define RETE_CONTROL_MESH_INDEX_H
#include "kinds.h"
#include "store.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A resource's index class: from the kinds table (kinds.h). */
typedef rete_kind_class reted_ikind;

/* Packed strings: `n` NUL-terminated strings one after the other. */
typedef struct reted_strs {
    char *p;
    size_t len;                   /* bytes, NULs included */
    size_t n;
} reted_strs;

/* One resource's JSON text, shared by the index and every snapshot that
 * holds it: a thousand proxies' snapshots cost one copy of each document. */
typedef struct reted_text {
    unsigned refs;
    uint64_t version;             /* the resource's, when this text was stored */
    uint64_t hash;                /* FNV-1a of the document: a snapshot's hash folds these */
    const char *kind, *ns, *name; /* into data, after the document */
    size_t len;                   /* of the document */
    char data[];                  /* document \0 kind \0 ns \0 name \0 */
} reted_text;

void reted_text_release(reted_text *t);

typedef struct reted_ires {
    const char *kind, *ns, *name; /* into key */
    reted_ikind k;
    uint64_t version;
    reted_text *json;
    /* Workload: json with spec.ready false, made when first pushed so
     * (compiler.c), same version */
    reted_text *unready;
    /* Service: selector; Workload: labels; as key, value, key, value... */
    reted_strs kv;
    /* Route: parents then backends, as "ns/name" (n_parents first);
     * DestinationRule: its host as "ns/name"; Workload: egress;
     * MeshConfig: defaultEgress. */
    reted_strs refs;
    size_t n_parents;
    uint32_t cert_ttl_ms;         /* MeshConfig: workloadCertificateTTL, 0 when unset */
    /* Service: the Workloads it selects, as of the index's gen */
    struct reted_ires **endpoints;
    size_t n_endpoints;
    uint64_t endpoints_gen;
    char key[];                   /* kind\0ns\0name\0 */
} reted_ires;

/* Workloads by label: "ns\x1fkey\x1fvalue" -> the Workloads (unordered). */
typedef struct reted_label_list {
    struct reted_label_list *next;
    reted_ires **wl;
    size_t n, cap;
    char key[];
} reted_label_list;

typedef struct reted_index {
    reted_ires **v;               /* sorted by kind, namespace, name (bytewise), as the store lists */
    size_t n, cap;
    bool built;
    uint64_t gen;                 /* bumped when a Service or Workload changes */
    uint64_t mesh_gen;            /* bumped when a MeshConfig may have changed */
    reted_label_list **labels;    /* hash table, kept with the Workloads */
    size_t n_label_buckets;
} reted_index;

/* (Re)build from the whole store. */
rete_rc reted_index_build(reted_index *ix, rete_store *st);
/* Re-read one key from the store (changed, created or deleted). */
rete_rc reted_index_refresh(reted_index *ix, rete_store *st, const char *kind, const char *ns,
                            const char *name);
/* The position of a key, SIZE_MAX when absent. */
size_t reted_index_position(const reted_index *ix, const char *kind, const char *ns, const char *name);
const reted_ires *reted_index_get(const reted_index *ix, const char *kind, const char *ns,
                                  const char *name);
/* [*first, *end) of the resources of `kind` (in `ns` unless NULL). */
void reted_index_range(const reted_index *ix, const char *kind, const char *ns, size_t *first, size_t *end);
void reted_index_free(reted_index *ix);
/* The Workloads the Service selects (unordered); computed once per
 * generation and kept. */
reted_ires *const *reted_index_endpoints(reted_index *ix, reted_ires *svc, size_t *n);
/* One resource's entry parsed from its JSON text as the index would hold it
 * (refs, selector...), outside any index: validation reads what a document
 * about to be written references. Free with reted_ires_free. */
reted_ires *reted_ires_parse(const char *kind, const char *ns, const char *name, const char *json);
void reted_ires_free(reted_ires *e);
/* Resource order: kind, namespace, name (bytewise), as the store lists. */
int reted_ires_cmp(const reted_ires *a, const reted_ires *b);

/* Iterate packed strings: for (const char *s = strs_first(x); s; s = strs_next(x, s)) */
const char *reted_strs_first(const reted_strs *x);
const char *reted_strs_next(const reted_strs *x, const char *s);
/* Every key=value of `sel` (packed pairs) is among `labels`; an empty
 * selector selects nothing (Service semantics). */
void reted_strs_add(reted_strs *x, const char *s, size_t n);
bool reted_selects(const reted_strs *sel, const reted_strs *labels);

#endif
