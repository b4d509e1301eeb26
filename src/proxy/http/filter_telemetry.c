/* Telemetry of every exchange: its body sizes as they pass (ex->req_bytes,
 * ex->resp_bytes: Istio's request and response sizes, the access log's
 * bytes_in/out; a tunnel's raw bytes are counted by the core), and at its
 * end the proxy's own response and duration families, and Istio's request
 * or TCP series (telemetry.c) for everything but the admin listener's
 * requests. */
#include "filter.h"
#include "telemetry.h"
#include "worker.h"

static void telemetry_request_body(rete_exchange *ex, const rete_filter_body *b)
{
    ex->req_bytes += b->len;
}

static void telemetry_response_body(rete_exchange *ex, const rete_filter_body *b)
{
    ex->resp_bytes += b->len;
}

static void telemetry_finish(rete_exchange *ex, const rete_filter_end *end)
{
    rete_worker *w = ex->worker;
    int cls = end->status / 100;
    if (cls < 0 || cls > 5)
        cls = 0;
    rete_stat(w, w->ms.responses[cls], 1);
    rete_metrics_observe(w->shard, w->ms.duration, (double)end->duration_ns / 1e9);
    if (ex->tunnel)
        rete_telemetry_tunnel_close(ex);
    else if (!ex->admin)
        rete_telemetry_request(ex, end->status, end->duration_ns);
}

const rete_filter rete_filter_telemetry = {
    .name = "telemetry",
    .on_request_body = telemetry_request_body,
    .on_response_body = telemetry_response_body,
    .on_finish = telemetry_finish,
};
