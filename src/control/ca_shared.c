/* The CA shared through the replicated store (ca_shared.h).
 *
 * The record, <prefix>meta/ca:
 *   {"format":1, "trustDomain":"example.org", "kekId":"<16 hex>",
 *    "files":{"ca/root.pem":{"text":"-----BEGIN CERTIFICATE..."},
 *             "ca/root-key.pem":{"sealed":{"alg":"AES-256-GCM","kekId":"...",
 *                                "nonce":"<b64 12 bytes>","data":"<b64 ciphertext || 16-byte tag>"}},
 *             "admin.token":{"sealed":{...}}, ...}}
 * A file is sealed when it is the admin token, its name ends in "key.pem",
 * or it holds "PRIVATE KEY". Each seal takes a fresh random nonce; its
 * additional data is "rete-ca/1/" + the file's name, so a sealed value
 * cannot be moved to another name. Every sealed value names its KEK and is
 * opened with the ring's key of that id; the record's kekId is the one
 * all its values are sealed with (a build or a re-seal seals all under one
 * key, and the record is written whole). */
#include "ca_shared.h"

#include "alloc.h"
#include "datadir.h"
#include "defaults.h"
#include "file.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#define CA_RECORD "ca"
#define CA_RECORD_FORMAT 1
#define CA_FILE_MAX (256u << 10)  /* one CA file (a PEM chain) */
#define CA_FILES_MAX 32           /* files in ca/ */
#define GCM_NONCE 12
#define GCM_TAG 16
#define KEK_FILE_MAX 4096

/* ---- the KEK ---- */

static rete_rc kek_load_as(const char *flag, const char *path, reted_kek *out, rete_error *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return rete_error_set(err, RETE_ENOTFOUND, "%s %s: %s", flag, path, strerror(errno));
    if (sb.st_mode & 077)
        return rete_error_set(err, RETE_EINVAL,
                              "%s %s: readable by group or others (mode %03o): chmod 600 it",
                              flag, path, (unsigned)(sb.st_mode & 0777));
    size_t n = 0;
    char *data = rete_file_read(path, KEK_FILE_MAX, &n);
    if (!data)
        return rete_error_set(err, RETE_EIO, "%s %s: cannot read it (at most %d bytes)", flag, path,
                              KEK_FILE_MAX);
    rete_rc rc = RETE_OK;
    if (n == RETED_KEK_LEN) {
        memcpy(out->key, data, RETED_KEK_LEN);
    } else {
        while (n && (data[n - 1] == '\n' || data[n - 1] == '\r'))
            n--;
        if (n < RETED_KEK_PASSPHRASE_MIN) {
            rc = rete_error_set(err, RETE_EINVAL,
                                "%s %s: neither 32 bytes of key nor a passphrase of at least %d "
                                "characters",
                                flag, path, RETED_KEK_PASSPHRASE_MIN);
        } else {
            EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
            size_t len = RETED_KEK_LEN;
            static const char salt[] = "rete-ca-kek-v1", info[] = "rete ca key-encryption key";
            if (!kc || EVP_PKEY_derive_init(kc) <= 0 || EVP_PKEY_CTX_set_hkdf_md(kc, EVP_sha256()) <= 0 ||
                EVP_PKEY_CTX_set1_hkdf_salt(kc, (const unsigned char *)salt, sizeof salt - 1) <= 0 ||
                EVP_PKEY_CTX_set1_hkdf_key(kc, (const unsigned char *)data, (int)n) <= 0 ||
                EVP_PKEY_CTX_add1_hkdf_info(kc, (const unsigned char *)info, sizeof info - 1) <= 0 ||
                EVP_PKEY_derive(kc, out->key, &len) <= 0 || len != RETED_KEK_LEN)
                rc = rete_error_set_ssl(err, RETE_EIO, "%s %s: HKDF", flag, path);
            EVP_PKEY_CTX_free(kc);
        }
    }
    OPENSSL_cleanse(data, n);
    free(data);
    if (rc != RETE_OK)
        return rc;
    uint8_t in[11 + RETED_KEK_LEN], h[EVP_MAX_MD_SIZE];
    unsigned hl = 0;
    memcpy(in, "rete kek id", 11);
    memcpy(in + 11, out->key, RETED_KEK_LEN);
    int ok = EVP_Digest(in, sizeof in, h, &hl, EVP_sha256(), NULL);
    OPENSSL_cleanse(in, sizeof in);
    if (ok != 1)
        return rete_error_set_ssl(err, RETE_EIO, "%s %s: SHA-256", flag, path);
    for (int i = 0; i < 8; i++)
        snprintf(out->id + 2 * i, 3, "%02x", h[i]);
    return RETE_OK;
}

