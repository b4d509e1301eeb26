/* The CA shared by reted replicas through the replicated store (etcd): one
 * record, <prefix>meta/ca, holding the data directory's CA files, the admin
 * token and the trust domain. Certificates and bundles in clear; every
 * private key and the admin token sealed with AES-256-GCM under a
 * key-encryption key (KEK) that each replica reads from a file
 * (`reted --ca-kek FILE`), never stored in etcd. docs/operations.md, "The
 * CA on etcd", says what an etcd reader learns.
 *
 * KEK rotation: a replica holds a keyring, its --ca-kek (the current key)
 * and up to RETED_KEK_PREVIOUS_MAX --ca-kek-previous keys. It opens a
 * record sealed under any of them. A write (a CA rotation step) keeps the
 * record's KEK when the keyring holds it: only `reted rekey` moves the
 * record to the current key, so no restart order can lock a replica out;
 * the operator runs it once every replica holds the new key
 * (docs/operations.md, "Rotating the KEK"). */
#ifndef RETE_CONTROL_CA_SHARED_H
#define RETE_CONTROL_CA_SHARED_H

#include "error.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

#define RETED_KEK_LEN 32
#define RETED_KEK_PASSPHRASE_MIN 16 /* characters of a passphrase KEK file */
#define RETED_KEK_PREVIOUS_MAX 4    /* --ca-kek-previous files one replica holds */
#define RETED_KEK_ID_LEN 16

typedef struct reted_kek {
    uint8_t key[RETED_KEK_LEN];
    char id[RETED_KEK_ID_LEN + 1]; /* the first 8 bytes of SHA-256("rete kek id" || key), hex: names the key,
                                      reveals nothing */
} reted_kek;

typedef struct reted_keyring {
    reted_kek current;                          /* --ca-kek: seals a new record; `reted rekey`'s target */
    reted_kek previous[RETED_KEK_PREVIOUS_MAX]; /* --ca-kek-previous: open a record, never seal a new one */
    size_t n_previous;
    char record_kek[RETED_KEK_ID_LEN + 1];      /* the KEK of the store's record as last read ("" before) */
} reted_keyring;

/* The KEK file: exactly 32 bytes are the key; anything else is a passphrase
 * (its trailing newline dropped, at least RETED_KEK_PASSPHRASE_MIN
 * characters) the key is derived from with HKDF-SHA256. The file must not
 * be readable by group or others. */
RETE_MUST_CHECK rete_rc reted_kek_load(const char *path, reted_kek *out, rete_error *err);

/* Load a --ca-kek-previous file into ring (whose current key is loaded):
 * refused beyond RETED_KEK_PREVIOUS_MAX, or when it is a key the ring
 * already holds. */
RETE_MUST_CHECK rete_rc reted_keyring_add_previous(reted_keyring *ring, const char *path, rete_error *err);

/* The ring's key of that id, or NULL. */
/* The whole keyring from its files: --ca-kek `current` and the n `previous`
 * (reted and its store tool both take the two flags). */
RETE_MUST_CHECK rete_rc reted_keyring_load(reted_keyring *ring, const char *current, const char *const *previous,
                                           size_t n, rete_error *err);
const reted_kek *reted_keyring_find(const reted_keyring *ring, const char *id);

/* "ID (--ca-kek), ID (--ca-kek-previous), ...": what ring holds, for a
 * message. */
void reted_keyring_describe(const reted_keyring *ring, char *buf, size_t cap);

/* The record of data_dir's CA (ca/ files, admin.token, trust-domain),
 * private keys sealed under kek. malloc'ed JSON; NULL with *err. */
char *reted_ca_record_build(const char *data_dir, const reted_kek *kek, rete_error *err);

/* Write a record's files into data_dir (ca/ made to hold exactly the
 * record's files; admin.token and trust-domain), each sealed value opened
 * with the ring's key of its id. RETE_EINVAL with a clear message, naming
 * the KEK id it needs, when ring does not hold it or a value does not
 * open; then nothing on disk changed. ring->record_kek is set to the
 * record's KEK id on success. */
RETE_MUST_CHECK rete_rc reted_ca_record_unpack(const char *record, size_t len, const char *data_dir,
                                               reted_keyring *ring, rete_error *err);

/* The record with every sealed value opened with ring and sealed again
 * under ring->current (fresh nonces), and its kekId the current key's.
 * from: the KEK id it was sealed with. malloc'ed JSON; NULL with *err. */
char *reted_ca_record_reseal(const char *record, size_t len, const reted_keyring *ring,
                             char from[RETED_KEK_ID_LEN + 1], rete_error *err);

/* At a replica's start, before the CA is loaded: when the store holds the
 * record, data_dir is made to match it (td, when given, must be its trust
 * domain); when not, data_dir's CA is made as `reted init` does (or the
 * operator's CA files found there are used) and published, unless another
 * replica published first (then its record wins). *rev: the record's
 * revision. -1 after a message on stderr. */
int reted_ca_shared_start(rete_store *st, reted_keyring *ring, const char *data_dir, const char *td,
                          uint64_t *rev);

/* After a CA rotation step on this replica: publish data_dir's CA if the
 * record is still at *rev (RETE_ECONFLICT: another replica changed it
 * first), sealed under the record's KEK (ring->record_kek) when ring holds
 * it, else under the current one. */
RETE_MUST_CHECK rete_rc reted_ca_shared_publish(rete_store *st, reted_keyring *ring, const char *data_dir,
                                                uint64_t *rev, rete_error *err);

/* Whether the record moved past *rev; if so data_dir is brought to it and
 * *rev updated: 1 changed, 0 not, -1 error (*err). */
int reted_ca_shared_refresh(rete_store *st, reted_keyring *ring, const char *data_dir, uint64_t *rev,
                            rete_error *err);

/* `reted rekey`: re-seal the store's record under ring->current with a
 * compare on its revision. RETE_OK (from: the KEK it was sealed with; equal
 * to the current id when there was nothing to do), RETE_ENOTFOUND (no
 * record), RETE_ECONFLICT (it changed meanwhile: run again), else *err. */
RETE_MUST_CHECK rete_rc reted_ca_shared_rekey(rete_store *st, const reted_keyring *ring,
                                              char from[RETED_KEK_ID_LEN + 1], uint64_t *rev, rete_error *err);

#endif
