#!/usr/bin/env bash
# cluster.sh: a cluster of hosts on one machine, built from network namespaces,
# for `make demo`, the end-to-end tests and the benchmarks. Run it as root.
#
# What `up PREFIX N P` builds (every name starts with PREFIX): one segment.
#
#   PREFIX-ul          the underlay "switch": a Linux bridge br0
#   PREFIX-hI          host I (1..N): eth0 = 198.18.0.I/24, joined to br0 by a
#                      veth pair; ip_forward on; its pod bridge cni0 = 10.244.I.1/24
#   PREFIX-hI-pJ       pod J (1..P) of host I: eth0 on 10.244.I.0/24, attached
#                      by the real CNI plugins bridge + host-local, called the
#                      way a container runtime calls them
#   /run/PREFIX/       the cluster's files: host-local's IPAM data (ipam/pods-hI),
#                      cluster.env, and whatever a caller puts there (lock files)
#
# What `up PREFIX A+B[+C...] P` builds: a routed topology, one segment per
# number (at most 16), joined by a router. Hosts are numbered across segments:
# `up PREFIX 2+2` puts hosts 1-2 on segment 1 and hosts 3-4 on segment 2.
#
#   PREFIX-ulS         segment S's "switch": a Linux bridge br0
#   PREFIX-rt          the router: ethS = 198.18.S.254/24 joined to segment S's
#                      br0; ip_forward on
#   PREFIX-hI          host I on segment S: eth0 = 198.18.S.I/24, default route
#                      via 198.18.S.254 (so a route lookup of a host on another
#                      segment has a gateway, one on its own segment has none);
#                      pods and cni0 as above
#
# With --dual (`up PREFIX LAYOUT PODS --dual`) every host and pod is dual stack
# as well (IPv4 exactly as above):
#
#   PREFIX-hI          eth0 also 2001:2::I/64 (routed: 2001:2:S::I/64, default
#                      route via the router's 2001:2:S::fe); IPv6 forwarding on
#   PREFIX-hI-pJ       pods also on fd00:10:244:X::/64 (X = I in hex), cni0 =
#                      fd00:10:244:X::1; a route for fd00:10:244::/56 via it
#
# With --v6only the IPv6 half only: no IPv4 address on the hosts' eth0 (nor
# on the router), pods on fd00:10:244:X::/64 only.
#
# IPv6 underlay addresses come from 2001:2::/48 (RFC 5180's benchmarking range,
# as 198.18.0.0/15 is IPv4's); DAD is off (no tentative addresses to wait out).
#
# The root namespace's links, routes, sysctls and firewall are never changed:
# every command runs inside one of the cluster's namespaces.
#
# Usage:
#   cluster.sh up PREFIX LAYOUT [PODS_PER_HOST] [--dual|--v6only]
#                                                 build it (fails if PREFIX exists);
#                                                 LAYOUT is NHOSTS (one segment, e.g. 3)
#                                                 or A+B[+C...] (segments and a router)
#   cluster.sh down PREFIX                        remove it all; safe to repeat,
#                                                 also after a half-failed up
#   cluster.sh hosts PREFIX                       one "HOST NAMESPACE ADDRESS SEGMENT" line
#                                                 per host (segment 0: the one-segment layout)
#   cluster.sh pods PREFIX                        one "HOST POD NAMESPACE IP" line per pod
#                                                 (dual stack, IPv6-only: "HOST POD NAMESPACE IP IPV6",
#                                                 IP "none" when IPv6-only)
#   cluster.sh exec PREFIX WHERE CMD [ARG]...     run CMD in a namespace; WHERE is
#                                                 I or hI (host I), hI-pJ (pod), ul,
#                                                 ulS (segment S), rt (the router)
#   cluster.sh inventory [PREFIX] [LAYOUT] [--without I]... [--backend vxlan|host-gw|udp]
#                        [--direct-routing] [--dual|--v6only]
#                                                 vxlan-agent's config for the cluster
#                                                 (LAYOUT defaults to PREFIX's); the
#                                                 net-conf's Backend is {"Type": "vxlan",
#                                                 "VNI": 1, "Port": 8472} (default),
#                                                 with "DirectRouting": true,
#                                                 {"Type": "host-gw"}, or
#                                                 {"Type": "udp", "Port": 8285};
#                                                 --dual: EnableIPv6, IPv6Network
#                                                 fd00:10:244::/56 and each node's
#                                                 publicIPv6 and subnetV6;
#                                                 --v6only: EnableIPv4 false, and
#                                                 each node's IPv6 half only
#   cluster.sh ping PREFIX [--all] [--without I]... [--v6]
#                                                 every pod pings every pod on the other
#                                                 hosts (--all: also on its own host);
#                                                 a matrix, exit 1 if any ping failed
#                                                 (--v6: their IPv6 addresses)
#   cluster.sh namespaces PREFIX                  the cluster's namespaces
#
# As a library: `source cluster.sh` defines cluster_up, cluster_down, cluster_hosts,
# cluster_pods, cluster_exec, cluster_inventory, cluster_ping, cluster_namespaces and
# cluster_ns (same arguments) and changes no shell options of the caller.
#
# Environment: CNI_PATH (default /usr/lib/cni), CLUSTER_POD_MTU (default 1450,
# flannel's MTU on a 1500-byte underlay).

