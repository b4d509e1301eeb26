/* retectl's pure parts: kind names, the command line, tables and ages, JSON
 * to YAML, response parsing, and where the context comes from. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "context.h"
#include "ctl.h"
#include "http.h"
#include "ctl_kinds.h"
#include "table.h"
#include "yaml_out.h"

static void test_kind_aliases(void **state)
{
    (void)state;
    static const struct {
        const char *word, *kind;
    } cases[] = {
        {"svc", "Service"},
        {"Services", "Service"},
        {"SERVICE", "Service"},
        {"wl", "Workload"},
        {"workloads", "Workload"},
        {"httproute", "HTTPRoute"},
        {"HTTPRoutes", "HTTPRoute"},
        {"grpcroutes", "GRPCRoute"},
        {"tcproute", "TCPRoute"},
        {"dr", "DestinationRule"},
        {"destinationrules", "DestinationRule"},
        {"authorizationpolicy", "AuthorizationPolicy"},
        {"AuthorizationPolicies", "AuthorizationPolicy"},
        {"peerauthentications", "PeerAuthentication"},
        {"meshconfig", "MeshConfig"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const rete_ctl_kind *k = rete_ctl_kind_lookup(cases[i].word);
        assert_non_null(k);
        assert_string_equal(k->def->kind, cases[i].kind);
    }
    assert_null(rete_ctl_kind_lookup("pods"));
    assert_null(rete_ctl_kind_lookup(""));
    assert_null(rete_ctl_kind_lookup(NULL));
}

static void test_args(void **state)
{
    (void)state;
    rete_ctl_args a;
    rete_error err = {0};
    char *argv1[] = {"svc", "echo", "-n", "prod", "-o=yaml", "--server=h:1", "-vv"};
    assert_int_equal(
        rete_ctl_args_parse(7, argv1, CTL_F_GLOBAL | CTL_F_NAMESPACE | CTL_F_OUTPUT, &a, &err),
        RETE_OK);
    assert_int_equal(a.n_pos, 2);
    assert_string_equal(a.pos[1], "echo");
    assert_string_equal(a.ns, "prod");
    assert_string_equal(a.output, "yaml");
    assert_string_equal(a.server, "h:1");
    assert_int_equal(a.verbose, 2);

    char *argv2[] = {"-f", "a.yaml", "-fb.yaml", "--filename", "-", "--", "-x"};
    assert_int_equal(rete_ctl_args_parse(7, argv2, CTL_F_GLOBAL | CTL_F_FILENAME, &a, &err),
                     RETE_OK);
    assert_int_equal(a.n_files, 3);
    assert_string_equal(a.files[1], "b.yaml");
    assert_string_equal(a.files[2], "-");
    assert_int_equal(a.n_pos, 1);
    assert_string_equal(a.pos[0], "-x");

    char *argv3[] = {"-A"};
    assert_int_equal(rete_ctl_args_parse(1, argv3, CTL_F_GLOBAL, &a, &err), RETE_EINVAL);
    assert_non_null(strstr(err.msg, "all-namespaces"));
    assert_int_equal(err.code, RETE_EINVAL); /* the error carries the code it returned */
    char *argv4[] = {"--bogus"};
    assert_int_equal(rete_ctl_args_parse(1, argv4, CTL_F_GLOBAL, &a, &err), RETE_EINVAL);
    char *argv5[] = {"-n"};
    assert_int_equal(rete_ctl_args_parse(1, argv5, CTL_F_NAMESPACE, &a, &err), RETE_EINVAL);
    char *argv6[] = {"--help=yes"};
    assert_int_equal(rete_ctl_args_parse(1, argv6, CTL_F_GLOBAL, &a, &err), RETE_EINVAL);

    char *argv7[] = {"retectl", "--server", "h:1", "-v", "get", "svc"};
    assert_int_equal(rete_ctl_find_verb(5, argv7 + 1) + 1, 4);
    char *argv8[] = {"retectl", "-v"};
    assert_int_equal(rete_ctl_find_verb(1, argv8 + 1), 1);

    assert_non_null(rete_ctl_verb_lookup("proxy-status"));
    assert_null(rete_ctl_verb_lookup("proxy"));
}

