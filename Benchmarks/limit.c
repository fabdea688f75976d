/*
 * The kernel's own limit for programming a VXLAN node, for comparison with
 * vxlan-agent: every message built first, sent through libmnl in batches of
 * --batch bytes (default 16 KiB) with NLM_F_ACK on the last message of each
 * batch only, NETLINK_CAP_ACK + NETLINK_EXT_ACK, buffers raised.
 *
 *   limit apply N [--layout nexthop|classic] [--batch BYTES]
 *   limit dump
 *   limit routes N
 *
 * routes: a stopwatch for the benchmarks, not a limit. Subscribes to IPv4 route
 * events (64 MiB receive buffer, forced: this socket only, so a burst of
 * 50,000 routes loses nothing), prints "ready", then the wall-clock time
 * (seconds since the epoch) at which the kernel has announced routes of
 * protocol 152 to N distinct /24s of 10.0.0.0/8 (a deletion takes one away),
 * and exits; 3 if events were lost or none came for 10 minutes. In C, so
 * that the time is the kernel's last event and not a slow reader catching up
 * with 10,000 of them.
 *
 * Works in the current network namespace (the harness makes a fresh one).
 * Peers are the same as Benchmarks/gen.py's inventory: peer k (1..N) has
 * public IP 198.19.k/256.k%256, subnet 10.k/256.k%256.0/24, VTEP MAC
 * 0e:01:c6:13:k/256:k%256 (the agent's derivation), nexthop id 1985478656 + k
 * (the agent's: 0x76580000 + subnet index in 10.0.0.0/8). Prints one JSON line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <net/if.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/nexthop.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>
#include <time.h>

#define PROTO 152
#define NHID_BASE 1985478656u

static struct mnl_socket *nl;
static unsigned int seq;
static int errors;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) { perror(what); exit(1); }

/* A growing buffer of messages. */
struct msgs { char *buf; size_t len, cap; size_t *offs; size_t n, ncap; };

static struct nlmsghdr *msg_new(struct msgs *m, uint16_t type, uint16_t flags) {
    if (m->cap - m->len < 1024) {
        m->cap = m->cap ? m->cap * 2 : 1 << 20;
        m->buf = realloc(m->buf, m->cap);
    }
    if (m->n == m->ncap) {
        m->ncap = m->ncap ? m->ncap * 2 : 1024;
        m->offs = realloc(m->offs, m->ncap * sizeof(size_t));
    }
    memset(m->buf + m->len, 0, 1024);
    m->offs[m->n++] = m->len;
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(m->buf + m->len);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | flags;
    return nlh;
}

static void msg_end(struct msgs *m, struct nlmsghdr *nlh) { m->len += nlh->nlmsg_len; }

/* Sends messages [from, to) in batches with one ACK each; counts errors. */
static void send_all(struct msgs *m, size_t from, size_t to, size_t batch) {
    static char rbuf[1 << 16];
    size_t i = from;
    while (i < to) {
        size_t start = m->offs[i], j = i;
        while (j + 1 < to && (j + 2 < m->n ? m->offs[j + 2] : m->len) - start <= batch) j++;
        for (size_t k = i; k <= j; k++) {
            struct nlmsghdr *h = (struct nlmsghdr *)(m->buf + m->offs[k]);
            h->nlmsg_seq = ++seq;
            if (k == j) h->nlmsg_flags |= NLM_F_ACK;
        }
        size_t end = j + 1 < m->n ? m->offs[j + 1] : m->len;
        if (mnl_socket_sendto(nl, m->buf + start, end - start) < 0) die("sendto");
        unsigned int last = seq;
        for (int done = 0; !done;) {
            int r = mnl_socket_recvfrom(nl, rbuf, sizeof rbuf);
            if (r < 0) die("recvfrom");
            struct nlmsghdr *h = (struct nlmsghdr *)rbuf;
            while (mnl_nlmsg_ok(h, r)) {
                if (h->nlmsg_type == NLMSG_ERROR) {
                    struct nlmsgerr *e = mnl_nlmsg_get_payload(h);
                    if (e->error) errors++;
                    if (e->msg.nlmsg_seq == last) done = 1;
                }
                h = mnl_nlmsg_next(h, &r);
            }
        }
        i = j + 1;
    }
}

static void open_socket(void) {
    nl = mnl_socket_open(NETLINK_ROUTE);
    if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) die("netlink");
    int on = 1, size = 32 << 20;
    mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, &on, sizeof on);
    mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, &on, sizeof on);
    setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
    seq = time(NULL);
}

