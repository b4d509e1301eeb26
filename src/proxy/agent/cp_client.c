/* The control-plane agent's entry points and its data directory's files;
 * its jobs are the other files of src/proxy/agent (cp_state.h). */
#include "alloc.h"
#include "config.h"
#include "cp_http.h"
#include "cp_state.h"
#include "file.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* One agent per proxy process, on its main loop. */
static rete_cp cp;

int cp_write_file(const char *path, const char *data, size_t len, unsigned mode)
{
    rete_error err = {0};
    if (rete_file_write_atomic(path, data, len, (mode_t)mode, &err) < 0) {
        rete_warn("control plane: %s", err.msg);
        return -1;
    }
    return 0;
}

char *cp_read_file(const char *path, size_t *len)
{
    return rete_file_read(path, (size_t)CP_MAX_RESPONSE * 4, len);
}

int rete_cp_start(rete_proxy *p, rete_cp_opts *o)
{
    cp.p = p;
    cp.o = o;
    srand((unsigned)(time(NULL) ^ getpid()));
    rete_error serr = {0};
    if (!cp_servers_parse(&cp, o->server, &serr)) {
        rete_err("control plane: %s", serr.msg);
        return -1;
    }
    if (mkdir(o->data_dir, 0700) != 0 && errno != EEXIST) {
        rete_err("control plane: cannot create %s: %s", o->data_dir, strerror(errno));
        return -1;
    }
    snprintf(cp.cert_path, sizeof(cp.cert_path), "%s/cert.pem", o->data_dir);
    snprintf(cp.key_path, sizeof(cp.key_path), "%s/key.pem", o->data_dir);
    snprintf(cp.bundle_path, sizeof(cp.bundle_path), "%s/bundle.pem", o->data_dir);
    snprintf(cp.config_path, sizeof(cp.config_path), "%s/config.json", o->data_dir);
    rete_error err = {0};
    cp.ctx_anon = rete_tls_cp_client_ctx(NULL, NULL, o->ca_file, &err);
    if (!cp.ctx_anon) {
        rete_err("control plane: %s", err.msg);
        return -1;
    }
    uv_timer_init(p->loop, &cp.retry_timer);
    uv_timer_init(p->loop, &cp.renew_timer);
    uv_timer_init(p->loop, &cp.ping_timer);
    uv_timer_init(p->loop, &cp.stats_timer);
    cp_stream_start_timers(&cp);
    cp_golden_start(&cp);
    cp_tap_init(&cp);
    bool have_cert = cp_certs_load(&cp) && cp.cert_not_after > (int64_t)time(NULL) + 5;
    if (have_cert) {
        cp_certs_rebuild_contexts(&cp);
        cp_config_load_saved(&cp);
        cp_certs_schedule_renewal(&cp);
        cp_stream_connect(&cp);
        return 0;
    }
    if (!o->token_file) {
        rete_err("control plane: no valid certificate in %s and no --token-file to get one",
                 o->data_dir);
        return -1;
    }
    cp_certs_request(&cp, false);
    return 0;
}

void rete_cp_report_ready(rete_proxy *p, bool ready)
{
    (void)p;
    if (cp.connected && !cp.draining)
        cp_stream_send(&cp, json_pack("{s:s,s:b}", "type", "health", "ready", ready));
}

void rete_cp_drain(rete_proxy *p)
{
    (void)p;
    if (cp.draining)
        return;
    cp_stream_send(&cp, json_pack("{s:s}", "type", "drain"));
    cp.draining = true;
    rete_wire_set_free(&cp.set); /* no snapshot will be built any more */
    if (cp.set_cfg)
        rete_config_unref(cp.set_cfg);
    cp.set_cfg = NULL;
    uv_timer_stop(&cp.retry_timer);
    uv_timer_stop(&cp.renew_timer);
    uv_timer_stop(&cp.ping_timer);
    uv_timer_stop(&cp.stats_timer);
    uv_close((uv_handle_t *)&cp.stats_timer, NULL);
    cp_golden_free(&cp.golden);
    free(cp.endpoints_sent);
    cp.endpoints_sent = NULL;
    cp_tap_close(&cp);
    uv_close((uv_handle_t *)&cp.retry_timer, NULL);
    uv_close((uv_handle_t *)&cp.renew_timer, NULL);
    uv_close((uv_handle_t *)&cp.ping_timer, NULL);
    if (cp.stream) {
        rete_io_shutdown(&cp.stream->io);
        cp_http_close(cp.stream);
    }
}
