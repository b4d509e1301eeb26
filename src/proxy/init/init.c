/* rete-proxy init: options, and the two backends driving the tools with the
 * rule text of init_rules.c (init.h says what the rules do). */
#include "init.h"

#include "defaults.h"
#include "error.h"

#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rete-proxy init (--proxy-uid UID | --proxy-gid GID) [options]\n"
            "       rete-proxy init --remove [--backend B]\n"
            "\n"
            "Installs, in the current network namespace, the rules that send the app's TCP\n"
            "connections through its sidecar (docs/proxy.md, \"Transparent mode\").\n"
            "\n"
            "options:\n"
            "      --proxy-uid UID|USER    the proxy's user: its connections are not redirected\n"
            "      --proxy-gid GID|GROUP   the proxy's group: likewise (give one or both)\n"
            "      --backend B             nft (default: table inet rete), iptables,\n"
            "                              iptables-nft or iptables-legacy (chains RETE_*)\n"
            "      --outbound-port P       outbound listener (default " RETE_STR(RETE_PORT_OUTBOUND) ")\n"
            "      --inbound-port P        inbound listener (default " RETE_STR(RETE_PORT_INBOUND) ")\n"
            "      --mesh-port P           never redirected inbound (default " RETE_STR(RETE_PORT_MESH) ")\n"
            "      --admin-port P          never redirected inbound (default " RETE_STR(RETE_PORT_ADMIN) ")\n"
            "      --stats-port P          never redirected inbound (default " RETE_STR(RETE_PORT_STATS) ")\n"
            "      --address IP            a workload address whose inbound TCP is redirected\n"
            "                              (repeatable; default: every local address)\n"
            "      --exclude-outbound-cidr CIDR  destinations left alone (repeatable)\n"
            "      --exclude-outbound-port P     destination ports left alone (repeatable)\n"
            "      --exclude-inbound-port P      app ports served without the sidecar (repeatable)\n"
            "      --dns-port P            redirect DNS (UDP and TCP 53) to this loopback port\n"
            "      --no-ipv6               leave IPv6 traffic alone\n"
            "      --remove                remove what init installs (nothing else)\n"
            "      --dry-run               print the rules instead of installing them\n"
            "  -h, --help                  this text\n"
            "\n"
            "Each repeatable option takes at most %d values. Exit status: 0 done, 1 a tool\n"
            "failed (its name and status on stderr), 2 bad usage.\n",
            RETE_INIT_MAX_LIST);
}

static bool parse_port(const char *s, uint16_t *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 1 || v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* A numeric id, or a name looked up in the user or group database. */
static bool parse_id(const char *s, bool group, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end) {
        if (v < 0 || v > 0x7fffffffL)
            return false;
        *out = v;
        return true;
    }
    if (group) {
        struct group *g = getgrnam(s);
        if (!g)
            return false;
        *out = (long)g->gr_gid;
    } else {
        struct passwd *p = getpwnam(s);
        if (!p)
            return false;
        *out = (long)p->pw_uid;
    }
    return true;
}

