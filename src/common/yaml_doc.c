#include "yaml_doc.h"

#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "alloc.h"
#include "arena.h"

enum {
    YDOC_MAX_DEPTH = 64,
    YDOC_MAX_NODES = 1000000, /* after alias expansion, per document */
    YDOC_MAX_DOCS = 100000,
};

typedef struct conv {
    yaml_document_t *doc;
    rete_arena *arena;
    size_t nodes;
} conv;

static const rete_ynode *convert(conv *c, int id, int depth, rete_rc *rc)
{
    yaml_node_t *yn = yaml_document_get_node(c->doc, id);
    if (!yn || depth > YDOC_MAX_DEPTH || ++c->nodes > YDOC_MAX_NODES) {
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

rete_rc rete_yaml_parse(const char *data, size_t len, rete_arena *arena, rete_ystream *out,
                        char *errbuf, size_t errlen, int *err_doc)
{
    yaml_parser_t parser;
    rete_rc rc = RETE_OK;
    size_t cap = 8, n = 0;
    const rete_ynode **docs = rete_malloc(cap * sizeof(*docs));

    *err_doc = -1;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(errbuf, errlen, "cannot initialise the YAML parser");
        rete_free(&docs);
        return RETE_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
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
        conv c = {&doc, arena, 0};
        rete_rc crc = RETE_OK;
        const rete_ynode *tree = convert(&c, 1, 0, &crc);
        yaml_document_delete(&doc);
        if (!tree) {
            snprintf(errbuf, errlen,
                     "document nested deeper than %d levels or larger than %d nodes",
                     YDOC_MAX_DEPTH, YDOC_MAX_NODES);
            *err_doc = (int)n;
            rc = crc;
            break;
        }
        if (tree->kind == RETE_YNODE_SCALAR && rete_ynode_is_null(tree))
            tree = NULL; /* "---" followed by nothing */
        if (n == cap) {
            cap *= 2;
            docs = rete_realloc(docs, cap * sizeof(*docs));
        }
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
