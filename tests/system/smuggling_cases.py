"""Malformed HTTP/1.1 requests that rete must refuse, never forward.

Each entry is (name, raw_bytes, expected_status). The C unit test
tests/unit/test_h1_parse.c carries the same list: it includes
tests/unit/smuggling_cases.inc, generated from this file by
tests/unit/gen_smuggling_cases.py. When you add or change a case here, rerun
that script and commit both files. The system tests send these through the real proxy
and expect the status below (and that nothing reaches the upstream).
"""

H = b"Host: a\r\n"

SMUGGLING_CASES = [
    # Content-Length (RFC 9112 §6.3 rule 5)
    ("cl_conflicting", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ("cl_duplicate_equal", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("cl_list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("cl_plus_sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("cl_minus_sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("cl_space_inside", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 0\r\n\r\n", 400),
    ("cl_hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", 400),
    ("cl_empty", b"POST / HTTP/1.1\r\n" + H + b"Content-Length:\r\n\r\n", 400),
    ("cl_overflow", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n", 400),
    ("cl_space_before_colon", b"POST / HTTP/1.1\r\n" + H + b"Content-Length : 5\r\n\r\nhello", 400),
    # Transfer-Encoding (RFC 9112 §6.1, §6.3 rule 3-4, §7)
    ("te_and_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("cl_and_te", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("te_not_final_chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("te_gzip_only", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    ("te_gzip_chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te_chunked_twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_two_fields", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_empty", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n\r\n", 400),
    ("te_xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n", 400),
    ("te_trailing_comma", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n", 400),
    ("te_vertical_tab", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", 400),
    ("te_space_before_colon", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_obs_fold", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_quoted", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n", 400),
    # Line endings and control bytes (RFC 9112 §2.2, RFC 9110 §5.5)
    ("bare_lf_request_line", b"GET / HTTP/1.1\n" + H + b"\r\n", 400),
    ("bare_lf_field", b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
    ("bare_lf_end", b"GET / HTTP/1.1\r\n" + H + b"\n", 400),
    ("bare_cr_field", b"GET / HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n", 400),
    ("bare_cr_request_line", b"GET /\r HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    ("ctl_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n", 400),
    ("del_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7fb\r\n\r\n", 400),
    ("obs_fold", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", 400),
    ("obs_fold_tab", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n\tb\r\n\r\n", 400),
    ("space_before_first_field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    ("two_leading_crlf", b"\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    # Field names (RFC 9110 §5.1, RFC 9112 §5.1)
    ("empty_field_name", b"GET / HTTP/1.1\r\n" + H + b": a\r\n\r\n", 400),
    ("field_no_colon", b"GET / HTTP/1.1\r\n" + H + b"X-No-Colon\r\n\r\n", 400),
    ("tab_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X\t: a\r\n\r\n", 400),
    ("bad_char_field_name", b"GET / HTTP/1.1\r\n" + H + b"X(y): a\r\n\r\n", 400),
    ("utf8_field_name", b"GET / HTTP/1.1\r\n" + H + b"X\xc3\xa9: a\r\n\r\n", 400),
    # Request line (RFC 9112 §3)
    ("bad_char_method", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("empty_method", b" / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("double_space_after_method", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("double_space_before_version", b"GET /  HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("tab_separator", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space_in_target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("ctl_in_target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("obs_text_in_target", b"GET /\xff HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("trailing_space_request_line", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400),
    ("missing_version", b"GET /\r\n" + H + b"\r\n", 400),
    # Versions (RFC 9112 §2.3)
    ("version_lowercase", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    ("version_2_0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("version_1_2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("version_0_9", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    ("version_garbage", b"GET / HTTP/1.x\r\n" + H + b"\r\n", 400),
    ("version_long", b"GET / HTTP/1.10\r\n" + H + b"\r\n", 400),
    # Host (RFC 9112 §3.2)
    ("missing_host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("double_host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("host_bad_char", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("host_userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    ("host_space_inside", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    # Sizes (RFC 9112 §3, RFC 6585 §5)
    ("request_line_too_long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("field_too_long", b"GET / HTTP/1.1\r\n" + H + b"X: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ("too_many_fields", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n" * 100 + b"\r\n", 431),
]
