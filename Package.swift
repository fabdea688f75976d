// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "vxlan-agent",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vxlan-agent", targets: ["vxlan-agent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        // FilePath, for Subprocess' executable paths (already in the graph through swift-subprocess).
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // libmnl from the system (Debian: libmnl-dev).
        .systemLibrary(
            name: "CLibMnl",
            pkgConfig: "libmnl",
            providers: [.apt(["libmnl-dev"])]
        ),
        // What Swift cannot import from libmnl (callbacks, macro-laid-out payloads).
        .target(name: "CNetlinkShim", dependencies: ["CLibMnl"]),
        // Sockets, messages, attributes, batches, dumps. Knows nothing of VXLAN.
        .target(name: "Netlink", dependencies: ["CLibMnl", "CNetlinkShim"]),
        // Pure values shared by the kernel side and the plan side: addresses, kernel
        // objects (VXLAN device, neighbor, FDB, nexthop, route), `Change`,
        // `KernelSnapshot`, and `Renderer` (iproute2's words). No libmnl.
        .target(name: "Model"),
        // The kernel: requests, replies, snapshot and apply over netlink (and the
        // TUN device's ioctls, for the udp backend's flannel0).
        .target(name: "Dataplane", dependencies: ["Model", "Netlink", "CLibMnl", "CTunnelShim"]),
        // The udp backend's system calls Swift cannot spell: TUN ioctls, sendmsg/recvmsg
        // with UDP_SEGMENT and UDP_GRO control messages.
        .target(name: "CTunnelShim"),
        // The udp backend's data path: TUN <-> UDP on threads of its own (segmentation,
        // merging, checksums, the peer table, counters).
        .target(name: "Tunnel", dependencies: ["Model", "CTunnelShim"]),
        // Pure: configuration, validation, desired state, diff, plan output.
        .target(name: "Reconcile", dependencies: ["Model"]),
        // Where the cluster comes from: the static inventory (etcd leases come with the daemon).
        .target(name: "Registry", dependencies: ["Model", "Reconcile"]),
        // etcd v3 over its JSON gateway (HTTP/1.1, TLS with client certificates). Its own
        // module, so the pure modules never see an HTTP stack (the one binary links it:
        // `sync` and `diff` read etcd too).
        .target(name: "Etcd", dependencies: [
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        // Wiring: one sync, the lock, the daemon.
        .target(name: "Agent", dependencies: [
            "Model", "Dataplane", "Reconcile", "Registry",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // `vxlan-agent run`: the etcd registry, kernel events, subnet.env, CNI config,
        // masquerade, /healthz and /metrics around the same reconciler as `sync`.
        .target(name: "Daemon", dependencies: [
            "Agent", "Model", "Dataplane", "Netlink", "CLibMnl", "Reconcile", "Registry", "Etcd", "Tunnel",
            .product(name: "Logging", package: "swift-log"),
            // The Kubernetes Node API (KubeClient.swift).
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Subprocess", package: "swift-subprocess"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .executableTarget(name: "vxlan-agent", dependencies: [
            "Agent", "Daemon", "Model", "Reconcile", "Registry", "Dataplane",
            "Netlink", "CLibMnl", // interface selection's route lookups (vxlan-agent flanneld)
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "TunnelTests", dependencies: ["Tunnel", "Model", "CTunnelShim", "TestSupport"]),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "Model", "Dataplane", "CLibMnl", "CNetlinkShim"]),
        .testTarget(name: "ReconcileTests", dependencies: ["Model", "Reconcile", "Registry", "Dataplane", "TestSupport"]),
        .testTarget(name: "DataplaneTests", dependencies: ["Model", "Dataplane", "Netlink", "CLibMnl", "Agent", "Reconcile", "Registry", "TestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["Reconcile", "Dataplane", "TestSupport"]),
        // A real etcd on loopback, started by the tests.
        .testTarget(name: "EtcdTests", dependencies: [
            "Etcd", "Daemon", "Registry", "Reconcile", "Model", "Dataplane", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The Kubernetes subnet manager against an in-process fake of the Node API.
        .testTarget(name: "KubeTests", dependencies: [
            "Daemon", "Registry", "Reconcile", "Model", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // Namespaces, commands and gating shared by the kernel tests.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
    ],
    swiftLanguageModes: [.v6]
)
