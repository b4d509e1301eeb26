#include "config_schema.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <arpa/inet.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

/* ---- paths and errors ----------------------------------------------------- */

static size_t path_append(cfg_ctx *ctx, const char *s)
{
    size_t mark = ctx->path_len;
    int w = snprintf(ctx->path + ctx->path_len, sizeof(ctx->path) - ctx->path_len, "%s", s);
    if (w > 0)
        ctx->path_len += (size_t)w < sizeof(ctx->path) - ctx->path_len
                             ? (size_t)w
                             : sizeof(ctx->path) - ctx->path_len - 1;
    return mark;
}

size_t cfg_path_key(cfg_ctx *ctx, const char *key)
{
    size_t mark = ctx->path_len;
    if (ctx->path_len)
        path_append(ctx, ".");
    path_append(ctx, key);
    return mark;
}

size_t cfg_path_index(cfg_ctx *ctx, size_t i)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "[%zu]", i);
    return path_append(ctx, buf);
}

void cfg_path_pop(cfg_ctx *ctx, size_t mark)
{
    ctx->path_len = mark;
    ctx->path[mark] = '\0';
}

static rete_rc vfail(cfg_ctx *ctx, const char *fmt, va_list ap)
{
    ctx->err->document = ctx->doc;
    snprintf(ctx->err->path, sizeof(ctx->err->path), "%s", ctx->path);
    vsnprintf(ctx->err->reason, sizeof(ctx->err->reason), fmt, ap);
    return RETE_EINVAL;
}

rete_rc cfg_fail(cfg_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rete_rc rc = vfail(ctx, fmt, ap);
    va_end(ap);
    return rc;
}

rete_rc cfg_fail_at(cfg_ctx *ctx, const char *sub, const char *fmt, ...)
{
    size_t mark = sub[0] == '[' ? path_append(ctx, sub) : cfg_path_key(ctx, sub);
    va_list ap;
    va_start(ap, fmt);
    rete_rc rc = vfail(ctx, fmt, ap);
    va_end(ap);
    cfg_path_pop(ctx, mark);
    return rc;
}

/* ---- scalars -------------------------------------------------------------- */

bool cfg_is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

bool cfg_parse_addr(const char *s, rete_socket_addr *addr)
{
    const char *colon = strrchr(s, ':');
    if (!colon)
        return false;
    const char *host = s;
    size_t hlen = (size_t)(colon - s);
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(addr->host))
        return false;
    char h[sizeof(addr->host)];
    memcpy(h, host, hlen);
    h[hlen] = '\0';
    uint64_t port;
    if (!cfg_is_ip(h) || !rete_view_to_u64(rete_view_cstr(colon + 1), &port) || port > 65535)
        return false;
    memcpy(addr->host, h, hlen + 1);
    addr->port = (uint16_t)port;
    return true;
}

bool cfg_parse_duration(const char *s, uint32_t *ms)
{
    /* Go's time.ParseDuration without sign: one or more <number><unit>. */
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ns", 1e-6}, {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"ms", 1},
                 {"s", 1e3},   {"m", 60e3},  {"h", 3600e3}};
    double total = 0;
    if (!*s)
        return false;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return true;
    }
    while (*s) {
        const char *start = s;
        double whole = 0, frac = 0, scale = 1;
        while (*s >= '0' && *s <= '9' && s - start < 12)
            whole = whole * 10 + (*s++ - '0');
        bool digits = s > start;
        if (*s == '.') {
            s++;
            const char *fs = s;
            while (*s >= '0' && *s <= '9' && s - fs < 9) {
                scale /= 10;
                frac += (*s++ - '0') * scale;
            }
            digits = digits || s > fs;
        }
        if (!digits)
            return false;
        size_t best = 0, best_len = 0;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t l = strlen(units[i].unit);
            if (strncmp(s, units[i].unit, l) == 0 && l > best_len) {
                best = i;
                best_len = l;
            }
        }
        if (!best_len)
            return false;
        s += best_len;
        total += (whole + frac) * units[best].ms;
        if (total > 4294967295.0)
            return false;
    }
    *ms = (uint32_t)(total + 0.5);
    return true;
}

