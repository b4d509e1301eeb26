/* Where reted is and which credential to send, with no flags when run where
 * `make demo` (or `reted init`) wrote a context.json. Each of the server and
 * the token file is taken from the first of:
 *   1. --server / --token-file
 *   2. RETE_SERVER / RETE_TOKEN_FILE
 *   3. .demo/reted/context.json in the current directory or any parent
 *   4. ~/.config/rete/context.json
 *   5. 127.0.0.1:15014, no token
 * context.json is {"api": "HOST:PORT", "tokenFile": PATH, ...}; a relative
 * tokenFile is relative to the context file's directory. "api" (and
 * --server, RETE_SERVER) may name several replicas of reted: a list
 * ["HOST:PORT", ...] or "HOST:PORT,HOST:PORT"; a call goes to the first that
 * can be reached (api.c). */
#ifndef RETE_CTL_CONTEXT_H
#define RETE_CTL_CONTEXT_H

#include <stddef.h>

#include "defaults.h"
#include "error.h"

#define RETE_CTL_DEFAULT_SERVER "127.0.0.1:" RETE_STR(RETE_PORT_OPERATOR_API)
#define RETE_CTL_PATH_MAX 4096

typedef struct rete_ctl_context_in {
    const char *flag_server, *flag_token_file;
    const char *env_server, *env_token_file;
    const char *cwd;  /* start of the upward walk */
    const char *home; /* NULL: skip step 4 */
} rete_ctl_context_in;

#define RETE_CTL_MAX_SERVERS 16 /* replicas in one context (a list in "api" or --server) */

typedef struct rete_ctl_context {
    char server[1024]; /* as given: HOST:PORT, or a comma-separated list of replicas */
    char servers[RETE_CTL_MAX_SERVERS][256]; /* server split: each replica */
    size_t n_servers;
    char token_file[RETE_CTL_PATH_MAX]; /* "" when none */
    char server_from[RETE_CTL_PATH_MAX +
                     16]; /* "--server", "RETE_SERVER", a context.json path, "default" */
    char token_from[RETE_CTL_PATH_MAX + 16];
} rete_ctl_context;

/* Fill `out`. A context.json that exists but cannot be read or parsed is an
 * error (RETE_EINVAL, message in err), not silently skipped. */
RETE_MUST_CHECK rete_rc rete_ctl_context_discover(const rete_ctl_context_in *in,
                                                  rete_ctl_context *out, rete_error *err);

/* Read a token file: its first line, surrounding whitespace removed
 * (malloc'ed), or NULL with err (RETE_EIO: unreadable, RETE_EINVAL: empty). */
char *rete_ctl_read_token(const char *path, rete_error *err);

#endif
