/* token, proxy-status, proxy-config, check, identity, version. */
#include <errno.h>
#include <stdarg.h>
#include <strings.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "file.h"
#include "alloc.h"
#include "csr.h"
#include "spiffe.h"
#include "ctl.h"
#include "table.h"

/* ---- token create ---- */

int rete_ctl_cmd_token(rete_ctl *c)
{
    if (c->args.n_pos != 1 || strcmp(c->args.pos[0], "create") != 0)
        return rete_ctl_usage_error(c, "the only token subcommand is: token create");
    if (!c->args.ns || !c->args.sa)
        return rete_ctl_usage_error(c, "token create needs --namespace NS and --service-account "
                                       "SA");
    int64_t ttl = 3600, uses = 1;
    if (c->args.ttl && !rete_ctl_parse_duration(c->args.ttl, &ttl))
        return rete_ctl_usage_error(c, "bad --ttl \"%s\" (e.g. 90s, 30m, 1h, 2d)", c->args.ttl);
    if (c->args.uses) {
        char *end;
        errno = 0;
        long long u = strtoll(c->args.uses, &end, 10);
        if (*end || errno || u < 1 || u > 1000000)
            return rete_ctl_usage_error(c, "bad --uses \"%s\" (1..1000000)", c->args.uses);
        uses = u;
    }
    json_t *req = json_pack("{s:s, s:s, s:I, s:I}", "namespace", c->args.ns, "serviceAccount",
                            c->args.sa, "ttlSeconds", (json_int_t)ttl, "uses", (json_int_t)uses);
    json_t *j = NULL;
    rete_ctl_response resp;
    int st = rete_ctl_call_json(c, "POST", "/api/v1/tokens", req, &j, &resp);
    json_decref(req);
    if (st < 0)
        return CTL_EXIT_FAIL;
    int rc = CTL_EXIT_FAIL;
    const char *tok = json_string_value(json_object_get(j, "token"));
    if ((st == 200 || st == 201) && tok) {
        printf("%s\n", tok);
        rc = CTL_EXIT_OK;
    } else if (st == 200 || st == 201) {
        fprintf(stderr, "error: reted's answer has no \"token\"\n");
    } else {
        rete_ctl_print_server_error(&resp);
    }
    json_decref(j);
    rete_ctl_response_free(&resp);
    return rc;
}

/* ---- proxies ---- */

static const json_t *pfield(const json_t *p, const char *const *keys)
{
    const json_t *v = rete_ctl_get_any(p, keys);
    if (!v)
        v = rete_ctl_get_any(json_object_get(p, "workload"), keys);
    return v;
}

static const char *pstr(const json_t *p, const char *const *keys)
{
    const char *s = json_string_value(pfield(p, keys));
    return s ? s : "";
}

static const char *const K_NAME[] = {"name", NULL};
static const char *const K_NS[] = {"namespace", NULL};
static const char *const K_ADDR[] = {"address", NULL};
static const char *const K_SENT[] = {"versionSent", "sentVersion", "sent", "version", NULL};
static const char *const K_ACKED[] = {"versionAcked", "ackedVersion", "acked", NULL};
static const char *const K_ERR[] = {"nackError", "error", "lastError", NULL};
static const char *const K_STATUS[] = {"status", "state", NULL};
static const char *const K_CERT[] = {"certExpiresAt", "certExpiry", "certNotAfter", NULL};
static const char *const K_SEEN[] = {"lastSeen", "lastSeenAt", NULL};

static void version_str(const json_t *v, char *buf, size_t len)
{
    if (json_is_integer(v))
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_string(v))
        snprintf(buf, len, "%s", json_string_value(v));
    else
        snprintf(buf, len, "-");
}

