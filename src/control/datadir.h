/* reted's data directory: store.db, ca/, admin.token, trust-domain,
 * server.pem and context.json (docs/operations.md). Files only; no state. */
#ifndef RETE_CONTROL_DATADIR_H
#define RETE_CONTROL_DATADIR_H

#include "error.h"
#include "tls.h"

#include <stddef.h>

struct reted;

/* a "/" b, malloc'ed. */
char *reted_datadir_path(const char *a, const char *b);
/* A small text file (token, trust domain) without its trailing newline;
 * NULL when absent. */
char *reted_datadir_read_line(const char *path);
/* Create what a data directory needs and is missing (`reted init`): the
 * root CA, the admin token, the trust-domain file. -1 after a message on
 * stderr. */
int reted_datadir_init(const char *dir, const char *td);
/* reted's own certificate for the proxy API, issued by the current CA and
 * written to the data directory: renewed at every start and at a CA
 * rotation. NULL with *err set. */
rete_tls_ctx *reted_datadir_server_tls(struct reted *r, rete_error *err);
/* The same, installed on the proxy API's listener (after a CA change);
 * logged when it fails (the old certificate stays). */
void reted_datadir_server_tls_renew(struct reted *r);
/* context.json (and the user's retectl context): where reted listens and
 * its credentials' files. */
void reted_datadir_write_context(struct reted *r, const char *api, const char *xds);

#endif
