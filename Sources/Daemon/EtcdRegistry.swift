import Etcd
import Foundation
import Logging
import Model
import Reconcile
import Registry
import Synchronization

/// What the registry tells the daemon.
public enum RegistryEvent: Sendable {
    /// The cluster as it is now: the network, this node (with its subnet) and its peers.
    case state(ClusterView, invalidLeases: Int)
    /// Leases that changed since the last state or change: peers added or
    /// changed (`upserts`), and lease keys that hold no peer any more
    /// (`removals`: deleted, or now invalid). The daemon applies only these.
    case peers(upserts: [NodeRecord], removals: [String], invalidLeases: Int)
    /// etcd answered (true) or stopped answering (false, with why).
    case connection(Bool, String?)
}

/// This node's lease: its key, subnet(s) and etcd lease ID.
public struct OwnLease: Sendable, Hashable {
    public var key: String
    public var subnet: IPv4Prefix
    public var id: Int64
    /// Dual stack: the IPv6 subnet the key names with the IPv4 one.
    public var ipv6Subnet: IPv6Prefix?

    public init(key: String, subnet: IPv4Prefix, id: Int64, ipv6Subnet: IPv6Prefix? = nil) {
        self.key = key
        self.subnet = subnet
        self.id = id
        self.ipv6Subnet = ipv6Subnet
    }
}

/// Takes and keeps a subnet lease in flannel's layout and semantics:
/// reuse this node's lease (same public IP), or its previous subnet (from
/// subnet.env), or a random free subnet between SubnetMin and SubnetMax, created
/// with `If(Version(key) == 0)` so two nodes never hold one subnet. A subnet is
/// free when no key holds it, whatever the key's form (IPv4, dual stack, a form
/// only flanneld reads) or value (a broken value still has a node behind it).
/// Dual stack, as flanneld: one key names both subnets (`10.244.1.0-24&fd00:10:244:1::-64`),
/// so both are taken in one transaction; the IPv6 one is picked at random among
/// the first 100 free between IPv6SubnetMin and IPv6SubnetMax (or the previous
/// one, subnet.env's FLANNEL_IPV6_SUBNET, when free). The transaction guards the
/// key alone, as flanneld's: two nodes that pick the same IPv6 subnet with
/// different IPv4 ones at the same instant both succeed (1 in 100 per
/// simultaneous pair: three daemons started together met it in a test run). So
/// after taking a dual-stack key the allocator reads the keys created since its
/// list (keys only, few); if an older one holds the same IPv6 subnet, it deletes
/// its own and takes the next candidate. flanneld does not, and keeps both.
public struct LeaseAllocator: Sendable {
    public let client: EtcdClient
    public let prefix: String
    public let attributes: LeaseAttributes
    public let ttl: Int64

    public init(client: EtcdClient, prefix: String, attributes: LeaseAttributes, ttl: Int64) {
        self.client = client
        self.prefix = prefix
        self.attributes = attributes
        self.ttl = ttl
    }

