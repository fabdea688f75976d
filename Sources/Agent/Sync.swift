import Dataplane
import Foundation
import Model
import Reconcile
import Registry

/// An error of one sync, ready to print: it says which file, field, peer or
/// kernel object is at fault.
public struct SyncError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The outcome of one sync (or dry-run).
public struct SyncOutcome: Sendable {
    public var plan: Plan
    public var desired: DesiredState
    public var output: PlanOutput
    /// nil for a dry-run.
    public var report: ApplyReport?
    public var layout: RouteLayout
    /// The device's interface index after the sync (nil: there is none).
    public var deviceIndex: Int32?
    /// How long each phase took: (name, seconds), in order.
    public var timings: [(String, Double)] = []
    /// What the kernel held before the plan, and what the host is: the daemon
    /// keeps its picture of the kernel from these.
    public var snapshot = KernelSnapshot()
    public var host: HostFacts?
    /// Dual stack's IPv6 plane (`flannel-v6.<VNI>`): its plan, desired state,
    /// what was applied and what the kernel held. An IPv4-only network has a
    /// plan here only when it removes what a dual-stack run left.
    public var plan6: Plan6?
    public var desired6: DesiredState6?
    public var report6: ApplyReport6?
    public var snapshot6: KernelSnapshot6?

    /// The host matches the desired state (dry-run: nothing to do; sync: applied without failure).
    public var inSync: Bool {
        let ipv4 = report.map { $0.failures.isEmpty } ?? plan.isEmpty
        let ipv6 = report6.map { $0.failures.isEmpty } ?? (plan6?.isEmpty ?? true)
        return ipv4 && ipv6
    }

    /// Peers left out, of both planes.
    public var skippedCount: Int { plan.skipped.count + (plan6?.skipped.count ?? 0) }
}

/// One pass of config -> desired state -> snapshot -> plan -> (apply).
public struct Syncer {
    public var view: ClusterView
    public var interface: String?
    public var layout: RouteLayout?
    public var deviceName: String?
    /// The IPv6 device's name (dual stack); default `flannel-v6.<VNI>`.
    public var deviceName6: String?
    public var proto: UInt8 = AgentSettings.defaultProtocol

    public init(view: ClusterView, interface: String? = nil, layout: RouteLayout? = nil, deviceName: String? = nil) {
        self.view = view
        self.interface = interface
        self.layout = layout
        self.deviceName = deviceName
    }

    /// The underlay: the named interface, or the one holding this node's public IP.
    func underlay(_ dataplane: Dataplane, addresses: [(index: Int32, prefix: IPv4Prefix)]) throws -> LinkState {
        let link: LinkState
        if let interface {
            guard let named = try dataplane.link(named: interface) else {
                throw SyncError("interface \(interface) (the underlay of node \(view.local.name)) does not exist")
            }
            link = named
        } else {
            do {
                link = try dataplane.underlay(holding: view.local.publicIP, addresses: addresses)
            } catch DataplaneError.notFound {
                throw SyncError("no interface of this host holds \(view.local.publicIP), the publicIP of node \(view.local.name) "
                                + "(\(view.local.origin)); is --node right?")
            }
        }
        if link.isLoopback {
            throw SyncError("interface \(link.name) (the underlay of node \(view.local.name)\(interface == nil ? ", holding its publicIP \(view.local.publicIP)" : "")) "
                            + "is a loopback device: VXLAN packets sent there never leave this host; "
                            + "set \"interface\" to the device that reaches the other nodes")
        }
        return link
    }

    /// What a pass read from the host before it planned: the underlay, the
    /// kernel's snapshot and the host's facts. It depends on the network, this
    /// node and the settings only, not on the peers (`sync` reads it while the
    /// inventory's nodes are validated).
    public struct Observation: Sendable {
        public var snapshot: KernelSnapshot
        public var host: HostFacts
        public var layout: RouteLayout
        public var deviceName: String
        /// Dual stack's IPv6 plane as the kernel holds it; in an IPv4-only
        /// network, only when a leftover IPv6 device of ours is there.
        public var snapshot6: KernelSnapshot6?
        /// (name, seconds) of each phase so far.
        public var timings: [(String, Double)]
    }

    /// Whether `observe` would read the same with `other`: the same network, this
    /// node, interface and settings (the peers do not matter).
    public func observes(like other: Syncer) -> Bool {
        view.network == other.view.network && view.local == other.view.local && interface == other.interface
            && layout == other.layout && deviceName == other.deviceName && deviceName6 == other.deviceName6 && proto == other.proto
    }

