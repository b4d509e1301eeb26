/* rete-proxy init: the rules that make a workload's traffic pass its sidecar
 * (the job of istio-iptables and linkerd-init), installed in the network
 * namespace the command runs in. It runs once before the app, as root (or
 * with CAP_NET_ADMIN), and is not part of the proxy's process: it depends on
 * common only (docs/architecture.md, "Layers"), and rete-proxy's main calls
 * rete_init_main for `rete-proxy init ...`.
 *
 * What the rules do (docs/proxy.md, "Transparent mode"):
 *   outbound  every TCP connection a process of the namespace opens goes to
 *             the outbound listener (127.0.0.1 / ::1, --outbound-port),
 *             except the proxy's own (its UID or GID), loopback destinations,
 *             --exclude-outbound-cidr and --exclude-outbound-port;
 *   inbound   every TCP connection arriving for the workload's addresses
 *             (--address; default: any local address) goes to the inbound
 *             listener (--inbound-port), except the mesh port, the admin
 *             port and --exclude-inbound-port;
 *   DNS       with --dns-port, UDP and TCP to port 53 from anything but the
 *             proxy go to that port on the loopback address.
 *
 * Backends: nftables (the default) owns one table, `inet rete`, replaced in
 * one transaction (`nft -f -`) so a second run changes nothing and
 * `--remove` deletes exactly that table. iptables (iptables, iptables-nft,
 * iptables-legacy) owns the chains RETE_OUTPUT and RETE_INBOUND of the nat
 * table, filled by `*-restore --noflush`, and one jump from OUTPUT and
 * PREROUTING each. The rule text is built here without I/O
 * (rete_init_nft_script, rete_init_iptables_rules) and fed to the tools;
 * nothing links libnftnl. */
#ifndef RETE_PROXY_INIT_H
#define RETE_PROXY_INIT_H

#include "cidr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most entries of each repeatable option (CIDRs, ports, addresses). */
#define RETE_INIT_MAX_LIST 64

typedef enum rete_init_backend {
    RETE_INIT_NFT,
    RETE_INIT_IPTABLES,        /* whatever `iptables` is on the host */
    RETE_INIT_IPTABLES_NFT,    /* iptables-nft */
    RETE_INIT_IPTABLES_LEGACY, /* iptables-legacy */
} rete_init_backend;

/* An address with a prefix length (cidr.h). */
typedef rete_cidr rete_init_cidr;

typedef struct rete_init_opts {
    rete_init_backend backend;
    bool remove;
    bool dry_run;
    bool ipv6;         /* default true; --no-ipv6 leaves IPv6 alone */
    long proxy_uid;    /* -1: none */
    long proxy_gid;    /* -1: none; at least one of the two is required */
    uint16_t outbound_port;
    uint16_t inbound_port;
    uint16_t mesh_port;  /* never redirected inbound */
    uint16_t admin_port; /* never redirected inbound */
    uint16_t stats_port; /* never redirected inbound: Prometheus and probes reach it */
    uint16_t dns_port;   /* 0: DNS is not redirected */
    rete_init_cidr exclude_cidrs[RETE_INIT_MAX_LIST];
    size_t n_exclude_cidrs;
    uint16_t exclude_out_ports[RETE_INIT_MAX_LIST];
    size_t n_exclude_out_ports;
    uint16_t exclude_in_ports[RETE_INIT_MAX_LIST];
    size_t n_exclude_in_ports;
    rete_init_cidr addresses[RETE_INIT_MAX_LIST]; /* host addresses; none: any local */
    size_t n_addresses;
} rete_init_opts;

/* Parse `init`'s arguments (argv[0] is "init") into *o. Returns 0, 1 when
 * --help was printed, or -1 with a message in err naming the option and the
 * value (the caller exits 2). */
int rete_init_parse(rete_init_opts *o, int argc, char **argv, char *err, size_t errlen);

/* The input of `nft -f -` that installs (or, with o->remove, removes) the
 * table `inet rete`. Caller frees. */
char *rete_init_nft_script(const rete_init_opts *o);

/* The input of `iptables-restore --noflush` (family AF_INET) or
 * `ip6tables-restore --noflush` (AF_INET6) that declares and fills the
 * chains RETE_OUTPUT and RETE_INBOUND of the nat table. Caller frees. */
char *rete_init_iptables_rules(const rete_init_opts *o, int family);

/* `rete-proxy init ...`: returns the process's exit code (0 done, 1 a tool
 * failed, 2 bad usage). */
int rete_init_main(int argc, char **argv);

/* Run argv[0] (looked up in PATH) with `input` on its standard input (NULL:
 * none) and wait for it. quiet: its standard output and error go to
 * /dev/null. Returns its exit status, or -1 when it could not be started or
 * was killed (errno-style reason in err). In its own file: the one place
 * init touches processes (init_exec.c). */
int rete_init_run(const char *const *argv, const char *input, bool quiet, char *err, size_t errlen);

#endif
