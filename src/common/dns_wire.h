/* The DNS wire format, as much of it as the sidecar's DNS needs (RFC 1035
 * section 4): a message's header and its one question, and the answers it
 * builds itself. No I/O, no allocation: (buf, len) in, a result out; fuzzed
 * by tests/fuzz/fuzz_dns_wire.c. Forwarded answers are relayed as received
 * (only the ID is rewritten), so nothing past the question is parsed. */
#ifndef RETE_COMMON_DNS_WIRE_H
#define RETE_COMMON_DNS_WIRE_H

#include "result.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    RETE_DNS_HEADER = 12,          /* RFC 1035 4.1.1 */
    RETE_DNS_MAX_NAME = 255,       /* RFC 1035 2.3.4, wire octets */
    RETE_DNS_UDP_MAX = 512,        /* a mesh answer never exceeds it (no EDNS needed) */
    RETE_DNS_TYPE_A = 1,
    RETE_DNS_TYPE_AAAA = 28,
    RETE_DNS_CLASS_IN = 1,
    RETE_DNS_RCODE_NOERROR = 0,
    RETE_DNS_RCODE_FORMERR = 1,
    RETE_DNS_RCODE_SERVFAIL = 2,
    RETE_DNS_RCODE_REFUSED = 5,
    RETE_DNS_FLAG_QR = 0x8000,
};

typedef struct rete_dns_msg {
    uint16_t id;
    uint16_t flags;                /* QR, opcode, AA, TC, RD, RA, rcode as on the wire */
    uint16_t qtype, qclass;
    /* The question's name, lower-case and dotted, no trailing dot ("" is
     * the root); `name_text` false when a label holds a '.', a byte outside
     * printable ASCII or the name is longer than text allows: such a name
     * is never a mesh name. */
    char name[RETE_DNS_MAX_NAME + 1];
    bool name_text;
    size_t question_end;           /* offset just past the question */
} rete_dns_msg;

/* Parse the header and the one question of a query or an answer.
 * RETE_EINVAL: shorter than a header, a count of questions other than one, a
 * compression pointer or a reserved label type in the question, a label or
 * name over the RFC 1035 limits, or the question cut short. */
RETE_MUST_CHECK rete_rc rete_dns_parse(const uint8_t *buf, size_t len, rete_dns_msg *m);

/* The answer to the query `q` (whose wire bytes are qbuf): header (ID, RD
 * and opcode from the query; QR, AA, RA set; `rcode`), the question copied,
 * then one record of q->qtype per address (4 bytes each for A, 16 for
 * AAAA; `addrs` holds n of them of that size), TTL `ttl`. As many addresses
 * as fit in RETE_DNS_UDP_MAX. Returns the length written into out, 0 when
 * out is too small. */
size_t rete_dns_answer(const rete_dns_msg *q, const uint8_t *qbuf, uint16_t rcode,
                       const uint8_t *addrs, size_t n, uint32_t ttl, uint8_t *out, size_t outlen);

/* A header-only answer (no question) with the ID of buf, which need only
 * be RETE_DNS_HEADER long: for a query whose question cannot be parsed.
 * Returns RETE_DNS_HEADER, or 0 when len or outlen is short. */
size_t rete_dns_answer_header(const uint8_t *buf, size_t len, uint16_t rcode, uint8_t *out,
                              size_t outlen);

#endif
