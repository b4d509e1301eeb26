/* Writing JSON text by hand where building a jansson tree per line would cost
 * an allocation per field (the proxy's access log, one line per request).
 *
 * A rete_jbuf is a caller-owned fixed buffer (usually on the stack): appends
 * never allocate and never overflow; a field that does not fit is left out
 * whole and `truncated` is set, so a line is always valid JSON when the
 * caller closes it with the room reserved by rete_jbuf_init.
 *
 * Strings are escaped so that no input can change the line's structure:
 * `"` and `\` are backslash-escaped, and every byte outside printable ASCII
 * (below 0x20, 0x7f, 0x80 and above) is written as \u00XX. The output is pure
 * ASCII; decoding a field and encoding the result as Latin-1 gives back the
 * exact input bytes (invalid UTF-8 included), so nothing is lost or forged. */
#ifndef RETE_JSON_OUT_H
#define RETE_JSON_OUT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct rete_jbuf {
    char *p;
    size_t len;
    size_t cap;      /* usable bytes: the caller's size minus the reserve */
    bool truncated;
} rete_jbuf;

/* `reserve` bytes at the end are kept for the closing of the line (e.g.
 * "}\n" and a NUL): rete_jbuf_raw_end may use them, nothing else does. */
void rete_jbuf_init(rete_jbuf *b, char *mem, size_t size, size_t reserve);
/* Raw text (the caller's own syntax: keys, punctuation, numbers). */
void rete_jbuf_raw(rete_jbuf *b, const char *s);
/* "key":"<escaped value>" with a leading comma unless it is the first
 * field; `max` bytes of the value at most (0: no limit but the buffer's). */
void rete_jbuf_str(rete_jbuf *b, const char *key, const char *value, size_t len, size_t max);
/* "key":<number> */
void rete_jbuf_int(rete_jbuf *b, const char *key, long long v);
void rete_jbuf_num(rete_jbuf *b, const char *key, double v);
/* Append `s` using the reserve (the line's closing); NUL-terminates. */
void rete_jbuf_raw_end(rete_jbuf *b, const char *s);

/* The escaped form of one byte string into out (NUL-terminated); returns the
 * bytes written, or the bytes needed when cap is too small (nothing
 * partial is left in out then beyond a NUL). For tests and callers that
 * size their own buffers. */
size_t rete_json_escape(char *out, size_t cap, const char *in, size_t len);

/* Append `len` bytes of UTF-8 text as a JSON string, quotes included:
 * only `"`, `\\` and control characters are escaped, so text another JSON
 * reader decoded (jansson checks UTF-8) is written back unchanged. For
 * documents, not for logs (rete_jbuf_str keeps any byte exactly). */
struct rete_buf;
void rete_json_append_utf8(struct rete_buf *b, const char *s, size_t len);

#endif
