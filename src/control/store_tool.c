/* reted migrate / backup / restore / rekey (store_tool.h).
 *
 * A store's whole content goes through one logical form (a "dump"):
 *   {"format":"rete-store-dump/1",
 *    "resources":[{"kind","namespace","name","resource":<JSON text>}...],
 *    "tokens":[{"id","namespace","serviceAccount","expiresUnix","usesLeft","hash":hex}...],
 *    "ca":<the shared CA record (ca_shared.c) as text, keys sealed>}
 * read from a store through its vtable and written into an empty one. A
 * migration is a dump loaded at once; an etcd backup is a dump in a file
 * (mode 0600: token hashes, the sealed CA). SQLite's backup is its own
 * online backup API (a database file), restored the same way. */
#include "store_tool.h"

#include "alloc.h"
#include "ca_shared.h"
#include "datadir.h"
#include "file.h"
#include "log.h"
#include "store.h"

#include <getopt.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DUMP_FORMAT "rete-store-dump/1"
#define DUMP_MAX (1u << 30)    /* a backup file read back */
#define LOAD_BATCH 100         /* resources per apply: under etcd's 128 operations per transaction */

typedef struct tool_opts {
    rete_store_etcd_opts etcd;
    const char *data_dir;      /* migrate: the SQLite side's data directory (its CA) */
    const char *kek_path;
    reted_keyring kek;         /* --ca-kek and the --ca-kek-previous keys */
} tool_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: reted migrate --from STORE --to STORE [--data-dir DIR] [--ca-kek FILE] [etcd flags]\n"
            "       reted backup --store STORE --out FILE [etcd flags]\n"
            "       reted restore --store STORE --from FILE [etcd flags]\n"
            "       reted rekey --store etcd://... --ca-kek NEW --ca-kek-previous OLD [etcd flags]\n"
            "  STORE: sqlite:PATH or etcd://HOST:PORT[,HOST:PORT...]\n"
            "  migrate copies every resource, join token and the CA into an empty store; between SQLite\n"
            "  and etcd the CA moves between DIR/ca (the SQLite side's data directory) and the store's\n"
            "  record sealed with --ca-kek FILE.\n"
            "  backup: SQLite with its online backup API (a database file); etcd as a logical dump of\n"
            "  the prefix (JSON, mode 0600). restore: into a store that is empty (SQLite: a new path).\n"
            "  rekey: re-seal the shared CA record under --ca-kek (a KEK rotation, replicas running;\n"
            "  --ca-kek-previous repeatable, at most 4; also taken by migrate to open a record).\n"
            "  etcd flags: --etcd-prefix P, --etcd-cacert FILE, --etcd-cert FILE, --etcd-key FILE,\n"
            "  --etcd-timeout-ms N (as reted's)\n");
}

static bool is_etcd(const char *s)
{
    return strncmp(s, "etcd://", 7) == 0 && s[7];
}

static bool is_sqlite(const char *s)
{
    return strncmp(s, "sqlite:", 7) == 0 && s[7];
}

static rete_store *open_store(const char *spec, tool_opts *o)
{
    rete_error err = {0};
    rete_store *s = NULL;
    if (is_etcd(spec)) {
        o->etcd.endpoints = spec + 7;
        s = rete_store_etcd_open(&o->etcd, &err);
    } else if (is_sqlite(spec)) {
        s = rete_store_sqlite_open(spec + 7, &err);
    } else {
        rete_error_set(&err, RETE_EINVAL, "expected sqlite:PATH or etcd://HOST:PORT[,...]");
    }
    if (!s)
        fprintf(stderr, "reted: %s: %s\n", spec, err.msg);
    return s;
}

/* ---- a store -> a dump ---- */

static bool dump_resource(const rete_store_resource *r, void *arg)
{
    json_array_append_new(arg, json_pack("{s:s,s:s,s:s,s:s}", "kind", r->kind, "namespace", r->ns, "name",
                                         r->name, "resource", r->json));
    return true;
}

