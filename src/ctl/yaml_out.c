#include "yaml_out.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "alloc.h"
#include "vec.h"

typedef rete_buf outbuf;

static int write_handler(void *data, unsigned char *buffer, size_t size)
{
    rete_buf_append(data, buffer, size);
    return 1;
}

static bool in_list(const char *s, const char *const *words)
{
    for (; *words; words++)
        if (strcmp(s, *words) == 0)
            return true;
    return false;
}

/* YAML 1.1 sexagesimal ("1:20", "190:20:30.15") and timestamps ("2001-12-14..."). */
static bool sexagesimal_or_date(const char *s)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return false;
    bool colon = false;
    while ((*p >= '0' && *p <= '9') || *p == '_' || *p == ':') {
        colon |= *p == ':';
        p++;
    }
    if (*p == '.') {
        p++;
        while ((*p >= '0' && *p <= '9') || *p == '_')
            p++;
    }
    if (colon && *p == '\0')
        return true;
    /* YYYY-M[M]-D[D] prefix */
    p = s;
    for (int i = 0; i < 4; i++)
        if (p[i] < '0' || p[i] > '9')
            return false;
    return p[4] == '-' && p[5] >= '0' && p[5] <= '9';
}

static bool numeric(const char *s)
{
    char *end;
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (*p == '.') {
        static const char *const special[] = {"inf", "Inf", "INF", "nan", "NaN", "NAN", NULL};
        if (in_list(p + 1, special))
            return true;
    }
    /* 0o17, 0b101, 0x1F, 1_000 */
    if (p[0] == '0' && (p[1] == 'o' || p[1] == 'b' || p[1] == 'x') && p[2])
        return true;
    /* 1_000, 1_000.5 (YAML 1.1); "10.0.0.1" is a string */
    bool underscore_num = (*p >= '0' && *p <= '9');
    int dots = 0;
    for (const char *q = p; *q && underscore_num; q++) {
        dots += *q == '.';
        underscore_num = (*q >= '0' && *q <= '9') || *q == '_' || *q == '.';
    }
    if (underscore_num && dots <= 1)
        return true;
    if ((*p >= '0' && *p <= '9') || *p == '.') {
        strtod(s, &end);
        return *end == '\0';
    }
    return false;
}

bool rete_ctl_yaml_ambiguous(const char *s)
{
    static const char *const words[] = {
        "",      "~",   "null", "Null", "NULL", "true", "True", "TRUE", "false", "False",
        "FALSE", "yes", "Yes",  "YES",  "no",   "No",   "NO",   "on",   "On",    "ON",
        "off",   "Off", "OFF",  "y",    "Y",    "n",    "N",    "=",    "<<",    NULL};
    return in_list(s, words) || numeric(s) || sexagesimal_or_date(s);
}

static int emit_scalar(yaml_emitter_t *em, const char *s, size_t len, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)len, 1, 1, style))
        return 0;
    return yaml_emitter_emit(em, &ev);
}

static int emit_string(yaml_emitter_t *em, const char *s, size_t len)
{
    yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
    if (memchr(s, '\0', len) != NULL || rete_ctl_yaml_ambiguous(s))
        style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    else if (memchr(s, '\n', len) != NULL)
        style = YAML_LITERAL_SCALAR_STYLE;
    return emit_scalar(em, s, len, style);
}

static void format_real(double d, char *buf, size_t len)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    if (!strpbrk(buf, ".eEn"))
        strncat(buf, ".0", len - strlen(buf) - 1);
}

/* One switch over jansson's types, like yaml_doc.c's from_json (`duplicates`
 * pairs their scalar cases), on purpose: that one builds the loader's node
 * tree in an arena, this one emits libyaml events for a person to read (the
 * shortest real that reads back, quoting by rete_ctl_yaml_ambiguous); only
 * the case labels are common. */
static int emit_node(yaml_emitter_t *em, const json_t *v, int depth)
{
    yaml_event_t ev;
    char num[64];
    if (depth > 512)
        return 0;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *item;
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return 0;
        json_object_foreach((json_t *)v, key, item)
        {
            if (!emit_string(em, key, strlen(key)) || !emit_node(em, item, depth + 1))
                return 0;
        }
        yaml_mapping_end_event_initialize(&ev);
        return yaml_emitter_emit(em, &ev);
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *item;
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return 0;
        json_array_foreach(v, i, item)
        {
            if (!emit_node(em, item, depth + 1))
                return 0;
        }
        yaml_sequence_end_event_initialize(&ev);
        return yaml_emitter_emit(em, &ev);
    }
    case JSON_STRING:
        return emit_string(em, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return emit_scalar(em, num, strlen(num), YAML_PLAIN_SCALAR_STYLE);
    case JSON_REAL:
        format_real(json_real_value(v), num, sizeof(num));
        return emit_scalar(em, num, strlen(num), YAML_PLAIN_SCALAR_STYLE);
    case JSON_TRUE:
        return emit_scalar(em, "true", 4, YAML_PLAIN_SCALAR_STYLE);
    case JSON_FALSE:
        return emit_scalar(em, "false", 5, YAML_PLAIN_SCALAR_STYLE);
    case JSON_NULL:
        return emit_scalar(em, "null", 4, YAML_PLAIN_SCALAR_STYLE);
    default:
        return 0;
    }
}

char *rete_ctl_yaml_string(const json_t *root, rete_error *err)
{
    yaml_emitter_t em;
    yaml_event_t ev;
    outbuf b = {0};
    if (!yaml_emitter_initialize(&em)) {
        rete_error_set(err, RETE_ENOMEM, "YAML emitter: out of memory");
        return NULL;
    }
    yaml_emitter_set_output(&em, write_handler, &b);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, -1);
    yaml_emitter_set_indent(&em, 2);
    int ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) &&
             yaml_emitter_emit(&em, &ev) &&
             yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) &&
             yaml_emitter_emit(&em, &ev) && emit_node(&em, root, 0) &&
             yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&em, &ev) &&
             yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&em, &ev) &&
             yaml_emitter_flush(&em);
    if (!ok) {
        rete_error_set(err, RETE_EIO, "YAML emitter: %s", em.problem ? em.problem : "failed");
        yaml_emitter_delete(&em);
        free(b.p);
        return NULL;
    }
    yaml_emitter_delete(&em);
    if (!b.p)
        b.p = rete_strdup("");
    return b.p;
}
