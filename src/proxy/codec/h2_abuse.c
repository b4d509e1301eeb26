/* HTTP/2 abuse accounting, server role (h2_abuse.h): premature stream
 * resets, CVE-2023-44487 ("rapid reset") and its variant that stays under
 * nghttp2's own reset rate limit by reconnecting (docs/security.md). */
#include "h2_abuse.h"
#include "log.h"
#include "worker.h"

#include <stdio.h>
#include <string.h>

/* Per connection (Envoy's premature-reset rule): a premature reset is a
 * RST_STREAM from the client on a stream whose response was not complete.
 * Once the connection has had H2_PREMATURE_STREAMS streams, it is closed
 * (GOAWAY ENHANCE_YOUR_CALM) when half of them or more were reset
 * prematurely; before that, when the premature resets alone reach half of
 * H2_PREMATURE_STREAMS. */
#define H2_PREMATURE_STREAMS 500
/* Per client (SPIFFE ID on the mesh listener, source IP elsewhere), per
 * worker: more than H2_CLIENT_RESETS premature resets within
 * H2_CLIENT_WINDOW_MS refuse the client's new HTTP/2 connections until that
 * window ends (GOAWAY ENHANCE_YOUR_CALM right after our SETTINGS). The
 * table of clients is fixed in size; the stalest entry makes room. */
#define H2_CLIENT_RESETS 1000
#define H2_CLIENT_WINDOW_MS 10000
#define H2_CLIENT_SLOTS 64

/* One client's premature resets in its current window. Per worker thread,
 * like the sessions it protects; H2_CLIENT_SLOTS * ~180 bytes. */
typedef struct h2_client_slot {
    char key[160];
    uint64_t window_start; /* uv_now ms; 0: free slot */
    uint32_t resets;
    bool logged; /* the refusal was logged in this window */
} h2_client_slot;

static _Thread_local h2_client_slot h2_clients[H2_CLIENT_SLOTS];

/* The client's slot, its window restarted if it has ended. A client not in
 * the table takes the slot whose window is oldest. */
static h2_client_slot *h2_client_slot_get(const char *key, uint64_t now)
{
    h2_client_slot *victim = &h2_clients[0];
    for (size_t i = 0; i < H2_CLIENT_SLOTS; i++) {
        h2_client_slot *cs = &h2_clients[i];
        if (cs->window_start && strcmp(cs->key, key) == 0) {
            if (now - cs->window_start >= H2_CLIENT_WINDOW_MS) {
                cs->window_start = now ? now : 1;
                cs->resets = 0;
                cs->logged = false;
            }
            return cs;
        }
        if (cs->window_start < victim->window_start)
            victim = cs;
    }
    snprintf(victim->key, sizeof(victim->key), "%s", key);
    victim->window_start = now ? now : 1;
    victim->resets = 0;
    victim->logged = false;
    return victim;
}

bool rete_h2_abuse_client_over_limit(const char *client, uint64_t now)
{
    for (size_t i = 0; i < H2_CLIENT_SLOTS; i++) {
        const h2_client_slot *cs = &h2_clients[i];
        if (cs->window_start && strcmp(cs->key, client) == 0)
            return now - cs->window_start < H2_CLIENT_WINDOW_MS && cs->resets > H2_CLIENT_RESETS;
    }
    return false;
}

int rete_h2_abuse_premature_reset(const char *client, uint32_t n_streams, uint32_t n_premature,
                                  uint64_t now)
{
    h2_client_slot *cs = h2_client_slot_get(client, now);
    cs->resets++;
    bool conn_abuse = n_streams < H2_PREMATURE_STREAMS ? n_premature * 2 >= H2_PREMATURE_STREAMS
                                                       : n_premature * 2 >= n_streams;
    if (conn_abuse)
        return RETE_H2_ABUSE_RAPID_RESET;
    if (cs->resets <= H2_CLIENT_RESETS)
        return -1;
    if (!cs->logged) {
        cs->logged = true;
        rete_warn("h2: %s reset more than %u streams in %u s: its HTTP/2 connections are refused "
                  "until the window ends",
                  client, H2_CLIENT_RESETS, H2_CLIENT_WINDOW_MS / 1000);
    }
    return RETE_H2_ABUSE_RAPID_RESET_CLIENT;
}
