/* The mesh's certificate authority: an ECDSA P-256 root made at init (or an
 * operator-supplied root or intermediate with its key), workload
 * certificates for SPIFFE IDs signed from CSRs, and the trust bundle (one or
 * more roots: two while a rotation is in progress).
 *
 * Workload certificates: URI SAN spiffe://<td>/ns/<ns>/sa/<sa> (the only
 * SAN), digitalSignature, serverAuth+clientAuth, not a CA, validity
 * [now - 5 min, now + ttl], random 128-bit serial, chain = leaf + the
 * intermediate when the CA is one. The CSR's key is used, the CSR's subject
 * and extensions are ignored: the CA decides the identity. */
#ifndef RETE_CONTROL_CA_H
#define RETE_CONTROL_CA_H

#include "result.h"
#include "tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rete_ca rete_ca;

/* Create a new root (ECDSA P-256, 10 years, CN "<td> root") and write
 * dir/root.pem, dir/root-key.pem (0600) and dir/bundle.pem. dir is created
 * (0700) if missing. When dir already holds a root or an operator's
 * cert.pem/key.pem, nothing is generated: the CA is validated as by
 * rete_ca_load and bundle.pem written. trust_domain: "example.org" or
 * "spiffe://example.org". */
RETE_MUST_CHECK rete_rc rete_ca_init(const char *dir, const char *trust_domain, rete_error *err);

/* Load the CA from dir (root.pem + root-key.pem, or an operator's
 * cert.pem + key.pem [+ chain.pem] when present), and the bundle. An
 * operator CA must be a CA (basicConstraints CA:TRUE, keyCertSign), match
 * its key, be within its validity and chain to a self-signed root in
 * chain.pem (unless it is one); the bundle is then that root. bundle.pem is
 * rewritten when it differs from what the CA files say. The returned CA is
 * not thread-safe. */
rete_ca *rete_ca_load(const char *dir, const char *trust_domain, rete_error *err);

/* An operator's CA whose private key lives outside the data directory
 * (reted --ca-key FILE): every later rete_ca_load reads the key from `path`
 * (a file only reted's user may read: mode 0600 or 0400) instead of
 * ca/key.pem, which must then be absent. NULL: ca/key.pem, as before. */
void rete_ca_set_key_file(const char *path);
void rete_ca_free(rete_ca *ca);

/* Sign: csr_pem's public key, for spiffe_id, valid ttl_seconds. Returns the
 * PEM chain (leaf first; malloc'ed) or NULL with err. The CSR signature is
 * verified; only EC P-256 and RSA >= 2048 keys are accepted. */
char *rete_ca_sign_csr(rete_ca *ca, const char *csr_pem, size_t csr_len, const char *spiffe_id,
                       uint32_t ttl_seconds, int64_t *not_after, rete_error *err);

/* The same, with what reted knows of the certificate it signed (validity,
 * serial, the root it chains to) in *issued. */
char *rete_ca_sign_csr_facts(rete_ca *ca, const char *csr_pem, size_t csr_len, const char *spiffe_id,
                             uint32_t ttl_seconds, rete_cert_facts *issued, rete_error *err);

/* root_id (rete_cert_facts) of the root the signing CA chains to: a
 * certificate chains to it when its root_id is this one. False when it
 * cannot be computed. */
bool rete_ca_signing_root_id(const rete_ca *ca, uint8_t out[RETE_CERT_ROOT_ID_LEN]);

/* The trust bundle (PEM, every root in force) and the CA cert's expiry (the
 * earliest notAfter along the signing CA's chain: no leaf outlives it). */
const char *rete_ca_bundle_pem(const rete_ca *ca);
int64_t rete_ca_not_after(const rete_ca *ca);

/* Whether a rotation is in progress (root-next.pem signs; the bundle holds
 * both roots). */
bool rete_ca_rotating(const rete_ca *ca);

/* Rotation: add a new root to the bundle (kept beside the old), switch
 * signing to it, and later drop the old one. begin writes
 * root-next-key.pem, root-next.pem (its commit point) and bundle.pem;
 * finish renames them over root.pem / root-key.pem and rewrites bundle.pem;
 * rete_ca_load completes or discards a step a crash interrupted. Not
 * available for an operator-supplied CA (RETE_ESTATE): the operator
 * replaces cert.pem/key.pem. RETE_ESTATE also when begin is called during a
 * rotation or finish outside one. */
RETE_MUST_CHECK rete_rc rete_ca_rotate_begin(rete_ca *ca, const char *dir, rete_error *err);
RETE_MUST_CHECK rete_rc rete_ca_rotate_finish(rete_ca *ca, const char *dir, rete_error *err);

/* rete_csr_new (a key and a CSR for a SPIFFE ID) lives in src/common/csr.h. */
#include "csr.h"

#endif
