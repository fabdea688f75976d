#!/usr/bin/env python3
"""Inventories for the benchmarks: node-0 (198.18.0.1, 10.0.0.0/24) and N peers.

Peer k (1..N): publicIP 198.19.k/256.k%256, subnet 10.k/256.k%256.0/24 in
10.0.0.0/8, MAC derived by the agent (0e:01:c6:13:k/256:k%256) unless churn
changed it. The same peers as Benchmarks/limit.c and the iproute2 batches.

Dual stack (--dual; issue 12's IPv6 cold sync): the network also has
"EnableIPv6", IPv6Network fd00:10::/48 with IPv6SubnetLen 64 (65,536 /64s:
node-0 and up to 65,535 peers), and every node an IPv6 half: node-0
publicIPv6 2001:2::1 (its underlay's address), subnetV6 fd00:10::/64; peer k
publicIPv6 2001:2:1::1:<k in hex> (RFC 5180's benchmarking range), subnetV6
fd00:10:0:<k in hex>::/64, IPv6 VTEP MAC derived by the agent from the last four
bytes of publicIPv6 (0a:01:00:01:k/256:k%256; node-0's is 0a:01:00:00:00:01).
The agent's IPv6 nexthop ids are nexthopIDBase6 (0x76590000) + subnet index k,
disjoint from IPv4's 0x76580000 + k.

  gen.py inventory N [--churn PCT] [--seed S] [--dual]   > inventory.json
  gen.py iproute2 N classic|nexthop DIR          writes DIR/bridge.batch, DIR/ip.batch
  gen.py iproute2v6 N classic|nexthop DIR        writes DIR/bridge6.batch, DIR/ip6.batch
                                                 (for `bridge -batch` and `ip -6 -batch`,
                                                 device flannel-v6.1)
"""
import json
import random
import sys


def peers(n):
    return [{"name": f"peer-{k}", "publicIP": f"198.19.{k // 256}.{k % 256}",
             "subnet": f"10.{k // 256}.{k % 256}.0/24"} for k in range(1, n + 1)]


def churn(nodes, n, pct, seed):
    """pct% change MAC, pct% change public IP, pct% leave, pct% join."""
    rng = random.Random(seed)
    count = max(1, int(n * pct / 100))
    picks = rng.sample(range(n), 3 * count)
    mac, ip, leave = picks[:count], picks[count:2 * count], set(picks[2 * count:])
    for i in mac:
        k = i + 1
        nodes[i]["vtepMAC"] = f"0e:aa:00:01:{k // 256:02x}:{k % 256:02x}"
    for j, i in enumerate(ip):  # new addresses from 198.18.128.0/17, unique per changed peer
        nodes[i]["publicIP"] = f"198.18.{128 + j // 256}.{j % 256}"
    kept = [node for i, node in enumerate(nodes) if i not in leave]
    for k in range(n + 1, n + 1 + count):
        kept.append({"name": f"peer-{k}", "publicIP": f"198.19.{k // 256}.{k % 256}",
                     "subnet": f"10.{k // 256}.{k % 256}.0/24"})
    return kept


# The IPv6 plane (--dual). Peer k's IPv6 half; node-0's is index 0.
NET6, NODE0_IP6 = "fd00:10::/48", "2001:2::1"
NH_BASE6 = 0x7659_0000  # AgentSettings.nexthopIDBase6 (Sources/Reconcile/DesiredState.swift)


def half6(k):
    """(publicIPv6, subnetV6, IPv6 VTEP address, IPv6 VTEP MAC) of peer k (1..65,535)."""
    if not 1 <= k <= 0xffff:
        raise ValueError(f"peer {k}: {NET6} holds /64s for node-0 and 65,535 peers only")
    return (f"2001:2:1::1:{k:x}", f"fd00:10:0:{k:x}::/64", f"fd00:10:0:{k:x}::",
            f"0a:01:00:01:{k // 256:02x}:{k % 256:02x}")


