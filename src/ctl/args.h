/* retectl's command line: one table of flags (names, short forms, whether
 * they take a value, help), a per-verb mask of the flags it accepts, and a
 * parser that fills rete_ctl_args. No I/O: errors come back in a rete_error
 * (error.h), the message as the user reads it. */
#ifndef RETE_CTL_ARGS_H
#define RETE_CTL_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

enum {
    CTL_F_SERVER = 1u << 0,
    CTL_F_TOKEN_FILE = 1u << 1,
    CTL_F_VERBOSE = 1u << 2,
    CTL_F_HELP = 1u << 3,
    CTL_F_FILENAME = 1u << 4,
    CTL_F_NAMESPACE = 1u << 5,
    CTL_F_ALL_NS = 1u << 6,
    CTL_F_OUTPUT = 1u << 7,
    CTL_F_SA = 1u << 8,
    CTL_F_TTL = 1u << 9,
    CTL_F_USES = 1u << 10,
    CTL_F_TOKEN = 1u << 11,
    CTL_F_SPIFFE_ID = 1u << 12,
    CTL_F_OUT = 1u << 13,
    CTL_F_TIMEOUT = 1u << 14,
    CTL_F_WINDOW = 1u << 15,
    CTL_F_PATH = 1u << 16,
    CTL_F_METHOD = 1u << 17,
    CTL_F_STATUS = 1u << 18,
    CTL_F_MAX = 1u << 19,
    CTL_F_HEADERS = 1u << 20,
    CTL_F_ONCE = 1u << 21,
    CTL_F_DURATION = 1u << 22,
};

/* Accepted by every verb, before or after it. */
#define CTL_F_GLOBAL (CTL_F_SERVER | CTL_F_TOKEN_FILE | CTL_F_VERBOSE | CTL_F_HELP | CTL_F_TIMEOUT)

#define RETE_CTL_MAX_FILES 64
#define RETE_CTL_MAX_POS 16

typedef struct rete_ctl_args {
    unsigned seen; /* CTL_F_* given on the command line */
    const char *server;
    const char *token_file;
    const char *timeout;
    int verbose;
    const char *files[RETE_CTL_MAX_FILES];
    size_t n_files;
    const char *ns;
    const char *output;
    const char *sa;
    const char *ttl;
    const char *uses;
    const char *token;
    const char *spiffe_id;
    const char *out;
    const char *window;
    const char *path;
    const char *method;
    const char *status;
    const char *max;
    const char *duration;
    const char *pos[RETE_CTL_MAX_POS]; /* positionals after the verb */
    size_t n_pos;
} rete_ctl_args;

typedef struct rete_ctl_flag_def {
    unsigned bit;
    const char *name; /* long form without "--" */
    char short_name;  /* 0 when none */
    bool has_value;
    const char *value_name; /* for help: "FILE", "NS" */
    const char *help;
    size_t offset; /* where a single-valued flag is stored in rete_ctl_args */
} rete_ctl_flag_def;

extern const rete_ctl_flag_def rete_ctl_flags[];
extern const size_t rete_ctl_n_flags;

/* Index in argv of the verb: the first argument that is neither a flag nor
 * the value of a global flag; argc when there is none. */
int rete_ctl_find_verb(int argc, char **argv);

/* Parse argv[0..argc) (the verb itself removed) accepting the flags in
 * `allowed`. "--name=value", "--name value", "-x value", "-xvalue"; "--"
 * ends the flags; "-" alone is a positional (or a value: "-f -"). Returns
 * RETE_OK, or RETE_EINVAL (RETE_ELIMIT: too many -f) with a message for the
 * user in err. */
RETE_MUST_CHECK rete_rc rete_ctl_args_parse(int argc, char **argv, unsigned allowed,
                                            rete_ctl_args *out, rete_error *err);

/* "90", "90s", "30m", "1h", "2d", "1h30m" -> seconds. False on anything else
 * or on zero. */
bool rete_ctl_parse_duration(const char *s, int64_t *seconds);

#endif
