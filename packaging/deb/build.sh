#!/usr/bin/env bash
# Builds the Debian package of vxlan-agent with dpkg-deb (no debhelper):
#   packaging/deb/build.sh [OUTPUT_DIR]     (default: .build/deb)
# `make deb` runs it. It builds the release binary with the Swift runtime linked
# statically (--static-swift-stdlib: the Swift runtime on a build machine lives
# in a toolchain directory, /opt/swift here, that no Debian package provides, so
# the package cannot depend on it), strips it, and lays out:
#   /usr/bin/vxlan-agent
#   /usr/libexec/vxlan-agent/flanneld -> ../../bin/vxlan-agent  (registered as the
#       `flanneld` alternative, /usr/bin/flanneld, by postinst)
#   /etc/iproute2/rt_protos.d/vxlan-agent.conf          (conffile)
#   /etc/vxlan-agent/*.example.json                      (conffiles)
#   /lib/systemd/system/vxlan-agent{,-sync}.service, vxlan-agent-sync.timer
#   /usr/share/man/man1/vxlan-agent*.1.gz                (from the argument parser)
#   bash, zsh and fish completions (from the argument parser)
#   /usr/share/doc/vxlan-agent/{copyright,changelog.gz,*.md}
# Depends: is what dpkg-shlibdeps finds the binary links (libmnl0, libc6, ...).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/.build/deb}
swift=${SWIFT:-swift}
# SCRATCH: SwiftPM's build directory (default .build). The package test passes
# .build-deb: `swift test` holds .build's lock while it runs.
scratch=${SCRATCH:-$root/.build}
cd "$root"

version=$(sed -n 's/.*static let version = "\(.*\)"/\1/p' Sources/vxlan-agent/VXLANAgent.swift)
[ -n "$version" ] || { echo "build.sh: no version in Sources/vxlan-agent/VXLANAgent.swift" >&2; exit 1; }
arch=$(dpkg --print-architecture)
package=vxlan-agent

# BINARY and GENERATE_MANUAL (the generate-manual tool the plugin builds) skip
# SwiftPM: the package test runs this script from inside `swift test`, which holds
# the build directory's lock.
if [ -n "${BINARY:-}" ]; then
    binary=$BINARY
else
    echo "building the release binary (Swift runtime linked statically)" >&2
    "$swift" build --scratch-path "$scratch" -c release --static-swift-stdlib --product vxlan-agent >&2
    binary=$("$swift" build --scratch-path "$scratch" -c release --static-swift-stdlib --show-bin-path)/vxlan-agent
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/vxlan-agent-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
pkg=$stage/$package
mkdir -p "$pkg/DEBIAN"

# Directories 0755, files 0644 unless executable, whatever the umask says.
umask 022

install -D -m 0755 "$binary" "$pkg/usr/bin/vxlan-agent"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$pkg/usr/bin/vxlan-agent"
mkdir -p "$pkg/usr/libexec/vxlan-agent"
ln -s ../../bin/vxlan-agent "$pkg/usr/libexec/vxlan-agent/flanneld"

install -D -m 0644 /dev/null "$pkg/etc/iproute2/rt_protos.d/vxlan-agent.conf"
printf '152\tvxlan-agent\n' > "$pkg/etc/iproute2/rt_protos.d/vxlan-agent.conf"
for example in config.etcd.example.json config.static.example.json inventory.example.json net-conf.example.json; do
    install -D -m 0644 "deploy/$example" "$pkg/etc/vxlan-agent/$example"
done

units=$pkg/lib/systemd/system
mkdir -p "$units"
for unit in vxlan-agent.service vxlan-agent-sync.service vxlan-agent-sync.timer; do
    sed -e 's|/usr/local/bin/vxlan-agent|/usr/bin/vxlan-agent|g' \
        -e 's|^Documentation=.*|Documentation=man:vxlan-agent(1) file:///usr/share/doc/vxlan-agent/operations.md|' \
        "deploy/$unit" > "$units/$unit"
    chmod 0644 "$units/$unit"
done

# The man pages: swift-argument-parser's generate-manual tool (what its
# `generate-manual` plugin runs; it works offline once the package's dependencies
# are resolved), which reads the command tree from the binary
# (`--experimental-dump-help`). One page per command (vxlan-agent.1,
# vxlan-agent.flanneld.1, ...). The tool is built alone (debug): the plugin
# would build every product in release without --static-swift-stdlib in this
# scratch path, and SwiftPM's next static build then relinked from that,
# dynamically (a second `make deb` refused its own binary).
man=$pkg/usr/share/man/man1
mkdir -p "$man"
if [ -z "${GENERATE_MANUAL:-}" ]; then
    "$swift" build --scratch-path "$scratch" --product generate-manual >&2
    GENERATE_MANUAL=$("$swift" build --scratch-path "$scratch" --show-bin-path)/generate-manual
fi
mkdir -p "$stage/manual"
"$GENERATE_MANUAL" "$binary" --multi-page --section 1 --authors "the vxlan-agent authors" \
    --output-directory "$stage/manual" >&2