    /// Acquires a lease, given the keys under `<prefix>/subnets/` as just listed.
    public func acquire(network: NetworkConfig, existing: [KeyValue], previous: IPv4Prefix?,
                        previousIPv6: IPv6Prefix? = nil) async throws -> OwnLease {
        if !network.enableIPv4 { return try await acquireIPv6Only(network: network, existing: existing, previousIPv6: previousIPv6) }
        let held = existing.compactMap { Flannel.heldSubnet(byLeaseKey: $0.key) }
        // Ours already (same public IP, subnets flanneld would keep: a /SubnetLen
        // between SubnetMin and SubnetMax, and in a dual-stack network a
        // /IPv6SubnetLen between IPv6SubnetMin and IPv6SubnetMax, in an IPv4-only one
        // no IPv6 part): renew it under a fresh etcd lease, as flanneld does; with
        // several, the previous subnet's. A key of the other form is not reused
        // (flanneld finds it incompatible with the network); it keeps holding its
        // subnets until it expires.
        // Only a lease whose value names our address (or escapes something) can be
        // ours: parsing just those keeps a join in a cluster of 10,000 leases from
        // parsing every lease twice.
        let address = Array("\(attributes.publicIP)".utf8)
        let ours = existing.filter { Self.mentions($0.value, address) || $0.value.contains(UInt8(ascii: "\\")) }
            .sorted { $0.key < $1.key }.compactMap { kv -> (KeyValue, Lease)? in
            guard let lease = try? Lease.parse(key: kv.key, value: kv.value, backendType: nil),
                  Flannel.isOwnable(ipv6: lease.ipv6Subnet, in: network),
                  lease.attributes.publicIP == attributes.publicIP, Flannel.isOwnable(lease.subnet, in: network) else { return nil }
            return (kv, lease)
        }
        if let (kv, lease) = ours.first(where: { $0.1.subnet == previous }) ?? ours.first {
            return OwnLease(key: kv.key, subnet: lease.subnet, id: try await reuse(kv), ipv6Subnet: lease.ipv6Subnet)
        }
        var ipv6Candidates: [IPv6Prefix?] = [nil]
        if network.ipv6 != nil {
            ipv6Candidates = try ipv6Subnets(network: network, existing: existing, previousIPv6: previousIPv6)
        }
        let id = try await client.grantLease(ttlSeconds: ttl)
        var candidates = Flannel.freeSubnets(network: network, held: held)
        if let previous, let index = candidates.firstIndex(of: previous) {
            candidates.swapAt(0, index)
        } else {
            candidates.shuffle()
        }
        // What was created after the list (whose newest key is this old) is what a race is with.
        let listed = existing.map(\.createRevision).max() ?? 0
        for (attempt, subnet) in candidates.prefix(16).enumerated() {
            let ipv6Subnet = ipv6Candidates[attempt % ipv6Candidates.count]
            let key = Flannel.leaseKey(prefix: prefix, subnet: subnet, ipv6: ipv6Subnet)
            if try await client.createIfAbsent(key, value: attributes.json, lease: id) {
                if let ipv6Subnet, try await lostIPv6Race(key: key, ipv6Subnet: ipv6Subnet, since: listed + 1) {
                    _ = try await client.delete(key)
                    if ipv6Candidates.count == 1 {
                        try? await client.revoke(lease: id)
                        throw DaemonError("IPv6 subnet \(ipv6Subnet) (subnet.env's) was taken by another node at the same moment; retrying")
                    }
                    continue
                }
                return OwnLease(key: key, subnet: subnet, id: id, ipv6Subnet: ipv6Subnet)
            }
            // Another node took it between our list and our transaction: try the next.
        }
        try? await client.revoke(lease: id)
        let range = "between SubnetMin \(network.subnetMin) and SubnetMax \(network.subnetMax) of \(network.network)"
        if candidates.count > 16 {
            throw DaemonError("could not take a subnet: 16 free subnets \(range) were taken by others first; retrying")
        }
        throw DaemonError("no free subnet: every /\(network.subnetLen) \(range) is leased "
                          + "(\(existing.count) keys under \(Flannel.subnetsPrefix(prefix: prefix)))")
    }

    /// Takes this node's existing key again under a fresh etcd lease, as flanneld
    /// does; returns the lease's id. The old lease holds nothing after and is revoked.
    func reuse(_ kv: KeyValue) async throws -> Int64 {
        let id = try await client.grantLease(ttlSeconds: ttl)
        _ = try await client.put(kv.key, value: attributes.json, lease: id)
        if kv.lease != 0 && kv.lease != id { try? await client.revoke(lease: kv.lease) }
        return id
    }

