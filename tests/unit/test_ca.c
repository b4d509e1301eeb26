/* Unit tests for src/control/ca.c and token.c: a CA in a temporary
 * directory, CSRs made with rete_csr_new (or by hand for the bad ones),
 * chains checked with X509_verify_cert and with the openssl CLI. The last
 * test is a micro-benchmark: it prints certificates/s, never asserts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ca.h"
/* Not every helper of the shared test CA is used here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "tls_testca.h"
#pragma GCC diagnostic pop
#include "token.h"

#include <ftw.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TD "cluster.local"
#define ID_A "spiffe://" TD "/ns/default/sa/frontend"
#define ID_EVIL "spiffe://" TD "/ns/kube-system/sa/admin"
#define PATHLEN 512

static char tmp_root[64];
static int dir_seq;

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/rete-test-ca-XXXXXX");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(tmp_root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory path (not created) under the test's temporary root. */
static void new_dir(char out[PATHLEN])
{
    if (snprintf(out, PATHLEN, "%s/ca%d", tmp_root, dir_seq++) >= PATHLEN)
        fail_msg("path too long");
}

static char *path_in(const char *dir, const char *name)
{
    static char p[4][PATHLEN];
    static int i;
    i = (i + 1) % 4;
    if (snprintf(p[i], PATHLEN, "%s/%s", dir, name) >= PATHLEN)
        fail_msg("path too long");
    return p[i];
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static void spill(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

static STACK_OF(X509) * pem_certs(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        sk_X509_push(sk, x);
    ERR_clear_error();
    BIO_free(b);
    return sk;
}

static int count_certs(const char *pem)
{
    STACK_OF(X509) *sk = pem_certs(pem);
    int n = sk_X509_num(sk);
    sk_X509_pop_free(sk, X509_free);
    return n;
}

/* X509_verify_cert of chain (leaf first) against the roots in bundle, for
 * both TLS purposes; returns the first error (X509_V_OK when both pass). */
static int verify_chain(const char *chain, const char *bundle)
{
    STACK_OF(X509) *c = pem_certs(chain), *roots = pem_certs(bundle);
    X509 *leaf = sk_X509_shift(c);
    int rc = X509_V_OK;
    static const int purposes[] = {X509_PURPOSE_SSL_CLIENT, X509_PURPOSE_SSL_SERVER};
    assert_non_null(leaf);
    for (size_t p = 0; p < 2 && rc == X509_V_OK; p++) {
        X509_STORE *st = X509_STORE_new();
        X509_STORE_CTX *xs = X509_STORE_CTX_new();
        for (int i = 0; i < sk_X509_num(roots); i++)
            assert_true(X509_STORE_add_cert(st, sk_X509_value(roots, i)));
        assert_true(X509_STORE_CTX_init(xs, st, leaf, c));
        assert_true(X509_STORE_CTX_set_purpose(xs, purposes[p]));
        if (X509_verify_cert(xs) != 1)
            rc = X509_STORE_CTX_get_error(xs);
        X509_STORE_CTX_free(xs);
        X509_STORE_free(st);
    }
    ERR_clear_error();
    X509_free(leaf);
    sk_X509_pop_free(c, X509_free);
    sk_X509_pop_free(roots, X509_free);
    return rc;
}

static X509 *first_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    return x;
}

static int64_t t_unix(const ASN1_TIME *t)
{
    struct tm tm;
    assert_true(ASN1_TIME_to_tm(t, &tm));
    return (int64_t)timegm(&tm);
}

static char *new_csr(const char *id)
{
    rete_error err = {0};
    char *key = NULL;
    char *csr = rete_csr_new(id, &key, &err);
    assert_non_null(csr);
    assert_non_null(key);
    assert_non_null(strstr(key, "PRIVATE KEY"));
    free(key);
    return csr;
}

/* A CSR for an arbitrary key, signed with SHA-256 (for RSA and other curves). */
static char *csr_for_key(EVP_PKEY *k, bool corrupt_signature)
{
    X509_REQ *req = X509_REQ_new();
    assert_true(X509_REQ_set_pubkey(req, k));
    assert_true(X509_REQ_sign(req, k, EVP_sha256()) > 0);
    if (corrupt_signature) {
        const ASN1_BIT_STRING *sig;
        X509_REQ_get0_signature(req, &sig, NULL);
        ((ASN1_BIT_STRING *)sig)->data[10] ^= 0x55;
    }
    BIO *b = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_X509_REQ(b, req));
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = strndup(data, (size_t)n);
    BIO_free(b);
    X509_REQ_free(req);
    return s;
}

static rete_ca *make_ca(char dir[PATHLEN])
{
    rete_error err = {0};
    new_dir(dir);
    assert_int_equal(rete_ca_init(dir, TD, &err), RETE_OK);
    rete_ca *ca = rete_ca_load(dir, TD, &err);
    if (!ca)
        fail_msg("load: %s", err.msg);
    return ca;
}

static char *sign(rete_ca *ca, const char *csr, const char *id, uint32_t ttl, int64_t *na)
{
    rete_error err = {0};
    char *chain = rete_ca_sign_csr(ca, csr, strlen(csr), id, ttl, na, &err);
    if (!chain)
        fail_msg("sign: %s", err.msg);
    return chain;
}

/* ---- init and load ------------------------------------------------------ */

