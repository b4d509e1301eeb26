/* The CA shared by reted replicas through the replicated store (etcd): one
 * record, <prefix>meta/ca, holding the data directory's CA files, the admin
 * token and the trust domain. Certificates and bundles in clear; every
 * private key and the admin token sealed with AES-256-GCM under a
 * key-encryption key (KEK) that each replica reads from a file
 * (`reted --ca-kek FILE`), never stored in etcd. docs/operations.md, "The
 * CA on etcd", says what an etcd reader learns. */
#ifndef RETE_CONTROL_CA_SHARED_H
#define RETE_CONTROL_CA_SHARED_H

#include "error.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

#define RETED_KEK_LEN 32
#define RETED_KEK_PASSPHRASE_MIN 16 /* characters of a passphrase KEK file */

typedef struct reted_kek {
    uint8_t key[RETED_KEK_LEN];
    char id[17]; /* the first 8 bytes of SHA-256("rete kek id" || key), hex: names the key, reveals nothing */
} reted_kek;

/* The KEK file: exactly 32 bytes are the key; anything else is a passphrase
 * (its trailing newline dropped, at least RETED_KEK_PASSPHRASE_MIN
 * characters) the key is derived from with HKDF-SHA256. The file must not
 * be readable by group or others. */
RETE_MUST_CHECK rete_rc reted_kek_load(const char *path, reted_kek *out, rete_error *err);

/* The record of data_dir's CA (ca/ files, admin.token, trust-domain),
 * private keys sealed under kek. malloc'ed JSON; NULL with *err. */
char *reted_ca_record_build(const char *data_dir, const reted_kek *kek, rete_error *err);

/* Write a record's files into data_dir (ca/ made to hold exactly the
 * record's files; admin.token and trust-domain). RETE_EINVAL with a clear
 * message when it was sealed under another KEK or does not open. */
RETE_MUST_CHECK rete_rc reted_ca_record_unpack(const char *record, size_t len, const char *data_dir,
                                               const reted_kek *kek, rete_error *err);

/* At a replica's start, before the CA is loaded: when the store holds the
 * record, data_dir is made to match it (td, when given, must be its trust
 * domain); when not, data_dir's CA is made as `reted init` does (or the
 * operator's CA files found there are used) and published, unless another
 * replica published first (then its record wins). *rev: the record's
 * revision. -1 after a message on stderr. */
int reted_ca_shared_start(rete_store *st, const reted_kek *kek, const char *data_dir, const char *td,
                          uint64_t *rev);

/* After a CA rotation step on this replica: publish data_dir's CA if the
 * record is still at *rev (RETE_ECONFLICT: another replica changed it
 * first). */
RETE_MUST_CHECK rete_rc reted_ca_shared_publish(rete_store *st, const reted_kek *kek, const char *data_dir,
                                                uint64_t *rev, rete_error *err);

/* Whether the record moved past *rev; if so data_dir is brought to it and
 * *rev updated: 1 changed, 0 not, -1 error (*err). */
int reted_ca_shared_refresh(rete_store *st, const reted_kek *kek, const char *data_dir, uint64_t *rev,
                            rete_error *err);

#endif
