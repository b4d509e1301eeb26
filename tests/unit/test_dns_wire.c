/* src/common/dns_wire.c and cidr.c: a query's question parsed (case folded,
 * refusals), a mesh answer built and parsed back; CIDR membership and the
 * n-th address, which reted's clusterIP allocator walks. The parser is also
 * fuzzed (tests/fuzz/fuzz_dns_wire.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "cidr.h"
#include "dns_wire.h"

static const uint8_t query[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
                                4, 'E', 'c', 'h', 'o', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};

static void test_parse_and_answer(void **state)
{
    (void)state;
    rete_dns_msg q, a;
    assert_int_equal(rete_dns_parse(query, sizeof(query), &q), RETE_OK);
    assert_int_equal(q.id, 0x1234);
    assert_string_equal(q.name, "echo.test");
    assert_true(q.name_text);
    assert_int_equal(q.qtype, RETE_DNS_TYPE_A);
    assert_int_equal(q.question_end, sizeof(query));
    const uint8_t ip[4] = {10, 96, 0, 7};
    uint8_t out[RETE_DNS_UDP_MAX];
    size_t n = rete_dns_answer(&q, query, RETE_DNS_RCODE_NOERROR, ip, 1, 30, out, sizeof(out));
    assert_int_equal(n, sizeof(query) + 16);
    assert_int_equal(rete_dns_parse(out, n, &a), RETE_OK);
    assert_int_equal(a.id, 0x1234);
    assert_int_equal(a.flags, 0x8580); /* QR AA RD RA, NOERROR */
    assert_int_equal(out[7], 1);       /* ANCOUNT */
    assert_memory_equal(out + n - 4, ip, 4);
    /* refused: cut short, two questions, a pointer in the question */
    for (size_t cut = 0; cut < sizeof(query); cut++)
        assert_int_equal(rete_dns_parse(query, cut, &q), RETE_EINVAL);
    uint8_t bad[sizeof(query)];
    memcpy(bad, query, sizeof(query));
    bad[5] = 2;
    assert_int_equal(rete_dns_parse(bad, sizeof(bad), &q), RETE_EINVAL);
    memcpy(bad, query, sizeof(query));
    bad[12] = 0xc0;
    assert_int_equal(rete_dns_parse(bad, sizeof(bad), &q), RETE_EINVAL);
    /* a '.' inside a label: parsed, but never a mesh name */
    memcpy(bad, query, sizeof(query));
    bad[14] = '.';
    assert_int_equal(rete_dns_parse(bad, sizeof(bad), &q), RETE_OK);
    assert_false(q.name_text);
    assert_int_equal(rete_dns_answer_header(query, sizeof(query), RETE_DNS_RCODE_FORMERR, out, sizeof(out)),
                     RETE_DNS_HEADER);
    assert_int_equal(out[3] & 0xf, RETE_DNS_RCODE_FORMERR);
}

static void test_cidr_range(void **state)
{
    (void)state;
    rete_cidr c;
    char ip[64];
    assert_true(rete_cidr_parse("10.96.0.0/28", &c));
    assert_int_equal(rete_cidr_size(&c, UINT64_MAX), 16);
    assert_true(rete_cidr_contains(&c, "10.96.0.15"));
    assert_false(rete_cidr_contains(&c, "10.96.0.16"));
    assert_false(rete_cidr_contains(&c, "fd00::1"));
    assert_true(rete_cidr_nth(&c, 15, ip, sizeof(ip)));
    assert_string_equal(ip, "10.96.0.15");
    assert_false(rete_cidr_nth(&c, 16, ip, sizeof(ip)));
    assert_true(rete_cidr_parse("fd00:10:96::/112", &c));
    assert_true(rete_cidr_nth(&c, 0x1ff, ip, sizeof(ip)));
    assert_string_equal(ip, "fd00:10:96::1ff");
    assert_true(rete_cidr_contains(&c, "FD00:10:96:0::1ff"));
    assert_int_equal(rete_cidr_size(&c, 1000), 1000);
    assert_false(rete_cidr_parse("10.96.0.1/16", &c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_answer),
        cmocka_unit_test(test_cidr_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
