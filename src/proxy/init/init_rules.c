/* The rule text of rete-proxy init, for nft and for iptables-restore: built
 * from validated options, no I/O (init.h). The order of the rules is the
 * contract, the same in both backends:
 *
 *   outbound (nat output hook)
 *     1. the proxy's own sockets (UID, GID) are left alone: its upstream
 *        connections must not come back to it;
 *     2. DNS to port 53 goes to the sidecar's DNS port, when one is given;
 *     3. anything but TCP, loopback destinations, excluded CIDRs and ports
 *        are left alone;
 *     4. the rest goes to the outbound listener.
 *   inbound (nat prerouting hook)
 *     1. the mesh port, the admin port and excluded ports are left alone;
 *     2. TCP to the workload's addresses (or any local address) goes to the
 *        inbound listener.
 * `redirect` (REDIRECT) sends locally generated packets to 127.0.0.1 / ::1
 * and arriving ones to the address of the interface they came in on. */
#include "init.h"

#include "vec.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void addf(rete_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(rete_buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) {
        /* longer than a rule line: format again into a buffer of its size */
        rete_buf_reserve(b, (size_t)n, 256);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t)n;
        return;
    }
    rete_buf_append(b, line, (size_t)n);
}

/* "{ a, b }" or "a" of the entries of `family` in list; empty when none. */
static void cidr_set(rete_buf *b, const rete_init_cidr *list, size_t n, int family)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += list[i].family == family;
    if (!k)
        return;
    if (k > 1)
        rete_buf_append_str(b, "{ ");
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (list[i].family != family)
            continue;
        addf(b, "%s%s", j++ ? ", " : "", list[i].text);
    }
    if (k > 1)
        rete_buf_append_str(b, " }");
}

static size_t count_family(const rete_init_cidr *list, size_t n, int family)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += list[i].family == family;
    return k;
}

static void port_set(rete_buf *b, const uint16_t *ports, size_t n)
{
    if (n > 1)
        rete_buf_append_str(b, "{ ");
    for (size_t i = 0; i < n; i++)
        addf(b, "%s%u", i ? ", " : "", ports[i]);
    if (n > 1)
        rete_buf_append_str(b, " }");
}

/* Append `port` to out[0..n) unless it is there already; the new count. */
static size_t add_port(uint16_t *out, size_t n, uint16_t port)
{
    for (size_t j = 0; j < n; j++)
        if (out[j] == port)
            return n;
    out[n] = port;
    return n + 1;
}

/* The inbound ports never redirected: mesh, admin, stats, then the
 * operator's (at most RETE_INIT_MAX_LIST + 3). */
static size_t inbound_excluded(const rete_init_opts *o, uint16_t *out)
{
    size_t n = 0;
    n = add_port(out, n, o->mesh_port);
    n = add_port(out, n, o->admin_port);
    n = add_port(out, n, o->stats_port);
    for (size_t i = 0; i < o->n_exclude_in_ports; i++)
        n = add_port(out, n, o->exclude_in_ports[i]);
    return n;
}

