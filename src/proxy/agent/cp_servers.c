/* The replicas of reted a proxy may talk to (--control-plane
 * HOST:PORT[,HOST:PORT...]): each entry an IP literal or a name resolved
 * once at start-up, before the loop runs (every address it has is a
 * replica), at most CP_MAX_SERVERS in all. Every exchange goes to the
 * current replica; a failed one (connect refused or timed out, a stream
 * closed) moves to the next, so the proxy re-homes without an operator. The
 * first is picked at random: proxies started together spread over the
 * replicas instead of all homing on the first of the list. */
#include "cp_state.h"
#include "log.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static bool add(rete_cp *cp, const char *ip, uint16_t port, const char *entry, bool named, rete_error *err)
{
    for (size_t i = 0; i < cp->n_servers; i++)
        if (cp->servers[i].port == port && strcmp(cp->servers[i].ip, ip) == 0)
            return true; /* the same replica named twice */
    if (cp->n_servers == CP_MAX_SERVERS) {
        rete_error_set(err, RETE_EINVAL, "--control-plane: more than %d replica addresses", CP_MAX_SERVERS);
        return false;
    }
    cp_server *s = &cp->servers[cp->n_servers++];
    snprintf(s->ip, sizeof(s->ip), "%s", ip);
    s->port = port;
    if (named)
        snprintf(s->name, sizeof(s->name), "%s (%s)", entry, ip);
    else
        snprintf(s->name, sizeof(s->name), "%s", entry);
    return true;
}

/* One HOST:PORT entry ([V6]:PORT for an IPv6 literal). */
static bool parse_entry(rete_cp *cp, const char *entry, rete_error *err)
{
    char host[256];
    const char *colon = strrchr(entry, ':');
    char *end = NULL;
    unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
    size_t hl = colon ? (size_t)(colon - entry) : 0;
    if (!colon || hl == 0 || hl >= sizeof(host) || !end || *end || port == 0 || port > 65535) {
        rete_error_set(err, RETE_EINVAL, "--control-plane: '%s' is not HOST:PORT", entry);
        return false;
    }
    memcpy(host, entry, hl);
    host[hl] = '\0';
    if (host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    unsigned char bin[16];
    if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1)
        return add(cp, host, (uint16_t)port, entry, false, err);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        rete_error_set(err, RETE_EINVAL, "--control-plane: cannot resolve %s: %s", host, gai_strerror(rc));
        return false;
    }
    bool ok = true;
    for (struct addrinfo *a = res; a && ok; a = a->ai_next) {
        char ip[64];
        const void *src = a->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                                  : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
        if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) && inet_ntop(a->ai_family, src, ip, sizeof(ip)))
            ok = add(cp, ip, (uint16_t)port, entry, true, err);
    }
    freeaddrinfo(res);
    return ok;
}

bool cp_servers_parse(rete_cp *cp, const char *list, rete_error *err)
{
    cp->n_servers = 0;
    const char *p = list;
    while (p && *p) {
        size_t n = strcspn(p, ",");
        char entry[300];
        if (n == 0 || n >= sizeof(entry)) {
            rete_error_set(err, RETE_EINVAL, "--control-plane: empty or overlong entry in '%s'", list);
            return false;
        }
        memcpy(entry, p, n);
        entry[n] = '\0';
        if (!parse_entry(cp, entry, err))
            return false;
        p += n;
        if (*p == ',')
            p++;
    }
    if (!cp->n_servers) {
        rete_error_set(err, RETE_EINVAL, "--control-plane: no replica address");
        return false;
    }
    cp->cur = (size_t)rand() % cp->n_servers;
    return true;
}

const cp_server *cp_server_cur(const rete_cp *cp)
{
    return &cp->servers[cp->cur];
}

void cp_server_failed(rete_cp *cp)
{
    if (cp->n_servers < 2)
        return;
    cp->cur = (cp->cur + 1) % cp->n_servers;
    rete_info("control plane: trying replica %s next", cp->servers[cp->cur].name);
}
