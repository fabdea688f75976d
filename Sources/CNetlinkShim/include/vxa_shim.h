#ifndef VXLAN_AGENT_SHIM_H
#define VXLAN_AGENT_SHIM_H
// What Swift cannot take from libmnl directly: attribute parsing needs a C
// callback, and the NLMSG_ERROR payload (with extended ACK) is laid out by
// macros. Each function here is small and does one thing.
#include <stdint.h>
#include <stddef.h>

struct nlmsghdr;
struct nlattr;

/// Fills tb[0...max] with the attributes of the message after `offset` bytes of
/// family header; unknown types above max are ignored. Returns 0, or -1 if the
/// attribute stream is malformed.
int vxa_parse_attrs(const struct nlmsghdr *nlh, unsigned int offset,
                    const struct nlattr **tb, uint16_t max);

/// The same for the attributes nested in `nest`.
int vxa_parse_nested(const struct nlattr *nest, const struct nlattr **tb, uint16_t max);

/// Decodes an NLMSG_ERROR message: the (positive) errno, or 0 for an ACK; the
/// sequence number of the request it answers; and the kernel's extended-ACK
/// text (NULL when absent). Returns -1 if the message is truncated.
int vxa_parse_error(const struct nlmsghdr *nlh, int32_t *error, uint32_t *seq,
                    const char **message);

#endif
