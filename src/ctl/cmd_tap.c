/* retectl tap, top and diagnose (docs/observability.md, "Tap"): live
 * requests from the proxies through reted (GET /api/v1/tap, a stream of
 * JSON lines), as lines (tap), as a table of the busiest paths (top), and
 * folded with the golden metrics and the proxies' state into one verdict
 * on a Service (diagnose). */
#include "ctl.h"
#include "table.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOP_MAX_ROWS 4096     /* (method, path) rows kept by top */
#define TOP_SEEN_IDS 1024     /* request ids remembered to count a request once */
#define TOP_REFRESH_MS 2000
#define DIAG_TAP_DEFAULT_S 5

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

typedef struct top_row {
    char method[16];
    char path[256];
    long count, failures;
    double lat_sum, lat_max;
    int last_status;
} top_row;

typedef struct err_row {
    char flags[16];
    char upstream[300];
    int status;
    long count;
} err_row;

typedef struct tap_run {
    rete_ctl *c;
    bool json, top, quiet;
    long max, seen;
    long long until_ms, next_print_ms;
    size_t n_proxies, n_started;
    bool announced;
    /* top and diagnose: one count per request (both sidecars of a hop report it) */
    char (*ids)[72];
    size_t n_ids, next_id;
    top_row *rows;
    size_t n_rows;
    err_row errs[64];
    size_t n_errs;
    long total, failures;
    json_t *dest_workloads; /* diagnose: the workloads that answered */
} tap_run;

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* A failure as the golden metrics count it: a 5xx or no response. */
static bool failed(int status)
{
    return status >= 500 || status == 0;
}

/* Whether this request id was counted already (remembering it if not). */
static bool seen_before(tap_run *t, const char *id)
{
    if (!*id)
        return false;
    for (size_t i = 0; i < t->n_ids; i++)
        if (strcmp(t->ids[i], id) == 0)
            return true;
    snprintf(t->ids[t->next_id], sizeof(t->ids[0]), "%s", id);
    t->next_id = (t->next_id + 1) % TOP_SEEN_IDS;
    if (t->n_ids < TOP_SEEN_IDS)
        t->n_ids++;
    return false;
}

static void count_event(tap_run *t, const json_t *e)
{
    if (seen_before(t, jstr(e, "requestId")))
        return;
    const char *method = jstr(e, "method"), *path = jstr(e, "path"), *flags = jstr(e, "responseFlags");
    int status = (int)json_integer_value(json_object_get(e, "status"));
    double lat = json_number_value(json_object_get(e, "latencyMs"));
    bool bad = failed(status);
    t->total++;
    t->failures += bad;
    size_t qlen = strcspn(path, "?");
    size_t i = 0;
    while (i < t->n_rows && !(strcmp(t->rows[i].method, method) == 0 && strlen(t->rows[i].path) == qlen &&
                              strncmp(t->rows[i].path, path, qlen) == 0))
        i++;
    if (i == t->n_rows && t->n_rows < TOP_MAX_ROWS) {
        top_row *r = &t->rows[t->n_rows++];
        memset(r, 0, sizeof(*r));
        snprintf(r->method, sizeof(r->method), "%s", method);
        snprintf(r->path, sizeof(r->path), "%.*s", (int)qlen, path);
    }
    if (i < t->n_rows) {
        top_row *r = &t->rows[i];
        r->count++;
        r->failures += bad;
        r->lat_sum += lat;
        if (lat > r->lat_max)
            r->lat_max = lat;
        r->last_status = status;
    }
    if (!bad)
        return;
    const json_t *dst = json_object_get(e, "destination");
    char up[300];
    snprintf(up, sizeof(up), "%s/%s", jstr(dst, "namespace"), jstr(dst, "workload"));
    size_t k = 0;
    while (k < t->n_errs && !(strcmp(t->errs[k].flags, flags) == 0 && strcmp(t->errs[k].upstream, up) == 0 &&
                              t->errs[k].status == status))
        k++;
    if (k == t->n_errs && t->n_errs < sizeof(t->errs) / sizeof(t->errs[0])) {
        err_row *r = &t->errs[t->n_errs++];
        memset(r, 0, sizeof(*r));
        snprintf(r->flags, sizeof(r->flags), "%s", flags);
        snprintf(r->upstream, sizeof(r->upstream), "%s", up);
        r->status = status;
    }
    if (k < t->n_errs)
        t->errs[k].count++;
}