static bool dump_token(const rete_store_token *t, const uint8_t hash[32], void *arg)
{
    char hex[65];
    rete_store_hash_hex(hash, hex);
    json_array_append_new(arg, json_pack("{s:s,s:s,s:s,s:I,s:i,s:s}", "id", t->id, "namespace", t->ns,
                                         "serviceAccount", t->sa, "expiresUnix", (json_int_t)t->expires_unix,
                                         "usesLeft", t->uses_left, "hash", hex));
    return true;
}

/* NULL after a message. The CA comes with it when the store holds one. */
static json_t *dump_store(rete_store *s)
{
    json_t *res = json_array(), *toks = json_array();
    if (s->ops->list(s, NULL, NULL, dump_resource, res) != RETE_OK ||
        s->ops->token_list(s, dump_token, toks) != RETE_OK) {
        fprintf(stderr, "reted: cannot read the source store (see the log above)\n");
        json_decref(res);
        json_decref(toks);
        return NULL;
    }
    json_t *d = json_pack("{s:s,s:o,s:o}", "format", DUMP_FORMAT, "resources", res, "tokens", toks);
    if (s->ops->meta_get) {
        char *rec = NULL;
        size_t len = 0;
        uint64_t rev = 0;
        rete_rc rc = s->ops->meta_get(s, "ca", &rec, &len, &rev);
        if (rc == RETE_OK)
            json_object_set_new(d, "ca", json_stringn(rec, len));
        free(rec);
        if (rc != RETE_OK && rc != RETE_ENOTFOUND) {
            fprintf(stderr, "reted: cannot read the source store's CA\n");
            json_decref(d);
            return NULL;
        }
    }
    return d;
}

/* ---- a dump -> an empty store ---- */

static bool any_resource(const rete_store_resource *r, void *arg)
{
    (void)r;
    *(bool *)arg = true;
    return false;
}

static bool any_token(const rete_store_token *t, const uint8_t hash[32], void *arg)
{
    (void)t;
    (void)hash;
    *(bool *)arg = true;
    return false;
}

static bool store_empty(rete_store *s, const char *spec)
{
    bool res = false, tok = false, ca = false;
    if (s->ops->list(s, NULL, NULL, any_resource, &res) != RETE_OK ||
        s->ops->token_list(s, any_token, &tok) != RETE_OK) {
        fprintf(stderr, "reted: %s: cannot read it\n", spec);
        return false;
    }
    if (s->ops->meta_get) {
        char *rec = NULL;
        size_t len;
        uint64_t rev;
        ca = s->ops->meta_get(s, "ca", &rec, &len, &rev) == RETE_OK;
        free(rec);
    }
    if (res || tok || ca) {
        fprintf(stderr, "reted: %s is not empty (it holds %s): load only into an empty store\n", spec,
                res ? "resources" : tok ? "join tokens" : "a CA");
        return false;
    }
    return true;
}

static int load_resources(rete_store *s, json_t *res)
{
    size_t n = json_array_size(res);
    rete_store_write w[LOAD_BATCH];
    for (size_t at = 0; at < n; at += LOAD_BATCH) {
        size_t k = n - at < LOAD_BATCH ? n - at : LOAD_BATCH;
        for (size_t i = 0; i < k; i++) {
            json_t *r = json_array_get(res, at + i);
            w[i] = (rete_store_write){
                .kind = json_string_value(json_object_get(r, "kind")),
                .ns = json_string_value(json_object_get(r, "namespace")),
                .name = json_string_value(json_object_get(r, "name")),
                .json = json_string_value(json_object_get(r, "resource")),
                .expected_version = UINT64_MAX, /* must not exist */
            };
            if (!w[i].kind || !w[i].ns || !w[i].name || !w[i].json) {
                fprintf(stderr, "reted: the dump's resource %zu is damaged\n", at + i);
                return -1;
            }
        }
        size_t failed = 0;
        rete_rc rc = s->ops->apply(s, w, k, &failed);
        if (rc != RETE_OK) {
            fprintf(stderr, "reted: writing %s %s/%s: %s\n", w[failed].kind, w[failed].ns, w[failed].name,
                    rc == RETE_ECONFLICT ? "it exists already" : "the store failed (see the log above)");
            return -1;
        }
    }
    return 0;
}

