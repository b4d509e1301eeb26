#include "yaml_doc.h"

#include <stdio.h>
#include <string.h>
#include <inttypes.h>
#include <jansson.h>
#include <yaml.h>

#include "alloc.h"
#include "vec.h"
#include "arena.h"
#include "json_out.h"

enum {
    YDOC_MAX_DEPTH = 64,
    YDOC_MAX_NODES = 1000000, /* after alias expansion, per document */
    /* Nodes an alias may add, over the whole stream: a node reached again
     * through an alias is copied, so nine levels of nine aliases in 400
     * bytes would build 531,441 nodes (~350 MB under ASan) per document.
     * Without aliases every node is converted once, so this bounds only
     * the expansion. */
    YDOC_MAX_ALIAS_NODES = 100000,
    YDOC_MAX_DOCS = 100000,
};

typedef struct conv {
    yaml_document_t *doc;
    rete_arena *arena;
    size_t nodes;  /* converted in this document */
    size_t budget; /* converted in the stream, at most: the nodes parsed + YDOC_MAX_ALIAS_NODES */
    size_t total;  /* converted in the stream */
} conv;

static const rete_ynode *convert(conv *c, int id, int depth, rete_rc *rc)
{
    yaml_node_t *yn = yaml_document_get_node(c->doc, id);
    if (!yn || depth > YDOC_MAX_DEPTH || ++c->nodes > YDOC_MAX_NODES || ++c->total > c->budget) {
        *rc = RETE_ELIMIT;
        return NULL;
    }
    rete_ynode *n = rete_arena_alloc(c->arena, sizeof(*n));
    n->line = (unsigned)yn->start_mark.line;
    switch (yn->type) {
    case YAML_SCALAR_NODE:
        n->kind = RETE_YNODE_SCALAR;
        n->len = yn->data.scalar.length;
        n->str = rete_arena_strndup(c->arena, (const char *)yn->data.scalar.value, n->len);
        n->quoted = yn->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        return n;
    case YAML_SEQUENCE_NODE: {
        n->kind = RETE_YNODE_SEQ;
        size_t count = (size_t)(yn->data.sequence.items.top - yn->data.sequence.items.start);
        const rete_ynode **items = rete_arena_alloc(c->arena, (count ? count : 1) * sizeof(*items));
        for (size_t i = 0; i < count; i++) {
            items[i] = convert(c, yn->data.sequence.items.start[i], depth + 1, rc);
            if (!items[i])
                return NULL;
        }
        n->items = items;
        n->n = count;
        return n;
    }
    case YAML_MAPPING_NODE: {
        n->kind = RETE_YNODE_MAP;
        size_t count = (size_t)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
        rete_ypair *pairs = rete_arena_alloc(c->arena, (count ? count : 1) * sizeof(*pairs));
        for (size_t i = 0; i < count; i++) {
            pairs[i].key = convert(c, yn->data.mapping.pairs.start[i].key, depth + 1, rc);
            if (!pairs[i].key)
                return NULL;
            pairs[i].value = convert(c, yn->data.mapping.pairs.start[i].value, depth + 1, rc);
            if (!pairs[i].value)
                return NULL;
        }
        n->pairs = pairs;
        n->n = count;
        return n;
    }
    case YAML_NO_NODE:
    default:
        *rc = RETE_EINVAL;
        return NULL;
    }
}

/* A first pass over the parser's events that stops at the first
 * collection nested past YDOC_MAX_DEPTH, before any tree is built.
 * yaml_parser_load builds a whole document before convert() can see its
 * depth, and libyaml's scanner looks at every open flow level on each
 * token: 100,000 `[` took 24 s of reted's only loop to refuse. Events come
 * as the scanner goes, so at most YDOC_MAX_DEPTH + 1 levels are ever open
 * here and the pass is linear. Syntax errors are left to the second pass,
 * which reports them. */