static void print_event(const tap_run *t, const json_t *e)
{
    if (t->json) {
        char *s = json_dumps(e, JSON_COMPACT);
        if (s)
            printf("%s\n", s);
        free(s);
        fflush(stdout);
        return;
    }
    const json_t *src = json_object_get(e, "source"), *dst = json_object_get(e, "destination");
    const char *route = jstr(e, "route");
    printf("%s %s %-8s %s%s -> %d %.3fms src=%s/%s dst=%s/%s route=%s flags=%s proxy=%s", jstr(e, "time"),
           strcmp(jstr(e, "direction"), "inbound") == 0 ? "in " : "out", jstr(e, "method"), jstr(e, "authority"),
           jstr(e, "path"), (int)json_integer_value(json_object_get(e, "status")),
           json_number_value(json_object_get(e, "latencyMs")), jstr(src, "namespace"), jstr(src, "workload"),
           jstr(dst, "namespace"), jstr(dst, "workload"), *route ? route : "-", jstr(e, "responseFlags"),
           jstr(e, "proxy"));
    if (t->c->args.seen & CTL_F_HEADERS) {
        size_t i;
        const json_t *h;
        json_array_foreach(json_object_get(e, "headers"), i, h)
        printf(" %s=%s", json_string_value(json_array_get(h, 0)), json_string_value(json_array_get(h, 1)));
    }
    printf("\n");
    fflush(stdout);
}

static int by_count(const void *a, const void *b)
{
    const top_row *x = a, *y = b;
    return x->count < y->count ? 1 : x->count > y->count ? -1 : strcmp(x->path, y->path);
}

static void print_top(tap_run *t)
{
    if (isatty(STDOUT_FILENO) && !(t->c->args.seen & CTL_F_ONCE))
        printf("\033[H\033[2J");
    qsort(t->rows, t->n_rows, sizeof(*t->rows), by_count);
    if (t->json) {
        json_t *rows = json_array();
        for (size_t i = 0; i < t->n_rows; i++) {
            const top_row *r = &t->rows[i];
            json_array_append_new(rows, json_pack("{s:s,s:s,s:I,s:I,s:f,s:f,s:f,s:i}", "method", r->method, "path",
                                                  r->path, "count", (json_int_t)r->count, "failures",
                                                  (json_int_t)r->failures, "successRate",
                                                  (double)(r->count - r->failures) / (double)r->count,
                                                  "latencyAvgMs", r->lat_sum / (double)r->count, "latencyMaxMs",
                                                  r->lat_max, "lastStatus", r->last_status));
        }
        json_t *j = json_pack("{s:o}", "items", rows);
        rete_ctl_print_json(j);
        json_decref(j);
        fflush(stdout);
        return;
    }
    rete_ctl_table tb;
    rete_ctl_table_init(&tb, 7);
    const char *head[7] = {"METHOD", "PATH", "COUNT", "SUCCESS", "LATENCY_AVG", "LATENCY_MAX", "LAST_STATUS"};
    rete_ctl_table_add_row(&tb, head);
    for (size_t i = 0; i < t->n_rows; i++) {
        const top_row *r = &t->rows[i];
        char cnt[32], sr[32], avg[32], mx[32], last[16];
        snprintf(cnt, sizeof(cnt), "%ld", r->count);
        snprintf(sr, sizeof(sr), "%.2f%%", 100.0 * (double)(r->count - r->failures) / (double)r->count);
        snprintf(avg, sizeof(avg), "%.1fms", r->lat_sum / (double)r->count);
        snprintf(mx, sizeof(mx), "%.1fms", r->lat_max);
        snprintf(last, sizeof(last), "%d", r->last_status);
        const char *row[7] = {r->method, r->path, cnt, sr, avg, mx, last};
        rete_ctl_table_add_row(&tb, row);
    }
    if (tb.n_rows == 1)
        printf("No requests yet.\n");
    else
        rete_ctl_table_print(&tb, stdout);
    rete_ctl_table_free(&tb);
    fflush(stdout);
}

