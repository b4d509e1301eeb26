/* The config compiler: for one proxy, the resources it needs, as the
 * document stream its loader reads.
 *
 * A proxy's scope (Istio's Sidecar egress, Consul's upstreams): the Services
 * its Workload's `egress` names (else MeshConfig `defaultEgress`, else the
 * whole mesh), the Services that select it (it serves them), and, closed
 * over, every Service a route of those names as parent or backend; with the
 * routes attached to them, their DestinationRules, the Workloads they
 * select, and the security policies of the proxy's own namespace and of the
 * root namespace (never another namespace's). Proxies with the same scope
 * (namespace, egress and, unless that is the whole mesh, labels) share one
 * snapshot, reference counted; its push message body is encoded once.
 *
 * Recompiling: the API and the registry name the keys they change
 * (reted_changed). Before the next push every cached snapshot is checked
 * against them: one that held a changed resource, or whose scope takes in a
 * changed resource's new version, is dropped and compiled again when a
 * proxy asks; every other one stays as it is, so a change to one Service
 * recompiles (and pushes to) only the proxies that route to it or serve it. */
#include "alloc.h"
#include "compiler.h"
#include "hash.h"
#include "json_out.h"
#include "kinds.h"
#include "log.h"
#include "reted.h"
#include "snapshot_wire.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One entry of the stream (snapshot_wire.h) for a stored document. */
static void put_entry(rete_buf *b, const reted_text *doc)
{
    rete_wire_put_entry(b, doc->kind, doc->ns, doc->name, doc->version, doc->data, doc->len);
}

/* The entries of a snapshot as a JSON array (the stream's "resources"). */
static void put_entries(rete_buf *b, const reted_snapshot *s)
{
    rete_buf_append(b, "[", 1);
    for (size_t i = 0; i < s->n_entries; i++) {
        if (i)
            rete_buf_append(b, ",", 1);
        put_entry(b, s->entries[i].doc);
    }
    rete_buf_append(b, "]", 1);
}

char *reted_snapshot_entries(const reted_snapshot *s, size_t *len)
{
    size_t n = 3;
    for (size_t i = 0; i < s->n_entries; i++)
        n += s->entries[i].doc->len + 128;
    rete_buf b = {0};
    rete_buf_reserve(&b, n, n);
    put_entries(&b, s);
    *len = b.len;
    return rete_buf_take(&b);
}

/* The store lists by (kind, namespace, name), bytewise: the order of a
 * snapshot's entries, and the order a proxy rebuilds its set in. */
static int key_cmp(const char *kind, const char *ns, const char *name, const reted_entry *e)
{
    return rete_resource_key_cmp(kind, ns, name, e->doc->kind, e->doc->ns, e->doc->name);
}

static int entry_cmp(const reted_entry *a, const reted_entry *b)
{
    return key_cmp(a->doc->kind, a->doc->ns, a->doc->name, b);
}


/* ---- a set of "ns/name" service keys (open addressing) ---- */

static size_t set_slot(const reted_svcset *set, const char *key)
{
    size_t mask = set->cap - 1, i = (size_t)rete_fnv1a_str(RETE_FNV1A_INIT, key) & mask;
    while (set->keys[i] && strcmp(set->keys[i], key) != 0)
        i = (i + 1) & mask;
    return i;
}

static bool set_has(const reted_svcset *set, const char *key)
{
    return set->cap && set->keys[set_slot(set, key)] != NULL;
}

static bool set_add(reted_svcset *set, const char *key)
{
    if ((set->n + 1) * 2 > set->cap) {
        reted_svcset bigger = {rete_calloc(set->cap ? set->cap * 2 : 64, sizeof(char *)), 0,
                               set->cap ? set->cap * 2 : 64};
        for (size_t i = 0; i < set->cap; i++)
            if (set->keys[i]) {
                bigger.keys[set_slot(&bigger, set->keys[i])] = set->keys[i];
                bigger.n++;
            }
        free(set->keys);
        *set = bigger;
    }
    size_t i = set_slot(set, key);
    if (set->keys[i])
        return false;
    set->keys[i] = rete_strdup(key);
    set->n++;
    return true;
}

static void set_free(reted_svcset *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->keys[i]);
    free(set->keys);
    *set = (reted_svcset){0};
}

/* Remove a key: the rest are put again (a readiness change is rare; the
 * set is small). */
static bool set_remove(reted_svcset *set, const char *key)
{
    if (!set_has(set, key))
        return false;
    reted_svcset rest = {0};
    for (size_t i = 0; i < set->cap; i++)
        if (set->keys[i] && strcmp(set->keys[i], key) != 0)
            set_add(&rest, set->keys[i]);
    set_free(set);
    *set = rest;
    return true;
}

static void set_add_res(reted_svcset *set, const reted_ires *svc)
{
    char key[520];
    snprintf(key, sizeof(key), "%s/%s", svc->ns, svc->name);
    set_add(set, key);
}

static bool set_has_res(const reted_svcset *set, const reted_ires *svc)
{
    char key[520];
    snprintf(key, sizeof(key), "%s/%s", svc->ns, svc->name);
    return set_has(set, key);
}

/* ---- scopes ---- */

static void strs_copy(reted_strs *dst, const reted_strs *src)
{
    dst->p = src->len ? rete_malloc(src->len) : NULL;
    if (src->len)
        memcpy(dst->p, src->p, src->len);
    dst->len = src->len;
    dst->n = src->n;
}