    /// Computes the plan, and applies it unless `dryRun`.
    public func run(dataplane: Dataplane, dryRun: Bool) throws -> SyncOutcome {
        try run(dataplane: dataplane, observation: observe(dataplane: dataplane), dryRun: dryRun)
    }

    /// Reads the host: the underlay, the snapshot, the route layout. Writes nothing.
    public func observe(dataplane: Dataplane) throws -> Observation {
        var laps = Laps()
        let local = view.local
        let ipv4 = view.network.enableIPv4
        if ipv4, view.network.network.contains(local.publicIP) {
            throw SyncError("publicIP \(local.publicIP) of this node \(local.name) (\(local.origin)) is inside the pod network "
                            + "\(view.network.network): VXLAN packets to it would be routed back into the overlay")
        }
        // One address dump serves the underlay lookup, peer validation and the
        // snapshot (the device's addresses).
        let hostAddresses = try dataplane.addresses()
        // IPv6-only: the underlay is the interface that holds this node's public IPv6.
        // (its IPv6 addresses, dumped for that, serve observe6 too)
        var addresses6: [(index: Int32, prefix: IPv6Prefix)]?
        let underlay: LinkState
        if ipv4 {
            underlay = try self.underlay(dataplane, addresses: hostAddresses)
        } else {
            addresses6 = try dataplane.addresses6()
            underlay = try ipv6OnlyUnderlay(dataplane, addresses6: addresses6 ?? [])
        }
        // The kernel refuses a VXLAN MTU above what the underlay carries with the
        // 50 bytes of headers (EINVAL on every sync, forever): say so up front.
        if ipv4, view.network.backendType == "vxlan", let mtu = view.network.mtu, underlay.mtu > 50, mtu > underlay.mtu - 50 {
            throw SyncError("Backend.MTU \(mtu) is more than the underlay \(underlay.name) carries: its MTU \(underlay.mtu) "
                            + "minus 50 bytes of VXLAN headers is \(underlay.mtu - 50); lower it, or leave it out to take that")
        }
        if ipv4, view.network.backendType == "host-gw",
           !hostAddresses.contains(where: { $0.index == underlay.index && $0.prefix.address == local.publicIP }) {
            // flannel's host-gw refuses the same: peers route to the public IP, so it must be this host's, on the underlay.
            throw SyncError("host-gw: publicIP \(local.publicIP) of node \(local.name) (\(local.origin)) is not an address of "
                            + "the underlay \(underlay.name): peers route this node's pods to it, so it must be (behind NAT, use vxlan)")
        }
        let name = deviceName ?? view.network.deviceName
        laps.lap("underlay")
        // The snapshot's nexthop dump tells whether the kernel has nexthop objects
        // (no second dump to probe); nothing is written before the layout is checked.
        // A node that switched backends removes the device of the one it ran before.
        let leftovers = view.network.backendType == "udp" ? [(name: view.network.vxlanDeviceName, kind: "vxlan")]
            : [(name: NetworkConfig.tunName, kind: "tun")]
        let snapshot = try dataplane.snapshot(deviceName: name, proto: proto, hostAddresses: hostAddresses,
                                              leftovers: leftovers.filter { $0.name != name })
        laps.lap("snapshot")
        let layout = self.layout ?? (dataplane.supportsNexthops ? .nexthop : .classic)
        if layout == .nexthop && !dataplane.supportsNexthops {
            throw SyncError("routeLayout nexthop: this kernel has no nexthop objects (Linux 5.3+); use \"classic\" or \"auto\"")
        }
        let deviceIndex = snapshot.device?.index
        var addresses = Set<IPv4Address>(minimumCapacity: hostAddresses.count)
        var underlayPrefixes: [IPv4Prefix] = []
        for (index, prefix) in hostAddresses {
            if index != deviceIndex { addresses.insert(prefix.address) }
            if index == underlay.index { underlayPrefixes.append(prefix) }
        }
        var host = HostFacts(underlay: underlay, addresses: addresses, foreignRoutes: snapshot.foreignRoutes,
                             underlayPrefixes: underlayPrefixes)
        let snapshot6 = try observe6(dataplane: dataplane, host: &host, addresses6: addresses6)
        if snapshot6 != nil { laps.lap("snapshot6") }
        return Observation(snapshot: snapshot, host: host, layout: layout, deviceName: name, snapshot6: snapshot6, timings: laps.timings)
    }

