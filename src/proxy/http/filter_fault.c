/* Fault injection for chaos drills: a route rule's `fault` (Istio's
 * HTTPFaultInjection shape, docs/traffic.md) delays a share of its
 * requests by a fixed time and/or answers a share of them locally with an
 * HTTP or gRPC status, before any backend is picked.
 *
 * The draws use the worker's PRNG (xorshift64*, no lock), one per kind per
 * request, in parts per million. A delay holds the request on the
 * exchange's one timer (free at this point: the retry filter arms it only
 * once the backend filter has started the first try) and the worker goes
 * on with other work; when it fires, the chain goes on after this filter
 * (rete_filter_chain_resume). A client that leaves during the delay ends
 * the exchange, and finish stops the timer: nothing resumes. The request
 * body waits in its bounded pipe meanwhile (flow control holds the
 * client). The abort is drawn after the delay, as Envoy's fault filter
 * does, so a request may be both delayed and aborted. No state of its own:
 * the rule is ex->route's, the timer the exchange's. */
#include "filter.h"
#include "log.h"
#include "worker.h"

#include <stdio.h>

#define PPM 1000000u

static bool draw(rete_exchange *ex, uint32_t ppm)
{
    return ppm && (ppm >= PPM || rete_worker_rand(ex->worker) % PPM < ppm);
}

/* Abort now or go on. */
static rete_filter_verdict fault_abort(rete_exchange *ex, const rete_fault_policy *f)
{
    if (!draw(ex, f->abort_ppm))
        return RETE_FILTER_NEXT;
    rete_stat(ex->worker, ex->worker->ms.faults[1], 1);
    ex->error = RETE_EXE_FAULT;
    char body[64];
    int n = snprintf(body, sizeof(body), "fault filter abort\n");
    if (f->abort_grpc >= 0)
        rete_ex_local_response_with(ex, 200, f->abort_grpc, true, NULL, 0, NULL, body, (size_t)n);
    else
        rete_ex_local_response_with(ex, f->abort_http, -1, false, NULL, 0,
                                    "text/plain; charset=utf-8", body, (size_t)n);
    return RETE_FILTER_DONE;
}

static void delay_done(uv_timer_t *t)
{
    rete_exchange *ex = t->data;
    ex->timer_active = false;
    if (ex->done)
        return;
    if (fault_abort(ex, &ex->route->rule->fault) == RETE_FILTER_DONE)
        return;
    rete_filter_chain_resume(ex, &rete_filter_fault);
}

static rete_filter_verdict fault_request(rete_exchange *ex)
{
    if (!ex->route || ex->tunnel)
        return RETE_FILTER_NEXT;
    const rete_fault_policy *f = &ex->route->rule->fault;
    if (!f->delay_ppm && !f->abort_ppm)
        return RETE_FILTER_NEXT;
    if (draw(ex, f->delay_ppm)) {
        rete_stat(ex->worker, ex->worker->ms.faults[0], 1);
        rete_debug("fault: delaying %.*s by %u ms", (int)ex->req.path.len, ex->req.path.p,
                   f->delay_ms);
        ex->timer_active = true;
        rete_ex_timer_start(ex, delay_done, f->delay_ms);
        return RETE_FILTER_DONE; /* held: delay_done goes on */
    }
    return fault_abort(ex, f);
}

const rete_filter rete_filter_fault = {
    .name = "fault",
    .on_request = fault_request,
};