static int load_tokens(rete_store *s, json_t *toks)
{
    json_t *t;
    size_t i;
    json_array_foreach(toks, i, t) {
        rete_store_token tok = {0};
        uint8_t hash[32];
        const char *id = NULL, *ns = NULL, *sa = NULL, *hex = NULL;
        json_int_t exp = 0;
        int uses = 0;
        if (json_unpack(t, "{s:s,s:s,s:s,s:I,s:i,s:s}", "id", &id, "namespace", &ns, "serviceAccount", &sa,
                        "expiresUnix", &exp, "usesLeft", &uses, "hash", &hex) != 0 ||
            !rete_store_hash_from_hex(hex, hash) || strlen(id) >= sizeof tok.id || strlen(ns) >= sizeof tok.ns ||
            strlen(sa) >= sizeof tok.sa) {
            fprintf(stderr, "reted: the dump's token %zu is damaged\n", i);
            return -1;
        }
        snprintf(tok.id, sizeof tok.id, "%s", id);
        snprintf(tok.ns, sizeof tok.ns, "%s", ns);
        snprintf(tok.sa, sizeof tok.sa, "%s", sa);
        tok.expires_unix = exp;
        tok.uses_left = uses;
        if (s->ops->token_put(s, &tok, hash) != RETE_OK) {
            fprintf(stderr, "reted: writing join token %s failed\n", id);
            return -1;
        }
    }
    return 0;
}

