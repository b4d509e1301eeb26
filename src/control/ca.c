/* The mesh's certificate authority (contract in ca.h).
 *
 * Files in the CA directory (docs/control-plane.md):
 *   root.pem, root-key.pem            the root made by rete_ca_init
 *   root-next.pem, root-next-key.pem  the new root while a rotation is in progress
 *   cert.pem, key.pem [, chain.pem]   an operator-supplied CA (takes precedence)
 *   bundle.pem                        every root in force; always derived from the above
 *
 * Every file is written crash-safely (temporary file, fsync, rename, fsync of
 * the directory); keys are 0600. A crash in the middle of a rotation step is
 * repaired by rete_ca_load (see recover_rotation).
 *
 * Issuance is on the hot path (target: 8000 certificates/s on one core), so
 * everything that does not depend on the request is prepared once at load:
 * the issuer name, the encoded extensions every leaf shares, a digest-sign
 * context that each call copies instead of re-fetching algorithms, and the
 * PEM of the intermediate chain. A rete_ca is not thread-safe: reted uses it
 * from its loop thread. */
#include "ca.h"

#include "alloc.h"
#include "error.h"
#include "file.h"
#include "spiffe.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/asn1t.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ROOT_DAYS 3650
#define BACKDATE_SECONDS 300
#define TD_MAX 255
#define MAX_CHAIN 8

struct rete_ca {
    char td[TD_MAX + 1];
    bool operator_ca; /* cert.pem + key.pem supplied by the operator */
    bool rotating;    /* root-next.pem is the signing root */

    /* The signing CA. */
    EVP_PKEY *key;
    X509 *cert;
    int64_t not_after; /* earliest notAfter along the signing CA's chain */

    /* Roots in force, oldest first (two while rotating), and their PEM. */
    STACK_OF(X509) * roots;
    char *bundle_pem;

    /* Precomputed for every leaf. */
    char *chain_pem; /* PEM of the certificates after the leaf ("" under a root) */
    size_t chain_len;
    X509_EXTENSION *ext_bc, *ext_ku, *ext_eku, *ext_aki;
    EVP_MD_CTX *sign_tmpl; /* EVP_DigestSignInit done once; copied per leaf */
    EVP_MD_CTX *sign_work;
    EVP_MD_CTX *verify_ctx;
    EVP_PKEY *p256; /* P-256 domain parameters: CSR keys are copies of it */
    BIGNUM *serial_bn;
};

/* A PKCS#10 request (RFC 2986 §4) read without decoding its public key:
 * OpenSSL 3.0's generic key decoders cost ~120 us a key, more than the
 * ECDSA verification itself, so P-256 keys are imported directly. ANY keeps
 * a SEQUENCE in its encoded form: info is the signed CertificationRequestInfo
 * exactly as received. */
typedef struct csr_spki {
    X509_ALGOR *alg;
    ASN1_BIT_STRING *key;
} CSR_SPKI;

typedef struct csr_info {
    ASN1_INTEGER *version;
    ASN1_TYPE *subject;
    CSR_SPKI *spki;
    STACK_OF(ASN1_TYPE) * attributes;
} CSR_INFO;

typedef struct csr_raw {
    ASN1_TYPE *info;
    X509_ALGOR *sig_alg;
    ASN1_BIT_STRING *signature;
} CSR_RAW;

/* clang-format off */
ASN1_SEQUENCE(CSR_SPKI) = {
    ASN1_SIMPLE(CSR_SPKI, alg, X509_ALGOR),
    ASN1_SIMPLE(CSR_SPKI, key, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(CSR_SPKI)

ASN1_SEQUENCE(CSR_INFO) = {
    ASN1_SIMPLE(CSR_INFO, version, ASN1_INTEGER),
    ASN1_SIMPLE(CSR_INFO, subject, ASN1_ANY),
    ASN1_SIMPLE(CSR_INFO, spki, CSR_SPKI),
    ASN1_IMP_SET_OF_OPT(CSR_INFO, attributes, ASN1_ANY, 0),
} static_ASN1_SEQUENCE_END(CSR_INFO)

ASN1_SEQUENCE(CSR_RAW) = {
    ASN1_SIMPLE(CSR_RAW, info, ASN1_ANY),
    ASN1_SIMPLE(CSR_RAW, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(CSR_RAW, signature, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(CSR_RAW)

/* clang-format on */

/* ---- files -------------------------------------------------------------- */

static bool path_join(char *out, size_t outlen, const char *dir, const char *name)
{
    int n = snprintf(out, outlen, "%s/%s", dir, name);
    return n > 0 && (size_t)n < outlen;
}

/* dir/name replaced atomically with the PEM text (file.h). */
static RETE_MUST_CHECK rete_rc write_pem(const char *dir, const char *name, const char *pem,
                                         mode_t mode, rete_error *err)
{
    char p[PATH_MAX];
    if (!path_join(p, sizeof p, dir, name))
        return rete_error_set(err, RETE_EINVAL, "%s/%s: path too long", dir, name);
    return rete_file_write_atomic(p, pem, strlen(pem), mode, err);
}

static bool file_exists(const char *dir, const char *name)
{
    char p[PATH_MAX];
    struct stat st;
    return path_join(p, sizeof p, dir, name) && stat(p, &st) == 0;
}

static RETE_MUST_CHECK rete_rc rename_file(const char *dir, const char *from, const char *to,
                                           rete_error *err)
{
    char a[PATH_MAX], b[PATH_MAX];
    if (!path_join(a, sizeof a, dir, from) || !path_join(b, sizeof b, dir, to))
        return rete_error_set_ssl(err, RETE_EINVAL, "%s/%s: path too long", dir, from);
    return rete_file_rename(a, b, err);
}

static BIO *open_file(const char *dir, const char *name, rete_error *err)
{
    char p[PATH_MAX];
    BIO *b = path_join(p, sizeof p, dir, name) ? BIO_new_file(p, "r") : NULL;
    if (!b)
        rete_error_set_ssl(err, RETE_EIO, "%s/%s: cannot read", dir, name);
    return b;
}

static X509 *read_cert(const char *dir, const char *name, rete_error *err)
{
    BIO *b = open_file(dir, name, err);
    if (!b)
        return NULL;
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!x)
        rete_error_set_ssl(err, RETE_EIO, "%s/%s: not a PEM certificate", dir, name);
    return x;
}

static EVP_PKEY *read_key(const char *dir, const char *name, rete_error *err)
{
    BIO *b = open_file(dir, name, err);
    if (!b)
        return NULL;
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!k)
        rete_error_set_ssl(err, RETE_EIO, "%s/%s: not a PEM private key", dir, name);
    return k;
}

/* Every certificate in a PEM file (at least one). */
static STACK_OF(X509) * read_certs(const char *dir, const char *name, rete_error *err)
{
    BIO *b = open_file(dir, name, err);
    if (!b)
        return NULL;
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    while (sk && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            break;
        }
    }
    ERR_clear_error(); /* the read that ended the loop */
    BIO_free(b);
    if (!sk || sk_X509_num(sk) == 0) {
        sk_X509_pop_free(sk, X509_free);
        rete_error_set_ssl(err, RETE_EIO, "%s/%s: no PEM certificate", dir, name);
        return NULL;
    }
    return sk;
}

/* Take a memory BIO's contents as a NUL-terminated malloc'ed string. */
static char *bio_take(BIO *b, size_t *len_out)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    if (n < 0)
        return NULL;
    char *s = n > 0 ? rete_strndup(data, (size_t)n) : rete_strdup("");
    if (len_out)
        *len_out = (size_t)n;
    return s;
}

static char *certs_pem(STACK_OF(X509) * sk, int from, size_t *len_out)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (!b)
        return NULL;
    for (int i = from; i < sk_X509_num(sk); i++)
        if (!PEM_write_bio_X509(b, sk_X509_value(sk, i)))
            goto out;
    s = bio_take(b, len_out);
out:
    BIO_free(b);
    return s;
}