static bool on_line(void *arg, const char *line, size_t len)
{
    tap_run *t = arg;
    if (interrupted)
        return false;
    long long now = mono_ms();
    if (t->until_ms && now >= t->until_ms)
        return false;
    if (t->top && !(t->c->args.seen & CTL_F_ONCE) && now >= t->next_print_ms) {
        print_top(t);
        t->next_print_ms = now + TOP_REFRESH_MS;
    }
    if (!line)
        return true;
    json_t *m = json_loadb(line, len, 0, NULL);
    const char *type = jstr(m, "type");
    if (strcmp(type, "request") == 0) {
        if (t->top)
            count_event(t, m);
        else
            print_event(t, m);
        if (t->dest_workloads) {
            const json_t *dst = json_object_get(m, "destination");
            char who[300];
            snprintf(who, sizeof(who), "%s/%s", jstr(dst, "namespace"), jstr(dst, "workload"));
            json_object_set_new(t->dest_workloads, who, json_true());
        }
        t->seen++;
    } else if (strcmp(type, "tap") == 0) {
        t->n_proxies = json_array_size(json_object_get(m, "proxies"));
        if (!t->n_proxies && !t->quiet)
            fprintf(stderr, "tap %s: no proxy of the target is connected yet; waiting\n", jstr(m, "id"));
        if (json_is_true(json_object_get(m, "shared"))) {
            t->announced = true; /* its proxies started it for the first client */
            if (!t->quiet)
                fprintf(stderr, "tap %s: on at %zu proxies (shared)\n", jstr(m, "id"), t->n_proxies);
        }
    } else if (strcmp(type, "started") == 0) {
        t->n_started++;
        if (!t->announced && t->n_started >= t->n_proxies) {
            t->announced = true;
            if (!t->quiet)
                fprintf(stderr, "tap: on at %zu proxies\n", t->n_started);
        }
    } else if (strcmp(type, "error") == 0) {
        fprintf(stderr, "tap: %s: %s\n", jstr(m, "proxy"), jstr(m, "error"));
    } else if (strcmp(type, "dropped") == 0 && !t->quiet) {
        fprintf(stderr, "tap: %s dropped %lld requests (over its rate of 100/s, or its queue)\n",
                jstr(m, "proxy"), (long long)json_integer_value(json_object_get(m, "count")));
    }
    json_decref(m);
    return !(t->max && t->seen >= t->max);
}

/* Run the tap query `q` (after "kind=...") with t's callbacks until it
 * ends. 0, or an exit code once the reason is printed. */
static int run_tap(rete_ctl *c, const char *kind, const char *name, tap_run *t)
{
    char *path = NULL;
    size_t cap = 2048;
    path = malloc(cap);
    if (!path)
        return CTL_EXIT_FAIL;
    char *en = rete_ctl_urlencode(name), *ens = rete_ctl_urlencode(rete_ctl_ns(c));
    int n = snprintf(path, cap, "/api/v1/tap?kind=%s&name=%s&namespace=%s", kind, en, ens);
    free(en);
    free(ens);
    const char *opt[3][2] = {{"path", c->args.path}, {"method", c->args.method}, {"status", c->args.status}};
    for (int i = 0; i < 3; i++)
        if (opt[i][1]) {
            char *v = rete_ctl_urlencode(opt[i][1]);
            n += snprintf(path + n, cap - (size_t)n, "&%s=%.600s", opt[i][0], v);
            free(v);
        }
    if (c->args.seen & CTL_F_HEADERS)
        snprintf(path + n, cap - (size_t)n, "&headers=true");
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rete_ctl_response resp;
    rete_error err = {0};
    bool closed = false;
    rete_rc rc = rete_ctl_http_stream(&c->http, path, on_line, t, &resp, &closed, &err);
    free(path);
    if (rc != RETE_OK) {
        fprintf(stderr, "error: reted at %s (from %s): %s\n", c->ctx.server, c->ctx.server_from, err.msg);
        return CTL_EXIT_FAIL;
    }
    if (resp.status != 200) {
        rete_ctl_print_server_error(&resp);
        rete_ctl_response_free(&resp);
        return CTL_EXIT_FAIL;
    }
    if (closed && !t->quiet)
        fprintf(stderr, "tap: reted ended the stream\n");
    return 0;
}