CLUSTER_CNI_PATH=${CNI_PATH:-/usr/lib/cni}
CLUSTER_POD_MTU=${CLUSTER_POD_MTU:-1450}

_cluster_err() { echo "cluster.sh: $*" >&2; }

# Runs a command; on failure says which one and leaves the calling subshell.
# (Every public function is a subshell, so this works whatever the caller's
# `set -e` state, also inside `if` and `||`.)
_cluster_do() {
    "$@" && return 0
    local rc=$?
    _cluster_err "failed (exit $rc): $*"
    exit 1
}

# A prefix is a namespace-name start that is safe in `rm -rf /run/PREFIX`.
_cluster_check_prefix() {
    if [[ ! ${1:-} =~ ^[A-Za-z][A-Za-z0-9_.-]{0,39}$ ]]; then
        _cluster_err "bad PREFIX '${1:-}': a letter, then up to 39 of A-Z a-z 0-9 _ . -"
        exit 2
    fi
}

_cluster_check_int() { # name value min max
    if [[ ! ${2:-} =~ ^[0-9]+$ ]] || (( 10#$2 < $3 || 10#$2 > $4 )); then
        _cluster_err "bad $1 '${2:-}': a number from $3 to $4"
        exit 2
    fi
}

_cluster_check_root() {
    [ "$(id -u)" = 0 ] || { _cluster_err "run as root (it creates network namespaces)"; exit 1; }
}

cluster_dir() { echo "/run/$1"; }

# A LAYOUT is NHOSTS (one segment: 1..250 hosts) or A+B[+C...] (2..16 segments
# of at least one host each, 250 hosts in all: a host's number is the last
# octet of its address and the third of its pod subnet).
_cluster_check_layout() {
    local layout=${1:-} n total=0 count=0
    if [[ ! $layout =~ ^[0-9]+(\+[0-9]+)*$ ]]; then
        _cluster_err "bad LAYOUT '$layout': NHOSTS (one segment) or A+B[+C...] (hosts per segment)"
        exit 2
    fi
    local IFS=+
    for n in $layout; do
        count=$((count + 1))
        (( 10#$n >= 1 )) || { _cluster_err "bad LAYOUT '$layout': segment $count has no hosts"; exit 2; }
        total=$((total + 10#$n))
    done
    (( total <= 250 )) || { _cluster_err "bad LAYOUT '$layout': $total hosts, at most 250"; exit 2; }
    (( count <= 16 )) || { _cluster_err "bad LAYOUT '$layout': $count segments, at most 16"; exit 2; }
}

# One "HOST SEGMENT ADDRESS GATEWAY" line per host of LAYOUT: segment 0 and no
# gateway ("-") in the one-segment layout (198.18.0.I), segment S and its
# router's address in a routed one (198.18.S.I, via 198.18.S.254).
_cluster_layout_hosts() (
    _cluster_check_layout "${1:-}"
    local layout=$1 n s=0 i=0 k
    if [[ $layout != *+* ]]; then
        for (( i = 1; i <= 10#$layout; i++ )); do echo "$i 0 198.18.0.$i -"; done
        exit 0
    fi
    local IFS=+
    for n in $layout; do
        s=$((s + 1))
        for (( k = 1; k <= 10#$n; k++ )); do
            i=$((i + 1))
            echo "$i $s 198.18.$s.$i 198.18.$s.254"
        done
    done
)

# The LAYOUT a cluster was built with (clusters from before LAYOUT was written
# have NHOSTS only: one segment).
_cluster_layout_of() { # prefix
    local env
    env="$(cluster_dir "$1")/cluster.env"
    [ -r "$env" ] || return 1
    sed -n 's/^LAYOUT=//p; t; s/^NHOSTS=//p' "$env" | tail -n 1
}

# The cluster's namespaces (and only its own: not those of a cluster whose
# prefix merely starts with PREFIX), pods first, then hosts, the router, the
# underlay segments last.
cluster_namespaces() (
    _cluster_check_prefix "${1:-}"
    local p=${1//./\\.}
    ip netns list 2>/dev/null | awk '{print $1}' | {
        grep -E "^$p-(ul|ul[0-9]+|rt|h[0-9]+|h[0-9]+-p[0-9]+)\$" || true
    } | awk -v pre="$1" '{ r = substr($0, length(pre) + 2); print (r ~ /^ul/ ? 4 : (r == "rt" ? 3 : (r ~ /-p/ ? 1 : 2))), $0 }' \
      | sort -k1,1n -k2,2 | awk '{print $2}'
)

# cluster_ns PREFIX WHERE: the namespace name for I, hI, I-J, hI-pJ, ul, ulS, rt
# or a full name.
cluster_ns() (
    _cluster_check_prefix "${1:-}"
    local prefix=$1 where=${2:-}
    case $where in
        "$prefix"-*) echo "$where" ;;
        ul|rt) echo "$prefix-$where" ;;
        ul[0-9]*) [[ $where =~ ^ul[0-9]+$ ]] || { _cluster_err "bad segment '$where'"; exit 2; }
                  echo "$prefix-$where" ;;
        [0-9]*) [[ $where =~ ^[0-9]+(-[0-9]+)?$ ]] || { _cluster_err "bad host '$where'"; exit 2; }
                if [[ $where == *-* ]]; then echo "$prefix-h${where%-*}-p${where#*-}"; else echo "$prefix-h$where"; fi ;;
        h[0-9]*) [[ $where =~ ^h[0-9]+(-p[0-9]+)?$ ]] || { _cluster_err "bad host '$where'"; exit 2; }
                 echo "$prefix-$where" ;;
        *) _cluster_err "bad host '$where': I, hI, hI-pJ, ul, ulS or rt"; exit 2 ;;
    esac
)

# The CNI network config for host I's pods (cniVersion 1.0.0: this plugin
# version supports 0.1.0 - 1.0.0, see `CNI_COMMAND=VERSION /usr/lib/cni/bridge`).
_cluster_cni_conf() { # host-index ipam-dir [dual: 0, 1, or 6 for IPv6-only]
    local i=$1 dir=$2 dual=${3:-0} x ranges="" routes="" sep=""
    x=$(printf '%x' "$i")
    if [ "$dual" != 6 ]; then
        ranges='[{"subnet": "10.244.'$i'.0/24", "gateway": "10.244.'$i'.1"}]'
        routes='{"dst": "10.244.0.0/16", "gw": "10.244.'$i'.1"}'
        sep=', '
    fi
    if [ "$dual" != 0 ]; then
        ranges+=$sep'[{"subnet": "fd00:10:244:'$x'::/64", "gateway": "fd00:10:244:'$x'::1"}]'
        routes+=$sep'{"dst": "fd00:10:244::/56", "gw": "fd00:10:244:'$x'::1"}'
    fi
    cat <<JSON
{
  "cniVersion": "1.0.0",
  "name": "pods-h$i",
  "type": "bridge",
  "bridge": "cni0",
  "isGateway": true,
  "ipMasq": false,
  "hairpinMode": false,
  "mtu": $CLUSTER_POD_MTU,
  "ipam": {
    "type": "host-local",
    "ranges": [$ranges],
    "routes": [$routes],
    "dataDir": "$dir"
  }
}
JSON
}

# Calls a CNI plugin as a runtime does: CNI_* in the environment, the network
# config on stdin, the result on stdout. It runs inside the HOST namespace, so
# the bridge cni0 and the host end of the veth land there; CNI_NETNS names the pod.
_cluster_cni() { # command host-ns pod-ns host-index ipam-dir [dual]
    local cmd=$1 host=$2 pod=$3 i=$4 dir=$5 dual=${6:-0}
    _cluster_cni_conf "$i" "$dir" "$dual" | ip netns exec "$host" env \
        CNI_COMMAND="$cmd" CNI_CONTAINERID="$pod" CNI_NETNS="/var/run/netns/$pod" \
        CNI_IFNAME=eth0 CNI_PATH="$CLUSTER_CNI_PATH" "$CLUSTER_CNI_PATH/bridge"
}

cluster_up() (
    # dual: 0 IPv4 only, 1 dual stack, 6 IPv6 only
    local dual=0 args=() a
    for a in "$@"; do
        case $a in --dual) dual=1 ;; --v6only) dual=6 ;; *) args+=("$a") ;; esac
    done
    set -- "${args[@]}"
    _cluster_check_prefix "${1:-}"
    _cluster_check_layout "${2:-}"
    _cluster_check_int PODS_PER_HOST "${3:-0}" 0 250
    _cluster_check_root
    local prefix=$1 layout=$2 pods=$((10#${3:-0}))
    local dir tool plugin table hosts
    table=$(_cluster_layout_hosts "$layout") || exit 2
    hosts=$(printf '%s\n' "$table" | wc -l)
    dir=$(cluster_dir "$prefix")
    for tool in ip sysctl; do
        command -v "$tool" > /dev/null || { _cluster_err "$tool missing (apt-get install iproute2 procps)"; exit 1; }
    done
    if (( pods > 0 )); then
        for plugin in bridge host-local; do
            [ -x "$CLUSTER_CNI_PATH/$plugin" ] || {
                _cluster_err "$CLUSTER_CNI_PATH/$plugin missing (apt-get install containernetworking-plugins)"; exit 1; }
        done
    fi
    if [ -n "$(cluster_namespaces "$prefix")" ] || [ -e "$dir" ]; then
        _cluster_err "a cluster named $prefix exists already (cluster.sh down $prefix removes it)"
        exit 1
    fi

    _cluster_do mkdir -p "$dir/ipam"
    # NHOSTS for the callers that read it; LAYOUT for inventory and hosts.
    printf 'NHOSTS=%s\nPODS_PER_HOST=%s\nLAYOUT=%s\nDUAL=%s\n' "$hosts" "$pods" "$layout" "$dual" > "$dir/cluster.env"

    # The underlay: one bridge per segment, no addresses ("PREFIX-ul" in the
    # one-segment layout, "PREFIX-ulS" in a routed one). IPv6 off everywhere,
    # so no router solicitations or DAD chatter in captures.
    local v6off=(net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1)
    # Dual stack: IPv6 on where it has addresses, without DAD (no tentative
    # addresses) and without router advertisements.
    local v6on=(net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
                net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0)
    local hostv6=("${v6off[@]}") podv6=("${v6off[@]}")
    if [ $dual != 0 ]; then hostv6=("${v6on[@]}" net.ipv6.conf.all.forwarding=1); podv6=("${v6on[@]}"); fi
    local segments s ul
    segments=$(printf '%s\n' "$table" | awk '{print $2}' | sort -un)
    for s in $segments; do
        if [ "$s" = 0 ]; then ul="$prefix-ul"; else ul="$prefix-ul$s"; fi
        _cluster_do ip netns add "$ul"
        _cluster_do ip netns exec "$ul" sysctl -qw "${v6off[@]}"
        _cluster_do ip -n "$ul" link set lo up
        _cluster_do ip -n "$ul" link add br0 type bridge
        _cluster_do ip -n "$ul" link set br0 up
    done

    # The router of a routed layout: a leg ethS on each segment, 198.18.S.254.
    if [[ $layout == *+* ]]; then
        local rt="$prefix-rt"
        _cluster_do ip netns add "$rt"
        _cluster_do ip netns exec "$rt" sysctl -qw "${hostv6[@]}" net.ipv4.ip_forward=1
        _cluster_do ip -n "$rt" link set lo up
        for s in $segments; do
            _cluster_do ip -n "$prefix-ul$s" link add rt type veth peer name "eth$s" netns "$rt"
            _cluster_do ip -n "$prefix-ul$s" link set rt master br0 up
            [ $dual = 6 ] || _cluster_do ip -n "$rt" addr add "198.18.$s.254/24" dev "eth$s"
            if [ $dual != 0 ]; then _cluster_do ip -n "$rt" addr add "2001:2:$s::fe/64" dev "eth$s" nodad; fi
            _cluster_do ip -n "$rt" link set "eth$s" up
        done
    fi

    local i j h p out ip address gateway
    # (fd 3: nothing in the loop reads the table in place of its own stdin)
    while read -r i s address gateway <&3; do
        h="$prefix-h$i"
        if [ "$s" = 0 ]; then ul="$prefix-ul"; else ul="$prefix-ul$s"; fi
        _cluster_do ip netns add "$h"
        _cluster_do ip netns exec "$h" sysctl -qw "${hostv6[@]}" net.ipv4.ip_forward=1
        _cluster_do ip -n "$h" link set lo up
        _cluster_do ip -n "$ul" link add "h$i" type veth peer name eth0 netns "$h"
        _cluster_do ip -n "$ul" link set "h$i" master br0 up
        [ $dual = 6 ] || _cluster_do ip -n "$h" addr add "$address/24" dev eth0
        _cluster_do ip -n "$h" link set eth0 up
        if [ "$gateway" != - ] && [ $dual != 6 ]; then
            _cluster_do ip -n "$h" route add default via "$gateway" dev eth0
        fi
        if [ $dual != 0 ]; then
            if [ "$s" = 0 ]; then
                _cluster_do ip -n "$h" addr add "2001:2::$(printf '%x' "$i")/64" dev eth0 nodad
            else
                _cluster_do ip -n "$h" addr add "2001:2:$s::$(printf '%x' "$i")/64" dev eth0 nodad
                _cluster_do ip -n "$h" -6 route add default via "2001:2:$s::fe" dev eth0
            fi
        fi
        for (( j = 1; j <= pods; j++ )); do
            p="$h-p$j"
            _cluster_do ip netns add "$p"
            _cluster_do ip netns exec "$p" sysctl -qw "${podv6[@]}"
            _cluster_do ip -n "$p" link set lo up
            if ! out=$(_cluster_cni ADD "$h" "$p" "$i" "$dir/ipam" "$dual" 2>&1); then
                _cluster_err "CNI ADD for $p failed: $out"
                exit 1
            fi
            if [ $dual = 6 ]; then
                ip=$(printf '%s' "$out" | tr -d ' \n\t' | grep -oE '"address":"[0-9a-f:]+/' | head -n 1 || true)
                [ -n "$ip" ] || { _cluster_err "CNI ADD for $p returned no IPv6 address: $out"; exit 1; }
            else
                ip=$(printf '%s' "$out" | tr -d ' \n\t' | grep -oE '"address":"[0-9.]+/' | head -n 1 | tr -dc '0-9.' || true)
                [ -n "$ip" ] || { _cluster_err "CNI ADD for $p returned no IPv4 address: $out"; exit 1; }
            fi
        done
    done 3<<< "$table"

    # A fresh veth reports carrier a moment later (the kernel's link watch):
    # `up` returns once every underlay link is UP, so a caller's first packet
    # is not lost to a link still down.
    local links="" n
    while read -r i s address gateway <&3; do links+=" $prefix-h$i:eth0"; done 3<<< "$table"
    if [[ $layout == *+* ]]; then for s in $segments; do links+=" $prefix-rt:eth$s"; done; fi
    local down
    for (( n = 0; n < 50; n++ )); do
        down=""
        for i in $links; do
            [[ $(ip -n "${i%:*}" -o link show dev "${i#*:}" 2>/dev/null) == *"state UP"* ]] || down+=" $i"
        done
        [ -n "$down" ] || exit 0
        sleep 0.1
    done
    _cluster_err "underlay links not up after 5 s:$down"
    exit 1
)

# One "HOST NAMESPACE ADDRESS SEGMENT" line per host (segment 0: the
# one-segment layout; S: the segment behind the router's ethS).
cluster_hosts() (
    _cluster_check_prefix "${1:-}"
    local layout i s address gateway
    layout=$(_cluster_layout_of "$1") || { _cluster_err "hosts: no cluster named $1 ($(cluster_dir "$1")/cluster.env missing)"; exit 1; }
    _cluster_layout_hosts "$layout" | while read -r i s address gateway; do
        echo "$i $1-h$i $address $s"
    done
)

# Stops what still runs in the namespace (an iperf3 server, a daemon): such a
# process would keep the namespace and its links alive after its name is gone.
_cluster_stop_pids() { # ns
    local pids
    pids=$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ' || true)
    [ -n "${pids// /}" ] || return 0
    _cluster_err "stopping processes left in $1: $pids"
    kill -TERM $pids 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ' || true)
        [ -n "${pids// /}" ] || return 0
        sleep 0.2
    done
    kill -KILL $pids 2>/dev/null || true
}

cluster_down() (
    _cluster_check_prefix "${1:-}"
    _cluster_check_root
    local prefix=$1 ns failed=0
    # Pods first, then hosts, the underlay last: deleting a namespace deletes
    # its veth ends, and with them the peers in the next namespace.
    for ns in $(cluster_namespaces "$prefix"); do
        _cluster_stop_pids "$ns"
        ip netns del "$ns" 2>/dev/null || [ ! -e "/run/netns/$ns" ] || {
            _cluster_err "could not delete namespace $ns"; failed=1; }
    done
    rm -rf -- "$(cluster_dir "$prefix")"
    exit $failed
)

# One "HOST POD NAMESPACE IP" line per pod, read from the namespaces themselves
# ("none" for a pod whose CNI ADD failed).
cluster_pods() (
    _cluster_check_prefix "${1:-}"
    local prefix=$1 ns rest ip ip6 dual
    dual=$(sed -n 's/^DUAL=//p' "$(cluster_dir "$prefix")/cluster.env" 2>/dev/null || true)
    for ns in $(cluster_namespaces "$prefix"); do
        rest=${ns#"$prefix"-h}
        [[ $rest == *-p* ]] || continue
        ip=$(ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}' || true)
        if [ "$dual" = 1 ] || [ "$dual" = 6 ]; then
            ip6=$(ip -n "$ns" -6 -o addr show dev eth0 scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}' || true)
            echo "${rest%-p*} ${rest#*-p} $ns ${ip:-none} ${ip6:-none}"
        else
            echo "${rest%-p*} ${rest#*-p} $ns ${ip:-none}"
        fi
    done | sort -k1,1n -k2,2n
)

cluster_exec() {
    local ns
    ns=$(cluster_ns "${1:-}" "${2:-}") || return 2
    shift 2
    [ $# -gt 0 ] || { _cluster_err "exec: no command"; return 2; }
    ip netns exec "$ns" "$@"
}

# vxlan-agent's configuration for the hosts of LAYOUT (minus --without ones):
# the same file on every host, each picks itself with --node node-I.
cluster_inventory() (
    local layout="" without=" " backend=vxlan direct=0 dual=0 i seg address gateway nodes="" sep="" conf v6conf="" x address6
    # The PREFIX is optional (the file depends on the layout only); without a
    # LAYOUT it is read from PREFIX's cluster.env.
    if [[ ${1:-} =~ ^[A-Za-z] ]]; then
        _cluster_check_prefix "$1"
        local prefix=$1
        shift
        if [[ ! ${1:-} =~ ^[0-9] ]]; then
            layout=$(_cluster_layout_of "$prefix") || {
                _cluster_err "inventory: give LAYOUT (no $(cluster_dir "$prefix")/cluster.env)"; exit 2; }
        fi
    fi
    if [ -z "$layout" ]; then layout=${1:-}; shift || true; fi
    _cluster_check_layout "$layout"
    while [ $# -gt 0 ]; do
        case $1 in
            --without) _cluster_check_int "--without host" "${2:-}" 1 250; without="$without$((10#$2)) "; shift 2 ;;
            --backend)
                case ${2:-} in
                    vxlan|host-gw|udp) backend=$2 ;;
                    *) _cluster_err "inventory: bad --backend '${2:-}': vxlan, host-gw or udp"; exit 2 ;;
                esac
                shift 2 ;;
            --direct-routing) direct=1; shift ;;
            --dual) dual=1; shift ;;
            --v6only) dual=6; shift ;;
            *) _cluster_err "inventory: unknown argument '$1'"; exit 2 ;;
        esac
    done
    if [ $direct = 1 ] && [ "$backend" != vxlan ]; then
        _cluster_err "inventory: --direct-routing is a VXLAN option (flannel's host-gw routes directly always)"
        exit 2
    fi
    # flannel's net-conf keys: Backend.Type, and DirectRouting for VXLAN.
    case $backend in
        vxlan) conf='{"Type": "vxlan", "VNI": 1, "Port": 8472'
               [ $direct = 0 ] || conf+=', "DirectRouting": true'
               conf+='}' ;;
        host-gw) conf='{"Type": "host-gw"}' ;;
        udp) conf='{"Type": "udp", "Port": 8285}' ;;
    esac
    # flannel's dual-stack keys; each node's IPv6 half as cluster.sh up --dual made it.
    [ $dual = 0 ] || v6conf=', "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "IPv6SubnetLen": 64'
    local v4conf='"Network": "10.244.0.0/16", "SubnetLen": 24'
    # IPv6-only: flannel's EnableIPv4 false, no IPv4 keys (a file of ours names them as a mistake).
    [ $dual != 6 ] || v4conf='"EnableIPv4": false'
    while read -r i seg address gateway; do
        [[ $without == *" $i "* ]] && continue
        nodes+="$sep    {\"name\": \"node-$i\""
        [ $dual = 6 ] || nodes+=", \"publicIP\": \"$address\", \"subnet\": \"10.244.$i.0/24\""
        if [ $dual != 0 ]; then
            x=$(printf '%x' "$i")
            if [ "$seg" = 0 ]; then address6="2001:2::$x"; else address6="2001:2:$seg::$x"; fi
            nodes+=", \"publicIPv6\": \"$address6\", \"subnetV6\": \"fd00:10:244:$x::/64\""
        fi
        nodes+="}"
        sep=$',\n'
    done < <(_cluster_layout_hosts "$layout")
    cat <<JSON
{
  "network": {$v4conf$v6conf, "Backend": $conf},
  "nodes": [
$nodes
  ]
}
JSON
)