static bool parse_uint(const rete_ynode *n, bool allow_quoted, uint64_t *out)
{
    if (n->kind != RETE_YNODE_SCALAR || (n->quoted && !allow_quoted))
        return false;
    return rete_view_to_u64(rete_view_make(n->str, n->len), out);
}

static void store_uint(void *dst, size_t size, uint64_t v)
{
    switch (size) {
    case 1: {
        uint8_t x = (uint8_t)v;
        memcpy(dst, &x, 1);
        break;
    }
    case 2: {
        uint16_t x = (uint16_t)v;
        memcpy(dst, &x, 2);
        break;
    }
    case 4: {
        uint32_t x = (uint32_t)v;
        memcpy(dst, &x, 4);
        break;
    }
    default:
        memcpy(dst, &v, 8);
        break;
    }
}

static const char *type_name(const rete_ynode *n)
{
    switch (n->kind) {
    case RETE_YNODE_MAP:
        return "a mapping";
    case RETE_YNODE_SEQ:
        return "a list";
    case RETE_YNODE_SCALAR:
    default:
        return "a scalar";
    }
}

static bool is_string(const rete_ynode *n)
{
    if (n->kind != RETE_YNODE_SCALAR)
        return false;
    if (n->quoted)
        return true;
    /* plain null/booleans are not strings (JSON/YAML 1.2 core schema) */
    return !rete_ynode_is_null(n) && strcmp(n->str, "true") != 0 && strcmp(n->str, "false") != 0;
}

static void enum_list(const cfg_enum *en, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (const cfg_enum *e = en; e->name; e++) {
        int w = snprintf(buf + used, size - used, "%s%s", e == en ? "" : ", ", e->name);
        if (w < 0 || (size_t)w >= size - used)
            break;
        used += (size_t)w;
    }
}

