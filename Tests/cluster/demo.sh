#!/usr/bin/env bash
# make demo: vxlan-agent on a three-host cluster that lives in network
# namespaces on this machine, with two real CNI pods per host.
#
#   bash Tests/cluster/demo.sh PATH-TO-vxlan-agent      (as root)
#
# It builds the cluster (Tests/cluster/cluster.sh), runs `vxlan-agent sync` on
# every host, shows what the kernel then holds, pings every pod from every pod
# on the other hosts, shows a dry-run, takes host 3 out of the inventory, switches
# backends (host-gw, udp), shows a dual-stack cluster whose pods ping over IPv6 and
# an IPv6-only one (no IPv4 address anywhere), and
# removes everything again, also on failure or Ctrl-C. Exit 0 = demo passed.
# VXA_DEMO_KEEP=1 keeps the cluster at the end (to look around; it prints how
# to remove it).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER="$HERE/cluster.sh"
PREFIX="vxa-demo-$$"
DIR="/run/$PREFIX"          # the cluster's own directory: cluster.sh down removes it
PREFIX6="vxa-demo6-$$"      # the dual-stack cluster of the last step
DIR6="/run/$PREFIX6"
PREFIX7="vxa-demo7-$$"      # the IPv6-only cluster
DIR7="/run/$PREFIX7"
HOSTS=3
PODS=2

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
    B=$'\033[1m' D=$'\033[2m' G=$'\033[32m' R=$'\033[31m' N=$'\033[0m'
else
    B="" D="" G="" R="" N=""
fi

