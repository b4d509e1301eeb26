/* Unit tests for the request path's filter chain (src/proxy/http/filter.h,
 * dispatch.c, filter_*.c): each filter alone against a fake downstream side
 * that records what it is answered, on exchanges made by the core
 * (rete_ex_new) on a worker that never runs its loop, with a configuration
 * loaded from YAML. The body stages run on chains of recording filters, and
 * through the exchange's pipes with the real chains (telemetry counts).
 * Filters that start an upstream are driven only to their local answers
 * here (the system tests cover the rest). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dispatch.h"
#include "exchange.h"
#include "filter.h"
#include "proxy.h"
#include "worker.h"


/* ---- the fake downstream side ---- */

typedef struct fake_side {
    int heads, aborts;
    int status;
    char body[1024];
    size_t body_len;
    bool body_end;
    char location[256];
    char x_added[64]; /* the response header x-added, when set */
} fake_side;

static void copy_header(const rete_msg *m, const char *name, char *out, size_t size)
{
    rete_view v = rete_msg_get(m, rete_view_cstr(name));
    snprintf(out, size, "%.*s", (int)v.len, v.p ? v.p : "");
}

static void fake_on_data(rete_exchange *ex)
{
    fake_side *f = ex->side[RETE_DOWNSTREAM];
    const char *data;
    size_t n;
    while ((n = rete_ex_peek(ex, RETE_DOWNSTREAM, &data)) > 0) {
        assert_true(f->body_len + n < sizeof f->body);
        memcpy(f->body + f->body_len, data, n);
        f->body_len += n;
        f->body[f->body_len] = '\0';
        rete_ex_consume(ex, RETE_DOWNSTREAM, n);
    }
    f->body_end = rete_ex_in(ex, RETE_DOWNSTREAM)->end;
}

static void fake_on_head(rete_exchange *ex)
{
    fake_side *f = ex->side[RETE_DOWNSTREAM];
    f->heads++;
    f->status = ex->resp.status;
    copy_header(&ex->resp, "location", f->location, sizeof f->location);
    copy_header(&ex->resp, "x-added", f->x_added, sizeof f->x_added);
}

static void fake_on_drained(rete_exchange *ex, size_t consumed)
{
    (void)ex;
    (void)consumed;
}

static void fake_on_abort(rete_exchange *ex)
{
    fake_side *f = ex->side[RETE_DOWNSTREAM];
    f->aborts++;
}

static const rete_side_ops fake_ops = {
    .name = "fake",
    .on_head = fake_on_head,
    .on_data = fake_on_data,
    .on_drained = fake_on_drained,
    .on_abort = fake_on_abort,
};

/* ---- a worker that never runs, with one generation ---- */

typedef struct fixture {
    rete_proxy proxy;
    rete_worker w;
    rete_tls_set tls; /* no contexts: no filter here dials */
    rete_gen *gen;
    rete_exchange *ex;
    fake_side side;
    char log_path[64]; /* the access log's file, when a test opens it */
    char *log_buf;     /* what it holds (one_line) */
    size_t log_len;
} fixture;

#define PROXY                                                                                      \
    "apiVersion: rete.dev/v1alpha1\nkind: Proxy\nmetadata: {name: web-0, namespace: demo}\n"       \
    "spec:\n  serviceAccount: web\n"