static void test_init_load(void **state)
{
    (void)state;
    char dir[PATHLEN];
    rete_error err = {0};
    new_dir(dir);
    assert_int_equal(rete_ca_init(dir, "spiffe://" TD, &err), RETE_OK);
    struct stat st;
    assert_int_equal(stat(path_in(dir, "root-key.pem"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(path_in(dir, "root.pem"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    char *root_pem = slurp(path_in(dir, "root.pem"));
    char *bundle_file = slurp(path_in(dir, "bundle.pem"));
    assert_string_equal(root_pem, bundle_file);

    X509 *root = first_cert(root_pem);
    char buf[256];
    X509_NAME_get_text_by_NID(X509_get_subject_name(root), NID_commonName, buf, sizeof buf);
    assert_string_equal(buf, TD " root");
    X509_NAME_get_text_by_NID(X509_get_subject_name(root), NID_organizationName, buf, sizeof buf);
    assert_string_equal(buf, "rete");
    assert_true(X509_get_extension_flags(root) & EXFLAG_CA);
    assert_true(X509_get_key_usage(root) & KU_KEY_CERT_SIGN);
    assert_true(X509_get_key_usage(root) & KU_CRL_SIGN);
    int crit = 0;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(root, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_int_equal(crit, 1);
    BASIC_CONSTRAINTS_free(bc);
    assert_non_null(X509_get0_subject_key_id(root));
    assert_non_null(X509_get0_authority_key_id(root));
    assert_int_equal(EVP_PKEY_get_base_id(X509_get0_pubkey(root)), EVP_PKEY_EC);
    int64_t life = t_unix(X509_get0_notAfter(root)) - (int64_t)time(NULL);
    assert_true(life > 3649LL * 86400 && life <= 3650LL * 86400);

    /* init again keeps the root. */
    assert_int_equal(rete_ca_init(dir, TD, &err), RETE_OK);
    char *again = slurp(path_in(dir, "root.pem"));
    assert_string_equal(root_pem, again);

    rete_ca *ca = rete_ca_load(dir, TD, &err);
    assert_non_null(ca);
    assert_string_equal(rete_ca_bundle_pem(ca), root_pem);
    assert_int_equal(rete_ca_not_after(ca), t_unix(X509_get0_notAfter(root)));
    assert_false(rete_ca_rotating(ca));
    rete_ca_free(ca);

    assert_null(rete_ca_load(dir, "Bad Domain", &err));
    assert_non_null(strstr(err.msg, "trust domain"));
    char empty[PATHLEN];
    new_dir(empty);
    assert_null(rete_ca_load(empty, TD, &err));
    assert_non_null(strstr(err.msg, "root.pem"));

    /* A key that does not match root.pem is refused. */
    EVP_PKEY *other = EVP_EC_gen("P-256");
    FILE *f = fopen(path_in(dir, "root-key.pem"), "w");
    PEM_write_PrivateKey(f, other, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    EVP_PKEY_free(other);
    assert_null(rete_ca_load(dir, TD, &err));
    assert_non_null(strstr(err.msg, "does not match"));

    X509_free(root);
    free(root_pem);
    free(bundle_file);
    free(again);
}

/* ---- issuance ------------------------------------------------------------- */

static void test_sign_and_verify(void **state)
{
    (void)state;
    char dir[PATHLEN];
    rete_ca *ca = make_ca(dir);
    /* The CSR asks for another identity: the CA decides. */
    char *csr = new_csr(ID_EVIL);
    int64_t na = 0;
    char *chain = sign(ca, csr, ID_A, 86400, &na);
    assert_int_equal(count_certs(chain), 1); /* signed by the root: the leaf alone */
    assert_int_equal(verify_chain(chain, rete_ca_bundle_pem(ca)), X509_V_OK);

    X509 *leaf = first_cert(chain);
    GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    assert_non_null(names);
    assert_int_equal(sk_GENERAL_NAME_num(names), 1);
    GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, 0);
    assert_int_equal(gn->type, GEN_URI);
    assert_int_equal(ASN1_STRING_length(gn->d.uniformResourceIdentifier), strlen(ID_A));
    assert_memory_equal(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier), ID_A, strlen(ID_A));
    GENERAL_NAMES_free(names);
    assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(leaf)), 0);

    uint32_t flags = X509_get_extension_flags(leaf);
    assert_false(flags & EXFLAG_CA);
    assert_true(flags & EXFLAG_BCONS);
    assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE);
    assert_int_equal(X509_get_extended_key_usage(leaf), XKU_SSL_SERVER | XKU_SSL_CLIENT);
    X509 *root = first_cert(rete_ca_bundle_pem(ca));
    assert_int_equal(
        ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf), X509_get0_subject_key_id(root)), 0);
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(root)), 0);
    assert_int_equal(X509_get_signature_nid(leaf), NID_ecdsa_with_SHA256);

    /* Serials: positive, at most 17 octets, different every time. */
    char *chain2 = sign(ca, csr, ID_A, 86400, NULL);
    X509 *leaf2 = first_cert(chain2);
    const ASN1_INTEGER *s1 = X509_get0_serialNumber(leaf), *s2 = X509_get0_serialNumber(leaf2);
    assert_int_equal(s1->type, V_ASN1_INTEGER);
    assert_true(ASN1_STRING_length(s1) <= 17 && ASN1_STRING_length(s1) >= 8);
    assert_int_not_equal(ASN1_INTEGER_cmp(s1, s2), 0);
    assert_int_equal(X509_cmp(leaf, leaf2) != 0, 1);
    /* The leaf's public key is the CSR's. */
    BIO *b = BIO_new_mem_buf(csr, -1);
    X509_REQ *req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_int_equal(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), X509_get0_pubkey(leaf)), 1);
    X509_REQ_free(req);

    X509_free(root);
    X509_free(leaf);
    X509_free(leaf2);
    free(chain);
    free(chain2);
    free(csr);
    rete_ca_free(ca);
}