    /// The IPv6 subnets to try, in order: subnet.env's previous one when it is in
    /// range and free, else the first 100 free, shuffled. None free is an error.
    func ipv6Subnets(network: NetworkConfig, existing: [KeyValue], previousIPv6: IPv6Prefix?) throws -> [IPv6Prefix] {
        guard let ipv6 = network.ipv6 else { return [] }
        let held6 = existing.compactMap { Flannel.heldIPv6Subnet(byLeaseKey: $0.key) }
        if let previousIPv6, Flannel.isOwnable(ipv6: previousIPv6, in: network), !held6.contains(where: { $0.overlaps(previousIPv6) }) {
            return [previousIPv6]
        }
        let free = Flannel.freeIPv6Subnets(network: network, held: held6)
        guard !free.isEmpty else {
            throw DaemonError("no free IPv6 subnet: every /\(ipv6.subnetLen) between IPv6SubnetMin \(ipv6.subnetMin) and "
                              + "IPv6SubnetMax \(ipv6.subnetMax) of \(ipv6.network) is leased "
                              + "(\(existing.count) keys under \(Flannel.subnetsPrefix(prefix: prefix)))")
        }
        return free.shuffled()
    }

    /// Whether a key created before ours (`key`, just created), since `revision`,
    /// holds an IPv6 subnet overlapping ours: the older key keeps it.
    func lostIPv6Race(key: String, ipv6Subnet: IPv6Prefix, since revision: Int64) async throws -> Bool {
        let created = try await client.keys(prefix: Flannel.subnetsPrefix(prefix: prefix), createdSince: revision)
        guard let mine = created.first(where: { $0.key == key })?.createRevision else { return false }
        return created.contains { kv in
            kv.key != key && kv.createRevision < mine
                && Flannel.heldIPv6Subnet(byLeaseKey: kv.key).map { $0.overlaps(ipv6Subnet) } == true
        }
    }

    /// IPv6 only (`EnableIPv4` false): one IPv6 subnet, key `0.0.0.0-0&<ipv6>-<len>`.
    /// flanneld's etcd manager cannot do this (it always allocates an IPv4 subnet,
    /// and finds its lease by PublicIP, 0.0.0.0 on every IPv6-only node): this
    /// node's lease is the one whose PublicIPv6 is this node's; else the previous
    /// IPv6 subnet (subnet.env's FLANNEL_IPV6_SUBNET) when free; else one at random
    /// among the first 100 free between IPv6SubnetMin and IPv6SubnetMax; each
    /// taken with one create-if-absent transaction on its key.
    func acquireIPv6Only(network: NetworkConfig, existing: [KeyValue], previousIPv6: IPv6Prefix?) async throws -> OwnLease {
        guard let ipv6 = network.ipv6, let address = attributes.publicIPv6 else {
            throw DaemonError("the network is IPv6-only (EnableIPv4 false) but this node has no IPv6 address: set publicIPv6 "
                              + "(--public-ipv6), or give the underlay interface a global IPv6 address")
        }
        let text = Array("\(address)".utf8)
        let ours = existing.filter { Self.mentions($0.value, text) || $0.value.contains(UInt8(ascii: "\\")) }
            .sorted { $0.key < $1.key }.compactMap { kv -> (KeyValue, Lease)? in
            guard let lease = try? Lease.parse(key: kv.key, value: kv.value, backendType: nil, ipv6Only: true),
                  lease.attributes.publicIPv6 == address, Flannel.isOwnable(ipv6: lease.ipv6Subnet, in: network) else { return nil }
            return (kv, lease)
        }
        if let (kv, lease) = ours.first(where: { $0.1.ipv6Subnet == previousIPv6 }) ?? ours.first {
            return OwnLease(key: kv.key, subnet: NodeRecord.noIPv4Subnet, id: try await reuse(kv), ipv6Subnet: lease.ipv6Subnet)
        }
        let candidates = try ipv6Subnets(network: network, existing: existing, previousIPv6: previousIPv6)
        let range = "between IPv6SubnetMin \(ipv6.subnetMin) and IPv6SubnetMax \(ipv6.subnetMax) of \(ipv6.network)"
        let id = try await client.grantLease(ttlSeconds: ttl)
        for subnet in candidates.prefix(16) {
            let key = Flannel.leaseKey(prefix: prefix, ipv6Only: subnet)
            if try await client.createIfAbsent(key, value: attributes.json, lease: id) {
                return OwnLease(key: key, subnet: NodeRecord.noIPv4Subnet, id: id, ipv6Subnet: subnet)
            }
            // Another node took it between our list and our transaction: try the next.
        }
        try? await client.revoke(lease: id)
        throw DaemonError("could not take an IPv6 subnet: \(min(candidates.count, 16)) free subnets \(range) were taken by others first; retrying")
    }