#define TWO_PORTS "  inbound: [{port: 8080}, {port: 9000, protocol: TCP}]\n"
#define MESH                                                                                       \
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: demo}\n"                 \
    "spec: {selector: {app: api}, ports: [{name: http, port: 80}]}\n"                              \
    "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"                             \
    "metadata: {name: api, namespace: demo}\n"                                                     \
    "spec:\n  parentRefs: [{kind: Service, name: api}]\n  rules:\n"                                \
    "    - matches: [{path: {type: PathPrefix, value: /old}}]\n"                                   \
    "      filters:\n"                                                                             \
    "        - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-added, "    \
    "value: yes}]}}\n"                                                                             \
    "        - {type: RequestRedirect, requestRedirect: {hostname: new.example, statusCode: "     \
    "301}}\n"                                                                                      \
    "    - matches: [{path: {type: PathPrefix, value: /api}}]\n"                                   \
    "      backendRefs: [{name: api, port: 80}]\n"                                                 \
    "    - matches: [{path: {type: PathPrefix, value: /fault}}]\n"                                 \
    "      backendRefs: [{name: api, port: 80}]\n"                                                 \
    "      fault: {abort: {percentage: {value: 100}, httpStatus: 418}}\n"                          \
    "    - matches: [{path: {type: PathPrefix, value: /grpcfault}}]\n"                             \
    "      backendRefs: [{name: api, port: 80}]\n"                                                 \
    "      fault: {abort: {percentage: {value: 100}, grpcStatus: UNAVAILABLE}}\n"                  \
    "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"                           \
    "metadata: {name: deny-admin, namespace: demo}\n"                                              \
    "spec: {action: DENY, rules: [{to: [{operation: {paths: [\"/admin*\"]}}]}]}\n"                 \
    "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"                           \
    "metadata: {name: no-tcp-9000, namespace: demo}\n"                                             \
    "spec: {action: DENY, rules: [{to: [{operation: {ports: [\"9000\"]}}]}]}\n"

static const char *const default_yaml = PROXY TWO_PORTS MESH;

static void use_config(fixture *f, const char *yaml)
{
    rete_config_error err;
    rete_config *cfg = rete_config_load_buffer(yaml, strlen(yaml), "t.yaml", 1, &err);
    if (!cfg) {
        char buf[1200];
        rete_config_error_format(&err, buf, sizeof buf);
        fail_msg("%s", buf);
    }
    if (f->gen)
        rete_gen_release(&f->w, f->gen);
    f->gen = rete_gen_new(cfg, &f->tls);
    f->w.gen = f->gen;
    rete_config_unref(cfg); /* the generation holds it */
}

static int setup(void **state)
{
    rete_http_register();
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    rete_proxy_metrics_init(&f->proxy);
    f->w.proxy = &f->proxy;
    f->w.shard = rete_metrics_shard_new(f->proxy.metrics);
    f->w.mm = f->proxy.mm;
    f->w.ms = f->proxy.ms;
    f->w.rng = 42;
    assert_int_equal(uv_loop_init(&f->w.loop), 0);
    atomic_init(&f->tls.refs, 1);
    use_config(f, default_yaml);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->ex)
        rete_ex_detach(f->ex, RETE_DOWNSTREAM);
    rete_ex_pool_free(&f->w);
    rete_gen_release(&f->w, f->gen);
    assert_int_equal(atomic_load(&f->tls.refs), 1);
    uv_run(&f->w.loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&f->w.loop), 0);
    rete_metrics_shard_free(&f->w.shard);
    rete_proxy_metrics_free(&f->proxy);
    rete_access_log_close();
    if (f->log_path[0])
        unlink(f->log_path);
    free(f->log_buf);
    free(f);
    return 0;
}

/* A new exchange on the fake side (the previous one let go first). */
static rete_exchange *request(fixture *f, bool inbound, const char *method, const char *authority,
                              const char *path)
{
    if (f->ex)
        rete_ex_detach(f->ex, RETE_DOWNSTREAM);
    rete_ex_reap(&f->w);
    memset(&f->side, 0, sizeof f->side);
    rete_exchange *ex = f->ex = rete_ex_new(&f->w, &fake_ops, &f->side);
    ex->inbound = inbound;
    ex->listener = inbound ? "mesh" : "outbound";
    snprintf(ex->downstream_addr, sizeof ex->downstream_addr, "10.0.0.9:4444");
    ex->req.method = rete_view_cstr(method);
    ex->req.scheme = RETE_VIEW_LIT("http");
    ex->req.authority = authority ? rete_view_cstr(authority) : RETE_VIEW_NULL;
    ex->req.path = path ? rete_view_cstr(path) : RETE_VIEW_NULL;
    ex->tunnel = strcmp(method, "CONNECT") == 0;
    if (inbound)
        snprintf(ex->peer_id, sizeof ex->peer_id, "spiffe://cluster.local/ns/demo/sa/api");
    return ex;
}

static void header(rete_exchange *ex, const char *name, const char *value)
{
    rete_msg_add(ex, &ex->req, rete_view_cstr(name), rete_view_cstr(value));
}

static void capture_log(fixture *f)
{
    snprintf(f->log_path, sizeof f->log_path, "/tmp/rete-test-access-XXXXXX");
    int fd = mkstemp(f->log_path);
    assert_true(fd >= 0);
    close(fd);
    rete_access_log_opts o = {.path = f->log_path, .sample_percent = 100};
    rete_error err = {0};
    assert_int_equal(rete_access_log_open(&o, &err), RETE_OK);
}

/* What the access log's file holds once the writer has written it all. */
static void read_log(fixture *f)
{
    rete_access_log_flush();
    free(f->log_buf);
    FILE *fp = fopen(f->log_path, "rb");
    assert_non_null(fp);
    f->log_buf = calloc(1, 1 << 16);
    f->log_len = fread(f->log_buf, 1, (1 << 16) - 1, fp);
    fclose(fp);
}

/* ---- the chains ---- */

static const char *names(const rete_filter_chain *c)
{
    static char buf[256];
    buf[0] = '\0';
    for (size_t i = 0; i < c->n; i++) {
        strcat(buf, i ? " " : "");
        strcat(buf, c->filters[i]->name);
    }
    return buf;
}

/* The order is the contract: trace first (its headers go upstream, and it
 * sees requests a later filter answers), authorization before the app,
 * telemetry and the access log last (they see every exchange end). */
static void test_chain_order(void **state)
{
    fixture *f = *state;
    assert_string_equal(names(&rete_chain_outbound),
                        "trace route rate-limit fault mirror backend retry telemetry access-log tap");
    assert_string_equal(names(&rete_chain_inbound),
                        "trace inbound-port authz rate-limit app telemetry access-log tap");
    rete_exchange *ex = request(f, false, "GET", "api", "/");
    assert_ptr_equal(rete_filter_chain_of(ex), &rete_chain_outbound);
    ex = request(f, true, "GET", "api", "/");
    assert_ptr_equal(rete_filter_chain_of(ex), &rete_chain_inbound);
    ex->admin = true;
    assert_string_equal(names(rete_filter_chain_of(ex)), "telemetry access-log");
    /* every stage a filter leaves NULL is skipped; the handling filters
     * are the only ones that answer */
    assert_null(rete_filter_access_log.on_request);
    assert_null(rete_filter_telemetry.on_request);
    assert_non_null(rete_filter_authz.on_request);
    assert_null(rete_filter_authz.on_finish);
    assert_non_null(rete_filter_telemetry.on_request_body);
    assert_null(rete_filter_access_log.on_request_body);
}

/* ---- fault ---- */

/* A matched rule goes on to the filters before the backend; its fault's
 * abort (100%) answers there with the configured status, or gRPC's shape. */
static void test_fault_abort_answers_before_the_backend(void **state)
{
    fixture *f = *state;
    rete_exchange *ex = request(f, false, "GET", "api", "/fault");
    assert_int_equal(rete_filter_route.on_request(ex), RETE_FILTER_NEXT);
    assert_non_null(ex->route);
    assert_int_equal(rete_filter_fault.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.status, 418);
    assert_int_equal(ex->error, RETE_EXE_FAULT);

    ex = request(f, false, "GET", "api", "/grpcfault");
    assert_int_equal(rete_filter_route.on_request(ex), RETE_FILTER_NEXT);
    assert_int_equal(rete_filter_fault.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.status, 200);
    assert_true(rete_view_eq(rete_msg_get(&ex->resp, RETE_VIEW_LIT("grpc-status")), RETE_VIEW_LIT("14")));

    /* a rule without fault goes on */
    ex = request(f, false, "GET", "api", "/api/x");
    assert_int_equal(rete_filter_route.on_request(ex), RETE_FILTER_NEXT);
    assert_int_equal(rete_filter_fault.on_request(ex), RETE_FILTER_NEXT);
}

/* ---- authz ---- */

static void test_authz_denies_with_403_allows_with_next(void **state)
{
    fixture *f = *state;
    rete_exchange *ex = request(f, true, "GET", "web", "/admin/users");
    ex->target_port = 8080;
    assert_int_equal(rete_filter_authz.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.heads, 1);
    assert_int_equal(f->side.status, 403);
    assert_string_equal(f->side.body, "RBAC: access denied by policy demo/deny-admin\n");
    assert_true(f->side.body_end);
    assert_int_equal(ex->error, RETE_EXE_DENIED);

    ex = request(f, true, "GET", "web", "/public");
    ex->target_port = 8080;
    assert_int_equal(rete_filter_authz.on_request(ex), RETE_FILTER_NEXT);
    assert_int_equal(f->side.heads, 0);
    assert_int_equal(ex->error, RETE_EXE_NONE);

    /* a tunnel to a denied port is closed: nothing to answer on raw bytes
     * (deny-admin matches first: a DENY rule's HTTP-only fields are
     * ignored for TCP, as Istio does, so it denies more, never less) */
    ex = request(f, true, "CONNECT", "10.0.0.1:9000", NULL);
    ex->target_port = 9000;
    assert_int_equal(rete_filter_authz.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.heads, 0);
    assert_int_equal(f->side.aborts, 1);
    assert_int_equal(ex->error, RETE_EXE_DENIED);

    assert_int_equal(rete_metrics_counter_value(f->proxy.metrics, f->w.ms.authz_denied), 2);

    /* no policy at all: next, whatever the request */
    use_config(f, PROXY TWO_PORTS);
    ex = request(f, true, "GET", "web", "/admin");
    assert_int_equal(rete_filter_authz.on_request(ex), RETE_FILTER_NEXT);
}

/* ---- inbound port ---- */

static void test_inbound_port_from_header(void **state)
{
    fixture *f = *state;
    rete_exchange *ex = request(f, true, "GET", "web", "/");
    header(ex, "x-rete-target-port", "9000");
    header(ex, "x-other", "kept");
    assert_int_equal(rete_filter_inbound_port.on_request(ex), RETE_FILTER_NEXT);
    assert_int_equal(ex->target_port, 9000);
    assert_null(rete_msg_get(&ex->req, RETE_VIEW_LIT("x-rete-target-port")).p); /* never to the app */
    assert_non_null(rete_msg_get(&ex->req, RETE_VIEW_LIT("x-other")).p);

    const char *bad[] = {"0", "65536", "80a", "-1", "", " 80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ex = request(f, true, "GET", "web", "/");
        header(ex, "x-rete-target-port", bad[i]);
        assert_int_equal(rete_filter_inbound_port.on_request(ex), RETE_FILTER_DONE);
        assert_int_equal(f->side.status, 400);
        assert_string_equal(f->side.body, "bad x-rete-target-port\n");
    }
}

static void test_inbound_port_from_connect_authority(void **state)
{
    fixture *f = *state;
    rete_exchange *ex = request(f, true, "CONNECT", "10.1.2.3:8080", NULL);
    assert_int_equal(rete_filter_inbound_port.on_request(ex), RETE_FILTER_NEXT);
    assert_int_equal(ex->target_port, 8080);
    ex = request(f, true, "CONNECT", "[fd00::1]:9000", NULL); /* the last colon */
    assert_int_equal(rete_filter_inbound_port.on_request(ex), RETE_FILTER_NEXT);
    assert_int_equal(ex->target_port, 9000);
    const char *bad[] = {"10.1.2.3", "10.1.2.3:", "10.1.2.3:0", "10.1.2.3:99999", "[fd00::1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ex = request(f, true, "CONNECT", bad[i], NULL);
        assert_int_equal(rete_filter_inbound_port.on_request(ex), RETE_FILTER_DONE);
        assert_int_equal(f->side.heads, 0); /* a tunnel: closed, not answered */
        assert_int_equal(f->side.aborts, 1);
    }
}

/* Without a header: the original destination when the listener found one,
 * else the only declared port, else none (the app filter answers 404). */
static void test_inbound_port_defaults(void **state)
{
    fixture *f = *state;
    rete_exchange *ex = request(f, true, "GET", "web", "/");
    ex->target_port = 7000;
    assert_int_equal(rete_filter_inbound_port.on_request(ex), RETE_FILTER_NEXT);
    assert_int_equal(ex->target_port, 7000);
    ex = request(f, true, "GET", "web", "/");
    assert_int_equal(rete_filter_inbound_port.on_request(ex), RETE_FILTER_NEXT);
    assert_int_equal(ex->target_port, 0);
    use_config(f, PROXY "  inbound: [{port: 8081}]\n");
    ex = request(f, true, "GET", "web", "/");
    assert_int_equal(rete_filter_inbound_port.on_request(ex), RETE_FILTER_NEXT);
    assert_int_equal(ex->target_port, 8081);
}

/* ---- app (its local answers) ---- */

static void test_app_refusals(void **state)
{
    fixture *f = *state;
    rete_exchange *ex = request(f, true, "GET", "web", "/");
    ex->target_port = 7777;
    assert_int_equal(rete_filter_app.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.status, 404);
    assert_string_equal(f->side.body, "workload demo/web-0 serves no port 7777\n");
    assert_int_equal(ex->error, RETE_EXE_NO_ROUTE);

    ex = request(f, true, "GET", "web", "/");
    ex->target_port = 9000;
    assert_int_equal(rete_filter_app.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.status, 400);
    assert_string_equal(f->side.body, "port 9000 is a TCP port\n");

    /* raw bytes from outside the mesh to an HTTP port: closed */
    ex = request(f, true, "CONNECT", "10.1.2.3:8080", NULL);
    ex->peer_id[0] = '\0';
    ex->target_port = 8080;
    assert_int_equal(rete_filter_app.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.aborts, 1);
    assert_int_equal(ex->error, RETE_EXE_BAD_REQUEST);
}

/* ---- route (its local answers) and the response stage ---- */

static void test_route_local_answers(void **state)
{
    fixture *f = *state;
    rete_exchange *ex = request(f, false, "GET", NULL, "/");
    assert_int_equal(rete_filter_route.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.status, 400);
    assert_string_equal(f->side.body, "request has no Host or :authority\n");
    assert_int_equal(ex->error, RETE_EXE_BAD_REQUEST);

    ex = request(f, false, "GET", "nosuch", "/");
    assert_int_equal(rete_filter_route.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.status, 404);
    assert_string_equal(f->side.body, "no service in the mesh is named \"nosuch\"\n");
    assert_int_equal(ex->error, RETE_EXE_NO_ROUTE);

    ex = request(f, false, "GET", "api.demo", "/elsewhere");
    assert_int_equal(rete_filter_route.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.status, 404);
    assert_string_equal(f->side.body, "no route of service demo/api matches GET /elsewhere\n");
    assert_null(ex->route);

    /* a redirect is answered here; the rule's response headers are added
     * by the chain's response stage, which the local answer runs through */
    ex = request(f, false, "GET", "api", "/old/x");
    assert_int_equal(rete_filter_route.on_request(ex), RETE_FILTER_DONE);
    assert_int_equal(f->side.status, 301);
    assert_string_equal(f->side.location, "http://new.example/old/x");
    assert_string_equal(f->side.x_added, "yes");
    assert_non_null(ex->route);
    assert_int_equal(ex->error, RETE_EXE_NONE);
}

/* ---- access log ---- */

static json_t *one_line(fixture *f)
{
    read_log(f);
    assert_true(f->log_len > 0);
    assert_int_equal(f->log_buf[f->log_len - 1], '\n');
    assert_ptr_equal(strchr(f->log_buf, '\n'), f->log_buf + f->log_len - 1); /* one line */
    json_error_t jerr;
    json_t *j = json_loadb(f->log_buf, f->log_len, 0, &jerr);
    if (!j)
        fail_msg("not JSON (%s): %s", jerr.text, f->log_buf);
    return j;
}

static void test_access_log_one_escaped_line(void **state)
{
    fixture *f = *state;
    capture_log(f);
    rete_exchange *ex = request(f, true, "GET", "web\"x", "/a\"b\\c\x01\n{");
    header(ex, "x-request-id", "id\",\"status\":200");
    ex->error = RETE_EXE_DENIED;
    ex->req_bytes = 12;
    ex->resp_bytes = 34;
    rete_filter_end end = {.status = 403, .duration_ns = 1500000, .now_ns = 0};
    rete_filter_access_log.on_finish(ex, &end);
    json_t *j = one_line(f);
    assert_string_equal(json_string_value(json_object_get(j, "proxy")), "demo/web-0");
    assert_string_equal(json_string_value(json_object_get(j, "listener")), "mesh");
    assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(j, "authority")), "web\"x");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/a\"b\\c\x01\n{");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 403);
    assert_string_equal(json_string_value(json_object_get(j, "flags")), rete_ex_error_flag(RETE_EXE_DENIED));
    assert_true(json_number_value(json_object_get(j, "duration_ms")) > 1.49);
    assert_true(json_number_value(json_object_get(j, "duration_ms")) < 1.51);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes_in")), 12);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes_out")), 34);
    assert_string_equal(json_string_value(json_object_get(j, "upstream")), "-");
    assert_string_equal(json_string_value(json_object_get(j, "peer")), "spiffe://cluster.local/ns/demo/sa/api");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "id\",\"status\":200");
    assert_null(json_object_get(j, "truncated"));
    json_decref(j);
}

