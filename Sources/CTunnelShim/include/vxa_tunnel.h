#ifndef VXLAN_AGENT_TUNNEL_H
#define VXLAN_AGENT_TUNNEL_H
// The UDP backend's system calls that Swift cannot spell: TUN ioctls on a
// struct ifreq, and sendmsg/recvmsg with control messages (UDP_SEGMENT,
// UDP_GRO), whose layout is made by the CMSG_* macros. Each function does one
// system call (or a fixed sequence of them) and returns -errno on failure.
#include <stdint.h>
#include <stddef.h>

/// virtio_net_hdr, as a TUN device with IFF_VNET_HDR puts it before every packet.
struct vxa_vnet_hdr {
    uint8_t flags;        // VIRTIO_NET_HDR_F_NEEDS_CSUM (1), F_DATA_VALID (2)
    uint8_t gso_type;     // NONE (0), TCPV4 (1), UDP (3), TCPV6 (4), ECN (0x80)
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
};

/// Opens /dev/net/tun and attaches to (or creates) the TUN device `name` with
/// IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR; `offload`: TUNSETOFFLOAD
/// flags (TUN_F_CSUM | TUN_F_TSO4 ...), 0 for none. Returns the queue's fd, or -errno.
int vxa_tun_open(const char *name, unsigned int offload);

/// TUNSETPERSIST on an fd from vxa_tun_open. Returns 0 or -errno.
int vxa_tun_set_persist(int fd, int persist);

/// TUNSETOFFLOAD's flag values, for Swift.
unsigned int vxa_tun_f_csum(void);
unsigned int vxa_tun_f_tso4(void);
unsigned int vxa_tun_f_tso6(void);
unsigned int vxa_tun_f_tso_ecn(void);

/// A UDP socket bound to addr:port (network byte order), with SO_REUSEPORT (one
/// per queue), SO_RCVBUFFORCE/SO_SNDBUFFORCE of `buffer` bytes (falling back to
/// SO_RCVBUF/SO_SNDBUF without CAP_NET_ADMIN), UDP_GRO on when `gro`. Returns the fd or -errno.
int vxa_udp_open(uint32_t addr, uint16_t port, int buffer, int gro);

/// Sends `len` bytes to addr:port as one datagram, or as datagrams of `segment`
/// bytes each (the last may be shorter) with UDP_SEGMENT when segment > 0 and
/// segment < len. Returns the bytes sent or -errno.
long vxa_udp_send(int fd, const void *buf, size_t len, uint32_t addr, uint16_t port, uint16_t segment);

/// Receives into buf: returns the bytes read (several datagrams of *segment bytes
/// each, the last possibly shorter, when the kernel coalesced them with UDP_GRO;
/// *segment is then the datagram size, else the length), the sender in *addr
/// and *port (network byte order), or -errno. Blocks at most `timeout_ms`
/// (poll) when nothing is queued: -EAGAIN then.
long vxa_udp_recv(int fd, void *buf, size_t cap, uint32_t *addr, uint16_t *port, uint16_t *segment, int timeout_ms);

/// read(2) from a TUN queue, waiting at most timeout_ms for a packet: bytes
/// read, or -errno (-EAGAIN on timeout).
long vxa_tun_read(int fd, void *buf, size_t cap, int timeout_ms);

/// write(2) to a TUN queue. Bytes written or -errno.
long vxa_tun_write(int fd, const void *buf, size_t len);

/// writev(2) of a header and a body (a virtio header before a packet). Bytes or -errno.
long vxa_tun_write2(int fd, const void *head, size_t head_len, const void *body, size_t body_len);

#endif
