/* Change tracking and push scheduling (push.h): a change marks keys, a
 * short timer coalesces a burst into one recompile, then every connected
 * proxy whose snapshot changed gets a delta or a whole snapshot; once
 * pushes calm down, cached bodies and freed heap go back. */
#include "push.h"

#include "alloc.h"
#include "compiler.h"
#include "log.h"
#include "reted.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void body_unref(void *owner, void *arg)
{
    (void)owner;
    reted_body_release(arg);
}

/* Queue one push message. A whole-snapshot body is shared: the stream holds
 * a reference instead of a copy, so a thousand proxies connecting share one
 * body, and a newer whole snapshot replaces anything still queued. A delta
 * body is recycled by the compiler's cache (and is small): it is copied. */
static void send_whole(rete_http_stream *st, reted_body *body, const char *head, size_t head_len)
{
    body->refs++;
    rete_http_stream_send_ref(st, head, head_len, body->data, body->len, true, body_unref, body);
}

/* Push the proxy's current snapshot: whole on a new stream (or when the
 * proxy asks to resync), else as a delta from what it was last sent, which
 * is what every proxy of a namespace mostly shares: one route change costs
 * each proxy a few hundred bytes, not the whole mesh. */
void reted_push(reted *r, reted_proxy *p, bool force)
{
    if (!p->stream)
        return;
    reted_snapshot *snap = reted_snapshot_for(r, p);
    if (!force && p->sent && snap->hash == p->sent->hash) {
        reted_snapshot_release(r, snap);
        return;
    }
    uint64_t version = r->store->ops->revision(r->store);
    if (version <= p->sent_version)
        version = p->sent_version + 1;
    char head[200];
    int n;
    size_t tail_len;
    const char *tail;
    snprintf(p->nonce, sizeof(p->nonce), "%llx", (unsigned long long)(snap->hash ^ version));
    if (!force && p->sent) {
        tail = reted_snapshot_delta(r, snap, p->sent, &tail_len);
        n = snprintf(head, sizeof(head),
                     "{\"type\":\"delta\",\"version\":%llu,\"base\":%llu,\"nonce\":\"%s\",\"snapshot\":\"%016llx\",",
                     (unsigned long long)version, (unsigned long long)p->sent_version, p->nonce,
                     (unsigned long long)snap->hash);
        rete_http_stream_send_ref(p->stream, head, (size_t)n, tail, tail_len, false, NULL, NULL);
    } else {
        n = snprintf(head, sizeof(head),
                     "{\"type\":\"config\",\"version\":%llu,\"nonce\":\"%s\",\"snapshot\":\"%016llx\",",
                     (unsigned long long)version, p->nonce, (unsigned long long)snap->hash);
        send_whole(p->stream, reted_snapshot_body(r, snap), head, (size_t)n);
    }
    reted_snapshot_release(r, p->sent);
    p->sent = snap;
    p->sent_version = version;
    reted_count(&r->stats, r->stats.pushes);
}

void reted_push_resume(reted *r, reted_proxy *p, uint64_t held_version, uint64_t held_hash)
{
    if (!p->stream)
        return;
    reted_snapshot *snap = held_hash && held_version ? reted_snapshot_for(r, p) : NULL;
    if (!snap || snap->hash != held_hash) {
        reted_snapshot_release(r, snap);
        reted_push(r, p, true);
        return;
    }
    reted_snapshot_release(r, p->sent);
    p->sent = snap;
    p->sent_version = held_version;
    snprintf(p->nonce, sizeof(p->nonce), "%llx", (unsigned long long)(snap->hash ^ held_version));
    size_t tail_len;
    const char *tail = reted_snapshot_delta(r, snap, snap, &tail_len);
    char head[200];
    int n = snprintf(head, sizeof(head),
                     "{\"type\":\"delta\",\"version\":%llu,\"base\":%llu,\"nonce\":\"%s\",\"snapshot\":\"%016llx\",",
                     (unsigned long long)held_version, (unsigned long long)held_version, p->nonce,
                     (unsigned long long)snap->hash);
    rete_http_stream_send_ref(p->stream, head, (size_t)n, tail, tail_len, false, NULL, NULL);
    reted_count(&r->stats, r->stats.resumes);
}

/* Drop the message bodies the burst encoded (each snapshot keeps only its
 * documents until a proxy needs a body again) and give the memory of
 * replaced snapshots back to the system. glibc keeps
 * freed heap memory resident: after a thousand proxies connect, reted held
 * a gigabyte it no longer used (four times what was live). Returning it
 * walks the free lists (tens of ms for a gigabyte), so it is done once
 * pushes have calmed down for a second, and from the tick at most every
 * 30 s while they never calm down. */
static void trim_now(reted *r)
{
    uint64_t t0 = uv_hrtime();
    reted_snapshots_drop_bodies(r);
    rete_alloc_trim();
    r->push.trimmed_ms = uv_now(r->loop);
    r->push.pushed_since_trim = false;
    rete_debug("xds: returned free memory to the system in %.1f ms",
               (double)(uv_hrtime() - t0) / 1e6);
}

static void on_trim_timer(uv_timer_t *t)
{
    trim_now(t->data);
}

static void on_push_timer(uv_timer_t *t)
{
    reted *r = t->data;
    r->push.pending = false;
    reted_scopes_sync(r);
    for (reted_proxy *p = r->registry.proxies; p; p = p->next)
        reted_push(r, p, false);
    reted_snapshots_sweep(r);
    r->push.pushed_since_trim = true;
    uv_timer_start(&r->push.trim_timer, on_trim_timer, 1000, 0);
}

void reted_changed(reted *r, const char *kind, const char *ns, const char *name)
{
    reted_changed_key(r, kind, ns, name);
    /* Coalesce a burst of changes (an apply of many documents, many proxies
     * registering at once) into one recompile. */
    if (r->push.pending)
        return;
    r->push.pending = true;
    uv_timer_start(&r->push.timer, on_push_timer, 10, 0);
}

void reted_push_init(reted *r)
{
    uv_timer_init(r->loop, &r->push.timer);
    r->push.timer.data = r;
    uv_timer_init(r->loop, &r->push.trim_timer);
    r->push.trim_timer.data = r;
}

void reted_push_close(reted *r)
{
    uv_timer_stop(&r->push.timer);
    uv_timer_stop(&r->push.trim_timer);
    uv_close((uv_handle_t *)&r->push.timer, NULL);
    uv_close((uv_handle_t *)&r->push.trim_timer, NULL);
}

void reted_push_tick(reted *r)
{
    if (r->push.pushed_since_trim && uv_now(r->loop) - r->push.trimmed_ms >= 30000)
        trim_now(r);
}
