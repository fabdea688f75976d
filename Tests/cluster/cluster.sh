#!/usr/bin/env bash
# A cluster of hosts on one machine, in network namespaces, for the demo, the
# end-to-end tests and the benchmarks. Everything it makes is named PREFIX-*:
#
#   PREFIX-ul        the underlay: a bridge br0 joining the hosts
#   PREFIX-hI        host I: eth0 = 198.18.0.I/24 on the underlay, cni0 = its pod bridge
#   PREFIX-hI-pJ     pod J of host I: eth0 on 10.244.I.0/24, attached by the real
#                    CNI plugins bridge + host-local (containernetworking-plugins)
#
# Usage:
#   cluster.sh up PREFIX NHOSTS [PODS_PER_HOST]
#   cluster.sh down PREFIX
#   cluster.sh pods PREFIX                       # "HOST POD NAMESPACE IP" per line
#   cluster.sh inventory NHOSTS [--without I]... # the agent's inventory for the cluster
#
# It never touches the root namespace's links, routes or firewall.
set -euo pipefail

CNI_PATH=${CNI_PATH:-/usr/lib/cni}

state_dir() { echo "/run/$1"; }

netns_of() { ip netns list | awk '{print $1}' | grep -E "^$1(-|$)" || true; }

cmd_down() {
    local prefix=$1
    for ns in $(netns_of "$prefix" | sort -r); do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$(state_dir "$prefix")"
}

cni_add() { # host-ns pod-ns subnet datadir
    local host=$1 pod=$2 subnet=$3 data=$4
    ip netns exec "$host" env CNI_COMMAND=ADD CNI_CONTAINERID="$pod" CNI_NETNS="/var/run/netns/$pod" \
        CNI_IFNAME=eth0 CNI_PATH="$CNI_PATH" "$CNI_PATH/bridge" <<JSON
{"cniVersion": "0.4.0", "name": "vxa-pods", "type": "bridge", "bridge": "cni0",
 "isGateway": true, "ipMasq": false, "hairpinMode": false, "mtu": 1450,
 "ipam": {"type": "host-local", "subnet": "$subnet", "dataDir": "$data",
          "routes": [{"dst": "10.244.0.0/16"}]}}
JSON
}

cmd_up() {
    local prefix=$1 hosts=$2 pods=${3:-0}
    local dir; dir=$(state_dir "$prefix")
    [ -x "$CNI_PATH/bridge" ] || { echo "cluster.sh: $CNI_PATH/bridge missing (apt-get install containernetworking-plugins)" >&2; exit 1; }
    mkdir -p "$dir"
    : > "$dir/pods"
    ip netns add "$prefix-ul"
    ip -n "$prefix-ul" link set lo up
    ip -n "$prefix-ul" link add br0 type bridge
    ip -n "$prefix-ul" link set br0 up
    for i in $(seq 1 "$hosts"); do
        local h="$prefix-h$i"
        ip netns add "$h"
        ip netns exec "$h" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv4.ip_forward=1
        ip -n "$h" link set lo up
        ip -n "$prefix-ul" link add "h$i" type veth peer name eth0 netns "$h"
        ip -n "$prefix-ul" link set "h$i" master br0 up
        ip -n "$h" addr add "198.18.0.$i/24" dev eth0
        ip -n "$h" link set eth0 up
        for j in $(seq 1 "$pods"); do
            local p="$h-p$j"
            ip netns add "$p"
            ip netns exec "$p" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
            ip -n "$p" link set lo up
            local out ip
            out=$(cni_add "$h" "$p" "10.244.$i.0/24" "$dir/ipam-h$i")
            ip=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])')
            echo "$i $j $p $ip" >> "$dir/pods"
        done
    done
}

cmd_pods() { cat "$(state_dir "$1")/pods"; }

cmd_inventory() {
    local hosts=$1; shift
    local without=" "
    while [ $# -gt 0 ]; do
        case $1 in
            --without) without="$without$2 "; shift 2 ;;
            *) echo "cluster.sh inventory: unknown argument $1" >&2; exit 2 ;;
        esac
    done
    local nodes="" sep=""
    for i in $(seq 1 "$hosts"); do
        case $without in *" $i "*) continue ;; esac
        nodes="$nodes$sep    {\"name\": \"node-$i\", \"publicIP\": \"198.18.0.$i\", \"subnet\": \"10.244.$i.0/24\"}"
        sep=$',\n'
    done
    cat <<JSON
{
  "network": {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}},
  "nodes": [
$nodes
  ]
}
JSON
}

case ${1:-} in
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    pods) shift; cmd_pods "$@" ;;
    inventory) shift; cmd_inventory "$@" ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
