#!/usr/bin/env bash
# make demo: three hosts in network namespaces, two real CNI pods each, and
# vxlan-agent programming VXLAN between them. Removes everything at the end,
# also on failure or Ctrl-C.
set -euo pipefail

AGENT=$(realpath "${1:?usage: demo.sh PATH-TO-vxlan-agent}")
HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER="$HERE/cluster.sh"
PREFIX="vxa-demo-$$"
WORK="/run/$PREFIX-files"
HOSTS=3

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

cleanup() {
    bash "$CLUSTER" down "$PREFIX"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it creates network namespaces)" >&2; exit 1; }
mkdir -p "$WORK"

agent() { # host-index args...
    local i=$1; shift
    ip netns exec "$PREFIX-h$i" "$AGENT" "$@" --node "node-$i" --lock-file "$WORK/h$i.lock"
}

bold "1. Three hosts on one underlay (198.18.0.1-3), two pods each via the CNI bridge + host-local plugins"
bash "$CLUSTER" up "$PREFIX" "$HOSTS" 2
bash "$CLUSTER" pods "$PREFIX" | awk '{printf "  host %s  pod %s  %-22s %s\n", $1, $2, $3, $4}'

bold "2. One inventory for the whole cluster (the same file on every host)"
bash "$CLUSTER" inventory "$HOSTS" > "$WORK/inventory.json"
cat "$WORK/inventory.json"

bold "3. vxlan-agent sync on each host"
for i in $(seq 1 $HOSTS); do
    printf 'host %s: ' "$i"
    agent "$i" sync --config "$WORK/inventory.json"
done

bold "4. What host 1's kernel now holds"
show ip -n "$PREFIX-h1" -d link show flannel.1 | sed -n '1,4p' | cut -c1-110
show ip -n "$PREFIX-h1" route show dev flannel.1
show ip -n "$PREFIX-h1" neigh show dev flannel.1
show bridge -n "$PREFIX-h1" fdb show dev flannel.1

ping_matrix() { # prints a matrix of pod-to-pod pings across hosts; returns non-zero on any failure
    local failed=0
    mapfile -t pods < <(bash "$CLUSTER" pods "$PREFIX" | awk -v skip=" ${1:-} " 'index(skip, " " $1 " ") == 0')
    printf '  %-12s' 'ping from'
    for p in "${pods[@]}"; do set -- $p; printf '%-11s' "$4"; done; echo
    for src in "${pods[@]}"; do
        set -- $src; local sh=$1 sns=$3 sip=$4
        printf '  %-12s' "$sip"
        for dst in "${pods[@]}"; do
            set -- $dst
            if [ "$1" = "$sh" ]; then printf '%-11s' "(local)"; continue; fi
            if ip netns exec "$sns" ping -c 1 -W 2 "$4" > /dev/null 2>&1; then printf '%-11s' "ok"; else printf '%-11s' "FAIL"; failed=1; fi
        done
        echo
    done
    return $failed
}

bold "5. Every pod pings every pod on the other hosts, across flannel.1"
ping_matrix

bold "6. A dry-run on a host in sync: nothing to do (exit 0)"
set +e; agent 1 diff --config "$WORK/inventory.json"; rc=$?; set -e
echo "exit code $rc"
[ $rc = 0 ] || { echo "demo: expected exit 0 from a host in sync" >&2; exit 1; }

bold "7. Host 3 leaves the inventory: the diff on host 1 (exit 2: changes pending)"
bash "$CLUSTER" inventory "$HOSTS" --without 3 > "$WORK/inventory-2.json"
set +e; agent 1 diff --config "$WORK/inventory-2.json"; rc=$?; set -e
echo "exit code $rc"
[ $rc = 2 ] || { echo "demo: expected exit 2 (changes pending)" >&2; exit 1; }

bold "8. sync on hosts 1 and 2"
for i in 1 2; do printf 'host %s: ' "$i"; agent "$i" sync --config "$WORK/inventory-2.json"; done
show ip -n "$PREFIX-h1" route show dev flannel.1
if ip -n "$PREFIX-h1" route show 10.244.3.0/24 | grep -q .; then echo "demo: 10.244.3.0/24 is still routed on host 1" >&2; exit 1; fi
echo "10.244.3.0/24 is gone from host 1."
ping_matrix 3

bold "demo passed: cleaning up"