/* ---- certificate helpers ----------------------------------------------- */

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return (int64_t)timegm(&tm);
}

static bool is_self_signed(X509 *x)
{
    return (X509_get_extension_flags(x) & EXFLAG_SS) != 0;
}

/* A CA certificate able to sign certificates: basicConstraints CA:TRUE and,
 * when keyUsage is present (RFC 5280 §4.2.1.3), keyCertSign. */
static bool is_signing_ca(X509 *x)
{
    uint32_t flags = X509_get_extension_flags(x);
    if (!(flags & EXFLAG_BCONS) || !(flags & EXFLAG_CA))
        return false;
    return !(flags & EXFLAG_KUSAGE) || (X509_get_key_usage(x) & KU_KEY_CERT_SIGN);
}

static bool random_serial(X509 *x, BIGNUM *bn)
{
    /* 128 random bits; a positive INTEGER of at most 17 octets (RFC 5280 §4.1.2.2). */
    if (!BN_rand(bn, 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY))
        return false;
    if (BN_is_zero(bn) && !BN_one(bn))
        return false;
    return BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
}

static bool add_conf_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    bool ok = ext && X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

static const char *td_of(const char *trust_domain)
{
    return rete_spiffe_principal(trust_domain); /* "spiffe://td" or "td" -> "td" */
}

static bool td_valid(const char *td)
{
    char id[TD_MAX + 16];
    size_t n = strlen(td);
    if (n == 0 || n > TD_MAX || strchr(td, '/'))
        return false;
    snprintf(id, sizeof id, RETE_SPIFFE_SCHEME "%s", td);
    return rete_spiffe_id_valid(id, strlen(id));
}

/* A new self-signed root: ECDSA P-256, 10 years, CN "<td> root", O "rete". */
static bool make_root(const char *td, X509 **cert_out, EVP_PKEY **key_out, rete_error *err)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    char cn[TD_MAX + 8];
    snprintf(cn, sizeof cn, "%s root", td);
    RETE_ENSURE_GOTO(key && x && bn, fail);
    X509_NAME *name = X509_get_subject_name(x);
    RETE_ENSURE_GOTO(X509_set_version(x, X509_VERSION_3) && random_serial(x, bn), fail);
    RETE_ENSURE_GOTO(X509_gmtime_adj(X509_getm_notBefore(x), -BACKDATE_SECONDS) &&
                         X509_time_adj_ex(X509_getm_notAfter(x), ROOT_DAYS, 0, NULL),
                     fail);
    RETE_ENSURE_GOTO(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                                (const unsigned char *)"rete", -1, -1, 0) &&
                         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                                    (const unsigned char *)cn, -1, -1, 0) &&
                         X509_set_issuer_name(x, name) && X509_set_pubkey(x, key),
                     fail);
    RETE_ENSURE_GOTO(add_conf_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") &&
                         add_conf_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") &&
                         add_conf_ext(x, x, NID_subject_key_identifier, "hash") &&
                         add_conf_ext(x, x, NID_authority_key_identifier, "keyid:always"),
                     fail);
    RETE_ENSURE_GOTO(X509_sign(x, key, EVP_sha256()) > 0, fail);
    BN_free(bn);
    *cert_out = x;
    *key_out = key;
    return true;
fail:
    rete_error_set_ssl(err, RETE_EIO, "cannot create the root CA for %s", td);
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(key);
    return false;
}

static char *cert_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = b && PEM_write_bio_X509(b, x) ? bio_take(b, NULL) : NULL;
    BIO_free(b);
    return s;
}

static char *key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s =
        b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) ? bio_take(b, NULL) : NULL;
    BIO_free(b);
    return s;
}