/* The CA: into the store's record, or (SQLite) into data_dir's files. */
static int load_ca(rete_store *s, const char *rec, tool_opts *o)
{
    if (!rec)
        return 0;
    if (s->ops->meta_put) {
        uint64_t rev = 0;
        if (s->ops->meta_put(s, "ca", rec, strlen(rec), 0, &rev) != RETE_OK) {
            fprintf(stderr, "reted: writing the CA record failed\n");
            return -1;
        }
        return 0;
    }
    if (!o->data_dir || !o->kek_path) {
        fprintf(stderr, "reted: the source holds a CA sealed with a KEK: give --data-dir (the SQLite "
                        "reted's, where ca/ is written) and --ca-kek\n");
        return -1;
    }
    char *root = reted_datadir_path(o->data_dir, "ca/root.pem"), *op = reted_datadir_path(o->data_dir, "ca/cert.pem");
    bool exists = access(root, F_OK) == 0 || access(op, F_OK) == 0;
    free(root);
    free(op);
    if (exists) {
        fprintf(stderr, "reted: %s/ca holds a CA already: give an empty data directory\n", o->data_dir);
        return -1;
    }
    rete_error err = {0};
    if (reted_ca_record_unpack(rec, strlen(rec), o->data_dir, &o->kek, &err) != RETE_OK) {
        fprintf(stderr, "reted: CA: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int load_dump(rete_store *s, const char *spec, json_t *d, tool_opts *o)
{
    const char *fmt = json_string_value(json_object_get(d, "format"));
    if (!fmt || strcmp(fmt, DUMP_FORMAT) != 0) {
        fprintf(stderr, "reted: not a %s dump\n", DUMP_FORMAT);
        return -1;
    }
    if (!store_empty(s, spec))
        return -1;
    if (load_ca(s, json_string_value(json_object_get(d, "ca")), o) < 0 ||
        load_resources(s, json_object_get(d, "resources")) < 0 || load_tokens(s, json_object_get(d, "tokens")) < 0)
        return -1;
    printf("reted: wrote %zu resources, %zu join tokens%s into %s\n", json_array_size(json_object_get(d, "resources")),
           json_array_size(json_object_get(d, "tokens")), json_object_get(d, "ca") ? " and the CA" : "", spec);
    return 0;
}

/* ---- subcommands ---- */

static int rekey(const char *spec, tool_opts *o)
{
    if (!is_etcd(spec) || !o->kek_path) {
        fprintf(stderr, "reted: rekey re-seals the CA record on etcd: --store etcd://... --ca-kek NEW "
                        "--ca-kek-previous OLD\n");
        return 2;
    }
    rete_store *s = open_store(spec, o);
    if (!s)
        return 1;
    char from[RETED_KEK_ID_LEN + 1] = "";
    uint64_t rev = 0;
    rete_error err = {0};
    rete_rc rc = reted_ca_shared_rekey(s, &o->kek, from, &rev, &err);
    s->ops->close(s);
    if (rc != RETE_OK) {
        fprintf(stderr, "reted: rekey: %s\n", err.msg);
        return 1;
    }
    if (strcmp(from, o->kek.current.id) == 0)
        printf("reted: the CA record is sealed with KEK %s already: nothing to do\n", from);
    else
        printf("reted: re-sealed the CA record from KEK %s to KEK %s (revision %llu); every replica loads "
               "it within about 2 s\n",
               from, o->kek.current.id, (unsigned long long)rev);
    return 0;
}

static int migrate(const char *from, const char *to, tool_opts *o)
{
    rete_store *src = open_store(from, o);
    if (!src)
        return 1;
    json_t *d = dump_store(src);
    src->ops->close(src);
    if (!d)
        return 1;
    /* SQLite's CA is its data directory's files: sealed into the record */
    if (!json_object_get(d, "ca") && is_sqlite(from) && is_etcd(to)) {
        if (!o->data_dir || !o->kek_path) {
            fprintf(stderr, "reted: to move the CA to etcd give --data-dir (the SQLite reted's) and --ca-kek\n");
            json_decref(d);
            return 1;
        }
        rete_error err = {0};
        char *rec = reted_ca_record_build(o->data_dir, &o->kek.current, &err);
        if (!rec) {
            fprintf(stderr, "reted: CA: %s\n", err.msg);
            json_decref(d);
            return 1;
        }
        json_object_set_new(d, "ca", json_string(rec));
        free(rec);
    }
    rete_store *dst = open_store(to, o);
    int rc = dst && load_dump(dst, to, d, o) == 0 ? 0 : 1;
    if (dst)
        dst->ops->close(dst);
    json_decref(d);
    return rc;
}

static int backup(const char *spec, const char *out, tool_opts *o)
{
    rete_error err = {0};
    if (is_sqlite(spec)) {
        if (rete_store_sqlite_backup(spec + 7, out, &err) != RETE_OK) {
            fprintf(stderr, "reted: backup: %s\n", err.msg);
            return 1;
        }
        printf("reted: backed up %s to %s (SQLite online backup)\n", spec + 7, out);
        return 0;
    }
    rete_store *s = open_store(spec, o);
    if (!s)
        return 1;
    json_t *d = dump_store(s);
    s->ops->close(s);
    if (!d)
        return 1;
    if (access(out, F_OK) == 0) {
        fprintf(stderr, "reted: backup: %s exists\n", out);
        json_decref(d);
        return 1;
    }
    char *text = json_dumps(d, JSON_COMPACT);
    rete_rc rc = rete_file_write_atomic(out, text, strlen(text), 0600, &err);
    printf("reted: backed up %zu resources, %zu join tokens%s to %s\n",
           json_array_size(json_object_get(d, "resources")), json_array_size(json_object_get(d, "tokens")),
           json_object_get(d, "ca") ? " and the sealed CA" : "", out);
    free(text);
    json_decref(d);
    if (rc != RETE_OK) {
        fprintf(stderr, "reted: backup: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static int restore(const char *spec, const char *in, tool_opts *o)
{
    rete_error err = {0};
    if (is_sqlite(spec)) {
        if (rete_store_sqlite_backup(in, spec + 7, &err) != RETE_OK) {
            fprintf(stderr, "reted: restore: %s%s\n", err.msg,
                    err.code == RETE_ECONFLICT ? " (restore into a new path; no reted may have it open)" : "");
            return 1;
        }
        printf("reted: restored %s from %s\n", spec + 7, in);
        return 0;
    }
    size_t len = 0;
    char *text = rete_file_read(in, DUMP_MAX, &len);
    json_t *d = text ? json_loadb(text, len, 0, NULL) : NULL;
    free(text);
    if (!d) {
        fprintf(stderr, "reted: restore: %s: cannot read it as a dump\n", in);
        return 1;
    }
    rete_store *s = open_store(spec, o);
    int rc = s && load_dump(s, spec, d, o) == 0 ? 0 : 1;
    if (s)
        s->ops->close(s);
    json_decref(d);
    return rc;
}

int reted_store_tool(int argc, char **argv)
{
    static const struct option opts[] = {
        {"from", required_argument, NULL, 'f'},        {"to", required_argument, NULL, 't'},
        {"store", required_argument, NULL, 's'},       {"out", required_argument, NULL, 'o'},
        {"data-dir", required_argument, NULL, 'd'},    {"ca-kek", required_argument, NULL, 'k'},
        {"ca-kek-previous", required_argument, NULL, 'P'},
        {"etcd-prefix", required_argument, NULL, 'p'}, {"etcd-cacert", required_argument, NULL, 'C'},
        {"etcd-cert", required_argument, NULL, 'c'},   {"etcd-key", required_argument, NULL, 'K'},
        {"etcd-timeout-ms", required_argument, NULL, 'T'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = argv[0], *from = NULL, *to = NULL, *store = NULL, *out = NULL;
    tool_opts o = {.etcd = {.timeout_ms = 5000}};
    const char *previous[RETED_KEK_PREVIOUS_MAX];
    size_t n_previous = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'f': from = optarg; break;
        case 't': to = optarg; break;
        case 's': store = optarg; break;
        case 'o': out = optarg; break;
        case 'd': o.data_dir = optarg; break;
        case 'k': o.kek_path = optarg; break;
        case 'P':
            if (n_previous == RETED_KEK_PREVIOUS_MAX) {
                fprintf(stderr, "reted: at most %d --ca-kek-previous\n", RETED_KEK_PREVIOUS_MAX);
                return 2;
            }
            previous[n_previous++] = optarg;
            break;
        case 'p': o.etcd.prefix = optarg; break;
        case 'C': o.etcd.cacert = optarg; break;
        case 'c': o.etcd.cert = optarg; break;
        case 'K': o.etcd.key = optarg; break;
        case 'T': {
            long v = strtol(optarg, NULL, 10);
            if (v < 1 || v > 600000) {
                fprintf(stderr, "reted: bad --etcd-timeout-ms %s (1..600000)\n", optarg);
                return 2;
            }
            o.etcd.timeout_ms = (int)v;
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    rete_error err = {0};
    if (n_previous && !o.kek_path) {
        fprintf(stderr, "reted: --ca-kek-previous needs --ca-kek (the current key)\n");
        return 2;
    }
    if (o.kek_path && reted_keyring_load(&o.kek, o.kek_path, previous, n_previous, &err) != RETE_OK) {
        fprintf(stderr, "reted: %s\n", err.msg);
        return 1;
    }
    if (strcmp(cmd, "migrate") == 0 && from && to && !store && !out)
        return migrate(from, to, &o);
    if (strcmp(cmd, "backup") == 0 && store && out && !from && !to)
        return backup(store, out, &o);
    if (strcmp(cmd, "restore") == 0 && store && from && !to && !out)
        return restore(store, from, &o);
    if (strcmp(cmd, "rekey") == 0 && store && !from && !to && !out)
        return rekey(store, &o);
    usage(stderr);
    return 2;
}
