# Records the kernel's replies to the dumps vxlan-agent makes (links, addresses,
# neighbors, FDB, nexthops, routes) and an extended-ACK error, each recv() buffer
# a file, inside a network namespace of its own (run as root; see Fuzz/record/netlink.sh).
import os, socket, struct, sys
out = sys.argv[1]
NETLINK_ROUTE = 0
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_GETNEIGH, RTM_GETNEXTHOP, RTM_NEWNEXTHOP = 18, 22, 26, 30, 106, 104
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE, NLM_F_EXCL = 1, 4, 0x300, 0x400, 0x200
AF_INET, AF_BRIDGE, AF_UNSPEC = 2, 7, 0
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
s.setsockopt(270, 11, 1)  # NETLINK_EXT_ACK
s.bind((0, 0))
seq = 100
def request(type, flags, body):
    global seq
    seq += 1
    s.send(struct.pack("=IHHII", 16 + len(body), type, flags, seq, 0) + body)
    buffers = []
    while True:
        data = s.recv(262144)
        buffers.append(data)
        offset, done = 0, False
        while offset + 16 <= len(data):
            length, mtype = struct.unpack_from("=IH", data, offset)
            if mtype in (2, 3): done = True
            offset += (length + 3) & ~3
        if done: return buffers
def save(name, buffers):
    for i, b in enumerate(buffers[:2]):
        open(os.path.join(out, f"kernel-{name}" + (f"-{i}" if i else "")), "wb").write(b)
ifinfomsg = struct.pack("=BxHiII", AF_UNSPEC, 0, 0, 0, 0)
save("dump-links", request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, ifinfomsg))
save("dump-addresses", request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, struct.pack("=BBBBI", AF_INET, 0, 0, 0, 0)))
save("dump-neighbors", request(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, struct.pack("=BxxxiHBB", AF_INET, 0, 0, 0, 0)))
save("dump-fdb", request(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, struct.pack("=BxxxiHBB", AF_BRIDGE, 0, 0, 0, 0)))
save("dump-nexthops", request(RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP, struct.pack("=BBBBI", AF_UNSPEC, 0, 0, 0, 0)))
save("dump-routes", request(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, struct.pack("=BBBBBBBBI", AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)))
# A nexthop whose gateway is not reachable: NLMSG_ERROR with the kernel's text.
def attr(type, payload): return struct.pack("=HH", 4 + len(payload), type) + payload + b"\0" * ((4 - len(payload) % 4) % 4)
flannel = socket.if_nametoindex("flannel.1")
body = struct.pack("=BBBBI", AF_INET, 0, 152, 0, 0) + attr(1, struct.pack("=I", 7)) + attr(6, socket.inet_aton("10.250.9.9")) + attr(5, struct.pack("=I", flannel))
save("error-extack", request(RTM_NEWNEXTHOP, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body))
