/* rete-proxy: the sidecar. Loads a static configuration (the control plane
 * feeds the same model later), starts worker threads, reloads on SIGHUP,
 * drains on SIGTERM, and with `run -- CMD` starts the app only once the proxy
 * is ready and exits with the app's exit code. */
#include "alloc.h"
#include "codecs.h"
#include "config.h"
#include "cp_client.h"
#include "defaults.h"
#include "dispatch.h"
#include "dns.h"
#include "golden.h"
#include "filter.h"
#include "init.h"
#include "log.h"
#include "proxy.h"
#include "worker.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>



static void usage(FILE *out)
{
    fprintf(out,
            "usage: rete-proxy --config FILE [options]\n"
            "       rete-proxy run --config FILE [options] -- CMD [ARGS...]\n"
            "       rete-proxy --check-config FILE\n"
            "       rete-proxy init [options]   interception rules (rete-proxy init --help)\n"
            "\n"
            "options:\n"
            "  -c, --config FILE        static configuration (YAML; see docs/proxy.md)\n"
            "  -n, --concurrency N      worker threads (default: spec.concurrency, else 1)\n"
            "  -l, --log-level LEVEL    error|warn|info|debug|trace (default info)\n"
            "  -a, --access-log PATH    one JSON line per request; '-' for stdout\n"
            "      --access-log-fields F,...  the fields, in order (default all; docs/observability.md)\n"
            "      --access-log-sample PCT    log PCT%% of successful requests (errors always; default 100)\n"
            "      --trace-queue-spans N      finished spans waiting for export at most (default 2048)\n"
            "      --trace-batch-spans N      spans per POST to the collector at most (default 256)\n"
            "      --check-config FILE  validate FILE and exit (0 valid, 1 invalid)\n"
            "\n"
            "control plane (instead of --config, or with it for the Proxy document):\n"
            "      --control-plane HOST:PORT[,HOST:PORT...]  reted's proxy API (" RETE_STR(RETE_PORT_PROXY_API) "):\n"
            "                           every replica (a name: each of its addresses); the\n"
            "                           proxy moves to the next when one fails\n"
            "      --token-file F       join token for the first certificate\n"
            "      --ca-file F          the mesh trust bundle (reted's ca/bundle.pem)\n"
            "      --data-dir DIR       certificate, key and last good configuration\n"
            "      --namespace NS --service-account SA --name WORKLOAD --address IP\n"
            "      --inbound PORT[/HTTP|HTTP2|GRPC|TCP]  an app port (repeatable)\n"
            "      --app-address IP     where the app listens (default --address)\n"
            "      --label KEY=VALUE    workload label (repeatable)\n"
            "      --egress NS/NAME     a Service this workload calls (repeatable; '.' = own\n"
            "                           namespace, '*' = any): reted sends only those\n"
            "                           (default: MeshConfig defaultEgress, the whole mesh)\n"
            "      --trust-domain TD    (default cluster.local)\n"
            "      --stats-interval S   golden-metrics summary to reted every S seconds\n"
            "                           (1..3600, 0 none; default " RETE_STR(RETE_GOLDEN_PERIOD_S) ")\n"
            "  -V, --version            print the version\n"
            "  -h, --help               this text\n"
            "\n"
            "signals: SIGHUP reloads the configuration file (a bad file is rejected and the\n"
            "running configuration stays); SIGTERM/SIGINT drain: stop accepting, finish\n"
            "in-flight requests within spec.limits.drainTimeout, exit.\n");
}

static rete_dns *the_dns;

/* With the first snapshot: the DNS listener, when spec.dns asks for one. */
static int start_dns(rete_proxy *p)
{
    if (!p->cfg->proxy.dns.enabled)
        return 0;
    rete_error err = {0};
    the_dns = rete_dns_start(p, &err);
    if (!the_dns) {
        rete_err("%s", err.msg);
        return -1;
    }
    return 0;
}