rete_rc reted_kek_load(const char *path, reted_kek *out, rete_error *err)
{
    return kek_load_as("--ca-kek", path, out, err);
}

rete_rc reted_keyring_add_previous(reted_keyring *ring, const char *path, rete_error *err)
{
    if (ring->n_previous == RETED_KEK_PREVIOUS_MAX)
        return rete_error_set(err, RETE_ELIMIT, "--ca-kek-previous %s: at most %d previous keys", path,
                              RETED_KEK_PREVIOUS_MAX);
    reted_kek k;
    rete_rc rc = kek_load_as("--ca-kek-previous", path, &k, err);
    if (rc != RETE_OK)
        return rc;
    if (reted_keyring_find(ring, k.id)) {
        rc = rete_error_set(err, RETE_EINVAL, "--ca-kek-previous %s: key %s is given already", path, k.id);
        OPENSSL_cleanse(&k, sizeof k);
        return rc;
    }
    ring->previous[ring->n_previous++] = k;
    OPENSSL_cleanse(&k, sizeof k);
    return RETE_OK;
}

rete_rc reted_keyring_load(reted_keyring *ring, const char *current, const char *const *previous, size_t n,
                          rete_error *err)
{
    RETE_GUARD(reted_kek_load(current, &ring->current, err));
    for (size_t i = 0; i < n; i++)
        RETE_GUARD(reted_keyring_add_previous(ring, previous[i], err));
    return RETE_OK;
}

const reted_kek *reted_keyring_find(const reted_keyring *ring, const char *id)
{
    if (!id)
        return NULL;
    if (strcmp(ring->current.id, id) == 0)
        return &ring->current;
    for (size_t i = 0; i < ring->n_previous; i++)
        if (strcmp(ring->previous[i].id, id) == 0)
            return &ring->previous[i];
    return NULL;
}

void reted_keyring_describe(const reted_keyring *ring, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s (--ca-kek)", ring->current.id);
    for (size_t i = 0; i < ring->n_previous && n > 0 && (size_t)n < cap; i++)
        n += snprintf(buf + n, cap - (size_t)n, ", %s (--ca-kek-previous)", ring->previous[i].id);
}

/* ---- base64 ---- */

static json_t *b64(const uint8_t *p, size_t n)
{
    char *out = rete_malloc(4 * ((n + 2) / 3) + 1);
    int len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    json_t *j = json_stringn(out, (size_t)len);
    free(out);
    return j;
}

static uint8_t *unb64(json_t *j, size_t *len)
{
    const char *s = json_string_value(j);
    size_t n = s ? json_string_length(j) : 1;
    if (!s || n % 4)
        return NULL;
    uint8_t *out = rete_malloc(n / 4 * 3 + 1);
    int got = n ? EVP_DecodeBlock(out, (const unsigned char *)s, (int)n) : 0;
    if (got < 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)got - (n >= 2 ? (s[n - 1] == '=') + (s[n - 2] == '=') : 0);
    return out;
}

/* ---- sealing ---- */

static void aad_for(const char *name, char *aad, size_t cap)
{
    snprintf(aad, cap, "rete-ca/%d/%s", CA_RECORD_FORMAT, name);
}