static bool egress_matches(const char *pattern, const char *own_ns, const char *ns, const char *name)
{
    const char *slash = strchr(pattern, '/');
    if (!slash)
        return false;
    size_t pl = (size_t)(slash - pattern);
    bool ns_ok = (pl == 1 && pattern[0] == '*') || (pl == 1 && pattern[0] == '.' && strcmp(ns, own_ns) == 0) ||
                 (strlen(ns) == pl && memcmp(ns, pattern, pl) == 0);
    return ns_ok && (strcmp(slash + 1, "*") == 0 || strcmp(slash + 1, name) == 0);
}

static bool in_egress(const reted_snapshot *s, const char *ns, const char *name)
{
    for (const char *e = reted_strs_first(&s->egress); e; e = reted_strs_next(&s->egress, e))
        if (egress_matches(e, s->ns, ns, name))
            return true;
    return false;
}

static bool route_in_scope(const reted_snapshot *s, const reted_ires *route)
{
    if (s->all)
        return true;
    const char *ref = reted_strs_first(&route->refs);
    for (size_t i = 0; ref && i < route->n_parents; i++, ref = reted_strs_next(&route->refs, ref))
        if (set_has(&s->services, ref))
            return true;
    return false;
}

static bool policy_in_scope(const reted_snapshot *s, const reted_ires *res)
{
    return strcmp(res->ns, s->ns) == 0 || strcmp(res->ns, RETED_ROOT_NS) == 0;
}

/* A resource that attaches to Services (a route, a DestinationRule) or to
 * a namespace (a policy) is in scope; Services and Workloads are collected
 * from the scope's set, not tested one by one (scope_resources, takes_in). */
static bool attached_in_scope(const reted_snapshot *s, const reted_ires *res)
{
    switch (res->k) {
    case RETE_KC_ROUTE:
        return route_in_scope(s, res);
    case RETE_KC_DR:
        return s->all || (res->refs.n && set_has(&s->services, res->refs.p));
    case RETE_KC_POLICY:
        return policy_in_scope(s, res);
    case RETE_KC_GROUP:
        return false; /* the registry's, never a proxy's */
    default:
        return true;
    }
}

/* The scope of a proxy: its namespace, the egress in force and its labels.
 * Fills s (ns, egress, labels, all, scope_key). */
static void scope_of(reted *r, const reted_proxy *p, reted_snapshot *s)
{
    static const reted_strs everything = {(char *)"*/*", 4, 1};
    const reted_ires *wl = reted_index_get(&r->index, "Workload", p->ns, p->name);
    const reted_strs *egress = wl && wl->refs.n ? &wl->refs : NULL;
    if (!egress) {
        size_t i, end;
        reted_index_range(&r->index, "MeshConfig", NULL, &i, &end);
        for (; i < end && !egress; i++)
            if (r->index.v[i]->refs.n)
                egress = &r->index.v[i]->refs;
    }
    snprintf(s->ns, sizeof(s->ns), "%s", p->ns);
    strs_copy(&s->egress, egress ? egress : &everything);
    for (const char *e = reted_strs_first(&s->egress); e && !s->all; e = reted_strs_next(&s->egress, e))
        s->all = strcmp(e, "*/*") == 0;
    if (wl && !s->all)
        strs_copy(&s->labels, &wl->kv);
    /* The key: what the snapshot's content depends on (labels only matter
     * when the egress does not already cover every Service). */
    rete_buf k = {0};
    rete_buf_append_str(&k, s->ns);
    rete_buf_append(&k, "\x1f", 1);
    const reted_strs *parts[2] = {s->all ? &everything : &s->egress, &s->labels};
    for (size_t i = 0; i < 2; i++) {
        for (const char *e = reted_strs_first(parts[i]); e; e = reted_strs_next(parts[i], e)) {
            rete_buf_append_str(&k, e);
            rete_buf_append(&k, "\x1e", 1);
        }
        rete_buf_append(&k, "\x1f", 1);
    }
    s->scope_hash = rete_fnv1a(RETE_FNV1A_INIT, k.p, k.len);
    s->scope_key = rete_buf_take(&k);
}

/* The Services in scope, closed over routes: a route attached to one pulls
 * in its other parents and its backends (the proxy's loader needs every
 * Service a route names). */
static void scope_services(reted *r, reted_snapshot *s)
{
    if (s->all)
        return;
    const reted_index *ix = &r->index;
    size_t first, end;
    /* Named by egress: a name is taken as is (it may not exist yet: its
     * creation is then seen as in scope); a wildcard scans the Services of
     * its namespace, or all of them for "*". */
    for (const char *e = reted_strs_first(&s->egress); e; e = reted_strs_next(&s->egress, e)) {
        const char *slash = strchr(e, '/');
        if (!slash)
            continue;
        char ns[254];
        snprintf(ns, sizeof(ns), "%.*s", e[0] == '.' ? (int)strlen(s->ns) : (int)(slash - e),
                 e[0] == '.' ? s->ns : e);
        bool any_ns = strcmp(ns, "*") == 0;
        if (!any_ns && strcmp(slash + 1, "*") != 0) {
            char key[520];
            snprintf(key, sizeof(key), "%s/%s", ns, slash + 1);
            set_add(&s->services, key);
            continue;
        }
        reted_index_range(ix, "Service", any_ns ? NULL : ns, &first, &end);
        for (size_t i = first; i < end; i++)
            if (egress_matches(e, s->ns, ix->v[i]->ns, ix->v[i]->name))
                set_add_res(&s->services, ix->v[i]);
    }
    /* Serving: Services select Workloads of their own namespace. */
    reted_index_range(ix, "Service", s->ns, &first, &end);
    for (size_t i = first; i < end; i++)
        if (reted_selects(&ix->v[i]->kv, &s->labels))
            set_add_res(&s->services, ix->v[i]);
    bool grew = true;
    while (grew) {
        grew = false;
        for (size_t k = 0; k < RETE_KIND_COUNT; k++) {
            if (rete_kinds[k].index_class != RETE_KC_ROUTE)
                continue;
            reted_index_range(ix, rete_kinds[k].kind, NULL, &first, &end);
            for (size_t i = first; i < end; i++) {
                const reted_ires *route = ix->v[i];
                if (!route_in_scope(s, route))
                    continue;
                for (const char *ref = reted_strs_first(&route->refs); ref;
                     ref = reted_strs_next(&route->refs, ref))
                    grew |= set_add(&s->services, ref);
            }
        }
    }
}

