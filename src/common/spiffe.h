/* SPIFFE IDs (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md):
 * the one place that writes, reads and checks them. A workload's ID is
 * spiffe://<trust domain>/ns/<namespace>/sa/<service account>, as Istio's;
 * policies name it in principal form, without the scheme. No allocation:
 * callers pass their buffers, parsed parts are views into the ID. */
#ifndef RETE_COMMON_SPIFFE_H
#define RETE_COMMON_SPIFFE_H

#include <stdbool.h>
#include <stddef.h>

#include "view.h"

#define RETE_SPIFFE_SCHEME "spiffe://"
#define RETE_SPIFFE_SCHEME_LEN (sizeof(RETE_SPIFFE_SCHEME) - 1)

/* Longest SPIFFE ID accepted (SPIFFE ID spec §2.4), excluding the NUL. */
#define RETE_SPIFFE_ID_MAX 2048

/* printf format of a workload ID: trust domain, namespace, service account
 * (three strings). For formatting into an arena; else rete_spiffe_format. */
#define RETE_SPIFFE_WORKLOAD_FMT RETE_SPIFFE_SCHEME "%s/ns/%s/sa/%s"

/* The workload ID of (td, ns, sa) in buf (len bytes); false when it does
 * not fit (buf then holds a truncated string). No validation: the parts are
 * the caller's, checked where they were read. */
bool rete_spiffe_format(char *buf, size_t len, const char *td, const char *ns, const char *sa);

/* A workload ID's parts: views into the ID parsed. */
typedef struct rete_spiffe_parts {
    rete_view td, ns, sa;
} rete_spiffe_parts;

/* Parse id (len bytes) as a workload ID: well-formed (rete_spiffe_id_valid)
 * and of exactly the path /ns/<ns>/sa/<sa>. false, *out untouched,
 * otherwise. */
bool rete_spiffe_parse(const char *id, size_t len, rete_spiffe_parts *out);

/* Whether id is "spiffe://<td>/..." for exactly this (non-empty) trust
 * domain; not whether it is well-formed. */
bool rete_spiffe_in_trust_domain(const char *id, const char *td);

/* Whether id is a well-formed SPIFFE ID (SPIFFE ID spec §2): "spiffe://",
 * a trust domain of [a-z0-9.-_], then optional path segments "/seg" of
 * [a-zA-Z0-9.-_], none empty, "." or "..", no trailing slash, no query,
 * fragment or percent-encoding, at most RETE_SPIFFE_ID_MAX bytes. */
bool rete_spiffe_id_valid(const char *id, size_t len);

/* The principal form Istio's policies use ("td/ns/x/sa/y"): id without its
 * "spiffe://" prefix; id itself when it has none (so also a trust domain
 * given as "spiffe://td" or "td" -> "td"). */
const char *rete_spiffe_principal(const char *id);

/* Istio principal matching: pattern is exact, "*" (any non-empty id),
 * "prefix*" or "*suffix". Both pattern and id may be in principal or full
 * spiffe:// form; they are compared in principal form. */
bool rete_spiffe_match(const char *pattern, const char *id);

#endif