static rete_rc depth_check(const char *data, size_t len, char *errbuf, size_t errlen, int *err_doc)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(errbuf, errlen, "cannot initialise the YAML parser");
        return RETE_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    rete_rc rc = RETE_OK;
    int depth = 0, doc = -1; /* depth: open collections; the root one is level 0 */
    bool done = false;
    while (!done && rc == RETE_OK) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev))
            break;
        switch (ev.type) {
        case YAML_DOCUMENT_START_EVENT:
            doc++;
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (depth++ > YDOC_MAX_DEPTH) {
                snprintf(errbuf, errlen,
                         "line %zu column %zu: document nested deeper than %d levels (the limit)",
                         ev.start_mark.line + 1, ev.start_mark.column + 1, YDOC_MAX_DEPTH);
                *err_doc = doc < 0 ? 0 : doc;
                rc = RETE_ELIMIT;
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_NO_EVENT:
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
        case YAML_ALIAS_EVENT:
        case YAML_SCALAR_EVENT:
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return rc;
}

rete_rc rete_yaml_parse(const char *data, size_t len, rete_arena *arena, rete_ystream *out,
                        char *errbuf, size_t errlen, int *err_doc)
{
    yaml_parser_t parser;
    rete_rc rc = RETE_OK;
    size_t cap = 8, n = 0;
    const rete_ynode **docs = rete_malloc(cap * sizeof(*docs));

    *err_doc = -1;
    rc = depth_check(data, len, errbuf, errlen, err_doc);
    if (rc != RETE_OK) {
        rete_free(&docs);
        return rc;
    }
    if (!yaml_parser_initialize(&parser)) {
        snprintf(errbuf, errlen, "cannot initialise the YAML parser");
        rete_free(&docs);
        return RETE_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    conv c = {.arena = arena, .budget = YDOC_MAX_ALIAS_NODES};
    for (;;) {
        yaml_document_t doc;
        if (!yaml_parser_load(&parser, &doc)) {
            snprintf(errbuf, errlen, "line %zu column %zu: %s %s", parser.problem_mark.line + 1,
                     parser.problem_mark.column + 1,
                     parser.problem ? parser.problem : "syntax error",
                     parser.context ? parser.context : "");
            *err_doc = (int)n;
            rc = RETE_EINVAL;
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root) { /* end of stream */
            yaml_document_delete(&doc);
            break;
        }
        if (n == YDOC_MAX_DOCS) {
            yaml_document_delete(&doc);
            snprintf(errbuf, errlen, "more than %d documents", YDOC_MAX_DOCS);
            *err_doc = (int)n;
            rc = RETE_ELIMIT;
            break;
        }
        c.doc = &doc;
        c.nodes = 0;
        c.budget += (size_t)(doc.nodes.top - doc.nodes.start);
        rete_rc crc = RETE_OK;
        const rete_ynode *tree = convert(&c, 1, 0, &crc);
        yaml_document_delete(&doc);
        if (!tree) {
            snprintf(errbuf, errlen,
                     "document nested deeper than %d levels, larger than %d nodes, or its aliases "
                     "expand to more than %d nodes",
                     YDOC_MAX_DEPTH, YDOC_MAX_NODES, YDOC_MAX_ALIAS_NODES);
            *err_doc = (int)n;
            rc = crc;
            break;
        }
        if (tree->kind == RETE_YNODE_SCALAR && rete_ynode_is_null(tree))
            tree = NULL; /* "---" followed by nothing */
        RETE_GROW(docs, cap, n + 1, 8);
        docs[n++] = tree;
    }
    yaml_parser_delete(&parser);
    if (rc == RETE_OK) {
        const rete_ynode **kept = rete_arena_alloc(arena, (n ? n : 1) * sizeof(*kept));
        memcpy(kept, docs, n * sizeof(*kept));
        out->docs = kept;
        out->n_docs = n;
    }
    rete_free(&docs);
    return rc;
}

bool rete_ynode_is_null(const rete_ynode *n)
{
    if (n->kind != RETE_YNODE_SCALAR || n->quoted)
        return false;
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

static rete_ynode *scalar(rete_arena *arena, const char *s, size_t len, bool quoted)
{
    rete_ynode *n = rete_arena_alloc(arena, sizeof(*n));
    *n = (rete_ynode){.kind = RETE_YNODE_SCALAR, .len = len, .quoted = quoted};
    n->str = rete_arena_strndup(arena, s, len);
    return n;
}

/* The same switch over JSON types as retectl's YAML writer (ctl/yaml_out.c)
 * and config_json.c: one input, different outputs, by design. */
static const rete_ynode *from_json(const json_t *j, rete_arena *arena, int depth, size_t *nodes)
{
    if (depth > YDOC_MAX_DEPTH || ++*nodes > YDOC_MAX_NODES)
        return NULL;
    char num[64];
    switch (json_typeof(j)) {
    case JSON_STRING:
        return scalar(arena, json_string_value(j), json_string_length(j), true);
    case JSON_INTEGER:
        return scalar(arena, num,
                      (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(j)),
                      false);
    case JSON_REAL: { /* 17 digits read back to the same double; ".0" keeps it a real */
        int n = snprintf(num, sizeof(num), "%.17g", json_real_value(j));
        if (!strpbrk(num, ".eEn"))
            n += snprintf(num + n, sizeof(num) - (size_t)n, ".0");
        return scalar(arena, num, (size_t)n, false);
    }
    case JSON_TRUE:
        return scalar(arena, "true", 4, false);
    case JSON_FALSE:
        return scalar(arena, "false", 5, false);
    case JSON_NULL:
        return scalar(arena, "null", 4, false);
    case JSON_ARRAY: {
        rete_ynode *n = rete_arena_alloc(arena, sizeof(*n));
        size_t count = json_array_size(j);
        const rete_ynode **items = rete_arena_alloc(arena, (count ? count : 1) * sizeof(*items));
        for (size_t i = 0; i < count; i++)
            if (!(items[i] = from_json(json_array_get(j, i), arena, depth + 1, nodes)))
                return NULL;
        *n = (rete_ynode){.kind = RETE_YNODE_SEQ, .items = items, .n = count};
        return n;
    }
    case JSON_OBJECT: {
        rete_ynode *n = rete_arena_alloc(arena, sizeof(*n));
        size_t count = json_object_size(j), i = 0;
        rete_ypair *pairs = rete_arena_alloc(arena, (count ? count : 1) * sizeof(*pairs));
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v) {
            pairs[i].key = scalar(arena, key, strlen(key), true);
            if (!(pairs[i].value = from_json(v, arena, depth + 1, nodes)))
                return NULL;
            i++;
        }
        *n = (rete_ynode){.kind = RETE_YNODE_MAP, .pairs = pairs, .n = i};
        return n;
    }
    default:
        return NULL;
    }
}

const rete_ynode *rete_ynode_from_json(const json_t *j, rete_arena *arena)
{
    size_t nodes = 0;
    return j ? from_json(j, arena, 0, &nodes) : NULL;
}

const rete_ynode *rete_ynode_copy(const rete_ynode *n, rete_arena *arena)
{
    rete_ynode *c = rete_arena_alloc(arena, sizeof(*c));
    *c = *n;
    switch (n->kind) {
    case RETE_YNODE_SCALAR:
        c->str = rete_arena_strndup(arena, n->str, n->len);
        break;
    case RETE_YNODE_SEQ: {
        const rete_ynode **items = rete_arena_alloc(arena, (n->n ? n->n : 1) * sizeof(*items));
        for (size_t i = 0; i < n->n; i++)
            items[i] = rete_ynode_copy(n->items[i], arena);
        c->items = items;
        break;
    }
    case RETE_YNODE_MAP: {
        rete_ypair *pairs = rete_arena_alloc(arena, (n->n ? n->n : 1) * sizeof(*pairs));
        for (size_t i = 0; i < n->n; i++) {
            pairs[i].key = rete_ynode_copy(n->pairs[i].key, arena);
            pairs[i].value = rete_ynode_copy(n->pairs[i].value, arena);
        }
        c->pairs = pairs;
        break;
    }
    }
    return c;
}

void rete_ynode_write_json(const rete_ynode *n, rete_buf *b)
{
    switch (n->kind) {
    case RETE_YNODE_SCALAR:
        if (n->quoted)
            rete_json_append_utf8(b, n->str, n->len);
        else
            rete_buf_append(b, n->str, n->len);
        return;
    case RETE_YNODE_SEQ:
        rete_buf_append(b, "[", 1);
        for (size_t i = 0; i < n->n; i++) {
            if (i)
                rete_buf_append(b, ",", 1);
            rete_ynode_write_json(n->items[i], b);
        }
        rete_buf_append(b, "]", 1);
        return;
    case RETE_YNODE_MAP:
        rete_buf_append(b, "{", 1);
        for (size_t i = 0; i < n->n; i++) {
            if (i)
                rete_buf_append(b, ",", 1);
            rete_json_append_utf8(b, n->pairs[i].key->str, n->pairs[i].key->len);
            rete_buf_append(b, ":", 1);
            rete_ynode_write_json(n->pairs[i].value, b);
        }
        rete_buf_append(b, "}", 1);
        return;
    }
}
