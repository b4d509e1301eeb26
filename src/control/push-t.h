/* Push scheduling's state, which struct reted embeds (push.h has its
 * functions). */
#ifndef RETE_CONTROL_PUSH_T_H
#define RETE_CONTROL_PUSH_T_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct reted;
struct reted_proxy;

typedef struct reted_push_state {
    uv_timer_t timer;        /* coalesces recompiles after changes */
    uv_timer_t trim_timer;   /* returns freed memory once pushes calm down */
    uint64_t trimmed_ms;     /* loop time of the last return */
    bool pushed_since_trim;
    bool pending;            /* timer armed */
} reted_push_state;

#endif