/* A path longer than its cap is cut, and the line says so. */
static void test_access_log_caps_a_long_path(void **state)
{
    fixture *f = *state;
    capture_log(f);
    static char path[4096];
    memset(path, '"', sizeof path - 1);
    path[0] = '/';
    rete_exchange *ex = request(f, false, "GET", "api", path);
    ex->peer_id[0] = '\0';
    rete_filter_end end = {.status = 200};
    rete_filter_access_log.on_finish(ex, &end);
    json_t *j = one_line(f);
    assert_true(json_string_length(json_object_get(j, "path")) <= 512);
    assert_string_equal(json_string_value(json_object_get(j, "peer")), "10.0.0.9:4444");
    assert_true(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
}

/* ---- the sequencer ---- */

/* dispatch runs the inbound chain in order and stops at the first filter
 * that handles the request: the port is found, authz answers 403, the app
 * is never reached; at the end, telemetry counts and the log writes one
 * line, once. */
static void test_dispatch_stops_at_the_answer(void **state)
{
    fixture *f = *state;
    capture_log(f);
    rete_exchange *ex = request(f, true, "GET", "web", "/admin/./x");
    header(ex, "x-rete-target-port", "8080");
    rete_dispatch(ex);
    assert_int_equal(ex->target_port, 8080);
    assert_int_equal(f->side.status, 403);
    assert_int_equal(ex->error, RETE_EXE_DENIED);
    assert_string_equal(f->side.body, "RBAC: access denied by policy demo/deny-admin\n");
    assert_int_equal(rete_metrics_counter_value(f->proxy.metrics, f->w.ms.responses[4]), 0);
    rete_ex_detach(ex, RETE_DOWNSTREAM);
    f->ex = NULL;
    assert_int_equal(rete_metrics_counter_value(f->proxy.metrics, f->w.ms.responses[4]), 1);
    json_t *j = one_line(f);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 403);
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/admin/x"); /* normalised */
    json_decref(j);
    /* finishing twice logs once */
    rete_ex_reap(&f->w);
    read_log(f);
    assert_ptr_equal(strchr(f->log_buf, '\n'), f->log_buf + f->log_len - 1);
}

