/* Tap (docs/observability.md, "Tap"): live request records for operators,
 * started and stopped by reted on the config stream (the agent calls this
 * module), captured by the tap filter at the end of every exchange while a
 * tap is on, and taken by the agent to send them up the stream.
 *
 * Cost: with no tap on, one relaxed atomic load per exchange. While a tap is
 * on, an exchange that matches one copies a fixed record (about 2.5 KiB,
 * views cut to fixed lengths, no formatting) into a ring under a mutex; the
 * agent formats records as JSON on its own loop. The proxy captures at most
 * RETE_TAP_RATE records per second over all its taps (a token bucket of one
 * second) and holds at most RETE_TAP_QUEUE; the rest are dropped and
 * counted (rete_proxy_tap_events_total{result}).
 *
 * Threading: start, stop and take are the agent's (the main loop); the
 * filter runs on the workers. The ring and the tap table live under one
 * mutex; the ring is allocated at the first start and freed when the last
 * tap stops. */
#ifndef RETE_PROXY_TAP_H
#define RETE_PROXY_TAP_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RETE_TAP_MAX 16      /* taps on at once per proxy */
#define RETE_TAP_RATE 100    /* records captured per second per proxy, all taps */
#define RETE_TAP_QUEUE 256   /* records waiting for the agent */
#define RETE_TAP_ID_MAX 40   /* a tap id's bytes, NUL included */

/* What a tap selects; empty strings and 0 select everything. */
typedef struct rete_tap_match {
    char id[RETE_TAP_ID_MAX];
    char service[256];  /* the destination Service's FQDN */
    char path[256];     /* a prefix of the request path */
    char method[16];
    int status;         /* the response status; -1: none sent */
    bool headers;       /* header values (never authorization, cookie) */
} rete_tap_match;

/* A field cut to its size; len is the original's length up to the size. */
#define RETE_TAP_FIELD(n) struct { uint16_t len; char p[n]; }

typedef struct rete_tap_record {
    char id[RETE_TAP_ID_MAX];   /* the tap it matched */
    int64_t start_unix_ms;
    uint64_t latency_us;
    int status;                 /* 0: no response */
    bool inbound;
    bool headers;               /* values kept (else redacted) */
    RETE_TAP_FIELD(16) method;
    RETE_TAP_FIELD(128) authority;
    RETE_TAP_FIELD(256) path;
    RETE_TAP_FIELD(128) route;
    RETE_TAP_FIELD(8) flags;
    RETE_TAP_FIELD(64) request_id;
    RETE_TAP_FIELD(128) service;
    RETE_TAP_FIELD(64) src_wl, src_ns, dst_wl, dst_ns;
    RETE_TAP_FIELD(160) src_principal, dst_principal;
    RETE_TAP_FIELD(64) upstream;
    uint16_t n_headers;
    RETE_TAP_FIELD(1024) hdr;   /* name NUL value NUL ..., whole pairs only */
} rete_tap_record;

/* Start (or replace) tap m->id; RETE_ELIMIT when RETE_TAP_MAX are on. */
RETE_MUST_CHECK rete_rc rete_tap_start(const rete_tap_match *m, rete_error *err);
/* Stop tap id (NULL: every tap). Records already captured stay queued. */
void rete_tap_stop(const char *id);
/* Taps on now. */
size_t rete_tap_active(void);
/* Move up to max queued records into out; returns how many. */
size_t rete_tap_take(rete_tap_record *out, size_t max);
/* Counters since the start of the process: records captured, dropped by
 * the rate bound, dropped because the queue was full. */
void rete_tap_counts(uint64_t *captured, uint64_t *dropped_rate, uint64_t *dropped_queue);

#endif
