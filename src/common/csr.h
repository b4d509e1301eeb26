/* Certificate signing requests for SPIFFE identities: a fresh ECDSA P-256
 * key and a CSR carrying the URI SAN. Used by the proxy's bootstrap and
 * renewal, by `retectl identity issue` and by reted for its own
 * certificate. Private keys never leave the process that made them. */
#ifndef RETE_CSR_H
#define RETE_CSR_H

#include "error.h"

#include <stddef.h>

/* Returns the CSR (PEM, malloc'ed) and *key_pem_out (PEM, malloc'ed), or
 * NULL with *err set (RETE_EINVAL: not a SPIFFE ID; RETE_EIO: OpenSSL
 * failed). */
char *rete_csr_new(const char *spiffe_id, char **key_pem_out, rete_error *err);

/* The notAfter of the first certificate in a PEM file or text, as a Unix
 * time; 0 when it cannot be read. */
long long rete_cert_not_after_pem(const char *pem, size_t len);
/* Likewise for notBefore. */
long long rete_cert_not_before_pem(const char *pem, size_t len);

#endif
