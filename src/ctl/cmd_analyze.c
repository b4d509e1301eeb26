/* retectl analyze: the configuration analysers (src/common/analyze.h, which
 * reted runs too for GET /api/v1/analyze) over what retectl reads from
 * reted's API: its resources and what it knows of its proxies. Run here,
 * client-side, so it works against a reted without /api/v1/analyze.
 * Exit 1 when any finding is an error. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "analyze.h"
#include "ctl.h"

static json_t *list(rete_ctl *c, const char *what)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/%s", what);
    return rete_ctl_get_list(c, path, (const char *const[]){"items", NULL}, "no list in reted's answer");
}

int rete_ctl_cmd_analyze(rete_ctl *c)
{
    if (c->args.n_pos)
        return rete_ctl_usage_error(c, "unexpected argument \"%s\"", c->args.pos[0]);
    const char *o = c->args.output ? c->args.output : "table";
    if (strcmp(o, "table") && strcmp(o, "json") && strcmp(o, "yaml"))
        return rete_ctl_usage_error(c, "analyze prints table, json or yaml, not \"%s\"", o);
    json_t *got[RETE_AN_N] = {0};
    for (size_t i = 0; i < RETE_AN_N; i++) {
        char what[64];
        if (i == RETE_AN_PROXIES)
            snprintf(what, sizeof(what), "proxies");
        else
            snprintf(what, sizeof(what), "resources/%s", rete_analyze_kinds[i]);
        if (!(got[i] = list(c, what))) {
            for (size_t k = 0; k < i; k++)
                json_decref(got[k]);
            return CTL_EXIT_FAIL;
        }
    }
    bool errors;
    json_t *found = rete_analyze(got, c->args.ns, time(NULL), &errors);
    for (size_t i = 0; i < RETE_AN_N; i++)
        json_decref(got[i]);
    if (strcmp(o, "json") == 0 || strcmp(o, "yaml") == 0) {
        json_t *out = json_pack("{s:O}", "findings", found);
        if (strcmp(o, "json") == 0)
            rete_ctl_print_json(out);
        else
            rete_ctl_print_yaml(out);
        json_decref(out);
    } else if (!json_array_size(found)) {
        printf("No issues found.\n");
    } else {
        size_t i;
        json_t *x;
        json_array_foreach(found, i, x)
        {
            const json_t *res = json_object_get(x, "resource");
            printf("%s [%s] %s %s/%s: %s\n    hint: %s\n", json_string_value(json_object_get(x, "level")),
                   json_string_value(json_object_get(x, "code")),
                   json_string_value(json_object_get(res, "kind")),
                   json_string_value(json_object_get(res, "namespace")),
                   json_string_value(json_object_get(res, "name")), json_string_value(json_object_get(x, "message")),
                   json_string_value(json_object_get(x, "hint")));
        }
    }
    json_decref(found);
    return errors ? CTL_EXIT_FAIL : CTL_EXIT_OK;
}
