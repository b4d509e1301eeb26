/* Building, sharing and querying configuration snapshots (types in config-t.h).
 *
 * Input: a multi-document YAML (or JSON) stream of resources in the
 * Kubernetes shape plus one `kind: Proxy` document; docs/config-reference.md
 * lists every field. Validation is all-or-nothing: the first problem is reported with the
 * file, the document index (0-based), the field path (`spec.rules[0].matches[1].path.type`)
 * and the reason, and no snapshot is produced. Unknown fields are errors. */
#ifndef RETE_CONFIG_H
#define RETE_CONFIG_H

#include <stdio.h>

#include "config-t.h"
#include "result.h"
#include "view.h"

typedef struct rete_config_error {
    char file[256];
    int document;       /* 0-based index in the stream, -1 when not about one document */
    char path[256];     /* field path, empty when about the whole document */
    char reason[512];
} rete_config_error;

/* Format as "file: document N: path: reason" into buf. */
void rete_config_error_format(const rete_config_error *err, char *buf, size_t size);

/* Load from a file / from memory. Returns a snapshot with one reference, or
 * NULL with *err filled. `version` is stored in the snapshot. */
rete_config *rete_config_load_file(const char *path, uint64_t version, rete_config_error *err);
rete_config *rete_config_load_buffer(const char *data, size_t len, const char *source_name,
                                     uint64_t version, rete_config_error *err);

/* Load from documents already parsed (the control plane's stream): the same
 * as a buffer holding `head` (a YAML stream, the proxy's own Proxy document;
 * may be NULL) followed by the documents, without printing or parsing them.
 * Each document is given as a JSON tree (`json`: converted) or as the tree
 * an earlier snapshot was loaded from (`tree`, when json is NULL: copied);
 * on success every docs[i].tree is set to the document's tree in the new
 * snapshot's arena, valid while the snapshot is (so the next load can copy
 * it instead of converting again). Document indexes in errors count head's
 * documents first. */
struct json_t;
struct rete_ynode;
typedef struct rete_config_doc {
    struct json_t *json;
    const struct rete_ynode *tree;
} rete_config_doc;
rete_config *rete_config_load_docs(const char *head, size_t head_len, rete_config_doc *docs, size_t n,
                                   const char *source_name, uint64_t version, rete_config_error *err);

/* What a proxy resolved for one Service spec.externalName (a DNS name):
 * the IP literals it stands for now. */
typedef struct rete_external_addrs {
    const char *host;
    const char *const *addrs;
    size_t n_addrs;
} rete_external_addrs;

/* The same configuration as `cfg` (its documents decoded again, same
 * source and version) with the endpoints of every Service whose
 * externalName is a DNS name taken from ext[0..n_ext): one synthetic
 * Workload (inMesh false, named after the host) per address, in the order
 * given; none for a host ext does not list. Returns a new snapshot with one
 * reference (cfg is untouched), or NULL with *err filled (a document that
 * loaded once loads again: only memory limits fail). */
rete_config *rete_config_rebuild(const rete_config *cfg, const rete_external_addrs *ext, size_t n_ext,
                                 rete_config_error *err);

/* The port of the mesh listener the Proxy document in data declares
 * (spec.listeners.mesh, defaulted as a load does), read without resolving
 * its references to other resources — so before the control plane has sent
 * them: what a proxy registers as its Workload's meshPort. 0 when data holds
 * no decodable Proxy document. */
uint16_t rete_config_proxy_mesh_port(const char *data, size_t len);

static inline rete_config *rete_config_ref(rete_config *cfg)
{
    atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

/* Drop a reference; the last one frees the snapshot and everything in it. */
void rete_config_unref(rete_config *cfg);

/* Find a service by the host a client used: "name", "name.ns", "name.ns.svc",
 * "name.ns.svc.cluster.local" (case-insensitive; short names are relative to
 * the proxy's namespace), with or without ":port". Returns the route table of
 * the matching service port, or NULL. When the authority has no port,
 * `default_port` is chosen when the service has it (pass 0 for none), else
 * the service's port 80, else its only port, else its first non-TCP port. */
const rete_route_table *rete_config_find_table(const rete_config *cfg, rete_view authority,
                                               uint16_t default_port);

/* The Service a DNS or host name names, relative to the proxy's namespace
 * (name, name.ns, name.ns.svc, name.ns.svc.cluster.local; a trailing dot and
 * case ignored), or NULL. */
const rete_service *rete_config_service_by_name(const rete_config *cfg, rete_view name);

/* The route table an intercepted connection's original destination names
 * (`ip` a canonical IP literal as getsockopt(SO_ORIGINAL_DST) gives it):
 * the Service whose clusterIP is `ip` on service port `port`, else a
 * Service having the Workload at `ip` as an endpoint and a port whose
 * targetPort is `port` (the first in configuration order). NULL when none.
 * Cost: the Services, then every endpoint of every Service: it runs once per
 * connection (tunnel) or request whose Host names no Service. */
const rete_route_table *rete_config_find_by_addr(const rete_config *cfg, const char *ip, uint16_t port);

/* The route table for a known service port, or NULL. */
const rete_route_table *rete_config_table_for(const rete_config *cfg, const rete_service *svc,
                                              uint16_t port);

/* The effective configuration as JSON text (for the admin /config endpoint);
 * caller frees. */
char *rete_config_to_json(const rete_config *cfg);

/* The per-kind field tables of docs/config-reference.md, as Markdown,
 * generated from the same tables the loader validates with. */
void rete_config_write_reference(FILE *out);

#endif