void reted_snapshot_release(reted *r, reted_snapshot *s)
{
    (void)r;
    if (!s || --s->refs > 0)
        return;
    reted_body_release(s->body);
    for (size_t i = 0; i < s->n_entries; i++)
        reted_text_release(s->entries[i].doc);
    free(s->entries);
    free(s->scope_key);
    free(s->egress.p);
    free(s->labels.p);
    set_free(&s->services);
    for (size_t i = 0; i < RETED_DELTA_CACHE; i++)
        free(s->deltas[i].body);
    free(s);
}

static reted_snapshot **bucket_of(reted *r, uint64_t scope_hash)
{
    return &r->cache.buckets[scope_hash % RETED_SCOPE_BUCKETS];
}

static void uncache(reted *r, reted_snapshot **pp)
{
    reted_snapshot *s = *pp;
    *pp = s->next;
    s->cached = false;
    for (reted_snapshot **b = bucket_of(r, s->scope_hash); *b; b = &(*b)->bucket_next)
        if (*b == s) {
            *b = s->bucket_next;
            break;
        }
    /* No delta will be asked of it any more. */
    for (size_t i = 0; i < RETED_DELTA_CACHE; i++) {
        rete_free(&s->deltas[i].body);
        s->deltas[i].base_id = 0;
    }
    reted_snapshot_release(r, s);
}

/* The Services (as "ns/name") of a Workload's namespace that select it. */
static void selecting(const reted_index *ix, const reted_ires *wl, reted_strs *out)
{
    size_t i, end;
    reted_index_range(ix, "Service", wl->ns, &i, &end);
    for (; i < end; i++)
        if (reted_selects(&ix->v[i]->kv, &wl->kv)) {
            char key[520];
            int n = snprintf(key, sizeof(key), "%s/%s", ix->v[i]->ns, ix->v[i]->name);
            reted_strs_add(out, key, (size_t)n);
        }
}

/* Does the new version of a changed resource fall in the snapshot's scope?
 * (A Service newly named or selecting the workload, a route attached to a
 * Service in scope, a Workload a Service in scope selects, a policy of its
 * namespace.) `sel`: for a Workload, the Services selecting it. */
static bool takes_in(const reted_snapshot *s, const reted_ires *now, const reted_strs *sel)
{
    switch (now->k) {
    case RETE_KC_SERVICE:
        return s->all || in_egress(s, now->ns, now->name) || set_has_res(&s->services, now) ||
               (strcmp(now->ns, s->ns) == 0 && reted_selects(&now->kv, &s->labels));
    case RETE_KC_WORKLOAD:
        for (const char *k = reted_strs_first(sel); k; k = reted_strs_next(sel, k))
            if (s->all || set_has(&s->services, k))
                return true;
        return false;
    default:
        return attached_in_scope(s, now);
    }
}

void reted_changed_key(reted *r, const char *kind, const char *ns, const char *name)
{
    if (!kind || r->cache.dirty.n >= RETED_MAX_DIRTY * 3) {
        r->cache.dirty_all = true;
        return;
    }
    const char *parts[3] = {kind, ns, name};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(parts[i]) + 1;
        r->cache.dirty.p = rete_realloc(r->cache.dirty.p, r->cache.dirty.len + n);
        memcpy(r->cache.dirty.p + r->cache.dirty.len, parts[i], n);
        r->cache.dirty.len += n;
        r->cache.dirty.n++;
    }
}

/* What scopes depend on in a resource: its class, selector or labels,
 * parents, backends, host or egress. A new version of the same shape falls
 * in exactly the scopes the old one did (takes_in reads nothing else), so
 * the snapshots that hold it only need its new text: a route's weights, a
 * Workload's address or readiness, a policy's rules. */
typedef struct shape {
    bool there;                     /* in the index */
    reted_ikind k;
    size_t n_parents;
    reted_strs kv, refs;            /* copies */
} shape;

static void shape_take(shape *sh, const reted_ires *e)
{
    *sh = (shape){.there = e != NULL};
    if (!e)
        return;
    sh->k = e->k;
    sh->n_parents = e->n_parents;
    strs_copy(&sh->kv, &e->kv);
    strs_copy(&sh->refs, &e->refs);
}

static bool strs_equal(const reted_strs *a, const reted_strs *b)
{
    return a->len == b->len && (!a->len || memcmp(a->p, b->p, a->len) == 0);
}

/* The changed resource `now`, of shape `was` before the change, can be
 * patched into the snapshots holding it. A creation or a deletion changes
 * what scopes hold; a Proxy document (RETE_KC_NONE) or a WorkloadGroup is
 * never in a snapshot. */
