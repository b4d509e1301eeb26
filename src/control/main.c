/* reted: the control plane. `reted init` makes a data directory (CA, admin
 * token, reted's own certificate); `reted --data-dir DIR` serves the
 * operator API (15014) and the proxy API (15012) from it, initialising it on
 * first start. docs/control-plane.md is the design. */
#include "alloc.h"
#include "api.h"
#include "ca.h"
#include "compiler.h"
#include "ca_shared.h"
#include "datadir.h"
#include "file.h"
#include "log.h"
#include "proxy_api.h"
#include "push.h"
#include "registry.h"
#include "replica.h"
#include "reted.h"
#include "scrape.h"
#include "spiffe.h"
#include "store_tool.h"
#include "token.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Descriptors kept out of the connection caps: the store (SQLite's
 * database, journal, WAL and shm), files reted writes, libuv's own (epoll,
 * signals, the EMFILE reserve) and the log. */
#define RETED_FD_RESERVE 64

static void usage(FILE *out)
{
    fprintf(out,
            "usage: reted [init] --data-dir DIR [options]\n"
            "\n"
            "  init                   create the data directory (CA, admin token) and exit;\n"
            "                         a first start does it too\n"
            "  -d, --data-dir DIR     where the store, the CA and the admin token live\n"
            "      --store STORE      sqlite:PATH (default: sqlite:DIR/store.db) or\n"
            "                         etcd://HOST:PORT[,HOST:PORT...]: replicas sharing etcd\n"
            "                         (docs/operations.md, \"Running reted on etcd\")\n"
            "      --etcd-cacert FILE talk TLS to etcd, verifying its members with this CA\n"
            "      --etcd-cert FILE, --etcd-key FILE   client certificate for etcd\n"
            "      --etcd-prefix P    key prefix in etcd (default /rete/)\n"
            "      --etcd-timeout DUR one call to etcd (default 5s)\n"
            "      --ca-key FILE      an operator CA's private key, kept outside the data dir\n"
            "                         (its certificate in DIR/ca/cert.pem; mode 0600)\n"
            "      --ca-kek FILE      share the CA through etcd, private keys sealed with this\n"
            "                         key-encryption key (32 bytes, or a passphrase of 16+\n"
            "                         characters); without it each replica uses its own ca/ files\n"
            "      --ca-kek-previous FILE   a former KEK, to open a record still sealed with it\n"
            "                         (a KEK rotation; repeatable, at most 4)\n"
            "  reted migrate|backup|restore|rekey ...: whole stores (reted migrate --help)\n"
            "      --api HOST:PORT    operator API, plain HTTP (default 127.0.0.1:" RETE_STR(RETE_PORT_OPERATOR_API) ")\n"
            "      --xds HOST:PORT    proxy API, TLS (default 127.0.0.1:" RETE_STR(RETE_PORT_PROXY_API) ")\n"
            "      --trust-domain TD  SPIFFE trust domain (default cluster.local; fixed at init)\n"
            "      --cert-ttl DUR     workload certificate lifetime (default 24h; e.g. 30s, 10m)\n"
            "      --grace DUR        how long a disconnected proxy stays registered (default 60s)\n"
            "      --stats-bucket DUR golden metrics: the width of a window's bucket (default 10s;\n"
            "                         the windows are 6 and 60 buckets: 1m and 10m)\n"
            "      --registration-address-check peer|off\n"
            "                         peer (default): a proxy registers only the address its\n"
            "                         connection comes from; off: behind NAT, trust the claim\n"
            "\n"
            "  limits (docs/operations.md, \"reted's limits\"):\n"
            "      --max-apply-body SIZE        POST /api/v1/apply body (default 16M)\n"
            "      --max-request-body SIZE      every other request body (default 64K)\n"
            "      --header-timeout DUR         TLS handshake and request head (default 15s)\n"
            "      --body-timeout DUR           request body after its head (default 60s)\n"
            "      --idle-timeout DUR           keep-alive between requests (default 60s)\n"
            "      --api-max-connections N      operator API connections (default 256)\n"
            "      --api-max-connections-per-source N   (default: the API's cap)\n"
            "      --xds-max-connections N      proxy API connections (default 16384, lowered\n"
            "                                   to fit the file limit)\n"
            "      --xds-max-connections-per-source N   (default 1024)\n"
            "  -l, --log-level LEVEL  error|warn|info|debug (default info)\n"
            "  -V, --version\n");
}