# A ping matrix: a row per source pod, a column per destination pod. Cells:
# "ok", "FAIL", "-" (itself), "(local)" (same host, not pinged without --all).
cluster_ping() (
    _cluster_check_prefix "${1:-}"
    local prefix=$1 all=0 without=" " v6=0
    shift
    while [ $# -gt 0 ]; do
        case $1 in
            --all) all=1; shift ;;
            --v6) v6=1; shift ;;
            --without) _cluster_check_int "--without host" "${2:-}" 1 250; without="$without$((10#$2)) "; shift 2 ;;
            *) _cluster_err "ping: unknown argument '$1'"; exit 2 ;;
        esac
    done
    local pods=() line
    while read -r line; do
        set -- $line
        if [ $v6 = 1 ]; then
            [ -n "${5:-}" ] || { _cluster_err "ping --v6: $prefix has no IPv6 (cluster.sh up ... --dual or --v6only)"; exit 2; }
            line="$1 $2 $3 $5"
        fi
        [[ $without == *" $1 "* ]] || pods+=("$line")
    done < <(cluster_pods "$prefix")
    [ ${#pods[@]} -gt 0 ] || { _cluster_err "ping: $prefix has no pods"; exit 1; }
    local src dst sh sns sip tried=0 failed=0 cell
    local width=12
    [ $v6 = 0 ] || width=20
    printf "  %-$((width + 1))s" 'from \ to'
    for dst in "${pods[@]}"; do set -- $dst; printf "%-${width}s" "$4"; done
    echo
    for src in "${pods[@]}"; do
        set -- $src; sh=$1 sns=$3 sip=$4
        printf "  %-$((width + 1))s" "$sip"
        for dst in "${pods[@]}"; do
            set -- $dst
            if [ "$3" = "$sns" ]; then cell="-"
            elif [ "$1" = "$sh" ] && [ $all = 0 ]; then cell="(local)"
            else
                tried=$((tried + 1))
                if ip netns exec "$sns" ping -n -q -c 1 -W 2 "$4" > /dev/null 2>&1; then cell="ok"   # ping reads both families
                else cell="FAIL"; failed=$((failed + 1)); fi
            fi
            printf "%-${width}s" "$cell"
        done
        echo
    done
    echo "  $((tried - failed)) of $tried pings answered"
    [ $failed = 0 ]
)

_cluster_usage() { sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

_cluster_main() {
    set -euo pipefail
    local cmd=${1:-}
    shift || true
    case $cmd in
        up) cluster_up "$@" ;;
        down) cluster_down "$@" ;;
        hosts) cluster_hosts "$@" ;;
        pods) cluster_pods "$@" ;;
        exec) cluster_exec "$@" ;;
        inventory) cluster_inventory "$@" ;;
        ping) cluster_ping "$@" ;;
        namespaces) cluster_namespaces "$@" ;;
        -h|--help|help) _cluster_usage ;;
        *) _cluster_usage >&2; exit 2 ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    _cluster_main "$@"
fi
