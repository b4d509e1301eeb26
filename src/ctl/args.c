#include "args.h"

#include <stdio.h>
#include <string.h>

#define OFF(field) offsetof(rete_ctl_args, field)

const rete_ctl_flag_def rete_ctl_flags[] = {
    {CTL_F_SERVER, "server", 0, true, "HOST:PORT[,...]", "reted's operator API: one replica or several, tried in turn (default: discovered)",
     OFF(server)},
    {CTL_F_TOKEN_FILE, "token-file", 0, true, "FILE", "file holding the admin bearer token",
     OFF(token_file)},
    {CTL_F_TIMEOUT, "request-timeout", 0, true, "DURATION", "per-request timeout (default 10s)",
     OFF(timeout)},
    {CTL_F_VERBOSE, "verbose", 'v', false, NULL, "print every HTTP request and response status", 0},
    {CTL_F_HELP, "help", 'h', false, NULL, "show help", 0},
    {CTL_F_FILENAME, "filename", 'f', true, "FILE",
     "a file, a directory of *.yaml/*.yml/*.json, or -", 0},
    {CTL_F_NAMESPACE, "namespace", 'n', true, "NS", "namespace (default \"default\")", OFF(ns)},
    {CTL_F_ALL_NS, "all-namespaces", 'A', false, NULL, "every namespace", 0},
    {CTL_F_OUTPUT, "output", 'o', true, "FORMAT", "table, wide, json or yaml", OFF(output)},
    {CTL_F_SA, "service-account", 0, true, "SA", "service account", OFF(sa)},
    {CTL_F_TTL, "ttl", 0, true, "DURATION", "lifetime (default 1h)", OFF(ttl)},
    {CTL_F_USES, "uses", 0, true, "N", "how many times the token may be used (default 1)",
     OFF(uses)},
    {CTL_F_TOKEN, "token", 0, true, "TOKEN", "join token from `retectl token create`", OFF(token)},
    {CTL_F_SPIFFE_ID, "spiffe-id", 0, true, "ID", "SPIFFE ID to ask for in the CSR",
     OFF(spiffe_id)},
    {CTL_F_OUT, "out", 0, true, "DIR", "directory to write cert.pem, key.pem, bundle.pem",
     OFF(out)},
    {CTL_F_WINDOW, "window", 0, true, "WINDOW", "1m (default) or 10m", OFF(window)},
    {CTL_F_PATH, "path", 0, true, "PREFIX", "only requests whose path starts with PREFIX", OFF(path)},
    {CTL_F_METHOD, "method", 0, true, "METHOD", "only requests with this method (GET, POST...)",
     OFF(method)},
    {CTL_F_STATUS, "status", 0, true, "CODE", "only responses with this status (0: none sent)",
     OFF(status)},
    {CTL_F_MAX, "max", 0, true, "N", "stop after N requests", OFF(max)},
    {CTL_F_HEADERS, "headers", 0, false, NULL,
     "show request header values (never Authorization or Cookie)", 0},
    {CTL_F_ONCE, "once", 0, false, NULL, "print the table once, after --duration, and exit", 0},
    {CTL_F_DURATION, "duration", 0, true, "DURATION", "how long to watch (default: until interrupted)",
     OFF(duration)},
};
const size_t rete_ctl_n_flags = sizeof(rete_ctl_flags) / sizeof(rete_ctl_flags[0]);

static const rete_ctl_flag_def *flag_long(const char *name, size_t len)
{
    for (size_t i = 0; i < rete_ctl_n_flags; i++)
        if (strlen(rete_ctl_flags[i].name) == len && memcmp(rete_ctl_flags[i].name, name, len) == 0)
            return &rete_ctl_flags[i];
    return NULL;
}

static const rete_ctl_flag_def *flag_short(char c)
{
    for (size_t i = 0; i < rete_ctl_n_flags; i++)
        if (rete_ctl_flags[i].short_name == c)
            return &rete_ctl_flags[i];
    return NULL;
}

int rete_ctl_find_verb(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            return i + 1 < argc ? i + 1 : argc;
        if (a[0] != '-' || a[1] == '\0')
            return i;
        if (a[1] == '-' && strchr(a, '=') == NULL) {
            const rete_ctl_flag_def *f = flag_long(a + 2, strlen(a + 2));
            if (f && f->has_value && (f->bit & CTL_F_GLOBAL))
                i++;
        }
    }
    return argc;
}