rete_rc cfg_compile_regex(cfg_ctx *ctx, const char *pattern, rete_regex **out)
{
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_ANCHORED | PCRE2_ENDANCHORED, &errcode, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        return cfg_fail(ctx, "invalid regular expression at offset %zu: %s", (size_t)erroff,
                        (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: interpreter otherwise */
    cfg_regex_node *node = rete_arena_alloc(ctx->arena, sizeof(*node));
    node->re = re;
    node->next = ctx->regexes;
    ctx->regexes = node;
    *out = re;
    return RETE_OK;
}

/* ---- fields --------------------------------------------------------------- */

static rete_rc decode_scalar_str(cfg_ctx *ctx, const cfg_field *f, const rete_ynode *n,
                                 const char **out)
{
    if (!is_string(n))
        return cfg_fail(ctx, "must be a string, not %s", type_name(n));
    if ((f->flags & CFG_NONEMPTY) && n->len == 0)
        return cfg_fail(ctx, "must not be empty");
    if (strlen(n->str) != n->len)
        return cfg_fail(ctx, "must not contain NUL bytes");
    *out = n->str;
    return RETE_OK;
}

static rete_rc decode_int(cfg_ctx *ctx, const cfg_field *f, const rete_ynode *n, uint64_t *v)
{
    if (!parse_uint(n, f->flags & CFG_STRINT, v) || *v < f->min || *v > f->max)
        return cfg_fail(ctx, "must be an integer between %llu and %llu", (unsigned long long)f->min,
                        (unsigned long long)f->max);
    return RETE_OK;
}

static rete_rc decode_list(cfg_ctx *ctx, const cfg_field *f, const rete_ynode *n, void *base)
{
    size_t count = 0;
    if (n->kind == RETE_YNODE_SEQ)
        count = n->n;
    else if (!rete_ynode_is_null(n))
        return cfg_fail(ctx, "must be a list, not %s", type_name(n));
    if (f->max && count > f->max)
        return cfg_fail(ctx, "must have at most %llu items", (unsigned long long)f->max);
    if ((f->flags & CFG_NONEMPTY) && count == 0)
        return cfg_fail(ctx, "must not be empty");
    size_t esize = f->type == CFG_LIST      ? f->sub->size
                   : f->type == CFG_STRLIST ? sizeof(const char *)
                                            : f->elem;
    unsigned char *arr = rete_arena_alloc(ctx->arena, (count ? count : 1) * esize);
    for (size_t i = 0; i < count; i++) {
        size_t mark = cfg_path_index(ctx, i);
        const rete_ynode *item = n->items[i];
        rete_rc rc = RETE_OK;
        if (f->type == CFG_LIST) {
            rc = cfg_decode(ctx, f->sub, item, arr + i * esize);
        } else if (f->type == CFG_STRLIST) {
            const char *s = NULL;
            rc = decode_scalar_str(ctx, f, item, &s);
            if (rc == RETE_OK && f->check)
                rc = f->check(ctx, item, &s);
            memcpy(arr + i * esize, &s, sizeof(s));
        } else {
            uint64_t v = 0;
            rc = decode_int(ctx, f, item, &v);
            store_uint(arr + i * esize, esize, v);
        }
        if (rc)
            return rc;
        cfg_path_pop(ctx, mark);
    }
    if (f->flags & CFG_IGNORED)
        return RETE_OK;
    void *p = arr;
    memcpy((unsigned char *)base + f->off, &p, sizeof(p));
    memcpy((unsigned char *)base + f->count_off, &count, sizeof(count));
    return RETE_OK;
}

static rete_rc decode_map(cfg_ctx *ctx, const cfg_field *f, const rete_ynode *n, void *base)
{
    size_t count = 0;
    if (n->kind == RETE_YNODE_MAP)
        count = n->n;
    else if (!rete_ynode_is_null(n))
        return cfg_fail(ctx, "must be a mapping, not %s", type_name(n));
    rete_label *labels = rete_arena_alloc(ctx->arena, (count ? count : 1) * sizeof(*labels));
    for (size_t i = 0; i < count; i++) {
        const rete_ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
        if (!is_string(k) || k->len == 0)
            return cfg_fail(ctx, "keys must be non-empty strings");
        size_t mark = cfg_path_key(ctx, k->str);
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[j].key, k->str) == 0)
                return cfg_fail(ctx, "duplicate key");
        labels[i].key = k->str;
        if (f->type == CFG_PORTMAP) {
            uint64_t port;
            if (!parse_uint(v, false, &port) || port < 1 || port > 65535)
                return cfg_fail(ctx, "must be an integer between 1 and 65535");
            labels[i].value = "";
        } else if (!is_string(v) && !(v->kind == RETE_YNODE_SCALAR && !rete_ynode_is_null(v))) {
            return cfg_fail(ctx, "must be a string, not %s", type_name(v));
        } else {
            labels[i].value = v->str;
        }
        cfg_path_pop(ctx, mark);
    }
    if (f->flags & CFG_IGNORED)
        return RETE_OK;
    const rete_label *p = labels;
    memcpy((unsigned char *)base + f->off, &p, sizeof(p));
    memcpy((unsigned char *)base + f->count_off, &count, sizeof(count));
    return RETE_OK;
}

