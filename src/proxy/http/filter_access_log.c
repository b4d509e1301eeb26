/* The access log: one JSON line per exchange (rete-proxy --access-log),
 * every client-chosen field escaped and capped (json_out.h). */
#include "filter.h"
#include "config.h"
#include "json_out.h"
#include "worker.h"

#include <stdio.h>
#include <string.h>

FILE *rete_access_log;

static void access_log(rete_exchange *ex, const rete_filter_end *end)
{
    int status = end->status;
    double ms = (double)end->duration_ns / 1e6;
    if (!rete_access_log)
        return;
    const rete_config *cfg = ex->gen->cfg;
    rete_view rid = rete_msg_get(&ex->req, RETE_VIEW_LIT("x-request-id"));
    /* Every value an app or a client chose goes through the escaper: a
     * quote in a path or a request id can never add or override a key.
     * Each client-chosen field has a length cap, so the worst case (every
     * byte escaped to 6) fits the line and nothing is dropped. */
    char line[8192], who[256];
    snprintf(who, sizeof(who), "%s/%s", cfg->proxy.ns, cfg->proxy.name);
    const char *upstream = ex->service ? ex->service->name : "-";
    const char *peer = ex->peer_id[0] ? ex->peer_id : ex->downstream_addr;
    const char *listener = ex->listener ? ex->listener : "-";
    const char *flags = rete_ex_error_flag(ex->error);
    rete_jbuf b;
    rete_jbuf_init(&b, line, sizeof(line), 32);
    rete_jbuf_raw(&b, "{");
    rete_jbuf_str(&b, "proxy", who, strlen(who), 0);
    rete_jbuf_str(&b, "listener", listener, strlen(listener), 0);
    rete_jbuf_str(&b, "method", ex->req.method.p, ex->req.method.len, 32);
    rete_jbuf_str(&b, "authority", ex->req.authority.p, ex->req.authority.len, 256);
    rete_jbuf_str(&b, "path", ex->req.path.p, ex->req.path.len, 512);
    rete_jbuf_int(&b, "status", status);
    rete_jbuf_str(&b, "flags", flags, strlen(flags), 0);
    rete_jbuf_num(&b, "duration_ms", ms);
    rete_jbuf_int(&b, "bytes_in", (long long)ex->req_bytes);
    rete_jbuf_int(&b, "bytes_out", (long long)ex->resp_bytes);
    rete_jbuf_str(&b, "upstream", upstream, strlen(upstream), 0);
    rete_jbuf_str(&b, "peer", peer, strlen(peer), 0);
    rete_jbuf_str(&b, "request_id", rid.p, rid.len, 128);
    if (b.truncated)
        rete_jbuf_raw(&b, ",\"truncated\":true");
    rete_jbuf_raw_end(&b, "}\n");
    fputs(line, rete_access_log);
    fflush(rete_access_log);
}

const rete_filter rete_filter_access_log = {
    .name = "access-log",
    .on_finish = access_log,
};
