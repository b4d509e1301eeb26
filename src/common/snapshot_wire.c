#include "snapshot_wire.h"
#include "json_out.h"
#include "kinds.h"
#include "yaml_doc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- writing ---- */

/* "key":"value" with the value escaped. Names and kinds are validated by
 * reted before they are stored; escaping keeps a stream line one line
 * whatever they hold. */
static void put_str(rete_buf *b, const char *key, const char *v)
{
    rete_buf_append_str(b, key);
    rete_json_append_utf8(b, v, strlen(v));
}

void rete_wire_put_key(rete_buf *b, const char *kind, const char *ns, const char *name)
{
    put_str(b, "{\"kind\":", kind);
    put_str(b, ",\"namespace\":", ns);
    put_str(b, ",\"name\":", name);
    rete_buf_append(b, "}", 1);
}

void rete_wire_put_entry(rete_buf *b, const char *kind, const char *ns, const char *name,
                         uint64_t version, const char *doc, size_t doc_len)
{
    char num[48];
    put_str(b, "{\"kind\":", kind);
    put_str(b, ",\"namespace\":", ns);
    put_str(b, ",\"name\":", name);
    int n = snprintf(num, sizeof(num), ",\"version\":%" PRIu64 ",\"document\":", version);
    rete_buf_append(b, num, (size_t)n);
    rete_buf_append(b, doc, doc_len);
    rete_buf_append(b, "}", 1);
}

/* ---- keeping ---- */

static int key_cmp(const char *kind, const char *ns, const char *name, const rete_wire_entry *e)
{
    return rete_resource_key_cmp(kind, ns, name, e->kind, e->ns, e->name);
}

static int entry_cmp(const void *pa, const void *pb)
{
    const rete_wire_entry *a = pa, *b = pb;
    return key_cmp(a->kind, a->ns, a->name, b);
}