static void test_refusals(void **state)
{
    (void)state;
    char dir[PATHLEN];
    rete_error err = {0};
    rete_ca *ca = make_ca(dir);

    EVP_PKEY *ec = EVP_EC_gen("P-256");
    char *bad = csr_for_key(ec, true);
    assert_null(rete_ca_sign_csr(ca, bad, strlen(bad), ID_A, 3600, NULL, &err));
    assert_non_null(strstr(err.msg, "signature"));
    assert_int_equal(err.code, RETE_EINVAL);
    char *good = csr_for_key(ec, false); /* no SAN at all: fine, the CA decides */
    char *chain = sign(ca, good, ID_A, 3600, NULL);
    assert_int_equal(verify_chain(chain, rete_ca_bundle_pem(ca)), X509_V_OK);
    free(chain);

    EVP_PKEY *rsa1024 = EVP_RSA_gen(1024);
    char *weak = csr_for_key(rsa1024, false);
    assert_null(rete_ca_sign_csr(ca, weak, strlen(weak), ID_A, 3600, NULL, &err));
    assert_non_null(strstr(err.msg, "RSA 1024"));

    EVP_PKEY *rsa2048 = EVP_RSA_gen(2048);
    char *rsa = csr_for_key(rsa2048, false);
    chain = sign(ca, rsa, ID_A, 3600, NULL);
    assert_int_equal(verify_chain(chain, rete_ca_bundle_pem(ca)), X509_V_OK);
    free(chain);

    EVP_PKEY *p384 = EVP_EC_gen("P-384");
    char *c384 = csr_for_key(p384, false);
    assert_null(rete_ca_sign_csr(ca, c384, strlen(c384), ID_A, 3600, NULL, &err));
    assert_non_null(strstr(err.msg, "P-256"));

    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    X509_REQ *req = X509_REQ_new();
    assert_true(X509_REQ_set_pubkey(req, ed));
    assert_true(X509_REQ_sign(req, ed, NULL) > 0);
    BIO *b = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_X509_REQ(b, req));
    char *edpem;
    long edlen = BIO_get_mem_data(b, &edpem);
    assert_null(rete_ca_sign_csr(ca, edpem, (size_t)edlen, ID_A, 3600, NULL, &err));
    assert_non_null(strstr(err.msg, "not accepted"));
    BIO_free(b);
    X509_REQ_free(req);

    assert_null(rete_ca_sign_csr(ca, "garbage", 7, ID_A, 3600, NULL, &err));
    assert_non_null(strstr(err.msg, "certificate request"));
    /* Truncated PEM. */
    assert_null(rete_ca_sign_csr(ca, good, strlen(good) / 2, ID_A, 3600, NULL, &err));
    assert_null(rete_ca_sign_csr(ca, good, strlen(good), "spiffe://other.td/ns/a/sa/b", 3600, NULL,
                                 &err));
    assert_non_null(strstr(err.msg, "trust domain"));
    assert_null(rete_ca_sign_csr(ca, good, strlen(good), "spiffe://" TD "x/ns/a/sa/b", 3600, NULL,
                                 &err));
    assert_null(
        rete_ca_sign_csr(ca, good, strlen(good), "spiffe://" TD, 3600, NULL, &err));
    assert_null(rete_ca_sign_csr(ca, good, strlen(good), "spiffe://" TD "/ns/../sa/b", 3600, NULL,
                                 &err));
    assert_null(rete_ca_sign_csr(ca, good, strlen(good), ID_A, 0, NULL, &err));

    char *key = NULL;
    assert_null(rete_csr_new("http://not-spiffe", &key, &err));
    assert_null(key);

    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa1024);
    EVP_PKEY_free(rsa2048);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(ed);
    free(bad);
    free(good);
    free(weak);
    free(rsa);
    free(c384);
    rete_ca_free(ca);
}

static void test_validity(void **state)
{
    (void)state;
    char dir[PATHLEN];
    rete_ca *ca = make_ca(dir);
    char *csr = new_csr(ID_A);
    int64_t na = 0, before = (int64_t)time(NULL);
    char *chain = sign(ca, csr, ID_A, 3600, &na);
    int64_t after = (int64_t)time(NULL);
    X509 *leaf = first_cert(chain);
    int64_t nb = t_unix(X509_get0_notBefore(leaf)), nat = t_unix(X509_get0_notAfter(leaf));
    assert_true(nb >= before - 300 && nb <= after - 300);
    assert_true(nat >= before + 3600 && nat <= after + 3600);
    assert_int_equal(na, nat);
    X509_free(leaf);
    free(chain);

    /* Never after the CA's own notAfter. */
    chain = sign(ca, csr, ID_A, UINT32_MAX, &na);
    leaf = first_cert(chain);
    assert_int_equal(t_unix(X509_get0_notAfter(leaf)), rete_ca_not_after(ca));
    assert_int_equal(na, rete_ca_not_after(ca));
    X509_free(leaf);
    free(chain);
    free(csr);
    rete_ca_free(ca);
}

