"""Request paths that try to slip past a path-based AuthorizationPolicy, and
what rete's path normaliser makes of each under every MeshConfig
`pathNormalization.normalization` mode.

Each entry is (name, raw_target, expected) where expected maps a mode
("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES") to the path
that is authorised, routed and forwarded (bytes), or to 400 (refused).

The C unit test tests/unit/test_path_norm.c carries the same list: it
includes tests/unit/path_cases.inc, generated from this file by
tests/unit/gen_path_cases.py. When you add or change a case here, rerun that
script and commit both files. tests/system/test_security_paths.py sends the
same targets through real sidecars to nginx and Python's http.server.
"""

MODES = ("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")
BAD = 400

_RAW = object()   # NONE: forwarded as received
_BASE = object()  # MERGE_SLASHES: as BASE
_MERGE = object() # DECODE_AND_MERGE_SLASHES: as MERGE_SLASHES


def _case(name, raw, base, none=_RAW, merge=_BASE, decode=_MERGE):
    none = raw if none is _RAW else none
    merge = base if merge is _BASE else merge
    decode = merge if decode is _MERGE else decode
    return (name, raw, {"NONE": none, "BASE": base, "MERGE_SLASHES": merge,
                        "DECODE_AND_MERGE_SLASHES": decode})


S = b"/private/secret"

PATH_CASES = [
    _case("plain", b"/public/a.txt", b"/public/a.txt"),
    _case("root", b"/", b"/"),
    # asterisk-form means the proxy itself (RFC 9112 §3.2.4): not forwarded
    _case("asterisk", b"*", BAD, none=BAD),
    _case("no_leading_slash", b"public/a.txt", BAD, none=BAD),
    _case("empty", b"", BAD, none=BAD),
    # RFC 3986 §5.2.4 dot segments
    _case("dotdot", b"/public/../private/secret", S),
    _case("dot_then_dotdot", b"/public/./../private/secret", S),
    _case("dotdot_past_root", b"/../../private/secret", S),
    _case("many_dotdot", b"/public/" + b"../" * 300 + b"private/secret", S),
    _case("dotdot_last", b"/public/..", b"/"),
    _case("dot_last", b"/public/.", b"/public/"),
    _case("triple_dot", b"/public/.../private", b"/public/.../private"),
    # empty segments: kept by BASE (RFC 3986), merged by the others
    _case("double_slash_dotdot", b"/public//../private/secret", b"/public/private/secret", merge=S),
    _case("leading_double_slash", b"//private/secret", b"//private/secret", merge=S),
    _case("slash_run", b"/public///a.txt", b"/public///a.txt", merge=b"/public/a.txt"),
    _case("trailing_double_slash", b"/public/a//", b"/public/a//", merge=b"/public/a/"),
    # percent-encoded unreserved characters are decoded (§6.2.2.2), others
    # upper-cased (§6.2.2.1)
    _case("encoded_dots", b"/public/%2e%2e/private/secret", S),
    _case("encoded_dots_upper", b"/public/%2E%2E/private/secret", S),
    _case("half_encoded_dots", b"/public/.%2e/private/secret", S),
    _case("encoded_dot_last", b"/public/%2e", b"/public/"),
    _case("encoded_unreserved", b"/%70ublic/%7euser/%41", b"/public/~user/A"),
    _case("lower_hex_upcased", b"/public/a%3ab%c3%a9", b"/public/a%3Ab%C3%A9"),
    _case("overlong_utf8_dot", b"/public/%c0%ae%c0%ae/private", b"/public/%C0%AE%C0%AE/private"),
    _case("double_encoded_dots", b"/public/%252e%252e/private/secret", b"/public/%252e%252e/private/secret"),
    _case("double_encoded_slash", b"/public/..%252Fprivate/secret", b"/public/..%252Fprivate/secret"),
    # escaped slashes and backslashes: refused, decoded only by
    # DECODE_AND_MERGE_SLASHES (where a backslash is a slash, as in Envoy)
    _case("escaped_slash", b"/public/..%2Fprivate/secret", BAD, decode=S),
    _case("escaped_slash_lower", b"/public/..%2fprivate/secret", BAD, decode=S),
    _case("escaped_dots_and_slash", b"/public/%2E%2E%2Fprivate/secret", BAD, decode=S),
    _case("escaped_slash_prefix", b"/public%2F..%2Fprivate/secret", BAD, decode=S),
    _case("escaped_backslash", b"/public/..%5Cprivate/secret", BAD, decode=S),
    _case("escaped_backslash_lower", b"/public/..%5cprivate/secret", BAD, decode=S),
    _case("backslash", b"/public/..\\private/secret", BAD, decode=S),
    _case("backslash_only", b"/public\\..\\private\\secret", BAD, decode=S),
    # path parameters: fine, but a dot segment carrying one ("..;") is read as
    # ".." by Tomcat and Jetty and as a name by RFC 3986: ambiguous, refused
    _case("path_params", b"/public/a;v=1/b", b"/public/a;v=1/b"),
    _case("dotdot_semicolon", b"/public/..;/private/secret", BAD),
    _case("dotdot_semicolon_param", b"/public/..;x=1/private/secret", BAD),
    _case("dot_semicolon", b"/public/.;/a.txt", BAD),
    _case("encoded_dotdot_semicolon", b"/public/%2e%2e;/private/secret", BAD),
    _case("encoded_semicolon_kept", b"/public/..%3bprivate", b"/public/..%3Bprivate"),
    # fragments, NUL and control characters: refused in every mode
    _case("fragment", b"/public/a#/../../private/secret", BAD, none=BAD),
    _case("fragment_in_query", b"/public/a?q=1#x", BAD, none=BAD),
    _case("nul", b"/public/\x00/../private", BAD, none=BAD),
    _case("encoded_nul", b"/public/%00/../private", BAD, none=BAD),
    _case("control", b"/public/\x01a", BAD, none=BAD),
    _case("del", b"/public/\x7fa", BAD, none=BAD),
    _case("space", b"/public/a b", BAD, none=BAD),
    # malformed escapes: refused (nothing sensible to authorise)
    _case("bad_escape", b"/public/%zz", BAD),
    _case("truncated_escape", b"/public/a%4", BAD),
    _case("trailing_percent", b"/public/a%", BAD),
    # the query is kept as received, never normalised
    _case("query_kept", b"/public/a?x=/../private&y=%2F%2e", b"/public/a?x=/../private&y=%2F%2e"),
    _case("query_after_dotdot", b"/public/../private/secret?a=%2e", S + b"?a=%2e"),
    _case("empty_query", b"/public/a?", b"/public/a?"),
    # long paths: linear, and never longer than what came in
    _case("long", b"/public/" + b"a/" * 1500 + b"z", b"/public/" + b"a/" * 1500 + b"z"),
]
