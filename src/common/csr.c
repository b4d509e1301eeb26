/* See csr.h. */
#include "csr.h"
#include "error.h"
#include "alloc.h"
#include "tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *bio_take(BIO *b, size_t *len_out)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    if (n < 0)
        return NULL;
    char *s = rete_strndup(data, (size_t)n);
    if (len_out)
        *len_out = (size_t)n;
    return s;
}

static char *key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) ? bio_take(b, NULL)
                                                                              : NULL;
    BIO_free(b);
    return s;
}

char *rete_csr_new(const char *spiffe_id, char **key_pem_out, rete_error *err)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    X509_EXTENSION *san = NULL;
    BIO *b = NULL;
    char *csr = NULL, *kp = NULL;
    *key_pem_out = NULL;

    if (!rete_spiffe_id_valid(spiffe_id, strlen(spiffe_id))) {
        rete_error_set_ssl(err, RETE_EINVAL, "\"%s\" is not a SPIFFE ID", spiffe_id);
        goto out;
    }
    RETE_ENSURE_GOTO(key && req && exts && names && gn && ia5, fail);
    RETE_ENSURE_GOTO(ASN1_STRING_set(ia5, spiffe_id, (int)strlen(spiffe_id)), fail);
    GENERAL_NAME_set0_value(gn, GEN_URI, ia5);
    ia5 = NULL;
    RETE_ENSURE_GOTO(sk_GENERAL_NAME_push(names, gn), fail);
    gn = NULL;
    san = X509V3_EXT_i2d(NID_subject_alt_name, 1, names);
    RETE_ENSURE_GOTO(san && sk_X509_EXTENSION_push(exts, san), fail);
    san = NULL;
    RETE_ENSURE_GOTO(X509_REQ_set_version(req, X509_REQ_VERSION_1) &&
                         X509_REQ_set_pubkey(req, key) && X509_REQ_add_extensions(req, exts) &&
                         X509_REQ_sign(req, key, EVP_sha256()) > 0,
                     fail);
    b = BIO_new(BIO_s_mem());
    RETE_ENSURE_GOTO(b && PEM_write_bio_X509_REQ(b, req), fail);
    RETE_ENSURE_GOTO((csr = bio_take(b, NULL)) != NULL, fail);
    RETE_ENSURE_GOTO((kp = key_pem(key)) != NULL, fail);
    *key_pem_out = kp;
    goto out;
fail:
    rete_error_set_ssl(err, RETE_EIO, "cannot create a key and CSR");
    rete_free(&csr);
out:
    BIO_free(b);
    X509_EXTENSION_free(san);
    ASN1_IA5STRING_free(ia5);
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(names);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return csr;
}

static long long cert_time(const char *pem, size_t len, bool after)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    long long t = 0;
    if (x) {
        struct tm tm;
        if (ASN1_TIME_to_tm(after ? X509_get0_notAfter(x) : X509_get0_notBefore(x), &tm) == 1)
            t = (long long)timegm(&tm);
        X509_free(x);
    }
    BIO_free(b);
    ERR_clear_error();
    return t;
}

long long rete_cert_not_after_pem(const char *pem, size_t len)
{
    return cert_time(pem, len, true);
}

long long rete_cert_not_before_pem(const char *pem, size_t len)
{
    return cert_time(pem, len, false);
}
