/* A YAML (or JSON) stream read into plain trees, for the config loader.
 *
 * libyaml parses; this module copies each document into a tree of nodes in
 * a caller-owned arena, keeping for every scalar whether it was quoted (so
 * `port: "80"` and `port: 80` can be told apart) and the 0-based line of
 * every node. Aliases are expanded; a depth and node-count bound keeps an
 * alias bomb from exhausting memory. */
#ifndef RETE_YAML_DOC_H
#define RETE_YAML_DOC_H

#include <stdbool.h>
#include <stddef.h>

#include "result.h"

struct rete_arena;

typedef enum rete_ynode_kind {
    RETE_YNODE_SCALAR,
    RETE_YNODE_MAP,
    RETE_YNODE_SEQ,
} rete_ynode_kind;

typedef struct rete_ynode rete_ynode;

typedef struct rete_ypair {
    const rete_ynode *key;
    const rete_ynode *value;
} rete_ypair;

struct rete_ynode {
    rete_ynode_kind kind;
    unsigned line; /* 0-based */
    /* SCALAR: NUL-terminated text of `len` bytes; `quoted` for any non-plain style */
    const char *str;
    size_t len;
    bool quoted;
    /* MAP: pairs in document order; SEQ: items */
    const rete_ypair *pairs;
    const rete_ynode *const *items;
    size_t n;
};

typedef struct rete_ystream {
    const rete_ynode *const *docs; /* NULL entry for an empty document */
    size_t n_docs;
} rete_ystream;

/* Parse `data` into `out`, allocating from `arena`. On a syntax error
 * returns RETE_EINVAL with a message ("line L column C: problem") in
 * errbuf and the 0-based index of the failing document in *err_doc. */
RETE_MUST_CHECK rete_rc rete_yaml_parse(const char *data, size_t len, struct rete_arena *arena,
                                        rete_ystream *out, char *errbuf, size_t errlen,
                                        int *err_doc);

/* A JSON tree (jansson's) as the same nodes, allocated from `arena`: what
 * the YAML parser would give for its compact text (strings quoted; numbers,
 * booleans and null plain), without printing and parsing it. NULL past the
 * same depth and node bounds as a parse. Lines are 0. */
struct json_t;
const rete_ynode *rete_ynode_from_json(const struct json_t *j, struct rete_arena *arena);

/* A copy of the tree n in `arena` (strings included). */
const rete_ynode *rete_ynode_copy(const rete_ynode *n, struct rete_arena *arena);

/* Append a tree made by rete_ynode_from_json as compact JSON (quoted
 * scalars as strings, plain ones as the literals they were). */
struct rete_buf;
void rete_ynode_write_json(const rete_ynode *n, struct rete_buf *b);

/* True for a plain scalar that YAML 1.1/JSON reads as null ("", "~", "null"). */
bool rete_ynode_is_null(const rete_ynode *n);

#endif
