#include "ctl_kinds.h"

#include <stdio.h>
#include <string.h>

#include "defaults.h"
#include "view.h"

static const json_t *spec(const json_t *res)
{
    return json_object_get(res, "spec");
}

static const json_t *path(const json_t *v, const char *a, const char *b)
{
    v = json_object_get(v, a);
    return b ? json_object_get(v, b) : v;
}

/* Append to buf; stops silently (truncated with "...") at the end. */
static void cat(char *buf, size_t len, const char *s)
{
    size_t used = strlen(buf);
    if (used + strlen(s) + 1 > len) {
        if (len > 4 && used + 4 <= len)
            snprintf(buf + used, len - used, "...");
        return;
    }
    memcpy(buf + used, s, strlen(s) + 1);
}

static void scalar(const json_t *v, char *buf, size_t len)
{
    if (json_is_string(v))
        snprintf(buf, len, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, len, "%s", json_is_true(v) ? "true" : "false");
    else
        snprintf(buf, len, "<none>");
}

void rete_ctl_cell_map(const json_t *map, char *buf, size_t len)
{
    const char *k;
    json_t *v;
    buf[0] = '\0';
    json_object_foreach((json_t *)map, k, v)
    {
        char val[256];
        scalar(v, val, sizeof(val));
        if (buf[0])
            cat(buf, len, ",");
        cat(buf, len, k);
        cat(buf, len, "=");
        cat(buf, len, val);
    }
    if (!buf[0])
        snprintf(buf, len, "<none>");
}

static void count(const json_t *arr, char *buf, size_t len)
{
    snprintf(buf, len, "%zu", json_array_size(arr));
}

/* Writes one element of a list cell into one[len]. */
typedef void (*item_fn)(const json_t *item, char *one, size_t len);

/* A list cell: each element of arr as `item` writes it, joined with ",";
 * "<none>" when arr is empty or not an array. */
static void list_cell(const json_t *arr, item_fn item, char *buf, size_t len)
{
    size_t i;
    json_t *v;
    buf[0] = '\0';
    json_array_foreach(arr, i, v)
    {
        char one[300], piece[302];
        item(v, one, sizeof(one));
        snprintf(piece, sizeof(piece), "%s%s", i ? "," : "", one);
        cat(buf, len, piece);
    }
    if (!buf[0])
        snprintf(buf, len, "<none>");
}

static void port_item(const json_t *p, char *one, size_t len)
{
    const char *proto = json_string_value(json_object_get(p, "protocol"));
    snprintf(one, len, "%" JSON_INTEGER_FORMAT "/%s",
             json_integer_value(json_object_get(p, "port")), proto ? proto : "HTTP");
}

static void svc_ports(const json_t *res, char *buf, size_t len)
{
    list_cell(path(spec(res), "ports", NULL), port_item, buf, len);
}

static void svc_selector(const json_t *res, char *buf, size_t len)
{
    rete_ctl_cell_map(path(spec(res), "selector", NULL), buf, len);
}

static void wl_address(const json_t *res, char *buf, size_t len)
{
    scalar(path(spec(res), "address", NULL), buf, len);
}

static void wl_sa(const json_t *res, char *buf, size_t len)
{
    const json_t *sa = path(spec(res), "serviceAccount", NULL);
    snprintf(buf, len, "%s", json_is_string(sa) ? json_string_value(sa) : "default");
}

static void wl_labels(const json_t *res, char *buf, size_t len)
{
    const json_t *l = path(spec(res), "labels", NULL);
    if (!json_object_size(l))
        l = path(res, "metadata", "labels");
    rete_ctl_cell_map(l, buf, len);
}

static void wl_mesh_port(const json_t *res, char *buf, size_t len)
{
    const json_t *p = path(spec(res), "meshPort", NULL);
    if (p)
        scalar(p, buf, len);
    else
        snprintf(buf, len, "%d", RETE_PORT_MESH);
}

static void parent_item(const json_t *p, char *one, size_t len)
{
    const char *name = json_string_value(json_object_get(p, "name"));
    const json_t *port = json_object_get(p, "port");
    if (port)
        snprintf(one, len, "%s:%" JSON_INTEGER_FORMAT, name ? name : "?", json_integer_value(port));
    else
        snprintf(one, len, "%s", name ? name : "?");
}

static void route_parents(const json_t *res, char *buf, size_t len)
{
    list_cell(path(spec(res), "parentRefs", NULL), parent_item, buf, len);
}

static void route_rules(const json_t *res, char *buf, size_t len)
{
    count(path(spec(res), "rules", NULL), buf, len);
}

static void route_backends(const json_t *res, char *buf, size_t len)
{
    size_t i, j;
    json_t *r, *b;
    buf[0] = '\0';
    json_array_foreach(path(spec(res), "rules", NULL), i, r)
    {
        json_array_foreach(json_object_get(r, "backendRefs"), j, b)
        {
            char one[300];
            const char *name = json_string_value(json_object_get(b, "name"));
            const json_t *w = json_object_get(b, "weight");
            snprintf(one, sizeof(one), "%s%s", buf[0] ? "," : "", name ? name : "?");
            cat(buf, len, one);
            if (w) {
                snprintf(one, sizeof(one), "(%" JSON_INTEGER_FORMAT ")", json_integer_value(w));
                cat(buf, len, one);
            }
        }
    }
    if (!buf[0])
        snprintf(buf, len, "<none>");
}

