/* libFuzzer target for the proxy's side of the config stream
 * (src/common/snapshot_wire.c, rete_config_load_docs): the input is a
 * message as reted would send it. Its "resources" are made a whole set, its
 * "upserts"/"deletes" a delta on that set; whatever is accepted is loaded
 * with a fixed Proxy document (loaded or refused with an error, never a
 * crash), written out as a proxy saves it and read back to the same keys and
 * versions. A refused change leaves every reference count as it was (ASan's
 * leak check at exit sees the rest). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "kinds.h"
#include "log.h"
#include "snapshot_wire.h"
#include "vec.h"
#include "fuzz.h"

static const char head[] = "apiVersion: rete.dev/v1alpha1\nkind: Proxy\n"
                           "metadata: {name: p, namespace: demo}\nspec: {serviceAccount: p}\n";

/* Load the change's set as the agent does; set trees on success. */
static rete_config *load(rete_wire_change *ch)
{
    rete_wire_set *set = &ch->next;
    rete_config_doc *docs = malloc((set->n ? set->n : 1) * sizeof(*docs));
    CHECK(docs);
    for (size_t i = 0; i < set->n; i++)
        docs[i] = (rete_config_doc){set->v[i].json, set->v[i].tree};
    rete_config_error e;
    rete_config *cfg = rete_config_load_docs(head, sizeof(head) - 1, docs, set->n, "fuzz", 1, &e);
    if (cfg)
        for (size_t i = 0; i < set->n; i++)
            set->v[i].tree = docs[i].tree;
    else
        CHECK(e.reason[0] && memchr(e.reason, '\0', sizeof(e.reason)));
    free(docs);
    return cfg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rete_log_level = RETE_LOG_ERROR;
    json_t *m = json_loadb((const char *)data, size, 0, NULL);
    if (!m)
        return 0;
    rete_wire_set set = {0};
    rete_config *held = NULL;
    rete_wire_change ch;
    rete_error err = {0};
    if (rete_wire_change_make(NULL, json_object_get(m, "resources"), NULL, &ch, &err) == RETE_OK) {
        held = load(&ch);
        if (held) {
            rete_wire_change_commit(&set, &ch);
        } else {
            rete_wire_change_abandon(&ch);
        }
    } else {
        CHECK(err.code == RETE_EINVAL && err.msg[0]);
    }
    err = (rete_error){0};
    if (rete_wire_change_make(&set, json_object_get(m, "upserts"), json_object_get(m, "deletes"), &ch, &err) ==
        RETE_OK) {
        for (size_t i = 1; i < ch.next.n; i++) /* the store's order, no key twice */
            CHECK(rete_resource_key_cmp(ch.next.v[i - 1].kind, ch.next.v[i - 1].ns, ch.next.v[i - 1].name,
                                        ch.next.v[i].kind, ch.next.v[i].ns, ch.next.v[i].name) < 0);
        rete_config *cfg = load(&ch);
        if (cfg) {
            rete_wire_change_commit(&set, &ch);
            if (held)
                rete_config_unref(held);
            held = cfg;
        } else {
            rete_wire_change_abandon(&ch);
        }
    }
    /* saved and read back: the same keys and versions */
    rete_buf b = {0};
    rete_wire_set_write(&set, &b);
    json_t *saved = json_loadb(b.p, b.len, 0, NULL);
    CHECK(saved);
    rete_wire_change back;
    CHECK(rete_wire_change_make(NULL, saved, NULL, &back, &err) == RETE_OK);
    CHECK(back.next.n == set.n);
    for (size_t i = 0; i < set.n; i++)
        CHECK(strcmp(back.next.v[i].kind, set.v[i].kind) == 0 && strcmp(back.next.v[i].ns, set.v[i].ns) == 0 &&
              strcmp(back.next.v[i].name, set.v[i].name) == 0 && back.next.v[i].version == set.v[i].version);
    rete_wire_change_abandon(&back);
    json_decref(saved);
    rete_buf_free(&b);
    rete_wire_set_free(&set);
    if (held)
        rete_config_unref(held);
    json_decref(m);
    return 0;
}
