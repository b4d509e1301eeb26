/* DNS wire format (dns_wire.h). RFC 1035 sections cited beside each rule. */
#include "dns_wire.h"

#include <string.h>

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

rete_rc rete_dns_parse(const uint8_t *buf, size_t len, rete_dns_msg *m)
{
    if (len < RETE_DNS_HEADER)
        return RETE_EINVAL;
    m->id = get16(buf);
    m->flags = get16(buf + 2);
    if (get16(buf + 4) != 1) /* QDCOUNT: every resolver sends one question */
        return RETE_EINVAL;
    size_t off = RETE_DNS_HEADER, wire = 0, text = 0;
    m->name_text = true;
    for (;;) {
        if (off >= len)
            return RETE_EINVAL;
        uint8_t l = buf[off++];
        if (l == 0)
            break;
        if (l & 0xc0) /* 4.1.4: a pointer (or a reserved type) has no place in a question */
            return RETE_EINVAL;
        if (off + l > len)
            return RETE_EINVAL;
        wire += 1u + l;
        if (wire + 1 > RETE_DNS_MAX_NAME) /* 2.3.4: 255 octets, the root label included */
            return RETE_EINVAL;
        if (text)
            m->name[text++] = '.';
        for (size_t i = 0; i < l; i++) {
            uint8_t c = buf[off + i];
            if (c <= 0x20 || c >= 0x7f || c == '.')
                m->name_text = false;
            m->name[text++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
        }
        off += l;
    }
    m->name[text] = '\0';
    if (off + 4 > len)
        return RETE_EINVAL;
    m->qtype = get16(buf + off);
    m->qclass = get16(buf + off + 2);
    m->question_end = off + 4;
    return RETE_OK;
}

size_t rete_dns_answer(const rete_dns_msg *q, const uint8_t *qbuf, uint16_t rcode,
                       const uint8_t *addrs, size_t n, uint32_t ttl, uint8_t *out, size_t outlen)
{
    size_t rdlen = q->qtype == RETE_DNS_TYPE_AAAA ? 16 : 4;
    size_t rr = 12 + rdlen; /* pointer, type, class, TTL, RDLENGTH, RDATA */
    size_t head = q->question_end;
    if (head > outlen || head > RETE_DNS_UDP_MAX)
        return 0;
    size_t room = (outlen < RETE_DNS_UDP_MAX ? outlen : RETE_DNS_UDP_MAX) - head;
    if (n > room / rr)
        n = room / rr;
    memcpy(out, qbuf, head);
    /* 4.1.1: QR=1, opcode and RD as asked, AA=1 (the mesh's own names), RA=1 */
    uint16_t flags = (uint16_t)(RETE_DNS_FLAG_QR | (q->flags & 0x7900) | 0x0400 | 0x0080 | (rcode & 0xf));
    put16(out + 2, flags);
    put16(out + 6, (uint16_t)n); /* ANCOUNT */
    put16(out + 8, 0);
    put16(out + 10, 0);
    uint8_t *p = out + head;
    for (size_t i = 0; i < n; i++, p += rr) {
        put16(p, 0xc000 | RETE_DNS_HEADER); /* 4.1.4: the question's name */
        put16(p + 2, q->qtype);
        put16(p + 4, RETE_DNS_CLASS_IN);
        put16(p + 6, (uint16_t)(ttl >> 16));
        put16(p + 8, (uint16_t)ttl);
        put16(p + 10, (uint16_t)rdlen);
        memcpy(p + 12, addrs + i * rdlen, rdlen);
    }
    return head + n * rr;
}

size_t rete_dns_answer_header(const uint8_t *buf, size_t len, uint16_t rcode, uint8_t *out,
                              size_t outlen)
{
    if (len < RETE_DNS_HEADER || outlen < RETE_DNS_HEADER)
        return 0;
    memset(out, 0, RETE_DNS_HEADER);
    memcpy(out, buf, 2);
    uint16_t flags = (uint16_t)(RETE_DNS_FLAG_QR | (get16(buf + 2) & 0x7900) | 0x0080 | (rcode & 0xf));
    put16(out + 2, flags);
    return RETE_DNS_HEADER;
}