static json_t *seal(const reted_kek *kek, const char *name, const uint8_t *pt, size_t n, rete_error *err)
{
    uint8_t nonce[GCM_NONCE];
    if (RAND_bytes(nonce, sizeof nonce) != 1) {
        rete_error_set_ssl(err, RETE_EIO, "no randomness for a nonce");
        return NULL;
    }
    char aad[600];
    aad_for(name, aad, sizeof aad);
    uint8_t *ct = rete_malloc(n + GCM_TAG);
    int len = 0, fl = 0;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    bool ok = c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, kek->key, nonce) == 1 &&
              EVP_EncryptUpdate(c, NULL, &len, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
              EVP_EncryptUpdate(c, ct, &len, pt, (int)n) == 1 && EVP_EncryptFinal_ex(c, ct + len, &fl) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, GCM_TAG, ct + len + fl) == 1;
    EVP_CIPHER_CTX_free(c);
    json_t *out = NULL;
    if (ok)
        out = json_pack("{s:s,s:s,s:o,s:o}", "alg", "AES-256-GCM", "kekId", kek->id, "nonce",
                        b64(nonce, sizeof nonce), "data", b64(ct, (size_t)(len + fl) + GCM_TAG));
    else
        rete_error_set_ssl(err, RETE_EIO, "%s: AES-256-GCM", name);
    free(ct);
    return out;
}

/* The message for a record sealed under a KEK ring does not hold. */
static rete_rc unknown_kek(const reted_keyring *ring, const char *id, rete_error *err)
{
    char held[RETED_KEK_PREVIOUS_MAX * 48 + 48];
    reted_keyring_describe(ring, held, sizeof held);
    return rete_error_set(err, RETE_EINVAL,
                          "the CA in the store is sealed with the key-encryption key %s, and this replica "
                          "holds only %s: start it with the KEK file of id %s (--ca-kek, or "
                          "--ca-kek-previous while a KEK rotation is under way)",
                          id ? id : "(none)", held, id ? id : "(none)");
}

/* The plaintext (malloc'ed, NUL-terminated) or NULL with *err. */
static char *unseal(const reted_keyring *ring, const char *name, json_t *s, size_t *n_out, rete_error *err)
{
    const char *alg = json_string_value(json_object_get(s, "alg"));
    const char *id = json_string_value(json_object_get(s, "kekId"));
    if (!alg || strcmp(alg, "AES-256-GCM") != 0) {
        rete_error_set(err, RETE_EINVAL, "%s: sealed with %s, not AES-256-GCM", name, alg ? alg : "(none)");
        return NULL;
    }
    const reted_kek *kek = reted_keyring_find(ring, id);
    if (!kek) {
        (void)unknown_kek(ring, id, err);
        return NULL;
    }
    size_t nl = 0, dl = 0;
    uint8_t *nonce = unb64(json_object_get(s, "nonce"), &nl), *data = unb64(json_object_get(s, "data"), &dl);
    char *pt = NULL;
    if (!nonce || !data || nl != GCM_NONCE || dl < GCM_TAG) {
        rete_error_set(err, RETE_EINVAL, "%s: a damaged sealed value", name);
        goto out;
    }
    char aad[600];
    aad_for(name, aad, sizeof aad);
    size_t n = dl - GCM_TAG;
    pt = rete_malloc(n + 1);
    int len = 0, fl = 0;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    bool ok = c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, kek->key, nonce) == 1 &&
              EVP_DecryptUpdate(c, NULL, &len, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
              EVP_DecryptUpdate(c, (uint8_t *)pt, &len, data, (int)n) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, GCM_TAG, data + n) == 1 &&
              EVP_DecryptFinal_ex(c, (uint8_t *)pt + len, &fl) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        rete_error_set(err, RETE_EINVAL,
                       "%s: does not decrypt with the key-encryption key %s: a tampered record",
                       name, kek->id);
        OPENSSL_cleanse(pt, n);
        free(pt);
        pt = NULL;
        goto out;
    }
    pt[n] = '\0';
    *n_out = n;
out:
    free(nonce);
    free(data);
    return pt;
}

static bool secret_file(const char *name, const char *data)
{
    size_t n = strlen(name);
    return strcmp(name, "admin.token") == 0 || (n >= 7 && strcmp(name + n - 7, "key.pem") == 0) ||
           strstr(data, "PRIVATE KEY") != NULL;
}