/* The first position in set[lo, n) whose key is >= k. */
static size_t lower_bound(const rete_wire_set *set, size_t lo, const rete_wire_entry *k)
{
    size_t hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (entry_cmp(&set->v[mid], k) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static const char *field_str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The key fields of array[i], into *e (borrowed from o: no copy yet). */
static rete_rc decode_key(json_t *o, const char *array, size_t i, rete_wire_entry *e, rete_error *err)
{
    if (!json_is_object(o))
        return rete_error_set(err, RETE_EINVAL, "%s[%zu]: must be an object", array, i);
    static const char *const names[] = {"kind", "namespace", "name"};
    const char **dst[] = {&e->kind, &e->ns, &e->name};
    for (size_t f = 0; f < 3; f++) {
        *dst[f] = field_str(o, names[f]);
        if (!*dst[f] || !**dst[f])
            return rete_error_set(err, RETE_EINVAL, "%s[%zu].%s: must be a non-empty string", array, i,
                                  names[f]);
    }
    return RETE_OK;
}

static rete_rc decode_entry(json_t *o, size_t i, rete_wire_entry *e, rete_error *err)
{
    RETE_GUARD(decode_key(o, "upserts", i, e, err));
    json_t *v = json_object_get(o, "version");
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return rete_error_set(err, RETE_EINVAL, "upserts[%zu].version: must be a non-negative integer", i);
    e->version = (uint64_t)json_integer_value(v);
    e->json = json_object_get(o, "document");
    if (!json_is_object(e->json))
        return rete_error_set(err, RETE_EINVAL, "upserts[%zu].document: must be an object", i);
    return RETE_OK;
}

/* Sorted views of a change's entries (borrowed), refusing two with one key. */
static rete_rc decode_sorted(json_t *arr, bool entries, rete_wire_set *out, rete_error *err)
{
    if (arr && !json_is_array(arr))
        return rete_error_set(err, RETE_EINVAL, "%s: must be an array", entries ? "upserts" : "deletes");
    size_t n = json_array_size(arr);
    rete_vector_reserve(out, n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        rete_wire_entry *e = &out->v[out->n];
        *e = (rete_wire_entry){0};
        json_t *o = json_array_get(arr, i);
        RETE_GUARD(entries ? decode_entry(o, i, e, err) : decode_key(o, "deletes", i, e, err));
        out->n++;
    }
    if (out->n > 1)
        qsort(out->v, out->n, sizeof(*out->v), entry_cmp);
    for (size_t i = 1; i < out->n; i++)
        if (entry_cmp(&out->v[i - 1], &out->v[i]) == 0)
            return rete_error_set(err, RETE_EINVAL, "%s: %s %s/%s appears twice",
                                  entries ? "upserts" : "deletes", out->v[i].kind, out->v[i].ns,
                                  out->v[i].name);
    return RETE_OK;
}

/* An entry of the set, owning its key and a reference to its document. */
static rete_wire_entry own(const rete_wire_entry *view)
{
    size_t lk = strlen(view->kind), ln = strlen(view->ns), lm = strlen(view->name);
    rete_wire_entry e = {.version = view->version, .json = view->json};
    e.key = malloc(lk + ln + lm + 3);
    memcpy(e.key, view->kind, lk + 1);
    memcpy(e.key + lk + 1, view->ns, ln + 1);
    memcpy(e.key + lk + ln + 2, view->name, lm + 1);
    e.kind = e.key;
    e.ns = e.key + lk + 1;
    e.name = e.key + lk + ln + 2;
    json_incref(e.json);
    return e;
}

static void entry_release(rete_wire_entry *e)
{
    free(e->key);
    json_decref(e->json);
    *e = (rete_wire_entry){0};
}

/* Append cur[from, to) to next: one copy of the run. */
static void copy_run(rete_wire_set *next, const rete_wire_set *cur, size_t from, size_t to)
{
    if (to <= from)
        return;
    rete_vector_reserve(next, next->n + (to - from));
    memcpy(&next->v[next->n], &cur->v[from], (to - from) * sizeof(*cur->v));
    next->n += to - from;
}

rete_rc rete_wire_change_make(const rete_wire_set *cur, json_t *upserts, json_t *deletes,
                              rete_wire_change *out, rete_error *err)
{
    static const rete_wire_set empty;
    *out = (rete_wire_change){.whole = cur == NULL};
    if (!cur)
        cur = &empty;
    rete_wire_set up = {0}, del = {0};
    rete_rc rc = decode_sorted(upserts, true, &up, err);
    if (rc == RETE_OK)
        rc = decode_sorted(deletes, false, &del, err);
    for (size_t i = 0, j = 0; rc == RETE_OK && i < up.n && j < del.n;) {
        int c = entry_cmp(&up.v[i], &del.v[j]);
        if (c == 0)
            rc = rete_error_set(err, RETE_EINVAL, "%s %s/%s is both upserted and deleted", up.v[i].kind,
                                up.v[i].ns, up.v[i].name);
        c < 0 ? i++ : j++;
    }
    if (rc)
        goto done;
    /* Merge the two sorted change lists into cur: each change is found by
     * binary search from where the previous one was, and the unchanged runs
     * between them are copied whole. */
    rete_vector_reserve(&out->next, cur->n + up.n + 1);
    size_t at = 0, i = 0, j = 0;
    while (i < up.n || j < del.n) {
        bool is_up = j == del.n || (i < up.n && entry_cmp(&up.v[i], &del.v[j]) < 0);
        const rete_wire_entry *k = is_up ? &up.v[i++] : &del.v[j++];
        size_t pos = lower_bound(cur, at, k);
        copy_run(&out->next, cur, at, pos);
        at = pos;
        if (pos < cur->n && entry_cmp(&cur->v[pos], k) == 0) {
            *rete_vector_push(&out->dropped) = cur->v[pos];
            at = pos + 1;
        } else if (!is_up) {
            rc = rete_error_set(err, RETE_EINVAL, "deletes: %s %s/%s is not held", k->kind, k->ns, k->name);
            goto done;
        }
        if (is_up) {
            *rete_vector_push(&out->added) = out->next.n;
            *rete_vector_push(&out->next) = own(k);
        }
    }
    copy_run(&out->next, cur, at, cur->n);
done:
    rete_vector_free(&up);
    rete_vector_free(&del);
    if (rc)
        rete_wire_change_abandon(out);
    return rc;
}

void rete_wire_change_commit(rete_wire_set *set, rete_wire_change *change)
{
    for (size_t i = 0; i < change->dropped.n; i++)
        entry_release(&change->dropped.v[i]);
    for (size_t i = 0; i < change->added.n; i++) {
        rete_wire_entry *e = &change->next.v[change->added.v[i]];
        if (e->tree) { /* loaded: the configuration's copy is the document now */
            json_decref(e->json);
            e->json = NULL;
        }
    }
    rete_vector_free(&change->dropped);
    rete_vector_free(&change->added);
    if (change->whole)
        rete_wire_set_free(set);
    rete_vector_free(set);
    *set = change->next;
    change->next = (rete_wire_set){0};
}

void rete_wire_change_abandon(rete_wire_change *change)
{
    for (size_t i = 0; i < change->added.n; i++)
        entry_release(&change->next.v[change->added.v[i]]);
    rete_vector_free(&change->added);
    rete_vector_free(&change->dropped);
    rete_vector_free(&change->next);
}

void rete_wire_set_free(rete_wire_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        entry_release(&set->v[i]);
    rete_vector_free(set);
}

void rete_wire_set_write(const rete_wire_set *set, rete_buf *b)
{
    rete_buf doc = {0};
    rete_buf_append(b, "[", 1);
    for (size_t i = 0; i < set->n; i++) {
        const rete_wire_entry *e = &set->v[i];
        doc.len = 0;
        if (e->tree) {
            rete_ynode_write_json(e->tree, &doc);
        } else {
            char *t = json_dumps(e->json, JSON_COMPACT | JSON_PRESERVE_ORDER);
            rete_buf_append_str(&doc, t);
            free(t);
        }
        if (i)
            rete_buf_append(b, ",", 1);
        rete_wire_put_entry(b, e->kind, e->ns, e->name, e->version, doc.p, doc.len);
    }
    rete_buf_append(b, "]", 1);
    rete_buf_free(&doc);
}