static bool keeps_shape(const shape *was, const reted_ires *now)
{
    return was->there && now && was->k == now->k && now->k != RETE_KC_NONE && now->k != RETE_KC_GROUP &&
           was->n_parents == now->n_parents && strs_equal(&was->kv, &now->kv) &&
           strs_equal(&was->refs, &now->refs);
}

/* Where `kind ns/name` is in the snapshot's entries (*found) or would go. */
static size_t entry_place(const reted_snapshot *s, const char *kind, const char *ns, const char *name, bool *found)
{
    size_t lo = 0, hi = s->n_entries;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(kind, ns, name, &s->entries[mid]);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* The entry of `kind ns/name` in the snapshot, or SIZE_MAX. */
static size_t entry_position(const reted_snapshot *s, const char *kind, const char *ns, const char *name)
{
    bool found;
    size_t at = entry_place(s, kind, ns, name, &found);
    return found ? at : SIZE_MAX;
}

static bool holds(const reted_snapshot *s, const char *kind, const char *ns, const char *name)
{
    return entry_position(s, kind, ns, name) != SIZE_MAX;
}

static uint64_t snapshot_hash(reted *r, reted_snapshot *s);
static reted_text *pushed_text(reted *r, const reted_ires *res);

/* One changed key of a sync, and how the cached snapshots follow it. */
typedef enum {
    FOLLOW_STALE,   /* drop those that held it or whose scope takes it in: compiled again */
    FOLLOW_REPLACE, /* it kept its shape: its new text in those that hold it */
    FOLLOW_MEMBER,  /* a Workload: an endpoint, nothing else in other scopes */
} follow;

typedef struct key_change {
    const char *kind, *ns, *name;
    const reted_ires *now;          /* NULL: deleted */
    reted_text *text;               /* REPLACE, MEMBER (unless deleted): what snapshots hold of it */
    follow how;
    reted_strs sel;                 /* MEMBER: the Services that select it */
} key_change;

/* A Workload is in a snapshot when a Service in its scope selects it (or
 * the scope is the whole mesh and one does): its own proxy's scope reads its
 * labels and egress too, but that scope is keyed by them (a change moves
 * the proxy to another snapshot, scope_of). So a Workload created, deleted
 * or relabelled only enters or leaves the snapshots of the Services that
 * select it, before or after. True when `c` must change for it. */
static bool member_moves(const reted_snapshot *c, const key_change *ch)
{
    size_t at = entry_position(c, ch->kind, ch->ns, ch->name);
    bool want = ch->now && takes_in(c, ch->now, &ch->sel);
    return want ? at == SIZE_MAX || c->entries[at].doc != ch->text : at != SIZE_MAX;
}

/* Replace the cached snapshot *pp by a copy that follows the changes
 * (in order; n_members of them FOLLOW_MEMBER): the new texts of those that
 * kept their shape, the Workloads that entered or left its Services' endpoints
 * put in or taken out at their place; same scope, a new id. The old one
 * stays whole for the proxies that hold it (the base of their delta, and
 * what proxy-status shows of their scope); its scope key and Service set
 * move to the copy, since only the cache reads them. */
static void patch_snapshot(reted *r, reted_snapshot **pp, const key_change *changes, size_t n_changes,
                           size_t n_members)
{
    reted_snapshot *old = *pp, *s = rete_calloc(1, sizeof(*s));
    size_t cap = old->n_entries + n_members;
    s->entries = rete_malloc((cap ? cap : 1) * sizeof(*s->entries));
    s->n_entries = old->n_entries;
    memcpy(s->entries, old->entries, old->n_entries * sizeof(*s->entries));
    for (size_t i = 0; i < n_changes; i++) {
        const key_change *ch = &changes[i];
        if (ch->how == FOLLOW_STALE)
            continue;
        bool found;
        size_t at = entry_place(s, ch->kind, ch->ns, ch->name, &found);
        /* in order: a key changed twice sees the first change done */
        bool want = ch->how == FOLLOW_REPLACE ? found : ch->now && takes_in(old, ch->now, &ch->sel);
        if (want && found) {
            s->entries[at].doc = ch->text;
        } else if (want) {
            memmove(s->entries + at + 1, s->entries + at, (s->n_entries - at) * sizeof(*s->entries));
            s->entries[at].doc = ch->text;
            s->n_entries++;
        } else if (found) {
            memmove(s->entries + at, s->entries + at + 1, (s->n_entries - at - 1) * sizeof(*s->entries));
            s->n_entries--;
        }
    }
    for (size_t i = 0; i < s->n_entries; i++)
        s->entries[i].doc->refs++;
    s->scope_key = old->scope_key;
    s->scope_hash = old->scope_hash;
    memcpy(s->ns, old->ns, sizeof(s->ns));
    strs_copy(&s->egress, &old->egress); /* the old one's stays: proxy-status shows a held snapshot's */
    strs_copy(&s->labels, &old->labels);
    s->all = old->all;
    s->services = old->services;
    old->scope_key = NULL;
    old->services = (reted_svcset){0};
    s->ca_generation = old->ca_generation;
    s->id = ++r->cache.snapshot_ids;
    s->hash = snapshot_hash(r, s);
    s->cached = true;
    s->refs = 1; /* the cache's */
    s->next = old->next;
    for (reted_snapshot **b = bucket_of(r, s->scope_hash); *b; b = &(*b)->bucket_next)
        if (*b == old) {
            *b = s;
            s->bucket_next = old->bucket_next;
            break;
        }
    *pp = s;
    old->cached = false;
    for (size_t i = 0; i < RETED_DELTA_CACHE; i++) {
        rete_free(&old->deltas[i].body);
        old->deltas[i].base_id = 0;
    }
    reted_snapshot_release(r, old);
    reted_count(&r->stats, r->stats.patches);
}

/* Bring the index up to the store and bring the cached snapshots up to the
 * changes since the last call: a snapshot that holds a changed resource
 * whose scope could have moved (created, deleted, new parents, selector,
 * labels, egress), or whose scope takes in a changed resource's new
 * version, is dropped (compiled again when a proxy asks); one that only
 * holds resources that changed in their text is patched. */
void reted_scopes_sync(reted *r)
{
    reted_snapshot **pp = &r->cache.snapshots;
    if (!r->index.built || r->cache.dirty_all) {
        if (reted_index_build(&r->index, r->store) != RETE_OK)
            rete_err("compiler: cannot read the store");
        while (*pp)
            uncache(r, pp);
    } else if (r->cache.dirty.n) {
        size_t n_keys = r->cache.dirty.n / 3, ki = 0, n_members = 0, n_workloads = 0;
        key_change *changes = rete_calloc(n_keys, sizeof(*changes));
        for (const char *k = reted_strs_first(&r->cache.dirty); k; ki++) {
            const char *ns = reted_strs_next(&r->cache.dirty, k), *name = reted_strs_next(&r->cache.dirty, ns);
            changes[ki] = (key_change){.kind = k, .ns = ns, .name = name};
            n_workloads += strcmp(k, "Workload") == 0;
            k = reted_strs_next(&r->cache.dirty, name);
        }
        bool members = n_workloads <= RETED_MEMBER_PATCH_MAX;
        for (ki = 0; ki < n_keys; ki++) {
            key_change *ch = &changes[ki];
            shape was;
            shape_take(&was, reted_index_get(&r->index, ch->kind, ch->ns, ch->name));
            if (reted_index_refresh(&r->index, r->store, ch->kind, ch->ns, ch->name) != RETE_OK)
                rete_err("compiler: cannot read %s %s/%s from the store", ch->kind, ch->ns, ch->name);
            ch->now = reted_index_get(&r->index, ch->kind, ch->ns, ch->name);
            if (members && strcmp(ch->kind, "Workload") == 0) {
                ch->how = FOLLOW_MEMBER;
                n_members++;
            } else {
                ch->how = keeps_shape(&was, ch->now) ? FOLLOW_REPLACE : FOLLOW_STALE;
            }
            if (ch->now && ch->how != FOLLOW_STALE)
                ch->text = pushed_text(r, ch->now);
            free(was.kv.p);
            free(was.refs.p);
        }
        /* Each changed key once against every cached snapshot. */
        bool any_patch = false;
        for (ki = 0; ki < n_keys; ki++) {
            key_change *ch = &changes[ki];
            if (ch->now && ch->now->k == RETE_KC_WORKLOAD && ch->how != FOLLOW_REPLACE)
                selecting(&r->index, ch->now, &ch->sel);
            for (reted_snapshot *c = r->cache.snapshots; c; c = c->next) {
                if (c->stale)
                    continue;
                switch (ch->how) {
                case FOLLOW_REPLACE:
                    c->patch = c->patch || holds(c, ch->kind, ch->ns, ch->name);
                    break;
                case FOLLOW_MEMBER:
                    c->patch = c->patch || member_moves(c, ch);
                    break;
                case FOLLOW_STALE:
                    c->stale = holds(c, ch->kind, ch->ns, ch->name) || (ch->now && takes_in(c, ch->now, &ch->sel));
                    break;
                }
                any_patch |= c->patch;
            }
        }
        while (*pp) {
            if ((*pp)->stale) {
                uncache(r, pp);
                continue;
            }
            if ((*pp)->patch && any_patch)
                patch_snapshot(r, pp, changes, n_keys, n_members);
            (*pp)->patch = false;
            pp = &(*pp)->next;
        }
        for (ki = 0; ki < n_keys; ki++)
            free(changes[ki].sel.p);
        free(changes);
    }
    for (pp = &r->cache.snapshots; *pp;) {
        if ((*pp)->ca_generation != r->ca_generation)
            uncache(r, pp);
        else
            pp = &(*pp)->next;
    }
    r->cache.dirty_all = false;
    r->cache.dirty.len = r->cache.dirty.n = 0;
}

const reted_index *reted_index_current(reted *r)
{
    if (!r->index.built || r->cache.dirty_all)
        return NULL;
    if (r->cache.dirty.n)
        reted_scopes_sync(r); /* the push timer's sync finds nothing left; it still pushes */
    return &r->index;
}

const reted_index *reted_index_clean(reted *r, const char *kind, const char *ns, const char *name)
{
    if (!r->index.built || r->cache.dirty_all)
        return NULL;
    for (const char *k = reted_strs_first(&r->cache.dirty); k;) {
        const char *kns = reted_strs_next(&r->cache.dirty, k), *kname = reted_strs_next(&r->cache.dirty, kns);
        if (strcmp(k, kind) == 0 && (!ns || strcmp(kns, ns) == 0) && (!name || strcmp(kname, name) == 0))
            return NULL;
        k = reted_strs_next(&r->cache.dirty, kname);
    }
    return &r->index;
}

/* Drop cached snapshots no proxy holds any more (their scopes are gone). */
void reted_snapshots_sweep(reted *r)
{
    for (reted_snapshot **pp = &r->cache.snapshots; *pp;) {
        if ((*pp)->refs == 1)
            uncache(r, pp);
        else
            pp = &(*pp)->next;
    }
}

static int res_cmp(const void *a, const void *b)
{
    return reted_ires_cmp(*(const reted_ires *const *)a, *(const reted_ires *const *)b);
}

typedef struct held_set {
    const reted_ires **v;
    size_t n, cap;
} held_set;

static void held_add(held_set *h, const reted_ires *res)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 256;
        h->v = rete_realloc(h->v, h->cap * sizeof(*h->v));
    }
    h->v[h->n++] = res;
}

