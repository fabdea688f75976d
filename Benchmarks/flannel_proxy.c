/*
 * A UDP tunnel built the way flanneld's udp backend moves packets, for the
 * benchmark's baseline (flanneld itself is not on this machine): one thread,
 * poll() over the TUN device and the UDP socket, one read() and one sendto()
 * per packet, one recv() and one write() per datagram, an MTU-sized buffer, no
 * offloads, the inner TTL decremented on each side. It knows one peer.
 *
 *   flannel_proxy TUN LOCAL_IP PORT PEER_SUBNET/LEN PEER_IP
 *
 * It creates TUN (IFF_TUN | IFF_NO_PI, as flanneld opens flannel%d) and runs
 * until killed; the caller gives the device its address, MTU and route.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int ttl_down(uint8_t *ip) {
    if (ip[8] <= 1) return 0;
    ip[8]--;
    /* RFC 1624: the TTL is the high byte of its 16-bit word. */
    uint32_t sum = (uint16_t)~((ip[10] << 8) | ip[11]);
    sum += (uint16_t)~((ip[8] + 1) << 8) + (uint16_t)(ip[8] << 8);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    uint16_t check = ~sum;
    ip[10] = check >> 8;
    ip[11] = check & 0xff;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s TUN LOCAL_IP PORT PEER_SUBNET/LEN PEER_IP\n", argv[0]);
        return 2;
    }
    int tun = open("/dev/net/tun", O_RDWR);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (tun < 0 || ioctl(tun, TUNSETIFF, &ifr) < 0) { perror("tun"); return 1; }
    fcntl(tun, F_SETFL, O_NONBLOCK);
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in local = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
    inet_pton(AF_INET, argv[2], &local.sin_addr);
    if (bind(sock, (struct sockaddr *)&local, sizeof(local)) < 0) { perror("bind"); return 1; }
    char subnet[64];
    strncpy(subnet, argv[4], sizeof(subnet) - 1);
    subnet[sizeof(subnet) - 1] = 0;
    char *slash = strchr(subnet, '/');
    if (!slash) return 2;
    *slash = 0;
    uint32_t net, mask = htonl(~0u << (32 - atoi(slash + 1)));
    inet_pton(AF_INET, subnet, &net);
    struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
    inet_pton(AF_INET, argv[5], &peer.sin_addr);
    fprintf(stderr, "flannel_proxy: %s, %s:%s <-> %s\n", argv[1], argv[2], argv[3], argv[5]);

    static uint8_t buf[1500];
    struct pollfd fds[2] = { { .fd = tun, .events = POLLIN }, { .fd = sock, .events = POLLIN } };
    for (;;) {
        if (poll(fds, 2, -1) < 0 && errno != EINTR) return 1;
        int active;
        do {
            active = 0;
            ssize_t n = read(tun, buf, sizeof(buf));
            if (n >= 20) {
                active = 1;
                uint32_t dst;
                memcpy(&dst, buf + 16, 4);
                if ((dst & mask) == net && ttl_down(buf)) sendto(sock, buf, n, 0, (struct sockaddr *)&peer, sizeof(peer));
            }
            n = recv(sock, buf, sizeof(buf), MSG_DONTWAIT);
            if (n >= 20) {
                active = 1;
                if (ttl_down(buf)) (void)!write(tun, buf, n);
            }
        } while (active);
    }
}