/* ---- the record ---- */

static bool add_file(json_t *files, const char *data_dir, const char *name, const reted_kek *kek, rete_error *err)
{
    char *path = reted_datadir_path(data_dir, name);
    size_t n = 0;
    char *data = rete_file_read(path, CA_FILE_MAX, &n);
    free(path);
    if (!data) {
        rete_error_set(err, RETE_EIO, "%s/%s: cannot read it (at most %u bytes)", data_dir, name, CA_FILE_MAX);
        return false;
    }
    json_t *v = NULL;
    if (secret_file(name, data)) {
        json_t *s = seal(kek, name, (const uint8_t *)data, n, err);
        if (s)
            v = json_pack("{s:o}", "sealed", s);
    } else {
        v = json_pack("{s:s%}", "text", data, n);
    }
    OPENSSL_cleanse(data, n);
    free(data);
    if (!v)
        return false;
    json_object_set_new(files, name, v);
    return true;
}

char *reted_ca_record_build(const char *data_dir, const reted_kek *kek, rete_error *err)
{
    char *cadir = reted_datadir_path(data_dir, "ca");
    DIR *d = opendir(cadir);
    free(cadir);
    if (!d) {
        rete_error_set(err, RETE_EIO, "%s/ca: %s", data_dir, strerror(errno));
        return NULL;
    }
    json_t *files = json_object();
    bool ok = true;
    size_t count = 0;
    struct dirent *de;
    while (ok && (de = readdir(d))) {
        if (de->d_name[0] == '.' || strstr(de->d_name, ".tmp"))
            continue;
        char name[300];
        snprintf(name, sizeof name, "ca/%s", de->d_name);
        char *p = reted_datadir_path(data_dir, name);
        struct stat sb;
        bool reg = stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
        free(p);
        if (!reg)
            continue;
        if (++count > CA_FILES_MAX) {
            rete_error_set(err, RETE_ELIMIT, "%s/ca: more than %d files", data_dir, CA_FILES_MAX);
            ok = false;
            break;
        }
        ok = add_file(files, data_dir, name, kek, err);
    }
    closedir(d);
    ok = ok && add_file(files, data_dir, "admin.token", kek, err);
    char *tdpath = reted_datadir_path(data_dir, "trust-domain");
    char *td = ok ? reted_datadir_read_line(tdpath) : NULL;
    free(tdpath);
    if (ok && !td) {
        rete_error_set(err, RETE_EIO, "%s/trust-domain: cannot read it", data_dir);
        ok = false;
    }
    char *out = NULL;
    if (ok) {
        json_t *rec = json_pack("{s:i,s:s,s:s,s:O}", "format", CA_RECORD_FORMAT, "trustDomain", td, "kekId",
                                kek->id, "files", files);
        out = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(rec);
    }
    free(td);
    json_decref(files);
    return out;
}

/* A name the record may write: "admin.token" or "ca/<plain name>". */
static bool name_ok(const char *name)
{
    if (strcmp(name, "admin.token") == 0)
        return true;
    return strncmp(name, "ca/", 3) == 0 && name[3] && name[3] != '.' && !strchr(name + 3, '/') &&
           strlen(name) < 256;
}

/* The parsed record when it is of this format and ring holds its KEK; NULL
 * with *err. */
static json_t *record_open(const char *record, size_t len, const reted_keyring *ring, rete_error *err)
{
    json_t *rec = json_loadb(record, len, 0, NULL);
    const char *kek = json_string_value(json_object_get(rec, "kekId"));
    if (!json_is_object(json_object_get(rec, "files")) || !json_string_value(json_object_get(rec, "trustDomain")) ||
        !kek || strlen(kek) != RETED_KEK_ID_LEN ||
        json_integer_value(json_object_get(rec, "format")) != CA_RECORD_FORMAT) {
        rete_error_set(err, RETE_EINVAL, "the CA record in the store is damaged or of another format");
        json_decref(rec);
        return NULL;
    }
    if (!reted_keyring_find(ring, kek)) {
        (void)unknown_kek(ring, kek, err);
        json_decref(rec);
        return NULL;
    }
    return rec;
}

