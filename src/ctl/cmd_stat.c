/* retectl stat (Linkerd viz stat's job): reted's golden metrics
 * (GET /api/v1/stats, docs/observability.md) as a table, JSON or YAML. */
#include "ctl.h"
#include "table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kinds[] = {"service", "workload", "route", "edge"};

static void fmt_ms(const json_t *v, char *buf, size_t len)
{
    if (json_is_number(v))
        snprintf(buf, len, "%.0fms", json_number_value(v) < 1 && json_number_value(v) > 0 ? 1 : json_number_value(v));
    else
        snprintf(buf, len, "-");
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static void print_table(const json_t *items, size_t kind)
{
    rete_ctl_table t;
    static const char *const head[4][8] = {
        {"NAMESPACE", "SERVICE", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "REQUESTS"},
        {"NAMESPACE", "WORKLOAD", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "REQUESTS"},
        {"NAMESPACE", "ROUTE", "SERVICE", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"},
        {"SOURCE", "DESTINATION", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "REQUESTS"},
    };
    rete_ctl_table_init(&t, 8);
    rete_ctl_table_add_row(&t, head[kind]);
    size_t i;
    const json_t *it;
    json_array_foreach(items, i, it)
    {
        char sr[16], rps[32], req[32], p[3][32], a[300] = "", b[300] = "";
        snprintf(sr, sizeof(sr), "%.2f%%", 100 * json_number_value(json_object_get(it, "successRate")));
        snprintf(rps, sizeof(rps), "%.2f", json_number_value(json_object_get(it, "rps")));
        snprintf(req, sizeof(req), "%lld", (long long)json_integer_value(json_object_get(it, "requests")));
        const json_t *lat = json_object_get(it, "latencyMs");
        fmt_ms(json_object_get(lat, "p50"), p[0], sizeof(p[0]));
        fmt_ms(json_object_get(lat, "p95"), p[1], sizeof(p[1]));
        fmt_ms(json_object_get(lat, "p99"), p[2], sizeof(p[2]));
        if (kind == 3) {
            const json_t *s = json_object_get(it, "source"), *d = json_object_get(it, "destination");
            snprintf(a, sizeof(a), "%s/%s", str(s, "namespace"), str(s, "workload"));
            snprintf(b, sizeof(b), "%s/%s", str(d, "namespace"), str(d, "workload"));
            const char *row[8] = {a, b, sr, rps, p[0], p[1], p[2], req};
            rete_ctl_table_add_row(&t, row);
        } else if (kind == 2) {
            const char *row[8] = {str(it, "namespace"), str(it, "name"), str(it, "service"), sr, rps,
                                  p[0], p[1], p[2]};
            rete_ctl_table_add_row(&t, row);
        } else {
            const char *row[8] = {str(it, "namespace"), str(it, "name"), sr, rps, p[0], p[1], p[2], req};
            rete_ctl_table_add_row(&t, row);
        }
    }
    if (t.n_rows == 1)
        printf("No traffic in the window.\n");
    else
        rete_ctl_table_print(&t, stdout);
    rete_ctl_table_free(&t);
}

/* What a query string may carry unencoded: Kubernetes names. */
static bool name_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' || *s == '_'))
            return false;
    return true;
}

int rete_ctl_cmd_stat(rete_ctl *c)
{
    if (c->args.n_pos < 1 || c->args.n_pos > 2)
        return rete_ctl_usage_error(c, "stat service|workload|route|edge [NAME]");
    size_t kind = 0;
    while (kind < 4 && strcmp(c->args.pos[0], kinds[kind]) != 0)
        kind++;
    if (kind == 4)
        return rete_ctl_usage_error(c, "stat service|workload|route|edge, not \"%s\"", c->args.pos[0]);
    const char *o = c->args.output ? c->args.output : "table";
    if (strcmp(o, "table") && strcmp(o, "json") && strcmp(o, "yaml"))
        return rete_ctl_usage_error(c, "stat prints table, json or yaml, not \"%s\"", o);
    const char *w = c->args.window ? c->args.window : "1m";
    if (strcmp(w, "1m") && strcmp(w, "10m"))
        return rete_ctl_usage_error(c, "--window is 1m or 10m, not \"%s\"", w);
    bool all = c->args.seen & CTL_F_ALL_NS;
    if (all && c->args.ns)
        return rete_ctl_usage_error(c, "-n and -A together");
    const char *name = c->args.n_pos == 2 ? c->args.pos[1] : NULL;
    if ((name && !name_ok(name)) || !name_ok(rete_ctl_ns(c)))
        return rete_ctl_usage_error(c, "\"%s\" is not a name", name && !name_ok(name) ? name : rete_ctl_ns(c));
    char path[600];
    int n = snprintf(path, sizeof(path), "/api/v1/stats?by=%s&window=%s", kinds[kind], w);
    if (!all)
        n += snprintf(path + n, sizeof(path) - (size_t)n, "&namespace=%s", rete_ctl_ns(c));
    if (name)
        snprintf(path + n, sizeof(path) - (size_t)n, "&name=%s", name);
    json_t *j = NULL;
    rete_ctl_response resp;
    int st = rete_ctl_call_json(c, "GET", path, NULL, &j, &resp);
    if (st < 0)
        return CTL_EXIT_FAIL;
    if (st != 200 || !json_is_array(json_object_get(j, "items"))) {
        rete_ctl_print_server_error(&resp);
        json_decref(j);
        rete_ctl_response_free(&resp);
        return CTL_EXIT_FAIL;
    }
    rete_ctl_response_free(&resp);
    if (strcmp(o, "json") == 0)
        rete_ctl_print_json(j);
    else if (strcmp(o, "yaml") == 0)
        rete_ctl_print_yaml(j);
    else
        print_table(json_object_get(j, "items"), kind);
    json_decref(j);
    return CTL_EXIT_OK;
}
