/* retectl: the operator CLI for reted. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"

/* Verbs that never talk to reted need no context (and must not fail on a
 * broken context.json). */
static bool offline(const char *verb)
{
    return !strcmp(verb, "help") || !strcmp(verb, "completion");
}

int main(int argc, char **argv)
{
    static rete_ctl c;
    rete_error err = {0};
    int vi = rete_ctl_find_verb(argc - 1, argv + 1) + 1;
    if (vi >= argc) {
        /* no verb: global flags only */
        if (rete_ctl_args_parse(argc - 1, argv + 1, CTL_F_GLOBAL, &c.args, &err) < 0)
            return rete_ctl_usage_error(NULL, "%s", err.msg);
        rete_ctl_print_help(c.args.seen & CTL_F_HELP ? stdout : stderr);
        return c.args.seen & CTL_F_HELP ? CTL_EXIT_OK : CTL_EXIT_USAGE;
    }
    const rete_ctl_verb *v = rete_ctl_verb_lookup(argv[vi]);
    if (!v) {
        fprintf(stderr, "error: unknown verb \"%s\"\nSee 'retectl help'.\n", argv[vi]);
        return CTL_EXIT_USAGE;
    }
    c.verb = v->name;
    /* argv without the verb: flags may come before or after it */
    char **rest = calloc((size_t)argc, sizeof(char *));
    if (!rest)
        return CTL_EXIT_FAIL;
    int n = 0;
    for (int i = 1; i < argc; i++)
        if (i != vi)
            rest[n++] = argv[i];
    rete_rc prc = rete_ctl_args_parse(n, rest, v->flags | CTL_F_GLOBAL, &c.args, &err);
    free(rest);
    if (prc < 0)
        return rete_ctl_usage_error(&c, "%s", err.msg);
    if (c.args.seen & CTL_F_HELP) {
        rete_ctl_print_verb_help(v, stdout);
        return CTL_EXIT_OK;
    }
    if (offline(v->name))
        return v->run(&c);

    char cwd[PATH_MAX];
    rete_ctl_context_in in = {
        .flag_server = c.args.server,
        .flag_token_file = c.args.token_file,
        .env_server = getenv("RETE_SERVER"),
        .env_token_file = getenv("RETE_TOKEN_FILE"),
        .cwd = getcwd(cwd, sizeof(cwd)),
        .home = getenv("HOME"),
    };
    if (rete_ctl_context_discover(&in, &c.ctx, &err) < 0) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CTL_EXIT_FAIL;
    }
    if (c.ctx.token_file[0]) {
        c.token = rete_ctl_read_token(c.ctx.token_file, &c.token_err);
        if (!c.token && strcmp(c.ctx.token_from, "--token-file") == 0) {
            fprintf(stderr, "error: %s\n", c.token_err.msg);
            return CTL_EXIT_FAIL;
        }
    }
    int64_t timeout_s = 10;
    if (c.args.timeout && !rete_ctl_parse_duration(c.args.timeout, &timeout_s))
        return rete_ctl_usage_error(&c, "bad --request-timeout \"%s\"", c.args.timeout);
    c.http = (rete_ctl_http){
        .server = c.ctx.servers[0],
        .token = c.token,
        .timeout_ms = (int)(timeout_s > 3600 ? 3600000 : timeout_s * 1000),
        .verbose = c.args.verbose,
    };
    if (c.args.verbose)
        fprintf(stderr, "reted at %s (from %s); token %s%s%s\n", c.ctx.server, c.ctx.server_from,
                c.token ? "from " : "none", c.token ? c.ctx.token_file : "", c.token ? "" : "");
    int rc = v->run(&c);
    free(c.token);
    return rc;
}
