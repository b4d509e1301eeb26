/* src/control/ca_shared: the CA record sealed under several key-encryption
 * keys (KEK rotation). A record opens with any key of the ring that is
 * its own and with no other (the message names the id it needs, nothing
 * is written); a re-seal moves every sealed value to the current key; a
 * publish keeps the record's KEK; `reted rekey` writes only when the
 * record is under another key. The store is a one-value fake with the
 * meta_get/meta_put contract of store.h. The system test with real etcd
 * and replicas is tests/system/test_reted_kek_rotation.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ca_shared.h"
#include "datadir.h"
#include "file.h"
#include "store.h"

static char root[64];

/* a KEK file of 32 bytes (all `fill`), mode 0600; its path in buf */
static const char *kek_file(char *buf, size_t cap, const char *name, int fill)
{
    snprintf(buf, cap, "%s/%s", root, name);
    uint8_t key[RETED_KEK_LEN];
    memset(key, fill, sizeof key);
    FILE *f = fopen(buf, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(key, 1, sizeof key, f), sizeof key);
    fclose(f);
    assert_int_equal(chmod(buf, 0600), 0);
    return buf;
}

/* a ring: current key of fill `cur`, then previous keys of the fills given (0 ends) */
static void ring_of(reted_keyring *ring, int cur, ...)
{
    memset(ring, 0, sizeof *ring);
    char p[128], name[16];
    rete_error e = {0};
    snprintf(name, sizeof name, "k%d", cur);
    assert_int_equal(reted_kek_load(kek_file(p, sizeof p, name, cur), &ring->current, &e), RETE_OK);
    va_list ap;
    va_start(ap, cur);
    for (int f; (f = va_arg(ap, int)) != 0;) {
        snprintf(name, sizeof name, "k%d", f);
        assert_int_equal(reted_keyring_add_previous(ring, kek_file(p, sizeof p, name, f), &e), RETE_OK);
    }
    va_end(ap);
}

static char *read_all(const char *dir, const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    size_t n = 0;
    return rete_file_read(p, 1 << 20, &n);
}

/* a data directory with a CA (as `reted init`) and its record under key `fill` */
static char *record_under(int fill, char *dir, size_t cap)
{
    snprintf(dir, cap, "%s/src", root);
    if (access(dir, F_OK) != 0)
        assert_int_equal(reted_datadir_init(dir, "example.org"), 0);
    reted_keyring ring;
    ring_of(&ring, fill, 0);
    rete_error e = {0};
    char *rec = reted_ca_record_build(dir, &ring.current, &e);
    assert_non_null(rec);
    return rec;
}

/* every sealed value's kekId and the record's are id */
static void all_sealed_with(const char *rec, const char *id)
{
    json_t *j = json_loads(rec, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "kekId")), id);
    const char *name;
    json_t *v;
    int sealed = 0;
    json_object_foreach(json_object_get(j, "files"), name, v) {
        json_t *s = json_object_get(v, "sealed");
        if (s) {
            assert_string_equal(json_string_value(json_object_get(s, "kekId")), id);
            sealed++;
        }
    }
    assert_true(sealed >= 2); /* the root key and the admin token at least */
    json_decref(j);
}

static void test_opens_with_any_key_of_the_ring(void **state)
{
    (void)state;
    char src[128], dst[128];
    char *rec = record_under(1, src, sizeof src);
    reted_keyring ring;
    ring_of(&ring, 2, 3, 1, 0); /* the record's key is the second previous */
    snprintf(dst, sizeof dst, "%s/a", root);
    rete_error e = {0};
    assert_int_equal(reted_ca_record_unpack(rec, strlen(rec), dst, &ring, &e), RETE_OK);
    assert_string_equal(ring.record_kek, ring.previous[1].id);
    char *a = read_all(src, "ca/root-key.pem"), *b = read_all(dst, "ca/root-key.pem");
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(a, b);
    free(a);
    free(b);
    a = read_all(src, "admin.token");
    b = read_all(dst, "admin.token");
    assert_string_equal(a, b);
    free(a);
    free(b);
    free(rec);
}

static void test_unknown_key_names_the_id_and_writes_nothing(void **state)
{
    (void)state;
    char src[128], dst[128];
    char *rec = record_under(1, src, sizeof src);
    reted_keyring ring, one;
    ring_of(&one, 1, 0);
    ring_of(&ring, 2, 3, 0);
    snprintf(dst, sizeof dst, "%s/b", root);
    rete_error e = {0};
    assert_int_equal(reted_ca_record_unpack(rec, strlen(rec), dst, &ring, &e), RETE_EINVAL);
    assert_non_null(strstr(e.msg, one.current.id));       /* the id it needs */
    assert_non_null(strstr(e.msg, ring.current.id));      /* and what it holds */
    assert_non_null(strstr(e.msg, ring.previous[0].id));
    assert_non_null(strstr(e.msg, "--ca-kek-previous"));
    assert_int_equal(access(dst, F_OK), -1);
    assert_string_equal(ring.record_kek, "");
    free(rec);
}