pages=$(find "$stage/manual" -name 'vxlan-agent*.1')
[ -n "$pages" ] || { echo "build.sh: generate-manual wrote no page" >&2; exit 1; }
# A subcommand's page names itself `.Nm "vxlan-agent sync"`, which whatis
# (lexgrog) cannot read: name it vxlan-agent-sync (as git names git-commit), in
# a file of that name, and keep the usage in SYNOPSIS as typed: `vxlan-agent sync`.
for page in $pages; do
    base=$(basename "$page" .1)
    case $base in
    *.*)
        command="${base%%.*} ${base#*.}"
        name="${base%%.*}-${base#*.}"
        sed -E -e "/^\.Sh NAME/,/^\.Sh SYNOPSIS/ s/^\.Nm \"$command\"\$/.Nm $name/" \
            -e "/^\.Sh SYNOPSIS/,\$ s/^\.Nm\$/.Nm $command/" \
            -e "s/^\.Dt [^ ]+ /.Dt $(echo "$name" | tr a-z A-Z) /" "$page" > "$man/$name.1"
        ;;
    *) cp "$page" "$man/$base.1" ;;
    esac
done
gzip -9n "$man"/*.1

# Completions, from the same parser.
install -d "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions" \
    "$pkg/usr/share/fish/vendor_completions.d"
# bash sources completions: no #! line (lintian: bash-completion-with-hashbang).
"$pkg/usr/bin/vxlan-agent" --generate-completion-script bash | sed '1{/^#!/d}' > "$pkg/usr/share/bash-completion/completions/vxlan-agent"
"$pkg/usr/bin/vxlan-agent" --generate-completion-script zsh > "$pkg/usr/share/zsh/vendor-completions/_vxlan-agent"
"$pkg/usr/bin/vxlan-agent" --generate-completion-script fish > "$pkg/usr/share/fish/vendor_completions.d/vxlan-agent.fish"
chmod 0644 "$pkg"/usr/share/bash-completion/completions/* "$pkg"/usr/share/zsh/vendor-completions/* \
    "$pkg"/usr/share/fish/vendor_completions.d/*

doc=$pkg/usr/share/doc/$package
install -D -m 0644 packaging/deb/copyright "$doc/copyright"
for page in operations.md configuration.md backends.md migrating-from-flannel.md; do
    [ -f "Docs/$page" ] && install -m 0644 "Docs/$page" "$doc/$page"
done
sed "s/@VERSION@/$version/; s/@DATE@/$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")/" \
    packaging/deb/changelog.in | gzip -9n > "$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
install -D -m 0644 packaging/deb/lintian-overrides "$pkg/usr/share/lintian/overrides/$package"

install -m 0755 packaging/deb/postinst packaging/deb/prerm "$pkg/DEBIAN/"
(cd "$pkg" && find etc -type f | sed 's|^|/|' | sort) > "$pkg/DEBIAN/conffiles"

# Depends: what the stripped binary links, as dpkg-shlibdeps names it.
mkdir -p "$stage/shlibs/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$package" "$package" > "$stage/shlibs/debian/control"
# A library no Debian package provides (the Swift runtime of a toolchain in /opt,
# when the binary was not linked with --static-swift-stdlib) cannot be a
# dependency: refuse to build a package that would not run where it is installed.
unowned=""
for lib in $(ldd "$pkg/usr/bin/vxlan-agent" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'); do
    dpkg -S "$lib" > /dev/null 2>&1 || dpkg -S "$(readlink -f "$lib")" > /dev/null 2>&1 || unowned="$unowned $lib"
done
if [ -n "$unowned" ]; then
    echo "build.sh: $binary links libraries no Debian package provides:$unowned" >&2
    echo "build.sh: build it with --static-swift-stdlib (unset BINARY to let this script do it)" >&2
    exit 1
fi
depends=$(cd "$stage/shlibs" && dpkg-shlibdeps -O "$pkg/usr/bin/vxlan-agent" 2> "$stage/shlibdeps.err" | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: $package
Version: $version
Architecture: $arch
Maintainer: vxlan-agent maintainers <maintainers@vxlan-agent.example.org>
Installed-Size: $size
Depends: $depends
Recommends: iproute2, nftables
Suggests: containernetworking-plugins, etcd-client
Section: net
Priority: optional
Homepage: https://github.com/vxlan-agent/vxlan-agent
Description: flannel-compatible VXLAN control plane
 vxlan-agent keeps a host's overlay forwarding state (the VXLAN device
 flannel.1, its routes, ARP and FDB entries; or host-gw routes; or the udp
 backend's flannel0) in sync with the cluster, read from a static inventory or
 from flannel's leases in etcd. It diffs against the kernel, batches netlink
 writes, listens for changes and repairs what is removed.
 .
 It speaks flannel's formats (net-conf.json, etcd leases, subnet.env) and
 flanneld's command line: the flanneld alternative it installs runs it as a
 drop-in for flanneld in etcd mode.
CONTROL

(cd "$pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/conffiles" "$pkg/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/${package}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >&2
echo "$deb"