/* ---- an operator-supplied intermediate ----------------------------------- */

typedef struct opca {
    testca root, inter;
} opca;

static opca make_operator_pki(long inter_life)
{
    opca o;
    o.root = testca_new_root("Operator Root");
    o.inter.key = EVP_EC_gen("P-256");
    o.inter.cert =
        testca_cert(o.inter.key, "Operator Mesh Intermediate", &o.root, -60, inter_life, 7);
    testca_ext(o.inter.cert, o.root.cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    testca_ext(o.inter.cert, o.root.cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    testca_ext(o.inter.cert, o.root.cert, NID_subject_key_identifier, "hash");
    testca_ext(o.inter.cert, o.root.cert, NID_authority_key_identifier, "keyid:always");
    TESTCA_CHECK(X509_sign(o.inter.cert, o.root.key, EVP_sha256()));
    return o;
}

static void write_pem_cert(const char *path, X509 *x)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(PEM_write_X509(f, x));
    fclose(f);
}

static void write_operator(const char *dir, X509 *cert, EVP_PKEY *key, X509 *chain)
{
    mkdir(dir, 0700);
    write_pem_cert(path_in(dir, "cert.pem"), cert);
    FILE *f = fopen(path_in(dir, "key.pem"), "w");
    assert_non_null(f);
    assert_true(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL));
    fclose(f);
    if (chain)
        write_pem_cert(path_in(dir, "chain.pem"), chain);
    else
        unlink(path_in(dir, "chain.pem"));
}

/* reted --ca-key: the operator CA's key outside the data directory. */
static void test_operator_key_outside_the_data_dir(void **state)
{
    (void)state;
    rete_error err = {0};
    opca o = make_operator_pki(7200);
    char dir[PATHLEN], keydir[PATHLEN], key[PATHLEN];
    new_dir(dir);
    new_dir(keydir);
    write_operator(dir, o.inter.cert, o.inter.key, o.root.cert);
    write_operator(keydir, o.inter.cert, o.inter.key, NULL);
    snprintf(key, sizeof key, "%s", path_in(keydir, "key.pem"));
    assert_int_equal(chmod(key, 0600), 0);

    /* both ca/key.pem and --ca-key: refused, one place only */
    rete_ca_set_key_file(key);
    assert_null(rete_ca_load(dir, TD, &err));
    assert_non_null(strstr(err.msg, "give the CA key in one place"));

    /* the key only outside: loads, signs, chains to the operator's root */
    assert_int_equal(unlink(path_in(dir, "key.pem")), 0);
    rete_ca *ca = rete_ca_load(dir, TD, &err);
    if (!ca)
        fail_msg("load: %s", err.msg);
    char *csr = new_csr(ID_A);
    char *chain = sign(ca, csr, ID_A, 3600, NULL);
    assert_int_equal(verify_chain(chain, rete_ca_bundle_pem(ca)), X509_V_OK);
    free(chain);
    free(csr);
    rete_ca_free(ca);

    /* readable by others: refused, naming the mode */
    assert_int_equal(chmod(key, 0644), 0);
    assert_null(rete_ca_load(dir, TD, &err));
    assert_non_null(strstr(err.msg, "readable by others"));
    /* missing: refused */
    assert_int_equal(unlink(key), 0);
    assert_null(rete_ca_load(dir, TD, &err));
    assert_non_null(strstr(err.msg, "--ca-key"));
    /* without the option, ca/cert.pem alone does not load */
    rete_ca_set_key_file(NULL);
    assert_null(rete_ca_load(dir, TD, &err));
    testca_free(&o.root);
    testca_free(&o.inter);
}

