#!/usr/bin/env bash
# Records real kernel replies into Fuzz/corpus/netlink/ from a namespace of its own
# (vxa-fuzz-<pid>, removed on exit), laid out as the agent lays out a node:
# flannel.1 over an underlay in 198.18.0.0/15, peers' FDB entries, neighbors,
# nexthops and routes, plus strays (port, VNI, via; a route in table 100).
set -euo pipefail
cd "$(dirname "$0")/../.."
ns="vxa-fuzz-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
n() { ip -netns "$ns" "$@"; }
n link set lo up
n link add under0 type veth peer name under1
n link set under1 up
n addr add 198.18.0.1/24 dev under0
n link set under0 up
n link add flannel.1 type vxlan id 1 local 198.18.0.1 dev under0 dstport 8472 nolearning
n link set flannel.1 mtu 1450 address 0e:01:c6:12:00:01 up
n addr add 10.244.1.0/32 dev flannel.1
for i in 2 3; do
    n neigh replace 10.244.$i.0 lladdr 0e:01:c6:12:00:0$i dev flannel.1 nud permanent
    n link set dev flannel.1 up
    bridge -netns "$ns" fdb append 0e:01:c6:12:00:0$i dev flannel.1 dst 198.18.0.$i self permanent
    n nexthop add id $((100 + i)) via 10.244.$i.0 dev flannel.1 onlink proto 152
    n route add 10.244.$i.0/24 nhid $((100 + i)) proto 152
done
bridge -netns "$ns" fdb append 0e:01:c6:12:00:09 dev flannel.1 dst 198.18.0.9 port 9999 vni 55 via under0 self permanent
n nexthop add id 200 group 102/103
n route add 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink proto 152
n route add 10.98.0.0/24 nhid 102 table 100 proto static
ip netns exec "$ns" python3 Fuzz/record/netlink.py Fuzz/corpus/netlink