/* A path that cannot be normalised safely is refused before any filter. */
static void test_dispatch_refuses_a_bad_path(void **state)
{
    fixture *f = *state;
    rete_exchange *ex = request(f, true, "GET", "web", "/a/%2e%2e/%00");
    header(ex, "x-rete-target-port", "bogus");
    rete_dispatch(ex);
    assert_int_equal(f->side.status, 400);
    assert_non_null(strstr(f->side.body, "bad request path"));
    assert_int_equal(ex->target_port, 0); /* the inbound-port filter never ran */
}

/* ---- body stages ---- */

typedef struct body_call {
    char filter;   /* which recording filter */
    bool request;  /* request body stage, else response */
    char data[16]; /* the chunk, NUL-terminated */
    size_t len;
    bool end;
    uint32_t n_trailers; /* 0: trailers was NULL */
    char trailer[32];    /* the first trailer, "name: value" */
} body_call;

static body_call calls[16];
static size_t n_calls;

static void record(char filter, bool request, const rete_filter_body *b)
{
    assert_true(n_calls < sizeof calls / sizeof calls[0]);
    body_call *c = &calls[n_calls++];
    memset(c, 0, sizeof *c);
    c->filter = filter;
    c->request = request;
    assert_true(b->len < sizeof c->data);
    if (b->len)
        memcpy(c->data, b->data, b->len);
    c->len = b->len;
    c->end = b->end;
    if (b->trailers) {
        const rete_header *h = &b->trailers->headers[0];
        c->n_trailers = b->trailers->n_headers;
        snprintf(c->trailer, sizeof c->trailer, "%.*s: %.*s", (int)h->name.len, h->name.p,
                 (int)h->value.len, h->value.p);
    }
}

