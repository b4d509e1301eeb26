/* IPv4/IPv6 prefixes (CIDRs): parse, test membership, enumerate. No I/O,
 * no allocation. Used by `rete-proxy init` (excluded ranges, workload
 * addresses), the loader (MeshConfig serviceCIDR) and reted (clusterIP
 * assignment). */
#ifndef RETE_COMMON_CIDR_H
#define RETE_COMMON_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An address with a prefix length; `text` is its canonical form
 * ("fd00::/8", "10.96.0.0/16"). */
typedef struct rete_cidr {
    int family;            /* AF_INET or AF_INET6 */
    unsigned prefix;
    unsigned char addr[16];
    char text[64];
} rete_cidr;

/* Parse "ADDR[/PREFIX]" (IPv4 or IPv6; no prefix: a host) into *c; false
 * when it is not one. Bits past the prefix must be zero (10.0.0.1/8 is
 * most likely a typo). */
bool rete_cidr_parse(const char *s, rete_cidr *c);

/* `ip` (an IP literal) is inside c. */
bool rete_cidr_contains(const rete_cidr *c, const char *ip);

/* The number of addresses in c, capped at `cap`. */
uint64_t rete_cidr_size(const rete_cidr *c, uint64_t cap);

/* The address at offset `off` from the start of c, in canonical text into
 * out (>= 46 bytes); false when off is past its end. */
bool rete_cidr_nth(const rete_cidr *c, uint64_t off, char *out, size_t outlen);

#endif
