/* The agent's identity: a certificate for the workload's SPIFFE ID from
 * reted's CA (bootstrap with a join token, then renewal at about half-life
 * over mTLS), the trust bundle, and the TLS contexts built from them. Any
 * replica signs (they share the CA): a request that fails moves to the next
 * replica of the list, and its retry goes there. */
#include "alloc.h"
#include "config.h"
#include "cp_http.h"
#include "cp_state.h"
#include "csr.h"
#include "defaults.h"
#include "log.h"
#include "spiffe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* When our certificate was issued: reted's CA backdates notBefore by five
 * minutes against clock skew (src/control/ca.h). */
static int64_t issued_at(const rete_cp *cp)
{
    if (!cp->cert_not_before)
        return 0;
    int64_t t = cp->cert_not_before + 300, now = (int64_t)time(NULL);
    return t < now ? t : now; /* a CA that does not backdate */
}

bool cp_certs_load(rete_cp *cp)
{
    size_t n;
    char *pem = cp_read_file(cp->cert_path, &n);
    if (!pem)
        return false;
    cp->cert_not_after = rete_cert_not_after_pem(pem, n);
    cp->cert_not_before = rete_cert_not_before_pem(pem, n);
    if (cp->cert_not_after > 0)
        rete_metrics_gauge_set(cp->p->metrics, cp->p->ms.cert_expiry, (double)cp->cert_not_after);
    free(pem);
    return cp->cert_not_after > 0;
}

void cp_certs_rebuild_contexts(rete_cp *cp)
{
    rete_error err = {0};
    if (cp->ctx_cert)
        rete_tls_ctx_unref(cp->ctx_cert);
    cp->ctx_cert = rete_tls_cp_client_ctx(cp->cert_path, cp->key_path, cp->bundle_path, &err);
    if (!cp->ctx_cert)
        rete_err("control plane: %s", err.msg);
}

/* A new certificate: rebuild the data plane's TLS contexts (same configuration). */
static void reinstall_tls(rete_cp *cp)
{
    rete_proxy *p = cp->p;
    if (!p->cfg)
        return;
    rete_error err = {0};
    rete_tls_set *tls = rete_tls_set_build(p->cfg, &err);
    if (!tls) {
        rete_err("control plane: new certificate unusable: %s", err.msg);
        return;
    }
    rete_proxy_install(p, rete_config_ref(p->cfg), tls);
}

static void on_renew(uv_timer_t *t)
{
    cp_certs_request(t->data, true);
}

void cp_certs_schedule_renewal(rete_cp *cp)
{
    /* About half-life from issuance, with jitter (±10% of the lifetime),
     * never sooner than 1 s (a certificate found half-spent at start-up is
     * renewed at once). */
    int64_t now = (int64_t)time(NULL);
    int64_t issued = issued_at(cp) ? issued_at(cp) : now;
    int64_t life = cp->cert_not_after - issued;
    if (life < 2)
        life = 2;
    int64_t at = issued + life / 2 + (int64_t)((double)life * 0.1 * ((double)rand() / RAND_MAX - 0.5));
    uint64_t ms = at > now ? (uint64_t)(at - now) * 1000 : 1000;
    cp->renew_timer.data = cp;
    uv_timer_start(&cp->renew_timer, on_renew, ms, 0);
}

/* A renewal failed (reted unreachable or refusing): try again while the
 * certificate lasts, after a tenth of what is left, between 1 and 30 s. The
 * stream's reconnect backoff never renews, so without this a proxy that
 * missed its half-life renewal would run into expiry. */
static void retry_renewal(rete_cp *cp)
{
    int64_t left = cp->cert_not_after - (int64_t)time(NULL);
    uint64_t ms = left > 10 ? (uint64_t)(left / 10) * 1000 : 1000;
    if (ms > 30000)
        ms = 30000;
    /* Said, so an operator (and a test) sees a renewal at risk before the
     * certificate runs out. */
    rete_warn("control plane: certificate renewal failed; retrying in %llu ms (certificate valid "
              "for %lld s more)",
              (unsigned long long)ms, (long long)left);
    cp->renew_timer.data = cp;
    uv_timer_start(&cp->renew_timer, on_renew, ms, 0);
}

