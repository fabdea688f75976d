# vxlan-agent: a newcomer types `make demo` and `make test`; everything they
# need is installed here (Debian packages), nothing by hand.

SWIFT      ?= swift
PREFIX     ?= /usr/local
BIN        := .build/debug/vxlan-agent
RELEASE    := .build/release/vxlan-agent

# What building needs, and what the tests, the demo and the benchmarks run.
BUILD_PACKAGES := libmnl-dev pkg-config
TEST_PACKAGES  := $(BUILD_PACKAGES) iproute2 iputils-ping containernetworking-plugins \
                  nftables etcd-server etcd-client openssl strace procps gcc python3 tcpdump
BENCH_PACKAGES := $(TEST_PACKAGES) iperf3 gcc

.PHONY: all build release test demo bench bench-quick bench-sync bench-daemon bench-datapath install uninstall clean deps-build deps-test deps-bench fuzz fuzz-smoke

all: build

# Installs the Debian packages in $(1) that are missing (apt-get update first).
define ensure_packages
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps-build:
	$(call ensure_packages,$(BUILD_PACKAGES))

deps-test:
	$(call ensure_packages,$(TEST_PACKAGES))

deps-bench:
	$(call ensure_packages,$(BENCH_PACKAGES))

build: deps-build
	$(SWIFT) build

# The release binary links the Swift runtime and Foundation statically: a
# process starts without the dynamic loader resolving a dozen Swift libraries
# (`sync` is a whole process, run from cron). It then needs only libc, libm,
# libstdc++, libgcc_s, libz and libmnl from the system. Only the executable
# (the test support target imports Testing, which has no static build).
release: deps-build
	$(SWIFT) build -c release --static-swift-stdlib --product vxlan-agent

# Every test: pure ones, netlink golden bytes, the real kernel in private
# namespaces (root), a real etcd, and clusters of namespaces with real CNI pods.
# A short fuzz round first, so the test runner's summary is the last word. The
# Debian package is built before the tests (its release build alone, not beside
# the parallel tests); the package test (PackageTests) checks that .deb, and
# builds one itself (in .build-deb) when run without it.
test: deps-test
	$(MAKE) fuzz-smoke
	$(MAKE) deb
	$(SWIFT) build --build-tests
	VXA_DEB="$$(ls .build/deb/vxlan-agent_*.deb)" $(SWIFT) test --skip-build

# libFuzzer targets (Fuzz/): the configuration, lease, etcd gateway JSON and
# netlink reply parsers, built with swiftc -sanitize=fuzzer,address into
# .build-fuzz (never into .build). Each runs FUZZ_SECONDS from its seed corpus
# (Fuzz/corpus/<target>); new inputs and crashes stay in .build-fuzz. Fails
# when a target crashes, traps or hangs. `make test` runs a short round.
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 15

fuzz: deps-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash Fuzz/run.sh $(FUZZ_TARGETS)

fuzz-smoke: deps-build
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) bash Fuzz/run.sh $(FUZZ_TARGETS)

demo: deps-test build
	bash Tests/cluster/demo.sh $(BIN)

bench: deps-bench release
	python3 Benchmarks/bench.py $(RELEASE) full

bench-quick: deps-bench release
	python3 Benchmarks/bench.py $(RELEASE) quick

# Only the `sync` scenarios at 1,000 and 10,000 peers and issue 10's two sync targets: about a minute.
bench-sync: deps-bench release
	python3 Benchmarks/bench.py $(RELEASE) sync

# Only issue 10's daemon targets (`vxlan-agent run` against etcd): about 3 minutes.
bench-daemon: deps-bench release
	python3 Benchmarks/bench.py $(RELEASE) daemon

# Only issue 11's datapath table: pod-to-pod iperf3 over plain underlay routes,
# host-gw, VXLAN and VXLAN with DirectRouting, 5 rounds of 5 s: about 3 minutes.
bench-datapath: deps-bench release
	python3 Benchmarks/bench.py $(RELEASE) datapath

install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/iproute2/rt_protos.d
	install -m 0755 $(RELEASE) $(DESTDIR)$(PREFIX)/bin/vxlan-agent
	printf '152\tvxlan-agent\n' > $(DESTDIR)/etc/iproute2/rt_protos.d/vxlan-agent.conf

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/vxlan-agent $(DESTDIR)/etc/iproute2/rt_protos.d/vxlan-agent.conf

clean:
	rm -rf .build .build-fuzz Benchmarks/bin

# The Debian package: packaging/deb/build.sh builds the release binary (Swift
# runtime linked statically), the man pages and completions from the argument
# parser, and .build/deb/vxlan-agent_<version>_<arch>.deb with dpkg-deb; lintian
# must report no error (its warnings are explained in Docs/operations.md).
DEB_PACKAGES := $(BUILD_PACKAGES) dpkg-dev lintian binutils

.PHONY: deb deps-deb
deps-deb:
	$(call ensure_packages,$(DEB_PACKAGES))

deb: deps-deb
	SWIFT=$(SWIFT) bash packaging/deb/build.sh .build/deb
	lintian --fail-on error --info .build/deb/vxlan-agent_*.deb

# The package test (Tests/EndToEndTests/PackageTests.swift) runs the same script,
# in its own build directory (.build-deb: `swift test` holds .build's lock).
TEST_PACKAGES += dpkg-dev lintian binutils

.PHONY: clean-deb
clean: clean-deb
clean-deb:
	rm -rf .build-deb