static int parse_common(rete_ctl *c, tap_run *t, bool need_kind)
{
    memset(t, 0, sizeof(*t));
    t->c = c;
    const char *o = c->args.output ? c->args.output : "table";
    if (strcmp(o, "table") && strcmp(o, "json") && strcmp(o, "wide"))
        return rete_ctl_usage_error(c, "%s prints table or json, not \"%s\"", c->verb, o);
    t->json = strcmp(o, "json") == 0;
    if (c->args.max) {
        char *end;
        t->max = strtol(c->args.max, &end, 10);
        if (*end || t->max <= 0 || t->max > 1000000000)
            return rete_ctl_usage_error(c, "--max takes a positive count, not \"%s\"", c->args.max);
    }
    if (c->args.duration) {
        int64_t s;
        if (!rete_ctl_parse_duration(c->args.duration, &s))
            return rete_ctl_usage_error(c, "bad --duration \"%s\"", c->args.duration);
        t->until_ms = mono_ms() + s * 1000;
    }
    if (c->args.status) {
        char *end;
        long code = strtol(c->args.status, &end, 10);
        if (*end || code < 0 || code > 999)
            return rete_ctl_usage_error(c, "--status takes an HTTP status code, not \"%s\"", c->args.status);
    }
    if (need_kind) {
        if (c->args.n_pos != 2 ||
            (strcmp(c->args.pos[0], "deploy") && strcmp(c->args.pos[0], "service") &&
             strcmp(c->args.pos[0], "workload")))
            return rete_ctl_usage_error(c, "%s deploy|service|workload NAME", c->verb);
    }
    return 0;
}

int rete_ctl_cmd_tap(rete_ctl *c)
{
    tap_run t;
    int rc = parse_common(c, &t, true);
    if (rc)
        return rc;
    rc = run_tap(c, c->args.pos[0], c->args.pos[1], &t);
    return rc ? rc : CTL_EXIT_OK;
}

int rete_ctl_cmd_top(rete_ctl *c)
{
    tap_run t;
    int rc = parse_common(c, &t, true);
    if (rc)
        return rc;
    if ((c->args.seen & CTL_F_ONCE) && !c->args.duration && !c->args.max)
        return rete_ctl_usage_error(c, "--once needs --duration (or --max)");
    t.top = true;
    t.ids = calloc(TOP_SEEN_IDS, sizeof(*t.ids));
    t.rows = calloc(TOP_MAX_ROWS, sizeof(*t.rows));
    if (!t.ids || !t.rows) {
        free(t.ids);
        free(t.rows);
        return CTL_EXIT_FAIL;
    }
    rc = run_tap(c, c->args.pos[0], c->args.pos[1], &t);
    if (!rc)
        print_top(&t);
    free(t.ids);
    free(t.rows);
    return rc ? rc : CTL_EXIT_OK;
}

/* ---- diagnose ---- */

static const char *flag_meaning(const char *f)
{
    static const struct {
        const char *flag, *meaning;
    } m[] = {
        {"FI", "fault injected by a route rule (HTTPRoute fault abort)"},
        {"NR", "no route: the request matched no rule, or names no Service"},
        {"UH", "no healthy endpoint (all ejected by outlier detection, failing health checks, or none)"},
        {"UF", "upstream connection failure"},
        {"UO", "upstream overflow: a circuit breaker (connection pool limit) refused it"},
        {"UR", "upstream reset the request"},
        {"UT", "upstream timeout (the route's timeout)"},
        {"DR", "the downstream reset the request"},
        {"RBAC", "denied by an AuthorizationPolicy"},
        {"RL", "refused by a local rate limit"},
        {"SI", "the client was too slow (stream idle timeout)"},
        {"DPE", "a malformed request"},
    };
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        if (strcmp(m[i].flag, f) == 0)
            return m[i].meaning;
    return strcmp(f, "-") == 0 || !*f ? "the application answered with an error status" : "see docs/proxy.md";
}

/* The service's golden metrics from both sides, one window: the worst
 * success rate of the two views (a fault at the caller never reaches the
 * called side). */
static json_t *golden(rete_ctl *c, const char *svc, const char *window, const char *reporter)
{
    char path[900];
    snprintf(path, sizeof(path), "/api/v1/stats?by=service&window=%s&reporter=%s&namespace=%s&name=%s", window,
             reporter, rete_ctl_ns(c), svc);
    json_t *items = rete_ctl_get_list(c, path, (const char *const[]){"items", NULL}, "no items in the answer");
    json_t *first = items ? json_incref(json_array_get(items, 0)) : NULL;
    json_decref(items);
    return first;
}