void rete_ctl_proxy_state(const json_t *p, char *buf, size_t len)
{
    const char *status = pstr(p, K_STATUS);
    const char *err = pstr(p, K_ERR);
    const json_t *connected = pfield(p, (const char *const[]){"connected", NULL});
    char sent[32], acked[32];
    version_str(pfield(p, K_SENT), sent, sizeof(sent));
    version_str(pfield(p, K_ACKED), acked, sizeof(acked));
    if (strcasecmp(status, "NACK") == 0 ||
        (*err && strcasecmp(status, "ACK") != 0 && strcasecmp(status, "SYNCED") != 0))
        snprintf(buf, len, "NACK: %s", *err ? err : "rejected");
    else if (json_is_false(connected))
        snprintf(buf, len, "DISCONNECTED");
    else if (strcmp(sent, acked) == 0 && strcmp(sent, "-") != 0)
        snprintf(buf, len, "SYNCED");
    else
        snprintf(buf, len, "STALE");
}

static json_t *fetch_proxies(rete_ctl *c)
{
    return rete_ctl_get_list(c, "/api/v1/proxies", (const char *const[]){"proxies", "items", NULL},
                             "reted's /api/v1/proxies answer has no list of proxies");
}

/* "mesh: 40 svc, 1042 res" (whole mesh) or "3 svc, 12 res"; "-" before any push. */
static void scope_str(const json_t *scope, char *buf, size_t size)
{
    if (!json_is_object(scope)) {
        snprintf(buf, size, "-");
        return;
    }
    long long res = (long long)json_integer_value(json_object_get(scope, "resources"));
    snprintf(buf, size, "%s%lld svc, %lld res",
             json_is_true(json_object_get(scope, "wholeMesh")) ? "mesh: " : "",
             (long long)json_integer_value(json_object_get(scope, "services")), res);
}

int rete_ctl_cmd_proxy_status(rete_ctl *c)
{
    if (c->args.n_pos)
        return rete_ctl_usage_error(c, "unexpected argument \"%s\"", c->args.pos[0]);
    json_t *list = fetch_proxies(c);
    if (!list)
        return CTL_EXIT_FAIL;
    const char *o = c->args.output;
    if (o && !strcmp(o, "json")) {
        rete_ctl_print_json(list);
        json_decref(list);
        return CTL_EXIT_OK;
    }
    if (o && !strcmp(o, "yaml")) {
        rete_ctl_print_yaml(list);
        json_decref(list);
        return CTL_EXIT_OK;
    }
    if (json_array_size(list) == 0) {
        fprintf(stderr, "No proxies have connected to reted.\n");
        json_decref(list);
        return CTL_EXIT_OK;
    }
    rete_ctl_table t;
    const char *hdr[] = {"NAME",   "NAMESPACE", "ADDRESS",      "VERSION",
                         "STATUS", "SCOPE",     "CERT EXPIRES", "LAST SEEN"};
    rete_ctl_table_init(&t, 8);
    rete_ctl_table_add_row(&t, hdr);
    time_t now = time(NULL), when;
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p)
    {
        char sent[32], acked[32], ver[80], state[512], cert[48], seen[48], scope[64];
        scope_str(json_object_get(p, "scope"), scope, sizeof(scope));
        version_str(pfield(p, K_SENT), sent, sizeof(sent));
        version_str(pfield(p, K_ACKED), acked, sizeof(acked));
        snprintf(ver, sizeof(ver), "%s/%s", sent, acked);
        rete_ctl_proxy_state(p, state, sizeof(state));
        if (rete_ctl_json_time(pfield(p, K_CERT), &when)) {
            if (when <= now)
                snprintf(cert, sizeof(cert), "EXPIRED");
            else {
                char age[32];
                rete_ctl_format_age((int64_t)(when - now), age, sizeof(age));
                snprintf(cert, sizeof(cert), "in %s", age);
            }
        } else {
            snprintf(cert, sizeof(cert), "-");
        }
        if (rete_ctl_json_time(pfield(p, K_SEEN), &when)) {
            char age[32];
            rete_ctl_format_age((int64_t)(now - when), age, sizeof(age));
            snprintf(seen, sizeof(seen), "%s ago", age);
        } else {
            snprintf(seen, sizeof(seen), "-");
        }
        const char *row[] = {
            pstr(p, K_NAME), pstr(p, K_NS), pstr(p, K_ADDR), ver, state, scope, cert, seen};
        rete_ctl_table_add_row(&t, row);
    }
    rete_ctl_table_print(&t, stdout);
    rete_ctl_table_free(&t);
    json_decref(list);
    return CTL_EXIT_OK;
}