static RETE_MUST_CHECK rete_rc write_cert(const char *dir, const char *name, X509 *x, rete_error *err)
{
    char *pem = cert_pem(x);
    if (!pem)
        return rete_error_set_ssl(err, RETE_EIO, "cannot encode %s", name);
    rete_rc rc = write_pem(dir, name, pem, 0644, err);
    rete_free(&pem);
    return rc;
}

static RETE_MUST_CHECK rete_rc write_key(const char *dir, const char *name, EVP_PKEY *k, rete_error *err)
{
    char *pem = key_pem(k);
    if (!pem)
        return rete_error_set_ssl(err, RETE_EIO, "cannot encode %s", name);
    rete_rc rc = write_pem(dir, name, pem, 0600, err);
    OPENSSL_cleanse(pem, strlen(pem));
    rete_free(&pem);
    return rc;
}

/* ---- the prepared signer ------------------------------------------------- */

static void signer_clear(rete_ca *ca)
{
    X509_EXTENSION_free(ca->ext_bc);
    X509_EXTENSION_free(ca->ext_ku);
    X509_EXTENSION_free(ca->ext_eku);
    X509_EXTENSION_free(ca->ext_aki);
    ca->ext_bc = ca->ext_ku = ca->ext_eku = ca->ext_aki = NULL;
    EVP_MD_CTX_free(ca->sign_tmpl);
    ca->sign_tmpl = NULL;
}

static X509_EXTENSION *conf_ext(int nid, const char *value)
{
    return X509V3_EXT_conf_nid(NULL, NULL, nid, value);
}

/* The authorityKeyIdentifier every leaf carries: the CA's subjectKeyIdentifier,
 * or, when it has none, the SHA-1 of its public key (RFC 5280 §4.2.1.2 method 1). */
static X509_EXTENSION *aki_ext(X509 *ca_cert)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(ca_cert);
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    X509_EXTENSION *ext = NULL;
    if (!akid)
        return NULL;
    if (ski)
        akid->keyid = ASN1_OCTET_STRING_dup(ski);
    else if (X509_pubkey_digest(ca_cert, EVP_sha1(), md, &mdlen) &&
             (akid->keyid = ASN1_OCTET_STRING_new()) != NULL &&
             !ASN1_OCTET_STRING_set(akid->keyid, md, (int)mdlen)) {
        ASN1_OCTET_STRING_free(akid->keyid);
        akid->keyid = NULL;
    }
    if (akid->keyid)
        ext = X509V3_EXT_i2d(NID_authority_key_identifier, 0, akid);
    AUTHORITY_KEYID_free(akid);
    return ext;
}

static EVP_PKEY *p256_params(void)
{
    char group[] = SN_X9_62_prime256v1;
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_END,
    };
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *k = NULL;
    if (!pc || EVP_PKEY_fromdata_init(pc) != 1 ||
        EVP_PKEY_fromdata(pc, &k, EVP_PKEY_KEY_PARAMETERS, params) != 1)
        k = NULL;
    EVP_PKEY_CTX_free(pc);
    return k;
}

/* Prepare everything a leaf shares, for the current signing key and cert. */
static bool signer_setup(rete_ca *ca, rete_error *err)
{
    signer_clear(ca);
    ca->ext_bc = conf_ext(NID_basic_constraints, "critical,CA:FALSE");
    ca->ext_ku = conf_ext(NID_key_usage, "critical,digitalSignature");
    ca->ext_eku = conf_ext(NID_ext_key_usage, "serverAuth,clientAuth");
    ca->ext_aki = aki_ext(ca->cert);
    ca->sign_tmpl = EVP_MD_CTX_new();
    if (!ca->sign_work)
        ca->sign_work = EVP_MD_CTX_new();
    if (!ca->serial_bn)
        ca->serial_bn = BN_new();
    if (!ca->verify_ctx)
        ca->verify_ctx = EVP_MD_CTX_new();
    if (!ca->p256)
        ca->p256 = p256_params();
    if (!ca->ext_bc || !ca->ext_ku || !ca->ext_eku || !ca->ext_aki || !ca->sign_tmpl ||
        !ca->sign_work || !ca->serial_bn || !ca->verify_ctx || !ca->p256 ||
        EVP_DigestSignInit_ex(ca->sign_tmpl, NULL, "SHA256", NULL, NULL, ca->key, NULL) != 1) {
        rete_error_set_ssl(err, RETE_EIO, "cannot prepare the CA signer");
        signer_clear(ca);
        return false;
    }
    return true;
}

static bool set_bundle(rete_ca *ca)
{
    char *pem = certs_pem(ca->roots, 0, NULL);
    if (!pem)
        return false;
    rete_free(&ca->bundle_pem);
    ca->bundle_pem = pem;
    return true;
}

/* ---- loading ------------------------------------------------------------ */

static bool now_within(X509 *x)
{
    return X509_cmp_current_time(X509_get0_notBefore(x)) < 0 &&
           X509_cmp_current_time(X509_get0_notAfter(x)) > 0;
}

/* rete_ca_set_key_file's: the operator CA's key outside the data directory. */
static const char *key_file;

void rete_ca_set_key_file(const char *path)
{
    key_file = path;
}

/* The operator CA's key: ca/key.pem, or the file rete_ca_set_key_file named
 * (closed to other users, and never both). */
static EVP_PKEY *read_operator_key(const char *dir, rete_error *err)
{
    if (!key_file)
        return read_key(dir, "key.pem", err);
    if (file_exists(dir, "key.pem")) {
        rete_error_set(err, RETE_EINVAL, "%s/key.pem and --ca-key %s: give the CA key in one place", dir,
                       key_file);
        return NULL;
    }
    struct stat st;
    if (stat(key_file, &st) != 0) {
        rete_error_set(err, RETE_EIO, "--ca-key %s: %s", key_file, strerror(errno));
        return NULL;
    }
    if (st.st_mode & 077) {
        rete_error_set(err, RETE_EINVAL, "--ca-key %s: readable by others (mode %03o): chmod 600 it", key_file,
                       (unsigned)(st.st_mode & 0777));
        return NULL;
    }
    BIO *b = BIO_new_file(key_file, "r");
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!k)
        rete_error_set_ssl(err, RETE_EIO, "--ca-key %s: not a readable PEM private key", key_file);
    return k;
}

