/* The verb table (names, flags, help) and what is written from it: help
 * text and the bash completion script. */
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "ctl_kinds.h"

#define F_OUT_NS (CTL_F_NAMESPACE | CTL_F_OUTPUT)

const rete_ctl_verb rete_ctl_verbs[] = {
    {"apply", rete_ctl_cmd_apply, CTL_F_FILENAME, "apply -f FILE|DIR|- [-f ...]",
     "create or update resources from YAML or JSON files",
     "Each file is sent to reted as one all-or-nothing apply. A directory means every\n"
     "*.yaml, *.yml and *.json in it, in name order; - reads standard input.\n"
     "Prints KIND/NAME created|configured|unchanged per resource. Validation errors\n"
     "print as FILE: document N: PATH: REASON. Exit 1 if any file was rejected.\n\n"
     "Examples:\n  retectl apply -f examples/\n  cat svc.yaml | retectl apply -f -\n"},
    {"get", rete_ctl_cmd_get, F_OUT_NS | CTL_F_ALL_NS,
     "get KIND [NAME] [-n NS | -A] [-o table|wide|json|yaml|name]", "list or show resources",
     "KIND is case-insensitive and may be plural or short: svc, wl, httproute, grpcroute,\n"
     "tcproute, dr, authorizationpolicy, peerauthentication, meshconfig. KIND/NAME works too.\n\n"
     "Examples:\n  retectl get svc\n  retectl get workloads -A -o wide\n"
     "  retectl get httproute echo -o yaml\n"},
    {"delete", rete_ctl_cmd_delete, CTL_F_NAMESPACE | CTL_F_FILENAME,
     "delete KIND NAME [-n NS] | delete -f FILE|DIR|-", "delete resources",
     "With -f, deletes every resource the files describe (kind, metadata.name and\n"
     "metadata.namespace of each document).\n\nExamples:\n  retectl delete svc echo\n"
     "  retectl delete -f examples/echo.yaml\n"},
    {"describe", rete_ctl_cmd_describe, CTL_F_NAMESPACE, "describe KIND [NAME] [-n NS]",
     "show a resource in detail",
     "Prints metadata, then spec (and status) as YAML; for a Service, the workloads its\n"
     "selector picks.\n\nExample:\n  retectl describe svc echo\n"},
    {"token", rete_ctl_cmd_token, CTL_F_NAMESPACE | CTL_F_SA | CTL_F_TTL | CTL_F_USES,
     "token create --namespace NS --service-account SA [--ttl 1h] [--uses 1]",
     "create a join token for a proxy's first certificate",
     "Prints the token only, so it can be redirected to a file.\n\nExample:\n"
     "  retectl token create --namespace default --service-account echo > echo.token\n"},
    {"proxy-status", rete_ctl_cmd_proxy_status, CTL_F_OUTPUT, "proxy-status [-o json|yaml]",
     "every proxy: config version sent/acked, sync state, certificate expiry",
     "STATUS is SYNCED (acked what was sent), STALE (not yet acked), NACK: reason\n"
     "(the proxy rejected its config and runs on its last good one) or DISCONNECTED.\n"},
    {"proxy-config", rete_ctl_cmd_proxy_config, F_OUT_NS,
     "proxy-config WORKLOAD [-n NS] [-o json|yaml]",
     "the configuration snapshot reted last sent to a proxy", ""},
    {"check", rete_ctl_cmd_check, 0, "check", "check reted, its CA, the proxies and the clocks",
     "Exits 1 when anything is wrong: reted unreachable or refusing the token, the CA\n"
     "certificate expiring within 7 days, a proxy not in sync, or retectl's clock more\n"
     "than 30 s away from reted's.\n"},
    {"analyze", rete_ctl_cmd_analyze, F_OUT_NS, "analyze [-n NS] [-o table|json|yaml]",
     "find configuration that reted accepts and is still wrong",
     "Each finding has a code, a level, the resource and a hint (docs/operations.md,\n"
     "\"Analysers\"): route rules that send nowhere or never match, Services and policies\n"
     "whose selector picks nothing, PeerAuthentications that contradict each other,\n"
     "proxies rejecting or missing their configuration, certificates about to expire.\n"
     "All namespaces unless -n. Exit 1 when any finding is an Error.\n\n"
     "Example:\n  retectl analyze -n demo\n"},
    {"stat", rete_ctl_cmd_stat, F_OUT_NS | CTL_F_ALL_NS | CTL_F_WINDOW,
     "stat service|workload|route|edge [NAME] [-n NS | -A] [--window 1m|10m] [-o table|json|yaml]",
     "golden metrics: success rate, requests per second, latency percentiles",
     "From what the proxies report to reted (docs/observability.md, \"Golden metrics\"),\n"
     "over the last minute (or 10 minutes). Services, workloads and edges as their\n"
     "destination's sidecar saw them; routes as the callers' sidecars matched them.\n"
     "An edge is SOURCE -> DESTINATION workload; -n and NAME select its destination.\n\n"
     "Examples:\n  retectl stat service -n demo\n  retectl stat route --window 10m -A\n"
     "  retectl stat edge echo -n demo -o json\n"},
    {"tap", rete_ctl_cmd_tap,
     CTL_F_NAMESPACE | CTL_F_OUTPUT | CTL_F_PATH | CTL_F_METHOD | CTL_F_STATUS | CTL_F_MAX | CTL_F_HEADERS |
         CTL_F_DURATION,
     "tap deploy|service|workload NAME [-n NS] [--path PREFIX] [--method M] [--status CODE] [--max N] "
     "[--headers] [--duration D] [-o json]",
     "stream live requests from the proxies (Linkerd's tap)",
     "One line per request as it ends: time, direction, method, authority, path, status,\n"
     "latency, source and destination workloads, route, response flag, the proxy that saw it\n"
     "(docs/observability.md, \"Tap\"). deploy NAME: the workloads named NAME or NAME-*;\n"
     "service NAME: every proxy's requests to the Service (both sidecars of a hop report\n"
     "one); workload NAME: that one. Header values are redacted unless --headers\n"
     "(Authorization and Cookie always). Each proxy sends at most 100 requests/s; the rest\n"
     "are counted as dropped. Runs until interrupted, --max N requests or --duration.\n\n"
     "Examples:\n  retectl tap deploy echo -n demo\n  retectl tap service echo -n demo --status 503 --max 10 -o json\n"},
    {"top", rete_ctl_cmd_top,
     CTL_F_NAMESPACE | CTL_F_OUTPUT | CTL_F_PATH | CTL_F_METHOD | CTL_F_STATUS | CTL_F_MAX | CTL_F_ONCE |
         CTL_F_DURATION,
     "top deploy|service|workload NAME [-n NS] [--once --duration D] [-o json]",
     "the busiest paths, live (Linkerd's top)",
     "Counts tapped requests by method and path (a request both sidecars report counts\n"
     "once) and prints a table every 2 seconds: count, success rate, average and worst\n"
     "latency, last status. --once prints it once, after --duration (for scripts).\n\n"
     "Examples:\n  retectl top deploy echo -n demo\n  retectl top service echo -n demo --once --duration 5s -o json\n"},
    {"diagnose", rete_ctl_cmd_diagnose, CTL_F_NAMESPACE | CTL_F_DURATION, "diagnose SERVICE [-n NS] [--duration D]",
     "what is wrong with a Service now",
     "Golden metrics over the last minute against the last ten (both sides of its calls),\n"
     "the top errors of a live tap of --duration (default 5s) by status, response flag and\n"
     "upstream with what the flag means, and its proxies' config sync, last NACK, app\n"
     "readiness and certificate expiry; then a verdict. Exit 1 when something is wrong.\n\n"
     "Example:\n  retectl diagnose echo -n demo\n"},
    {"identity", rete_ctl_cmd_identity, CTL_F_TOKEN | CTL_F_SPIFFE_ID | CTL_F_OUT,
     "identity issue --token TOKEN [--spiffe-id ID] --out DIR",
     "get a workload certificate from a join token (for debugging)",
     "Makes a P-256 key and a CSR locally (the key never leaves this machine), sends the\n"
     "CSR with the token and writes DIR/cert.pem, DIR/key.pem (mode 0600), DIR/bundle.pem.\n\n"
     "Example:\n  retectl identity issue --token $(cat echo.token) --out ./id\n"
     "  openssl verify -CAfile id/bundle.pem id/cert.pem\n"},
    {"version", rete_ctl_cmd_version, 0, "version", "retectl's version and reted's", ""},
    {"completion", rete_ctl_cmd_completion, 0, "completion bash", "print a bash completion script",
     "Example:\n  source <(retectl completion bash)\n"},
    {"help", rete_ctl_cmd_help, 0, "help [VERB]", "help about retectl or one verb", ""},
};
const size_t rete_ctl_n_verbs = sizeof(rete_ctl_verbs) / sizeof(rete_ctl_verbs[0]);

