/* The resource kinds retectl knows: the names an operator may type for each
 * (case-insensitive: kind, plural, short names) and the columns `get` prints
 * for it. One table drives lookup, tables, help and shell completion. */
#ifndef RETE_CTL_KINDS_H
#define RETE_CTL_KINDS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef void (*rete_ctl_cell_fn)(const json_t *res, char *buf, size_t len);

typedef struct rete_ctl_column {
    const char *header;
    bool wide; /* only with -o wide, after AGE */
    rete_ctl_cell_fn cell;
} rete_ctl_column;

#define RETE_CTL_MAX_COLS 6

typedef struct rete_ctl_kind {
    const char *kind;                        /* "HTTPRoute": what the API takes and returns */
    const char *plural;                      /* "httproutes" */
    const char *aliases[4];                  /* other names, NULL-terminated: "svc", "dr" */
    rete_ctl_column cols[RETE_CTL_MAX_COLS]; /* header NULL ends */
} rete_ctl_kind;

extern const rete_ctl_kind rete_ctl_kinds[];
extern const size_t rete_ctl_n_kinds;

/* The kind an operator's word names, or NULL. */
const rete_ctl_kind *rete_ctl_kind_lookup(const char *word);

/* Lowercase kind for "service/echo" lines; buf must hold 32 bytes. */
const char *rete_ctl_kind_lower(const char *kind, char *buf, size_t len);

/* Shared cell helpers: "k=v,k2=v2" or "<none>". */
void rete_ctl_cell_map(const json_t *map, char *buf, size_t len);

#endif