/* An operator's CA: cert.pem + key.pem (or --ca-key), and chain.pem up to
 * the operator's root unless cert.pem is itself a root. */
static bool load_operator(rete_ca *ca, const char *dir, rete_error *err)
{
    STACK_OF(X509) *chain = NULL, *inter = sk_X509_new_null();
    STACK_OF(X509) *signing_chain = sk_X509_new_null();
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *xs = X509_STORE_CTX_new();
    bool ok = false;
    ca->roots = sk_X509_new_null();
    if (!inter || !signing_chain || !store || !xs || !ca->roots) {
        rete_error_set_ssl(err, RETE_ENOMEM, "out of memory");
        goto out;
    }
    if (!(ca->cert = read_cert(dir, "cert.pem", err)) || !(ca->key = read_operator_key(dir, err)))
        goto out;
    if (!is_signing_ca(ca->cert)) {
        rete_error_set_ssl(err, RETE_EINVAL,
               "%s/cert.pem: not a CA certificate (needs basicConstraints CA:TRUE "
               "and keyUsage keyCertSign)",
               dir);
        goto out;
    }
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        rete_error_set_ssl(err, RETE_EINVAL, "%s/key.pem: does not match cert.pem", dir);
        goto out;
    }
    if (!now_within(ca->cert)) {
        rete_error_set_ssl(err, RETE_EINVAL, "%s/cert.pem: expired or not yet valid", dir);
        goto out;
    }
    if (file_exists(dir, "chain.pem") && !(chain = read_certs(dir, "chain.pem", err)))
        goto out;
    /* The leaf chain: cert.pem, then chain.pem's intermediates; the bundle:
     * the root(s) — self-signed certificates — of cert.pem/chain.pem. */
    if (!sk_X509_push(signing_chain, ca->cert) || !X509_up_ref(ca->cert))
        goto oom;
    if (is_self_signed(ca->cert)) {
        if (!sk_X509_push(ca->roots, ca->cert) || !X509_up_ref(ca->cert))
            goto oom;
    }
    for (int i = 0; chain && i < sk_X509_num(chain); i++) {
        X509 *c = sk_X509_value(chain, i);
        STACK_OF(X509) *to = is_self_signed(c) ? ca->roots : signing_chain;
        if (!sk_X509_push(to, c) || !X509_up_ref(c))
            goto oom;
        if (to == signing_chain && !sk_X509_push(inter, c))
            goto oom;
    }
    if (sk_X509_num(ca->roots) == 0) {
        rete_error_set_ssl(err, RETE_EINVAL,
               "%s/cert.pem is an intermediate CA: put its chain up to the "
               "operator's root in %s/chain.pem",
               dir, dir);
        goto out;
    }
    for (int i = 0; i < sk_X509_num(ca->roots); i++)
        if (!X509_STORE_add_cert(store, sk_X509_value(ca->roots, i)))
            goto oom;
    if (!X509_STORE_CTX_init(xs, store, ca->cert, inter))
        goto oom;
    if (X509_verify_cert(xs) != 1) {
        rete_error_set_ssl(err, RETE_EINVAL, "%s/cert.pem does not chain to the root in chain.pem: %s", dir,
               X509_verify_cert_error_string(X509_STORE_CTX_get_error(xs)));
        goto out;
    }
    ca->not_after = INT64_MAX;
    for (int i = 0; i < sk_X509_num(signing_chain); i++) {
        int64_t t = asn1_time_unix(X509_get0_notAfter(sk_X509_value(signing_chain, i)));
        if (t < ca->not_after)
            ca->not_after = t;
    }
    for (int i = 0; i < sk_X509_num(ca->roots); i++) {
        int64_t t = asn1_time_unix(X509_get0_notAfter(sk_X509_value(ca->roots, i)));
        if (t < ca->not_after)
            ca->not_after = t;
    }
    /* Under a self-signed cert.pem the leaf's chain is the leaf alone. */
    if (!(ca->chain_pem =
              certs_pem(signing_chain, is_self_signed(ca->cert) ? 1 : 0, &ca->chain_len)))
        goto oom;
    ca->operator_ca = true;
    ok = true;
    goto out;
oom:
    rete_error_set_ssl(err, RETE_ENOMEM, "out of memory loading the operator CA");
out:
    sk_X509_pop_free(chain, X509_free);
    sk_X509_free(inter);
    sk_X509_pop_free(signing_chain, X509_free);
    X509_STORE_CTX_free(xs);
    X509_STORE_free(store);
    return ok;
}

static bool key_matches(X509 *cert, EVP_PKEY *key)
{
    bool ok = X509_check_private_key(cert, key) == 1;
    ERR_clear_error();
    return ok;
}

/* A crash inside rotate_begin or rotate_finish leaves root-next-key.pem
 * without root-next.pem. If that key matches root.pem, finish had already
 * moved the new root in place: complete it. Otherwise begin never committed
 * (root-next.pem is its commit point): drop the orphan key. */
static bool recover_rotation(const char *dir, rete_error *err)
{
    if (!file_exists(dir, "root-next-key.pem") || file_exists(dir, "root-next.pem"))
        return true;
    X509 *root = read_cert(dir, "root.pem", err);
    EVP_PKEY *next = read_key(dir, "root-next-key.pem", NULL); /* unreadable: discarded below */
    bool ok = root != NULL;
    if (ok && next && key_matches(root, next)) {
        ok = rename_file(dir, "root-next-key.pem", "root-key.pem", err) == RETE_OK;
    } else if (ok) {
        char p[PATH_MAX];
        ok = path_join(p, sizeof p, dir, "root-next-key.pem") && unlink(p) == 0;
        if (!ok)
            rete_error_set_ssl(err, RETE_EIO, "%s: cannot remove: %s", p, strerror(errno));
    }
    X509_free(root);
    EVP_PKEY_free(next);
    return ok;
}

