/* Unit tests for the outgoing queue of src/control/http.c streams: order,
 * shared bodies sent without a per-stream copy, superseding, the bound on a
 * reader that falls behind. A plaintext server on loopback and a
 * non-blocking client socket, both driven from one loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BIG (16u << 20) /* more than loopback socket buffers hold */

typedef struct fixture {
    uv_loop_t loop;
    rete_io_loop *iol;
    rete_http_server *srv;
    rete_http_stream *st;
    int closed;
    int fd;                 /* the client */
} fixture;

static void on_line(rete_http_stream *st, const char *line, size_t len)
{
    (void)st;
    (void)line;
    (void)len;
}

static void on_close(rete_http_stream *st)
{
    fixture *f = rete_http_stream_owner(st);
    f->closed++;
    f->st = NULL;
}

static const rete_http_stream_cbs cbs = {on_line, on_close};

static void handler(rete_http_req *req, void *arg)
{
    fixture *f = arg;
    f->st = rete_http_stream_start(req, "application/x-ndjson", &cbs, f, 1 << 16);
}

/* Counts releases in the int it is given. */
static void release(void *owner, void *arg)
{
    (void)owner;
    (*(int *)arg)++;
}

static void spin(fixture *f)
{
    for (int i = 0; i < 4; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

static uint16_t free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &n), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* A server, and a client that has opened a stream and reads nothing yet
 * (its receive buffer kept small, so the server's writes back up soon). */
static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->iol = calloc(1, sizeof *f->iol);
    assert_non_null(f->iol);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->iol->loop = &f->loop;
    uint16_t port = free_port();
    rete_error err = {0};
    f->srv = rete_http_listen(f->iol, "127.0.0.1", port, NULL, 4096, handler, f, &err);
    assert_non_null(f->srv);
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    assert_int_equal(setsockopt(f->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(f->fd, (struct sockaddr *)&a, sizeof a), 0);
    static const char get[] = "GET /s HTTP/1.1\r\nhost: t\r\n\r\n";
    assert_int_equal(write(f->fd, get, sizeof get - 1), (ssize_t)(sizeof get - 1));
    fcntl(f->fd, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < 1000 && !f->st; i++) {
        spin(f);
        usleep(1000);
    }
    assert_non_null(f->st);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    close(f->fd);
    rete_http_server_close(f->srv);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f->iol);
    free(f);
    return 0;
}

static rete_http_stream_stats stats(fixture *f)
{
    rete_http_stream_stats s;
    rete_http_server_stream_stats(f->srv, &s);
    return s;
}

/* Read until `want` bytes (after the response head) have arrived. */
static char *read_all(fixture *f, size_t want)
{
    char *out = malloc(want + 1);
    assert_non_null(out);
    size_t got = 0, head = 0;
    static const char end[] = "\r\n\r\n";
    for (int idle = 0; got < want && idle < 5000;) {
        char buf[65536];
        ssize_t n = read(f->fd, buf, sizeof buf);
        if (n <= 0) {
            assert_true(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
            spin(f);
            usleep(200);
            idle++;
            continue;
        }
        idle = 0;
        for (ssize_t i = 0; i < n; i++) {
            if (head < 4) { /* skip the head: it ends at the first blank line */
                head = buf[i] == end[head] ? head + 1 : (buf[i] == '\r' ? 1 : 0);
                continue;
            }
            assert_true(got < want);
            out[got++] = buf[i];
        }
    }
    assert_int_equal(got, want);
    out[got] = '\0';
    return out;
}

static void test_shared_body_order_and_supersede(void **state)
{
    fixture *f = *state;
    char *big = malloc(BIG);
    assert_non_null(big);
    memset(big, 'a', BIG - 1);
    big[BIG - 1] = '\n';
    int rel_big = 0, rel_moot = 0, rel_last = 0;
    rete_http_stream_send_ref(f->st, "1:", 2, big, BIG, false, release, &rel_big);
    spin(f);
    /* The reader takes nothing: the big message is on its way, but the
     * stream holds at most its bound of it, not a copy. */
    rete_http_stream_stats s = stats(f);
    assert_int_equal(s.queued_msgs, 1);
    assert_true(s.shared_bytes > 0 && s.shared_bytes < BIG);
    assert_true(s.max_buffered_bytes <= RETE_HTTP_STREAM_LIMIT);
    assert_int_equal(rel_big, 0);

    rete_http_stream_send(f->st, "2\n", 2);
    rete_http_stream_send_ref(f->st, "3:", 2, "moot\n", 5, false, release, &rel_moot);
    assert_int_equal(stats(f).queued_msgs, 3);
    /* A newer whole message: what has not started goes; the one on its way stays. */
    rete_http_stream_send_ref(f->st, "4:", 2, "last\n", 5, true, release, &rel_last);
    assert_int_equal(stats(f).queued_msgs, 2);
    assert_int_equal(rel_moot, 1);

    size_t want = 2 + BIG + 7;
    char *got = read_all(f, want);
    assert_memory_equal(got, "1:", 2);
    assert_memory_equal(got + 2, big, BIG);
    assert_memory_equal(got + 2 + BIG, "4:last\n", 7);
    assert_int_equal(rel_big, 1);
    assert_int_equal(rel_last, 1);
    assert_int_equal(rel_moot, 1);
    s = stats(f);
    assert_int_equal(s.queued_msgs, 0);
    assert_int_equal(s.shared_bytes, 0);
    assert_int_equal(f->closed, 0);
    free(got);
    free(big);
}

static void test_reader_too_far_behind_is_closed(void **state)
{
    fixture *f = *state;
    char *big = malloc(BIG);
    assert_non_null(big);
    memset(big, 'b', BIG);
    int rel_big = 0, rel_late = 0;
    rete_http_stream_send_ref(f->st, NULL, 0, big, BIG, false, release, &rel_big);
    spin(f);
    rete_http_stream *st = f->st;
    int sent = 0;
    while (f->st && sent < 2 * RETE_HTTP_STREAM_MAX_MSGS) {
        rete_http_stream_send(st, "ping\n", 5);
        sent++;
        assert_true(stats(f).max_buffered_bytes <= RETE_HTTP_STREAM_LIMIT);
    }
    /* Closed at the bound, with on_close, and the shared body let go. */
    assert_int_equal(sent, RETE_HTTP_STREAM_MAX_MSGS);
    assert_int_equal(f->closed, 1);
    assert_int_equal(rel_big, 1);
    assert_int_equal(stats(f).closed_behind, 1);
    assert_int_equal(stats(f).streams, 0);
    /* Until the loop runs the stream is still there: a send on it releases
     * at once. */
    rete_http_stream_send_ref(st, NULL, 0, "x\n", 2, false, release, &rel_late);
    assert_int_equal(rel_late, 1);
    spin(f);
    free(big);
}

static void test_copied_bytes_bound(void **state)
{
    fixture *f = *state;
    char *big = malloc(BIG);
    assert_non_null(big);
    memset(big, 'c', BIG);
    int rel_big = 0;
    rete_http_stream_send_ref(f->st, NULL, 0, big, BIG, false, release, &rel_big);
    spin(f);
    /* Copied messages count against the byte bound long before the count. */
    static char chunk[100000];
    memset(chunk, 'd', sizeof chunk);
    int sent = 0;
    while (f->st && sent < 100) {
        rete_http_stream_send(f->st, chunk, sizeof chunk);
        sent++;
        assert_true(stats(f).max_buffered_bytes <= RETE_HTTP_STREAM_LIMIT);
    }
    assert_int_equal(sent, RETE_HTTP_STREAM_MAX_COPIED / sizeof chunk + 1);
    assert_int_equal(f->closed, 1);
    assert_int_equal(rel_big, 1);
    spin(f);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shared_body_order_and_supersede, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_too_far_behind_is_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copied_bytes_bound, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