char *rete_init_nft_script(const rete_init_opts *o)
{
    rete_buf b = {0};
    /* Declaring the table first makes the delete succeed when it is absent:
     * both install and remove are one transaction that never fails on the
     * state it finds. */
    rete_buf_append_str(&b, "table inet rete\ndelete table inet rete\n");
    if (o->remove)
        return rete_buf_take(&b);
    rete_buf_append_str(&b, "table inet rete {\n"
                            "\tchain output {\n"
                            "\t\ttype nat hook output priority -100; policy accept;\n");
    if (!o->ipv6)
        rete_buf_append_str(&b, "\t\tmeta nfproto ipv6 return\n");
    if (o->proxy_uid >= 0)
        addf(&b, "\t\tmeta skuid %ld return\n", o->proxy_uid);
    if (o->proxy_gid >= 0)
        addf(&b, "\t\tmeta skgid %ld return\n", o->proxy_gid);
    if (o->dns_port) {
        addf(&b, "\t\tudp dport 53 redirect to :%u\n", o->dns_port);
        addf(&b, "\t\ttcp dport 53 redirect to :%u\n", o->dns_port);
    }
    rete_buf_append_str(&b, "\t\tmeta l4proto != tcp return\n"
                            "\t\tip daddr 127.0.0.0/8 return\n"
                            "\t\tip6 daddr ::1 return\n");
    if (count_family(o->exclude_cidrs, o->n_exclude_cidrs, AF_INET)) {
        rete_buf_append_str(&b, "\t\tip daddr ");
        cidr_set(&b, o->exclude_cidrs, o->n_exclude_cidrs, AF_INET);
        rete_buf_append_str(&b, " return\n");
    }
    if (count_family(o->exclude_cidrs, o->n_exclude_cidrs, AF_INET6)) {
        rete_buf_append_str(&b, "\t\tip6 daddr ");
        cidr_set(&b, o->exclude_cidrs, o->n_exclude_cidrs, AF_INET6);
        rete_buf_append_str(&b, " return\n");
    }
    if (o->n_exclude_out_ports) {
        rete_buf_append_str(&b, "\t\ttcp dport ");
        port_set(&b, o->exclude_out_ports, o->n_exclude_out_ports);
        rete_buf_append_str(&b, " return\n");
    }
    addf(&b, "\t\tmeta l4proto tcp redirect to :%u\n", o->outbound_port);
    rete_buf_append_str(&b, "\t}\n"
                            "\tchain prerouting {\n"
                            "\t\ttype nat hook prerouting priority -100; policy accept;\n");
    if (!o->ipv6)
        rete_buf_append_str(&b, "\t\tmeta nfproto ipv6 return\n");
    uint16_t ex[RETE_INIT_MAX_LIST + 3];
    size_t nex = inbound_excluded(o, ex);
    rete_buf_append_str(&b, "\t\ttcp dport ");
    port_set(&b, ex, nex);
    rete_buf_append_str(&b, " return\n");
    if (!o->n_addresses) {
        addf(&b, "\t\tfib daddr type local meta l4proto tcp redirect to :%u\n", o->inbound_port);
    } else {
        static const int fams[] = {AF_INET, AF_INET6};
        for (size_t f = 0; f < 2; f++) {
            if (!count_family(o->addresses, o->n_addresses, fams[f]))
                continue;
            rete_buf_append_str(&b, fams[f] == AF_INET ? "\t\tip daddr " : "\t\tip6 daddr ");
            cidr_set(&b, o->addresses, o->n_addresses, fams[f]);
            addf(&b, " meta l4proto tcp redirect to :%u\n", o->inbound_port);
        }
    }
    rete_buf_append_str(&b, "\t}\n}\n");
    return rete_buf_take(&b);
}

char *rete_init_iptables_rules(const rete_init_opts *o, int family)
{
    rete_buf b = {0};
    /* In --noflush mode a chain line creates the chain or empties it: the
     * restore replaces the chains' contents in one commit. */
    rete_buf_append_str(&b, "*nat\n:RETE_OUTPUT - [0:0]\n:RETE_INBOUND - [0:0]\n");
    if (o->proxy_uid >= 0)
        addf(&b, "-A RETE_OUTPUT -m owner --uid-owner %ld -j RETURN\n", o->proxy_uid);
    if (o->proxy_gid >= 0)
        addf(&b, "-A RETE_OUTPUT -m owner --gid-owner %ld -j RETURN\n", o->proxy_gid);
    if (o->dns_port) {
        addf(&b, "-A RETE_OUTPUT -p udp --dport 53 -j REDIRECT --to-ports %u\n", o->dns_port);
        addf(&b, "-A RETE_OUTPUT -p tcp --dport 53 -j REDIRECT --to-ports %u\n", o->dns_port);
    }
    rete_buf_append_str(&b, "-A RETE_OUTPUT ! -p tcp -j RETURN\n");
    addf(&b, "-A RETE_OUTPUT -d %s -j RETURN\n", family == AF_INET ? "127.0.0.0/8" : "::1/128");
    for (size_t i = 0; i < o->n_exclude_cidrs; i++)
        if (o->exclude_cidrs[i].family == family)
            addf(&b, "-A RETE_OUTPUT -d %s -j RETURN\n", o->exclude_cidrs[i].text);
    for (size_t i = 0; i < o->n_exclude_out_ports; i++)
        addf(&b, "-A RETE_OUTPUT -p tcp --dport %u -j RETURN\n", o->exclude_out_ports[i]);
    addf(&b, "-A RETE_OUTPUT -p tcp -j REDIRECT --to-ports %u\n", o->outbound_port);
    uint16_t ex[RETE_INIT_MAX_LIST + 3];
    size_t nex = inbound_excluded(o, ex);
    for (size_t i = 0; i < nex; i++)
        addf(&b, "-A RETE_INBOUND -p tcp --dport %u -j RETURN\n", ex[i]);
    if (!o->n_addresses) {
        addf(&b, "-A RETE_INBOUND -p tcp -m addrtype --dst-type LOCAL -j REDIRECT --to-ports %u\n",
             o->inbound_port);
    } else {
        for (size_t i = 0; i < o->n_addresses; i++)
            if (o->addresses[i].family == family)
                addf(&b, "-A RETE_INBOUND -p tcp -d %s -j REDIRECT --to-ports %u\n", o->addresses[i].text,
                     o->inbound_port);
    }
    rete_buf_append_str(&b, "COMMIT\n");
    return rete_buf_take(&b);
}
