#define _GNU_SOURCE
#include "vxa_tunnel.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/if_tun.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

int vxa_tun_open(const char *name, unsigned int offload) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    if (offload && ioctl(fd, TUNSETOFFLOAD, (unsigned long)offload) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

int vxa_tun_set_persist(int fd, int persist) {
    return ioctl(fd, TUNSETPERSIST, (unsigned long)persist) < 0 ? -errno : 0;
}

unsigned int vxa_tun_f_csum(void) { return TUN_F_CSUM; }
unsigned int vxa_tun_f_tso4(void) { return TUN_F_TSO4; }
unsigned int vxa_tun_f_tso6(void) { return TUN_F_TSO6; }
unsigned int vxa_tun_f_tso_ecn(void) { return TUN_F_TSO_ECN; }

int vxa_udp_open(uint32_t addr, uint16_t port, int buffer, int gro) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (buffer > 0) {
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof(buffer)) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof(buffer));
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer, sizeof(buffer)) < 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof(buffer));
    }
    if (gro) setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one));
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = addr;
    sin.sin_port = port;
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

long vxa_udp_send(int fd, const void *buf, size_t len, uint32_t addr, uint16_t port, uint16_t segment) {
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = addr;
    sin.sin_port = port;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = { .msg_name = &sin, .msg_namelen = sizeof(sin), .msg_iov = &iov, .msg_iovlen = 1 };
    if (segment > 0 && segment < len) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(cm), &segment, sizeof(segment));
    }
    ssize_t n;
    do { n = sendmsg(fd, &msg, 0); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

long vxa_udp_recv(int fd, void *buf, size_t cap, uint32_t *addr, uint16_t *port, uint16_t *segment, int timeout_ms) {
    struct sockaddr_in sin;
    struct iovec iov = { .iov_base = buf, .iov_len = cap };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    for (;;) {
        struct msghdr msg = { .msg_name = &sin, .msg_namelen = sizeof(sin), .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = control.buf, .msg_controllen = sizeof(control.buf) };
        ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
        if (n >= 0) {
            *addr = sin.sin_addr.s_addr;
            *port = sin.sin_port;
            *segment = (uint16_t)(n > 65535 ? 65535 : n);
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
                if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
                    int size;
                    memcpy(&size, CMSG_DATA(cm), sizeof(size));
                    if (size > 0 && size < n) *segment = (uint16_t)size;
                }
            }
            return n;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, timeout_ms);
        if (r == 0) return -EAGAIN;
        if (r < 0 && errno != EINTR) return -errno;
    }
}

long vxa_tun_read(int fd, void *buf, size_t cap, int timeout_ms) {
    for (;;) {
        ssize_t n = read(fd, buf, cap);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, timeout_ms);
        if (r == 0) return -EAGAIN;
        if (r < 0 && errno != EINTR) return -errno;
    }
}

long vxa_tun_write(int fd, const void *buf, size_t len) {
    ssize_t n;
    do { n = write(fd, buf, len); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

long vxa_tun_write2(int fd, const void *head, size_t head_len, const void *body, size_t body_len) {
    struct iovec iov[2] = { { (void *)head, head_len }, { (void *)body, body_len } };
    ssize_t n;
    do { n = writev(fd, iov, 2); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}
