/* One error vocabulary for the whole project (after s2n's s2n_result.h).
 *
 * Functions that can fail return `rete_rc`: RETE_OK (0) on success, a negative
 * RETE_E* code otherwise. They are declared RETE_MUST_CHECK so the compiler
 * refuses a caller that ignores the result. Constructors unwind through one
 * `goto fail` path; the guard macros below keep the happy path reading
 * straight down. */
#ifndef RETE_RESULT_H
#define RETE_RESULT_H

#define RETE_MUST_CHECK __attribute__((warn_unused_result))

typedef int rete_rc;

enum {
    RETE_OK = 0,
    RETE_EAGAIN = -1,   /* need more input / try later */
    RETE_EINVAL = -2,   /* malformed input */
    RETE_ELIMIT = -3,   /* an explicit bound was exceeded */
    RETE_ENOMEM = -4,   /* allocation failed where the caller can recover */
    RETE_EIO = -5,      /* system or library call failed */
    RETE_ENOTFOUND = -6,
    RETE_ESTATE = -7,   /* call not valid in the object's current state */
    /* A conditional write lost: the stored version is not the one the
     * caller read (the store's optimistic concurrency, store.h), or the
     * object exists already. */
    RETE_ECONFLICT = -20,
};

/* Return the (negative) result of `expr` from the enclosing function. */
#define RETE_GUARD(expr)                                                                           \
    do {                                                                                           \
        rete_rc rete__rc = (expr);                                                                 \
        if (rete__rc < 0)                                                                          \
            return rete__rc;                                                                       \
    } while (0)

/* Jump to the function's single unwind label when `cond` is false. */
#define RETE_ENSURE_GOTO(cond, label)                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            goto label;                                                                            \
    } while (0)

/* A short English name for a code ("invalid input"); error.c. */
const char *rete_rc_str(rete_rc rc);

#endif