static void test_reseal_moves_every_value_to_the_current_key(void **state)
{
    (void)state;
    char src[128], dst[128];
    char *rec = record_under(1, src, sizeof src);
    reted_keyring ring, only_new, only_old;
    ring_of(&ring, 2, 1, 0);
    ring_of(&only_new, 2, 0);
    ring_of(&only_old, 1, 0);
    char from[RETED_KEK_ID_LEN + 1];
    rete_error e = {0};
    char *again = reted_ca_record_reseal(rec, strlen(rec), &ring, from, &e);
    assert_non_null(again);
    assert_string_equal(from, only_old.current.id);
    all_sealed_with(again, only_new.current.id);
    assert_null(strstr(again, "PRIVATE KEY"));
    /* the new key alone opens it, to the same files; the old one no longer */
    snprintf(dst, sizeof dst, "%s/c", root);
    assert_int_equal(reted_ca_record_unpack(again, strlen(again), dst, &only_new, &e), RETE_OK);
    char *a = read_all(src, "ca/root-key.pem"), *b = read_all(dst, "ca/root-key.pem");
    assert_string_equal(a, b);
    free(a);
    free(b);
    assert_int_equal(reted_ca_record_unpack(again, strlen(again), dst, &only_old, &e), RETE_EINVAL);
    assert_non_null(strstr(e.msg, only_new.current.id));
    /* under the current key already: from is the current id */
    char *twice = reted_ca_record_reseal(again, strlen(again), &only_new, from, &e);
    assert_non_null(twice);
    assert_string_equal(from, only_new.current.id);
    free(twice);
    /* a key the ring does not hold: refused naming it */
    assert_null(reted_ca_record_reseal(rec, strlen(rec), &only_new, from, &e));
    assert_non_null(strstr(e.msg, only_old.current.id));
    free(again);
    free(rec);
}

static void test_tampered_value_is_refused(void **state)
{
    (void)state;
    char src[128], dst[128];
    char *rec = record_under(1, src, sizeof src);
    reted_keyring ring;
    ring_of(&ring, 1, 0);
    json_t *j = json_loads(rec, 0, NULL);
    json_t *s = json_object_get(json_object_get(json_object_get(j, "files"), "ca/root-key.pem"), "sealed");
    char data[8192];
    snprintf(data, sizeof data, "%s", json_string_value(json_object_get(s, "data")));
    data[10] = data[10] == 'A' ? 'B' : 'A';
    json_object_set_new(s, "data", json_string(data));
    char *bad = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    snprintf(dst, sizeof dst, "%s/d", root);
    rete_error e = {0};
    assert_int_equal(reted_ca_record_unpack(bad, strlen(bad), dst, &ring, &e), RETE_EINVAL);
    assert_non_null(strstr(e.msg, "tampered"));
    char from[RETED_KEK_ID_LEN + 1];
    reted_keyring two;
    ring_of(&two, 2, 1, 0);
    assert_null(reted_ca_record_reseal(bad, strlen(bad), &two, from, &e));
    free(bad);
    free(rec);
}

static void test_keyring_files(void **state)
{
    (void)state;
    reted_keyring ring;
    ring_of(&ring, 1, 2, 0);
    char p[128];
    rete_error e = {0};
    /* a key given twice, as current or as previous */
    assert_int_equal(reted_keyring_add_previous(&ring, kek_file(p, sizeof p, "k1", 1), &e), RETE_EINVAL);
    assert_non_null(strstr(e.msg, "given already"));
    assert_int_equal(reted_keyring_add_previous(&ring, kek_file(p, sizeof p, "k2", 2), &e), RETE_EINVAL);
    for (int f = 3; f < 3 + RETED_KEK_PREVIOUS_MAX - 1; f++) {
        char name[16];
        snprintf(name, sizeof name, "k%d", f);
        assert_int_equal(reted_keyring_add_previous(&ring, kek_file(p, sizeof p, name, f), &e), RETE_OK);
    }
    assert_int_equal(ring.n_previous, RETED_KEK_PREVIOUS_MAX);
    assert_int_equal(reted_keyring_add_previous(&ring, kek_file(p, sizeof p, "k9", 9), &e), RETE_ELIMIT);
    assert_non_null(strstr(e.msg, "at most 4"));
    /* the flag is named in a file's error */
    snprintf(p, sizeof p, "%s/loose", root);
    kek_file(p, sizeof p, "loose", 7);
    assert_int_equal(chmod(p, 0644), 0);
    reted_keyring r2;
    ring_of(&r2, 1, 0);
    assert_int_equal(reted_keyring_add_previous(&r2, p, &e), RETE_EINVAL);
    assert_non_null(strstr(e.msg, "--ca-kek-previous"));
    assert_non_null(strstr(e.msg, "chmod 600"));
    assert_ptr_equal(reted_keyring_find(&ring, ring.previous[2].id), &ring.previous[2]);
    assert_null(reted_keyring_find(&ring, "0000000000000000"));
    assert_null(reted_keyring_find(&ring, NULL));
}

