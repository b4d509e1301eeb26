/* libFuzzer target for the configuration loader (src/common/config*.c,
 * yaml_doc.c): any input either loads or fails with an
 * error whose fields are NUL-terminated and whose document index is in
 * range; a loaded snapshot survives the JSON view, host lookups and unref
 * (which frees its PCRE2 codes) without leaks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rete_config_error err;
    rete_log_level = RETE_LOG_ERROR;
    rete_config *cfg = rete_config_load_buffer((const char *)data, size, "fuzz/in.yaml", 1, &err);
    if (!cfg) {
        CHECK(memchr(err.path, '\0', sizeof(err.path)) != NULL);
        CHECK(memchr(err.reason, '\0', sizeof(err.reason)) != NULL);
        CHECK(err.reason[0] != '\0');
        CHECK(err.document >= -1);
        char buf[1200];
        rete_config_error_format(&err, buf, sizeof(buf));
        return 0;
    }
    char *json = rete_config_to_json(cfg);
    CHECK(json != NULL);
    free(json);
    for (size_t i = 0; i < cfg->n_services; i++) {
        CHECK(rete_config_find_table(cfg, rete_view_cstr(cfg->services[i].fqdn), 0) != NULL);
        for (size_t p = 0; p < cfg->services[i].n_ports; p++)
            CHECK(rete_config_table_for(cfg, &cfg->services[i], cfg->services[i].ports[p].port));
    }
    rete_config_unref(cfg);
    return 0;
}
