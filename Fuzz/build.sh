#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/Targets/*.swift) into $FUZZ_BUILD (default
# .build-fuzz): the project's own sources compiled with plain swiftc and
# `-sanitize=fuzzer,address`, one object per module, without SwiftPM, so the
# main `swift build` never sees a sanitizer flag. Only the modules that need no
# package dependency are compiled: Model, Netlink, Dataplane, Reconcile,
# Registry, and the Foundation-only files of Etcd (its gateway JSON and the
# decoding of answers). config and lease need no Netlink: Reconcile and
# Registry see only Model.
#
# Usage: Fuzz/build.sh [target...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${FUZZ_BUILD:-.build-fuzz}"
OPT="${FUZZ_OPT:--O}"
SANITIZE="${FUZZ_SANITIZE:-fuzzer,address}"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(config lease etcd netlink tunnel)

mkdir -p "$OUT/obj" "$OUT/modules" "$OUT/bin"
SWIFTC="${SWIFTC:-swiftc}"
# The toolchain's own clang (its sanitizer and libFuzzer runtimes match swiftc's).
toolchain_clang="$(dirname "$(command -v "$SWIFTC")")/clang"
CLANG="${CLANG:-$([ -x "$toolchain_clang" ] && echo "$toolchain_clang" || echo clang)}"
FLAGS=(-swift-version 6 -parse-as-library -sanitize="$SANITIZE" "$OPT" -g
       -I "$OUT/modules" -I Sources/CLibMnl -Xcc "-fmodule-map-file=$OUT/modules/CNetlinkShim.modulemap"
       -Xcc "-fmodule-map-file=$OUT/modules/CTunnelShim.modulemap")

# Rebuild $1 when it is missing or older than any of the other arguments.
stale() {
    local target=$1; shift
    [ -e "$target" ] || return 0
    for input in "$@"; do [ "$input" -nt "$target" ] && return 0; done
    return 1
}

# The C shim, and a module map for it (SwiftPM generates one; we write our own).
shim_header="$PWD/Sources/CNetlinkShim/include/vxa_shim.h"
printf 'module CNetlinkShim {\n    header "%s"\n    export *\n}\n' "$shim_header" > "$OUT/modules/CNetlinkShim.modulemap.new"
cmp -s "$OUT/modules/CNetlinkShim.modulemap.new" "$OUT/modules/CNetlinkShim.modulemap" 2>/dev/null \
    || mv "$OUT/modules/CNetlinkShim.modulemap.new" "$OUT/modules/CNetlinkShim.modulemap"
rm -f "$OUT/modules/CNetlinkShim.modulemap.new"
# The same for the TUN/UDP shim (Dataplane makes udp's TUN device with it).
tunnel_header="$PWD/Sources/CTunnelShim/include/vxa_tunnel.h"
printf 'module CTunnelShim {\n    header "%s"\n    export *\n}\n' "$tunnel_header" > "$OUT/modules/CTunnelShim.modulemap.new"
cmp -s "$OUT/modules/CTunnelShim.modulemap.new" "$OUT/modules/CTunnelShim.modulemap" 2>/dev/null \
    || mv "$OUT/modules/CTunnelShim.modulemap.new" "$OUT/modules/CTunnelShim.modulemap"
rm -f "$OUT/modules/CTunnelShim.modulemap.new"
if stale "$OUT/obj/CTunnelShim.o" Sources/CTunnelShim/tunnel.c "$tunnel_header"; then
    echo "fuzz: compiling CTunnelShim"
    "$CLANG" -c -O1 -g -fsanitize=fuzzer-no-link,address -I Sources/CTunnelShim/include Sources/CTunnelShim/tunnel.c \
        -o "$OUT/obj/CTunnelShim.o"
fi
if stale "$OUT/obj/CNetlinkShim.o" Sources/CNetlinkShim/shim.c "$shim_header"; then
    echo "fuzz: compiling CNetlinkShim"
    "$CLANG" -c -O1 -g -fsanitize=fuzzer-no-link,address $(pkg-config --cflags libmnl) \
        -I Sources/CNetlinkShim/include Sources/CNetlinkShim/shim.c -o "$OUT/obj/CNetlinkShim.o"
fi

# module NAME [dependency modules...] -- sources...
module() {
    local name=$1; shift
    local deps=()
    while [ "$1" != "--" ]; do deps+=("$OUT/modules/$1.swiftmodule"); shift; done
    shift
    if stale "$OUT/obj/$name.o" "$@" "${deps[@]}" "$0"; then
        echo "fuzz: compiling $name"
        "$SWIFTC" "${FLAGS[@]}" -module-name "$name" -wmo -enable-testing \
            -emit-module -emit-module-path "$OUT/modules/$name.swiftmodule" \
            -c -o "$OUT/obj/$name.o" "$@"
    fi
}

# target NAME objects... -- sources...: the fuzz entry point and the module objects it needs.
target() {
    local name=$1; shift
    local objects=()
    while [ "$1" != "--" ]; do objects+=("$OUT/obj/$1.o"); shift; done
    shift
    if stale "$OUT/bin/fuzz-$name" "$@" "${objects[@]}" "$0"; then
        echo "fuzz: linking fuzz-$name"
        "$SWIFTC" "${FLAGS[@]}" -module-name "Fuzz_$name" "$@" "${objects[@]}" \
            $(pkg-config --libs libmnl) -o "$OUT/bin/fuzz-$name" 2> >(grep -v 'Cannot export local symbol' >&2)
    fi
}

need_netlink=0 need_registry=0
for t in "${TARGETS[@]}"; do
    case $t in
        config|lease) need_registry=1 ;;
        netlink) need_netlink=1 ;;
        etcd|tunnel) ;;
        *) echo "fuzz: unknown target $t (config, lease, etcd, netlink, tunnel)" >&2; exit 2 ;;
    esac
done
if [ $need_netlink = 1 ] || [ $need_registry = 1 ]; then
    module Model -- Sources/Model/*.swift
fi
if [ $need_netlink = 1 ]; then
    module Netlink -- Sources/Netlink/*.swift
    module Dataplane Model Netlink -- Sources/Dataplane/*.swift
fi
if [ $need_registry = 1 ]; then
    module Reconcile Model -- Sources/Reconcile/*.swift
    module Registry Reconcile Model -- Sources/Registry/*.swift
fi

for t in "${TARGETS[@]}"; do
    case $t in
        config|lease)
            target "$t" Registry Reconcile Model -- "Fuzz/Targets/$t.swift" ;;
        netlink)
            target netlink Dataplane Model Netlink CNetlinkShim CTunnelShim -- Fuzz/Targets/netlink.swift ;;
        tunnel)
            # The udp data path's packet work (pure: no system call, no C shim).
            target tunnel -- Fuzz/Targets/tunnel.swift Sources/Tunnel/Packets.swift ;;
        etcd)
            # Etcd's Foundation-only files, compiled into the target itself: the
            # rest of the module needs AsyncHTTPClient and NIO. EtcdClientStub
            # stands in for the client class those files extend.
            target etcd -- Fuzz/Targets/etcd.swift Fuzz/Targets/EtcdClientStub.swift Sources/Etcd/GatewayJSON.swift \
                Sources/Etcd/GatewayDecoding.swift Sources/Etcd/GatewayRange.swift Sources/Etcd/EtcdTypes.swift Sources/Etcd/EtcdError.swift ;;
    esac
done
