#!/usr/bin/env python3
"""Inventories for the benchmarks: node-0 (198.18.0.1, 10.0.0.0/24) and N peers.

Peer k (1..N): publicIP 198.19.k/256.k%256, subnet 10.k/256.k%256.0/24 in
10.0.0.0/8, MAC derived by the agent (0e:01:c6:13:k/256:k%256) unless churn
changed it. The same peers as Benchmarks/limit.c and the iproute2 batches.

  gen.py inventory N [--churn PCT] [--seed S]   > inventory.json
  gen.py iproute2 N classic|nexthop DIR          writes DIR/bridge.batch, DIR/ip.batch
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


def inventory(n, pct, seed):
    nodes = peers(n)
    if pct:
        nodes = churn(nodes, n, pct, seed)
    return {"node": "node-0",
            "network": {"Network": "10.0.0.0/8", "SubnetLen": 24,
                        "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}},
            "nodes": [{"name": "node-0", "publicIP": "198.18.0.1", "subnet": "10.0.0.0/24"}] + nodes}


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


def main(argv):
    if len(argv) >= 3 and argv[1] == "inventory":
        pct, seed = 0.0, 1
        if "--churn" in argv:
            pct = float(argv[argv.index("--churn") + 1])
        if "--seed" in argv:
            seed = int(argv[argv.index("--seed") + 1])
        json.dump(inventory(int(argv[2]), pct, seed), sys.stdout)
        return 0
    if len(argv) == 5 and argv[1] == "iproute2":
        iproute2(int(argv[2]), argv[3], argv[4])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