/* ---- a one-value store: meta_get / meta_put as store.h says ---- */

typedef struct fake_store {
    rete_store base;
    char *value;
    uint64_t rev, puts;
} fake_store;

static rete_rc fake_get(rete_store *s, const char *name, char **value, size_t *len, uint64_t *rev)
{
    fake_store *f = (fake_store *)s;
    (void)name;
    if (!f->value)
        return RETE_ENOTFOUND;
    *value = strdup(f->value);
    *len = strlen(f->value);
    *rev = f->rev;
    return RETE_OK;
}

static rete_rc fake_put(rete_store *s, const char *name, const char *value, size_t len, uint64_t expected,
                        uint64_t *new_rev)
{
    fake_store *f = (fake_store *)s;
    (void)name;
    if ((expected == 0) != (f->value == NULL) || (expected && expected != f->rev))
        return RETE_ECONFLICT;
    free(f->value);
    f->value = strndup(value, len);
    *new_rev = ++f->rev;
    f->puts++;
    return RETE_OK;
}

static const rete_store_ops fake_ops = {.name = "fake", .meta_get = fake_get, .meta_put = fake_put};

static void test_publish_keeps_the_record_kek_and_rekey_moves_it(void **state)
{
    (void)state;
    fake_store f = {.base = {.ops = &fake_ops}, .rev = 10};
    char a[128], b[128];
    snprintf(a, sizeof a, "%s/ra", root);
    snprintf(b, sizeof b, "%s/rb", root);
    reted_keyring old, both;
    ring_of(&old, 1, 0);
    ring_of(&both, 2, 1, 0);
    uint64_t rev_a = 0, rev_b = 0;
    /* the first replica publishes under its key */
    assert_int_equal(reted_ca_shared_start(&f.base, &old, a, "example.org", &rev_a), 0);
    all_sealed_with(f.value, old.current.id);
    /* a replica with the new key current and the old one previous opens it */
    assert_int_equal(reted_ca_shared_start(&f.base, &both, b, NULL, &rev_b), 0);
    assert_string_equal(both.record_kek, old.current.id);
    /* its rotation step keeps the old KEK: the old-only replica still reads it */
    rete_error e = {0};
    assert_int_equal(reted_ca_shared_publish(&f.base, &both, b, &rev_b, &e), RETE_OK);
    all_sealed_with(f.value, old.current.id);
    assert_int_equal(reted_ca_shared_refresh(&f.base, &old, a, &rev_a, &e), 1);
    /* rekey: under the new key, one write, a new revision */
    char from[RETED_KEK_ID_LEN + 1];
    uint64_t rev = 0, puts = f.puts;
    assert_int_equal(reted_ca_shared_rekey(&f.base, &both, from, &rev, &e), RETE_OK);
    assert_string_equal(from, old.current.id);
    assert_int_equal(rev, f.rev);
    assert_int_equal(f.puts, puts + 1);
    all_sealed_with(f.value, both.current.id);
    /* the replicas see it: the old-only one cannot open it (named), the other loads it */
    assert_int_equal(reted_ca_shared_refresh(&f.base, &old, a, &rev_a, &e), -1);
    assert_non_null(strstr(e.msg, both.current.id));
    assert_int_equal(reted_ca_shared_refresh(&f.base, &both, b, &rev_b, &e), 1);
    assert_string_equal(both.record_kek, both.current.id);
    /* again: nothing to do, nothing written */
    assert_int_equal(reted_ca_shared_rekey(&f.base, &both, from, &rev, &e), RETE_OK);
    assert_string_equal(from, both.current.id);
    assert_int_equal(f.puts, puts + 1);
    /* a publish now seals with the new key */
    assert_int_equal(reted_ca_shared_publish(&f.base, &both, b, &rev_b, &e), RETE_OK);
    all_sealed_with(f.value, both.current.id);
    /* no record: rekey says so */
    fake_store empty = {.base = {.ops = &fake_ops}};
    assert_int_equal(reted_ca_shared_rekey(&empty.base, &both, from, &rev, &e), RETE_ENOTFOUND);
    free(f.value);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/rete-ca-shared-XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_with_any_key_of_the_ring),
        cmocka_unit_test(test_unknown_key_names_the_id_and_writes_nothing),
        cmocka_unit_test(test_reseal_moves_every_value_to_the_current_key),
        cmocka_unit_test(test_tampered_value_is_refused),
        cmocka_unit_test(test_keyring_files),
        cmocka_unit_test(test_publish_keeps_the_record_kek_and_rekey_moves_it),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