/* Every resource of `kind` (in `ns` unless NULL) that is in scope. */
static void collect(const reted_index *ix, const reted_snapshot *s, const char *kind, const char *ns,
                    held_set *out)
{
    size_t i, end;
    reted_index_range(ix, kind, ns, &i, &end);
    for (; i < end; i++)
        if (attached_in_scope(s, ix->v[i]))
            held_add(out, ix->v[i]);
}

/* A Service and its endpoints. */
static void add_service(reted_index *ix, reted_ires *svc, held_set *out)
{
    held_add(out, svc);
    size_t n_ep;
    reted_ires *const *ep = reted_index_endpoints(ix, svc, &n_ep);
    for (size_t e = 0; e < n_ep; e++)
        held_add(out, ep[e]);
}

/* What the snapshot holds, in the store's order: each Service in scope
 * with its endpoints (cached in the index), the routes and
 * DestinationRules that attach to them, the policies of the namespace and
 * of the root namespace, the MeshConfig. */
static void scope_resources(reted_index *ix, const reted_snapshot *s, held_set *out)
{
    for (size_t k = 0; k < RETE_KIND_COUNT; k++) {
        const rete_kind *kd = &rete_kinds[k];
        switch (kd->index_class) {
        case RETE_KC_ROUTE:
        case RETE_KC_DR:
        case RETE_KC_MESH: /* from every namespace, as far as they attach in scope */
            collect(ix, s, kd->kind, NULL, out);
            break;
        case RETE_KC_POLICY: /* of the namespace and of the root namespace */
            collect(ix, s, kd->kind, s->ns, out);
            if (strcmp(s->ns, RETED_ROOT_NS) != 0)
                collect(ix, s, kd->kind, RETED_ROOT_NS, out);
            break;
        default: /* Services come with their scope below; the rest is never in a snapshot */
            break;
        }
    }
    size_t first, end;
    reted_index_range(ix, "Service", NULL, &first, &end);
    for (size_t i = first; s->all && i < end; i++)
        add_service(ix, ix->v[i], out);
    for (size_t i = 0; !s->all && i < s->services.cap; i++) {
        const char *key = s->services.keys[i], *slash = key ? strchr(key, '/') : NULL;
        if (!slash)
            continue;
        char ns[254];
        snprintf(ns, sizeof(ns), "%.*s", (int)(slash - key), key);
        size_t at = reted_index_position(ix, "Service", ns, slash + 1);
        if (at != SIZE_MAX) /* else named by egress, not created yet */
            add_service(ix, ix->v[at], out);
    }
    if (out->n) /* qsort's base must not be NULL, even for nothing */
        qsort(out->v, out->n, sizeof(*out->v), res_cmp);
    size_t u = 0;
    for (size_t i = 0; i < out->n; i++)
        if (u == 0 || out->v[u - 1] != out->v[i])
            out->v[u++] = out->v[i];
    out->n = u;
}