const rete_ctl_verb *rete_ctl_verb_lookup(const char *name)
{
    for (size_t i = 0; name && i < rete_ctl_n_verbs; i++)
        if (strcmp(rete_ctl_verbs[i].name, name) == 0)
            return &rete_ctl_verbs[i];
    return NULL;
}

static void print_flags(unsigned mask, FILE *out)
{
    for (size_t i = 0; i < rete_ctl_n_flags; i++) {
        const rete_ctl_flag_def *f = &rete_ctl_flags[i];
        if (!(mask & f->bit))
            continue;
        char left[64];
        if (f->short_name)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", f->short_name, f->name,
                     f->has_value ? " " : "", f->has_value ? f->value_name : "");
        else
            snprintf(left, sizeof(left), "    --%s%s%s", f->name, f->has_value ? " " : "",
                     f->has_value ? f->value_name : "");
        fprintf(out, "  %-30s %s\n", left, f->help);
    }
}

void rete_ctl_print_help(FILE *out)
{
    fprintf(out, "retectl controls the rete service mesh through reted's operator API.\n\n"
                 "Usage: retectl [global flags] VERB [args] [flags]\n\nVerbs:\n");
    for (size_t i = 0; i < rete_ctl_n_verbs; i++)
        fprintf(out, "  %-14s %s\n", rete_ctl_verbs[i].name, rete_ctl_verbs[i].summary);
    fprintf(out, "\nGlobal flags:\n");
    print_flags(CTL_F_GLOBAL, out);
    fprintf(out,
            "\nFinding reted (first wins, separately for the address and the token):\n"
            "  --server / --token-file, then RETE_SERVER / RETE_TOKEN_FILE, then\n"
            "  .demo/reted/context.json in the current directory or a parent, then\n"
            "  ~/.config/rete/context.json, then %s with no token.\n\n"
            "Exit status: 0 ok, 1 failure, 2 usage error.\n"
            "Use 'retectl VERB --help' for more about a verb.\n",
            RETE_CTL_DEFAULT_SERVER);
}