static void peer(unsigned k, uint32_t *pub, uint32_t *gw, uint8_t mac[6]) {
    *pub = htonl((198u << 24) | (19u << 16) | ((k / 256) << 8) | (k % 256));
    *gw = htonl((10u << 24) | ((k / 256) << 16) | ((k % 256) << 8));
    uint8_t m[6] = {0x0e, 0x01, 198, 19, k / 256, k % 256};
    memcpy(mac, m, 6);
}

static int apply(unsigned n, int nexthops, size_t batch) {
    struct msgs m = {0};
    unsigned ifindex_ul = if_nametoindex("eth0");
    if (!ifindex_ul) die("eth0");
    uint32_t local = htonl((198u << 24) | (18u << 16) | 1);
    double t0 = now();
    /* The device, its address, link up: three requests. */
    struct nlmsghdr *h = msg_new(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof *ifi);
    ifi->ifi_family = AF_UNSPEC;
    mnl_attr_put_u32(h, IFLA_MTU, 1450);
    uint8_t own[6] = {0x0e, 0x01, 198, 18, 0, 1};
    mnl_attr_put(h, IFLA_ADDRESS, 6, own);
    mnl_attr_put_strz(h, IFLA_IFNAME, "flannel.1");
    struct nlattr *li = mnl_attr_nest_start(h, IFLA_LINKINFO);
    mnl_attr_put(h, IFLA_INFO_KIND, 5, "vxlan");
    struct nlattr *data = mnl_attr_nest_start(h, IFLA_INFO_DATA);
    mnl_attr_put_u32(h, IFLA_VXLAN_LINK, ifindex_ul);
    mnl_attr_put_u32(h, IFLA_VXLAN_ID, 1);
    mnl_attr_put(h, IFLA_VXLAN_LOCAL, 4, &local);
    mnl_attr_put_u8(h, IFLA_VXLAN_LEARNING, 0);
    mnl_attr_put_u16(h, IFLA_VXLAN_PORT, htons(8472));
    mnl_attr_nest_end(h, data);
    mnl_attr_nest_end(h, li);
    msg_end(&m, h);
    send_all(&m, 0, 1, batch);
    unsigned dev = if_nametoindex("flannel.1");
    if (!dev) die("flannel.1");
    h = msg_new(&m, RTM_NEWLINK, 0);
    ifi = mnl_nlmsg_put_extra_header(h, sizeof *ifi);
    ifi->ifi_index = dev; ifi->ifi_flags = IFF_UP; ifi->ifi_change = IFF_UP;
    msg_end(&m, h);
    h = msg_new(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(h, sizeof *ifa);
    ifa->ifa_family = AF_INET; ifa->ifa_prefixlen = 32; ifa->ifa_index = dev;
    uint32_t vtep = htonl(10u << 24);
    mnl_attr_put(h, IFA_LOCAL, 4, &vtep);
    mnl_attr_put(h, IFA_ADDRESS, 4, &vtep);
    msg_end(&m, h);
    size_t phase[5];
    phase[0] = m.n;
    for (unsigned k = 1; k <= n; k++) {       /* fdb */
        uint32_t pub, gw; uint8_t mac[6]; peer(k, &pub, &gw, mac);
        h = msg_new(&m, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
        struct ndmsg *nd = mnl_nlmsg_put_extra_header(h, sizeof *nd);
        nd->ndm_family = AF_BRIDGE; nd->ndm_ifindex = dev; nd->ndm_state = NUD_NOARP | NUD_PERMANENT; nd->ndm_flags = NTF_SELF;
        mnl_attr_put(h, NDA_LLADDR, 6, mac);
        mnl_attr_put(h, NDA_DST, 4, &pub);
        msg_end(&m, h);
    }
    phase[1] = m.n;
    for (unsigned k = 1; k <= n; k++) {       /* neigh */
        uint32_t pub, gw; uint8_t mac[6]; peer(k, &pub, &gw, mac);
        h = msg_new(&m, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
        struct ndmsg *nd = mnl_nlmsg_put_extra_header(h, sizeof *nd);
        nd->ndm_family = AF_INET; nd->ndm_ifindex = dev; nd->ndm_state = NUD_PERMANENT;
        mnl_attr_put(h, NDA_DST, 4, &gw);
        mnl_attr_put(h, NDA_LLADDR, 6, mac);
        msg_end(&m, h);
    }
    phase[2] = m.n;
    for (unsigned k = 1; nexthops && k <= n; k++) { /* nexthop */
        uint32_t pub, gw; uint8_t mac[6]; peer(k, &pub, &gw, mac);
        h = msg_new(&m, RTM_NEWNEXTHOP, NLM_F_CREATE | NLM_F_REPLACE);
        struct nhmsg *nh = mnl_nlmsg_put_extra_header(h, sizeof *nh);
        nh->nh_family = AF_INET; nh->nh_protocol = PROTO; nh->nh_flags = RTNH_F_ONLINK;
        mnl_attr_put_u32(h, NHA_ID, NHID_BASE + k);
        mnl_attr_put(h, NHA_GATEWAY, 4, &gw);
        mnl_attr_put_u32(h, NHA_OIF, dev);
        msg_end(&m, h);
    }
    phase[3] = m.n;
    for (unsigned k = 1; k <= n; k++) {       /* route */
        uint32_t pub, gw; uint8_t mac[6]; peer(k, &pub, &gw, mac);
        h = msg_new(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
        struct rtmsg *rt = mnl_nlmsg_put_extra_header(h, sizeof *rt);
        rt->rtm_family = AF_INET; rt->rtm_dst_len = 24; rt->rtm_table = RT_TABLE_MAIN;
        rt->rtm_protocol = PROTO; rt->rtm_scope = RT_SCOPE_UNIVERSE; rt->rtm_type = RTN_UNICAST;
        mnl_attr_put(h, RTA_DST, 4, &gw);
        if (nexthops) {
            mnl_attr_put_u32(h, RTA_NH_ID, NHID_BASE + k);
        } else {
            rt->rtm_flags = RTNH_F_ONLINK;
            mnl_attr_put(h, RTA_GATEWAY, 4, &gw);
            mnl_attr_put_u32(h, RTA_OIF, dev);
        }
        msg_end(&m, h);
    }
    phase[4] = m.n;
    double tb = now();
    send_all(&m, 1, phase[0], batch);
    double t[4];
    for (int p = 0; p < 4; p++) {
        double s = now();
        send_all(&m, phase[p], phase[p + 1], batch);
        t[p] = now() - s;
    }
    double total = now() - t0;
    printf("{\"op\":\"apply\",\"n\":%u,\"layout\":\"%s\",\"seconds\":%.4f,\"build_seconds\":%.4f,"
           "\"phases\":{\"fdb\":%.4f,\"neigh\":%.4f,\"nexthop\":%.4f,\"route\":%.4f},\"messages\":%zu,\"errors\":%d}\n",
           n, nexthops ? "nexthop" : "classic", total, tb - t0, t[0], t[1], t[2], t[3], m.n, errors);
    return errors ? 1 : 0;
}

static unsigned dev_index;
static long counts[6];

static long dump(int kind, uint16_t type, int family) {
    static char buf[1 << 17];
    char req[256] = {0};
    struct nlmsghdr *h = mnl_nlmsg_put_header(req);
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    h->nlmsg_seq = ++seq;
    size_t hdr = type == RTM_GETNEXTHOP ? sizeof(struct nhmsg) : type == RTM_GETLINK ? sizeof(struct ifinfomsg)
               : type == RTM_GETADDR ? sizeof(struct ifaddrmsg) : type == RTM_GETNEIGH ? sizeof(struct ndmsg) : sizeof(struct rtmsg);
    struct rtgenmsg *g = mnl_nlmsg_put_extra_header(h, hdr);
    g->rtgen_family = family;
    if (type == RTM_GETNEIGH && family == AF_INET) mnl_attr_put_u32(h, NDA_IFINDEX, dev_index);
    if (mnl_socket_sendto(nl, req, h->nlmsg_len) < 0) die("sendto");
    long count = 0;
    for (;;) {
        int r = mnl_socket_recvfrom(nl, buf, sizeof buf);
        if (r < 0) die("recvfrom");
        struct nlmsghdr *m = (struct nlmsghdr *)buf;
        while (mnl_nlmsg_ok(m, r)) {
            if (m->nlmsg_type == NLMSG_DONE || m->nlmsg_type == NLMSG_ERROR) return counts[kind] = count;
            /* Filter as the agent does: on flannel.1, or of our protocol. */
            if (type == RTM_GETNEIGH) {
                struct ndmsg *nd = mnl_nlmsg_get_payload(m);
                if ((unsigned)nd->ndm_ifindex == dev_index) count++;
            } else if (type == RTM_GETNEXTHOP) {
                struct nhmsg *nh = mnl_nlmsg_get_payload(m);
                if (nh->nh_protocol == PROTO) count++;
            } else if (type == RTM_GETROUTE) {
                struct rtmsg *rt = mnl_nlmsg_get_payload(m);
                if (rt->rtm_protocol == PROTO && rt->rtm_table == RT_TABLE_MAIN) count++;
            } else {
                count++;
            }
            m = mnl_nlmsg_next(m, &r);
        }
    }
}

static int dump_all(void) {
    dev_index = if_nametoindex("flannel.1");
    double t0 = now();
    dump(0, RTM_GETLINK, AF_UNSPEC);
    dump(1, RTM_GETADDR, AF_INET);
    dump(2, RTM_GETNEIGH, AF_INET);
    dump(3, RTM_GETNEIGH, AF_BRIDGE);
    dump(4, RTM_GETNEXTHOP, AF_UNSPEC);
    dump(5, RTM_GETROUTE, AF_INET);
    printf("{\"op\":\"dump\",\"seconds\":%.4f,\"neigh\":%ld,\"fdb\":%ld,\"nexthops\":%ld,\"routes\":%ld}\n",
           now() - t0, counts[2], counts[3], counts[4], counts[5]);
    return 0;
}

static int routes(long want) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) die("socket");
    int size = 64 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0) die("SO_RCVBUFFORCE");
    /* Never outlive a harness that died without killing us (10 minutes without an event). */
    struct timeval quiet = { .tv_sec = 600 };
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &quiet, sizeof(quiet)) < 0) die("SO_RCVTIMEO");
    struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = RTMGRP_IPV4_ROUTE };
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("bind");
    static unsigned char seen[1 << 16];
    static char buf[1 << 20];
    long count = 0;
    printf("ready\n");
    fflush(stdout);
    while (count < want) {
        ssize_t len = recv(fd, buf, sizeof(buf), 0);
        if (len < 0) {
            if (errno == EINTR) continue;
            printf("lost: %s\n", strerror(errno));
            return 3;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type != RTM_NEWROUTE && h->nlmsg_type != RTM_DELROUTE) continue;
            struct rtmsg *rt = NLMSG_DATA(h);
            if (rt->rtm_protocol != PROTO || rt->rtm_family != AF_INET || rt->rtm_dst_len != 24) continue;
            int alen = RTM_PAYLOAD(h);
            for (struct rtattr *a = RTM_RTA(rt); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
                if (a->rta_type != RTA_DST || RTA_PAYLOAD(a) != 4) continue;
                uint32_t dst = ntohl(*(uint32_t *)RTA_DATA(a));
                if (dst >> 24 != 10) break;
                unsigned i = (dst >> 8) & 0xffff;
                int add = h->nlmsg_type == RTM_NEWROUTE;
                if (add && !seen[i]) { seen[i] = 1; count++; }
                else if (!add && seen[i]) { seen[i] = 0; count--; }
                break;
            }
        }
        if (count >= want) {
            printf("%ld.%09ld\n", (long)ts.tv_sec, ts.tv_nsec);
            return 0;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: limit apply N [--layout nexthop|classic] [--batch BYTES] | limit dump | limit routes N\n"); return 2; }
    if (!strcmp(argv[1], "routes") && argc == 3) return routes(atol(argv[2]));
    open_socket();
    if (!strcmp(argv[1], "dump")) return dump_all();
    if (strcmp(argv[1], "apply") || argc < 3) { fprintf(stderr, "limit: unknown command\n"); return 2; }
    unsigned n = atoi(argv[2]);
    int nexthops = 1;
    /* 16 KiB, as the agent sends: measured 2026-11-30 at 10,000 peers, 64 KiB
     * and 256 KiB batches made the FDB phase 2-2.5x slower (75-125 ms against
     * 34-57 ms: each FDB remote allocates a per-CPU dst_cache, and a long batch
     * runs the per-CPU allocator dry); 8 and 16 KiB are alike. */
    size_t batch = 16384;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--layout")) nexthops = strcmp(argv[i + 1], "classic") != 0;
        else if (!strcmp(argv[i], "--batch")) batch = strtoul(argv[i + 1], NULL, 10);
    }
    return apply(n, nexthops, batch);
}