rete_rc reted_ca_record_unpack(const char *record, size_t len, const char *data_dir, reted_keyring *ring,
                               rete_error *err)
{
    json_t *rec = record_open(record, len, ring, err);
    if (!rec)
        return RETE_EINVAL;
    json_t *files = json_object_get(rec, "files");
    const char *td = json_string_value(json_object_get(rec, "trustDomain"));
    const char *rec_kek = json_string_value(json_object_get(rec, "kekId"));
    /* Open everything first: a wrong KEK changes nothing on disk. */
    const char *name;
    json_t *v;
    size_t n = json_object_size(files), i = 0;
    char **data = rete_calloc(n ? n : 1, sizeof *data);
    size_t *lens = rete_calloc(n ? n : 1, sizeof *lens);
    const char **names = rete_calloc(n ? n : 1, sizeof *names);
    bool *sealed = rete_calloc(n ? n : 1, sizeof *sealed);
    rete_rc rc = RETE_OK;
    json_object_foreach(files, name, v) {
        names[i] = name;
        json_t *s = json_object_get(v, "sealed");
        if (!name_ok(name)) {
            rc = rete_error_set(err, RETE_EINVAL, "the CA record names a file %s", name);
        } else if (s) {
            sealed[i] = true;
            data[i] = unseal(ring, name, s, &lens[i], err);
            if (!data[i])
                rc = RETE_EINVAL;
        } else if (json_string_value(json_object_get(v, "text"))) {
            lens[i] = json_string_length(json_object_get(v, "text"));
            data[i] = rete_malloc(lens[i] + 1);
            memcpy(data[i], json_string_value(json_object_get(v, "text")), lens[i] + 1);
        } else {
            rc = rete_error_set(err, RETE_EINVAL, "the CA record's %s is neither text nor sealed", name);
        }
        i++;
        if (rc != RETE_OK)
            break;
    }
    char *cadir = reted_datadir_path(data_dir, "ca");
    if (rc == RETE_OK && (mkdir(data_dir, 0700) != 0 && errno != EEXIST))
        rc = rete_error_set(err, RETE_EIO, "%s: %s", data_dir, strerror(errno));
    if (rc == RETE_OK && (mkdir(cadir, 0700) != 0 && errno != EEXIST))
        rc = rete_error_set(err, RETE_EIO, "%s: %s", cadir, strerror(errno));
    for (i = 0; rc == RETE_OK && i < n; i++) {
        char *p = reted_datadir_path(data_dir, names[i]);
        rc = rete_file_write_atomic(p, data[i], lens[i], sealed[i] ? 0600 : 0644, err);
        free(p);
    }
    /* ca/ holds exactly the record's files: a rotation's finish removed
     * root-next*.pem */
    DIR *d = rc == RETE_OK ? opendir(cadir) : NULL;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char rel[300];
        snprintf(rel, sizeof rel, "ca/%s", de->d_name);
        if (json_object_get(files, rel))
            continue;
        char *p = reted_datadir_path(cadir, de->d_name);
        struct stat sb;
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode) && unlink(p) != 0)
            rete_warn("ca: cannot remove %s: %s", p, strerror(errno));
        free(p);
    }
    if (d)
        closedir(d);
    free(cadir);
    if (rc == RETE_OK) {
        char *tdpath = reted_datadir_path(data_dir, "trust-domain");
        char line[300];
        snprintf(line, sizeof line, "%s\n", td);
        rc = rete_file_write_atomic(tdpath, line, strlen(line), 0644, err);
        free(tdpath);
    }
    if (rc == RETE_OK)
        snprintf(ring->record_kek, sizeof ring->record_kek, "%s", rec_kek);
    for (i = 0; i < n; i++) {
        if (data[i])
            OPENSSL_cleanse(data[i], lens[i]);
        free(data[i]);
    }
    free(data);
    free(lens);
    free(names);
    free(sealed);
    json_decref(rec);
    return rc;
}

