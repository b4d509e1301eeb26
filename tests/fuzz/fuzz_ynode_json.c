/* libFuzzer target for the loader's JSON trees (src/common/yaml_doc.c):
 * any JSON document is converted to the loader's nodes
 * (rete_ynode_from_json, what the proxy does with every pushed resource),
 * copied (rete_ynode_copy, what the next load does) and written back as JSON
 * (rete_ynode_write_json, what the proxy saves); the text parses to a value
 * equal to the input. Nesting past the loader's bound is refused, never
 * followed. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "vec.h"
#include "yaml_doc.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!j)
        return 0;
    rete_arena *a = rete_arena_new(4096);
    const rete_ynode *n = rete_ynode_from_json(j, a);
    if (n) {
        const rete_ynode *c = rete_ynode_copy(n, a);
        rete_buf b = {0};
        rete_ynode_write_json(c, &b);
        json_t *back = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        CHECK(back);
        CHECK(json_equal(j, back));
        json_decref(back);
        rete_buf_free(&b);
    }
    rete_arena_free(a);
    json_decref(j);
    return 0;
}