static void test_duration(void **state)
{
    (void)state;
    int64_t s;
    assert_true(rete_ctl_parse_duration("90", &s));
    assert_int_equal(s, 90);
    assert_true(rete_ctl_parse_duration("1h", &s));
    assert_int_equal(s, 3600);
    assert_true(rete_ctl_parse_duration("1h30m", &s));
    assert_int_equal(s, 5400);
    assert_true(rete_ctl_parse_duration("2d", &s));
    assert_int_equal(s, 172800);
    assert_false(rete_ctl_parse_duration("", &s));
    assert_false(rete_ctl_parse_duration("0", &s));
    assert_false(rete_ctl_parse_duration("1x", &s));
    assert_false(rete_ctl_parse_duration("h", &s));
    assert_false(rete_ctl_parse_duration("1h30", &s));
    assert_false(rete_ctl_parse_duration("99999999999999999999", &s));
}

static void test_age(void **state)
{
    (void)state;
    static const struct {
        int64_t s;
        const char *out;
    } cases[] = {{-5, "0s"},
                 {0, "0s"},
                 {5, "5s"},
                 {59, "59s"},
                 {60, "1m"},
                 {3 * 60 + 59, "3m"},
                 {3599, "59m"},
                 {2 * 3600, "2h"},
                 {86399, "23h"},
                 {4 * 86400, "4d"},
                 {364 * 86400LL, "364d"},
                 {3 * 365 * 86400LL, "3y"}};
    char buf[32];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rete_ctl_format_age(cases[i].s, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].out);
    }
}