void rete_ctl_print_verb_help(const rete_ctl_verb *v, FILE *out)
{
    fprintf(out, "%s\n\nUsage: retectl %s\n", v->summary, v->usage);
    if (v->help && *v->help)
        fprintf(out, "\n%s", v->help);
    if (v->flags) {
        fprintf(out, "\nFlags:\n");
        print_flags(v->flags, out);
    }
    fprintf(out, "\nGlobal flags:\n");
    print_flags(CTL_F_GLOBAL, out);
}

int rete_ctl_cmd_help(rete_ctl *c)
{
    if (c->args.n_pos == 0) {
        rete_ctl_print_help(stdout);
        return CTL_EXIT_OK;
    }
    const rete_ctl_verb *v = rete_ctl_verb_lookup(c->args.pos[0]);
    if (!v)
        return rete_ctl_usage_error(c, "unknown verb \"%s\"", c->args.pos[0]);
    rete_ctl_print_verb_help(v, stdout);
    return CTL_EXIT_OK;
}

static void flag_words(unsigned mask, FILE *out)
{
    for (size_t i = 0; i < rete_ctl_n_flags; i++) {
        if (!(mask & rete_ctl_flags[i].bit))
            continue;
        fprintf(out, " --%s", rete_ctl_flags[i].name);
        if (rete_ctl_flags[i].short_name)
            fprintf(out, " -%c", rete_ctl_flags[i].short_name);
    }
}