static void test_operator_intermediate(void **state)
{
    (void)state;
    char dir[PATHLEN];
    rete_error err = {0};
    opca o = make_operator_pki(7200);
    new_dir(dir);
    write_operator(dir, o.inter.cert, o.inter.key, o.root.cert);
    assert_int_equal(rete_ca_init(dir, TD, &err), RETE_OK);
    assert_false(access(path_in(dir, "root.pem"), F_OK) == 0); /* nothing generated */
    rete_ca *ca = rete_ca_load(dir, TD, &err);
    if (!ca)
        fail_msg("load: %s", err.msg);
    /* The bundle is the operator's root, and only it. */
    assert_int_equal(count_certs(rete_ca_bundle_pem(ca)), 1);
    X509 *b0 = first_cert(rete_ca_bundle_pem(ca));
    assert_int_equal(X509_cmp(b0, o.root.cert), 0);
    X509_free(b0);
    char *bundle_file = slurp(path_in(dir, "bundle.pem"));
    assert_string_equal(bundle_file, rete_ca_bundle_pem(ca));
    free(bundle_file);
    assert_int_equal(rete_ca_not_after(ca), t_unix(X509_get0_notAfter(o.inter.cert)));

    char *csr = new_csr(ID_A);
    int64_t na;
    char *chain = sign(ca, csr, ID_A, 86400, &na);
    assert_int_equal(count_certs(chain), 2); /* leaf + intermediate */
    assert_int_equal(verify_chain(chain, rete_ca_bundle_pem(ca)), X509_V_OK);
    /* The leaf alone does not verify: the intermediate is needed. */
    X509 *leaf = first_cert(chain);
    BIO *lb = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(lb, leaf);
    char *leaf_only;
    long ll = BIO_get_mem_data(lb, &leaf_only);
    char *leaf_pem = strndup(leaf_only, (size_t)ll);
    BIO_free(lb);
    assert_int_not_equal(verify_chain(leaf_pem, rete_ca_bundle_pem(ca)), X509_V_OK);
    free(leaf_pem);
    /* Capped at the intermediate's notAfter (2 h), though 24 h were asked. */
    assert_int_equal(t_unix(X509_get0_notAfter(leaf)), t_unix(X509_get0_notAfter(o.inter.cert)));
    assert_int_equal(na, t_unix(X509_get0_notAfter(o.inter.cert)));
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(o.inter.cert)),
                     0);
    X509_free(leaf);

    assert_int_equal(rete_ca_rotate_begin(ca, dir, &err), RETE_ESTATE);
    assert_int_equal(err.code, RETE_ESTATE); /* the code returned is the one recorded */
    assert_non_null(strstr(err.msg, "operator"));
    free(chain);
    rete_ca_free(ca);

    /* The operator's CA being a root itself: bundle = it, chain = leaf alone. */
    char dir2[PATHLEN];
    new_dir(dir2);
    write_operator(dir2, o.root.cert, o.root.key, NULL);
    ca = rete_ca_load(dir2, TD, &err);
    if (!ca)
        fail_msg("load root: %s", err.msg);
    chain = sign(ca, csr, ID_A, 3600, NULL);
    assert_int_equal(count_certs(chain), 1);
    assert_int_equal(verify_chain(chain, rete_ca_bundle_pem(ca)), X509_V_OK);
    free(chain);
    rete_ca_free(ca);

    /* Refusals: intermediate without chain.pem, a key that does not match, a
     * cert that is not a CA, an expired CA, a chain to another root. */
    char bad[PATHLEN];
    new_dir(bad);
    write_operator(bad, o.inter.cert, o.inter.key, NULL);
    assert_null(rete_ca_load(bad, TD, &err));
    assert_non_null(strstr(err.msg, "chain.pem"));

    write_operator(bad, o.inter.cert, o.root.key, o.root.cert);
    assert_null(rete_ca_load(bad, TD, &err));
    assert_non_null(strstr(err.msg, "does not match"));

    testca leafca = testca_new_leaf(&o.root, "URI:" ID_A, -60, 3600);
    write_operator(bad, leafca.cert, leafca.key, o.root.cert);
    assert_null(rete_ca_load(bad, TD, &err));
    assert_non_null(strstr(err.msg, "not a CA"));
    assert_int_not_equal(rete_ca_init(bad, TD, &err), RETE_OK);

    opca expired = make_operator_pki(-30);
    write_operator(bad, expired.inter.cert, expired.inter.key, expired.root.cert);
    assert_null(rete_ca_load(bad, TD, &err));
    assert_non_null(strstr(err.msg, "expired"));

    opca other = make_operator_pki(7200);
    write_operator(bad, o.inter.cert, o.inter.key, other.root.cert);
    assert_null(rete_ca_load(bad, TD, &err));
    assert_non_null(strstr(err.msg, "does not chain"));

    free(csr);
    testca_free(&leafca);
    testca_free(&o.root);
    testca_free(&o.inter);
    testca_free(&expired.root);
    testca_free(&expired.inter);
    testca_free(&other.root);
    testca_free(&other.inter);
}

/* ---- rotation ------------------------------------------------------------- */

static void test_rotation(void **state)
{
    (void)state;
    char dir[PATHLEN];
    rete_error err = {0};
    rete_ca *ca = make_ca(dir);
    char *csr = new_csr(ID_A);
    char *old_leaf = sign(ca, csr, ID_A, 3600, NULL);
    char *old_bundle = strdup(rete_ca_bundle_pem(ca));

    assert_int_equal(rete_ca_rotate_finish(ca, dir, &err), RETE_ESTATE);
    assert_int_equal(rete_ca_rotate_begin(ca, dir, &err), RETE_OK);
    assert_true(rete_ca_rotating(ca));
    assert_int_equal(rete_ca_rotate_begin(ca, dir, &err), RETE_ESTATE);
    assert_int_equal(err.code, RETE_ESTATE); /* the code returned is the one recorded */
    struct stat st;
    assert_int_equal(stat(path_in(dir, "root-next-key.pem"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    const char *transition = rete_ca_bundle_pem(ca);
    assert_int_equal(count_certs(transition), 2);
    char *file = slurp(path_in(dir, "bundle.pem"));
    assert_string_equal(file, transition);
    free(file);

    char *new_leaf = sign(ca, csr, ID_A, 3600, NULL);
    assert_int_equal(verify_chain(old_leaf, transition), X509_V_OK);
    assert_int_equal(verify_chain(new_leaf, transition), X509_V_OK);
    assert_int_not_equal(verify_chain(new_leaf, old_bundle), X509_V_OK);

    /* A restart mid-rotation keeps both roots and signs with the new one. */
    rete_ca *re = rete_ca_load(dir, TD, &err);
    assert_non_null(re);
    assert_true(rete_ca_rotating(re));
    assert_string_equal(rete_ca_bundle_pem(re), transition);
    char *re_leaf = sign(re, csr, ID_A, 3600, NULL);
    X509 *a = first_cert(re_leaf), *b = first_cert(new_leaf);
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(a), X509_get_issuer_name(b)), 0);
    assert_int_equal(
        ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(a), X509_get0_authority_key_id(b)), 0);
    X509_free(a);
    X509_free(b);
    free(re_leaf);
    rete_ca_free(re);

    assert_int_equal(rete_ca_rotate_finish(ca, dir, &err), RETE_OK);
    assert_false(rete_ca_rotating(ca));
    const char *final = rete_ca_bundle_pem(ca);
    assert_int_equal(count_certs(final), 1);
    assert_int_equal(verify_chain(new_leaf, final), X509_V_OK);
    assert_int_not_equal(verify_chain(old_leaf, final), X509_V_OK);
    assert_int_not_equal(access(path_in(dir, "root-next.pem"), F_OK), 0);
    assert_int_not_equal(access(path_in(dir, "root-next-key.pem"), F_OK), 0);
    file = slurp(path_in(dir, "root.pem"));
    assert_string_equal(file, final);
    free(file);
    file = slurp(path_in(dir, "bundle.pem"));
    assert_string_equal(file, final);
    free(file);

    re = rete_ca_load(dir, TD, &err);
    assert_non_null(re);
    assert_false(rete_ca_rotating(re));
    re_leaf = sign(re, csr, ID_A, 3600, NULL);
    assert_int_equal(verify_chain(re_leaf, final), X509_V_OK);
    free(re_leaf);
    rete_ca_free(re);

    free(old_leaf);
    free(new_leaf);
    free(old_bundle);
    free(csr);
    rete_ca_free(ca);
}