static int cmp_err(const void *a, const void *b)
{
    const err_row *x = a, *y = b;
    return x->count < y->count ? 1 : x->count > y->count ? -1 : 0;
}

int rete_ctl_cmd_diagnose(rete_ctl *c)
{
    if (c->args.n_pos != 1)
        return rete_ctl_usage_error(c, "diagnose SERVICE [-n NS]");
    tap_run t;
    const char *dur = c->args.duration;
    c->args.duration = NULL;
    int rc = parse_common(c, &t, false);
    if (rc)
        return rc;
    int64_t secs = DIAG_TAP_DEFAULT_S;
    if (dur && !rete_ctl_parse_duration(dur, &secs))
        return rete_ctl_usage_error(c, "bad --duration \"%s\"", dur);
    const char *svc = c->args.pos[0];
    const char *ns = rete_ctl_ns(c);
    int problems = 0;
    printf("Service %s/%s\n\n", ns, svc);

    /* 1. golden metrics, now against the last ten minutes */
    printf("Golden metrics (from the proxies' summaries; caller side | called side):\n");
    double worst_1m = 1, worst_10m = 1;
    bool traffic = false;
    for (int w = 0; w < 2; w++) {
        const char *win = w ? "10m" : "1m";
        for (int side = 0; side < 2; side++) {
            const char *rep = side ? "destination" : "source";
            json_t *g = golden(c, svc, win, rep);
            if (!g) {
                printf("  %-4s %-12s no traffic\n", win, rep);
                continue;
            }
            traffic = true;
            double sr = json_number_value(json_object_get(g, "successRate"));
            const json_t *lat = json_object_get(g, "latencyMs");
            printf("  %-4s %-12s success %6.2f%%  %.2f rps  p50 %.1fms  p99 %.1fms  (%lld requests)\n", win, rep,
                   100 * sr, json_number_value(json_object_get(g, "rps")),
                   json_number_value(json_object_get(lat, "p50")), json_number_value(json_object_get(lat, "p99")),
                   (long long)json_integer_value(json_object_get(g, "requests")));
            if (w == 0 && sr < worst_1m)
                worst_1m = sr;
            if (w == 1 && sr < worst_10m)
                worst_10m = sr;
            json_decref(g);
        }
    }
    if (traffic && worst_1m < 0.99) {
        problems++;
        printf("  ! the success rate over the last minute is %.2f%% (%.2f%% over 10 minutes)\n", 100 * worst_1m,
               100 * worst_10m);
    }

    /* 2. live errors, from a tap of a few seconds */
    printf("\nLive requests (tap for %llds):\n", (long long)secs);
    t.top = true;
    t.quiet = true;
    t.ids = calloc(TOP_SEEN_IDS, sizeof(*t.ids));
    t.rows = calloc(TOP_MAX_ROWS, sizeof(*t.rows));
    t.dest_workloads = json_object();
    t.until_ms = mono_ms() + secs * 1000;
    rc = t.ids && t.rows ? run_tap(c, "service", svc, &t) : CTL_EXIT_FAIL;
    if (rc) {
        free(t.ids);
        free(t.rows);
        json_decref(t.dest_workloads);
        return rc;
    }
    if (!t.total) {
        printf("  no requests seen\n");
    } else {
        printf("  %ld requests, %ld failed (%.2f%%)\n", t.total, t.failures,
               100.0 * (double)t.failures / (double)t.total);
        qsort(t.errs, t.n_errs, sizeof(t.errs[0]), cmp_err);
        for (size_t i = 0; i < t.n_errs && i < 5; i++)
            printf("  %5ld x status %d flag %-4s upstream %s: %s\n", t.errs[i].count, t.errs[i].status,
                   t.errs[i].flags, t.errs[i].upstream, flag_meaning(t.errs[i].flags));
        if (t.failures * 100 > t.total)
            problems++;
    }

    /* 3. the proxies serving it: config sync, NACKs, certificates */
    printf("\nProxies:\n");
    json_t *proxies = rete_ctl_get_list(c, "/api/v1/proxies", (const char *const[]){"items", NULL}, "no items");
    size_t i, nprox = 0;
    json_t *p;
    time_t now = time(NULL);
    json_array_foreach(proxies, i, p)
    {
        const char *pns = jstr(p, "namespace"), *pname = jstr(p, "name");
        char who[600];
        snprintf(who, sizeof(who), "%s/%s", pns, pname);
        size_t sl = strlen(svc);
        bool mine = json_object_get(t.dest_workloads, who) ||
                    (strcmp(pns, ns) == 0 && (strcmp(pname, svc) == 0 ||
                                              (strncmp(pname, svc, sl) == 0 && pname[sl] == '-')));
        if (!mine)
            continue;
        nprox++;
        const char *st = jstr(p, "status");
        long long exp = (long long)json_integer_value(json_object_get(p, "certExpiresAt"));
        printf("  %-30s %-12s cert expires in %lldh%s%s\n", who, st, exp ? (exp - (long long)now) / 3600 : 0,
               *jstr(p, "error") ? "  last NACK: " : "", jstr(p, "error"));
        if (strcmp(st, "SYNCED") != 0) {
            problems++;
            printf("  ! %s is %s%s\n", who, st,
                   strcmp(st, "NACK") == 0 ? ": it rejected its configuration (retectl analyze)" : "");
        }
        if (exp && exp - (long long)now < 3600) {
            problems++;
            printf("  ! %s's certificate expires within the hour\n", who);
        }
        if (!json_is_true(json_object_get(p, "ready"))) {
            problems++;
            printf("  ! %s's app is not ready\n", who);
        }
    }
    if (!nprox)
        printf("  none found (workloads named %s or %s-*, or seen answering)\n", svc, svc);

    /* Its endpoints that callers' balancers hold out (each proxy's own
     * report: outlier ejections, failing health checks). */
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s.%s.", svc, ns);
    size_t n_out = 0;
    json_array_foreach(proxies, i, p)
    {
        size_t k;
        json_t *e;
        json_array_foreach(json_object_get(p, "endpointsOut"), k, e)
        {
            if (strncmp(jstr(e, "cluster"), prefix, strlen(prefix)) != 0)
                continue;
            if (!n_out++)
                printf("\nEndpoints held out by callers:\n");
            problems++;
            bool ej = json_is_true(json_object_get(e, "ejected"));
            printf("  ! %s (%s) out at %s/%s: %s%s\n", jstr(e, "endpoint"), jstr(e, "address"),
                   jstr(p, "namespace"), jstr(p, "name"),
                   ej ? "ejected by outlier detection" : "",
                   json_is_true(json_object_get(e, "healthCheckFailing"))
                       ? (ej ? ", failing its health checks" : "failing its health checks")
                       : "");
        }
    }
    /* Retries callers' retry budgets refused (each proxy's count since it
     * started): the Service failed more than its callers could retry. */
    size_t n_budget = 0;
    json_array_foreach(proxies, i, p)
    {
        const char *cluster;
        json_t *v;
        json_object_foreach(json_object_get(p, "retryBudgetExhausted"), cluster, v)
        {
            if (strncmp(cluster, prefix, strlen(prefix)) != 0 || json_integer_value(v) <= 0)
                continue;
            if (!n_budget++)
                printf("\nRetry budgets exhausted:\n");
            problems++;
            printf("  ! %s/%s: %lld retries refused by its retry budget for %s (since it started)\n",
                   jstr(p, "namespace"), jstr(p, "name"), (long long)json_integer_value(v), cluster);
        }
    }
    json_decref(proxies);

    /* verdict */
    printf("\nVerdict: ");
    if (!problems) {
        printf("%s/%s looks healthy.\n", ns, svc);
    } else if (t.n_errs) {
        printf("%s/%s is failing: %.0f%% of live requests fail, most with status %d flag %s (%s).\n", ns, svc,
               100.0 * (double)t.failures / (double)(t.total ? t.total : 1), t.errs[0].status, t.errs[0].flags,
               flag_meaning(t.errs[0].flags));
    } else {
        printf("%s/%s has %d problem%s (marked ! above).\n", ns, svc, problems, problems == 1 ? "" : "s");
    }
    free(t.ids);
    free(t.rows);
    json_decref(t.dest_workloads);
    return problems ? CTL_EXIT_FAIL : CTL_EXIT_OK;
}
