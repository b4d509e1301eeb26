/* The server name (SNI) of a TLS ClientHello, read from a connection's first
 * bytes, for routing TLS the proxy does not terminate (docs/proxy.md, "TLS
 * passthrough"). No I/O, no allocation: bytes in, a view into them out. */
#ifndef RETE_TLS_HELLO_H
#define RETE_TLS_HELLO_H

#include <stddef.h>
#include <stdint.h>

#include "view.h"

typedef enum rete_hello_result {
    RETE_HELLO_SNI,  /* *sni: the host_name, a valid DNS name (1..253 bytes, LDH labels) */
    RETE_HELLO_NONE, /* a whole ClientHello without a usable server_name */
    RETE_HELLO_MORE, /* the first record is not all in buf yet */
    RETE_HELLO_BAD,  /* not a well-formed ClientHello in one record */
} rete_hello_result;

/* Parse the first TLS record of buf[0..len) as a ClientHello (RFC 8446 §4.1.2,
 * §5.1) and find its server_name extension (RFC 6066 §3). A ClientHello
 * spread over several records is answered RETE_HELLO_NONE (rare; routed by
 * address). *sni points into buf and is set only for RETE_HELLO_SNI. */
rete_hello_result rete_tls_hello_sni(const uint8_t *buf, size_t len, rete_view *sni);

#endif
