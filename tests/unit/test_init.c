/* src/proxy/init: option validation (bad CIDR, port, missing proxy id) and
 * the rule text of both backends: order of the exclusions before the
 * redirects, removal that only names rete's own table. The rules' effect
 * on real traffic is tested in network namespaces (tests/system/test_intercept.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "init.h"

static int parse(rete_init_opts *o, char *err, size_t errlen, ...)
{
    char *argv[32] = {"init"};
    int argc = 1;
    va_list ap;
    va_start(ap, errlen);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    err[0] = '\0';
    return rete_init_parse(o, argc, argv, err, errlen);
}

static void test_cidr(void **state)
{
    (void)state;
    rete_init_cidr c;
    assert_true(rete_cidr_parse("10.250.0.0/16", &c));
    assert_int_equal(c.family, AF_INET);
    assert_string_equal(c.text, "10.250.0.0/16");
    assert_true(rete_cidr_parse("10.250.0.2", &c));
    assert_string_equal(c.text, "10.250.0.2/32");
    assert_true(rete_cidr_parse("FD00:0::/8", &c));
    assert_int_equal(c.family, AF_INET6);
    assert_string_equal(c.text, "fd00::/8");
    assert_true(rete_cidr_parse("0.0.0.0/0", &c));
    static const char *bad[] = {"", "/8", "10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/8x",
                                "10.0.0.0/-1", "300.0.0.0/8", "fd00::/129", "host.example/32",
                                "10.0.0.0/0008"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(rete_cidr_parse(bad[i], &c));
}

static void test_parse_errors(void **state)
{
    (void)state;
    rete_init_opts o;
    char err[256];
    assert_int_equal(parse(&o, err, sizeof(err), NULL), -1);
    assert_non_null(strstr(err, "--proxy-uid or --proxy-gid"));
    assert_int_equal(parse(&o, err, sizeof(err), "--proxy-gid", "1337", "--exclude-outbound-cidr",
                           "10.0.0.1/8", NULL), -1);
    assert_non_null(strstr(err, "--exclude-outbound-cidr 10.0.0.1/8"));
    assert_int_equal(parse(&o, err, sizeof(err), "--proxy-gid", "1337", "--inbound-port", "0", NULL), -1);
    assert_non_null(strstr(err, "--inbound-port 0: not a port"));
    assert_int_equal(parse(&o, err, sizeof(err), "--proxy-gid", "1337", "--address", "10.0.0.0/8", NULL),
                     -1);
    assert_non_null(strstr(err, "--address 10.0.0.0/8"));
    assert_int_equal(parse(&o, err, sizeof(err), "--proxy-uid", "-3", NULL), -1);
    assert_int_equal(parse(&o, err, sizeof(err), "--proxy-gid", "1", "--backend", "pf", NULL), -1);
    assert_non_null(strstr(err, "--backend pf"));
    assert_int_equal(parse(&o, err, sizeof(err), "--proxy-gid", "1", "--frobnicate", NULL), -1);
    assert_int_equal(parse(&o, err, sizeof(err), "--proxy-gid", "1", "--outbound-port", "15006", NULL),
                     -1);
    assert_int_equal(parse(&o, err, sizeof(err), "--proxy-gid", "1", "--no-ipv6", "--address", "fd00::2",
                           NULL), -1);
    /* --remove needs no proxy id: it only deletes what init owns */
    assert_int_equal(parse(&o, err, sizeof(err), "--remove", NULL), 0);
    assert_true(o.remove);
}

static void test_nft_script(void **state)
{
    (void)state;
    rete_init_opts o;
    char err[256];
    assert_int_equal(parse(&o, err, sizeof(err), "--proxy-uid", "1337", "--proxy-gid", "1338", "--dns-port",
                           "15053", "--exclude-outbound-cidr", "10.0.0.0/8", "--exclude-outbound-cidr",
                           "fd00::/8", "--exclude-outbound-port", "22", "--exclude-inbound-port", "9000",
                           "--exclude-inbound-port", "15008", "--address", "10.250.0.2", NULL),
                     0);
    char *s = rete_init_nft_script(&o);
    /* replaced in one transaction, whatever was there */
    assert_true(strncmp(s, "table inet rete\ndelete table inet rete\ntable inet rete {\n", 56) == 0);
    const char *order[] = {"meta skuid 1337 return", "meta skgid 1338 return", "udp dport 53 redirect to :15053",
                           "tcp dport 53 redirect to :15053", "meta l4proto != tcp return",
                           "ip daddr 127.0.0.0/8 return", "ip daddr 10.0.0.0/8 return",
                           "ip6 daddr fd00::/8 return", "tcp dport 22 return",
                           "meta l4proto tcp redirect to :15001", "tcp dport { 15008, 15000, 15020, 9000 } return",
                           "ip daddr 10.250.0.2/32 meta l4proto tcp redirect to :15006"};
    const char *at = s;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        const char *p = strstr(at, order[i]);
        if (!p)
            fail_msg("missing or out of order: %s\n%s", order[i], s);
        at = p;
    }
    assert_null(strstr(s, "ip6 daddr fd00::2")); /* no IPv6 address given: no IPv6 inbound rule */
    free(s);
    o.remove = true;
    s = rete_init_nft_script(&o);
    assert_string_equal(s, "table inet rete\ndelete table inet rete\n");
    free(s);
}

static void test_iptables_rules(void **state)
{
    (void)state;
    rete_init_opts o;
    char err[256];
    assert_int_equal(parse(&o, err, sizeof(err), "--proxy-gid", "1337", "--exclude-outbound-cidr",
                           "10.0.0.0/8", "--exclude-outbound-cidr", "fd00::/8", NULL),
                     0);
    char *v4 = rete_init_iptables_rules(&o, AF_INET);
    char *v6 = rete_init_iptables_rules(&o, AF_INET6);
    assert_non_null(strstr(v4, "-A RETE_OUTPUT -m owner --gid-owner 1337 -j RETURN\n"));
    assert_non_null(strstr(v4, "-A RETE_OUTPUT -d 10.0.0.0/8 -j RETURN\n"));
    assert_null(strstr(v4, "fd00::"));
    assert_non_null(strstr(v6, "-A RETE_OUTPUT -d fd00::/8 -j RETURN\n"));
    assert_non_null(strstr(v6, "-d ::1/128 -j RETURN"));
    assert_null(strstr(v6, "10.0.0.0"));
    assert_non_null(strstr(v4, "-m addrtype --dst-type LOCAL -j REDIRECT --to-ports 15006\nCOMMIT\n"));
    assert_true(strncmp(v4, "*nat\n:RETE_OUTPUT - [0:0]\n:RETE_INBOUND - [0:0]\n", 46) == 0);
    free(v4);
    free(v6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_nft_script),
        cmocka_unit_test(test_iptables_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
