/* libFuzzer target for the two JSON string writers (src/common/json_out.c):
 * the access log's (rete_jbuf_str: any bytes, written so that the line
 * stays one valid JSON object and decoding the field as Latin-1 gives back
 * the input) and the documents' (rete_json_append_utf8: valid UTF-8 passes
 * through, and jansson decodes exactly the input). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_out.h"
#include "vec.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    const char *in = (const char *)data;
    /* the access log's writer: one line, one field, every byte kept */
    char line[6 * 4096 + 64];
    rete_jbuf jb;
    rete_jbuf_init(&jb, line, sizeof(line), 3);
    rete_jbuf_raw(&jb, "{");
    rete_jbuf_str(&jb, "v", in, size, 0);
    rete_jbuf_raw_end(&jb, "}\n");
    CHECK(!jb.truncated);
    CHECK(strchr(line, '\n') == line + strlen(line) - 1); /* one line */
    json_t *o = json_loads(line, JSON_ALLOW_NUL, NULL);
    CHECK(o);
    json_t *v = json_object_get(o, "v");
    const char *u = json_string_value(v);
    CHECK(u);
    /* decode the UTF-8 of code points <= 0xff back to bytes (Latin-1) */
    size_t ulen = json_string_length(v), k = 0;
    for (size_t i = 0; i < ulen; k++) {
        unsigned char c = (unsigned char)u[i];
        unsigned cp = c < 0x80 ? c : ((c & 0x1f) << 6) | ((unsigned char)u[i + 1] & 0x3f);
        i += c < 0x80 ? 1 : 2;
        CHECK(c < 0x80 || (c & 0xe0) == 0xc0);
        CHECK(k < size && cp == (unsigned char)in[k]);
    }
    CHECK(k == size);
    json_decref(o);
    /* the documents' writer: valid UTF-8 (what jansson accepts) comes back exactly */
    json_t *s = json_stringn(in, size);
    if (s) {
        rete_buf b = {0};
        rete_json_append_utf8(&b, in, size);
        json_t *back = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        CHECK(back && json_string_length(back) == size && memcmp(json_string_value(back), in, size) == 0);
        json_decref(back);
        rete_buf_free(&b);
        json_decref(s);
    }
    return 0;
}
