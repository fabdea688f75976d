#ifndef VXLAN_AGENT_CLIBMNL_SHIM_H
#define VXLAN_AGENT_CLIBMNL_SHIM_H
// The one header through which Swift sees libmnl and the kernel's netlink ABI.
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/neighbour.h>
#include <linux/nexthop.h>
#include <linux/if_ether.h>
#include <linux/veth.h>
#endif
