/* etcd_http.c: the endpoint list, an answer in chunks, a watch stream split
 * anywhere, the size bound; against a canned server on loopback (a thread
 * that accepts one connection and writes one answer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "etcd_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct canned {
    int lfd;
    const char *answer;
    pthread_t th;
} canned;

static void *serve(void *arg)
{
    canned *c = arg;
    int fd = accept(c->lfd, NULL, NULL);
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0); /* the request: head and small body */
    (void)n;
    size_t len = strlen(c->answer);
    for (size_t i = 0; i < len; i++) /* one byte at a time: every split */
        (void)!send(fd, c->answer + i, 1, MSG_NOSIGNAL);
    close(fd);
    return NULL;
}

static void canned_start(canned *c, const char *answer, char ep[64])
{
    c->answer = answer;
    c->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(c->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(c->lfd, 1), 0);
    assert_int_equal(getsockname(c->lfd, (struct sockaddr *)&a, &al), 0);
    snprintf(ep, 64, "127.0.0.1:%u", ntohs(a.sin_port));
    assert_int_equal(pthread_create(&c->th, NULL, serve, c), 0);
}

static void canned_end(canned *c)
{
    pthread_join(c->th, NULL);
    close(c->lfd);
}

static void test_endpoints(void **state)
{
    (void)state;
    reted_etcd_http c;
    rete_error e = {0};
    assert_int_equal(reted_etcd_http_init(&c, "a:1,[::1]:2379,10.0.0.3:65535", NULL, 1000, 1024, &e), RETE_OK);
    assert_int_equal(c.n_ep, 3);
    assert_string_equal(c.ep[1].host, "::1");
    assert_string_equal(c.ep[2].port, "65535");
    reted_etcd_http_free(&c);
    const char *bad[] = {"", "a", "a:0", "a:65536", ":1", "a:1,", "a:1x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_not_equal(reted_etcd_http_init(&c, bad[i], NULL, 1000, 1024, &e), RETE_OK);
        assert_non_null(strstr(e.msg, "etcd"));
        reted_etcd_http_free(&c);
    }
    char many[512] = "";
    for (int i = 0; i < RETED_ETCD_MAX_ENDPOINTS + 1; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%sh:%d", i ? "," : "", i + 1);
    assert_int_equal(reted_etcd_http_init(&c, many, NULL, 1000, 1024, &e), RETE_ELIMIT);
    reted_etcd_http_free(&c);
}

/* What one POST to a canned server writing `answer` returned; the client
 * keeps at most max_response bytes of an answer. */
typedef struct posted {
    rete_rc rc;
    int status;
    char *out; /* the caller's to free */
    size_t len;
    rete_error e;
} posted;

static posted post_once(const char *answer, size_t max_response)
{
    canned s;
    char ep[64];
    canned_start(&s, answer, ep);
    reted_etcd_http c;
    posted p = {0};
    assert_int_equal(reted_etcd_http_init(&c, ep, NULL, 5000, max_response, &p.e), RETE_OK);
    p.rc = reted_etcd_http_post(&c, "/v3/kv/range", "{}", 2, &p.status, &p.out, &p.len, &p.e);
    canned_end(&s);
    reted_etcd_http_free(&c);
    return p;
}

static void test_chunked_answer(void **state)
{
    (void)state;
    posted p = post_once("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "5\r\n{\"a\":\r\n3\r\n12}\r\n0\r\n\r\n",
                         1024);
    assert_int_equal(p.rc, RETE_OK);
    assert_int_equal(p.status, 200);
    assert_string_equal(p.out, "{\"a\":12}");
    free(p.out);
}

static void test_answer_over_the_bound(void **state)
{
    (void)state;
    posted p = post_once("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 10);
    assert_int_equal(p.rc, RETE_EIO);
    assert_non_null(strstr(p.e.msg, "bound"));
}

/* The stream's next message, waiting through RETE_EAGAIN. */
static rete_rc next_message(reted_etcd_http *c, const char **msg, size_t *len, rete_error *e)
{
    rete_rc rc;
    while ((rc = reted_etcd_http_stream_next(c, 1000, msg, len, e)) == RETE_EAGAIN)
        ;
    return rc;
}

static void test_watch_stream(void **state)
{
    (void)state;
    canned s;
    char ep[64];
    /* two messages across three chunks, then the end of the stream */
    canned_start(&s,
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "4\r\n{\"a\"\r\n6\r\n:1}\n{\"\r\n6\r\nb\":2}\n\r\n0\r\n\r\n",
                 ep);
    reted_etcd_http c;
    rete_error e = {0};
    assert_int_equal(reted_etcd_http_init(&c, ep, NULL, 5000, 1024, &e), RETE_OK);
    assert_int_equal(reted_etcd_http_stream_open(&c, "/v3/watch", "{}", 2, &e), RETE_OK);
    const char *msg;
    size_t len;
    const char *want[] = {"{\"a\":1}", "{\"b\":2}"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(next_message(&c, &msg, &len, &e), RETE_OK);
        assert_int_equal(len, strlen(want[i]));
        assert_memory_equal(msg, want[i], len);
    }
    assert_int_equal(next_message(&c, &msg, &len, &e), RETE_EIO); /* the stream ended */
    canned_end(&s);
    reted_etcd_http_free(&c);
}

static void test_no_member_answers(void **state)
{
    (void)state;
    /* a port nothing listens on: bind, note it, close */
    canned s;
    char ep[64];
    s.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s.lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s.lfd, (struct sockaddr *)&a, &al), 0);
    snprintf(ep, sizeof ep, "127.0.0.1:%u,127.0.0.1:%u", ntohs(a.sin_port), ntohs(a.sin_port));
    close(s.lfd);
    reted_etcd_http c;
    rete_error e = {0};
    assert_int_equal(reted_etcd_http_init(&c, ep, NULL, 2000, 1024, &e), RETE_OK);
    int status = 0;
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(reted_etcd_http_post(&c, "/x", "{}", 2, &status, &out, &len, &e), RETE_EIO);
    assert_non_null(strstr(e.msg, "connect"));
    reted_etcd_http_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_chunked_answer),
        cmocka_unit_test(test_answer_over_the_bound),
        cmocka_unit_test(test_watch_stream),
        cmocka_unit_test(test_no_member_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
