/* The resources of the config stream, as reted sends them and a proxy keeps
 * them (docs/control-plane.md, "The config stream").
 *
 * One entry per resource, structured JSON, never text inside a string:
 *
 *   {"kind":K,"namespace":NS,"name":N,"version":V,"document":{...}}
 *
 * A whole snapshot carries `"resources":[entry...]`; a delta carries
 * `"upserts":[entry...]` (added or changed) and `"deletes":[key...]`, a key
 * being `{"kind":K,"namespace":NS,"name":N}`. Entries are sorted as reted's
 * store lists resources, (kind, namespace, name) bytewise, and the document is
 * the resource as the loader reads it. The proxy's loader takes the documents
 * already parsed (rete_config_load_docs): the message is parsed once, by
 * jansson, and nothing is split or parsed again.
 *
 * reted writes entries as text (rete_wire_put_*: its documents are stored as
 * compact JSON, so a snapshot is concatenation); the proxy keeps a
 * rete_wire_set, a sorted array of the entries it holds, and applies a delta
 * in O(c log n) comparisons for c changes plus one copy of the n pointers
 * (never a re-parse of what did not change). */
#ifndef RETE_COMMON_SNAPSHOT_WIRE_H
#define RETE_COMMON_SNAPSHOT_WIRE_H

#include "error.h"
#include "vec.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* ---- writing (reted) ---- */

/* Append one entry; `doc` is compact JSON text of `doc_len` bytes. */
void rete_wire_put_entry(rete_buf *b, const char *kind, const char *ns, const char *name,
                         uint64_t version, const char *doc, size_t doc_len);
/* Append one key (a delete). */
void rete_wire_put_key(rete_buf *b, const char *kind, const char *ns, const char *name);

/* ---- keeping (the proxy) ---- */

struct rete_ynode;

/* A resource the proxy holds. A document arrives as a JSON tree (`json`);
 * once a configuration has been loaded from it, the loader's own copy of
 * it (`tree`, in that configuration's arena) is what the entry keeps and
 * the JSON tree is released: the set then costs its keys and pointers, the
 * documents living once, in the configuration in use (which the holder of
 * the set keeps a reference to). */
typedef struct rete_wire_entry {
    char *key;                    /* "kind\0namespace\0name", owned; the three below point into it */
    const char *kind, *ns, *name;
    uint64_t version;
    json_t *json;                 /* the document as received; NULL once loaded */
    const struct rete_ynode *tree; /* the document in the configuration loaded from it */
} rete_wire_entry;

typedef RETE_VECTOR(rete_wire_entry) rete_wire_set;

/* A change being made to a set: `next` is the set after it (the entries
 * it keeps are shared with the set it was made from, by value); `added`
 * are the positions in `next` of the entries it brings, `dropped` the
 * entries of the old set it lets go of. Committing or abandoning costs
 * O(changes), not O(entries). */
typedef struct rete_wire_change {
    rete_wire_set next;
    bool whole;                   /* a whole snapshot: replaces every entry */
    RETE_VECTOR(size_t) added;
    rete_wire_set dropped;
} rete_wire_change;

/* The set `cur` with `upserts` (an array of entries; may be NULL) replacing
 * or joining and `deletes` (an array of keys; may be NULL) removed, into
 * *out. cur == NULL: a whole snapshot (`upserts` are all the entries; its
 * commit releases every entry the set held before). Refuses (naming the
 * entry: "upserts[3].namespace: must be a non-empty string") a malformed
 * entry, two entries with one key, a key both upserted and deleted, or a
 * delete of a key the set does not hold; *out is then empty. `cur` is not
 * changed either way. */
RETE_MUST_CHECK rete_rc rete_wire_change_make(const rete_wire_set *cur, json_t *upserts, json_t *deletes,
                                              rete_wire_change *out, rete_error *err);
/* Make the change the set's: *set becomes out->next; what it dropped is
 * released, and so is the JSON of every entry it added that has a tree by
 * now (the caller loaded a configuration from the change and set them). */
void rete_wire_change_commit(rete_wire_set *set, rete_wire_change *change);
/* Forget the change (the set it was made from stays in use). */
void rete_wire_change_abandon(rete_wire_change *change);

/* Release every entry and the array. */
void rete_wire_set_free(rete_wire_set *set);

/* The set as a JSON array of entries, appended as text: what a proxy
 * saves, read back like a whole snapshot's "resources". */
void rete_wire_set_write(const rete_wire_set *set, rete_buf *b);

#endif