static rete_config *load(const char *path, uint64_t version, rete_tls_set **tls)
{
    rete_config_error err;
    rete_config *cfg = rete_config_load_file(path, version, &err);
    if (!cfg) {
        char msg[1024];
        rete_config_error_format(&err, msg, sizeof(msg));
        rete_err("configuration rejected: %s", msg);
        snprintf(rete_the_proxy->last_reload_error, sizeof(rete_the_proxy->last_reload_error), "%s", msg);
        return NULL;
    }
    rete_error terr = {0};
    *tls = rete_tls_set_build(cfg, &terr);
    if (!*tls) {
        rete_err("configuration rejected: %s", terr.msg);
        snprintf(rete_the_proxy->last_reload_error, sizeof(rete_the_proxy->last_reload_error), "%s", terr.msg);
        rete_config_unref(cfg);
        return NULL;
    }
    return cfg;
}

static bool control_plane_mode;

static void on_sighup(uv_signal_t *s, int sig)
{
    (void)sig;
    rete_proxy *p = s->data;
    if (control_plane_mode) {
        rete_info("reload: SIGHUP ignored, the control plane pushes the configuration");
        return;
    }
    rete_tls_set *tls = NULL;
    rete_config *cfg = load(p->config_path, p->cfg->version + 1, &tls);
    rete_error err = {0};
    if (cfg && rete_proxy_can_reload(p, cfg, &err) != RETE_OK) {
        rete_err("configuration rejected: %s", err.msg);
        snprintf(p->last_reload_error, sizeof(p->last_reload_error), "%s", err.msg);
        rete_tls_set_unref(tls);
        rete_config_unref(cfg);
        cfg = NULL;
    }
    if (!cfg) {
        rete_proxy_count_reload(p, false);
        rete_warn("reload: keeping configuration version %llu", (unsigned long long)p->cfg->version);
        return;
    }
    rete_proxy_install(p, cfg, tls);
    rete_info("reload: configuration version %llu in use", (unsigned long long)cfg->version);
}