int rete_init_parse(rete_init_opts *o, int argc, char **argv, char *err, size_t errlen)
{
    enum {
        O_UID = 256, O_GID, O_BACKEND, O_OUT_PORT, O_IN_PORT, O_MESH_PORT, O_ADMIN_PORT, O_STATS_PORT, O_ADDRESS,
        O_EX_CIDR, O_EX_OUT, O_EX_IN, O_DNS, O_NO_V6, O_REMOVE, O_DRY,
    };
    static const struct option opts[] = {
        {"proxy-uid", required_argument, NULL, O_UID},
        {"proxy-gid", required_argument, NULL, O_GID},
        {"backend", required_argument, NULL, O_BACKEND},
        {"outbound-port", required_argument, NULL, O_OUT_PORT},
        {"inbound-port", required_argument, NULL, O_IN_PORT},
        {"mesh-port", required_argument, NULL, O_MESH_PORT},
        {"admin-port", required_argument, NULL, O_ADMIN_PORT},
        {"stats-port", required_argument, NULL, O_STATS_PORT},
        {"address", required_argument, NULL, O_ADDRESS},
        {"exclude-outbound-cidr", required_argument, NULL, O_EX_CIDR},
        {"exclude-outbound-port", required_argument, NULL, O_EX_OUT},
        {"exclude-inbound-port", required_argument, NULL, O_EX_IN},
        {"dns-port", required_argument, NULL, O_DNS},
        {"no-ipv6", no_argument, NULL, O_NO_V6},
        {"remove", no_argument, NULL, O_REMOVE},
        {"dry-run", no_argument, NULL, O_DRY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (rete_init_opts){
        .backend = RETE_INIT_NFT,
        .ipv6 = true,
        .proxy_uid = -1,
        .proxy_gid = -1,
        .outbound_port = RETE_PORT_OUTBOUND,
        .inbound_port = RETE_PORT_INBOUND,
        .mesh_port = RETE_PORT_MESH,
        .admin_port = RETE_PORT_ADMIN,
        .stats_port = RETE_PORT_STATS,
    };
    optind = 0; /* 0: glibc reinitialises its scan state (a second parse in one process) */
    opterr = 0;
    int c, li = -1;
    while ((c = getopt_long(argc, argv, ":h", opts, &li)) != -1) {
        char name[40]; /* the option as the operator wrote it, for errors */
        snprintf(name, sizeof(name), "--%s", li >= 0 ? opts[li].name : "?");
        li = -1;
        uint16_t *port = NULL;
        switch (c) {
        case O_UID:
        case O_GID:
            if (!parse_id(optarg, c == O_GID, c == O_UID ? &o->proxy_uid : &o->proxy_gid)) {
                rete_errf(err, errlen, "--proxy-%s %s: not a %s", c == O_UID ? "uid" : "gid", optarg,
                          c == O_UID ? "user id or user name" : "group id or group name");
                return -1;
            }
            continue;
        case O_BACKEND:
            if (strcmp(optarg, "nft") == 0)
                o->backend = RETE_INIT_NFT;
            else if (strcmp(optarg, "iptables") == 0)
                o->backend = RETE_INIT_IPTABLES;
            else if (strcmp(optarg, "iptables-nft") == 0)
                o->backend = RETE_INIT_IPTABLES_NFT;
            else if (strcmp(optarg, "iptables-legacy") == 0)
                o->backend = RETE_INIT_IPTABLES_LEGACY;
            else {
                rete_errf(err, errlen, "--backend %s: one of nft, iptables, iptables-nft, iptables-legacy",
                          optarg);
                return -1;
            }
            continue;
        case O_OUT_PORT: port = &o->outbound_port; break;
        case O_IN_PORT: port = &o->inbound_port; break;
        case O_MESH_PORT: port = &o->mesh_port; break;
        case O_ADMIN_PORT: port = &o->admin_port; break;
        case O_STATS_PORT: port = &o->stats_port; break;
        case O_DNS: port = &o->dns_port; break;
        case O_EX_OUT:
        case O_EX_IN: {
            uint16_t *list = c == O_EX_OUT ? o->exclude_out_ports : o->exclude_in_ports;
            size_t *n = c == O_EX_OUT ? &o->n_exclude_out_ports : &o->n_exclude_in_ports;
            if (*n == RETE_INIT_MAX_LIST) {
                rete_errf(err, errlen, "%s: at most %d ports", name, RETE_INIT_MAX_LIST);
                return -1;
            }
            if (!parse_port(optarg, &list[*n])) {
                rete_errf(err, errlen, "%s %s: not a port (1..65535)", name, optarg);
                return -1;
            }
            (*n)++;
            continue;
        }
        case O_ADDRESS:
        case O_EX_CIDR: {
            bool addr = c == O_ADDRESS;
            rete_init_cidr *list = addr ? o->addresses : o->exclude_cidrs;
            size_t *n = addr ? &o->n_addresses : &o->n_exclude_cidrs;
            if (*n == RETE_INIT_MAX_LIST) {
                rete_errf(err, errlen, "%s: at most %d values", name, RETE_INIT_MAX_LIST);
                return -1;
            }
            if (!rete_cidr_parse(optarg, &list[*n]) ||
                (addr && list[*n].prefix != (list[*n].family == AF_INET ? 32u : 128u))) {
                rete_errf(err, errlen, "%s %s: not %s", name, optarg,
                          addr ? "an IPv4 or IPv6 address"
                               : "an IPv4 or IPv6 CIDR (ADDRESS/PREFIX, no bits set past the prefix)");
                return -1;
            }
            (*n)++;
            continue;
        }
        case O_NO_V6: o->ipv6 = false; continue;
        case O_REMOVE: o->remove = true; continue;
        case O_DRY: o->dry_run = true; continue;
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            rete_errf(err, errlen, "%s needs a value", argv[optind - 1]);
            return -1;
        case '?':
        default:
            rete_errf(err, errlen, "unknown option %s (see rete-proxy init --help)", argv[optind - 1]);
            return -1;
        }
        if (!parse_port(optarg, port)) {
            rete_errf(err, errlen, "%s %s: not a port (1..65535)", name, optarg);
            return -1;
        }
    }
    if (optind < argc) {
        rete_errf(err, errlen, "unexpected argument %s", argv[optind]);
        return -1;
    }
    if (!o->remove && o->proxy_uid < 0 && o->proxy_gid < 0) {
        rete_errf(err, errlen, "give --proxy-uid or --proxy-gid: without them the proxy's own "
                               "connections would be sent back to it");
        return -1;
    }
    if (!o->remove && o->outbound_port == o->inbound_port) {
        rete_errf(err, errlen, "--outbound-port and --inbound-port are both %u", o->inbound_port);
        return -1;
    }
    if (!o->ipv6) {
        for (size_t i = 0; i < o->n_addresses; i++)
            if (o->addresses[i].family == AF_INET6) {
                rete_errf(err, errlen, "--address %s with --no-ipv6", o->addresses[i].text);
                return -1;
            }
    }
    return 0;
}

/* ---- nft ---- */

static int nft_apply(const rete_init_opts *o)
{
    char *script = rete_init_nft_script(o);
    if (o->dry_run) {
        fputs(script, stdout);
        free(script);
        return 0;
    }
    static const char *const argv[] = {"nft", "-f", "-", NULL};
    char err[256] = "";
    int rc = rete_init_run(argv, script, false, err, sizeof(err));
    free(script);
    if (rc != 0) {
        if (rc > 0 && !err[0])
            rete_errf(err, sizeof(err), "nft -f - exited with status %d", rc);
        fprintf(stderr, "rete-proxy init: %s %s table inet rete: %s\n", o->remove ? "removing" : "installing",
                o->remove ? "the" : "into", err);
        return 1;
    }
    return 0;
}

/* ---- iptables ---- */

/* The tools of one backend and family. */
typedef struct ipt_tools {
    const char *cmd;     /* iptables, ip6tables-legacy... */
    const char *restore; /* iptables-restore, ip6tables-nft-restore... */
} ipt_tools;

static ipt_tools ipt_tools_for(rete_init_backend b, int family)
{
    bool v6 = family == AF_INET6;
    switch (b) {
    case RETE_INIT_IPTABLES_NFT:
        return v6 ? (ipt_tools){"ip6tables-nft", "ip6tables-nft-restore"}
                  : (ipt_tools){"iptables-nft", "iptables-nft-restore"};
    case RETE_INIT_IPTABLES_LEGACY:
        return v6 ? (ipt_tools){"ip6tables-legacy", "ip6tables-legacy-restore"}
                  : (ipt_tools){"iptables-legacy", "iptables-legacy-restore"};
    case RETE_INIT_IPTABLES:
    case RETE_INIT_NFT:
    default:
        return v6 ? (ipt_tools){"ip6tables", "ip6tables-restore"} : (ipt_tools){"iptables", "iptables-restore"};
    }
}

/* The two jumps init adds: from the nat table's built-in chains to ours. */
static const struct {
    const char *from, *to;
} ipt_jumps[] = {{"OUTPUT", "RETE_OUTPUT"}, {"PREROUTING", "RETE_INBOUND"}};

/* `cmd -w 5 -t nat ARGS...`; quiet. Returns the tool's status or -1. */
static int ipt(const ipt_tools *t, const char *a1, const char *a2, const char *a3, const char *a4,
               char *err, size_t errlen)
{
    const char *argv[] = {t->cmd, "-w", "5", "-t", "nat", a1, a2, a3, a4, NULL};
    return rete_init_run(argv, NULL, true, err, errlen);
}

static int ipt_fail(const ipt_tools *t, const char *what, int rc, const char *err)
{
    if (rc < 0)
        fprintf(stderr, "rete-proxy init: %s: %s\n", what, err);
    else
        fprintf(stderr, "rete-proxy init: %s: %s exited with status %d\n", what, t->cmd, rc);
    return 1;
}

static int ipt_install(const rete_init_opts *o, int family)
{
    ipt_tools t = ipt_tools_for(o->backend, family);
    char *rules = rete_init_iptables_rules(o, family);
    if (o->dry_run) {
        printf("# %s --noflush\n%s", t.restore, rules);
        for (size_t i = 0; i < 2; i++)
            printf("# %s -t nat -A %s -j %s (unless present)\n", t.cmd, ipt_jumps[i].from, ipt_jumps[i].to);
        free(rules);
        return 0;
    }
    char err[256] = "";
    const char *argv[] = {t.restore, "--noflush", "-w", "5", NULL};
    int rc = rete_init_run(argv, rules, false, err, sizeof(err));
    free(rules);
    if (rc != 0) {
        char what[96];
        snprintf(what, sizeof(what), "%s --noflush (chains RETE_OUTPUT, RETE_INBOUND)", t.restore);
        if (rc < 0)
            return ipt_fail(&t, what, rc, err);
        fprintf(stderr, "rete-proxy init: %s exited with status %d\n", what, rc);
        return 1;
    }
    for (size_t i = 0; i < 2; i++) {
        /* -C: 0 present, 1 absent, anything else an error */
        rc = ipt(&t, "-C", ipt_jumps[i].from, "-j", ipt_jumps[i].to, err, sizeof(err));
        if (rc == 1)
            rc = ipt(&t, "-A", ipt_jumps[i].from, "-j", ipt_jumps[i].to, err, sizeof(err));
        if (rc != 0) {
            char what[96];
            snprintf(what, sizeof(what), "jump from %s to %s", ipt_jumps[i].from, ipt_jumps[i].to);
            return ipt_fail(&t, what, rc, err);
        }
    }
    return 0;
}

static int ipt_remove(const rete_init_opts *o, int family)
{
    ipt_tools t = ipt_tools_for(o->backend, family);
    if (o->dry_run) {
        for (size_t i = 0; i < 2; i++)
            printf("%s -t nat -D %s -j %s (while present)\n", t.cmd, ipt_jumps[i].from, ipt_jumps[i].to);
        for (size_t i = 0; i < 2; i++)
            printf("%s -t nat -F %s; %s -t nat -X %s (when present)\n", t.cmd, ipt_jumps[i].to, t.cmd,
                   ipt_jumps[i].to);
        return 0;
    }
    char err[256] = "";
    int rc;
    for (size_t i = 0; i < 2; i++) {
        /* A jump added twice by hand is removed too; bounded all the same. */
        for (int k = 0; k < 16; k++) {
            rc = ipt(&t, "-C", ipt_jumps[i].from, "-j", ipt_jumps[i].to, err, sizeof(err));
            if (rc != 0)
                break;
            rc = ipt(&t, "-D", ipt_jumps[i].from, "-j", ipt_jumps[i].to, err, sizeof(err));
            if (rc != 0) {
                char what[96];
                snprintf(what, sizeof(what), "deleting the jump from %s to %s", ipt_jumps[i].from,
                         ipt_jumps[i].to);
                return ipt_fail(&t, what, rc, err);
            }
        }
    }
    for (size_t i = 0; i < 2; i++) {
        if (ipt(&t, "-n", "-L", ipt_jumps[i].to, NULL, err, sizeof(err)) != 0)
            continue; /* not there: nothing to remove */
        rc = ipt(&t, "-F", ipt_jumps[i].to, NULL, NULL, err, sizeof(err));
        if (rc == 0)
            rc = ipt(&t, "-X", ipt_jumps[i].to, NULL, NULL, err, sizeof(err));
        if (rc != 0) {
            char what[96];
            snprintf(what, sizeof(what), "deleting chain %s", ipt_jumps[i].to);
            return ipt_fail(&t, what, rc, err);
        }
    }
    return 0;
}

int rete_init_main(int argc, char **argv)
{
    rete_init_opts o;
    char err[512];
    int prc = rete_init_parse(&o, argc, argv, err, sizeof(err));
    if (prc == 1)
        return 0;
    if (prc < 0) {
        fprintf(stderr, "rete-proxy init: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (o.backend == RETE_INIT_NFT)
        return nft_apply(&o);
    static const int fams[] = {AF_INET, AF_INET6};
    for (size_t f = 0; f < 2; f++) {
        if (fams[f] == AF_INET6 && !o.ipv6)
            break;
        int rc = o.remove ? ipt_remove(&o, fams[f]) : ipt_install(&o, fams[f]);
        if (rc != 0)
            return rc;
    }
    return 0;
}
