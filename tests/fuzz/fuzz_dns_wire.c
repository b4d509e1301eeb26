/* libFuzzer target for src/common/dns_wire.c: the input is parsed as a DNS
 * message, flush against the end of its buffer. Besides memory errors
 * (ASan) it checks the contracts the sidecar's DNS relies on: a parsed
 * question ends inside the input, its name is NUL-terminated within bounds,
 * and the answer built from it parses again to the same ID, name and type,
 * fits the UDP limit, and carries the records it says. */
#include "dns_wire.h"
#include "fuzz.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rete_dns_msg q;
    uint8_t out[RETE_DNS_UDP_MAX];
    if (rete_dns_answer_header(data, size, RETE_DNS_RCODE_FORMERR, out, sizeof(out)))
        CHECK(memcmp(out, data, 2) == 0);
    if (rete_dns_parse(data, size, &q) != RETE_OK)
        return 0;
    CHECK(q.question_end <= size && q.question_end >= RETE_DNS_HEADER + 5);
    CHECK(strlen(q.name) <= 253);
    static const uint8_t addrs[64 * 16] = {10, 96, 0, 1};
    for (size_t n = 0; n <= 64; n += 21) {
        size_t len = rete_dns_answer(&q, data, RETE_DNS_RCODE_NOERROR, addrs, n, 30, out, sizeof(out));
        if (!len) {
            CHECK(q.question_end > sizeof(out));
            continue;
        }
        CHECK(len <= RETE_DNS_UDP_MAX);
        rete_dns_msg a;
        CHECK(rete_dns_parse(out, len, &a) == RETE_OK);
        CHECK(a.id == q.id && a.qtype == q.qtype && strcmp(a.name, q.name) == 0);
        CHECK(a.flags & RETE_DNS_FLAG_QR);
        size_t an = (size_t)(out[6] << 8 | out[7]);
        CHECK(an <= n && len == a.question_end + an * (q.qtype == RETE_DNS_TYPE_AAAA ? 28 : 16));
    }
    return 0;
}