STEP=0
step() { STEP=$((STEP + 1)); printf '\n%s== %s. %s%s\n' "$B" "$STEP" "$1" "$N"; [ -z "${2:-}" ] || printf '%s\n' "$2"; }
# Shows a command, then runs it (the demo's commands are the ones to try by hand).
# The command line goes to fd 3, the demo's stdout, also when the command's own
# output is captured, piped or redirected to a file.
exec 3>&1
cmdline() { printf '%s$ %s%s\n' "$D" "$*" "$N" >&3; }
show() { cmdline "$@"; "$@"; }
die() { printf '\n%sdemo failed: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

# ----------------------------------------------------------------------------
AGENT=${1:-}
[ -n "$AGENT" ] || { echo "usage: demo.sh PATH-TO-vxlan-agent (make demo builds it and passes .build/debug/vxlan-agent)" >&2; exit 2; }
[ -x "$AGENT" ] || [ -x "$(command -v "$AGENT" 2>/dev/null)" ] || die "$AGENT is not an executable (run 'make build' first)"
# Shown relative to the current directory when inside it, as one would type it.
[[ $CLUSTER == "$PWD"/* ]] && CLUSTER=${CLUSTER#"$PWD"/}
[ "$(id -u)" = 0 ] || die "run as root: the demo creates network namespaces"
for tool in ip bridge ping; do
    command -v "$tool" > /dev/null || die "$tool is missing (apt-get install iproute2 iputils-ping)"
done
[ -x "${CNI_PATH:-/usr/lib/cni}/bridge" ] || die "${CNI_PATH:-/usr/lib/cni}/bridge is missing (apt-get install containernetworking-plugins)"

CLEANED=0
DAEMONS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${DAEMONS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    [ $CLEANED = 1 ] && exit $rc
    CLEANED=1
    if [ -n "${VXA_DEMO_KEEP:-}" ]; then
        printf '\nVXA_DEMO_KEEP is set: the cluster stays. Look around with\n'
        printf '  bash %s exec %s 1 ip route\nand remove it with\n  bash %s down %s\n' "$CLUSTER" "$PREFIX" "$CLUSTER" "$PREFIX"
        printf '(the dual-stack one: bash %s down %s; the IPv6-only one: bash %s down %s)\n' "$CLUSTER" "$PREFIX6" "$CLUSTER" "$PREFIX7"
        exit $rc
    fi
    [ $rc = 0 ] || printf '\nremoving the cluster %s ...\n' "$PREFIX" >&2
    bash "$CLUSTER" down "$PREFIX" || true
    bash "$CLUSTER" down "$PREFIX6" > /dev/null 2>&1 || true
    bash "$CLUSTER" down "$PREFIX7" > /dev/null 2>&1 || true
    exit $rc
}
trap cleanup EXIT
trap 'echo; echo "interrupted" >&2; exit 130' INT
trap 'echo "terminated" >&2; exit 143' TERM

agent() { # HOST-INDEX ARGS...: runs the agent inside host I's namespace, shown
    local i=$1; shift
    show ip netns exec "$PREFIX-h$i" "$AGENT" "$@"
}
lock() { echo "$DIR/h$1.lock"; }

printf '%svxlan-agent demo%s: %s hosts x %s pods, all in network namespaces named %s-*\n' "$B" "$N" "$HOSTS" "$PODS" "$PREFIX"

# ----------------------------------------------------------------------------
step "Build the cluster" \
"An underlay bridge joins hosts 198.18.0.1-$HOSTS; each host gets pods from the real
CNI plugins (bridge + host-local) on its own subnet 10.244.I.0/24."
show bash "$CLUSTER" up "$PREFIX" "$HOSTS" "$PODS"
show bash "$CLUSTER" pods "$PREFIX" | awk '{printf "  host %s  pod %s   %-20s %s\n", $1, $2, $3, $4}'

mapfile -t PODLIST < <(bash "$CLUSTER" pods "$PREFIX")
pod_ns() { bash "$CLUSTER" pods "$PREFIX" | awk -v h="$1" -v p="$2" '$1 == h && $2 == p {print $3}'; }
pod_ip() { bash "$CLUSTER" pods "$PREFIX" | awk -v h="$1" -v p="$2" '$1 == h && $2 == p {print $4}'; }
[ ${#PODLIST[@]} = $((HOSTS * PODS)) ] || die "expected $((HOSTS * PODS)) pods, got ${#PODLIST[@]}"

step "Before vxlan-agent: pods reach their own host's pods only"
show ip netns exec "$(pod_ns 1 1)" ping -c 1 -W 2 "$(pod_ip 1 2)" | grep -E 'transmitted' \
    || die "pods on the same host do not reach each other"
echo "  host 1's other pod answers: both hang on host 1's bridge cni0"
set +e; out=$(show ip netns exec "$(pod_ns 1 1)" ping -c 1 -W 1 "$(pod_ip 2 1)" 2>&1); rc=$?; set -e
printf '%s\n' "$out" | grep -E 'transmitted|nreachable' || true
[ $rc != 0 ] || die "host 2's pod answers before any agent ran: something else routes the pod network"
echo "  no answer from host 2's pod, as expected: host 1 has no route to 10.244.2.0/24 yet"

# ----------------------------------------------------------------------------
step "Write the inventory" \
"One file for the whole cluster; each host picks itself with --node node-I."
cmdline bash "$CLUSTER" inventory "$PREFIX" "$HOSTS" "> $DIR/inventory.json"
bash "$CLUSTER" inventory "$PREFIX" "$HOSTS" > "$DIR/inventory.json"
show cat "$DIR/inventory.json"

# ----------------------------------------------------------------------------
step "Run vxlan-agent sync on every host" \
"It creates flannel.1 and, per peer, an FDB entry, a neighbor and a route (one summary line each)."
for i in $(seq 1 $HOSTS); do
    set +e; agent "$i" sync --config "$DIR/inventory.json" --node "node-$i" --lock-file "$(lock "$i")"; rc=$?; set -e
    [ $rc = 0 ] || die "sync on host $i exited $rc (0 = applied)"
done

# ----------------------------------------------------------------------------
step "What host 1's kernel holds now" \
"The VTEP, a route per peer subnet, and the peer VTEPs' ARP and FDB entries."
H1="$PREFIX-h1"
show ip -n "$H1" -d link show flannel.1 || die "host 1 has no VXLAN device flannel.1 after the sync"
show ip -n "$H1" route show dev flannel.1
show ip -n "$H1" neigh show dev flannel.1
show bridge -n "$H1" fdb show dev flannel.1

# ----------------------------------------------------------------------------
step "Every pod pings every pod on the other hosts" \
"Each cell: ip netns exec ROW-POD ping -c 1 -W 2 COLUMN-IP, across the VXLAN tunnel."
show bash "$CLUSTER" ping "$PREFIX" || die "some cross-host pings failed (the FAIL cells above)"

# ----------------------------------------------------------------------------
step "A dry-run on a host in sync" \
"diff (an alias of sync --dry-run) compares the kernel with the inventory and changes nothing; exit 0 = in sync."
set +e
out=$(agent 1 diff --config "$DIR/inventory.json" --node node-1 --lock-file "$(lock 1)" 2>&1); rc=$?
set -e
printf '%s\n' "$out"
echo "exit code $rc"
[ $rc = 0 ] || die "diff on a host in sync exited $rc, expected 0"
if printf '%s\n' "$out" | grep -qE '^[-+~] '; then die "diff on a host in sync listed changes"; fi

# ----------------------------------------------------------------------------
step "Host 3 leaves the cluster" \
"A new inventory without node-3; the diff on host 1 lists what would go (exit 2 = changes pending)."
cmdline bash "$CLUSTER" inventory "$PREFIX" "$HOSTS" --without 3 "> $DIR/inventory-without-3.json"
bash "$CLUSTER" inventory "$PREFIX" "$HOSTS" --without 3 > "$DIR/inventory-without-3.json"
set +e
out=$(agent 1 diff --config "$DIR/inventory-without-3.json" --node node-1 --lock-file "$(lock 1)" 2>&1); rc=$?
set -e
printf '%s\n' "$out"
echo "exit code $rc"
[ $rc = 2 ] || die "diff after removing host 3 exited $rc, expected 2 (changes pending)"
printf '%s\n' "$out" | grep -qE '^- ' || die "the diff lists no removals"
if printf '%s\n' "$out" | grep -qE '^[+~] '; then die "the diff adds or changes something; only removals were expected"; fi
if printf '%s\n' "$out" | grep -E '^- ' | grep -qvE '10\.244\.3\.|198\.18\.0\.3( |$)'; then
    die "the diff removes something that is not host 3's"
fi

step "Apply it on hosts 1 and 2"
for i in 1 2; do
    set +e; agent "$i" sync --config "$DIR/inventory-without-3.json" --node "node-$i" --lock-file "$(lock "$i")"; rc=$?; set -e
    [ $rc = 0 ] || die "sync on host $i exited $rc"
done
show ip -n "$H1" route show dev flannel.1
if [ -n "$(ip -n "$H1" route show 10.244.3.0/24)" ]; then die "10.244.3.0/24 is still routed on host 1"; fi
if ip -n "$H1" neigh show dev flannel.1 | grep -q '^10\.244\.3\.0 '; then die "host 3's VTEP is still in host 1's ARP table"; fi
echo "  10.244.3.0/24 is gone from host 1's routes, and host 3's neighbor entry with it."
echo "  Pods on hosts 1 and 2 still reach each other:"
show bash "$CLUSTER" ping "$PREFIX" --without 3 || die "pods on hosts 1 and 2 lost each other"

# ----------------------------------------------------------------------------
step "Switch hosts 1 and 2 to host-gw: no encapsulation" \
"The hosts share one L2 segment, so each can route the other's pod subnet straight
to the other's address on eth0. The same inventory with {\"Type\": \"host-gw\"}: one
sync per host removes flannel.1 with its entries and routes via the peer instead."
cmdline bash "$CLUSTER" inventory "$PREFIX" "$HOSTS" --without 3 --backend host-gw "> $DIR/inventory-host-gw.json"
bash "$CLUSTER" inventory "$PREFIX" "$HOSTS" --without 3 --backend host-gw > "$DIR/inventory-host-gw.json"
for i in 1 2; do
    set +e; agent "$i" sync --config "$DIR/inventory-host-gw.json" --node "node-$i" --lock-file "$(lock "$i")"; rc=$?; set -e
    [ $rc = 0 ] || die "host-gw sync on host $i exited $rc"
done
show ip -n "$H1" route show proto vxlan-agent
if ip -n "$H1" link show flannel.1 > /dev/null 2>&1; then die "flannel.1 is still on host 1 after switching to host-gw"; fi
ip -n "$H1" route show 10.244.2.0/24 | grep -q 'via 198.18.0.2 dev eth0' || die "host 1 does not route 10.244.2.0/24 via host 2"
echo "  flannel.1 is gone; 10.244.2.0/24 goes via 198.18.0.2 on eth0, unencapsulated."
show bash "$CLUSTER" ping "$PREFIX" --without 3 || die "pods on hosts 1 and 2 lost each other on host-gw"

# ----------------------------------------------------------------------------
step "Switch hosts 1 and 2 to udp: packets through flannel0, in user space" \
"flannel's first backend: the kernel routes the pod network into the TUN device flannel0,
and vxlan-agent run reads each packet and sends it to the peer in a UDP datagram (port
8285). sync would make the device and its route; the data path needs the daemon."
for i in 1 2; do
    bash "$CLUSTER" inventory "$PREFIX" "$HOSTS" --without 3 --backend udp \
        | sed '$ s|}$|, "subnetFile": "'"$DIR"'/h'"$i"'-subnet.env", "ipMasq": false, "metricsAddress": "", "cniConfFile": ""}|' \
        > "$DIR/udp-h$i.json"
    cmdline ip netns exec "$PREFIX-h$i" "$AGENT" run --config "$DIR/udp-h$i.json" --node "node-$i" --lock-file "$(lock "$i")" "&"
    ip netns exec "$PREFIX-h$i" "$AGENT" run --config "$DIR/udp-h$i.json" --node "node-$i" --lock-file "$(lock "$i")" \
        > "$DIR/udp-h$i.log" 2>&1 &
    DAEMONS+=($!)
done
for i in 1 2; do
    for _ in $(seq 100); do grep -q "udp data path started" "$DIR/udp-h$i.log" && break; sleep 0.1; done
    grep -q "udp data path started" "$DIR/udp-h$i.log" || { cat "$DIR/udp-h$i.log"; die "the udp data path did not start on host $i"; }
done
show ip -n "$H1" -d link show flannel0 | grep -E 'flannel0|tun type'
show ip -n "$H1" route show dev flannel0
show bash "$CLUSTER" ping "$PREFIX" --without 3 || die "pods on hosts 1 and 2 lost each other on udp"
for pid in "${DAEMONS[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
DAEMONS=()
echo "  both daemons stopped (SIGTERM); flannel0 and its route stay for the next run, as sync's entries do."

# ----------------------------------------------------------------------------
step "Dual stack: IPv4 and IPv6 pods" \
"A second cluster of two hosts, dual stack (underlay 2001:2::/64, pods on
fd00:10:244:I::/64 too). With \"EnableIPv6\": true one sync per host also makes
flannel-v6.1 (local = the host's IPv6 address) and its IPv6 routes, NDP and FDB entries."
show bash "$CLUSTER" up "$PREFIX6" 2 1 --dual
cmdline bash "$CLUSTER" inventory "$PREFIX6" --dual "> $DIR6/inventory.json"
bash "$CLUSTER" inventory "$PREFIX6" --dual > "$DIR6/inventory.json"
for i in 1 2; do
    set +e; show ip netns exec "$PREFIX6-h$i" "$AGENT" sync --config "$DIR6/inventory.json" --node "node-$i" --lock-file "$DIR6/h$i.lock"; rc=$?; set -e
    [ $rc = 0 ] || die "dual-stack sync on host $i exited $rc"
done
show ip -n "$PREFIX6-h1" -6 route show dev flannel-v6.1 proto vxlan-agent
show bridge -n "$PREFIX6-h1" fdb show dev flannel-v6.1
# The /128 on flannel-v6.1 goes through duplicate address detection first (a second or so).
for _ in $(seq 30); do bash "$CLUSTER" ping "$PREFIX6" --v6 > /dev/null 2>&1 && break; sleep 0.2; done
show bash "$CLUSTER" ping "$PREFIX6" --v6 || die "pods of the dual-stack cluster do not reach each other over IPv6"
show bash "$CLUSTER" ping "$PREFIX6" || die "pods of the dual-stack cluster do not reach each other over IPv4"

# ----------------------------------------------------------------------------
step "IPv6 only" \
"A third cluster of two hosts with no IPv4 address at all (\"EnableIPv4\": false):
flannel-v6.1 alone, nothing of IPv4 programmed."
show bash "$CLUSTER" up "$PREFIX7" 2 1 --v6only
cmdline bash "$CLUSTER" inventory "$PREFIX7" --v6only "> $DIR7/inventory.json"
bash "$CLUSTER" inventory "$PREFIX7" --v6only > "$DIR7/inventory.json"
show head -n 2 "$DIR7/inventory.json"
for i in 1 2; do
    set +e; show ip netns exec "$PREFIX7-h$i" "$AGENT" sync --config "$DIR7/inventory.json" --node "node-$i" --lock-file "$DIR7/h$i.lock"; rc=$?; set -e
    [ $rc = 0 ] || die "IPv6-only sync on host $i exited $rc"
done
show ip -n "$PREFIX7-h1" -6 route show proto vxlan-agent
[ -z "$(ip -n "$PREFIX7-h1" -4 route show proto vxlan-agent)" ] || die "an IPv6-only host holds IPv4 routes of ours"
for _ in $(seq 30); do bash "$CLUSTER" ping "$PREFIX7" --v6 > /dev/null 2>&1 && break; sleep 0.2; done
show bash "$CLUSTER" ping "$PREFIX7" --v6 || die "pods of the IPv6-only cluster do not reach each other"

# ----------------------------------------------------------------------------
if [ -z "${VXA_DEMO_KEEP:-}" ]; then
    step "Tear down"
    show bash "$CLUSTER" down "$PREFIX7"
    show bash "$CLUSTER" down "$PREFIX6"
    show bash "$CLUSTER" down "$PREFIX"
    CLEANED=1
    left=$(bash "$CLUSTER" namespaces "$PREFIX"; bash "$CLUSTER" namespaces "$PREFIX6"; bash "$CLUSTER" namespaces "$PREFIX7")
    [ -z "$left" ] && [ ! -e "$DIR" ] && [ ! -e "$DIR6" ] && [ ! -e "$DIR7" ] || die "left behind: $left $DIR $DIR6 $DIR7"
    echo "  no namespace named $PREFIX-* left, $DIR removed"
fi
printf '\n%sdemo passed%s\n' "$G$B" "$N"