static rete_rc decode_field(cfg_ctx *ctx, const cfg_field *f, const rete_ynode *n, void *base)
{
    unsigned char *dst = (unsigned char *)base + f->off;
    switch (f->type) {
    case CFG_STR:
    case CFG_FILE: {
        const char *s = NULL;
        RETE_GUARD(decode_scalar_str(ctx, f, n, &s));
        if (f->type == CFG_FILE && s[0] != '/' && ctx->base_dir[0]) {
            size_t len = strlen(ctx->base_dir) + 1 + strlen(s) + 1;
            char *full = rete_arena_alloc(ctx->arena, len);
            size_t blen = strlen(ctx->base_dir);
            snprintf(full, len, "%s%s%s", ctx->base_dir, ctx->base_dir[blen - 1] == '/' ? "" : "/",
                     s);
            s = full;
        }
        if (f->check)
            RETE_GUARD(f->check(ctx, n, &s));
        if (!(f->flags & CFG_IGNORED))
            memcpy(dst, &s, sizeof(s));
        return RETE_OK;
    }
    case CFG_INT: {
        uint64_t v;
        RETE_GUARD(decode_int(ctx, f, n, &v));
        store_uint(dst, f->size, v);
        return f->check ? f->check(ctx, n, dst) : RETE_OK;
    }
    case CFG_BOOL:
        if (n->kind != RETE_YNODE_SCALAR || n->quoted ||
            (strcmp(n->str, "true") != 0 && strcmp(n->str, "false") != 0))
            return cfg_fail(ctx, "must be true or false");
        *(bool *)dst = n->str[0] == 't';
        return RETE_OK;
    case CFG_DURATION: {
        uint32_t ms;
        if (!is_string(n) || !cfg_parse_duration(n->str, &ms))
            return cfg_fail(ctx, "invalid duration (want e.g. \"5s\", \"250ms\", \"1m\", \"1h\")");
        if (ms < f->min || (f->max && ms > f->max))
            return cfg_fail(ctx, "duration out of range");
        memcpy(dst, &ms, sizeof(ms));
        return f->check ? f->check(ctx, n, dst) : RETE_OK;
    }
    case CFG_ENUM:
        if (is_string(n))
            for (const cfg_enum *e = f->en; e->name; e++)
                if (strcmp(e->name, n->str) == 0) {
                    store_uint(dst, f->size, (uint64_t)(unsigned)e->value);
                    return f->check ? f->check(ctx, n, dst) : RETE_OK;
                }
        {
            char names[256];
            enum_list(f->en, names, sizeof(names));
            return cfg_fail(ctx, "must be one of %s", names);
        }
    case CFG_ADDR:
        if (!is_string(n) || !cfg_parse_addr(n->str, (rete_socket_addr *)dst))
            return cfg_fail(ctx, "must be \"ip:port\" with an IP literal");
        return RETE_OK;
    case CFG_OBJ:
        return cfg_decode(ctx, f->sub, n, dst);
    case CFG_LIST:
    case CFG_STRLIST:
    case CFG_INTLIST:
        return decode_list(ctx, f, n, base);
    case CFG_LABELS:
    case CFG_PORTMAP:
        return decode_map(ctx, f, n, base);
    default:
        return cfg_fail(ctx, "internal error: unknown field type");
    }
}

/* Absent field: required error, default text, or sub-defaults. */
static rete_rc absent_field(cfg_ctx *ctx, const cfg_field *f, void *base)
{
    if (f->flags & CFG_REQUIRED)
        return cfg_fail(ctx, "required");
    if (f->type == CFG_OBJ && !(f->flags & CFG_NODEF)) {
        /* defaults only: no object-level check for an object that was not written */
        const cfg_schema *s = f->sub;
        unsigned char *dst = (unsigned char *)base + f->off;
        for (size_t i = 0; i < s->n_fields; i++) {
            size_t mark = cfg_path_key(ctx, s->fields[i].name);
            rete_rc rc = absent_field(ctx, &s->fields[i], dst);
            cfg_path_pop(ctx, mark);
            RETE_GUARD(rc);
        }
        return RETE_OK;
    }
    if (!f->def)
        return RETE_OK;
    rete_ynode d = {.kind = RETE_YNODE_SCALAR, .str = f->def, .len = strlen(f->def)};
    cfg_field plain = *f;
    plain.check = NULL; /* defaults are valid by construction */
    return decode_field(ctx, &plain, &d, base);
}