static bool load_root(rete_ca *ca, const char *dir, rete_error *err)
{
    if (!recover_rotation(dir, err))
        return false;
    X509 *root = read_cert(dir, "root.pem", err);
    if (!root)
        return false;
    ca->roots = sk_X509_new_null();
    if (!ca->roots || !sk_X509_push(ca->roots, root)) {
        X509_free(root);
        rete_error_set_ssl(err, RETE_ENOMEM, "out of memory");
        return false;
    }
    ca->rotating = file_exists(dir, "root-next.pem");
    const char *cert_name = ca->rotating ? "root-next.pem" : "root.pem";
    const char *key_name = ca->rotating ? "root-next-key.pem" : "root-key.pem";
    if (ca->rotating) {
        X509 *next = read_cert(dir, "root-next.pem", err);
        if (!next)
            return false;
        if (!sk_X509_push(ca->roots, next)) {
            X509_free(next);
            rete_error_set_ssl(err, RETE_ENOMEM, "out of memory");
            return false;
        }
    }
    ca->cert = sk_X509_value(ca->roots, sk_X509_num(ca->roots) - 1);
    if (!X509_up_ref(ca->cert)) {
        ca->cert = NULL;
        return false;
    }
    if (!(ca->key = read_key(dir, key_name, err)))
        return false;
    if (!key_matches(ca->cert, ca->key)) {
        rete_error_set_ssl(err, RETE_EINVAL, "%s/%s does not match %s", dir, key_name, cert_name);
        return false;
    }
    if (!is_signing_ca(ca->cert)) {
        rete_error_set_ssl(err, RETE_EINVAL, "%s/%s: not a CA certificate", dir, cert_name);
        return false;
    }
    if (!now_within(ca->cert)) {
        rete_error_set_ssl(err, RETE_EINVAL, "%s/%s: expired or not yet valid", dir, cert_name);
        return false;
    }
    ca->not_after = asn1_time_unix(X509_get0_notAfter(ca->cert));
    ca->chain_pem = rete_strdup("");
    ca->chain_len = 0;
    return true;
}

/* bundle.pem is derived: rewrite it when it is not what the CA files say
 * (first load of an operator CA, or a crash between two writes). */
static bool sync_bundle_file(rete_ca *ca, const char *dir, rete_error *err)
{
    char p[PATH_MAX];
    bool same = false;
    if (path_join(p, sizeof p, dir, "bundle.pem")) {
        FILE *f = fopen(p, "re");
        if (f) {
            size_t n = strlen(ca->bundle_pem);
            char *buf = rete_malloc(n + 1);
            size_t got = fread(buf, 1, n + 1, f);
            same = got == n && memcmp(buf, ca->bundle_pem, n) == 0;
            rete_free(&buf);
            fclose(f);
        }
    }
    return same || write_pem(dir, "bundle.pem", ca->bundle_pem, 0644, err) == RETE_OK;
}

rete_ca *rete_ca_load(const char *dir, const char *trust_domain, rete_error *err)
{
    const char *td = td_of(trust_domain);
    if (!td_valid(td)) {
        rete_error_set_ssl(err, RETE_EINVAL, "invalid trust domain \"%s\"", trust_domain);
        return NULL;
    }
    rete_ca *ca = rete_calloc(1, sizeof *ca);
    snprintf(ca->td, sizeof ca->td, "%s", td);
    bool operator_ca = file_exists(dir, "cert.pem") || file_exists(dir, "key.pem");
    if (operator_ca ? !load_operator(ca, dir, err) : !load_root(ca, dir, err))
        goto fail;
    if (!set_bundle(ca)) {
        rete_error_set_ssl(err, RETE_EIO, "cannot encode the trust bundle");
        goto fail;
    }
    if (!sync_bundle_file(ca, dir, err) || !signer_setup(ca, err))
        goto fail;
    return ca;
fail:
    rete_ca_free(ca);
    return NULL;
}

void rete_ca_free(rete_ca *ca)
{
    if (!ca)
        return;
    signer_clear(ca);
    EVP_MD_CTX_free(ca->sign_work);
    EVP_MD_CTX_free(ca->verify_ctx);
    EVP_PKEY_free(ca->p256);
    BN_free(ca->serial_bn);
    EVP_PKEY_free(ca->key);
    X509_free(ca->cert);
    sk_X509_pop_free(ca->roots, X509_free);
    rete_free(&ca->bundle_pem);
    rete_free(&ca->chain_pem);
    free(ca);
}

rete_rc rete_ca_init(const char *dir, const char *trust_domain, rete_error *err)
{
    const char *td = td_of(trust_domain);
    if (!td_valid(td))
        return rete_error_set_ssl(err, RETE_EINVAL, "invalid trust domain \"%s\"", trust_domain);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return rete_error_set_ssl(err, RETE_EIO, "%s: %s", dir, strerror(errno));
    /* An operator-supplied CA or an existing root is kept: load validates it
     * and writes bundle.pem. */
    if (file_exists(dir, "cert.pem") || file_exists(dir, "key.pem") ||
        file_exists(dir, "root.pem")) {
        rete_ca *ca = rete_ca_load(dir, trust_domain, err);
        rete_ca_free(ca);
        return ca ? RETE_OK : err ? err->code : RETE_EINVAL;
    }
    X509 *root = NULL;
    EVP_PKEY *key = NULL;
    if (!make_root(td, &root, &key, err))
        return RETE_EIO;
    /* Key first: root.pem without its key would be a CA that cannot sign. */
    rete_rc rc = write_key(dir, "root-key.pem", key, err);
    if (rc == RETE_OK)
        rc = write_cert(dir, "root.pem", root, err);
    if (rc == RETE_OK)
        rc = write_cert(dir, "bundle.pem", root, err);
    X509_free(root);
    EVP_PKEY_free(key);
    return rc;
}

