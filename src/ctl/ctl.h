/* retectl's verbs and what they share: the parsed command line, the
 * discovered context, and one way to call reted's operator API and report
 * its errors. Exit codes: 0 ok, 1 failure, 2 usage. */
#ifndef RETE_CTL_H
#define RETE_CTL_H

#include <jansson.h>
#include <stdbool.h>

#include "args.h"
#include "context.h"
#include "http.h"

enum { CTL_EXIT_OK = 0, CTL_EXIT_FAIL = 1, CTL_EXIT_USAGE = 2 };

typedef struct rete_ctl {
    rete_ctl_args args;
    rete_ctl_context ctx;
    rete_ctl_http http;   /* .server: the replica in use (ctx.servers) */
    size_t cur_server;    /* the replica that answered last */
    char *token;          /* owned; NULL when no token file was found */
    rete_error token_err; /* why there is no token, when a token file was named */
    const char *verb;
} rete_ctl;

typedef int (*rete_ctl_verb_fn)(rete_ctl *c);

typedef struct rete_ctl_verb {
    const char *name;
    rete_ctl_verb_fn run;
    unsigned flags; /* CTL_F_* accepted besides the global ones */
    const char *usage;
    const char *summary;
    const char *help; /* longer text and examples */
} rete_ctl_verb;

extern const rete_ctl_verb rete_ctl_verbs[];
extern const size_t rete_ctl_n_verbs;

const rete_ctl_verb *rete_ctl_verb_lookup(const char *name);
void rete_ctl_print_help(FILE *out);
void rete_ctl_print_verb_help(const rete_ctl_verb *v, FILE *out);
/* Print "error: MSG" and a usage hint for the verb; returns CTL_EXIT_USAGE. */
int rete_ctl_usage_error(rete_ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Call reted. On a transport failure prints why (with where the address came
 * from) and returns -1; on 401 prints where the token lives and returns -1;
 * otherwise returns 0 with resp filled (any other status is the caller's). */
int rete_ctl_call(rete_ctl *c, const char *method, const char *path, const char *ctype,
                  const char *body, size_t len, rete_ctl_response *resp);
/* rete_ctl_call with a JSON body (may be NULL) and a JSON answer: *out is the
 * parsed body (NULL when empty or not JSON). Returns the status or -1. */
int rete_ctl_call_json(rete_ctl *c, const char *method, const char *path, json_t *body,
                       json_t **out, rete_ctl_response *resp);
/* GET path and return the list in reted's answer (a new reference): the
 * body when it is an array, else the member under the first of `keys`
 * (NULL-terminated) that is present. NULL once the reason is printed: reted
 * unreachable or refusing, a status other than 200, or no list ("error: "
 * and `missing`). */
json_t *rete_ctl_get_list(rete_ctl *c, const char *path, const char *const *keys,
                          const char *missing);
/* Print "Error from server (STATUS): error[: details]" from an error body. */
void rete_ctl_print_server_error(const rete_ctl_response *resp);

/* Output helpers */
int rete_ctl_print_json(const json_t *v);
int rete_ctl_print_yaml(const json_t *v);
/* Namespace from -n, else "default". */
const char *rete_ctl_ns(const rete_ctl *c);

/* Verbs */
int rete_ctl_cmd_apply(rete_ctl *c);
int rete_ctl_cmd_get(rete_ctl *c);
int rete_ctl_cmd_delete(rete_ctl *c);
int rete_ctl_cmd_describe(rete_ctl *c);
int rete_ctl_cmd_token(rete_ctl *c);
int rete_ctl_cmd_proxy_status(rete_ctl *c);
int rete_ctl_cmd_proxy_config(rete_ctl *c);
int rete_ctl_cmd_check(rete_ctl *c);
int rete_ctl_cmd_analyze(rete_ctl *c);
int rete_ctl_cmd_stat(rete_ctl *c);
int rete_ctl_cmd_tap(rete_ctl *c);
int rete_ctl_cmd_top(rete_ctl *c);
int rete_ctl_cmd_diagnose(rete_ctl *c);
int rete_ctl_cmd_identity(rete_ctl *c);
int rete_ctl_cmd_version(rete_ctl *c);
int rete_ctl_cmd_completion(rete_ctl *c);
int rete_ctl_cmd_help(rete_ctl *c);

/* The bash completion script (written from the verb, kind and flag tables). */
void rete_ctl_completion_bash(FILE *out);

/* proxy-status STATUS column from one proxy's JSON: "SYNCED", "STALE",
 * "NACK: reason", "DISCONNECTED". */
void rete_ctl_proxy_state(const json_t *p, char *buf, size_t len);
/* First of several candidate keys present in an object. */
const json_t *rete_ctl_get_any(const json_t *obj, const char *const *keys);

#endif