char *reted_ca_record_reseal(const char *record, size_t len, const reted_keyring *ring,
                             char from[RETED_KEK_ID_LEN + 1], rete_error *err)
{
    json_t *rec = record_open(record, len, ring, err);
    if (!rec)
        return NULL;
    json_t *files = json_object_get(rec, "files");
    const char *rec_kek = json_string_value(json_object_get(rec, "kekId"));
    snprintf(from, RETED_KEK_ID_LEN + 1, "%s", rec_kek);
    bool ok = true;
    const char *name;
    json_t *v;
    json_object_foreach(files, name, v) {
        json_t *sealed = json_object_get(v, "sealed");
        if (!sealed)
            continue;
        if (!name_ok(name)) {
            rete_error_set(err, RETE_EINVAL, "the CA record names a file %s", name);
            ok = false;
            break;
        }
        size_t n = 0;
        char *pt = unseal(ring, name, sealed, &n, err);
        json_t *again = pt ? seal(&ring->current, name, (const uint8_t *)pt, n, err) : NULL;
        if (pt)
            OPENSSL_cleanse(pt, n);
        free(pt);
        if (!again) {
            ok = false;
            break;
        }
        json_object_set_new(v, "sealed", again); /* replaces a value: the iteration stays valid */
    }
    char *out = NULL;
    if (ok) {
        json_object_set_new(rec, "kekId", json_string(ring->current.id));
        out = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
    }
    json_decref(rec);
    return out;
}

/* ---- with the store ---- */

static char *record_td(const char *record, size_t len)
{
    json_t *rec = json_loadb(record, len, 0, NULL);
    const char *td = json_string_value(json_object_get(rec, "trustDomain"));
    char *out = td ? rete_strdup(td) : NULL;
    json_decref(rec);
    return out;
}

/* The log line that says which KEK the record is under, and what to do
 * when that is not this replica's --ca-kek. */
static void log_record_kek(const reted_keyring *ring, const char *what)
{
    if (strcmp(ring->record_kek, ring->current.id) == 0)
        rete_info("ca: %s; the record is sealed with KEK %s (--ca-kek)", what, ring->record_kek);
    else
        rete_info("ca: %s; the record is sealed with KEK %s (--ca-kek-previous), not %s (--ca-kek): run "
                  "`reted rekey` once every replica holds %s",
                  what, ring->record_kek, ring->current.id, ring->current.id);
}

int reted_ca_shared_start(rete_store *st, reted_keyring *ring, const char *data_dir, const char *td, uint64_t *rev)
{
    rete_error err = {0};
    for (int round = 0; round < 2; round++) {
        char *rec = NULL;
        size_t len = 0;
        rete_rc rc = st->ops->meta_get(st, CA_RECORD, &rec, &len, rev);
        if (rc == RETE_OK) {
            char *rtd = record_td(rec, len);
            if (td && rtd && strcmp(td, rtd) != 0) {
                fprintf(stderr, "reted: the CA in the store belongs to trust domain %s, not %s\n", rtd, td);
                free(rtd);
                free(rec);
                return -1;
            }
            free(rtd);
            rc = reted_ca_record_unpack(rec, len, data_dir, ring, &err);
            free(rec);
            if (rc != RETE_OK) {
                fprintf(stderr, "reted: CA: %s\n", err.msg);
                return -1;
            }
            log_record_kek(ring, "loaded the shared CA from the store");
            return 0;
        }
        if (rc != RETE_ENOTFOUND) {
            fprintf(stderr, "reted: CA: cannot read the shared CA from the store\n");
            return -1;
        }
        if (round)
            break;
        /* The first replica: this data directory's CA (made now, or the
         * operator's) becomes everyone's. */
        if (reted_datadir_init(data_dir, td ? td : RETE_DEFAULT_TRUST_DOMAIN) < 0)
            return -1;
        rec = reted_ca_record_build(data_dir, &ring->current, &err);
        if (!rec) {
            fprintf(stderr, "reted: CA: %s\n", err.msg);
            return -1;
        }
        rc = st->ops->meta_put(st, CA_RECORD, rec, strlen(rec), 0, rev);
        free(rec);
        if (rc == RETE_OK) {
            snprintf(ring->record_kek, sizeof ring->record_kek, "%s", ring->current.id);
            log_record_kek(ring, "published this replica's CA to the store");
            return 0;
        }
        if (rc != RETE_ECONFLICT) {
            fprintf(stderr, "reted: CA: cannot publish the CA to the store\n");
            return -1;
        }
        /* another replica published first: take its CA */
    }
    fprintf(stderr, "reted: CA: the shared CA record vanished while starting\n");
    return -1;
}

