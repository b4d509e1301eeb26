/* The resources the proxy holds (snapshot_wire.h) and the configuration
 * built from them: a whole snapshot or a delta is made into a change of the
 * set, loaded together with the proxy's own Proxy document, installed, and
 * only then committed and saved; anything refused leaves the set, the
 * configuration in use and the saved file as they were. */
#include "alloc.h"
#include "config.h"
#include "cp_state.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Build and install a configuration from the change's set, then commit
 * the change (its documents now live in that configuration, which the set
 * keeps a reference to) or, on failure, forget it; false with err. */
static bool install_change(rete_cp *cp, rete_wire_change *change, uint64_t version, char *err, size_t errlen)
{
    rete_wire_set *set = &change->next;
    rete_config_doc *docs = rete_malloc((set->n ? set->n : 1) * sizeof(*docs));
    for (size_t i = 0; i < set->n; i++)
        docs[i] = (rete_config_doc){set->v[i].json, set->v[i].tree};
    rete_config_error e;
    rete_config *cfg = rete_config_load_docs(cp->o->proxy_doc, strlen(cp->o->proxy_doc), docs, set->n,
                                             "control-plane", version, &e);
    rete_config *held = NULL;
    rete_tls_set *tls = NULL;
    rete_error why = {0};
    if (!cfg) {
        rete_config_error_format(&e, err, errlen);
    } else if (rete_proxy_can_reload(cp->p, cfg, &why) != RETE_OK || !(tls = rete_tls_set_build(cfg, &why))) {
        snprintf(err, errlen, "%s", why.msg);
        rete_config_unref(cfg);
    } else {
        held = rete_config_ref(cfg);
        if (rete_proxy_install(cp->p, cfg, tls) < 0) { /* takes cfg either way */
            snprintf(err, errlen, "the proxy could not start with this configuration");
            rete_config_unref(held);
            held = NULL;
        }
    }
    if (!held) {
        free(docs);
        rete_wire_change_abandon(change);
        return false;
    }
    for (size_t i = 0; i < set->n; i++)
        set->v[i].tree = docs[i].tree;
    free(docs);
    rete_wire_change_commit(&cp->set, change);
    if (cp->set_cfg) /* no entry points into it any more */
        rete_config_unref(cp->set_cfg);
    cp->set_cfg = held;
    cp->version = version;
    return true;
}

/* The set in use, saved for a restart while reted is away: the entries as
 * the stream carries them, so a restart reads them the way a push is read. */
static void save(rete_cp *cp, uint64_t version)
{
    rete_buf b = {0};
    char head[64];
    rete_buf_append(&b, head, (size_t)snprintf(head, sizeof(head), "{\"version\":%llu,\"resources\":",
                                                (unsigned long long)version));
    rete_wire_set_write(&cp->set, &b);
    rete_buf_append(&b, "}", 1);
    if (cp_write_file(cp->config_path, b.p, b.len, 0600) != 0)
        rete_warn("control plane: cannot save the configuration to %s", cp->config_path);
    rete_buf_free(&b);
}

bool cp_config_apply(rete_cp *cp, json_t *m, bool whole, char *err, size_t errlen)
{
    uint64_t version = (uint64_t)json_integer_value(json_object_get(m, "version"));
    rete_wire_change change;
    rete_error e = {0};
    if (whole) {
        if (rete_wire_change_make(NULL, json_object_get(m, "resources"), NULL, &change, &e) != RETE_OK) {
            snprintf(err, errlen, "resources: %s", e.msg);
            return false;
        }
    } else {
        uint64_t base = (uint64_t)json_integer_value(json_object_get(m, "base"));
        if (base != cp->version) {
            snprintf(err, errlen, "resync: delta from version %llu, this proxy is at %llu",
                     (unsigned long long)base, (unsigned long long)cp->version);
            return false;
        }
        /* Nothing changed (a replica resuming the stream of a proxy that
         * holds what it would send): nothing to build. */
        if (json_array_size(json_object_get(m, "upserts")) == 0 &&
            json_array_size(json_object_get(m, "deletes")) == 0 && version == cp->version)
            return true;
        /* A delta that does not fit the set held (a delete of a key not
         * held) asks for the whole snapshot. */
        if (rete_wire_change_make(&cp->set, json_object_get(m, "upserts"), json_object_get(m, "deletes"), &change,
                                  &e) != RETE_OK) {
            snprintf(err, errlen, "resync: %s", e.msg);
            return false;
        }
    }
    if (!install_change(cp, &change, version, err, errlen))
        return false;
    save(cp, version);
    return true;
}

bool cp_config_load_saved(rete_cp *cp)
{
    char *s = cp_read_file(cp->config_path, NULL);
    if (!s)
        return false;
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    free(s);
    json_t *ver = json_object_get(j, "version");
    rete_wire_change change;
    rete_error e = {0};
    char err[1024] = "not a saved configuration";
    bool ok = false;
    if (json_is_integer(ver)) {
        if (rete_wire_change_make(NULL, json_object_get(j, "resources"), NULL, &change, &e) != RETE_OK)
            snprintf(err, sizeof(err), "%s", e.msg);
        else
            ok = install_change(cp, &change, (uint64_t)json_integer_value(ver), err, sizeof(err));
    }
    if (ok)
        rete_info("control plane: serving the saved configuration version %llu until reted answers",
                  (unsigned long long)cp->version);
    else
        rete_warn("control plane: saved configuration unusable: %s", err);
    json_decref(j);
    return ok;
}