static void hostname_item(const json_t *h, char *one, size_t len)
{
    snprintf(one, len, "%s", json_string_value(h) ? json_string_value(h) : "?");
}

static void route_hostnames(const json_t *res, char *buf, size_t len)
{
    list_cell(path(spec(res), "hostnames", NULL), hostname_item, buf, len);
}

static void dr_host(const json_t *res, char *buf, size_t len)
{
    scalar(path(spec(res), "host", NULL), buf, len);
}

static void dr_lb(const json_t *res, char *buf, size_t len)
{
    const json_t *lb = json_object_get(json_object_get(spec(res), "trafficPolicy"), "loadBalancer");
    if (json_object_get(lb, "simple"))
        scalar(json_object_get(lb, "simple"), buf, len);
    else if (json_object_get(lb, "consistentHash"))
        snprintf(buf, len, "CONSISTENT_HASH");
    else
        snprintf(buf, len, "<default>");
}

static void dr_outlier(const json_t *res, char *buf, size_t len)
{
    const json_t *o =
        json_object_get(json_object_get(spec(res), "trafficPolicy"), "outlierDetection");
    snprintf(buf, len, "%s", o ? "on" : "off");
}

static void sel_labels(const json_t *res, char *buf, size_t len)
{
    const json_t *m = path(path(spec(res), "selector", NULL), "matchLabels", NULL);
    if (!json_object_get(spec(res), "selector"))
        snprintf(buf, len, "<namespace>");
    else
        rete_ctl_cell_map(m, buf, len);
}

static void authz_action(const json_t *res, char *buf, size_t len)
{
    const json_t *a = path(spec(res), "action", NULL);
    snprintf(buf, len, "%s", json_is_string(a) ? json_string_value(a) : "ALLOW");
}

static void pa_mode(const json_t *res, char *buf, size_t len)
{
    const json_t *m = json_object_get(path(spec(res), "mtls", NULL), "mode");
    snprintf(buf, len, "%s", json_is_string(m) ? json_string_value(m) : "UNSET");
}

static void mc_td(const json_t *res, char *buf, size_t len)
{
    const json_t *t = path(spec(res), "trustDomain", NULL);
    snprintf(buf, len, "%s", json_is_string(t) ? json_string_value(t) : RETE_DEFAULT_TRUST_DOMAIN);
}

static void mc_mtls(const json_t *res, char *buf, size_t len)
{
    const json_t *m = path(spec(res), "defaultMtlsMode", NULL);
    snprintf(buf, len, "%s", json_is_string(m) ? json_string_value(m) : "PERMISSIVE");
}

#define ROUTE_COLS                                                                                 \
    {                                                                                              \
        {"PARENTS", false, route_parents}, {"RULES", false, route_rules},                          \
            {"HOSTNAMES", true, route_hostnames}, {"BACKENDS", true, route_backends},              \
    }

const rete_ctl_kind rete_ctl_kinds[] = {
    {&rete_kinds[RETE_KIND_SERVICE],
     {{"PORTS", false, svc_ports}, {"SELECTOR", false, svc_selector}}},
    {&rete_kinds[RETE_KIND_WORKLOAD],
     {{"ADDRESS", false, wl_address},
      {"SERVICE-ACCOUNT", false, wl_sa},
      {"LABELS", false, wl_labels},
      {"MESH-PORT", true, wl_mesh_port}}},
    {&rete_kinds[RETE_KIND_HTTP_ROUTE], ROUTE_COLS},
    {&rete_kinds[RETE_KIND_GRPC_ROUTE], ROUTE_COLS},
    {&rete_kinds[RETE_KIND_TCP_ROUTE],
     {{"PARENTS", false, route_parents}, {"BACKENDS", false, route_backends}}},
    {&rete_kinds[RETE_KIND_DESTINATION_RULE],
     {{"HOST", false, dr_host}, {"LOAD-BALANCER", false, dr_lb}, {"OUTLIER", true, dr_outlier}}},
    {&rete_kinds[RETE_KIND_AUTHZ],
     {{"ACTION", false, authz_action},
      {"SELECTOR", false, sel_labels},
      {"RULES", false, route_rules}}},
    {&rete_kinds[RETE_KIND_PEER_AUTHN],
     {{"MODE", false, pa_mode}, {"SELECTOR", false, sel_labels}}},
    {&rete_kinds[RETE_KIND_WORKLOAD_GROUP],
     {{"SERVICE-ACCOUNT", false, wl_sa}, {"LABELS", false, wl_labels}}},
    {&rete_kinds[RETE_KIND_MESH],
     {{"TRUST-DOMAIN", false, mc_td}, {"DEFAULT-MTLS", false, mc_mtls}}},    {&rete_kinds[RETE_KIND_RATE_LIMIT], {{"SELECTOR", false, sel_labels}}},
};
const size_t rete_ctl_n_kinds = sizeof(rete_ctl_kinds) / sizeof(rete_ctl_kinds[0]);

const rete_ctl_kind *rete_ctl_kind_lookup(const char *word)
{
    const rete_kind *k = rete_kind_lookup(word);
    for (size_t i = 0; k && i < rete_ctl_n_kinds; i++)
        if (rete_ctl_kinds[i].def == k)
            return &rete_ctl_kinds[i];
    return NULL;
}

const char *rete_ctl_kind_lower(const char *kind, char *buf, size_t len)
{
    size_t i = 0;
    for (; kind[i] && i + 1 < len; i++)
        buf[i] = rete_ascii_lower(kind[i]);
    buf[i] = '\0';
    return buf;
}
