/* A P-256 key and a PKCS#10 CSR for `retectl identity issue`.
 *
 * NOTE: the CA engineer is adding rete_csr_new() to src/control/ca.c (branch
 * `ca`); it was not on that branch when retectl was written, so this is a
 * small stand-in with the same contract. Once ca.c is merged, retectl can
 * call rete_csr_new() and this file can go. */
#ifndef RETE_CTL_CSR_H
#define RETE_CTL_CSR_H

#include <stddef.h>

/* A fresh ECDSA P-256 key and a CSR signed with it (SHA-256), carrying
 * spiffe_id as a URI SAN when not NULL. Returns the CSR PEM (malloc'ed) and
 * the PKCS#8 key PEM in *key_pem_out (malloc'ed), or NULL with err. */
char *rete_ctl_csr_new(const char *spiffe_id, char **key_pem_out, char *err, size_t errlen);

#endif