int rete_ctl_cmd_proxy_config(rete_ctl *c)
{
    if (c->args.n_pos != 1)
        return rete_ctl_usage_error(c, "proxy-config needs exactly one WORKLOAD name");
    const char *o = c->args.output ? c->args.output : "yaml";
    if (strcmp(o, "json") && strcmp(o, "yaml"))
        return rete_ctl_usage_error(c, "proxy-config prints json or yaml, not \"%s\"", o);
    char *ns = rete_ctl_urlencode(rete_ctl_ns(c)), *name = rete_ctl_urlencode(c->args.pos[0]);
    size_t plen = strlen(ns) + strlen(name) + 40;
    char *path = rete_malloc(plen);
    snprintf(path, plen, "/api/v1/proxies/%s/%s/config", ns, name);
    free(ns);
    free(name);
    json_t *j = NULL;
    rete_ctl_response resp;
    int st = rete_ctl_call_json(c, "GET", path, NULL, &j, &resp);
    free(path);
    if (st < 0)
        return CTL_EXIT_FAIL;
    int rc = CTL_EXIT_FAIL;
    if (st == 404) {
        fprintf(stderr,
                "Error from server (NotFound): no proxy \"%s\" in namespace \"%s\" (see "
                "retectl proxy-status)\n",
                c->args.pos[0], rete_ctl_ns(c));
    } else if (st != 200) {
        rete_ctl_print_server_error(&resp);
    } else if (!j) {
        fwrite(resp.body, 1, resp.body_len, stdout);
        rc = CTL_EXIT_OK;
    } else {
        rc = !strcmp(o, "json") ? rete_ctl_print_json(j) : rete_ctl_print_yaml(j);
    }
    json_decref(j);
    rete_ctl_response_free(&resp);
    return rc;
}

/* ---- check ---- */

#define CHECK_OK "\xe2\x9c\x94"   /* ✔ */
#define CHECK_FAIL "\xe2\x9c\x98" /* ✘ */
#define CHECK_WARN "\xe2\x80\xbc" /* ‼ */
#define CA_WARN_DAYS 7
#define MAX_SKEW 30

static void report(bool ok, int *failed, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(bool ok, int *failed, const char *fmt, ...)
{
    va_list ap;
    printf("%s ", ok ? CHECK_OK : CHECK_FAIL);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!ok)
        (*failed)++;
}

static bool find_ca_expiry(const json_t *j, time_t *t)
{
    static const char *const top[] = {"caValidUntil", "caNotAfter", "caExpiresAt", NULL};
    static const char *const inner[] = {"validUntil", "notAfter", "expiresAt", NULL};
    if (rete_ctl_json_time(rete_ctl_get_any(j, top), t))
        return true;
    if (rete_ctl_json_time(rete_ctl_get_any(json_object_get(j, "ca"), inner), t))
        return true;
    /* reted's check list: {"name": "certificate authority", "detail": "root
     * valid until <unix time>"} */
    size_t i;
    json_t *chk;
    json_array_foreach(json_object_get(j, "checks"), i, chk)
    {
        const char *d = json_string_value(json_object_get(chk, "detail"));
        const char *at = d ? strstr(d, "valid until ") : NULL;
        if (!at)
            continue;
        char *end;
        long long v = strtoll(at + 12, &end, 10);
        if (end != at + 12 && v > 0) {
            *t = (time_t)v;
            return true;
        }
        if (rete_ctl_parse_time(at + 12, t))
            return true;
    }
    return false;
}

/* Every replica of the context, each asked for its check directly: reachable
 * or not, its store's revision and health, who it says leads. A replica down
 * is a warning while another answers (the mesh keeps working); none
 * answering fails the check. */