bool reted_workload_set_ready(reted *r, const char *ns, const char *name, bool ready)
{
    char key[520];
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    return ready ? set_remove(&r->cache.not_ready, key) : set_add(&r->cache.not_ready, key);
}

void reted_workload_ready_free(reted *r)
{
    set_free(&r->cache.not_ready);
}

void reted_cache_free(reted *r)
{
    while (r->cache.snapshots) {
        reted_snapshot *s = r->cache.snapshots;
        r->cache.snapshots = s->next;
        reted_snapshot_release(r, s);
    }
    reted_index_free(&r->index);
    rete_free(&r->cache.dirty.p);
    r->cache.dirty.len = r->cache.dirty.n = 0;
}

/* A Workload's text with spec.ready false (kept on the index entry, so every
 * snapshot holding it shares one copy). Same version as the stored one:
 * deltas compare texts too (reted_snapshot_delta). */
static reted_text *unready_text(reted_ires *wl)
{
    if (wl->unready)
        return wl->unready;
    const reted_text *t = wl->json;
    json_t *doc = json_loadb(t->data, t->len, 0, NULL);
    json_t *spec = json_object_get(doc, "spec");
    char *text = json_is_object(spec) && json_object_set_new(spec, "ready", json_false()) == 0
                     ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER)
                     : NULL;
    json_decref(doc);
    if (!text) /* cannot happen for a stored Workload; pushed as stored */
        return wl->json;
    size_t len = strlen(text), lk = strlen(t->kind) + 1, ln = strlen(t->ns) + 1, lm = strlen(t->name) + 1;
    reted_text *u = rete_malloc(sizeof(*u) + len + 1 + lk + ln + lm);
    u->refs = 1;
    u->version = t->version;
    u->len = len;
    u->hash = rete_fnv1a(RETE_FNV1A_INIT, text, len);
    memcpy(u->data, text, len + 1);
    memcpy(u->data + len + 1, t->kind, lk);
    memcpy(u->data + len + 1 + lk, t->ns, ln);
    memcpy(u->data + len + 1 + lk + ln, t->name, lm);
    u->kind = u->data + len + 1;
    u->ns = u->kind + lk;
    u->name = u->ns + ln;
    free(text);
    wl->unready = u;
    return u;
}