def inventory(n, pct, seed, dual=False):
    nodes = peers(n)
    if pct:
        nodes = churn(nodes, n, pct, seed)
    network = {"Network": "10.0.0.0/8", "SubnetLen": 24,
               "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}
    local = {"name": "node-0", "publicIP": "198.18.0.1", "subnet": "10.0.0.0/24"}
    if dual:
        if pct:
            raise ValueError("--dual with --churn: not built (the IPv6 cold sync needs no churn)")
        network.update({"EnableIPv6": True, "IPv6Network": NET6, "IPv6SubnetLen": 64})
        local.update({"publicIPv6": NODE0_IP6, "subnetV6": "fd00:10::/64"})
        for k, node in enumerate(nodes, start=1):
            ip6, subnet6, _, _ = half6(k)
            node.update({"publicIPv6": ip6, "subnetV6": subnet6})
    return {"node": "node-0", "network": network, "nodes": [local] + nodes}


def iproute2(n, layout, directory):
    with open(f"{directory}/bridge.batch", "w") as bridge, open(f"{directory}/ip.batch", "w") as ip:
        for k in range(1, n + 1):
            pub, gw = f"198.19.{k // 256}.{k % 256}", f"10.{k // 256}.{k % 256}.0"
            mac = f"0e:01:c6:13:{k // 256:02x}:{k % 256:02x}"
            bridge.write(f"fdb replace {mac} dev flannel.1 dst {pub} self permanent\n")
            ip.write(f"neigh replace {gw} lladdr {mac} dev flannel.1 nud permanent\n")
        for k in range(1, n + 1):
            gw = f"10.{k // 256}.{k % 256}.0"
            if layout == "nexthop":
                ip.write(f"nexthop replace id {1985478656 + k} via {gw} dev flannel.1 onlink proto 152\n")
        for k in range(1, n + 1):
            gw = f"10.{k // 256}.{k % 256}.0"
            if layout == "nexthop":
                ip.write(f"route replace {gw}/24 nhid {1985478656 + k} proto 152\n")
            else:
                ip.write(f"route replace {gw}/24 via {gw} dev flannel.1 onlink proto 152\n")


def iproute2v6(n, layout, directory):
    """The IPv6 plane in the same order as iproute2(): what flanneld's vxlan v6 writes per
    peer (an FDB entry to its public IPv6, a permanent neighbor for its IPv6 VTEP address,
    a route to its IPv6 subnet via that address, onlink), on flannel-v6.1."""
    with open(f"{directory}/bridge6.batch", "w") as bridge, open(f"{directory}/ip6.batch", "w") as ip:
        for k in range(1, n + 1):
            pub, _, gw, mac = half6(k)
            bridge.write(f"fdb replace {mac} dev flannel-v6.1 dst {pub} self permanent\n")
            ip.write(f"neigh replace {gw} lladdr {mac} dev flannel-v6.1 nud permanent\n")
        if layout == "nexthop":
            for k in range(1, n + 1):
                _, _, gw, _ = half6(k)
                ip.write(f"nexthop replace id {NH_BASE6 + k} via {gw} dev flannel-v6.1 onlink proto 152\n")
        for k in range(1, n + 1):
            _, subnet6, gw, _ = half6(k)
            if layout == "nexthop":
                ip.write(f"route replace {subnet6} nhid {NH_BASE6 + k} proto 152\n")
            else:
                ip.write(f"route replace {subnet6} via {gw} dev flannel-v6.1 onlink proto 152\n")


def main(argv):
    if len(argv) >= 3 and argv[1] == "inventory":
        pct, seed = 0.0, 1
        if "--churn" in argv:
            pct = float(argv[argv.index("--churn") + 1])
        if "--seed" in argv:
            seed = int(argv[argv.index("--seed") + 1])
        json.dump(inventory(int(argv[2]), pct, seed, dual="--dual" in argv), sys.stdout)
        return 0
    if len(argv) == 5 and argv[1] == "iproute2":
        iproute2(int(argv[2]), argv[3], argv[4])
        return 0
    if len(argv) == 5 and argv[1] == "iproute2v6":
        iproute2v6(int(argv[2]), argv[3], argv[4])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