static void check_replicas(rete_ctl *c, int *failed)
{
    printf("replicas\n--------\n");
    size_t up = 0;
    for (size_t i = 0; i < c->ctx.n_servers; i++) {
        rete_ctl_http h = c->http;
        h.server = c->ctx.servers[i];
        rete_ctl_response resp = {0};
        rete_error err = {0};
        if (rete_ctl_http_do(&h, "GET", "/api/v1/check", NULL, NULL, 0, &resp, &err) != RETE_OK) {
            printf("%s %s unreachable: %s\n", CHECK_WARN, h.server, err.msg);
            continue;
        }
        json_t *j = resp.status == 200 ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
        json_t *rep = json_object_get(j, "replica");
        bool store_ok = true;
        size_t k;
        json_t *chk;
        json_array_foreach(json_object_get(j, "checks"), k, chk)
        {
            const char *name = json_string_value(json_object_get(chk, "name"));
            if (name && !strcmp(name, "store"))
                store_ok = json_is_true(json_object_get(chk, "ok"));
        }
        if (!j) {
            printf("%s %s answered %d %s\n", CHECK_WARN, h.server, resp.status, resp.reason);
        } else {
            up++;
            const char *leader = json_string_value(json_object_get(rep, "leaderId"));
            report(store_ok, failed, "%s: replica %s, store %s%s revision %lld, %s", h.server,
                   json_string_value(json_object_get(rep, "id")) ? json_string_value(json_object_get(rep, "id")) : "?",
                   json_string_value(json_object_get(rep, "store")) ? json_string_value(json_object_get(rep, "store"))
                                                                     : "?",
                   store_ok ? " answering," : " NOT ANSWERING,",
                   (long long)json_integer_value(json_object_get(j, "revision")),
                   json_is_true(json_object_get(rep, "leader")) ? "the leader"
                   : leader && *leader                          ? "follows"
                                                                : "no leader known");
            if (!json_is_true(json_object_get(rep, "leader")) && leader && *leader)
                printf("    leader: %s\n", leader);
        }
        json_decref(j);
        rete_ctl_response_free(&resp);
    }
    report(up > 0, failed, "%zu of %zu replicas answer", up, c->ctx.n_servers);
    printf("\n");
}