/* A crash between the two renames of finish, and one inside begin before its
 * commit point: load repairs both. */
static void test_rotation_crash_recovery(void **state)
{
    (void)state;
    char dir[PATHLEN];
    rete_error err = {0};
    rete_ca *ca = make_ca(dir);
    assert_int_equal(rete_ca_rotate_begin(ca, dir, &err), RETE_OK);
    char *next = slurp(path_in(dir, "root-next.pem"));
    rete_ca_free(ca);
    /* finish interrupted after its first rename */
    assert_int_equal(rename(path_in(dir, "root-next.pem"), path_in(dir, "root.pem")), 0);
    ca = rete_ca_load(dir, TD, &err);
    if (!ca)
        fail_msg("load after interrupted finish: %s", err.msg);
    assert_false(rete_ca_rotating(ca));
    assert_string_equal(rete_ca_bundle_pem(ca), next);
    char *file = slurp(path_in(dir, "bundle.pem"));
    assert_string_equal(file, next);
    free(file);
    char *csr = new_csr(ID_A);
    char *leaf = sign(ca, csr, ID_A, 3600, NULL);
    assert_int_equal(verify_chain(leaf, next), X509_V_OK);
    free(leaf);
    rete_ca_free(ca);

    /* begin interrupted after writing its key only */
    EVP_PKEY *orphan = EVP_EC_gen("P-256");
    FILE *f = fopen(path_in(dir, "root-next-key.pem"), "w");
    PEM_write_PrivateKey(f, orphan, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    EVP_PKEY_free(orphan);
    ca = rete_ca_load(dir, TD, &err);
    if (!ca)
        fail_msg("load after interrupted begin: %s", err.msg);
    assert_int_not_equal(access(path_in(dir, "root-next-key.pem"), F_OK), 0);
    leaf = sign(ca, csr, ID_A, 3600, NULL);
    assert_int_equal(verify_chain(leaf, next), X509_V_OK);
    free(leaf);
    rete_ca_free(ca);
    free(csr);
    free(next);
}

/* ---- the openssl CLI agrees ------------------------------------------------ */

static void run_capture(const char *cmd, char *out, size_t outlen, int *status)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    *status = pclose(p);
}

static void cli_check(const char *dir, const char *chain, const char *bundle)
{
    char cmd[4 * PATHLEN], out[16384];
    int status;
    spill(path_in(dir, "leaf-chain.pem"), chain);
    spill(path_in(dir, "check-bundle.pem"), bundle);
    X509 *leaf = first_cert(chain);
    write_pem_cert(path_in(dir, "leaf.pem"), leaf);
    X509_free(leaf);
    if (snprintf(cmd, sizeof cmd,
                 "openssl verify -CAfile %s/check-bundle.pem -untrusted %s/leaf-chain.pem "
                 "-purpose sslclient %s/leaf.pem 2>&1",
                 dir, dir, dir) >= (int)sizeof cmd)
        fail_msg("command too long");
    run_capture(cmd, out, sizeof out, &status);
    if (status != 0 || !strstr(out, "leaf.pem: OK"))
        fail_msg("openssl verify: %s", out);
    if (snprintf(cmd, sizeof cmd, "openssl x509 -noout -text -in %s/leaf.pem 2>&1", dir) >=
        (int)sizeof cmd)
        fail_msg("command too long");
    run_capture(cmd, out, sizeof out, &status);
    assert_int_equal(status, 0);
    if (!strstr(out, "URI:" ID_A))
        fail_msg("openssl x509 -text: no URI SAN:\n%s", out);
    assert_non_null(strstr(out, "TLS Web Server Authentication, TLS Web Client Authentication"));
    assert_non_null(strstr(out, "CA:FALSE"));
    assert_null(strstr(out, ID_EVIL));
}

