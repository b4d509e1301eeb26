/* The table-driven decoder behind the loader (config.c): the field tables
 * of config_fields.c (name, type, required, default, bounds, validator,
 * offset) drive parsing, the error messages and docs/config-reference.md
 * alike (nginx's ngx_command_t, Redis's static_configs[]).
 *
 * A schema describes one YAML mapping; each field says where in a C struct
 * its value goes. Nested mappings use a sub-schema whose offsets are
 * relative to the same base pointer plus the field's offset, so a deep YAML
 * shape can fill one flat struct. Absent fields take their `def` text,
 * decoded exactly as if it had been written in the document. */
#ifndef RETE_CONFIG_SCHEMA_H
#define RETE_CONFIG_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "yaml_doc.h"

struct rete_arena;

typedef struct cfg_regex_node {
    rete_regex *re;
    struct cfg_regex_node *next;
} cfg_regex_node;

/* Decoding state for one load: the arena of the snapshot being built, the
 * error to fill and the current field path. */
typedef struct cfg_ctx {
    struct rete_arena *arena;
    rete_config_error *err;
    char path[256];
    size_t path_len;
    int doc;
    const char *base_dir;    /* relative file paths resolve against this ("" = as is) */
    cfg_regex_node *regexes; /* every regex compiled so far, freed on failure */
} cfg_ctx;

typedef enum cfg_type {
    CFG_STR,
    CFG_INT, /* unsigned, stored in `size` bytes, checked against min..max */
    CFG_BOOL,
    CFG_DURATION, /* Go-style "1h2m3s4ms", stored as uint32 milliseconds */
    CFG_ENUM,     /* one of `en`, stored as an int */
    CFG_ADDR,     /* "ip:port" into rete_socket_addr */
    CFG_FILE,     /* a path; relative ones resolve against the config file's directory */
    CFG_OBJ,      /* a mapping decoded with `sub` at base + off */
    CFG_LIST,     /* a sequence of `sub` objects: pointer at off, size_t count at count_off */
    CFG_STRLIST,  /* a sequence of strings */
    CFG_INTLIST,  /* a sequence of integers of `size` bytes each */
    CFG_LABELS,   /* a string -> string mapping into rete_label[] */
    CFG_PORTMAP,  /* a string -> port mapping, validated only */
} cfg_type;

enum {
    CFG_REQUIRED = 1u << 0,
    CFG_NODEF = 1u << 1,    /* CFG_OBJ: when absent, leave zeroed (no sub-defaults) */
    CFG_STRINT = 1u << 2,   /* CFG_INT/INTLIST: a quoted "8080" is accepted too */
    CFG_NONEMPTY = 1u << 3, /* strings and lists: must not be empty */
    CFG_IGNORED = 1u << 4,  /* accepted and validated, not stored */
    /* Parsed by nobody in the data plane yet: refused when written, naming
     * the field (a configuration is never accepted as protecting what it
     * does not). Its default is kept for the reference only. A unit test
     * (test_config: test_unapplied_fields_refused) writes each such field
     * and checks the load fails. */
    CFG_UNAPPLIED = 1u << 5,
};

typedef struct cfg_enum {
    const char *name;
    int value;
} cfg_enum;

typedef struct cfg_schema cfg_schema;
typedef struct cfg_ctx cfg_ctx;

typedef struct cfg_field {
    const char *name;
    cfg_type type;
    unsigned flags;
    size_t off;
    size_t size;       /* CFG_INT/ENUM: value width */
    size_t elem;       /* CFG_INTLIST: element width */
    size_t count_off;  /* lists and maps */
    size_t has;        /* offset + 1 of a bool set when the field is present; 0 = none */
    uint64_t min, max; /* CFG_INT bounds; lists: max is maxItems (0 = unbounded) */
    const cfg_enum *en;
    const cfg_schema *sub;
    const char *def;    /* default, as YAML text */
    const char *docdef; /* default as the reference shows it, when computed */
    const char *doc;
    /* extra validation of a decoded scalar value (the node is the field's) */
    rete_rc (*check)(cfg_ctx *ctx, const rete_ynode *n, void *value);
} cfg_field;

struct cfg_schema {
    const char *name;
    size_t size; /* element size when used in a CFG_LIST */
    const cfg_field *fields;
    size_t n_fields;
    /* whole-object validation after fields and defaults; `obj` is the base */
    rete_rc (*check)(cfg_ctx *ctx, void *obj);
};

#define CFG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define CFG_SCHEMA(nm, T, fields_, check_)                                                         \
    {                                                                                              \
        nm, sizeof(T), fields_, CFG_ARRAY_LEN(fields_), check_                                     \
    }
/* offset and width of member m of T */
#define CFG_AT(T, m) .off = offsetof(T, m), .size = sizeof(((T *)0)->m)
#define CFG_CNT(T, m) .count_off = offsetof(T, m)
#define CFG_HAS(T, m) .has = offsetof(T, m) + 1

/* Path helpers: push returns a mark to pop back to. */
size_t cfg_path_key(cfg_ctx *ctx, const char *key);
size_t cfg_path_index(cfg_ctx *ctx, size_t i);
void cfg_path_pop(cfg_ctx *ctx, size_t mark);

/* Fill ctx->err with the current path and a formatted reason; returns RETE_EINVAL. */
rete_rc cfg_fail(cfg_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, about the sub-path `sub` of the current path (".name" or "[i]" style, no leading dot
 * needed for keys). */
rete_rc cfg_fail_at(cfg_ctx *ctx, const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Decode mapping `n` (NULL = absent: defaults only) into `base` by schema `s`. */
RETE_MUST_CHECK rete_rc cfg_decode(cfg_ctx *ctx, const cfg_schema *s, const rete_ynode *n,
                                   void *base);

/* "5s", "250ms", "1m30s", "1.5s" -> milliseconds; false when malformed or too large. */
bool cfg_parse_duration(const char *s, uint32_t *ms);
/* "ip:port" (IPv6 as "[::1]:port") -> addr; false when malformed. */
bool cfg_parse_addr(const char *s, rete_socket_addr *addr);
bool cfg_is_ip(const char *s);

/* Compile an anchored PCRE2 pattern; on error fills ctx->err (at the current path) with
 * the PCRE2 message. The code is remembered in ctx->regexes. */
RETE_MUST_CHECK rete_rc cfg_compile_regex(cfg_ctx *ctx, const char *pattern, rete_regex **out);

/* Markdown table rows for schema `s` under field prefix `prefix` (recursing into objects). */
void cfg_schema_markdown(FILE *out, const cfg_schema *s, const char *prefix);

/* The message a CFG_UNAPPLIED field is refused with. */
#define CFG_UNAPPLIED_REASON "not applied by the data plane yet: remove it (docs/traffic.md)"

/* The spec table of every kind (config_fields.c), named by the kinds table
 * (kinds.c). */
extern const cfg_schema cfg_spec_proxy, cfg_spec_service, cfg_spec_workload, cfg_spec_http_route,
    cfg_spec_grpc_route, cfg_spec_tcp_route, cfg_spec_dr, cfg_spec_peer_authn, cfg_spec_authz,
    cfg_spec_mesh, cfg_spec_workload_group, cfg_spec_rate_limit;

#endif