static void on_answer(cp_http *h, int status, const char *body, size_t len)
{
    rete_cp *cp = h->cp;
    bool renewal = cp->pending_renewal;
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    const char *chain = json_string_value(json_object_get(j, "certChain"));
    const char *bundle = json_string_value(json_object_get(j, "trustBundle"));
    if (status != 200 || !chain || !bundle || !cp->pending_key) {
        const char *e = json_string_value(json_object_get(j, "error"));
        rete_err("control plane: certificate %s refused (%d): %s", renewal ? "renewal" : "request",
                 status, e ? e : "no certificate in the answer");
        h->handled_ok = false;
        json_decref(j);
        return;
    }
    /* Key first, then the certificate: a crash in between leaves a key
     * without a matching certificate, which the next start notices. */
    if (cp_write_file(cp->key_path, cp->pending_key, strlen(cp->pending_key), 0600) != 0 ||
        cp_write_file(cp->cert_path, chain, strlen(chain), 0644) != 0 ||
        cp_write_file(cp->bundle_path, bundle, strlen(bundle), 0644) != 0) {
        rete_err("control plane: cannot write the certificate to %s", cp->o->data_dir);
        h->handled_ok = false;
        json_decref(j);
        return;
    }
    rete_free(&cp->pending_key);
    cp_certs_load(cp);
    rete_info("control plane: %s certificate for %s/%s valid until %lld", renewal ? "renewed" : "got a",
              cp->o->ns, cp->o->sa, (long long)cp->cert_not_after);
    json_decref(j);
    cp_certs_rebuild_contexts(cp);
    reinstall_tls(cp);
    cp_certs_schedule_renewal(cp);
    /* reted records a renewed certificate for our stream itself (it signed
     * it, for the certificate the stream was opened with): nothing to tell
     * it, and what we would say of our certificate is not taken anyway. */
    if (!renewal)
        cp_stream_connect(cp);
}

static void on_close(cp_http *h, bool ok)
{
    rete_cp *cp = h->cp;
    if (ok || cp->draining)
        return;
    cp_server_failed(cp); /* any replica signs: ask the next one */
    if (cp->pending_renewal)
        retry_renewal(cp);
    else
        cp_stream_schedule_retry(cp); /* its retry asks again while there is no certificate */
}

/* one callback table per kind of exchange with reted (cp_http.h): the same shape by design. */
static const cp_http_cbs cert_cbs = {.on_answer = on_answer, .on_close = on_close};

void cp_certs_request(rete_cp *cp, bool renewal)
{
    char spiffe[800];
    rete_error err = {0};
    rete_spiffe_format(spiffe, sizeof(spiffe), cp->o->trust_domain ? cp->o->trust_domain : RETE_DEFAULT_TRUST_DOMAIN,
                       cp->o->ns, cp->o->sa);
    char *key = NULL;
    char *csr = rete_csr_new(spiffe, &key, &err);
    if (!csr) {
        rete_err("control plane: CSR: %s", err.msg);
        return;
    }
    json_t *body = json_pack("{s:s}", "csr", csr);
    free(csr);
    if (!renewal) {
        char *tok = cp_read_file(cp->o->token_file, NULL);
        if (!tok) {
            rete_err("control plane: cannot read the join token %s", cp->o->token_file);
            free(key);
            json_decref(body);
            return;
        }
        tok[strcspn(tok, "\r\n ")] = '\0';
        json_object_set_new(body, "token", json_string(tok));
        free(tok);
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    cp_http *h = cp_http_start(cp, renewal ? cp->ctx_cert : cp->ctx_anon, false, "POST", "/ca/v1/certificates",
                               text, NULL, &cert_cbs);
    free(text);
    if (!h) {
        free(key);
        cp_server_failed(cp);
        if (renewal)
            retry_renewal(cp);
        else
            cp_stream_schedule_retry(cp);
        return;
    }
    free(cp->pending_key);
    cp->pending_key = key;
    cp->pending_renewal = renewal;
}

void cp_certs_on_message(rete_cp *cp, const char *bundle, int64_t renew_issued_before)
{
    /* A new trust bundle (CA rotation) goes to disk before the snapshot is
     * built: the snapshot's TLS contexts read it from there. */
    if (bundle && *bundle) {
        size_t n = 0;
        char *cur = cp_read_file(cp->bundle_path, &n);
        if (!cur || n != strlen(bundle) || memcmp(cur, bundle, n) != 0) {
            if (cp_write_file(cp->bundle_path, bundle, strlen(bundle), 0644) == 0) {
                rete_info("control plane: new trust bundle");
                cp_certs_rebuild_contexts(cp);
            }
        }
        free(cur);
    }
    if (renew_issued_before > cp->renewed_for && issued_at(cp) <= renew_issued_before) {
        /* The CA switched roots: renew now (with jitter, so a mesh does
         * not ask all at once), from the new root. */
        cp->renewed_for = renew_issued_before;
        rete_info("control plane: the CA asks for new certificates; renewing");
        cp->renew_timer.data = cp;
        uv_timer_start(&cp->renew_timer, on_renew, (uint64_t)(rand() % 2000), 0);
    }
}