    /// `value` contains `text`, a plain byte search (Foundation's generic
    /// `firstRange(of:)` took a fifth of a join's CPU on 10,000 leases).
    static func mentions(_ value: [UInt8], _ text: [UInt8]) -> Bool {
        guard let first = text.first else { return true }
        guard value.count >= text.count else { return false }
        return value.withUnsafeBufferPointer { value in
            text.withUnsafeBufferPointer { text in
                for start in 0...(value.count - text.count) where value[start] == first
                    && memcmp(value.baseAddress! + start, text.baseAddress!, text.count) == 0 {
                    return true
                }
                return false
            }
        }
    }
}

/// The cluster from etcd: the network configuration, this node's lease (taken,
/// renewed, taken again if deleted), and every other lease, listed then watched
/// from the list's revision so no change is lost. After a compaction or a broken
/// connection it lists again. It never reports an empty cluster because etcd is
/// unreachable: it reports the connection and keeps the last state.
///
/// It keeps no lease between events (at 50,000 leases their values and parsed
/// form were 40 MiB): the list's leases make the first state and are dropped,
/// each watch event is checked as it comes and handed on as a delta, and when
/// this node's lease goes it lists again.
public final class EtcdRegistry: Sendable {
    let client: EtcdClient
    let settings: EtcdSettings
    let node: String
    /// This node's IPv4 underlay address: required unless the network is IPv6-only.
    let publicIP: IPv4Address?
    /// Dual stack, IPv6 only: this node's IPv6 underlay address (the lease's PublicIPv6).
    let publicIPv6: IPv6Address?
    let ttl: Int64
    /// Seconds before the lease runs out that it is renewed (flanneld: --subnet-lease-renew-margin).
    let renewMargin: Int64
    let subnetFile: String
    let log: Logger
    let own = Mutex<OwnLease?>(nil)

    public init(settings: EtcdSettings, node: String, publicIP: IPv4Address?, publicIPv6: IPv6Address? = nil, ttl: Int64,
                subnetFile: String, log: Logger, renewMargin: Int64 = 3600) throws {
        self.client = try makeEtcdClient(settings)
        self.renewMargin = renewMargin
        self.settings = settings
        self.node = node
        self.publicIP = publicIP
        self.publicIPv6 = publicIPv6
        self.ttl = ttl
        self.subnetFile = subnetFile
        self.log = log
    }

    public func shutdown() async { try? await client.shutdown() }

    public var ownLease: OwnLease? { own.withLock { $0 } }