static void test_openssl_cli(void **state)
{
    (void)state;
    char dir[PATHLEN];
    rete_ca *ca = make_ca(dir);
    char *csr = new_csr(ID_EVIL);
    char *chain = sign(ca, csr, ID_A, 3600, NULL);
    spill(path_in(dir, "bundle-copy.pem"), rete_ca_bundle_pem(ca));
    cli_check(dir, chain, rete_ca_bundle_pem(ca));
    /* `openssl verify -CAfile bundle.pem` with the file reted writes. */
    char cmd[2 * PATHLEN], out[4096];
    int status;
    if (snprintf(cmd, sizeof cmd, "openssl verify -CAfile %s/bundle.pem %s/leaf.pem 2>&1", dir,
                 dir) >= (int)sizeof cmd)
        fail_msg("command too long");
    run_capture(cmd, out, sizeof out, &status);
    if (status != 0)
        fail_msg("openssl verify: %s", out);
    free(chain);
    rete_ca_free(ca);

    /* Under an operator intermediate: the chain carries it. */
    rete_error err = {0};
    char odir[PATHLEN];
    opca o = make_operator_pki(86400);
    new_dir(odir);
    write_operator(odir, o.inter.cert, o.inter.key, o.root.cert);
    ca = rete_ca_load(odir, TD, &err);
    assert_non_null(ca);
    chain = sign(ca, csr, ID_A, 3600, NULL);
    cli_check(odir, chain, rete_ca_bundle_pem(ca));
    free(chain);
    rete_ca_free(ca);
    testca_free(&o.root);
    testca_free(&o.inter);
    free(csr);
}

/* ---- tokens --------------------------------------------------------------- */

static void test_token_round_trip(void **state)
{
    (void)state;
    char tok[RETE_TOKEN_MAX], id[33], id2[33];
    uint8_t hash[32], hash2[32];
    assert_int_equal(rete_token_new(tok, sizeof tok, id, hash), RETE_OK);
    assert_int_equal(strlen(tok), RETE_TOKEN_LEN);
    assert_int_equal(strlen(id), 32);
    assert_memory_equal(tok, id, 32);
    assert_int_equal(tok[32], '.');
    assert_int_equal(rete_token_parse(tok, id2, hash2), RETE_OK);
    assert_string_equal(id, id2);
    assert_memory_equal(hash, hash2, 32);

    /* Two tokens differ in both halves. */
    char tok2[RETE_TOKEN_MAX], id3[33];
    uint8_t hash3[32];
    assert_int_equal(rete_token_new(tok2, sizeof tok2, id3, hash3), RETE_OK);
    assert_string_not_equal(id, id3);
    assert_memory_not_equal(hash, hash3, 32);

    /* Another secret under the same id hashes differently. */
    char forged[RETE_TOKEN_MAX];
    memcpy(forged, tok, 33);
    memcpy(forged + 33, tok2 + 33, RETE_TOKEN_SECRET_LEN + 1);
    assert_int_equal(rete_token_parse(forged, id2, hash2), RETE_OK);
    assert_string_equal(id2, id);
    assert_memory_not_equal(hash2, hash, 32);

    char small[RETE_TOKEN_MAX - 1];
    assert_int_equal(rete_token_new(small, sizeof small, id, hash), RETE_ELIMIT);

    /* Many tokens: every one parses (covers the whole base64url alphabet). */
    for (int i = 0; i < 200; i++) {
        assert_int_equal(rete_token_new(tok2, sizeof tok2, id3, hash3), RETE_OK);
        assert_int_equal(rete_token_parse(tok2, id2, hash2), RETE_OK);
        assert_memory_equal(hash2, hash3, 32);
    }
}

static void test_token_malformed(void **state)
{
    (void)state;
    char tok[RETE_TOKEN_MAX], id[33], m[RETE_TOKEN_MAX + 8];
    uint8_t hash[32];
    assert_int_equal(rete_token_new(tok, sizeof tok, id, hash), RETE_OK);

    assert_int_equal(rete_token_parse(NULL, id, hash), RETE_EINVAL);
    assert_int_equal(rete_token_parse("", id, hash), RETE_EINVAL);
    assert_int_equal(rete_token_parse(".", id, hash), RETE_EINVAL);
    assert_int_equal(rete_token_parse(id, id, hash), RETE_EINVAL); /* id alone */

    snprintf(m, sizeof m, "%s\n", tok); /* trailing newline */
    assert_int_equal(rete_token_parse(m, id, hash), RETE_EINVAL);
    snprintf(m, sizeof m, " %s", tok);
    assert_int_equal(rete_token_parse(m, id, hash), RETE_EINVAL);
    snprintf(m, sizeof m, "%.*s", RETE_TOKEN_LEN - 1, tok); /* one short */
    assert_int_equal(rete_token_parse(m, id, hash), RETE_EINVAL);
    snprintf(m, sizeof m, "%sA", tok); /* one long */
    assert_int_equal(rete_token_parse(m, id, hash), RETE_EINVAL);

    static const struct {
        size_t pos;
        char c;
    } subs[] = {
        {0, 'A'},  /* uppercase hex */
        {5, 'g'},  /* not hex */
        {32, '-'}, /* no dot */
        {40, '+'}, /* standard base64, not base64url */
        {40, '/'}, {40, '='}, {40, '.'}, {50, '\0'},
    };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        memcpy(m, tok, sizeof tok);
        m[subs[i].pos] = subs[i].c;
        assert_int_equal(rete_token_parse(m, id, hash), RETE_EINVAL);
    }
    /* Non-canonical: the last character carries 4 bits that must be zero. */
    memcpy(m, tok, sizeof tok);
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *pos = strchr(alpha, m[RETE_TOKEN_LEN - 1]);
    assert_non_null(pos);
    m[RETE_TOKEN_LEN - 1] = alpha[((pos - alpha) | 1) & 63];
    assert_int_equal(rete_token_parse(m, id, hash), RETE_EINVAL);
}

