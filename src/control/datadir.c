/* reted's data directory (datadir.h): what `reted init` creates, reted's own
 * server certificate, and the context file retectl reads. */
#include "datadir.h"

#include "alloc.h"
#include "csr.h"
#include "file.h"
#include "log.h"
#include "reted.h"
#include "spiffe.h"
#include "token.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *reted_datadir_path(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = rete_malloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

char *reted_datadir_read_line(const char *path)
{
    char *s = rete_file_read(path, 4096, NULL);
    if (s)
        s[strcspn(s, "\r\n")] = '\0';
    return s;
}

int reted_datadir_init(const char *dir, const char *td)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "reted: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char *cadir = reted_datadir_path(dir, "ca");
    char *root = reted_datadir_path(cadir, "root.pem");
    char *opcert = reted_datadir_path(cadir, "cert.pem");
    rete_error err = {0};
    int rc = 0;
    if (access(root, F_OK) != 0 && access(opcert, F_OK) != 0) {
        if (mkdir(cadir, 0700) != 0 && errno != EEXIST) {
            fprintf(stderr, "reted: cannot create %s: %s\n", cadir, strerror(errno));
            rc = -1;
        } else if (rete_ca_init(cadir, td, &err) < 0) {
            fprintf(stderr, "reted: CA: %s\n", err.msg);
            rc = -1;
        } else {
            printf("reted: created the %s root CA in %s\n", td, cadir);
        }
    }
    char *tok = reted_datadir_path(dir, "admin.token");
    if (rc == 0 && access(tok, F_OK) != 0) {
        char token[128], id[33];
        uint8_t hash[32];
        if (rete_token_new(token, sizeof(token), id, hash) < 0) {
            fprintf(stderr, "reted: no randomness for the admin token\n");
            return -1;
        }
        char line[160];
        snprintf(line, sizeof(line), "%s\n", token);
        if (rete_file_write_atomic(tok, line, strlen(line), 0600, &err) != RETE_OK) {
            rete_err("%s", err.msg);
            fprintf(stderr, "reted: cannot write %s\n", tok);
            rc = -1;
        } else {
            printf("reted: wrote the admin token to %s (mode 0600)\n", tok);
        }
    }
    char *tdfile = reted_datadir_path(dir, "trust-domain");
    if (rc == 0 && access(tdfile, F_OK) != 0) {
        char line[300];
        snprintf(line, sizeof(line), "%s\n", td);
        if (rete_file_write_atomic(tdfile, line, strlen(line), 0644, &err) != RETE_OK)
            rete_err("%s", err.msg);
    }
    free(tdfile);
    free(tok);
    free(opcert);
    free(root);
    free(cadir);
    return rc;
}

void reted_datadir_server_tls_renew(reted *r)
{
    rete_error err = {0};
    rete_tls_ctx *ctx = reted_datadir_server_tls(r, &err);
    if (!ctx) {
        rete_err("ca: reted's own certificate: %s", err.msg);
        return;
    }
    rete_http_server_set_tls(r->xds, ctx);
    rete_tls_ctx_unref(r->xds_tls);
    r->xds_tls = ctx;
}

rete_tls_ctx *reted_datadir_server_tls(reted *r, rete_error *err)
{
    char spiffe[400];
    rete_spiffe_format(spiffe, sizeof(spiffe), r->trust_domain, RETE_ROOT_NS, RETE_CONTROL_SA);
    char *key = NULL;
    char *csr = rete_csr_new(spiffe, &key, err);
    if (!csr)
        return NULL;
    int64_t not_after;
    char *chain = rete_ca_sign_csr(r->ca, csr, strlen(csr), spiffe, 365 * 86400, &not_after, err);
    free(csr);
    if (!chain) {
        free(key);
        return NULL;
    }
    char *cert_path = reted_datadir_path(r->data_dir, "server.pem");
    char *key_path = reted_datadir_path(r->data_dir, "server-key.pem");
    char *bundle_path = reted_datadir_path(r->data_dir, "ca/bundle.pem");
    rete_tls_ctx *ctx = NULL;
    const char *bundle = rete_ca_bundle_pem(r->ca);
    rete_error werr = {0};
    if (rete_file_write_atomic(key_path, key, strlen(key), 0600, &werr) == RETE_OK &&
        rete_file_write_atomic(cert_path, chain, strlen(chain), 0644, &werr) == RETE_OK &&
        rete_file_write_atomic(bundle_path, bundle, strlen(bundle), 0644, &werr) == RETE_OK) {
        ctx = rete_tls_cp_server_ctx(cert_path, key_path, bundle_path, err);
    } else {
        rete_err("%s", werr.msg);
        rete_error_set(err, werr.code, "cannot write reted's certificate to %s", r->data_dir);
    }
    free(cert_path);
    free(key_path);
    free(bundle_path);
    free(chain);
    free(key);
    return ctx;
}

void reted_datadir_write_context(reted *r, const char *api, const char *xds)
{
    char *abs = realpath(r->data_dir, NULL);
    const char *dir = abs ? abs : r->data_dir;
    json_t *ctx = json_pack("{s:s,s:s,s:s,s:s}", "api", api, "xds", xds, "tokenFile",
                            "", "caFile", "");
    char *tok = reted_datadir_path(dir, "admin.token");
    char *ca = reted_datadir_path(dir, "ca/bundle.pem");
    json_object_set_new(ctx, "tokenFile", json_string(tok));
    json_object_set_new(ctx, "caFile", json_string(ca));
    char *text = json_dumps(ctx, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    char *local = reted_datadir_path(dir, "context.json");
    rete_error err = {0};
    if (rete_file_write_atomic(local, text, strlen(text), 0600, &err) != RETE_OK)
        rete_err("%s", err.msg);
    /* So that retectl finds a reted with no flags from anywhere: the user's
     * context is written when there is none, or when it already points at
     * this data directory (its tokenFile is ours: a restart on other
     * ports). Another reted started later (a second data dir, a test, a
     * demo) leaves it alone: retectl keeps talking to the reted the user
     * set up first, not silently to whichever started last. The data
     * dir's context.json is always current, for `retectl --context`. */
    const char *home = getenv("HOME");
    if (home && !getenv("RETED_NO_USER_CONTEXT")) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/.config/rete/context.json", home);
        json_t *cur = json_load_file(path, 0, NULL);
        const char *cur_tok = json_string_value(json_object_get(cur, "tokenFile"));
        if (access(path, F_OK) != 0 || (cur_tok && strcmp(cur_tok, tok) == 0)) {
            snprintf(path, sizeof(path), "%s/.config", home);
            mkdir(path, 0700);
            snprintf(path, sizeof(path), "%s/.config/rete", home);
            mkdir(path, 0700);
            snprintf(path, sizeof(path), "%s/.config/rete/context.json", home);
            if (rete_file_write_atomic(path, text, strlen(text), 0600, &err) != RETE_OK)
                rete_err("%s", err.msg);
        } else {
            rete_info("reted: not replacing %s: it points at another reted (%s); this one's is %s",
                      path, cur_tok ? cur_tok : "unreadable", local);
        }
        json_decref(cur);
    }
    free(local);
    free(text);
    free(ca);
    free(tok);
    json_decref(ctx);
    free(abs);
}

