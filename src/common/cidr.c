/* CIDRs (cidr.h). */
#include "cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

bool rete_cidr_parse(const char *s, rete_cidr *c)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    if (hl == 0 || hl >= sizeof(host))
        return false;
    memcpy(host, s, hl);
    host[hl] = '\0';
    unsigned char addr[16] = {0};
    int family = strchr(host, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(family, host, addr) != 1)
        return false;
    unsigned max = family == AF_INET ? 32 : 128;
    unsigned prefix = max;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3)
            return false;
        prefix = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return false;
            prefix = prefix * 10 + (unsigned)(*p - '0');
        }
        if (prefix > max)
            return false;
    }
    for (unsigned bit = prefix; bit < max; bit++)
        if (addr[bit / 8] & (0x80u >> (bit % 8)))
            return false;
    char canon[INET6_ADDRSTRLEN];
    inet_ntop(family, addr, canon, sizeof(canon));
    c->family = family;
    c->prefix = prefix;
    memcpy(c->addr, addr, sizeof(addr));
    snprintf(c->text, sizeof(c->text), "%s/%u", canon, prefix);
    return true;
}

bool rete_cidr_contains(const rete_cidr *c, const char *ip)
{
    unsigned char a[16] = {0};
    int family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (family != c->family || inet_pton(family, ip, a) != 1)
        return false;
    for (unsigned bit = 0; bit < c->prefix; bit++) {
        unsigned char m = (unsigned char)(0x80u >> (bit % 8));
        if ((a[bit / 8] & m) != (c->addr[bit / 8] & m))
            return false;
    }
    return true;
}

uint64_t rete_cidr_size(const rete_cidr *c, uint64_t cap)
{
    unsigned host_bits = (c->family == AF_INET ? 32u : 128u) - c->prefix;
    if (host_bits >= 64 || (UINT64_C(1) << host_bits) > cap)
        return cap;
    return UINT64_C(1) << host_bits;
}

bool rete_cidr_nth(const rete_cidr *c, uint64_t off, char *out, size_t outlen)
{
    if (off >= rete_cidr_size(c, UINT64_MAX))
        return false;
    unsigned char a[16];
    memcpy(a, c->addr, sizeof(a));
    size_t len = c->family == AF_INET ? 4 : 16;
    /* add off to the address, big-endian, from its last byte */
    unsigned carry = 0;
    for (size_t i = len; i-- > 0;) {
        unsigned sum = a[i] + (unsigned)(off & 0xff) + carry;
        a[i] = (unsigned char)sum;
        carry = sum >> 8;
        off >>= 8;
    }
    return inet_ntop(c->family, a, out, (socklen_t)outlen) != NULL;
}
