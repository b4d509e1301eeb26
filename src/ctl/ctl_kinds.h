/* The columns `get` prints for each resource kind. The names an operator may
 * type for a kind (case-insensitive: kind, plural, short names) come from
 * the common table (src/common/kinds.h), the one reted resolves with too. */
#ifndef RETE_CTL_CTL_KINDS_H
#define RETE_CTL_CTL_KINDS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "kinds.h"

typedef void (*rete_ctl_cell_fn)(const json_t *res, char *buf, size_t len);

typedef struct rete_ctl_column {
    const char *header;
    bool wide; /* only with -o wide, after AGE */
    rete_ctl_cell_fn cell;
} rete_ctl_column;

#define RETE_CTL_MAX_COLS 6

/* A kind as retectl shows it: the common row (names, plural) and the
 * columns of `get`. */
typedef struct rete_ctl_kind {
    const rete_kind *def;
    rete_ctl_column cols[RETE_CTL_MAX_COLS]; /* header NULL ends */
} rete_ctl_kind;

/* In the order help and completion list them. */
extern const rete_ctl_kind rete_ctl_kinds[];
extern const size_t rete_ctl_n_kinds;

/* The kind an operator's word names (rete_kind_lookup, as reted resolves
 * it), or NULL. */
const rete_ctl_kind *rete_ctl_kind_lookup(const char *word);

/* Lowercase kind for "service/echo" lines; buf must hold 32 bytes. */
const char *rete_ctl_kind_lower(const char *kind, char *buf, size_t len);

/* Shared cell helpers: "k=v,k2=v2" or "<none>". */
void rete_ctl_cell_map(const json_t *map, char *buf, size_t len);

#endif