void rete_ctl_completion_bash(FILE *out)
{
    fprintf(out, "# bash completion for retectl: source <(retectl completion bash)\n"
                 "_retectl() {\n"
                 "    local cur prev verb i\n"
                 "    COMPREPLY=()\n"
                 "    cur=\"${COMP_WORDS[COMP_CWORD]}\"\n"
                 "    prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
                 "    local verbs=\"");
    for (size_t i = 0; i < rete_ctl_n_verbs; i++)
        fprintf(out, "%s%s", i ? " " : "", rete_ctl_verbs[i].name);
    fprintf(out, "\"\n    local kinds=\"");
    for (size_t i = 0; i < rete_ctl_n_kinds; i++) {
        const rete_kind *k = rete_ctl_kinds[i].def;
        char lower[64];
        fprintf(out, "%s%s %s %s", i ? " " : "", k->plural, k->kind,
                rete_ctl_kind_lower(k->kind, lower, sizeof(lower)));
        for (size_t a = 0; a < RETE_KIND_MAX_SHORT && k->short_names[a]; a++)
            fprintf(out, " %s", k->short_names[a]);
    }
    fprintf(out, "\"\n    local global=\"");
    flag_words(CTL_F_GLOBAL, out);
    fprintf(out, "\"\n"
                 "    case \"$prev\" in\n"
                 "        -f|--filename|--token-file|--out)\n"
                 "            COMPREPLY=( $(compgen -f -- \"$cur\") ); return ;;\n"
                 "        -o|--output)\n"
                 "            COMPREPLY=( $(compgen -W \"table wide json yaml name\" -- \"$cur\") "
                 "); return ;;\n"
                 "        "
                 "--server|-n|--namespace|--service-account|--ttl|--uses|--token|--spiffe-id|--"
                 "request-timeout)\n"
                 "            return ;;\n"
                 "    esac\n"
                 "    verb=\"\"\n"
                 "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
                 "        case \"${COMP_WORDS[i]}\" in\n"
                 "            --server|--token-file|--request-timeout) ((i++)) ;;\n"
                 "            -*) ;;\n"
                 "            *) verb=\"${COMP_WORDS[i]}\"; break ;;\n"
                 "        esac\n"
                 "    done\n"
                 "    if [[ -z \"$verb\" ]]; then\n"
                 "        COMPREPLY=( $(compgen -W \"$verbs $global\" -- \"$cur\") ); return\n"
                 "    fi\n"
                 "    local flags=\"$global\"\n"
                 "    case \"$verb\" in\n");
    for (size_t i = 0; i < rete_ctl_n_verbs; i++) {
        fprintf(out, "        %s) flags=\"$flags", rete_ctl_verbs[i].name);
        flag_words(rete_ctl_verbs[i].flags, out);
        fprintf(out, "\" ;;\n");
    }
    fprintf(out, "    esac\n"
                 "    if [[ \"$cur\" == -* ]]; then\n"
                 "        COMPREPLY=( $(compgen -W \"$flags\" -- \"$cur\") ); return\n"
                 "    fi\n"
                 "    case \"$verb\" in\n"
                 "        get|describe|delete)\n"
                 "            [[ \"$prev\" == \"$verb\" ]] && COMPREPLY=( $(compgen -W \"$kinds\" "
                 "-- \"$cur\") ) ;;\n"
                 "        token) [[ \"$prev\" == token ]] && COMPREPLY=( $(compgen -W \"create\" "
                 "-- \"$cur\") ) ;;\n"
                 "        identity) [[ \"$prev\" == identity ]] && COMPREPLY=( $(compgen -W "
                 "\"issue\" -- \"$cur\") ) ;;\n"
                 "        completion) COMPREPLY=( $(compgen -W \"bash\" -- \"$cur\") ) ;;\n"
                 "        help) COMPREPLY=( $(compgen -W \"$verbs\" -- \"$cur\") ) ;;\n"
                 "    esac\n"
                 "}\n"
                 "complete -F _retectl retectl\n");
}

int rete_ctl_cmd_completion(rete_ctl *c)
{
    if (c->args.n_pos != 1 || strcmp(c->args.pos[0], "bash") != 0)
        return rete_ctl_usage_error(c, "only bash completion is available: retectl completion "
                                       "bash");
    rete_ctl_completion_bash(stdout);
    return CTL_EXIT_OK;
}