    /// Runs until cancelled.
    public func run(emit: @escaping @Sendable (RegistryEvent) -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.follow(emit: emit) }
            group.addTask { await self.renew() }
            await group.next()
            group.cancelAll()
        }
    }

    /// Renews this node's lease well before it runs out (flannel: an hour
    /// before; a short TTL is renewed when a third of it is gone). A renewal
    /// that fails while etcd is away is tried again every second, not a period
    /// later, so an outage shorter than what is left of the TTL costs nothing.
    func renew() async {
        let period = Duration.seconds(max(ttl - min(renewMargin, ttl * 2 / 3), 1))
        var wait = period
        while !Task.isCancelled {
            try? await Task.sleep(for: wait)
            if Task.isCancelled { return }
            wait = period
            guard let lease = ownLease else { continue }
            do {
                let left = try await client.keepAlive(lease: lease.id)
                log.debug("lease renewed", metadata: ["key": "\(lease.key)", "ttl": "\(left)"])
            } catch where error.code == .leaseNotFound {
                // Gone: the watch sees the key go and takes a lease again.
                log.warning("lease renewal failed", metadata: ["key": "\(lease.key)", "error": "\(error)"])
            } catch {
                log.warning("lease renewal failed; retrying", metadata: ["key": "\(lease.key)", "error": "\(error)"])
                wait = .seconds(1)
            }
        }
    }

    /// Lists, then watches the whole prefix from the list's revision: leases
    /// under `<prefix>/subnets/`, and `<prefix>/config`, whose changes a
    /// running node reports but does not apply. A watch that breaks or goes
    /// silent (EtcdClient's progress deadline) is reported as a lost
    /// connection; the loop lists again and resumes.
    func follow(emit: @escaping @Sendable (RegistryEvent) -> Void) async {
        var delay = Duration.milliseconds(250)
        var network: NetworkConfig?
        /// The config value last reported as differing, so a change is logged once.
        var reportedConfig: [UInt8]??
        var reportedInvalid: [String: Int64] = [:]
        let subnets = Flannel.subnetsPrefix(prefix: settings.prefix)
        let configKey = Flannel.configKey(prefix: settings.prefix)
        let everything = String(subnets.dropLast("subnets/".count))
        while !Task.isCancelled {
            do {
                let configValue = try await client.get(configKey)
                if let network {
                    reportConfigChange(key: configKey, running: network, value: configValue?.value, reported: &reportedConfig)
                } else {
                    guard let configValue else {
                        throw DaemonError("no network configuration at \(configKey) in etcd: put flannel's net-conf.json there "
                                          + "(etcdctl put \(configKey) '{\"Network\": \"10.244.0.0/16\", \"Backend\": {\"Type\": \"vxlan\"}}')")
                    }
                    network = try NetworkConfig.parse(Data(configValue.value), source: "etcd \(configKey)")
                    reportedConfig = .some(configValue.value)
                }
                guard let network else { continue }
                let clock = ContinuousClock()
                let started = clock.now
                var leases: [String: KeyValue]
                var checks: [String: (revision: Int64, result: Result<Lease, SkippedLease>)]
                let revision: Int64, listedCount: Int, listed: ContinuousClock.Instant
                do {
                    // The list lives in this block only: nothing of it outlives the state it makes.
                    let (kvs, listRevision) = try await client.list(prefix: subnets)
                    listed = clock.now
                    // Every lease is checked (parsed) on the other core while this node takes its lease.
                    async let prechecked = Self.check(kvs, network: network)
                    leases = Dictionary(kvs.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
                    try await ensureLease(network: network, leases: &leases)
                    checks = await prechecked
                    revision = listRevision
                    listedCount = kvs.count
                }
                let leased = clock.now
                emit(.connection(true, nil))
                emit(state(network: network, leases: leases, checks: checks, reported: &reportedInvalid))
                (leases, checks) = ([:], [:])
                log.debug("listed", metadata: ["leases": "\(listedCount)", "revision": "\(revision)", "list": "\(listed - started)",
                                               "lease": "\(leased - listed)", "view": "\(clock.now - leased)"])
                delay = .milliseconds(250)

                var next = revision == .max ? revision : revision + 1
                // Batches that arrive while a state is being built are taken together:
                // a burst of transactions costs one view, not one per transaction.
                let watch = Conflator(client.watch(prefix: everything, startRevision: next))
                var relist = false
                while let batches = try await watch.next() {
                    var lost = false
                    var changed: Set<String> = []
                    // The check of each key's last put in these batches (none: deleted).
                    var checks: [String: (revision: Int64, result: Result<Lease, SkippedLease>)] = [:]
                    for event in batches.lazy.flatMap(\.events) {
                        if event.key == configKey {
                            let value: [UInt8]? = if case .put(let kv) = event { kv.value } else { nil }
                            reportConfigChange(key: configKey, running: network, value: value, reported: &reportedConfig)
                            continue
                        }
                        guard event.key.hasPrefix(subnets) else { continue }
                        changed.insert(event.key)
                        switch event {
                        case .put(let kv): checks[kv.key] = (kv.modRevision, Flannel.check(LeaseEntry(kv), network: network))
                        case .delete(let key, _): checks[key] = nil
                        }
                        if let mine = ownLease, event.key == mine.key {
                            if case .put(let kv) = event, isOurs(kv, network: network) { continue }
                            lost = true
                        }
                    }
                    next = batches.last?.nextRevision ?? next
                    if lost {
                        let key = ownLease?.key ?? ""
                        log.warning("this node's lease was deleted or taken over in etcd; taking a lease again", metadata: ["key": "\(key)"])
                        own.withLock { $0 = nil }
                        // The list takes a lease again and reports the whole state.
                        relist = true
                        break
                    }
                    if !changed.isEmpty {
                        emit(delta(keys: changed, checks: checks, reported: &reportedInvalid))
                    }
                }
                if relist { continue }
                throw EtcdError(.connectionLost, endpoint: settings.endpoints.joined(separator: ","), operation: "watch",
                                key: everything, message: "the watch ended")
            } catch let error as EtcdError where error.compactRevision != nil {
                log.info("watch history compacted; listing again", metadata: ["error": "\(error)"])
            } catch {
                if Task.isCancelled { return }
                emit(.connection(false, "\(error)"))
                log.error("registry unavailable; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(8))
            }
        }
    }

    /// The lease `kv` still names this node: its PublicIP (IPv6 only: its PublicIPv6) is this node's.
    func isOurs(_ kv: KeyValue, network: NetworkConfig) -> Bool {
        guard let lease = try? Lease.parse(key: kv.key, value: kv.value, backendType: nil, ipv6Only: !network.enableIPv4) else { return false }
        return network.enableIPv4 ? lease.attributes.publicIP == publicIP : lease.attributes.publicIPv6 == publicIPv6
    }

    /// Makes sure this node holds a lease that is in `leases`; takes one if not.
    func ensureLease(network: NetworkConfig, leases: inout [String: KeyValue]) async throws {
        if !network.enableIPv4, publicIPv6 == nil {
            throw DaemonError("the network is IPv6-only (EnableIPv4 false) but this node has no IPv6 address: set publicIPv6 "
                              + "(--public-ipv6), or give the underlay interface a global IPv6 address")
        }
        guard let publicIP = network.enableIPv4 ? publicIP : IPv4Address(0) else {
            throw DaemonError("the network has IPv4 (EnableIPv4) but this node has no IPv4 address: set publicIP (--public-ip), "
                              + "or choose an underlay interface with an IPv4 address")
        }
        let attributes = LeaseAttributes.own(publicIP: publicIP, publicIPv6: publicIPv6, network: network)
        if let mine = ownLease, let kv = leases[mine.key], kv.lease == mine.id,
           let held = (try? Lease.parse(key: kv.key, value: kv.value, backendType: nil, ipv6Only: !network.enableIPv4))?.attributes,
           held.publicIP == attributes.publicIP, held.backendType == network.backendType, held.publicIPv6 == attributes.publicIPv6 {
            return
        }
        if network.ipv6 != nil, network.backendType != "udp", publicIPv6 == nil {
            throw DaemonError("the network is dual stack (EnableIPv6) but this node has no IPv6 address: set publicIPv6 "
                              + "(--public-ipv6), or give the underlay interface a global IPv6 address")
        }
        let allocator = LeaseAllocator(client: client, prefix: settings.prefix, attributes: attributes, ttl: ttl)
        let file = try? String(contentsOfFile: subnetFile, encoding: .utf8)
        let previous = file.flatMap(SubnetEnv.previousSubnet(in:))
        let previousIPv6 = file.flatMap(SubnetEnv.previousIPv6Subnet(in:))
        // In no particular order: acquire sorts the few leases it may reuse.
        let lease = try await allocator.acquire(network: network, existing: Array(leases.values), previous: previous,
                                                previousIPv6: previousIPv6)
        own.withLock { $0 = lease }
        if let kv = try await client.get(lease.key) { leases[lease.key] = kv }
        log.info("lease acquired", metadata: ["subnet": network.enableIPv4 ? "\(lease.subnet)" : "none (IPv6 only)", "subnet.ipv6": "\(lease.ipv6Subnet.map { "\($0)" } ?? "none")",
                                               "key": "\(lease.key)",
                                               "lease": "\(String(lease.id, radix: 16))", "ttl": "\(ttl)"])
    }

    /// The cluster view from the leases (`Flannel.clusterView`, as `sync` builds
    /// it); skipped ones are logged once per revision of their key.
    /// `Flannel.check` of every lease, in two halves at once (what a join at 10,000
    /// leases spends most of its time on, after the list itself).
    static func check(_ kvs: [KeyValue], network: NetworkConfig) async -> [String: (revision: Int64, result: Result<Lease, SkippedLease>)] {
        let half = kvs.count / 2
        return await withTaskGroup(of: [(String, (revision: Int64, result: Result<Lease, SkippedLease>))].self) { group in
            for part in [kvs[..<half], kvs[half...]] where !part.isEmpty {
                group.addTask {
                    part.map { kv in
                        (kv.key, (kv.modRevision, Flannel.check(LeaseEntry(key: kv.key, value: kv.value, etcdLease: kv.lease,
                                                                            revision: kv.modRevision), network: network)))
                    }
                }
            }
            var all: [String: (revision: Int64, result: Result<Lease, SkippedLease>)] = [:]
            all.reserveCapacity(kvs.count)
            for await part in group { for (key, value) in part { all[key] = value } }
            return all
        }
    }

    /// The leases at `keys` changed, `checks` holds the check of each one put
    /// (none: deleted): each is reported as a peer to add or change, or a key to
    /// remove. Invalid leases are counted by `reported`, which holds every one.
    func delta(keys: Set<String>, checks: [String: (revision: Int64, result: Result<Lease, SkippedLease>)],
               reported: inout [String: Int64]) -> RegistryEvent {
        let own = ownLease?.key
        var upserts: [NodeRecord] = []
        var removals: [String] = []
        for key in keys.sorted() where key != own {
            guard let (revision, result) = checks[key] else {
                reported[key] = nil
                removals.append(key)
                continue
            }
            switch result {
            case .success(let lease):
                reported[key] = nil
                upserts.append(lease.record)
                if let reason = lease.ipv6Skipped {
                    log.warning("lease's IPv6 half skipped", metadata: ["key": "\(Flannel.printable(key))",
                                                                        "error": "\(Flannel.printable(reason, limit: 512))"])
                }
            case .failure(let skipped):
                removals.append(key)
                if reported[key] != revision {
                    reported[key] = revision
                    log.warning("lease skipped", metadata: ["key": "\(Flannel.printable(skipped.key))",
                                                            "error": "\(Flannel.printable(skipped.reason, limit: 512))"])
                }
            }
        }
        return .peers(upserts: upserts, removals: removals, invalidLeases: reported.count)
    }

    /// The cluster view from the listed leases (`Flannel.clusterView`, as `sync`
    /// builds it, with `checks` made while the lease was taken); skipped ones are
    /// logged once per revision of their key.
    func state(network: NetworkConfig, leases: [String: KeyValue], checks: [String: (revision: Int64, result: Result<Lease, SkippedLease>)],
               reported: inout [String: Int64]) -> RegistryEvent {
        guard let mine = ownLease else { fatalError("state without a lease") }
        let entries = leases.values.map(LeaseEntry.init)
        let result = Flannel.clusterView(network: network, leases: entries, node: node, publicIP: publicIP ?? IPv4Address(0),
                                         publicIPv6: publicIPv6, own: (mine.key, mine.subnet)) { entry in
            if let hit = checks[entry.key], hit.revision == entry.revision { return hit.result }
            return Flannel.check(entry, network: network)
        }
        var seen: Set<String> = []
        for skipped in result.skipped {
            seen.insert(skipped.key)
            let revision = leases[skipped.key]?.modRevision ?? 0
            if reported[skipped.key] != revision {
                reported[skipped.key] = revision
                log.warning("lease skipped", metadata: ["key": "\(Flannel.printable(skipped.key))",
                                                        "error": "\(Flannel.printable(skipped.reason, limit: 512))"])
            }
        }
        reported = reported.filter { seen.contains($0.key) }
        for skipped in result.skippedIPv6 {
            log.warning("lease's IPv6 half skipped", metadata: ["key": "\(Flannel.printable(skipped.key))",
                                                                "error": "\(Flannel.printable(skipped.reason, limit: 512))"])
        }
        return .state(result.view, invalidLeases: result.skipped.count)
    }
}

extension LeaseEntry {
    init(_ kv: KeyValue) { self.init(key: kv.key, value: kv.value, etcdLease: kv.lease, revision: kv.modRevision) }
}

// MARK: the network configuration changing under a running node

extension EtcdRegistry {
    /// Logs, once per distinct value, that `<prefix>/config` no longer says
    /// what this node runs with, and what differs. The node keeps its network
    /// (as flanneld does): its subnet, device and peers stay valid only under it.
    func reportConfigChange(key: String, running: NetworkConfig, value: [UInt8]?, reported: inout [UInt8]??) {
        if let reported, reported == value { return }
        reported = .some(value)
        let keep = "a running node keeps the network it started with (restart to apply)"
        guard let value else {
            log.warning("the network configuration was deleted from etcd; \(keep)", metadata: ["key": "\(key)"])
            return
        }
        let parsed: NetworkConfig
        do {
            parsed = try NetworkConfig.parse(Data(value), source: "etcd \(key)")
        } catch {
            log.warning("the network configuration in etcd changed and is not valid; \(keep)",
                        metadata: ["key": "\(key)", "error": "\(error)"])
            return
        }
        let changes = Self.differences(running, parsed)
        guard !changes.isEmpty else { return }
        log.warning("the network configuration changed in etcd; \(keep)",
                    metadata: ["key": "\(key)", "changed": "\(changes.joined(separator: ", "))"])
    }

    /// "Network 10.244.0.0/16 -> 10.245.0.0/16", one per field that differs, in net-conf.json's names.
    static func differences(_ old: NetworkConfig, _ new: NetworkConfig) -> [String] {
        var changes: [String] = []
        func compare<T: Equatable>(_ name: String, _ a: T, _ b: T, _ render: (T) -> String) {
            if a != b { changes.append("\(name) \(render(a)) -> \(render(b))") }
        }
        compare("Network", old.network, new.network) { "\($0)" }
        compare("SubnetLen", old.subnetLen, new.subnetLen) { "\($0)" }
        compare("SubnetMin", old.subnetMin, new.subnetMin) { "\($0)" }
        compare("SubnetMax", old.subnetMax, new.subnetMax) { "\($0)" }
        compare("Backend.Type", old.backendType, new.backendType) { $0 }
        compare("Backend.VNI", old.vni, new.vni) { "\($0)" }
        compare("Backend.Port", old.port, new.port) { "\($0)" }
        compare("Backend.MTU", old.mtu, new.mtu) { $0.map { "\($0)" } ?? "default" }
        compare("Backend.DirectRouting", old.directRouting, new.directRouting) { "\($0)" }
        compare("EnableIPv4", old.enableIPv4, new.enableIPv4) { "\($0)" }
        compare("EnableIPv6", old.ipv6 != nil, new.ipv6 != nil) { "\($0)" }
        if let a = old.ipv6, let b = new.ipv6 {
            compare("IPv6Network", a.network, b.network) { "\($0)" }
            compare("IPv6SubnetLen", a.subnetLen, b.subnetLen) { "\($0)" }
            compare("IPv6SubnetMin", a.subnetMin, b.subnetMin) { "\($0)" }
            compare("IPv6SubnetMax", a.subnetMax, b.subnetMax) { "\($0)" }
        }
        return changes
    }
}
