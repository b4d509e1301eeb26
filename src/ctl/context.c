#include "context.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

/* The nearest .demo/reted/context.json from cwd upwards, into path. */
static bool find_upwards(const char *cwd, char *path, size_t cap)
{
    char dir[RETE_CTL_PATH_MAX];
    if (!cwd || !copy(dir, sizeof(dir), cwd))
        return false;
    for (;;) {
        size_t n = strlen(dir);
        while (n > 1 && dir[n - 1] == '/')
            dir[--n] = '\0';
        int w = snprintf(path, cap, "%s%s.demo/reted/context.json", dir,
                         strcmp(dir, "/") == 0 ? "" : "/");
        if (w > 0 && (size_t)w < cap && exists(path))
            return true;
        char *slash = strrchr(dir, '/');
        if (!slash || strcmp(dir, "/") == 0)
            return false;
        if (slash == dir)
            dir[1] = '\0';
        else
            *slash = '\0';
    }
}

static rete_rc load_context(const char *path, rete_ctl_context *out, bool want_server,
                            bool want_token, rete_error *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return rete_error_set(err, RETE_EINVAL, "%s: %s (line %d)", path, jerr.text, jerr.line);
    rete_rc rc = RETE_EINVAL;
    char list[sizeof(out->server)] = "";
    const char *api = json_string_value(json_object_get(root, "api"));
    json_t *api_list = json_object_get(root, "api");
    if (json_is_array(api_list)) {
        /* every replica: joined into the --server form */
        size_t i, used = 0;
        json_t *e;
        json_array_foreach(api_list, i, e)
        {
            const char *one = json_string_value(e);
            int w = one ? snprintf(list + used, sizeof(list) - used, "%s%s", used ? "," : "", one) : -1;
            if (w < 0 || (size_t)w >= sizeof(list) - used) {
                rete_error_set(err, RETE_EINVAL, "%s: api: a list of \"HOST:PORT\" strings, %zu bytes at most",
                               path, sizeof(list) - 1);
                goto out;
            }
            used += (size_t)w;
        }
        api = list;
    }
    const char *tok = json_string_value(json_object_get(root, "tokenFile"));
    if (!json_is_object(root) || (json_object_get(root, "api") && !api) ||
        (json_object_get(root, "tokenFile") && !tok)) {
        rete_error_set(err, RETE_EINVAL,
                       "%s: expected {\"api\": \"HOST:PORT\" or [\"HOST:PORT\", ...], \"tokenFile\": PATH}",
                       path);
        goto out;
    }
    if (want_server && api && *api) {
        if (!copy(out->server, sizeof(out->server), api)) {
            rete_error_set(err, RETE_EINVAL, "%s: api too long", path);
            goto out;
        }
        snprintf(out->server_from, sizeof(out->server_from), "%s", path);
    }
    if (want_token && tok && *tok) {
        int w;
        if (tok[0] == '/') {
            w = snprintf(out->token_file, sizeof(out->token_file), "%s", tok);
        } else {
            const char *slash = strrchr(path, '/');
            int dlen = slash ? (int)(slash - path) : 1;
            w = snprintf(out->token_file, sizeof(out->token_file), "%.*s/%s", dlen,
                         slash ? path : ".", tok);
        }
        if (w < 0 || (size_t)w >= sizeof(out->token_file)) {
            rete_error_set(err, RETE_EINVAL, "%s: tokenFile too long", path);
            goto out;
        }
        snprintf(out->token_from, sizeof(out->token_from), "%s", path);
    }
    rc = RETE_OK;
out:
    json_decref(root);
    return rc;
}

/* out->server, split at commas into out->servers. */
static rete_rc split_servers(rete_ctl_context *out, rete_error *err)
{
    const char *p = out->server;
    out->n_servers = 0;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= sizeof(out->servers[0]) || out->n_servers == RETE_CTL_MAX_SERVERS)
            return rete_error_set(err, RETE_EINVAL,
                                  "server list \"%s\" (from %s): empty or overlong entry, or more than %d",
                                  out->server, out->server_from, RETE_CTL_MAX_SERVERS);
        memcpy(out->servers[out->n_servers], p, n);
        out->servers[out->n_servers++][n] = '\0';
        p += n + (p[n] == ',');
    }
    if (!out->n_servers)
        return rete_error_set(err, RETE_EINVAL, "empty server address (from %s)", out->server_from);
    return RETE_OK;
}

rete_rc rete_ctl_context_discover(const rete_ctl_context_in *in, rete_ctl_context *out,
                                  rete_error *err)
{
    memset(out, 0, sizeof(*out));
    const char *srv = in->flag_server ? in->flag_server : in->env_server;
    const char *tok = in->flag_token_file ? in->flag_token_file : in->env_token_file;
    if (srv && *srv) {
        if (!copy(out->server, sizeof(out->server), srv))
            return rete_error_set(err, RETE_EINVAL, "server address too long");
        snprintf(out->server_from, sizeof(out->server_from), "%s",
                 in->flag_server ? "--server" : "RETE_SERVER");
    }
    if (tok && *tok) {
        if (!copy(out->token_file, sizeof(out->token_file), tok))
            return rete_error_set(err, RETE_EINVAL, "token file path too long");
        snprintf(out->token_from, sizeof(out->token_from), "%s",
                 in->flag_token_file ? "--token-file" : "RETE_TOKEN_FILE");
    }
    char path[RETE_CTL_PATH_MAX + 64];
    if ((!out->server[0] || !out->token_file[0]) && find_upwards(in->cwd, path, sizeof(path)))
        RETE_GUARD(load_context(path, out, !out->server[0], !out->token_file[0], err));
    if ((!out->server[0] || !out->token_file[0]) && in->home && *in->home) {
        int w = snprintf(path, sizeof(path), "%s/.config/rete/context.json", in->home);
        if (w > 0 && (size_t)w < sizeof(path) && exists(path))
            RETE_GUARD(load_context(path, out, !out->server[0], !out->token_file[0], err));
    }
    if (!out->server[0]) {
        snprintf(out->server, sizeof(out->server), "%s", RETE_CTL_DEFAULT_SERVER);
        snprintf(out->server_from, sizeof(out->server_from), "default");
    }
    return split_servers(out, err);
}

char *rete_ctl_read_token(const char *path, rete_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        rete_error_set(err, RETE_EIO, "cannot read token file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = buf;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    size_t len = strcspn(p, "\r\n");
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (len == 0) {
        rete_error_set(err, RETE_EINVAL, "token file %s is empty", path);
        return NULL;
    }
    return rete_strndup(p, len);
}