/* ---- issuance ----------------------------------------------------------- */

static bool csr_key_ok(EVP_PKEY *k, rete_error *err)
{
    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_EC: {
        char group[64];
        size_t glen = 0;
        if (!EVP_PKEY_get_group_name(k, group, sizeof group, &glen) ||
            (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
            rete_error_set_ssl(err, RETE_EINVAL, "CSR key: EC curve %s not accepted (only P-256)",
                   glen ? group : "?");
            return false;
        }
        return true;
    }
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(k) < 2048) {
            rete_error_set_ssl(err, RETE_EINVAL, "CSR key: RSA %d bits is too small (at least 2048)",
                   EVP_PKEY_get_bits(k));
            return false;
        }
        return true;
    default:
        rete_error_set_ssl(err, RETE_EINVAL, "CSR key: type %s not accepted (EC P-256 or RSA >= 2048)",
               OBJ_nid2sn(EVP_PKEY_get_base_id(k)));
        return false;
    }
}

/* Copy a SubjectPublicKeyInfo (algorithm + key bits) into the certificate
 * as encoded, without decoding and re-encoding the key. */
static bool copy_spki(X509 *x, const X509_ALGOR *alg, const unsigned char *key, int len)
{
    const ASN1_OBJECT *obj;
    int ptype;
    const void *pval;
    X509_ALGOR_get0(&obj, &ptype, &pval, alg);
    ASN1_OBJECT *o = OBJ_dup(obj);
    void *v = NULL;
    switch (ptype) {
    case V_ASN1_OBJECT:
        v = OBJ_dup(pval);
        break;
    case V_ASN1_SEQUENCE:
    case V_ASN1_OCTET_STRING:
        v = ASN1_STRING_dup(pval);
        break;
    case V_ASN1_NULL:
    case V_ASN1_UNDEF:
        break;
    default:
        ASN1_OBJECT_free(o);
        return false;
    }
    unsigned char *enc = OPENSSL_memdup(key, len > 0 ? (size_t)len : 1);
    bool ok = o && (v || !pval || ptype == V_ASN1_NULL || ptype == V_ASN1_UNDEF) && enc &&
              X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), o, ptype, v, enc, len);
    if (!ok) {
        ASN1_OBJECT_free(o);
        if (ptype == V_ASN1_OBJECT)
            ASN1_OBJECT_free(v);
        else
            ASN1_STRING_free(v);
        OPENSSL_free(enc);
    }
    return ok;
}

/* A CSR, decoded either way: the fast path keeps raw/info (P-256), the
 * general one an X509_REQ (RSA, and anything to refuse with a clear error). */
typedef struct csr_req {
    CSR_RAW *raw;
    CSR_INFO *info;
    X509_REQ *req;
    const X509_ALGOR *alg; /* the SubjectPublicKeyInfo to copy */
    const unsigned char *key;
    int key_len;
} csr_req;

static void csr_clear(csr_req *c)
{
    ASN1_item_free((ASN1_VALUE *)c->raw, ASN1_ITEM_rptr(CSR_RAW));
    ASN1_item_free((ASN1_VALUE *)c->info, ASN1_ITEM_rptr(CSR_INFO));
    X509_REQ_free(c->req);
    memset(c, 0, sizeof *c);
}

