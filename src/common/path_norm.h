/* Request-path normalisation (Istio MeshConfig `pathNormalization`, Envoy's
 * normalize_path / merge_slashes / path_with_escaped_slashes_action).
 *
 * The proxy normalises a request's target once, where the request enters
 * (HTTP/1.1 request line, HTTP/2 :path, every listener), and from then on the
 * normalised path is the only one: routing (HTTPRoute matches), authorization
 * (AuthorizationPolicy paths) and the request forwarded to the app all see
 * the same bytes. A target that cannot be normalised safely is refused (the
 * caller answers 400).
 *
 * No I/O, no allocation, linear in the input: the result is never longer
 * than the input, so a buffer of target.len bytes always fits.
 *
 * Modes (Istio's ProxyPathNormalization.NormalizationType):
 *  - NONE: the target is kept as received (authz then matches the raw path);
 *    only what is never valid in a request-target is refused: a fragment
 *    ('#'), NUL (raw or %00), control bytes, space, DEL, non-ASCII bytes, a
 *    target that is not in origin form ("/...": asterisk form "*" too).
 *  - BASE (default): NONE's refusals, then percent-encoded unreserved
 *    characters are decoded (RFC 3986 §2.3, §6.2.2.2), other escapes are
 *    upper-cased (§6.2.2.1), dot segments are removed (§5.2.4). Refused too:
 *    malformed escapes ("%zz", "%4"), escaped slashes %2F and %5C, raw
 *    backslashes (apps disagree on all three), and a "." or ".." segment
 *    carrying path parameters (".;x", "..;x": Tomcat and Jetty resolve them
 *    as dot segments, RFC 3986 as names).
 *  - MERGE_SLASHES: BASE, then runs of '/' are merged into one.
 *  - DECODE_AND_MERGE_SLASHES: MERGE_SLASHES, but %2F, %5C and '\' are
 *    turned into '/' (as Envoy's UNESCAPE_AND_FORWARD and its backslash
 *    handling do) instead of being refused.
 * In every mode the query (from the first '?') is kept byte for byte. */
#ifndef RETE_PATH_NORM_H
#define RETE_PATH_NORM_H

#include "view.h"

#include <stddef.h>

typedef enum rete_path_norm_mode {
    RETE_PATH_NORM_BASE = 0, /* the default: a zeroed config means BASE */
    RETE_PATH_NORM_NONE,
    RETE_PATH_NORM_MERGE_SLASHES,
    RETE_PATH_NORM_DECODE_AND_MERGE_SLASHES,
} rete_path_norm_mode;

/* Why a target was refused; RETE_PATH_OK when it was not. Also the label
 * values of rete_proxy_path_rejected_total (rete_path_norm_reason). */
typedef enum rete_path_norm_result {
    RETE_PATH_OK = 0,
    RETE_PATH_NOT_ORIGIN_FORM, /* empty, or not "/..." ("*" included) */
    RETE_PATH_FRAGMENT,        /* '#' */
    RETE_PATH_BAD_CHAR,        /* NUL, %00, control, space, DEL, non-ASCII */
    RETE_PATH_BAD_ESCAPE,      /* '%' not followed by two hex digits */
    RETE_PATH_ESCAPED_SLASH,   /* %2F or %5C outside DECODE_AND_MERGE_SLASHES */
    RETE_PATH_BACKSLASH,       /* '\' outside DECODE_AND_MERGE_SLASHES */
    RETE_PATH_AMBIGUOUS_SEGMENT, /* ".;..." or "..;..." */
    RETE_PATH_TOO_LONG,        /* cap < the result (never with cap >= target.len) */
    RETE_PATH_RESULT_COUNT
} rete_path_norm_result;

/* Normalise `target` (path and optional query, as received) under `mode`
 * into out[0..cap). On RETE_PATH_OK *out_len is the result's length; on a
 * refusal out holds nothing meaningful. out must not overlap target. */
rete_path_norm_result rete_path_normalize(rete_view target, rete_path_norm_mode mode, char *out,
                                          size_t cap, size_t *out_len)
    __attribute__((warn_unused_result));

/* A short name for a result ("ok", "fragment", "escaped_slash", ...): the
 * metric label and the word in the 400's body. */
const char *rete_path_norm_reason(rete_path_norm_result r);

/* The mode's MeshConfig name ("BASE", ...). */
const char *rete_path_norm_mode_name(rete_path_norm_mode m);

/* The path part of a target: everything before the first '?'. */
rete_view rete_path_without_query(rete_view target);

#endif