static rete_rc set_flag(const rete_ctl_flag_def *f, const char *value, rete_ctl_args *out,
                        rete_error *err)
{
    out->seen |= f->bit;
    switch (f->bit) {
    case CTL_F_VERBOSE:
        out->verbose++;
        break;
    case CTL_F_HELP:
    case CTL_F_ALL_NS:
    case CTL_F_HEADERS:
    case CTL_F_ONCE:
        break;
    case CTL_F_FILENAME:
        if (out->n_files == RETE_CTL_MAX_FILES)
            return rete_error_set(err, RETE_ELIMIT, "too many -f flags (at most %d)",
                                  RETE_CTL_MAX_FILES);
        out->files[out->n_files++] = value;
        break;
    default:
        if (value[0] == '\0')
            return rete_error_set(err, RETE_EINVAL, "flag --%s needs a non-empty value", f->name);
        memcpy((char *)out + f->offset, &value, sizeof(value));
        break;
    }
    return RETE_OK;
}

rete_rc rete_ctl_args_parse(int argc, char **argv, unsigned allowed, rete_ctl_args *out,
                            rete_error *err)
{
    memset(out, 0, sizeof(*out));
    bool flags_done = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const rete_ctl_flag_def *f = NULL;
        const char *value = NULL;
        if (flags_done || a[0] != '-' || a[1] == '\0') {
            if (out->n_pos == RETE_CTL_MAX_POS)
                return rete_error_set(err, RETE_EINVAL, "too many arguments");
            out->pos[out->n_pos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            flags_done = true;
            continue;
        }
        if (a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
            f = flag_long(a + 2, len);
            if (!f)
                return rete_error_set(err, RETE_EINVAL, "unknown flag: %.*s", (int)(len + 2), a);
            if (eq) {
                if (!f->has_value)
                    return rete_error_set(err, RETE_EINVAL, "flag --%s takes no value", f->name);
                value = eq + 1;
            }
        } else {
            f = flag_short(a[1]);
            if (!f)
                return rete_error_set(err, RETE_EINVAL, "unknown shorthand flag: '%c' in %s", a[1],
                                      a);
            if (a[2] != '\0' && !f->has_value) {
                /* "-vv", "-Av": a run of flags that take no value */
                for (const char *q = a + 1; *q; q++) {
                    const rete_ctl_flag_def *g = flag_short(*q);
                    if (!g || g->has_value || !(allowed & g->bit))
                        return rete_error_set(err, RETE_EINVAL, "flag -%c cannot be combined in %s",
                                              *q, a);
                    RETE_GUARD(set_flag(g, NULL, out, err));
                }
                continue;
            }
            if (a[2] != '\0')
                value = a[2] == '=' ? a + 3 : a + 2;
        }
        if (!(allowed & f->bit))
            return rete_error_set(err, RETE_EINVAL, "flag --%s is not accepted here", f->name);
        if (f->has_value && value == NULL) {
            if (i + 1 >= argc)
                return rete_error_set(err, RETE_EINVAL, "flag --%s needs a value (%s)", f->name,
                                      f->value_name);
            value = argv[++i];
        }
        RETE_GUARD(set_flag(f, value, out, err));
    }
    return RETE_OK;
}

bool rete_ctl_parse_duration(const char *s, int64_t *seconds)
{
    int64_t total = 0;
    const char *p = s;
    if (!s || !*s)
        return false;
    while (*p) {
        int64_t n = 0;
        const char *start = p;
        while (*p >= '0' && *p <= '9') {
            if (n > INT64_MAX / 10 - 10)
                return false;
            n = n * 10 + (*p++ - '0');
        }
        if (p == start)
            return false;
        int64_t unit;
        switch (*p) {
        case '\0':
            if (start != s) /* "1h30" is ambiguous */
                return false;
            unit = 1;
            break;
        case 's':
            unit = 1;
            break;
        case 'm':
            unit = 60;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        default:
            return false;
        }
        if (*p)
            p++;
        if (n > (INT64_MAX - total) / unit)
            return false;
        total += n * unit;
    }
    if (total <= 0)
        return false;
    *seconds = total;
    return true;
}