static void test_times(void **state)
{
    (void)state;
    time_t t;
    assert_true(rete_ctl_parse_time("1970-01-02T00:00:00Z", &t));
    assert_int_equal(t, 86400);
    assert_true(rete_ctl_parse_time("2024-05-01T10:00:00.123Z", &t));
    assert_int_equal(t, 1714557600);
    assert_true(rete_ctl_parse_time("2024-05-01T12:00:00+02:00", &t));
    assert_int_equal(t, 1714557600);
    assert_false(rete_ctl_parse_time("2024-05-01", &t));
    assert_false(rete_ctl_parse_time("2024-13-01T10:00:00Z", &t));
    assert_false(rete_ctl_parse_time("2024-05-01T10:00:00Zjunk", &t));
    assert_true(rete_ctl_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", &t));
    assert_int_equal(t, 784111777);
    assert_false(rete_ctl_parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT", &t));
    assert_false(rete_ctl_parse_http_date("", &t));
    json_t *n = json_integer(42);
    assert_true(rete_ctl_json_time(n, &t));
    assert_int_equal(t, 42);
    json_decref(n);
}

static char *render(const rete_ctl_table *t)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    rete_ctl_table_print(t, f);
    fclose(f);
    return buf;
}

static void test_table(void **state)
{
    (void)state;
    rete_ctl_table t;
    rete_ctl_table_init(&t, 3);
    const char *h[] = {"NAME", "PORTS", "AGE"};
    const char *r1[] = {"echo", "80/HTTP", "5s"};
    const char *r2[] = {"a-much-longer-name", NULL, "4d"};
    const char *r3[] = {"caf\xc3\xa9", "1/TCP", "3m"};
    rete_ctl_table_add_row(&t, h);
    rete_ctl_table_add_row(&t, r1);
    rete_ctl_table_add_row(&t, r2);
    rete_ctl_table_add_row(&t, r3);
    char *out = render(&t);
    assert_string_equal(out, "NAME                 PORTS     AGE\n"
                             "echo                 80/HTTP   5s\n"
                             "a-much-longer-name             4d\n"
                             "caf\xc3\xa9                 1/TCP     3m\n");
    free(out);
    rete_ctl_table_free(&t);
    assert_null(t.cells);
}

/* The text of column `col` of `get KIND` for resource `res`. */
static void check_cell(const char *kind, int col, const json_t *res, const char *want)
{
    char buf[256];
    const rete_ctl_kind *k = rete_ctl_kind_lookup(kind);
    assert_non_null(k);
    k->cols[col].cell(res, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static void test_cells(void **state)
{
    (void)state;
    char buf[256];
    json_t *svc = json_loads("{\"metadata\":{\"name\":\"echo\"},\"spec\":{\"ports\":[{\"port\":80},"
                             "{\"port\":9090,\"protocol\":\"GRPC\"}],\"selector\":{\"app\":"
                             "\"echo\",\"v\":\"1\"}}}",
                             0, NULL);
    assert_non_null(svc);
    check_cell("svc", 0, svc, "80/HTTP,9090/GRPC");
    check_cell("svc", 1, svc, "app=echo,v=1");
    json_decref(svc);

    /* list cells (one helper for ports, parents, hostnames): "," between, "<none>" when empty */
    json_t *hr = json_loads("{\"spec\":{\"parentRefs\":[{\"name\":\"gw\",\"port\":80},{\"name\":"
                            "\"echo\"},{}],\"hostnames\":[\"a.example\",\"b\"]}}",
                            0, NULL);
    assert_non_null(hr);
    check_cell("httproute", 0, hr, "gw:80,echo,?");
    check_cell("httproute", 2, hr, "a.example,b");
    json_object_del(json_object_get(hr, "spec"), "hostnames");
    check_cell("httproute", 2, hr, "<none>");
    json_decref(hr);

    json_t *empty = json_object();
    rete_ctl_cell_map(NULL, buf, sizeof(buf));
    assert_string_equal(buf, "<none>");
    json_decref(empty);

    json_t *p = json_loads("{\"versionSent\":4,\"versionAcked\":4}", 0, NULL);
    rete_ctl_proxy_state(p, buf, sizeof(buf));
    assert_string_equal(buf, "SYNCED");
    json_object_set_new(p, "versionSent", json_integer(5));
    rete_ctl_proxy_state(p, buf, sizeof(buf));
    assert_string_equal(buf, "STALE");
    json_object_set_new(p, "status", json_string("NACK"));
    json_object_set_new(p, "error", json_string("bad route"));
    rete_ctl_proxy_state(p, buf, sizeof(buf));
    assert_string_equal(buf, "NACK: bad route");
    json_decref(p);
}

static void check_yaml(const char *json, const char *want)
{
    json_error_t jerr;
    rete_error err = {0};
    json_t *v = json_loads(json, JSON_DECODE_ANY, &jerr);
    assert_non_null(v);
    char *y = rete_ctl_yaml_string(v, &err);
    assert_non_null(y);
    assert_string_equal(y, want);
    free(y);
    json_decref(v);
}

static void test_yaml(void **state)
{
    (void)state;
    check_yaml("{\"b\":1,\"a\":{\"list\":[1,\"x\",{\"k\":true}],\"empty\":{},\"none\":[],"
               "\"n\":null,\"f\":1.5,\"g\":2.0}}",
               "b: 1\n"
               "a:\n"
               "  list:\n"
               "  - 1\n"
               "  - x\n"
               "  - k: true\n"
               "  empty: {}\n"
               "  none: []\n"
               "  \"n\": null\n"
               "  f: 1.5\n"
               "  g: 2.0\n");
    check_yaml("{\"yes\":\"yes\",\"on\":\"on\",\"v\":\"1.0\",\"e\":\"\",\"t\":\"true\","
               "\"nul\":\"null\",\"tilde\":\"~\",\"i\":\"80\",\"hex\":\"0x1F\",\"date\":"
               "\"2024-01-01T00:00:00Z\",\"sexa\":\"1:20\",\"ip\":\"10.0.0.1\",\"plain\":"
               "\"hello world\",\"url\":\"http://a/b\",\"colon\":\"a: b\",\"hash\":\"#x\","
               "\"dash\":\"- x\",\"lead\":\" x\",\"N\":\"N\"}",
               "\"yes\": \"yes\"\n"
               "\"on\": \"on\"\n"
               "v: \"1.0\"\n"
               "e: \"\"\n"
               "t: \"true\"\n"
               "nul: \"null\"\n"
               "tilde: \"~\"\n"
               "i: \"80\"\n"
               "hex: \"0x1F\"\n"
               "date: \"2024-01-01T00:00:00Z\"\n"
               "sexa: \"1:20\"\n"
               "ip: 10.0.0.1\n"
               "plain: hello world\n"
               "url: http://a/b\n"
               "colon: 'a: b'\n"
               "hash: '#x'\n"
               "dash: '- x'\n"
               "lead: ' x'\n"
               "\"N\": \"N\"\n");
    check_yaml("[[1,2],[]]", "- - 1\n  - 2\n- []\n");
    check_yaml("{\"text\":\"line1\\nline2\\n\"}", "text: |\n  line1\n  line2\n");
    assert_true(rete_ctl_yaml_ambiguous("Off"));
    assert_true(rete_ctl_yaml_ambiguous("1e3"));
    assert_true(rete_ctl_yaml_ambiguous(".inf"));
    assert_true(rete_ctl_yaml_ambiguous("1_000"));
    assert_false(rete_ctl_yaml_ambiguous("echo"));
    assert_false(rete_ctl_yaml_ambiguous("1a"));
    assert_false(rete_ctl_yaml_ambiguous("v1.2.3"));
}

static void test_http_parse(void **state)
{
    (void)state;
    rete_ctl_response r;
    rete_error err = {0};
    const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: Sun, 06 Nov 1994 08:49:37 "
                     "GMT\r\nContent-Type: application/json\r\n\r\n{}";
    assert_int_equal(rete_ctl_http_parse(ok, strlen(ok) - 1, false, "GET", &r, &err), RETE_EAGAIN);
    assert_int_equal(rete_ctl_http_parse(ok, strlen(ok) - 1, true, "GET", &r, &err), RETE_EINVAL);
    assert_int_equal(rete_ctl_http_parse(ok, strlen(ok), false, "GET", &r, &err), RETE_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{}");
    assert_string_equal(r.date, "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_string_equal(r.content_type, "application/json");
    rete_ctl_response_free(&r);

    const char *ch = "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                     "2\r\nde\r\n0\r\n\r\n";
    assert_int_equal(rete_ctl_http_parse(ch, strlen(ch) - 2, false, "GET", &r, &err), RETE_EAGAIN);
    assert_int_equal(rete_ctl_http_parse(ch, strlen(ch), false, "GET", &r, &err), RETE_OK);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "abcde");
    assert_int_equal(r.body_len, 5);
    rete_ctl_response_free(&r);

    const char *eof = "HTTP/1.0 200 OK\r\n\r\nuntil close";
    assert_int_equal(rete_ctl_http_parse(eof, strlen(eof), false, "GET", &r, &err), RETE_EAGAIN);
    assert_int_equal(rete_ctl_http_parse(eof, strlen(eof), true, "GET", &r, &err), RETE_OK);
    assert_string_equal(r.body, "until close");
    rete_ctl_response_free(&r);

    const char *bad = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    assert_int_equal(rete_ctl_http_parse(bad, strlen(bad), false, "GET", &r, &err), RETE_EINVAL);

    char *e = rete_ctl_urlencode("dir/a b.yaml&x=1");
    assert_string_equal(e, "dir/a%20b.yaml%26x%3D1");
    free(e);
}

/* ---- context discovery, with a temporary HOME and working directory ---- */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void mkdirs(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0700);
            *p = '/';
        }
    mkdir(tmp, 0700);
}

static void test_context(void **state)
{
    (void)state;
    char root[] = "/tmp/rete-ctl-test-XXXXXX";
    assert_non_null(mkdtemp(root));
    char home[1100], proj[1100], deep[1100], path[1200], want[1200];
    rete_error err = {0};
    snprintf(home, sizeof(home), "%s/home", root);
    snprintf(proj, sizeof(proj), "%s/proj", root);
    snprintf(deep, sizeof(deep), "%s/proj/a/b", root);
    mkdirs(home);
    mkdirs(deep);
    rete_ctl_context ctx;
    rete_ctl_context_in in = {.cwd = deep, .home = home};

    /* 5: nothing anywhere */
    assert_int_equal(rete_ctl_context_discover(&in, &ctx, &err), RETE_OK);
    assert_string_equal(ctx.server, "127.0.0.1:15014");
    assert_string_equal(ctx.server_from, "default");
    assert_string_equal(ctx.token_file, "");

    /* 4: ~/.config/rete/context.json */
    snprintf(path, sizeof(path), "%s/.config/rete", home);
    mkdirs(path);
    snprintf(path, sizeof(path), "%s/.config/rete/context.json", home);
    write_text(path, "{\"api\": \"127.0.0.9:1000\", \"tokenFile\": \"/abs/admin.token\"}");
    assert_int_equal(rete_ctl_context_discover(&in, &ctx, &err), RETE_OK);
    assert_string_equal(ctx.server, "127.0.0.9:1000");
    assert_string_equal(ctx.server_from, path);
    assert_string_equal(ctx.token_file, "/abs/admin.token");

    /* 3: .demo/reted/context.json above the cwd wins; relative tokenFile */
    snprintf(path, sizeof(path), "%s/.demo/reted", proj);
    mkdirs(path);
    snprintf(path, sizeof(path), "%s/.demo/reted/context.json", proj);
    write_text(path, "{\"api\": \"127.0.0.8:2000\", \"tokenFile\": \"admin.token\"}");
    assert_int_equal(rete_ctl_context_discover(&in, &ctx, &err), RETE_OK);
    assert_string_equal(ctx.server, "127.0.0.8:2000");
    snprintf(want, sizeof(want), "%s/.demo/reted/admin.token", proj);
    assert_string_equal(ctx.token_file, want);
    assert_string_equal(ctx.token_from, path);

    /* 2: environment beats files, field by field */
    in.env_server = "127.0.0.7:3000";
    assert_int_equal(rete_ctl_context_discover(&in, &ctx, &err), RETE_OK);
    assert_string_equal(ctx.server, "127.0.0.7:3000");
    assert_string_equal(ctx.server_from, "RETE_SERVER");
    assert_string_equal(ctx.token_file, want);
    in.env_token_file = "/env/token";
    assert_int_equal(rete_ctl_context_discover(&in, &ctx, &err), RETE_OK);
    assert_string_equal(ctx.token_file, "/env/token");

    /* 1: flags beat everything */
    in.flag_server = "h:1";
    in.flag_token_file = "/flag/token";
    assert_int_equal(rete_ctl_context_discover(&in, &ctx, &err), RETE_OK);
    assert_string_equal(ctx.server, "h:1");
    assert_string_equal(ctx.server_from, "--server");
    assert_string_equal(ctx.token_file, "/flag/token");

    /* a broken context.json is an error, not silently skipped */
    in = (rete_ctl_context_in){.cwd = deep, .home = home};
    write_text(path, "{not json");
    assert_int_equal(rete_ctl_context_discover(&in, &ctx, &err), RETE_EINVAL);
    assert_non_null(strstr(err.msg, "context.json"));

    /* the token file: first line, trimmed */
    snprintf(path, sizeof(path), "%s/tok", root);
    write_text(path, "  abc123 \nsecond line\n");
    char *tok = rete_ctl_read_token(path, &err);
    assert_non_null(tok);
    assert_string_equal(tok, "abc123");
    free(tok);
    write_text(path, "\n");
    assert_null(rete_ctl_read_token(path, &err));
    assert_int_equal(err.code, RETE_EINVAL);
    assert_non_null(strstr(err.msg, "is empty"));

    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_aliases), cmocka_unit_test(test_args),
        cmocka_unit_test(test_duration),     cmocka_unit_test(test_age),
        cmocka_unit_test(test_times),        cmocka_unit_test(test_table),
        cmocka_unit_test(test_cells),        cmocka_unit_test(test_yaml),
        cmocka_unit_test(test_http_parse),   cmocka_unit_test(test_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