    /// IPv6-only: the named interface, or the one holding this node's public IPv6
    /// (which `observe6` checks as in dual stack).
    func ipv6OnlyUnderlay(_ dataplane: Dataplane, addresses6: [(index: Int32, prefix: IPv6Prefix)]) throws -> LinkState {
        let local = view.local
        if let interface {
            guard let named = try dataplane.link(named: interface) else {
                throw SyncError("interface \(interface) (the underlay of node \(local.name)) does not exist")
            }
            return named
        }
        guard let half = local.ipv6 else { throw Self.noIPv6Half(local) }
        let link = try ipv6Underlay(dataplane, addresses6: addresses6, ipv4Underlay: nil, publicIPv6: half.publicIP)
        if link.isLoopback {
            throw SyncError("interface \(link.name) (holding the publicIPv6 \(half.publicIP) of node \(local.name)) is a loopback "
                            + "device: VXLAN packets sent there never leave this host")
        }
        return link
    }

    static func noIPv6Half(_ local: NodeRecord) -> SyncError {
        SyncError("EnableIPv6: node \(local.name) (\(local.origin)) has no IPv6 half: give it publicIPv6 and subnetV6 "
                  + "(or turn EnableIPv6 off)")
    }

    /// The interface of this node's public IPv6: the named interface (which must
    /// hold it: flannel's one external interface carries both families), else
    /// the one that holds it.
    func ipv6Underlay(_ dataplane: Dataplane, addresses6: [(index: Int32, prefix: IPv6Prefix)], ipv4Underlay: LinkState?,
                      publicIPv6: IPv6Address) throws -> LinkState {
        let local = view.local
        if interface != nil, let ipv4Underlay {
            let index = ipv4Underlay.index
            guard addresses6.contains(where: { $0.index == index && $0.prefix.address == publicIPv6 }) else {
                throw SyncError("interface \(ipv4Underlay.name) (the underlay of node \(local.name)) does not hold its publicIPv6 "
                                + "\(publicIPv6) (\(local.origin)); flannel's IPv6 device uses the same interface as IPv4")
            }
            return ipv4Underlay
        }
        let found: Result<LinkState, DataplaneError>
        do { found = .success(try dataplane.underlay(holding: publicIPv6, addresses: addresses6)) } catch { found = .failure(error) }
        switch found {
        case .success(let link): return link
        case .failure(.notFound):
            throw SyncError("no interface of this host holds \(publicIPv6), the publicIPv6 of node \(local.name) "
                            + "(\(local.origin)); is --node right?")
        case .failure(let error): throw error
        }
    }

    /// Whether this node keeps an IPv6 plane: a dual-stack network, on a backend
    /// that has one. udp has none: flanneld's udp backend takes a dual-stack
    /// lease and carries IPv4 only, and so does the agent (no plane, so no
    /// peer is reported as left out of one on every sync).
    public var programsIPv6: Bool { view.network.ipv6 != nil && view.network.backendType != "udp" }

    /// The IPv6 device's name: the configured one, else flannel's `flannel-v6.<VNI>`.
    public var ipv6DeviceName: String { deviceName6 ?? view.network.ipv6DeviceName }

    /// Dual stack: the IPv6 underlay (the interface named, else the one that
    /// holds this node's public IPv6 address), the host's IPv6 addresses and the
    /// IPv6 plane's snapshot. IPv4 only: the snapshot of a leftover IPv6 device
    /// of ours (a node that turned dual stack off), else nil, and no IPv6 dump.
    func observe6(dataplane: Dataplane, host: inout HostFacts,
                  addresses6 dumped: [(index: Int32, prefix: IPv6Prefix)]? = nil) throws -> KernelSnapshot6? {
        let name6 = ipv6DeviceName
        guard programsIPv6 else {
            guard let link = try dataplane.link(named: name6), link.kind == "vxlan" else { return nil }
            return try dataplane.snapshot6(deviceName: name6, proto: proto)
        }
        let local = view.local
        guard let half = local.ipv6 else { throw Self.noIPv6Half(local) }
        let addresses6 = try dumped ?? dataplane.addresses6()
        let underlay6 = try ipv6Underlay(dataplane, addresses6: addresses6, ipv4Underlay: host.underlay, publicIPv6: half.publicIP)
        if underlay6.isLoopback {
            throw SyncError("interface \(underlay6.name) (holding the publicIPv6 \(half.publicIP) of node \(local.name)) is a loopback "
                            + "device: VXLAN packets sent there never leave this host")
        }
        let snapshot6 = try dataplane.snapshot6(deviceName: name6, proto: proto, hostAddresses: addresses6)
        let device6 = snapshot6.device?.index
        host.ipv6Underlay = underlay6
        host.ipv6Addresses = Set(addresses6.lazy.filter { $0.index != device6 }.map(\.prefix.address))
        host.ipv6ForeignRoutes = snapshot6.foreignRoutes
        return snapshot6
    }