rete_rc reted_ca_shared_publish(rete_store *st, reted_keyring *ring, const char *data_dir, uint64_t *rev,
                                rete_error *err)
{
    /* the record's KEK while this replica holds it: only `reted rekey`
     * changes the KEK (ca_shared.h) */
    const reted_kek *kek = reted_keyring_find(ring, ring->record_kek);
    if (!kek)
        kek = &ring->current;
    char *rec = reted_ca_record_build(data_dir, kek, err);
    if (!rec)
        return RETE_EIO;
    uint64_t nrev = 0;
    rete_rc rc = st->ops->meta_put(st, CA_RECORD, rec, strlen(rec), *rev, &nrev);
    free(rec);
    if (rc == RETE_OK) {
        *rev = nrev;
        snprintf(ring->record_kek, sizeof ring->record_kek, "%s", kek->id);
    } else if (rc == RETE_ECONFLICT)
        rete_error_set(err, rc, "another replica changed the CA meanwhile");
    else
        rete_error_set(err, rc, "cannot publish the CA to the store");
    return rc;
}

int reted_ca_shared_refresh(rete_store *st, reted_keyring *ring, const char *data_dir, uint64_t *rev,
                            rete_error *err)
{
    char *rec = NULL;
    size_t len = 0;
    uint64_t nrev = 0;
    rete_rc rc = st->ops->meta_get(st, CA_RECORD, &rec, &len, &nrev);
    if (rc != RETE_OK) {
        rete_error_set(err, rc, rc == RETE_ENOTFOUND ? "the shared CA record is gone from the store"
                                                     : "cannot read the shared CA record");
        return -1;
    }
    if (nrev == *rev) {
        free(rec);
        return 0;
    }
    char was[sizeof ring->record_kek];
    memcpy(was, ring->record_kek, sizeof was);
    rc = reted_ca_record_unpack(rec, len, data_dir, ring, err);
    free(rec);
    if (rc != RETE_OK)
        return -1;
    *rev = nrev;
    if (strcmp(was, ring->record_kek) != 0)
        log_record_kek(ring, "the shared CA record changed its KEK");
    return 1;
}

rete_rc reted_ca_shared_rekey(rete_store *st, const reted_keyring *ring, char from[RETED_KEK_ID_LEN + 1],
                              uint64_t *rev, rete_error *err)
{
    char *rec = NULL;
    size_t len = 0;
    rete_rc rc = st->ops->meta_get(st, CA_RECORD, &rec, &len, rev);
    if (rc != RETE_OK)
        return rete_error_set(err, rc, rc == RETE_ENOTFOUND ? "the store holds no shared CA record"
                                                            : "cannot read the shared CA record");
    char *out = reted_ca_record_reseal(rec, len, ring, from, err);
    free(rec);
    if (!out)
        return RETE_EINVAL;
    if (strcmp(from, ring->current.id) == 0) {
        free(out);
        return RETE_OK; /* under the current KEK already: nothing written */
    }
    uint64_t nrev = 0;
    rc = st->ops->meta_put(st, CA_RECORD, out, strlen(out), *rev, &nrev);
    free(out);
    if (rc == RETE_OK)
        *rev = nrev;
    else if (rc == RETE_ECONFLICT)
        rete_error_set(err, rc, "the shared CA record changed meanwhile (a rotation step?): run it again");
    else
        rete_error_set(err, rc, "cannot write the shared CA record");
    return rc;
}