rete_rc cfg_decode(cfg_ctx *ctx, const cfg_schema *s, const rete_ynode *n, void *base)
{
    size_t count = 0;
    if (n && n->kind == RETE_YNODE_MAP)
        count = n->n;
    else if (n && !rete_ynode_is_null(n))
        return cfg_fail(ctx, "must be a mapping, not %s", type_name(n));
    bool seen[64] = {false};
    if (s->n_fields > 64)
        return cfg_fail(ctx, "internal error: schema %s too large", s->name);
    for (size_t i = 0; i < count; i++) {
        const rete_ynode *k = n->pairs[i].key;
        if (!is_string(k))
            return cfg_fail(ctx, "field names must be strings");
        size_t mark = cfg_path_key(ctx, k->str);
        size_t fi = 0;
        while (fi < s->n_fields && strcmp(s->fields[fi].name, k->str) != 0)
            fi++;
        if (fi == s->n_fields)
            return cfg_fail(ctx, "unknown field");
        if (seen[fi])
            return cfg_fail(ctx, "duplicate field");
        seen[fi] = true;
        const cfg_field *f = &s->fields[fi];
        if (f->flags & CFG_UNAPPLIED)
            return cfg_fail(ctx, CFG_UNAPPLIED_REASON);
        RETE_GUARD(decode_field(ctx, f, n->pairs[i].value, base));
        if (f->has)
            *((bool *)((unsigned char *)base + f->has - 1)) = true;
        cfg_path_pop(ctx, mark);
    }
    for (size_t fi = 0; fi < s->n_fields; fi++) {
        if (seen[fi])
            continue;
        size_t mark = cfg_path_key(ctx, s->fields[fi].name);
        RETE_GUARD(absent_field(ctx, &s->fields[fi], base));
        cfg_path_pop(ctx, mark);
    }
    return s->check ? s->check(ctx, base) : RETE_OK;
}

/* ---- reference documentation ---------------------------------------------- */

static const char *doc_type(const cfg_field *f, char *buf, size_t size)
{
    switch (f->type) {
    case CFG_STR:
        return "string";
    case CFG_FILE:
        return "file path";
    case CFG_INT:
        snprintf(buf, size, "integer %llu..%llu", (unsigned long long)f->min,
                 (unsigned long long)f->max);
        return buf;
    case CFG_BOOL:
        return "boolean";
    case CFG_DURATION:
        return "duration";
    case CFG_ENUM: {
        char names[200];
        enum_list(f->en, names, sizeof(names));
        snprintf(buf, size, "one of %s", names);
        return buf;
    }
    case CFG_ADDR:
        return "\"ip:port\"";
    case CFG_OBJ:
        return "object";
    case CFG_LIST:
        if (f->max)
            snprintf(buf, size, "list of object (max %llu)", (unsigned long long)f->max);
        else
            snprintf(buf, size, "list of object");
        return buf;
    case CFG_STRLIST:
    case CFG_INTLIST:
        snprintf(buf, size, "list of %s%s", f->type == CFG_STRLIST ? "string" : "integer",
                 f->max ? "" : "");
        if (f->max && f->type == CFG_STRLIST)
            snprintf(buf, size, "list of string (max %llu)", (unsigned long long)f->max);
        return buf;
    case CFG_LABELS:
        return "map string to string";
    case CFG_PORTMAP:
        return "map string to port";
    default:
        return "?";
    }
}

void cfg_schema_markdown(FILE *out, const cfg_schema *s, const char *prefix)
{
    for (size_t i = 0; i < s->n_fields; i++) {
        const cfg_field *f = &s->fields[i];
        char name[256], tbuf[256];
        snprintf(name, sizeof(name), "%s%s%s", prefix, prefix[0] ? "." : "", f->name);
        const char *def = f->docdef ? f->docdef : f->def;
        bool unapplied = f->flags & CFG_UNAPPLIED;
        if (unapplied)
            def = NULL; /* nothing is applied: no default to speak of */
        fprintf(out, "| `%s` | %s | %s | %s%s%s | %s%s |\n", name, doc_type(f, tbuf, sizeof(tbuf)),
                (f->flags & CFG_REQUIRED) ? "yes" : "", def && !f->docdef ? "`" : "",
                def ? def : "", def && !f->docdef ? "`" : "",
                unapplied ? "**refused: not applied by the data plane yet.** " : "",
                f->doc ? f->doc : "");
        if (f->type == CFG_OBJ || f->type == CFG_LIST) {
            if (f->type == CFG_LIST)
                snprintf(name + strlen(name), sizeof(name) - strlen(name), "[]");
            cfg_schema_markdown(out, f->sub, name);
        }
    }
}
