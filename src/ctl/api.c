/* Calling reted's operator API and printing its answers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "ctl.h"
#include "yaml_out.h"

int rete_ctl_call(rete_ctl *c, const char *method, const char *path, const char *ctype,
                  const char *body, size_t len, rete_ctl_response *resp)
{
    rete_error err = {0};
    /* Several replicas: the first that can be reached, starting from the
     * one that answered last. Only a connection that could not be made
     * moves on: a request that was sent is never sent twice. */
    size_t n = c->ctx.n_servers ? c->ctx.n_servers : 1;
    rete_rc rc = RETE_EIO;
    for (size_t k = 0; k < n; k++) {
        size_t i = (c->cur_server + k) % n;
        if (c->ctx.n_servers)
            c->http.server = c->ctx.servers[i];
        memset(resp, 0, sizeof(*resp));
        rc = rete_ctl_http_do(&c->http, method, path, ctype, body, len, resp, &err);
        if (rc == RETE_OK) {
            c->cur_server = i;
            break;
        }
        if (!resp->unreachable || k + 1 == n)
            break;
        fprintf(stderr, "warning: reted at %s unreachable (%s); trying %s\n", c->http.server, err.msg,
                c->ctx.servers[(i + 1) % n]);
    }
    if (rc < 0) {
        fprintf(stderr, "error: cannot reach reted at %s (address from %s): %s\n", c->ctx.server,
                c->ctx.server_from, err.msg);
        if (strcmp(c->ctx.server_from, "default") == 0)
            fprintf(stderr, "hint: start reted (make demo), or point retectl at it with --server "
                            "HOST:PORT or RETE_SERVER\n");
        return -1;
    }
    if (resp->status == 401) {
        if (!c->token && c->token_err.code != RETE_OK)
            fprintf(stderr, "error: reted refused the request (401 Unauthorized): %s\n",
                    c->token_err.msg);
        else if (!c->token)
            fprintf(stderr,
                    "error: reted refused the request (401 Unauthorized): no admin token was "
                    "sent.\nThe token is the file admin.token in reted's data directory (written "
                    "by `reted init` or first start, mode 0600); pass --token-file FILE or set "
                    "RETE_TOKEN_FILE, or run retectl where reted's context.json can be found "
                    "(.demo/reted/context.json above the current directory, or "
                    "~/.config/rete/context.json).\n");
        else
            fprintf(stderr,
                    "error: reted refused the request (401 Unauthorized): the token from %s (%s) "
                    "was not accepted; is it the admin.token of the reted at %s?\n",
                    c->ctx.token_file, c->ctx.token_from, c->ctx.server);
        rete_ctl_response_free(resp);
        return -1;
    }
    return 0;
}

int rete_ctl_call_json(rete_ctl *c, const char *method, const char *path, json_t *body,
                       json_t **out, rete_ctl_response *resp)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    int rc =
        rete_ctl_call(c, method, path, "application/json", text, text ? strlen(text) : 0, resp);
    free(text);
    *out = NULL;
    if (rc < 0)
        return -1;
    if (resp->body_len)
        *out = json_loadb(resp->body, resp->body_len, 0, NULL);
    return resp->status;
}

json_t *rete_ctl_get_list(rete_ctl *c, const char *path, const char *const *keys,
                          const char *missing)
{
    json_t *j = NULL;
    rete_ctl_response resp;
    int st = rete_ctl_call_json(c, "GET", path, NULL, &j, &resp);
    if (st < 0)
        return NULL;
    json_t *list = json_is_array(j) ? j : NULL;
    for (; !list && *keys; keys++)
        list = json_object_get(j, *keys);
    if (st != 200)
        rete_ctl_print_server_error(&resp);
    else if (!json_is_array(list))
        fprintf(stderr, "error: %s\n", missing);
    if (st != 200 || !json_is_array(list))
        list = NULL;
    json_incref(list);
    json_decref(j);
    rete_ctl_response_free(&resp);
    return list;
}

void rete_ctl_print_server_error(const rete_ctl_response *resp)
{
    json_t *j = resp->body_len ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(j, "error"));
    fprintf(stderr, "Error from server (%d %s): ", resp->status, resp->reason);
    if (msg) {
        fputs(msg, stderr);
    } else if (resp->body_len) {
        size_t n = resp->body_len;
        while (n && (resp->body[n - 1] == '\n' || resp->body[n - 1] == '\r'))
            n--;
        fwrite(resp->body, 1, n, stderr);
    } else {
        fputs("(no body)", stderr);
    }
    fputc('\n', stderr);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(j, "details"), i, d)
    {
        if (json_is_string(d)) {
            fprintf(stderr, "  %s\n", json_string_value(d));
        } else {
            char *t = json_dumps(d, JSON_COMPACT);
            fprintf(stderr, "  %s\n", t ? t : "?");
            free(t);
        }
    }
    json_decref(j);
}

int rete_ctl_print_json(const json_t *v)
{
    char *t = json_dumps(v, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    if (!t)
        return CTL_EXIT_FAIL;
    puts(t);
    free(t);
    return CTL_EXIT_OK;
}

int rete_ctl_print_yaml(const json_t *v)
{
    rete_error err = {0};
    char *t = rete_ctl_yaml_string(v, &err);
    if (!t) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CTL_EXIT_FAIL;
    }
    fputs(t, stdout);
    free(t);
    return CTL_EXIT_OK;
}

const char *rete_ctl_ns(const rete_ctl *c)
{
    return c->args.ns ? c->args.ns : "default";
}

int rete_ctl_usage_error(rete_ctl *c, const char *fmt, ...)
{
    va_list ap;
    fputs("error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    const rete_ctl_verb *v = c && c->verb ? rete_ctl_verb_lookup(c->verb) : NULL;
    if (v)
        fprintf(stderr, "usage: retectl %s\nSee 'retectl %s --help'.\n", v->usage, v->name);
    else
        fprintf(stderr, "See 'retectl help'.\n");
    return CTL_EXIT_USAGE;
}

const json_t *rete_ctl_get_any(const json_t *obj, const char *const *keys)
{
    for (; *keys; keys++) {
        const json_t *v = json_object_get(obj, *keys);
        if (v && !json_is_null(v))
            return v;
    }
    return NULL;
}