static void a_request_body(rete_exchange *ex, const rete_filter_body *b)
{
    (void)ex;
    record('a', true, b);
}

static void a_response_body(rete_exchange *ex, const rete_filter_body *b)
{
    (void)ex;
    record('a', false, b);
}

static void c_request_body(rete_exchange *ex, const rete_filter_body *b)
{
    (void)ex;
    record('c', true, b);
}

/* a: both body stages; b: none; c: the request body only */
static const rete_filter rec_a = {.name = "a", .on_request_body = a_request_body,
                                  .on_response_body = a_response_body};
static const rete_filter rec_b = {.name = "b"};
static const rete_filter rec_c = {.name = "c", .on_request_body = c_request_body};

/* Chunks then the end, each to every filter that has the stage, in chain
 * order; the end carries the pipe's trailers, and no trailers as NULL. */
static void test_body_stages_in_chain_order(void **state)
{
    fixture *f = *state;
    n_calls = 0;
    const rete_filter *const filters[] = {&rec_a, &rec_b, &rec_c};
    rete_filter_chain c = {.filters = filters, .n = 3};
    assert_true(rete_filter_chain_prepare(&c));
    assert_int_equal(c.n_request_body, 2);
    assert_int_equal(c.n_response_body, 1);
    rete_exchange *ex = request(f, false, "POST", "api", "/api");

    assert_int_equal(rete_filter_chain_body(&c, ex, RETE_DOWNSTREAM, "hello", 5, false), 2);
    assert_int_equal(rete_filter_chain_body(&c, ex, RETE_DOWNSTREAM, "!", 1, false), 2);
    rete_msg_add(ex, &ex->req_body.trailers, RETE_VIEW_LIT("x-sum"), RETE_VIEW_LIT("42"));
    assert_int_equal(rete_filter_chain_body(&c, ex, RETE_DOWNSTREAM, NULL, 0, true), 2);
    assert_int_equal(rete_filter_chain_body(&c, ex, RETE_UPSTREAM, "ok", 2, false), 1);
    assert_int_equal(rete_filter_chain_body(&c, ex, RETE_UPSTREAM, NULL, 0, true), 1);

    const body_call want[] = {
        {'a', true, "hello", 5, false, 0, ""},     {'c', true, "hello", 5, false, 0, ""},
        {'a', true, "!", 1, false, 0, ""},         {'c', true, "!", 1, false, 0, ""},
        {'a', true, "", 0, true, 1, "x-sum: 42"},  {'c', true, "", 0, true, 1, "x-sum: 42"},
        {'a', false, "ok", 2, false, 0, ""},       {'a', false, "", 0, true, 0, ""},
    };
    assert_int_equal(n_calls, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < n_calls; i++) {
        assert_int_equal(calls[i].filter, want[i].filter);
        assert_int_equal(calls[i].request, want[i].request);
        assert_string_equal(calls[i].data, want[i].data);
        assert_int_equal(calls[i].len, want[i].len);
        assert_int_equal(calls[i].end, want[i].end);
        assert_int_equal(calls[i].n_trailers, want[i].n_trailers);
        assert_string_equal(calls[i].trailer, want[i].trailer);
    }
}

