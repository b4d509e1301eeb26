#include "csr.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

static char *bio_text(BIO *b)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    return n > 0 ? rete_strndup(data, (size_t)n) : NULL;
}

static void ssl_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s: %s", what, buf);
    ERR_clear_error();
}

char *rete_ctl_csr_new(const char *spiffe_id, char **key_pem_out, char *err, size_t errlen)
{
    char *csr_pem = NULL;
    X509_REQ *req = NULL;
    X509_NAME *name = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    BIO *kb = NULL, *cb = NULL;
    *key_pem_out = NULL;

    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (!key) {
        ssl_err(err, errlen, "generating a P-256 key");
        goto fail;
    }
    req = X509_REQ_new();
    name = X509_NAME_new();
    if (!req || !name || !X509_REQ_set_version(req, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"retectl", -1,
                                    -1, 0) ||
        !X509_REQ_set_subject_name(req, name) || !X509_REQ_set_pubkey(req, key)) {
        ssl_err(err, errlen, "building the CSR");
        goto fail;
    }
    if (spiffe_id) {
        char san[1100];
        if (snprintf(san, sizeof(san), "URI:%s", spiffe_id) >= (int)sizeof(san)) {
            snprintf(err, errlen, "SPIFFE ID too long");
            goto fail;
        }
        exts = sk_X509_EXTENSION_new_null();
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
        if (!exts || !ext || !sk_X509_EXTENSION_push(exts, ext)) {
            X509_EXTENSION_free(ext);
            ssl_err(err, errlen, "SPIFFE ID SAN");
            goto fail;
        }
        if (!X509_REQ_add_extensions(req, exts)) {
            ssl_err(err, errlen, "adding the SAN to the CSR");
            goto fail;
        }
    }
    if (!X509_REQ_sign(req, key, EVP_sha256())) {
        ssl_err(err, errlen, "signing the CSR");
        goto fail;
    }
    kb = BIO_new(BIO_s_mem());
    cb = BIO_new(BIO_s_mem());
    if (!kb || !cb || !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
        !PEM_write_bio_X509_REQ(cb, req)) {
        ssl_err(err, errlen, "writing PEM");
        goto fail;
    }
    *key_pem_out = bio_text(kb);
    csr_pem = bio_text(cb);
    if (!*key_pem_out || !csr_pem) {
        rete_free(key_pem_out);
        rete_free(&csr_pem);
        snprintf(err, errlen, "writing PEM: empty output");
    }
fail:
    BIO_free(kb);
    BIO_free(cb);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_NAME_free(name);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return csr_pem;
}