/* PEM -> DER (malloc'ed by OpenSSL), for the CERTIFICATE REQUEST label only. */
static unsigned char *csr_der(const char *pem, size_t len, long *der_len)
{
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    if (len > INT_MAX)
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (b && PEM_read_bio(b, &name, &header, &der, der_len) == 1 &&
        strcmp(name, PEM_STRING_X509_REQ) != 0 && strcmp(name, PEM_STRING_X509_REQ_OLD) != 0) {
        OPENSSL_free(der);
        der = NULL;
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    BIO_free(b);
    return der;
}

static bool is_p256_spki(const CSR_SPKI *spki)
{
    const ASN1_OBJECT *obj;
    int ptype;
    const void *pval;
    X509_ALGOR_get0(&obj, &ptype, &pval, spki->alg);
    return OBJ_obj2nid(obj) == NID_X9_62_id_ecPublicKey && ptype == V_ASN1_OBJECT &&
           OBJ_obj2nid(pval) == NID_X9_62_prime256v1;
}

/* Verify sig over tbs with key under the signature algorithm alg (RFC 5280
 * §4.1.1.2 identifiers: the digest comes from the OID). */
static bool verify_sig(rete_ca *ca, EVP_PKEY *key, const X509_ALGOR *alg,
                       const ASN1_BIT_STRING *sig, const unsigned char *tbs, size_t tbslen)
{
    const ASN1_OBJECT *obj;
    int md_nid, pk_nid;
    X509_ALGOR_get0(&obj, NULL, NULL, alg);
    if (!OBJ_find_sigid_algs(OBJ_obj2nid(obj), &md_nid, &pk_nid) ||
        pk_nid != NID_X9_62_id_ecPublicKey || md_nid == NID_undef)
        return false;
    return EVP_MD_CTX_reset(ca->verify_ctx) &&
           EVP_DigestVerifyInit_ex(ca->verify_ctx, NULL, OBJ_nid2sn(md_nid), NULL, NULL, key,
                                   NULL) == 1 &&
           EVP_DigestVerify(ca->verify_ctx, ASN1_STRING_get0_data(sig),
                            (size_t)ASN1_STRING_length(sig), tbs, tbslen) == 1;
}

/* Decode and verify a CSR; false with err set. */
static bool csr_read(rete_ca *ca, const char *pem, size_t len, csr_req *c, rete_error *err)
{
    long der_len = 0;
    unsigned char *der = csr_der(pem, len, &der_len);
    const unsigned char *p = der;
    bool ok = false;
    memset(c, 0, sizeof *c);
    if (!der) {
        rete_error_set_ssl(err, RETE_EINVAL, "not a PEM certificate request");
        return false;
    }
    c->raw = (CSR_RAW *)ASN1_item_d2i(NULL, &p, der_len, ASN1_ITEM_rptr(CSR_RAW));
    if (c->raw && p == der + der_len && c->raw->info->type == V_ASN1_SEQUENCE) {
        const ASN1_STRING *tbs = c->raw->info->value.sequence;
        const unsigned char *q = ASN1_STRING_get0_data(tbs);
        c->info =
            (CSR_INFO *)ASN1_item_d2i(NULL, &q, ASN1_STRING_length(tbs), ASN1_ITEM_rptr(CSR_INFO));
        if (c->info && is_p256_spki(c->info->spki)) {
            /* The fast path: import the point into a copy of the P-256 parameters. */
            const ASN1_BIT_STRING *bits = c->info->spki->key;
            EVP_PKEY *k = EVP_PKEY_dup(ca->p256);
            if (!k || EVP_PKEY_set1_encoded_public_key(k, ASN1_STRING_get0_data(bits),
                                                       (size_t)ASN1_STRING_length(bits)) != 1) {
                rete_error_set_ssl(err, RETE_EINVAL, "CSR key: not a valid P-256 public key");
            } else if (!verify_sig(ca, k, c->raw->sig_alg, c->raw->signature,
                                   ASN1_STRING_get0_data(tbs), (size_t)ASN1_STRING_length(tbs))) {
                rete_error_set_ssl(err, RETE_EINVAL, "CSR: signature does not verify");
            } else {
                c->alg = c->info->spki->alg;
                c->key = ASN1_STRING_get0_data(bits);
                c->key_len = ASN1_STRING_length(bits);
                ok = true;
            }
            EVP_PKEY_free(k);
            goto out;
        }
    }
    /* Every other key: OpenSSL's own request decoding. */
    p = der;
    c->req = d2i_X509_REQ(NULL, &p, der_len);
    EVP_PKEY *pub = c->req ? X509_REQ_get0_pubkey(c->req) : NULL;
    if (!pub) {
        rete_error_set_ssl(err, RETE_EINVAL, "CSR: malformed or unreadable public key");
        goto out;
    }
    if (!csr_key_ok(pub, err))
        goto out;
    if (X509_REQ_verify(c->req, pub) != 1) {
        rete_error_set_ssl(err, RETE_EINVAL, "CSR: signature does not verify");
        goto out;
    }
    X509_PUBKEY *xpk = X509_REQ_get_X509_PUBKEY(c->req);
    X509_ALGOR *alg;
    if (!xpk || !X509_PUBKEY_get0_param(NULL, &c->key, &c->key_len, &alg, xpk)) {
        rete_error_set_ssl(err, RETE_EINVAL, "CSR: unreadable public key");
        goto out;
    }
    c->alg = alg;
    ok = true;
out:
    OPENSSL_free(der);
    ERR_clear_error();
    if (!ok)
        csr_clear(c);
    return ok;
}

static bool add_san_uri(X509 *x, const char *uri)
{
    GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    bool ok = false;
    if (!names || !gn || !ia5 || !ASN1_STRING_set(ia5, uri, (int)strlen(uri)))
        goto out;
    GENERAL_NAME_set0_value(gn, GEN_URI, ia5);
    ia5 = NULL;
    if (!sk_GENERAL_NAME_push(names, gn))
        goto out;
    gn = NULL;
    /* Critical: the subject is empty (RFC 5280 §4.2.1.6; SPIFFE X.509-SVID §4). */
    ok = X509_add1_ext_i2d(x, NID_subject_alt_name, names, 1, X509V3_ADD_DEFAULT) == 1;
out:
    ASN1_IA5STRING_free(ia5);
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(names);
    return ok;
}

/* The leaf as PEM (RFC 7468: base64 in lines of 64) followed by `chain`,
 * in one allocation: encoded straight from the DER, without a BIO. */
static char *leaf_chain_pem(X509 *x, const char *chain, size_t chain_len)
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----\n";
    static const char end[] = "-----END CERTIFICATE-----\n";
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0)
        return NULL;
    size_t lines = ((size_t)n + 47) / 48;
    size_t cap = sizeof(begin) - 1 + lines * 65 + sizeof(end) - 1 + chain_len + 1;
    char *pem = rete_malloc(cap);
    size_t o = sizeof(begin) - 1;
    memcpy(pem, begin, o);
    for (size_t i = 0; i < (size_t)n; i += 48) {
        int k = (size_t)n - i < 48 ? (int)((size_t)n - i) : 48;
        o += (size_t)EVP_EncodeBlock((unsigned char *)pem + o, der + i, k);
        pem[o++] = '\n';
    }
    memcpy(pem + o, end, sizeof(end) - 1);
    o += sizeof(end) - 1;
    memcpy(pem + o, chain, chain_len);
    pem[o + chain_len] = '\0';
    OPENSSL_free(der);
    return pem;
}

char *rete_ca_sign_csr(rete_ca *ca, const char *csr_pem, size_t csr_len, const char *spiffe_id,
                       uint32_t ttl_seconds, int64_t *not_after, rete_error *err)
{
    rete_cert_facts f;
    char *pem = rete_ca_sign_csr_facts(ca, csr_pem, csr_len, spiffe_id, ttl_seconds, &f, err);
    if (pem && not_after)
        *not_after = f.not_after;
    return pem;
}