/* A chain without a body stage is not walked: a chunk calls only the stages
 * prepare gathered (a chain not prepared calls none even though its filter
 * has a stage). */
static void test_body_chain_without_stages_is_not_walked(void **state)
{
    fixture *f = *state;
    n_calls = 0;
    rete_exchange *ex = request(f, false, "POST", "api", "/api");
    const rete_filter *const none[] = {&rec_b, &rete_filter_access_log, &rete_filter_route};
    rete_filter_chain c = {.filters = none, .n = 3, .n_request_body = 1, .n_response_body = 1};
    assert_false(rete_filter_chain_prepare(&c));
    assert_int_equal(c.n_request_body, 0);
    assert_int_equal(c.n_response_body, 0);
    assert_int_equal(rete_filter_chain_body(&c, ex, RETE_DOWNSTREAM, "x", 1, false), 0);
    assert_int_equal(rete_filter_chain_body(&c, ex, RETE_UPSTREAM, NULL, 0, true), 0);

    const rete_filter *const only_request[] = {&rec_c};
    rete_filter_chain unprepared = {.filters = only_request, .n = 1};
    assert_int_equal(rete_filter_chain_body(&unprepared, ex, RETE_DOWNSTREAM, "x", 1, false), 0);
    assert_int_equal(n_calls, 0);
    assert_true(rete_filter_chain_prepare(&unprepared));
    assert_int_equal(unprepared.n_response_body, 0);
    assert_int_equal(rete_filter_chain_body(&unprepared, ex, RETE_UPSTREAM, "x", 1, false), 0);
    assert_int_equal(rete_filter_chain_body(&unprepared, ex, RETE_DOWNSTREAM, "x", 1, false), 1);
    assert_int_equal(n_calls, 1);
}