static int parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= hostlen)
        return -1;
    long p = strtol(colon + 1, NULL, 10);
    if (p <= 0 || p > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (uint16_t)p;
    return 0;
}

static int parse_duration(const char *s, uint32_t *out)
{
    char *end;
    double v = strtod(s, &end);
    double mult = 1;
    if (strcmp(end, "ms") == 0)
        mult = 0.001;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60;
    else if (strcmp(end, "h") == 0)
        mult = 3600;
    else
        return -1;
    if (v <= 0 || v * mult > 10 * 365 * 86400.0)
        return -1;
    *out = (uint32_t)(v * mult < 1 ? 1 : v * mult);
    return 0;
}

static int parse_duration_ms(const char *s, uint32_t *out)
{
    char *end;
    double v = strtod(s, &end);
    double mult = 1000;
    if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return -1;
    if (!(v * mult >= 1) || v * mult > 86400000.0)
        return -1;
    *out = (uint32_t)(v * mult);
    return 0;
}

/* "4096", "64K", "16M" (binary multiples), 1 byte to 1 GiB. */
static int parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned long long mult = 1;
    if (end == s)
        return -1;
    if (strcmp(end, "K") == 0 || strcmp(end, "k") == 0)
        mult = 1024;
    else if (strcmp(end, "M") == 0 || strcmp(end, "m") == 0)
        mult = 1024 * 1024;
    else if (*end != '\0')
        return -1;
    if (v == 0 || v > (1ull << 30) / mult)
        return -1;
    *out = (size_t)(v * mult);
    return 0;
}

static int parse_count(const char *s, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || v == 0 || v > 1000000)
        return -1;
    *out = (size_t)v;
    return 0;
}

/* The connection caps must fit the file limit with RETED_FD_RESERVE to
 * spare, so that a flood on one listener ends at its cap, not at EMFILE
 * for everything (20,500 idle connections to 15012 once took the operator
 * API and retectl down). The soft limit is raised to the hard one first;
 * caps left at their defaults are lowered to fit (the operator API keeps
 * a quarter), caps given as flags that do not fit are an error. */
static int fit_fd_limit(reted *r, bool api_set, bool xds_set)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0)
            return 0;
    }
    size_t fds = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)SIZE_MAX / 2 ? SIZE_MAX / 2
                                                                                 : (size_t)rl.rlim_cur;
    size_t avail = fds > RETED_FD_RESERVE ? fds - RETED_FD_RESERVE : 0;
    size_t *api = &r->api_limits.max_conns, *xds = &r->xds_limits.max_conns;
    if (*api + *xds <= avail)
        return 0;
    size_t api0 = *api, xds0 = *xds;
    if (!api_set && *api > avail / 4)
        *api = avail / 4;
    if (!xds_set)
        *xds = avail > *api ? avail - *api : 0;
    if (*api == 0 || *xds == 0 || *api + *xds > avail) {
        fprintf(stderr,
                "reted: --api-max-connections %zu and --xds-max-connections %zu need %zu file "
                "descriptors with %d kept for files, and the file limit is %zu: raise it (ulimit -n) "
                "or lower them\n",
                api0, xds0, api0 + xds0 + RETED_FD_RESERVE, RETED_FD_RESERVE, fds);
        return -1;
    }
    rete_warn("reted: the file limit is %zu: lowered the connection caps to fit (operator API %zu "
              "from %zu, proxy API %zu from %zu, %d kept for files)",
              fds, *api, api0, *xds, xds0, RETED_FD_RESERVE);
    return 0;
}