/* ---- micro-benchmark (prints, never asserts) ----------------------------- */

/* CPU time of this thread, as `openssl speed` divides by user CPU time: the
 * rate of one core, whatever else the machine is running. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Repeated issuance (the CA's hot path, about a second of it): every
 * certificate issued differs from the one before (a fresh serial) and the
 * first and last verify against the bundle. The rates are printed for
 * bench/REPORT.md, never asserted (the machine is noisy). */
static void test_repeated_issuance_verifies_and_is_timed(void **state)
{
    (void)state;
    char dir[PATHLEN];
    rete_error err = {0};
    rete_ca *ca = make_ca(dir);
    char *csr = new_csr(ID_A);
    size_t csr_len = strlen(csr);

    /* Certificates per second: parse + verify CSR, build, sign, PEM. */
    long n = 0;
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    double t0 = now_s(), t;
    char *first = NULL, *prev = NULL;
    do {
        for (int i = 0; i < 100; i++) {
            char *c = rete_ca_sign_csr(ca, csr, csr_len, ID_A, 86400, NULL, &err);
            assert_non_null(c);
            if (prev)
                assert_string_not_equal(c, prev);
            if (!first)
                first = prev = c;
            else {
                if (prev != first)
                    free(prev);
                prev = c;
            }
        }
        n += 100;
        t = now_s() - t0;
    } while (t < 1.0);
    double certs = (double)n / t;
    clock_gettime(CLOCK_MONOTONIC, &w1);
    double wall = (double)(w1.tv_sec - w0.tv_sec) + (double)(w1.tv_nsec - w0.tv_nsec) / 1e9;
    double certs_wall = (double)n / wall;
    assert_int_equal(verify_chain(first, rete_ca_bundle_pem(ca)), X509_V_OK);
    assert_int_equal(verify_chain(prev, rete_ca_bundle_pem(ca)), X509_V_OK);
    if (prev != first)
        free(prev);
    free(first);

    /* Ceilings: ECDSA P-256 / SHA-256 sign and verify of a small message
     * through EVP_DigestSign/EVP_DigestVerify (what `openssl speed
     * ecdsap256` measures, plus hashing a few hundred bytes). */
    EVP_PKEY *k = EVP_EC_gen("P-256");
    unsigned char msg[400], sig[80];
    size_t siglen = 0;
    RAND_bytes(msg, sizeof msg);
    EVP_MD_CTX *tmpl = EVP_MD_CTX_new(), *work = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit_ex(tmpl, NULL, "SHA256", NULL, NULL, k, NULL), 1);
    n = 0;
    t0 = now_s();
    do {
        for (int i = 0; i < 100; i++) {
            siglen = sizeof sig;
            assert_int_equal(EVP_MD_CTX_copy_ex(work, tmpl), 1);
            assert_int_equal(EVP_DigestSign(work, sig, &siglen, msg, sizeof msg), 1);
        }
        n += 100;
        t = now_s() - t0;
    } while (t < 1.0);
    double signs = (double)n / t;

    EVP_MD_CTX *vt = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit_ex(vt, NULL, "SHA256", NULL, NULL, k, NULL), 1);
    n = 0;
    t0 = now_s();
    do {
        for (int i = 0; i < 100; i++) {
            assert_int_equal(EVP_MD_CTX_copy_ex(work, vt), 1);
            assert_int_equal(EVP_DigestVerify(work, sig, siglen, msg, sizeof msg), 1);
        }
        n += 100;
        t = now_s() - t0;
    } while (t < 1.0);
    double verifies = (double)n / t;
    double both = 1.0 / (1.0 / signs + 1.0 / verifies);

    printf("[ BENCH    ] CA issuance: %.0f certificates/s of CPU time on one core (%.0f/s wall "
           "clock); CSR parse + verify, build, sign, PEM\n",
           certs, certs_wall);
    printf("[ BENCH    ] ECDSA P-256 ceilings: sign %.0f/s, verify %.0f/s, sign+verify %.0f/s "
           "(issuance at %.0f%% of sign+verify)\n",
           signs, verifies, both, 100.0 * certs / both);
    EVP_MD_CTX_free(tmpl);
    EVP_MD_CTX_free(work);
    EVP_MD_CTX_free(vt);
    EVP_PKEY_free(k);
    free(csr);
    rete_ca_free(ca);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_load),
        cmocka_unit_test(test_sign_and_verify),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_validity),
        cmocka_unit_test(test_operator_intermediate),
        cmocka_unit_test(test_operator_key_outside_the_data_dir),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_rotation_crash_recovery),
        cmocka_unit_test(test_openssl_cli),
        cmocka_unit_test(test_token_round_trip),
        cmocka_unit_test(test_token_malformed),
        cmocka_unit_test(test_repeated_issuance_verifies_and_is_timed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