char *rete_ca_sign_csr_facts(rete_ca *ca, const char *csr_pem, size_t csr_len, const char *spiffe_id,
                             uint32_t ttl_seconds, rete_cert_facts *issued, rete_error *err)
{
    csr_req req;
    X509 *x = NULL;
    char *pem = NULL;
    size_t idlen = strlen(spiffe_id);

    if (!rete_spiffe_id_valid(spiffe_id, idlen) || !rete_spiffe_in_trust_domain(spiffe_id, ca->td)) {
        rete_error_set_ssl(err, RETE_EINVAL, "\"%s\" is not a SPIFFE ID in trust domain %s", spiffe_id, ca->td);
        return NULL;
    }
    if (ttl_seconds == 0) {
        rete_error_set_ssl(err, RETE_EINVAL, "certificate lifetime must be positive");
        return NULL;
    }
    if (!csr_read(ca, csr_pem, csr_len, &req, err))
        return NULL;

    int64_t now = (int64_t)time(NULL);
    int64_t na = now + (int64_t)ttl_seconds;
    if (na > ca->not_after)
        na = ca->not_after;
    if (na <= now) {
        rete_error_set_ssl(err, RETE_ESTATE, "the CA certificate has expired");
        goto fail;
    }
    x = X509_new();
    RETE_ENSURE_GOTO(x, oom);
    RETE_ENSURE_GOTO(X509_set_version(x, X509_VERSION_3) && random_serial(x, ca->serial_bn) &&
                         X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) &&
                         ASN1_TIME_set(X509_getm_notBefore(x), (time_t)(now - BACKDATE_SECONDS)) &&
                         ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na) &&
                         copy_spki(x, req.alg, req.key, req.key_len),
                     oom);
    RETE_ENSURE_GOTO(X509_add_ext(x, ca->ext_bc, -1) && X509_add_ext(x, ca->ext_ku, -1) &&
                         X509_add_ext(x, ca->ext_eku, -1) && add_san_uri(x, spiffe_id) &&
                         X509_add_ext(x, ca->ext_aki, -1),
                     oom);
    RETE_ENSURE_GOTO(EVP_MD_CTX_copy_ex(ca->sign_work, ca->sign_tmpl) &&
                         X509_sign_ctx(x, ca->sign_work) > 0,
                     sign_fail);
    pem = leaf_chain_pem(x, ca->chain_pem, ca->chain_len);
    RETE_ENSURE_GOTO(pem, oom);
    rete_cert_facts_of(x, issued);
    issued->has_root = rete_ca_signing_root_id(ca, issued->root_id);
    X509_free(x);
    csr_clear(&req);
    return pem;
sign_fail:
    rete_error_set_ssl(err, RETE_EIO, "signing the certificate failed");
    goto fail;
oom:
    rete_error_set_ssl(err, RETE_EIO, "cannot build the certificate");
fail:
    X509_free(x);
    csr_clear(&req);
    return NULL;
}

const char *rete_ca_bundle_pem(const rete_ca *ca)
{
    return ca->bundle_pem;
}

int64_t rete_ca_not_after(const rete_ca *ca)
{
    return ca->not_after;
}

bool rete_ca_signing_root_id(const rete_ca *ca, uint8_t out[RETE_CERT_ROOT_ID_LEN])
{
    /* Roots are kept oldest first: while rotating the new one, which signs,
     * is last; an operator CA's root is its chain's (one). */
    int n = sk_X509_num(ca->roots);
    return n > 0 && rete_cert_root_id(sk_X509_value(ca->roots, n - 1), out);
}

bool rete_ca_rotating(const rete_ca *ca)
{
    return ca->rotating;
}

/* ---- rotation ----------------------------------------------------------- */

rete_rc rete_ca_rotate_begin(rete_ca *ca, const char *dir, rete_error *err)
{
    if (ca->operator_ca)
        return rete_error_set_ssl(err, RETE_ESTATE,
                                  "the CA is operator-supplied: rotate it by replacing "
                                  "%s/cert.pem and key.pem",
                                  dir);
    if (ca->rotating)
        return rete_error_set_ssl(err, RETE_ESTATE, "a CA rotation is already in progress");
    X509 *root = NULL;
    EVP_PKEY *key = NULL;
    if (!make_root(ca->td, &root, &key, err))
        return RETE_EIO;
    /* root-next.pem is the commit point: its key must be on disk first. */
    rete_rc rc = write_key(dir, "root-next-key.pem", key, err);
    if (rc == RETE_OK)
        rc = write_cert(dir, "root-next.pem", root, err);
    if (rc != RETE_OK || !sk_X509_push(ca->roots, root)) {
        if (rc == RETE_OK)
            rete_error_set_ssl(err, RETE_ENOMEM, "out of memory");
        X509_free(root);
        EVP_PKEY_free(key);
        return rc == RETE_OK ? RETE_ENOMEM : rc;
    }
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    ca->cert = root;
    X509_up_ref(root);
    ca->key = key;
    ca->not_after = asn1_time_unix(X509_get0_notAfter(root));
    ca->rotating = true;
    if (!set_bundle(ca))
        return rete_error_set_ssl(err, RETE_ENOMEM, "cannot encode the trust bundle");
    if (!signer_setup(ca, err))
        return RETE_EIO;
    return write_pem(dir, "bundle.pem", ca->bundle_pem, 0644, err);
}

rete_rc rete_ca_rotate_finish(rete_ca *ca, const char *dir, rete_error *err)
{
    if (!ca->rotating)
        return rete_error_set_ssl(err, RETE_ESTATE, "no CA rotation in progress");
    /* Certificate before key; recover_rotation completes the second rename
     * when a crash falls between them. */
    RETE_GUARD(rename_file(dir, "root-next.pem", "root.pem", err));
    RETE_GUARD(rename_file(dir, "root-next-key.pem", "root-key.pem", err));
    X509_free(sk_X509_shift(ca->roots));
    ca->rotating = false;
    if (!set_bundle(ca))
        return rete_error_set_ssl(err, RETE_ENOMEM, "cannot encode the trust bundle");
    return write_pem(dir, "bundle.pem", ca->bundle_pem, 0644, err);
}

/* ---- the requesting side -------------------------------------------------- */