/* Through the exchange's pipes with the real chains: every chain has the
 * telemetry filter, whose body stages count an HTTP body's bytes (ends add
 * nothing); a tunnel's raw bytes are counted by the core, once; nothing is
 * counted after the finish stages; a local answer's body is counted. */
static void test_body_bytes_counted_by_telemetry(void **state)
{
    fixture *f = *state;
    assert_non_null(rete_request_path_get()->body);
    const rete_filter_chain *chains[] = {&rete_chain_outbound, &rete_chain_inbound};
    for (size_t i = 0; i < 2; i++) {
        /* telemetry's, and outbound the mirror's copy and the retry
         * filter's replay copy (request) and stream idle stamp (both) */
        assert_int_equal(chains[i]->n_request_body, i == 0 ? 3 : 1);
        assert_int_equal(chains[i]->n_response_body, i == 0 ? 2 : 1);
    }
    for (int admin = 0; admin < 2; admin++) {
        for (int inbound = 0; inbound < 2; inbound++) {
            rete_exchange *ex = request(f, inbound, "POST", "api", "/api");
            ex->admin = admin;
            assert_false(rete_ex_push(ex, RETE_DOWNSTREAM, "hello", 5));
            assert_false(rete_ex_push(ex, RETE_DOWNSTREAM, "world!", 6));
            rete_ex_end(ex, RETE_DOWNSTREAM);
            assert_false(rete_ex_push(ex, RETE_UPSTREAM, "abc", 3));
            rete_ex_end(ex, RETE_UPSTREAM);
            assert_int_equal(ex->req_bytes, 11);
            assert_int_equal(ex->resp_bytes, 3);
        }
    }

    rete_exchange *ex = request(f, false, "CONNECT", "10.1.2.3:9000", NULL);
    rete_ex_push(ex, RETE_DOWNSTREAM, "raw", 3);
    rete_ex_push(ex, RETE_UPSTREAM, "bytes", 5);
    assert_int_equal(ex->req_bytes, 3);
    assert_int_equal(ex->resp_bytes, 5);

    /* nothing after the finish stages: a filter may release its state there */
    ex = request(f, false, "POST", "api", "/api");
    rete_ex_push(ex, RETE_DOWNSTREAM, "ab", 2);
    ex->done = true;
    rete_ex_push(ex, RETE_DOWNSTREAM, "cd", 2);
    rete_ex_end(ex, RETE_DOWNSTREAM);
    assert_int_equal(ex->req_bytes, 2);

    ex = request(f, false, "GET", "nosuch", "/");
    rete_dispatch(ex);
    assert_int_equal(f->side.status, 404);
    assert_int_equal(ex->resp_bytes, f->side.body_len);
    assert_true(ex->resp_bytes > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chain_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_abort_answers_before_the_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authz_denies_with_403_allows_with_next, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbound_port_from_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbound_port_from_connect_authority, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbound_port_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_app_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_local_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_log_one_escaped_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_log_caps_a_long_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_stops_at_the_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_refuses_a_bad_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_stages_in_chain_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_chain_without_stages_is_not_walked, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_body_bytes_counted_by_telemetry, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