static void on_tick(uv_timer_t *t)
{
    reted_tick(t->data);
}

static void on_signal(uv_signal_t *s, int sig)
{
    reted *r = s->data;
    rete_info("reted: signal %d, stopping", sig);
    rete_http_server_close(r->api);
    rete_http_server_close(r->xds);
    uv_timer_stop(&r->tick);
    uv_close((uv_handle_t *)&r->tick, NULL);
    reted_push_close(r);
    reted_replica_close(r);
    uv_close((uv_handle_t *)&r->sigterm, NULL);
    uv_close((uv_handle_t *)&r->sigint, NULL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, 'd'}, {"api", required_argument, NULL, 'a'},
        {"xds", required_argument, NULL, 'x'},      {"trust-domain", required_argument, NULL, 't'},
        {"cert-ttl", required_argument, NULL, 'T'}, {"grace", required_argument, NULL, 'g'},
        {"registration-address-check", required_argument, NULL, 'R'},
        {"stats-bucket", required_argument, NULL, 271},
        {"log-level", required_argument, NULL, 'l'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {"max-apply-body", required_argument, NULL, 256},
        {"max-request-body", required_argument, NULL, 257},
        {"header-timeout", required_argument, NULL, 258},
        {"body-timeout", required_argument, NULL, 259},
        {"idle-timeout", required_argument, NULL, 260},
        {"api-max-connections", required_argument, NULL, 261},
        {"api-max-connections-per-source", required_argument, NULL, 262},
        {"xds-max-connections", required_argument, NULL, 263},
        {"xds-max-connections-per-source", required_argument, NULL, 264},
        {"store", required_argument, NULL, 265},
        {"etcd-cacert", required_argument, NULL, 266},
        {"etcd-cert", required_argument, NULL, 267},
        {"etcd-key", required_argument, NULL, 268},
        {"etcd-prefix", required_argument, NULL, 269},
        {"etcd-timeout", required_argument, NULL, 270},
        {"ca-kek", required_argument, NULL, 272},
        {"ca-kek-previous", required_argument, NULL, 274},
        {"ca-key", required_argument, NULL, 273},
        {NULL, 0, NULL, 0},
    };
    if (argc > 1 && (strcmp(argv[1], "migrate") == 0 || strcmp(argv[1], "backup") == 0 ||
                     strcmp(argv[1], "restore") == 0 || strcmp(argv[1], "rekey") == 0))
        return reted_store_tool(argc - 1, argv + 1);
    bool init_only = argc > 1 && strcmp(argv[1], "init") == 0;
    if (init_only) {
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    static reted r;
    const char *api = "127.0.0.1:" RETE_STR(RETE_PORT_OPERATOR_API),
               *xds = "127.0.0.1:" RETE_STR(RETE_PORT_PROXY_API), *td = NULL;
    r.cert_ttl = 24 * 3600;
    r.registry.grace_seconds = 60;
    /* Defaults: docs/operations.md, "reted's limits". */
    r.max_apply_body = 16u << 20;
    r.max_request_body = 64u << 10;
    uint32_t header_ms = 15000, body_ms = 60000, idle_ms = 60000;
    r.api_limits = (rete_http_limits){.max_conns = 256};
    r.xds_limits = (rete_http_limits){.max_conns = 16384, .max_conns_per_source = 1024};
    bool api_set = false, xds_set = false;
    uint32_t stats_bucket_s = RETE_GOLDEN_PERIOD_S;
    const char *store = NULL;
    rete_store_etcd_opts etcd = {.timeout_ms = 5000};
    uint32_t etcd_timeout = 5000;
    const char *kek_path = NULL, *kek_previous[RETED_KEK_PREVIOUS_MAX];
    size_t n_kek_previous = 0;
    static reted_keyring kek;
    int c;
    while ((c = getopt_long(argc, argv, "d:l:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'd': r.data_dir = optarg; break;
        case 'a': api = optarg; break;
        case 'x': xds = optarg; break;
        case 't': td = optarg; break;
        case 'T':
            if (parse_duration(optarg, &r.cert_ttl) < 0) {
                fprintf(stderr, "reted: bad --cert-ttl %s\n", optarg);
                return 2;
            }
            break;
        case 'g':
            if (parse_duration(optarg, &r.registry.grace_seconds) < 0) {
                fprintf(stderr, "reted: bad --grace %s\n", optarg);
                return 2;
            }
            break;
        case 271:
            if (parse_duration(optarg, &stats_bucket_s) < 0 || stats_bucket_s < 1 || stats_bucket_s > 3600) {
                fprintf(stderr, "reted: bad --stats-bucket %s (1s..1h)\n", optarg);
                return 2;
            }
            break;
        case 'R':
            if (strcmp(optarg, "peer") != 0 && strcmp(optarg, "off") != 0) {
                fprintf(stderr, "reted: --registration-address-check is peer or off, not %s\n", optarg);
                return 2;
            }
            r.registry.address_check_off = strcmp(optarg, "off") == 0;
            break;
        case 'l':
            if ((rete_log_level = rete_log_level_parse(optarg)) < 0) {
                fprintf(stderr, "reted: unknown log level %s\n", optarg);
                return 2;
            }
            break;
        case 256:
        case 257:
            if (parse_size(optarg, c == 256 ? &r.max_apply_body : &r.max_request_body) < 0) {
                fprintf(stderr, "reted: bad --%s %s (a size: 4096, 64K, 16M; at most 1G)\n",
                        c == 256 ? "max-apply-body" : "max-request-body", optarg);
                return 2;
            }
            break;
        case 258:
        case 259:
        case 260:
            if (parse_duration_ms(optarg, c == 258 ? &header_ms : c == 259 ? &body_ms : &idle_ms) < 0) {
                fprintf(stderr, "reted: bad --%s %s (a duration: 500ms, 15s, 2m; at most 24h)\n",
                        c == 258 ? "header-timeout" : c == 259 ? "body-timeout" : "idle-timeout",
                        optarg);
                return 2;
            }
            break;
        case 261:
        case 262:
        case 263:
        case 264: {
            size_t *dst = c == 261   ? &r.api_limits.max_conns
                          : c == 262 ? &r.api_limits.max_conns_per_source
                          : c == 263 ? &r.xds_limits.max_conns
                                     : &r.xds_limits.max_conns_per_source;
            if (parse_count(optarg, dst) < 0) {
                fprintf(stderr, "reted: bad connection count %s (1 to 1000000)\n", optarg);
                return 2;
            }
            api_set |= c == 261;
            xds_set |= c == 263;
            break;
        }
        case 265: store = optarg; break;
        case 266: etcd.cacert = optarg; break;
        case 267: etcd.cert = optarg; break;
        case 268: etcd.key = optarg; break;
        case 269: etcd.prefix = optarg; break;
        case 272: kek_path = optarg; break;
        case 274:
            if (n_kek_previous == RETED_KEK_PREVIOUS_MAX) {
                fprintf(stderr, "reted: at most %d --ca-kek-previous\n", RETED_KEK_PREVIOUS_MAX);
                return 2;
            }
            kek_previous[n_kek_previous++] = optarg;
            break;
        case 273: rete_ca_set_key_file(optarg); break;
        case 270:
            if (parse_duration_ms(optarg, &etcd_timeout) < 0 || etcd_timeout > 600000) {
                fprintf(stderr, "reted: bad --etcd-timeout %s (a duration: 500ms, 5s; at most 10m)\n", optarg);
                return 2;
            }
            etcd.timeout_ms = (int)etcd_timeout;
            break;
        case 'V': printf("reted %s\n", RETE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!r.data_dir || optind < argc) {
        usage(stderr);
        return 2;
    }
    bool on_etcd = store && strncmp(store, "etcd://", 7) == 0;
    if (store && !on_etcd && (strncmp(store, "sqlite:", 7) != 0 || !store[7])) {
        fprintf(stderr, "reted: --store is sqlite:PATH or etcd://HOST:PORT[,HOST:PORT...], not %s\n", store);
        return 2;
    }
    if (!on_etcd && (etcd.cacert || etcd.cert || etcd.key || etcd.prefix)) {
        fprintf(stderr, "reted: the --etcd-* flags need --store etcd://...\n");
        return 2;
    }
    if (kek_path && !on_etcd) {
        fprintf(stderr, "reted: --ca-kek shares the CA through etcd: it needs --store etcd://...\n");
        return 2;
    }
    if (n_kek_previous && !kek_path) {
        fprintf(stderr, "reted: --ca-kek-previous needs --ca-kek (the current key)\n");
        return 2;
    }
    rete_error e = {0};
    if (kek_path && reted_keyring_load(&kek, kek_path, kek_previous, n_kek_previous, &e) != RETE_OK) {
        fprintf(stderr, "reted: %s\n", e.msg);
        return 1;
    }
    /* The trust domain is fixed when the data directory is made (with
     * --ca-kek: when the first replica publishes the CA). */
    char *tdfile = reted_datadir_path(r.data_dir, "trust-domain");
    char *stored_td = kek_path ? NULL : reted_datadir_read_line(tdfile);
    if (stored_td && td && strcmp(stored_td, td) != 0) {
        fprintf(stderr, "reted: %s belongs to trust domain %s, not %s\n", r.data_dir, stored_td, td);
        free(tdfile);
        free(stored_td);
        return 1;
    }
    snprintf(r.trust_domain, sizeof(r.trust_domain), "%s", stored_td ? stored_td : td ? td : RETE_DEFAULT_TRUST_DOMAIN);
    free(stored_td);
    if (!kek_path) {
        int irc = reted_datadir_init(r.data_dir, r.trust_domain);
        if (irc < 0 || init_only) {
            free(tdfile);
            return irc < 0 ? 1 : 0;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    if (fit_fd_limit(&r, api_set, xds_set) < 0) {
        free(tdfile);
        return 1;
    }
    rete_http_limits *lims[2] = {&r.api_limits, &r.xds_limits};
    for (size_t i = 0; i < 2; i++) {
        lims[i]->header_timeout_ms = header_ms;
        lims[i]->body_timeout_ms = body_ms;
        lims[i]->idle_timeout_ms = idle_ms;
        if (!lims[i]->max_conns_per_source || lims[i]->max_conns_per_source > lims[i]->max_conns)
            lims[i]->max_conns_per_source = lims[i]->max_conns;
    }
    if (on_etcd) {
        etcd.endpoints = store + 7;
        r.store = rete_store_etcd_open(&etcd, &e);
    } else {
        char *dbpath = store ? rete_strdup(store + 7) : reted_datadir_path(r.data_dir, "store.db");
        r.store = rete_store_sqlite_open(dbpath, &e);
        free(dbpath);
    }
    if (!r.store) {
        fprintf(stderr, "reted: store: %s\n", e.msg);
        free(tdfile);
        return 1;
    }
    if (kek_path) {
        /* the store's CA (or this one, published, when it has none) */
        if (reted_ca_shared_start(r.store, &kek, r.data_dir, td, &r.ca_rev) < 0) {
            free(tdfile);
            return 1;
        }
        r.ca_kek = &kek;
        char *shared_td = reted_datadir_read_line(tdfile);
        snprintf(r.trust_domain, sizeof(r.trust_domain), "%s", shared_td ? shared_td : r.trust_domain);
        free(shared_td);
        if (init_only) {
            free(tdfile);
            return 0;
        }
    } else if (on_etcd) {
        rete_warn("reted: on etcd without --ca-kek: this replica uses the CA files of its own data directory "
                  "(%s/ca); every replica needs the same copy (docs/operations.md, \"The CA on etcd\")",
                  r.data_dir);
    }
    free(tdfile);
    char *cadir = reted_datadir_path(r.data_dir, "ca");
    r.ca = rete_ca_load(cadir, r.trust_domain, &e);
    free(cadir);
    if (!r.ca) {
        fprintf(stderr, "reted: CA: %s\n", e.msg);
        return 1;
    }
    char *tokpath = reted_datadir_path(r.data_dir, "admin.token");
    char *tok = reted_datadir_read_line(tokpath);
    free(tokpath);
    if (!tok) {
        fprintf(stderr, "reted: cannot read the admin token\n");
        return 1;
    }
    snprintf(r.admin_token, sizeof(r.admin_token), "%s", tok);
    free(tok);
    r.loop = uv_default_loop();
    r.iol.loop = r.loop;
    r.started_unix = reted_now();
    r.xds_tls = reted_datadir_server_tls(&r, &e);
    if (!r.xds_tls) {
        fprintf(stderr, "reted: TLS: %s\n", e.msg);
        return 1;
    }
    char host[256];
    uint16_t port;
    if (parse_hostport(api, host, sizeof(host), &port) < 0 ||
        !(r.api = rete_http_listen(&r.iol, host, port, NULL, r.max_request_body, reted_api_handle, &r,
                                   &e))) {
        fprintf(stderr, "reted: --api %s: %s\n", api, e.msg[0] ? e.msg : "expected HOST:PORT");
        return 1;
    }
    if (parse_hostport(xds, host, sizeof(host), &port) < 0 ||
        !(r.xds = rete_http_listen(&r.iol, host, port, r.xds_tls, r.max_request_body, reted_xds_handle,
                                   &r, &e))) {
        fprintf(stderr, "reted: --xds %s: %s\n", xds, e.msg[0] ? e.msg : "expected HOST:PORT");
        return 1;
    }
    rete_http_server_set_limits(r.api, &r.api_limits);
    rete_http_server_set_admit(r.api, reted_api_admit);
    rete_http_server_set_limits(r.xds, &r.xds_limits);
    rete_http_server_set_admit(r.xds, reted_xds_admit);
    reted_push_init(&r);
    uv_timer_init(r.loop, &r.tick);
    r.tick.data = &r;
    uv_timer_start(&r.tick, on_tick, 15000, 15000);
    uv_signal_init(r.loop, &r.sigterm);
    uv_signal_init(r.loop, &r.sigint);
    r.sigterm.data = r.sigint.data = &r;
    uv_signal_start(&r.sigterm, on_signal, SIGTERM);
    uv_signal_start(&r.sigint, on_signal, SIGINT);
    reted_stats_init(&r.stats);
    reted_golden_init(&r.golden, stats_bucket_s);
    reted_scrape_bind(&r);
    if (reted_replica_start(&r) < 0)
        return 1;
    reted_datadir_write_context(&r, api, xds);
    rete_info("reted %s ready: api http://%s, xds https://%s, trust domain %s, data %s, store %s", RETE_VERSION,
              api, xds, r.trust_domain, r.data_dir, on_etcd ? store : "sqlite");
    uv_run(r.loop, UV_RUN_DEFAULT);
    rete_ca_free(r.ca);
    r.store->ops->close(r.store);
    rete_tls_ctx_unref(r.xds_tls);
    reted_registry_free(&r);
    reted_cache_free(&r);
    reted_workload_ready_free(&r);
    reted_stats_free(&r.stats);
    reted_golden_free(&r.golden);
    uv_loop_close(r.loop);
    rete_info("reted stopped");
    return 0;
}