int rete_ctl_cmd_check(rete_ctl *c)
{
    int failed = 0;
    if (c->args.n_pos)
        return rete_ctl_usage_error(c, "unexpected argument \"%s\"", c->args.pos[0]);
    if (c->ctx.n_servers > 1)
        check_replicas(c, &failed);
    printf("reted\n-----\n");
    json_t *j = NULL;
    rete_ctl_response resp;
    int st = rete_ctl_call_json(c, "GET", "/api/v1/check", NULL, &j, &resp);
    if (st < 0) {
        report(false, &failed, "reted is reachable at %s", c->ctx.server);
        printf("\nStatus check results are %s\n", CHECK_FAIL);
        return CTL_EXIT_FAIL;
    }
    report(true, &failed, "reted is reachable at %s", c->http.server);
    report(st == 200, &failed, "the operator API answers (%d %s)", st, resp.reason);
    json_t *rep = json_object_get(j, "replica");
    if (json_is_object(rep)) {
        const char *leader = json_string_value(json_object_get(rep, "leaderId"));
        printf("%s replica %s on %s; leader: %s\n", CHECK_OK, json_string_value(json_object_get(rep, "id")),
               json_string_value(json_object_get(rep, "store")),
               json_is_true(json_object_get(rep, "leader")) ? "this replica"
               : leader && *leader                          ? leader
                                                            : "none known");
    }

    time_t server_now, now = time(NULL);
    /* reted's clock: its Date header (RFC 9110 §6.6.1), else its "time" */
    if (rete_ctl_parse_http_date(resp.date, &server_now) ||
        rete_ctl_json_time(json_object_get(j, "time"), &server_now)) {
        long long skew = (long long)(now - server_now);
        report(llabs(skew) <= MAX_SKEW, &failed,
               "clocks agree (retectl and reted differ by %llds; at most %ds allowed)", skew,
               MAX_SKEW);
    } else {
        printf("%s cannot compare clocks: reted sent no Date header and no \"time\"\n", CHECK_WARN);
    }

    /* reted's own checks, as it reports them */
    size_t i;
    json_t *chk;
    json_array_foreach(json_object_get(j, "checks"), i, chk)
    {
        const char *name = json_string_value(json_object_get(chk, "name"));
        const char *msg = json_string_value(
            rete_ctl_get_any(chk, (const char *const[]){"message", "detail", "error", NULL}));
        const json_t *ok = rete_ctl_get_any(chk, (const char *const[]){"ok", "passed", NULL});
        if (!ok) {
            const char *status = json_string_value(json_object_get(chk, "status"));
            ok = (status && (!strcasecmp(status, "ok") || !strcasecmp(status, "pass")))
                     ? json_true()
                     : json_false();
        }
        report(json_is_true(ok), &failed, "%s%s%s", name ? name : "check", msg ? ": " : "",
               msg ? msg : "");
    }
    if (json_is_object(json_object_get(j, "store")) ||
        json_is_boolean(json_object_get(j, "store"))) {
        const json_t *s = json_object_get(j, "store");
        bool ok = json_is_true(s) || json_is_true(json_object_get(s, "ok"));
        report(ok, &failed, "the store is usable");
    }

    time_t ca;
    if (find_ca_expiry(j, &ca)) {
        char age[32], when[64];
        struct tm tm;
        gmtime_r(&ca, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        rete_ctl_format_age((int64_t)(ca - now), age, sizeof(age));
        if (ca <= now)
            report(false, &failed, "the CA certificate is valid (it EXPIRED at %s)", when);
        else
            report(ca - now >= CA_WARN_DAYS * 86400, &failed,
                   "the CA certificate is valid for more than %d days (until %s, %s left)",
                   CA_WARN_DAYS, when, age);
    } else if (st == 200) {
        report(false, &failed, "the CA certificate is valid (reted did not say until when)");
    }
    json_decref(j);
    rete_ctl_response_free(&resp);

    if (st == 200) {
        printf("\nproxies\n-------\n");
        json_t *list = fetch_proxies(c);
        if (!list) {
            report(false, &failed, "the proxy list can be read");
        } else {
            size_t n = json_array_size(list), synced = 0;
            json_t *p;
            json_array_foreach(list, i, p)
            {
                char state[512];
                rete_ctl_proxy_state(p, state, sizeof(state));
                if (!strcmp(state, "SYNCED"))
                    synced++;
                else
                    report(false, &failed, "proxy %s/%s is in sync (%s)", pstr(p, K_NS),
                           pstr(p, K_NAME), state);
            }
            if (synced == n)
                report(true, &failed, "every proxy is in sync (%zu connected)", n);
            json_decref(list);
        }
    }
    printf("\nStatus check results are %s\n", failed ? CHECK_FAIL : CHECK_OK);
    return failed ? CTL_EXIT_FAIL : CTL_EXIT_OK;
}

/* ---- identity issue ---- */

int rete_ctl_cmd_identity(rete_ctl *c)
{
    if (c->args.n_pos != 1 || strcmp(c->args.pos[0], "issue") != 0)
        return rete_ctl_usage_error(c, "the only identity subcommand is: identity issue");
    if (!c->args.token || !c->args.out)
        return rete_ctl_usage_error(c, "identity issue needs --token TOKEN and --out DIR");
    rete_error err = {0};
    char *key = NULL;
    /* reted names the certificate after the token's namespace and service
     * account whatever the CSR asks; without --spiffe-id the CSR carries a
     * placeholder that says so. */
    const char *want = c->args.spiffe_id ? c->args.spiffe_id
                                         : RETE_SPIFFE_SCHEME
                           "rete.invalid/ns/from-token/sa/from-token";
    char *csr = rete_csr_new(want, &key, &err);
    if (!csr) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CTL_EXIT_FAIL;
    }
    json_t *req = json_pack("{s:s, s:s}", "token", c->args.token, "csr", csr);
    if (c->args.spiffe_id)
        json_object_set_new(req, "spiffeId", json_string(c->args.spiffe_id));
    json_t *j = NULL;
    rete_ctl_response resp;
    int rc = CTL_EXIT_FAIL;
    int st = rete_ctl_call_json(c, "POST", "/api/v1/identity", req, &j, &resp);
    json_decref(req);
    free(csr);
    if (st < 0)
        goto out;
    if (st != 200 && st != 201) {
        rete_ctl_print_server_error(&resp);
        goto out_resp;
    }
    const char *chain = json_string_value(
        rete_ctl_get_any(j, (const char *const[]){"certChain", "cert", "certificate", NULL}));
    const char *bundle = json_string_value(
        rete_ctl_get_any(j, (const char *const[]){"trustBundle", "bundle", "caBundle", NULL}));
    if (!chain) {
        fprintf(stderr, "error: reted's answer has no \"certChain\"\n");
        goto out_resp;
    }
    if (mkdir(c->args.out, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "error: %s: %s\n", c->args.out, strerror(errno));
        goto out_resp;
    }
    const struct {
        const char *name, *data;
        mode_t mode;
    } files[] = {{"key.pem", key, 0600}, {"cert.pem", chain, 0644}, {"bundle.pem", bundle, 0644}};
    for (size_t i = 0; i < sizeof files / sizeof files[0] && files[i].data; i++) {
        char path[PATH_MAX];
        int n = snprintf(path, sizeof path, "%s/%s", c->args.out, files[i].name);
        rete_rc wrc = n < 0 || (size_t)n >= sizeof path
                          ? rete_error_set(&err, RETE_EINVAL, "%s/%s: path too long", c->args.out,
                                           files[i].name)
                          : rete_file_write_atomic(path, files[i].data, strlen(files[i].data),
                                                   files[i].mode, &err);
        if (wrc != RETE_OK) {
            fprintf(stderr, "error: %s\n", err.msg);
            goto out_resp;
        }
    }
    printf("wrote %s/cert.pem, %s/key.pem (0600)%s%s%s\n", c->args.out, c->args.out,
           bundle ? ", " : "", bundle ? c->args.out : "", bundle ? "/bundle.pem" : "");
    time_t exp;
    if (rete_ctl_json_time(json_object_get(j, "expiresAt"), &exp)) {
        char when[64];
        struct tm tm;
        gmtime_r(&exp, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("certificate expires %s\n", when);
    }
    rc = CTL_EXIT_OK;
out_resp:
    rete_ctl_response_free(&resp);
out:
    json_decref(j);
    if (key) {
        explicit_bzero(key, strlen(key));
        free(key);
    }
    return rc;
}

/* ---- version ---- */

int rete_ctl_cmd_version(rete_ctl *c)
{
    printf("retectl version %s\n", RETE_VERSION);
    rete_ctl_response resp;
    rete_error err = {0};
    memset(&resp, 0, sizeof(resp));
    if (rete_ctl_http_do(&c->http, "GET", "/version", NULL, NULL, 0, &resp, &err) < 0) {
        printf("reted   unreachable at %s (%s)\n", c->ctx.server, err.msg);
        return CTL_EXIT_OK;
    }
    if (resp.status != 200) {
        printf("reted   at %s answered %d %s to /version\n", c->ctx.server, resp.status,
               resp.reason);
    } else {
        json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
        const char *v = json_string_value(json_object_get(j, "version"));
        if (v) {
            printf("reted   version %s (%s)\n", v, c->ctx.server);
        } else {
            size_t n = resp.body_len;
            while (n && (resp.body[n - 1] == '\n' || resp.body[n - 1] == '\r'))
                n--;
            printf("reted   %.*s (%s)\n", (int)n, resp.body, c->ctx.server);
        }
        json_decref(j);
    }
    rete_ctl_response_free(&resp);
    return CTL_EXIT_OK;
}
