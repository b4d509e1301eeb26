/* rete-loadgen internals shared by the scheduler (loadgen.c) and the
 * protocol codecs (lg_h1.c; lg_h2.c for HTTP/2 and gRPC). See loadgen.c for
 * what the tool does. */
#ifndef RETE_BENCH_LOADGEN_H
#define RETE_BENCH_LOADGEN_H

#include "h1_parse.h"
#include "hdr.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define LG_MAX_CONNS 10000
#define LG_READ_BUF 65536
/* gRPC status codes 0..16 are counted one by one (grpc/doc/statuscodes.md);
 * anything else is "other". */
#define LG_GRPC_CODES 17
#define LG_GRPC_MAX_PAYLOAD (4u << 20) /* grpc's default receive limit */

typedef struct lg lg;
typedef struct lg_conn lg_conn;

/* HTTP/1.1, HTTP/2 or gRPC: what differs between them, as a small vtable.
 * Every connection op may end in lg_conn_fail(c); callers check c->cstate
 * afterwards. */
typedef struct lg_codec {
    const char *name;
    void (*prepare)(lg *l);                 /* once before connecting; may be NULL */
    unsigned (*capacity)(const lg *l);      /* requests in flight per connection */
    void (*start)(lg_conn *c);              /* TCP connected: preface, settings */
    void (*send)(lg_conn *c, uint64_t index); /* start request `index` */
    void (*flush)(lg_conn *c);              /* after a batch of send(); may be NULL */
    void (*on_data)(lg_conn *c);            /* c->buf[0, c->len) holds new bytes */
    void (*reset)(lg_conn *c);              /* connection lost: fail what is in flight */
} lg_codec;

enum lg_cstate { CS_CONNECTING, CS_READY, CS_CLOSING };

/* HTTP/1.1 response framing state (lg_h1.c). */
typedef struct lg_h1_state {
    int phase;
    uint64_t index;              /* request in flight */
    uint64_t body_left;
    int status;
    bool keep_alive;
    rete_h1_chunked chunked;
} lg_h1_state;

/* One connection. The libuv handle is embedded; the slot is reused for the
 * next TCP connection only after the close callback ran. */
struct lg_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_timer_t retry;            /* backs off after a refused connect */
    bool connect_failed;
    lg *lg;
    lg_conn *ready_prev, *ready_next; /* on lg->ready while it can take a request */
    bool on_ready;
    enum lg_cstate cstate;
    unsigned inflight;
    lg_h1_state h1;
    void *h2;                    /* lg_h2.c's session, NULL otherwise */
    size_t len;                  /* bytes held in buf */
    char buf[LG_READ_BUF];
};

typedef struct lg_opts {
    struct sockaddr_in addr;
    char *host;                  /* Host header / :authority */
    char *path;
    unsigned connections;
    unsigned streams;            /* HTTP/2: concurrent streams per connection */
    double rate;
    double duration;
    double timeout;              /* drain time after the last request is due, seconds */
    size_t grpc_payload;         /* gRPC: bytes in the request message's field 1 */
    const lg_codec *codec;
} lg_opts;

struct lg {
    uv_loop_t *loop;
    lg_opts o;
    char *request;               /* HTTP/1.1: the one request; gRPC: the one message */
    size_t request_len;
    lg_conn *conns;
    lg_conn *ready;              /* connections that can take another request */
    unsigned connected;
    uv_poll_t tick_poll;         /* watches tick_fd */
    int tick_fd;                 /* timerfd for the send schedule */
    uv_timer_t connect_timer;    /* gives up when the target does not accept */
    uv_timer_t drain_timer;      /* ends the run after the last due time + timeout */
    uv_signal_t sigint;
    bool started, stopping;
    uint64_t t0;                 /* ns, uv_hrtime clock (CLOCK_MONOTONIC) */
    uint64_t total;              /* requests in the run: rate * duration */
    uint64_t next_send;          /* index of the next request to start */
    uint64_t sent, ok, non2xx, errors, connect_errors;
    uint64_t grpc_errors;        /* answered 200 with grpc-status != 0 (in `errors` too) */
    uint64_t grpc_status[LG_GRPC_CODES], grpc_status_other, grpc_status_missing;
    uint64_t last_done;          /* ns of the last completed response */
    rete_hdr hist;
};

extern const lg_codec lg_h1_codec;
extern const lg_codec lg_h2_codec;
extern const lg_codec lg_grpc_codec;

/* For codecs: request `index` was answered with `status`. */
void lg_response(lg_conn *c, uint64_t index, int status);
/* For the gRPC codec: call `index` was answered with HTTP `status` and
 * `grpc_status` (-1 when the response carried none, -2 when unreadable). OK
 * only for 200 and grpc-status 0; another HTTP status counts as non-2xx, a
 * 200 with any other grpc-status (or none) as an error. */
void lg_grpc_response(lg_conn *c, uint64_t index, int status, int grpc_status);
/* For codecs: request `index` failed (reset stream, lost connection). */
void lg_request_failed(lg_conn *c, uint64_t index);
/* Drop the connection; codec->reset fails what is in flight, and a fresh
 * connection is opened in the same slot once the handle is closed. */
void lg_conn_fail(lg_conn *c);
/* Write bytes; what the socket does not take at once is copied and queued. */
void lg_conn_write(lg_conn *c, const char *data, size_t len);

#endif
