/* Test-only certificate authority: ECDSA P-256 roots and SPIFFE leaf
 * certificates made with the OpenSSL API and written as PEM files into a
 * directory, so tests need no fixtures on disk. Aborts on any failure: a test
 * that cannot build its certificates has nothing to say. */
#ifndef RETE_TLS_TESTCA_H
#define RETE_TLS_TESTCA_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct testca {
    X509 *cert;
    EVP_PKEY *key;
} testca;

#define TESTCA_CHECK(cond)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: testca: %s failed\n", __FILE__, __LINE__, #cond);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void testca_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    TESTCA_CHECK(ext);
    TESTCA_CHECK(X509_add_ext(cert, ext, -1));
    X509_EXTENSION_free(ext);
}

/* A certificate for key, signed by issuer (self-signed when issuer is NULL),
 * valid from now+not_before to now+not_after seconds. */
static X509 *testca_cert(EVP_PKEY *key, const char *cn, const testca *issuer, long not_before,
                         long not_after, long serial)
{
    X509 *x = X509_new();
    TESTCA_CHECK(x);
    TESTCA_CHECK(X509_set_version(x, X509_VERSION_3));
    TESTCA_CHECK(ASN1_INTEGER_set(X509_get_serialNumber(x), serial));
    TESTCA_CHECK(X509_gmtime_adj(X509_getm_notBefore(x), not_before));
    TESTCA_CHECK(X509_gmtime_adj(X509_getm_notAfter(x), not_after));
    TESTCA_CHECK(X509_set_pubkey(x, key));
    X509_NAME *name = X509_get_subject_name(x);
    TESTCA_CHECK(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0));
    TESTCA_CHECK(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer->cert) : name));
    return x;
}

static testca testca_new_root(const char *cn)
{
    testca ca;
    ca.key = EVP_EC_gen("P-256");
    TESTCA_CHECK(ca.key);
    ca.cert = testca_cert(ca.key, cn, NULL, -3600, 10 * 86400, 1);
    testca_ext(ca.cert, ca.cert, NID_basic_constraints, "critical,CA:TRUE");
    testca_ext(ca.cert, ca.cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    testca_ext(ca.cert, ca.cert, NID_subject_key_identifier, "hash");
    TESTCA_CHECK(X509_sign(ca.cert, ca.key, EVP_sha256()));
    return ca;
}

static void testca_free(testca *ca)
{
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    ca->cert = NULL;
    ca->key = NULL;
}

/* A workload leaf with SAN san (e.g. "URI:spiffe://td/ns/a/sa/b", or a list
 * "URI:...,URI:..."; NULL for none). */
static testca testca_new_leaf(const testca *ca, const char *san, long not_before, long not_after)
{
    static long serial = 100;
    testca leaf;
    leaf.key = EVP_EC_gen("P-256");
    TESTCA_CHECK(leaf.key);
    leaf.cert = testca_cert(leaf.key, "workload", ca, not_before, not_after, serial++);
    testca_ext(leaf.cert, ca->cert, NID_basic_constraints, "critical,CA:FALSE");
    testca_ext(leaf.cert, ca->cert, NID_key_usage, "critical,digitalSignature");
    testca_ext(leaf.cert, ca->cert, NID_ext_key_usage, "serverAuth,clientAuth");
    testca_ext(leaf.cert, ca->cert, NID_authority_key_identifier, "keyid:always");
    if (san)
        testca_ext(leaf.cert, ca->cert, NID_subject_alt_name, san);
    TESTCA_CHECK(X509_sign(leaf.cert, ca->key, EVP_sha256()));
    return leaf;
}

/* Writes dir/name.crt (and dir/name.key when key_path is set), storing the
 * paths in the caller's buffers of pathlen bytes. */
static void testca_write(const char *dir, const char *name, const testca *c, char *crt_path,
                         char *key_path, size_t pathlen)
{
    TESTCA_CHECK(snprintf(crt_path, pathlen, "%s/%s.crt", dir, name) < (int)pathlen);
    FILE *f = fopen(crt_path, "w");
    TESTCA_CHECK(f);
    TESTCA_CHECK(PEM_write_X509(f, c->cert));
    fclose(f);
    if (key_path) {
        TESTCA_CHECK(snprintf(key_path, pathlen, "%s/%s.key", dir, name) < (int)pathlen);
        f = fopen(key_path, "w");
        TESTCA_CHECK(f);
        TESTCA_CHECK(PEM_write_PrivateKey(f, c->key, NULL, NULL, 0, NULL, NULL));
        fclose(f);
    }
}

/* Writes a bundle file holding every cert of cas[0..n). */
static void testca_write_bundle(const char *path, const testca *cas, size_t n)
{
    FILE *f = fopen(path, "w");
    TESTCA_CHECK(f);
    for (size_t i = 0; i < n; i++)
        TESTCA_CHECK(PEM_write_X509(f, cas[i].cert));
    fclose(f);
}

#endif