/* The text a snapshot carries for a resource: a not-ready Workload's says so. */
static reted_text *pushed_text(reted *r, const reted_ires *res)
{
    if (res->k != RETE_KC_WORKLOAD || !r->cache.not_ready.n || !set_has_res(&r->cache.not_ready, res))
        return res->json;
    return unready_text((reted_ires *)res);
}

/* The hash covers the documents (each text's own hash, in order), the trust
 * bundle (its hash kept in s->bundle_hash) and the renewal request: a CA
 * rotation changes them without changing any resource. Folding the texts'
 * hashes (8 bytes each), not their bytes, keeps it to about a microsecond for a
 * snapshot of a hundred documents. */
static uint64_t snapshot_hash(reted *r, reted_snapshot *s)
{
    uint64_t h = RETE_FNV1A_INIT;
    for (size_t i = 0; i < s->n_entries; i++)
        h = rete_fnv1a(h, &s->entries[i].doc->hash, sizeof(s->entries[i].doc->hash));
    if (r->cache.bundle_gen != r->ca_generation + 1) { /* the bundle changes with the generation */
        const char *bundle = rete_ca_bundle_pem(r->ca);
        r->cache.bundle_hash = rete_fnv1a(RETE_FNV1A_INIT, bundle, strlen(bundle));
        r->cache.bundle_gen = r->ca_generation + 1;
    }
    s->bundle_hash = r->cache.bundle_hash;
    h = rete_fnv1a(h, &s->bundle_hash, sizeof(s->bundle_hash));
    return h ^ (uint64_t)r->renew_issued_before;
}

static void compile(reted *r, reted_snapshot *s)
{
    scope_services(r, s);
    held_set held = {0};
    scope_resources(&r->index, s, &held);
    /* Exact sizes: a snapshot lives as long as its scope (a doubling
     * buffer's slack was half of reted's memory per proxy). The documents
     * themselves are the index's, shared. */
    s->entries = rete_malloc((held.n ? held.n : 1) * sizeof(*s->entries));
    s->n_entries = held.n;
    for (size_t i = 0; i < held.n; i++) {
        reted_entry *e = &s->entries[i];
        e->doc = pushed_text(r, held.v[i]);
        e->doc->refs++;
    }
    free(held.v);
    s->hash = snapshot_hash(r, s);
    reted_count(&r->stats, r->stats.compiles);
}

reted_snapshot *reted_snapshot_for(reted *r, reted_proxy *p)
{
    reted_scopes_sync(r);
    /* A proxy's scope depends on its Workload (labels, egress) and on the
     * MeshConfig (default egress): while neither changed and the snapshot
     * it was sent is still current, that is the answer, without working
     * the scope out again (a push round asks this of every proxy). */
    const reted_ires *wl = reted_index_get(&r->index, "Workload", p->ns, p->name);
    uint64_t wl_version = wl ? wl->version : 0;
    if (p->sent && p->sent->cached && p->scope_wl_version == wl_version &&
        p->scope_mesh_gen == r->index.mesh_gen) {
        p->sent->refs++;
        return p->sent;
    }
    p->scope_wl_version = wl_version;
    p->scope_mesh_gen = r->index.mesh_gen;
    reted_snapshot *s = rete_calloc(1, sizeof(*s));
    scope_of(r, p, s);
    reted_snapshot **bucket = bucket_of(r, s->scope_hash);
    for (reted_snapshot *c = *bucket; c; c = c->bucket_next)
        if (c->scope_hash == s->scope_hash && strcmp(c->scope_key, s->scope_key) == 0) {
            s->refs = 1;
            reted_snapshot_release(r, s);
            c->refs++;
            return c;
        }
    s->ca_generation = r->ca_generation;
    s->id = ++r->cache.snapshot_ids;
    compile(r, s);
    /* The whole-snapshot message body (megabytes of escaped text in a large
     * mesh) is encoded when a proxy first needs it: deltas do not. */
    s->refs = 2; /* the cache's and the caller's */
    s->cached = true;
    s->next = r->cache.snapshots;
    r->cache.snapshots = s;
    s->bucket_next = *bucket;
    *bucket = s;
    return s;
}
/* What every config message says of trust: the CA's bundle and the
 * renewal request (after the head push.c writes). */
static void put_trust(rete_buf *b, reted *r, bool bundle)
{
    char head[64];
    rete_buf_append(b, head,
                    (size_t)snprintf(head, sizeof(head), "\"renewIssuedBefore\":%lld",
                                     (long long)r->renew_issued_before));
    if (!bundle)
        return;
    rete_buf_append_str(b, ",\"trustBundle\":");
    const char *pem = rete_ca_bundle_pem(r->ca);
    rete_json_append_utf8(b, pem, strlen(pem));
}

/* Unchanged: the same text, or the same version of it with the same
 * readiness (a readiness change keeps the version, changes the text). */
static bool same_text(const reted_text *a, const reted_text *b)
{
    return a == b || (a->version == b->version && a->len == b->len && memcmp(a->data, b->data, a->len) == 0);
}

/* The delta that takes a proxy from `base` (the snapshot it acknowledged)
 * to `to`: the entries added or changed, the keys removed. Computed once
 * per (base, to) pair and kept with `to`, since the proxies of a namespace
 * mostly share their base. Returns the message tail (shared; do not free). */