    /// Plans against what `observe` read (by this syncer, or one that `observes(like:)`
    /// it), and applies the plan unless `dryRun`.
    public func run(dataplane: Dataplane, observation: Observation, dryRun: Bool) throws -> SyncOutcome {
        var laps = Laps()
        let (snapshot, host, layout, name) = (observation.snapshot, observation.host, observation.layout, observation.deviceName)
        var settings = AgentSettings(proto: proto, layout: layout, deviceName: deviceName)
        settings.deviceName6 = deviceName6
        let desired = DesiredState(view: view, host: host, settings: settings)
        laps.lap("desired")
        let plan = try Differ.plan(desired: desired, snapshot: snapshot)
        laps.lap("diff")
        // Dual stack's IPv6 plane: its own device, entries and plan; an IPv4-only
        // network removes what a dual-stack run left.
        var desired6: DesiredState6?
        var plan6: Plan6?
        if let snapshot6 = observation.snapshot6 {
            if programsIPv6, let ipv6 = view.network.ipv6 {
                do {
                    let want = try DesiredState6(view: view, network: ipv6.network, subnetLen: ipv6.subnetLen, host: host, settings: settings)
                    desired6 = want
                    plan6 = try Differ.plan(desired: want, snapshot: snapshot6)
                } catch {
                    throw SyncError("\(error)")
                }
            } else {
                plan6 = Differ.cleanup(snapshot: snapshot6)
            }
            laps.lap("plan6")
        }
        let underlay = host.underlay
        var output = PlanOutput(renderer: Renderer(deviceName: name, proto: proto, deviceIndex: snapshot.device?.index,
                                                   otherDevices: Dictionary([(underlay.index, underlay.name)] + snapshot.leftovers.map { ($0.index, $0.name) },
                                                                            uniquingKeysWith: { a, _ in a })),
                                desired: desired)
        output.ipv6Only = !view.network.enableIPv4
        let underlay6 = host.ipv6Underlay ?? underlay
        if let snapshot6 = observation.snapshot6 {
            output.renderer6 = Renderer(deviceName: ipv6DeviceName, proto: proto, deviceIndex: snapshot6.device?.index,
                                        otherDevices: [underlay6.index: underlay6.name])
            output.desired6 = desired6
        }
        var report: ApplyReport?
        var report6: ApplyReport6?
        if !dryRun {
            let applied = dataplane.apply(plan.changes, deviceName: name)
            output.renderer.deviceIndex = applied.deviceIndex ?? snapshot.device?.index
            report = applied
            laps.lap("apply")
            if let plan6, !plan6.changes.isEmpty {
                let applied6 = dataplane.apply(plan6.changes, deviceName: ipv6DeviceName)
                output.renderer6?.deviceIndex = applied6.deviceIndex ?? observation.snapshot6?.device?.index
                report6 = applied6
                laps.lap("apply6")
            }
            installProtocolName(proto)
        }
        var outcome = SyncOutcome(plan: plan, desired: desired, output: output, report: report, layout: layout)
        outcome.plan6 = plan6
        outcome.desired6 = desired6
        outcome.report6 = report6
        outcome.snapshot6 = observation.snapshot6
        outcome.timings = observation.timings + laps.timings
        outcome.snapshot = snapshot
        outcome.host = host
        outcome.deviceIndex = output.renderer.deviceIndex
        return outcome
    }
}

/// Phase timings: (name, seconds since the previous lap).
private struct Laps {
    let clock = ContinuousClock()
    var mark = ContinuousClock.now
    var timings: [(String, Double)] = []

    mutating func lap(_ name: String) {
        let now = clock.now
        let elapsed = now - mark
        timings.append((name, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
        mark = now
    }
}

/// Names the agent's route protocol for iproute2 (`ip route` shows `proto vxlan-agent`),
/// if the host has `/etc/iproute2/rt_protos.d` and the name is not there yet. Best effort.
public func installProtocolName(_ proto: UInt8, directory: String = "/etc/iproute2/rt_protos.d") {
    let path = directory + "/vxlan-agent.conf"
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue,
          !FileManager.default.fileExists(atPath: path) else { return }
    let text = "# vxlan-agent: the protocol of its routes and nexthops (installed by vxlan-agent)\n"
        + "\(proto)\t\(AgentSettings.protocolName)\n"
    try? text.write(toFile: path, atomically: true, encoding: .utf8)
}