static void on_sigterm(uv_signal_t *s, int sig)
{
    rete_proxy *p = s->data;
    if (rete_proxy_signal_child(p, sig))
        return; /* the app decides when to go; we drain once it has exited */
    rete_proxy_drain(p);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"concurrency", required_argument, NULL, 'n'},
        {"log-level", required_argument, NULL, 'l'}, {"access-log", required_argument, NULL, 'a'},
        {"check-config", required_argument, NULL, 'k'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {"control-plane", required_argument, NULL, 'C'}, {"token-file", required_argument, NULL, 'K'},
        {"ca-file", required_argument, NULL, 'A'},   {"data-dir", required_argument, NULL, 'D'},
        {"namespace", required_argument, NULL, 'N'}, {"service-account", required_argument, NULL, 'S'},
        {"name", required_argument, NULL, 'W'},      {"address", required_argument, NULL, 'I'},
        {"app-address", required_argument, NULL, 'P'}, {"inbound", required_argument, NULL, 'B'},
        {"label", required_argument, NULL, 'L'},     {"trust-domain", required_argument, NULL, 'T'},
        {"egress", required_argument, NULL, 'E'},
        {"access-log-fields", required_argument, NULL, 'F'}, {"access-log-sample", required_argument, NULL, 'G'},
        {"trace-queue-spans", required_argument, NULL, 'Q'}, {"trace-batch-spans", required_argument, NULL, 'J'},
        {"stats-interval", required_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    static rete_cp_opts cpo;
    const char *check_path = NULL;
    const char *app_address = NULL;
    json_t *inbound = NULL, *labels = NULL; /* made when a flag needs them */
    static const char *egress[64];
    size_t n_egress = 0;
    /* Static, so already zero: no memset, which would touch (make resident)
     * every page of the main loop's 192 KB of I/O buffers (proxy.iol), used
     * only by the control-plane client. */
    static rete_proxy proxy;
    rete_the_proxy = &proxy;
    if (argc > 1 && strcmp(argv[1], "init") == 0)
        return rete_init_main(argc - 1, argv + 1);
    bool run_mode = argc > 1 && strcmp(argv[1], "run") == 0;
    if (run_mode) {
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    long concurrency = 0;
    cpo.stats_interval_s = RETE_GOLDEN_PERIOD_S;
    rete_access_log_opts alo = {.sample_percent = 100};
    rete_trace_opts tro = {.queue_spans = RETE_TRACE_QUEUE_DEFAULT, .batch_spans = RETE_TRACE_BATCH_DEFAULT};
    int c;
    while ((c = getopt_long(argc, argv, "+c:n:l:a:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            proxy.config_path = optarg;
            break;
        case 'n':
            concurrency = strtol(optarg, NULL, 10);
            if (concurrency < 1 || concurrency > 256) {
                fprintf(stderr, "rete-proxy: --concurrency must be 1..256\n");
                return 2;
            }
            break;
        case 'l':
            if ((rete_log_level = rete_log_level_parse(optarg)) < 0) {
                fprintf(stderr, "rete-proxy: unknown log level %s\n", optarg);
                return 2;
            }
            break;
        case 'a':
            alo.path = optarg;
            break;
        case 'F':
            alo.fields = optarg;
            break;
        case 'G': {
            char *end;
            alo.sample_percent = strtod(optarg, &end);
            if (end == optarg || *end) {
                fprintf(stderr, "rete-proxy: --access-log-sample: %s is not a number\n", optarg);
                return 2;
            }
            break;
        }
        case 'Q':
        case 'J': {
            char *end;
            long long v = strtoll(optarg, &end, 10);
            if (end == optarg || *end || v < 1) {
                fprintf(stderr, "rete-proxy: --%s: %s is not a positive number\n",
                        c == 'Q' ? "trace-queue-spans" : "trace-batch-spans", optarg);
                return 2;
            }
            *(c == 'Q' ? &tro.queue_spans : &tro.batch_spans) = (size_t)v;
            break;
        }
        case 'U': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end || v < 0 || v > 3600) {
                fprintf(stderr, "rete-proxy: --stats-interval: %s is not 0..3600 seconds\n", optarg);
                return 2;
            }
            cpo.stats_interval_s = (uint32_t)v;
            break;
        }
        case 'k':
            check_path = optarg;
            break;
        case 'C': cpo.server = optarg; break;
        case 'K': cpo.token_file = optarg; break;
        case 'A': cpo.ca_file = optarg; break;
        case 'D': cpo.data_dir = optarg; break;
        case 'N': cpo.ns = optarg; break;
        case 'S': cpo.sa = optarg; break;
        case 'W': cpo.name = optarg; break;
        case 'I': cpo.address = optarg; break;
        case 'P': app_address = optarg; break;
        case 'T': cpo.trust_domain = optarg; break;
        case 'B': {
            /* PORT[/PROTOCOL] */
            char *slash = strchr(optarg, '/');
            long port = strtol(optarg, NULL, 10);
            if (port < 1 || port > 65535) {
                fprintf(stderr, "rete-proxy: --inbound PORT[/HTTP|HTTP2|GRPC|TCP]\n");
                return 2;
            }
            if (!inbound)
                inbound = json_array();
            json_array_append_new(inbound, json_pack("{s:I,s:s}", "port", (json_int_t)port, "protocol",
                                                     slash ? slash + 1 : "HTTP"));
            break;
        }
        case 'L': {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg) {
                fprintf(stderr, "rete-proxy: --label KEY=VALUE\n");
                return 2;
            }
            if (!labels)
                labels = json_object();
            json_object_setn_new(labels, optarg, (size_t)(eq - optarg), json_string(eq + 1));
            break;
        }
        case 'E':
            if (n_egress == sizeof(egress) / sizeof(egress[0])) {
                fprintf(stderr, "rete-proxy: at most 64 --egress hosts\n");
                return 2;
            }
            egress[n_egress++] = optarg; /* reted validates the form */
            break;
        case 'V':
            printf("rete-proxy %s\n", RETE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (check_path) {
        json_decref(inbound);
        json_decref(labels);
        rete_config_error err;
        rete_config *cfg = rete_config_load_file(check_path, 1, &err);
        if (!cfg) {
            char msg[1024];
            rete_config_error_format(&err, msg, sizeof(msg));
            fprintf(stderr, "%s\n", msg);
            return 1;
        }
        rete_error terr = {0};
        rete_tls_set *tls = rete_tls_set_build(cfg, &terr);
        rete_config_unref(cfg);
        if (!tls) {
            fprintf(stderr, "%s: %s\n", check_path, terr.msg);
            return 1;
        }
        rete_tls_set_unref(tls);
        printf("%s: valid\n", check_path);
        return 0;
    }
    char **child_argv = NULL;
    if (run_mode) {
        if (optind >= argc) {
            fprintf(stderr, "rete-proxy run: give the command after --\n");
            return 2;
        }
        child_argv = argv + optind;
    } else if (optind < argc) {
        usage(stderr);
        return 2;
    }
    control_plane_mode = cpo.server != NULL;
    if (!proxy.config_path && !control_plane_mode) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    proxy.loop = uv_default_loop();
    proxy.iol.loop = proxy.loop;
    proxy.child_argv = child_argv;
    proxy.concurrency = (unsigned)concurrency;
    proxy.started_unix = (uint64_t)time(NULL);
    rete_proxy_metrics_init(&proxy);
    /* The layers meet here: the codecs fill the core's codec table and the
     * request path registers with the exchange (docs/architecture.md). */
    rete_codecs_register();
    rete_http_register();
    if (alo.path) {
        rete_error aerr = {0};
        if (rete_access_log_open(&alo, &aerr) != RETE_OK) {
            fprintf(stderr, "rete-proxy: %s\n", aerr.msg);
            rete_proxy_metrics_free(&proxy);
            return 2;
        }
    }
    {
        /* Always: MeshConfig tracing may be set by any later snapshot. The
         * ring is allocated, not touched, until spans are queued. */
        rete_error terr = {0};
        if (rete_trace_open(&tro, &terr) != RETE_OK) {
            fprintf(stderr, "rete-proxy: %s\n", terr.msg);
            rete_access_log_close();
            rete_proxy_metrics_free(&proxy);
            return 2;
        }
    }
    /* Signals first: the ready line must never precede the handlers (a
     * SIGTERM right after it would kill instead of drain). */
    rete_proxy_process_init(&proxy);
    proxy.on_start = start_dns;
    uv_signal_init(proxy.loop, &proxy.sigterm);
    uv_signal_init(proxy.loop, &proxy.sigint);
    uv_signal_init(proxy.loop, &proxy.sighup);
    proxy.sigterm.data = proxy.sigint.data = proxy.sighup.data = &proxy;
    uv_signal_start(&proxy.sigterm, on_sigterm, SIGTERM);
    uv_signal_start(&proxy.sigint, on_sigterm, SIGINT);
    uv_signal_start(&proxy.sighup, on_sighup, SIGHUP);
    if (!inbound)
        inbound = json_array();
    if (!labels)
        labels = json_object();
    if (control_plane_mode) {
        proxy.on_drain = rete_cp_drain;
        proxy.on_app_ready = rete_cp_report_ready;
        if (!cpo.ns || !cpo.sa || !cpo.name || !cpo.address || !cpo.ca_file) {
            fprintf(stderr, "rete-proxy: --control-plane needs --namespace, --service-account, --name, "
                            "--address and --ca-file (and --token-file for the first start)\n");
            json_decref(inbound);
            json_decref(labels);
            return 2;
        }
        static char default_dir[512];
        if (!cpo.data_dir) {
            snprintf(default_dir, sizeof(default_dir), "rete-proxy-%s.%s", cpo.name, cpo.ns);
            cpo.data_dir = default_dir;
        }
        if (proxy.config_path) {
            /* The operator's own Proxy document (limits, listeners...). */
            FILE *f = fopen(proxy.config_path, "r");
            if (!f) {
                fprintf(stderr, "rete-proxy: cannot read %s\n", proxy.config_path);
                json_decref(inbound);
                json_decref(labels);
                return 1;
            }
            char buf[65536];
            size_t n = fread(buf, 1, sizeof(buf) - 1, f);
            fclose(f);
            buf[n] = '\0';
            cpo.proxy_doc = rete_strdup(buf);
        } else {
            char cert[4200], key[4200], bundle[4200];
            snprintf(cert, sizeof(cert), "%s/cert.pem", cpo.data_dir);
            snprintf(key, sizeof(key), "%s/key.pem", cpo.data_dir);
            snprintf(bundle, sizeof(bundle), "%s/bundle.pem", cpo.data_dir);
            json_t *spec = json_pack("{s:s,s:s,s:O,s:{s:s,s:s,s:s}}", "serviceAccount", cpo.sa,
                                     "address", cpo.address, "inbound", inbound, "tls", "certFile",
                                     cert, "keyFile", key, "caFile", bundle);
            if (app_address)
                json_object_set_new(spec, "appAddress", json_string(app_address));
            if (cpo.trust_domain)
                json_object_set_new(spec, "trustDomain", json_string(cpo.trust_domain));
            json_t *doc = json_pack("{s:s,s:s,s:{s:s,s:s},s:o}", "apiVersion", "rete.dev/v1alpha1",
                                    "kind", "Proxy", "metadata", "name", cpo.name, "namespace", cpo.ns,
                                    "spec", spec);
            cpo.proxy_doc = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
            json_decref(doc);
        }
        /* the mesh port is configurable: register the one this proxy serves */
        uint16_t mesh_port = rete_config_proxy_mesh_port(cpo.proxy_doc, strlen(cpo.proxy_doc));
        if (!mesh_port) /* not a valid Proxy document: its load will say why */
            mesh_port = RETE_PORT_MESH;
        cpo.workload = json_pack("{s:s,s:s,s:s,s:s,s:i,s:O}", "name", cpo.name, "namespace", cpo.ns,
                                 "serviceAccount", cpo.sa, "address", cpo.address, "meshPort",
                                 (int)mesh_port, "labels", labels);
        if (n_egress) {
            json_t *e = json_array();
            for (size_t i = 0; i < n_egress; i++)
                json_array_append_new(e, json_string(egress[i]));
            json_object_set_new(cpo.workload, "egress", e);
        }
        if (rete_cp_start(&proxy, &cpo) < 0) {
            json_decref(inbound);
            json_decref(labels);
            return 1;
        }
    } else {
        rete_config *cfg = load(proxy.config_path, 1, &proxy.tls);
        if (!cfg || rete_proxy_install(&proxy, cfg, proxy.tls) < 0) {
            json_decref(inbound);
            json_decref(labels);
            return 1;
        }
    }
    json_decref(inbound);
    json_decref(labels);
    uv_run(proxy.loop, UV_RUN_DEFAULT);
    rete_dns_stop(the_dns);
    for (unsigned i = 0; proxy.started && i < proxy.concurrency; i++) {
        uv_thread_join(&proxy.workers[i].thread);
        rete_worker *w = &proxy.workers[i];
        if (w->gen)
            rete_gen_release(w, w->gen);
        rete_gen *in = atomic_exchange(&w->incoming, NULL);
        if (in)
            rete_gen_release(w, in);
        for (rete_pool_entry *pe = w->pools, *n; pe; pe = n) {
            n = pe->next;
            free(pe);
        }
        free(w->listeners);
        uv_loop_close(&w->loop);
    }
    free(proxy.workers);
    rete_proxy_metrics_free(&proxy);
    if (proxy.cfg)
        rete_config_unref(proxy.cfg);
    rete_tls_set_unref(proxy.tls);
    json_decref(cpo.workload);
    free(cpo.proxy_doc);
    uv_close((uv_handle_t *)&proxy.sigterm, NULL);
    uv_close((uv_handle_t *)&proxy.sigint, NULL);
    uv_close((uv_handle_t *)&proxy.sighup, NULL);
    rete_proxy_process_close(&proxy);
    uv_run(proxy.loop, UV_RUN_NOWAIT);
    rete_info("stopped");
    rete_access_log_close(); /* the workers have stopped: nothing more to log */
    rete_trace_close();
    return child_argv ? (rete_proxy_child_exit_code() < 0 ? 1 : rete_proxy_child_exit_code()) : 0;
}