const char *reted_snapshot_delta(reted *r, reted_snapshot *to, reted_snapshot *base, size_t *len)
{
    for (size_t i = 0; i < RETED_DELTA_CACHE; i++)
        if (to->deltas[i].body && to->deltas[i].base_id == base->id) {
            *len = to->deltas[i].len;
            return to->deltas[i].body;
        }
    rete_buf up = {0}, del = {0};
    rete_buf_append(&up, "[", 1);
    rete_buf_append(&del, "[", 1);
    size_t i = 0, j = 0;
    while (i < base->n_entries || j < to->n_entries) {
        if (i < base->n_entries && j < to->n_entries && base->entries[i].doc == to->entries[j].doc) {
            i++, j++; /* the same text (a patched snapshot shares all but a few) */
            continue;
        }
        int c = i == base->n_entries ? 1
                : j == to->n_entries ? -1
                                     : entry_cmp(&base->entries[i], &to->entries[j]);
        if (c < 0) { /* gone */
            const reted_text *d = base->entries[i++].doc;
            if (del.len > 1)
                rete_buf_append(&del, ",", 1);
            rete_wire_put_key(&del, d->kind, d->ns, d->name);
            continue;
        }
        const reted_entry *e = &to->entries[j++];
        if (c == 0 && same_text(base->entries[i++].doc, e->doc))
            continue; /* unchanged */
        if (up.len > 1)
            rete_buf_append(&up, ",", 1);
        put_entry(&up, e->doc);
    }
    rete_buf_append(&up, "]", 1);
    rete_buf_append(&del, "]", 1);
    rete_buf body = {0};
    rete_buf_reserve(&body, up.len + del.len + 4096, 0);
    /* The bundle only when it differs from the base's: the proxy holds the
     * base's (it writes a message's bundle before applying the rest), and a
     * delta is otherwise half bundle (docs/control-plane.md). */
    put_trust(&body, r, to->bundle_hash != base->bundle_hash);
    rete_buf_append_str(&body, ",\"upserts\":");
    rete_buf_append(&body, up.p, up.len);
    rete_buf_append_str(&body, ",\"deletes\":");
    rete_buf_append(&body, del.p, del.len);
    rete_buf_append(&body, "}\n", 2);
    rete_buf_free(&up);
    rete_buf_free(&del);
    /* Keep it (round robin over a few slots) for the other proxies on the
     * same base; the base itself may go once nobody holds it. */
    size_t slot = to->next_delta++ % RETED_DELTA_CACHE;
    free(to->deltas[slot].body);
    *len = body.len;
    /* at its length: kept until pushes calm down, and its reserve was ~4 KB
     * over (the bundle's room) where the delta is often a few hundred bytes */
    to->deltas[slot] = (struct reted_delta){base->id, rete_realloc(rete_buf_take(&body), *len + 1), *len};
    return to->deltas[slot].body;
}

reted_body *reted_snapshot_body(reted *r, reted_snapshot *s)
{
    if (!s->body) {
        rete_buf b = {0};
        size_t n = 4096;
        for (size_t i = 0; i < s->n_entries; i++)
            n += s->entries[i].doc->len + 128;
        rete_buf_reserve(&b, n, n);
        put_trust(&b, r, true);
        rete_buf_append_str(&b, ",\"resources\":");
        put_entries(&b, s);
        rete_buf_append(&b, "}\n", 2);
        s->body = rete_malloc(sizeof(*s->body) + b.len + 1);
        s->body->refs = 1;
        s->body->len = b.len;
        memcpy(s->body->data, b.p, b.len + 1);
        rete_buf_free(&b);
    }
    return s->body;
}

void reted_body_release(reted_body *b)
{
    if (b && --b->refs == 0)
        free(b);
}

static void drop_bodies(reted_snapshot *s)
{
    reted_body_release(s->body);
    s->body = NULL;
    for (size_t i = 0; i < RETED_DELTA_CACHE; i++) {
        rete_free(&s->deltas[i].body);
        s->deltas[i].base_id = 0;
    }
}

void reted_snapshots_drop_bodies(reted *r)
{
    for (reted_snapshot *s = r->cache.snapshots; s; s = s->next)
        drop_bodies(s);
    for (reted_proxy *p = r->registry.proxies; p; p = p->next)
        if (p->sent)
            drop_bodies(p->sent);
}

uint32_t reted_cert_ttl(reted *r)
{
    reted_scopes_sync(r);
    size_t i, end;
    reted_index_range(&r->index, "MeshConfig", NULL, &i, &end);
    for (; i < end; i++)
        if (r->index.v[i]->cert_ttl_ms)
            return r->index.v[i]->cert_ttl_ms / 1000;
    return r->cert_ttl;
}

static size_t snapshot_bytes(const reted_snapshot *s)
{
    /* Documents are the index's (shared): not counted. */
    size_t n = sizeof(*s) + s->n_entries * sizeof(*s->entries) + s->services.cap * sizeof(char *);
    if (s->body)
        n += s->body->len;
    for (size_t i = 0; i < RETED_DELTA_CACHE; i++)
        n += s->deltas[i].body ? s->deltas[i].len : 0;
    return n;
}

void reted_snapshot_stats(reted *r, size_t *cached, size_t *bytes)
{
    *cached = *bytes = 0;
    for (reted_snapshot *s = r->cache.snapshots; s; s = s->next) {
        (*cached)++;
        *bytes += snapshot_bytes(s);
    }
    /* Snapshots proxies still hold that are no longer current (shared:
     * each holder counts its share). */
    for (reted_proxy *p = r->registry.proxies; p; p = p->next)
        if (p->sent && !p->sent->cached)
            *bytes += snapshot_bytes(p->sent) / p->sent->refs;
}
