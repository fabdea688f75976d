import Agent
import Dataplane
import Foundation
import Logging
import Model
import Reconcile
import Registry
import Synchronization
import Tunnel

/// The daemon's reconciler, on a thread of its own: it owns the netlink socket
/// it writes with, takes the lock, and does the blocking work (dumps, writes,
/// files, `nft`) away from the cooperative pool.
///
/// Everything reaches it through `post`: registry views and lease changes,
/// kernel events (from the monitor's thread), configuration reloads, a stop.
/// It takes all that is waiting at once and makes one pass of it; what arrives
/// during the pass waits for the next. There is no sleep before a pass: a lone
/// lease is applied as soon as it arrives, a burst in a few batches.
///
/// A pass is incremental (only the keys the changes touch, see `LiveSync`) when
/// it can be, full (the same diff as `sync`) when it must: at start, after a
/// failure, after lost kernel events, when the device or the registry's whole
/// view changed, and every resync interval.
final class Reconciler: @unchecked Sendable {
    /// What is waiting for the next pass.
    struct Work {
        /// Reasons for a full pass (metrics' trigger names).
        var full: Set<String> = []
        var view: ClusterView?
        var interface: String??
        var config: AgentConfig?
        /// Lease changes since the last pass, by lease key (the last one of a key wins).
        var upserts: [String: NodeRecord] = [:]
        var removals: Set<String> = []
        var events: [KernelEvent] = []
        /// The IPv6 device's (dual stack, IPv6-only).
        var events6: [KernelEvent6] = []
        var stop = false

        /// Kernel events waiting, at least this many: past the limit a full
        /// pass (one dump) is cheaper than the events, and bounds the memory.
        static let minEventLimit = 16_384

        /// The limit for a picture of `entries` entries: a pass that writes
        /// them all gets back one event per write (its own echoes), and those
        /// alone must not cost a full pass (at 50,000 peers, tens of MiB more
        /// than the events: the dump, the full desired state and its plan).
        static func eventLimit(entries: Int) -> Int { max(minEventLimit, entries + entries / 4) }

        /// Queues kernel events, unless a full pass is due anyway (its dump
        /// comes after them, and sees what they say).
        mutating func take(_ more: [KernelEvent], _ more6: [KernelEvent6] = [], limit: Int) {
            guard full.isEmpty && view == nil && config == nil else { return }
            if events.count + events6.count + more.count + more6.count > limit {
                events = []
                events6 = []
                full.insert("kernel")
            } else {
                events += more
                events6 += more6
            }
        }

        var isEmpty: Bool {
            full.isEmpty && view == nil && interface == nil && config == nil && upserts.isEmpty && removals.isEmpty
                && events.isEmpty && events6.isEmpty && !stop
        }
    }

    let condition = NSCondition()
    /// Guarded by `condition`.
    private var inbox = Work()
    private var exited: (@Sendable () -> Void)?
    /// Kernel events waiting, at most (`Work.eventLimit`).
    private var eventLimit = Work.minEventLimit
    private var hasExited = false

    // Owned by the reconciler's thread from `start` on.
    let options: Daemon.Options
    let log: Logger
    let metrics: Metrics
    var config: AgentConfig
    var network: NetworkConfig?
    var local: NodeRecord?
    /// The view's peers between full passes, shared with `live`'s indexes.
    let peers = PeerTable()
    var interface: String?
    let live: LiveSync
    var monitor: KernelMonitor?
    /// The wait before the next retry; reset by a pass without failures.
    var retryWait: Duration = .zero
    var retryAt: ContinuousClock.Instant?
    var resyncAt: ContinuousClock.Instant
    /// (network, subnet) the masquerade table was last written for; nil: write it on the next full pass.
    var firewall: Firewall?

    /// What the masquerade tables were last written for.
    struct Firewall: Equatable {
        /// nil in an IPv6-only network.
        var network: IPv4Prefix?
        var subnet: IPv4Prefix?
        var ipv6Network: IPv6Prefix?
        var ipv6Subnet: IPv6Prefix?
    }
    var skippedReported: Set<String> = []
    /// The MTU the last full pass wanted, for subnet.env.
    var mtu: UInt32 = 0
    /// The udp backend's data path, once its device exists.
    var tunnel: Tunnel?

    init(options: Daemon.Options, config: AgentConfig, metrics: Metrics, log: Logger) throws {
        self.options = options
        self.config = config
        self.metrics = metrics
        self.log = log
        live = LiveSync(dataplane: try Dataplane())
        resyncAt = .now + config.daemon.resyncInterval
    }

    /// Hands work to the thread.
    func post(_ body: (inout Work) -> Void) {
        condition.lock()
        body(&inbox)
        condition.signal()
        condition.unlock()
    }

    func start() {
        let thread = Thread { [self] in
            self.loop()
            // The device and its route stay (as the kernel entries of the other
            // backends do); its packets wait for the next daemon.
            tunnel?.stop()
            tunnel = nil
            metrics.tunnel.withLock { $0 = nil }
            condition.lock()
            hasExited = true
            let done = exited
            condition.unlock()
            done?()
        }
        thread.name = "reconciler"
        thread.start()
    }

    /// Asks the thread to stop after its current pass, and waits for it.
    func stop() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            if hasExited {
                condition.unlock()
                continuation.resume()
                return
            }
            exited = { continuation.resume() }
            inbox.stop = true
            condition.signal()
            condition.unlock()
        }
        monitor?.stop()
    }

    /// Waits for work, or for the next retry or resync.
    private func take() -> Work {
        condition.lock()
        defer { condition.unlock() }
        while inbox.isEmpty {
            let now = ContinuousClock.now
            let next = min(resyncAt, retryAt ?? resyncAt)
            if next <= now { break }
            let wait = now.duration(to: next)
            _ = condition.wait(until: Date(timeIntervalSinceNow: Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18))
        }
        let work = inbox
        inbox = Work()
        return work
    }

    private func loop() {
        while true {
            let work = take()
            if work.stop { return }
            var full = work.full
            if let next = work.config {
                config = next
                firewall = nil
                full.insert("reload")
            }
            if let next = work.interface { interface = next }
            if let view = work.view {
                network = view.network
                local = view.local
                peers.replace(with: view.peers)
                full.insert("registry")
            }
            // The last pass took the last removals in (or its indexes are rebuilt): their slots are free.
            peers.settle()
            // The records the changed leases had: the incremental pass takes their entries out.
            var previous: [String: NodeRecord] = [:]
            for key in work.removals { previous[key] = peers.remove(key) }
            for record in work.upserts.values { previous[record.origin] = peers.upsert(record) }
            // Up to four entries a peer and plane (VXLAN's FDB entry, neighbor, nexthop, route), each a write and its echo.
            let limit = Work.eventLimit(entries: 4 * peers.count * (network?.ipv6 == nil ? 1 : 2))
            condition.lock()
            eventLimit = limit
            condition.unlock()
            let now = ContinuousClock.now
            if now >= resyncAt {
                full.insert("resync")
                firewall = nil
                resyncAt = now + config.daemon.resyncInterval
            }
            if let at = retryAt, now >= at {
                full.insert("retry")
                retryAt = nil
            }
            guard let network, let local else { continue }
            let view = ClusterView(network: network, local: local, peers: [])
            if full.isEmpty {
                let leases = !work.upserts.isEmpty || !work.removals.isEmpty
                guard leases || !work.events.isEmpty || !work.events6.isEmpty else { continue }
                incremental(view: view, trigger: leases ? "registry" : "kernel", work: work, previous: previous)
            } else {
                fullPass(view: view, triggers: full)
            }
        }
    }

    private func lock() -> SyncLock? {
        do {
            return try SyncLock(path: options.lockPath, timeout: .seconds(5))
        } catch {
            log.warning("another sync holds the lock; trying again", metadata: ["error": "\(error)"])
            // What this pass took from the inbox is not applied: only a full pass catches up.
            live.invalidate()
            scheduleRetry()
            return nil
        }
    }

    /// Schedules a full pass after a wait that grows each time a pass fails again.
    private func scheduleRetry() {
        retryWait = retryWait == .zero ? options.retryDelay : min(retryWait * 2, .seconds(5))
        retryAt = .now + retryWait
    }

    // MARK: passes

    private func incremental(view: ClusterView, trigger: String, work: Work, previous: [String: NodeRecord]) {
        let started = ContinuousClock.now
        guard let lock = lock() else { return }
        defer { withExtendedLifetime(lock) {} }
        switch live.incremental(upserts: Array(work.upserts.values), removals: Array(work.removals), previous: previous,
                                events: work.events, events6: work.events6) {
        case .needsFullPass(let why):
            log.debug("full pass", metadata: ["why": "\(why)"])
            fullPass(view: view, triggers: [trigger], locked: true)
        case .applied(let changes, let report, _):
            // udp: a lease changes no kernel entry, only the data path's table.
            updateTunnel(host: nil, remade: false)
            let events = work.events.count + work.events6.count
            let applied6 = live.applied6
            let changes6 = applied6?.changes.count ?? 0
            log.trace("incremental pass", metadata: ["trigger": "\(trigger)", "events": "\(events)",
                                                     "leases": "\(work.upserts.count + work.removals.count)",
                                                     "changes": "\(changes.count)", "changes6": "\(changes6)"])
            guard !changes.isEmpty || changes6 > 0 else {
                metrics.update { $0.kernelEvents += events }
                return
            }
            metrics.update {
                $0.reconciles[trigger, default: 0] += 1
                $0.kernelEvents += events
            }
            // IPv6-only: the peers are the IPv6 plane's.
            let programmed = view.network.enableIPv4 ? live.desired?.peerCount : live.desired6?.peerCount
            finish(changes: changes, report: report, trigger: [trigger], peers: programmed ?? 0,
                   skipped: nil, started: started, fileError: nil, output: live.output)
            if let applied6 { finish6(changes: applied6.changes, report: applied6.report, output: live.output) }
        }
    }

    /// Logs and counts what an incremental pass did in the IPv6 plane (its changes
    /// under their own kinds, `route6`, ..., as a full pass counts them), and
    /// schedules a retry after failures, as `finish` does for the IPv4 plane.
    private func finish6(changes: [Change6], report: ApplyReport6, output: PlanOutput) {
        guard !changes.isEmpty else { return }
        for failure in report.failures {
            var metadata: Logger.Metadata = ["error": "\(output.describe(failure))"]
            if let name = failure.codeName { metadata["errno"] = "\(name)" }
            log.error("IPv6 change failed", metadata: metadata)
        }
        var counts: [String: Int] = [:]
        for change in changes { counts[Self.label(change), default: 0] += 1 }
        for failure in report.failures { counts[Self.label(failure.change), default: 0] -= 1 }
        metrics.update {
            $0.kernelWrites += report.writes
            $0.changeFailures += report.failures.count
            for (key, value) in counts where value > 0 { $0.changes[key, default: 0] += value }
            if let failure = report.failures.first { $0.lastError = output.describe(failure) }
        }
        log.info("IPv6 plane applied", metadata: [
            "changes": "\(counts.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key.replacingOccurrences(of: " ", with: "-"))=\($0.value)" }.joined(separator: ","))",
            "writes": "\(report.writes)", "failed": "\(report.failures.count)", "peers": "\(live.desired6?.peerCount ?? 0)",
        ])
        guard !report.failures.isEmpty else { return }
        if report.failures.allSatisfy(\.isTransient) { retryWait = .zero }
        scheduleRetry()
    }

    private func fullPass(view: ClusterView, triggers: Set<String>, locked: Bool = false) {
        let started = ContinuousClock.now
        var view = view
        view.peers = peers.sorted
        let deviceName = config.deviceName ?? view.network.deviceName
        if monitor == nil {
            let port = live.dataplane.socket.portID
            let monitor = view.network.ipv6 == nil || view.network.backendType == "udp"
                ? KernelMonitor(deviceName: deviceName, proto: live.proto, ownPort: port)
                : KernelMonitor(deviceName: deviceName, deviceName6: view.network.ipv6DeviceName,
                                proto: live.proto, ownPort: port)
            do {
                try monitor.start(events: { [weak self] events, events6 in
                                      self?.log.trace("kernel events", metadata: ["count": "\(events.count + events6.count)",
                                                                                  "first": "\(events.first.map { "\($0)" } ?? events6.first.map { "\($0)" } ?? "")"])
                                      self?.post { [weak self] in $0.take(events, events6, limit: self?.eventLimit ?? Work.minEventLimit) }
                                  },
                                  lost: { [weak self] why in
                                      self?.log.warning("kernel events lost; a full pass follows", metadata: ["why": "\(why)"])
                                      self?.post { $0.full.insert("kernel") }
                                  })
                self.monitor = monitor
            } catch {
                log.error("cannot listen to kernel events; relying on the resync interval", metadata: ["error": "\(error)"])
            }
        }
        let lock: SyncLock?
        if locked { lock = nil } else {
            guard let taken = self.lock() else { return }
            lock = taken
        }
        defer { withExtendedLifetime(lock) {} }
        metrics.update { for trigger in triggers { $0.reconciles[trigger, default: 0] += 1 } }

        log.debug("full pass starts", metadata: ["trigger": "\(triggers.sorted().joined(separator: ","))", "peers": "\(view.peers.count)"])
        let syncer = Syncer(view: view, interface: interface, layout: config.routeLayout, deviceName: config.deviceName)
        let outcome: SyncOutcome
        do {
            outcome = try live.full(syncer, peers: peers)
        } catch {
            metrics.update {
                $0.reconcileErrors += 1
                $0.lastError = "\(error)"
            }
            log.error("sync failed; nothing applied", metadata: ["error": "\(error)", "trigger": "\(triggers.sorted().joined(separator: ","))"])
            return
        }
        monitor?.setDeviceIndex(outcome.deviceIndex)
        monitor?.setIPv6(deviceIndex: outcome.output.renderer6?.deviceIndex,
                         underlay: (outcome.host?.ipv6Underlay ?? outcome.host?.underlay).map { ($0.index, $0.name) })
        if let underlay = outcome.host?.underlay { monitor?.setUnderlay(index: underlay.index, name: underlay.name) }
        updateTunnel(host: outcome.host, remade: outcome.plan.changes.contains { if case .createTUN = $0 { true } else { false } })
        // A full pass at 50,000 peers leaves tens of MiB freed in malloc's
        // arenas (the dump, the plan): give them back.
        _ = malloc_trim(0)
        let skipped = Set((outcome.plan.skipped + (outcome.plan6?.skipped ?? [])).map(\.description))
        for line in skipped.subtracting(skippedReported).sorted() { log.warning("peer skipped", metadata: ["reason": "\(line)"]) }
        skippedReported = skipped
        mtu = outcome.desired.mtu
        log.debug("full pass phases", metadata: Logger.Metadata(uniqueKeysWithValues: outcome.timings.map {
            ($0.0, .string(String(format: "%.1fms", $0.1 * 1000)))
        }))
        // Pods of a dual-stack node get the smaller MTU of the two devices (the IPv6 one's headers are 20 bytes more).
        if let mtu6 = outcome.desired6?.mtu { mtu = min(mtu, mtu6) }
        let ipv6 = view.network.ipv6.flatMap { part in view.local.ipv6.map { (network: part.network, subnet: $0.subnet) } }
        let fileError = writeFiles(network: view.network.network, subnet: view.local.subnet, ipv4Enabled: view.network.enableIPv4,
                                   ipv6: ipv6, triggers: triggers)
        if let plan6 = outcome.plan6, let report6 = outcome.report6 {
            for failure in report6.failures { log.error("IPv6 change failed", metadata: ["error": "\(outcome.output.describe(failure))"]) }
            if !report6.failures.isEmpty { scheduleRetry() }
            var counts: [String: Int] = [:]
            for change in plan6.changes { counts[Self.label(change), default: 0] += 1 }
            for failure in report6.failures { counts[Self.label(failure.change), default: 0] -= 1 }
            metrics.update {
                $0.kernelWrites += report6.writes
                $0.changeFailures += report6.failures.count
                for (key, value) in counts where value > 0 { $0.changes[key, default: 0] += value }
            }
            if !plan6.changes.isEmpty {
                log.info("IPv6 plane applied", metadata: ["changes": "\(plan6.changes.count)", "writes": "\(report6.writes)",
                                                          "failed": "\(report6.failures.count)", "peers": "\(plan6.peerCount)"])
            }
        }
        finish(changes: outcome.plan.changes, report: outcome.report ?? ApplyReport(), trigger: triggers,
               peers: view.network.enableIPv4 ? outcome.desired.peerCount : outcome.desired6?.peerCount ?? 0, skipped: outcome.skippedCount, started: started, fileError: fileError,
               output: outcome.output)
    }

    /// The udp backend's data path: started once its device exists (again when
    /// the device was made again: its queues went with the old one), stopped
    /// when the backend is another; its table is the programmed peers, after
    /// every pass (a peer that leaves is neither sent to nor accepted from).
    private func updateTunnel(host: HostFacts?, remade: Bool) {
        guard let network, let local, network.backendType == "udp", let desired = live.desired else {
            if network?.backendType != "udp", let tunnel {
                tunnel.stop()
                self.tunnel = nil
                metrics.tunnel.withLock { $0 = nil }
            }
            return
        }
        let table = TunnelTable(network: network.network, subnetLen: network.subnetLen, local: local.subnet,
                                peers: peers.values.filter { desired.isProgrammed($0.origin) }.map { ($0.subnet, $0.publicIP) })
        if remade, let tunnel {
            tunnel.stop()
            self.tunnel = nil
        }
        if let tunnel {
            tunnel.update(table)
            return
        }
        guard let host else { return }
        // flanneld binds the interface's address (the public IP may be a NAT's).
        let bind = host.underlayPrefixes.contains { $0.address == local.publicIP } ? local.publicIP
            : host.underlayPrefixes.first?.address ?? local.publicIP
        let settings = TunnelSettings(device: config.deviceName ?? network.deviceName, localIP: bind, port: network.port,
                                      tunnelAddress: local.subnet.network,
                                      queues: min(4, max(1, ProcessInfo.processInfo.activeProcessorCount)))
        do {
            let tunnel = try Tunnel(settings: settings, table: table)
            tunnel.start()
            self.tunnel = tunnel
            metrics.tunnel.withLock { $0 = { tunnel.statistics } }
            log.info("udp data path started", metadata: ["device": "\(settings.device)", "bind": "\(bind):\(settings.port)",
                                                         "queues": "\(settings.queues)", "peers": "\(table.peerCount)"])
        } catch {
            metrics.update { $0.lastError = "udp data path: \(error)" }
            log.error("udp data path cannot start; retrying", metadata: ["error": "\(error)"])
            scheduleRetry()
        }
    }

    /// subnet.env, the CNI configuration and the masquerade table: after each full pass.
    private func writeFiles(network: IPv4Prefix, subnet: IPv4Prefix, ipv4Enabled: Bool, ipv6: (network: IPv6Prefix, subnet: IPv6Prefix)?,
                            triggers: Set<String>) -> String? {
        var fileError: String?
        do {
            let env = SubnetEnv(network: network, subnet: subnet, mtu: mtu, ipMasq: config.daemon.ipMasq,
                                ipv6Network: ipv6?.network, ipv6Subnet: ipv6?.subnet, enableIPv4: ipv4Enabled)
            if try writeAtomically(env.text, to: config.daemon.subnetFile) {
                let shown = ipv4Enabled ? "\(subnet)" : ipv6.map { "\($0.subnet)" } ?? "none"
                log.info("wrote subnet.env", metadata: ["path": "\(config.daemon.subnetFile)", "subnet": "\(shown)"])
            }
            if let path = config.daemon.cniConfFile {
                let cni = CNIConfig(bridge: config.daemon.cniBridge, network: network, subnet: subnet, mtu: mtu, ipv6Subnet: ipv6?.subnet,
                                    enableIPv4: ipv4Enabled)
                if try writeAtomically(cni.text, to: path) { log.info("wrote the CNI configuration", metadata: ["path": "\(path)"]) }
            }
        } catch {
            fileError = "\(error)"
            log.error("cannot write a file", metadata: ["error": "\(error)"])
        }
        do {
            if config.daemon.ipMasq {
                let ipv4 = ipv4Enabled ? (network: network, subnet: subnet) : nil
                let wanted = Firewall(network: ipv4?.network, subnet: ipv4?.subnet, ipv6Network: ipv6?.network, ipv6Subnet: ipv6?.subnet)
                if firewall != wanted {
                    try waitFor { try await Masquerade.apply(ipv4: ipv4, ipv6: ipv6) }
                    log.debug("masquerade table written", metadata: ["network": "\(ipv4.map { "\($0.network)" } ?? "none")",
                                                                     "subnet": "\(ipv4.map { "\($0.subnet)" } ?? "none")",
                                                                     "ipv6": "\(ipv6.map { "\($0.network) \($0.subnet)" } ?? "none")"])
                    firewall = wanted
                }
            } else if firewall != nil || triggers.contains("resync") || triggers.contains("reload") {
                if try waitFor({ try await Masquerade.remove() }) { log.info("masquerade table removed (ipMasq is false)") }
                firewall = nil
            }
        } catch {
            firewall = nil
            metrics.update { $0.firewallErrors += 1 }
            fileError = fileError ?? "\(error)"
            log.error("masquerade", metadata: ["error": "\(error)"])
        }
        return fileError
    }

    /// Logs and counts a pass, and schedules a retry after failures.
    private func finish(changes: [Change], report: ApplyReport, trigger: Set<String>, peers: Int, skipped: Int?,
                        started: ContinuousClock.Instant, fileError: String?, output: PlanOutput) {
        // Changes applied: the plan's, less the ones the kernel refused or that were skipped.
        var counts: [String: Int] = [:]
        for change in changes { counts[Self.label(change), default: 0] += 1 }
        for failure in report.failures { counts[Self.label(failure.change), default: 0] -= 1 }
        counts = counts.filter { $0.value > 0 }
        for failure in report.failures {
            var metadata: Logger.Metadata = ["error": "\(output.describe(failure))"]
            if let name = failure.codeName { metadata["errno"] = "\(name)" }
            log.error("change failed", metadata: metadata)
        }
        if !changes.isEmpty {
            log.info("synced", metadata: [
                "trigger": "\(trigger.sorted().joined(separator: ","))", "peers": "\(peers)",
                "changes": "\(counts.sorted { $0.key < $1.key }.map { "\($0.key.replacingOccurrences(of: " ", with: "-"))=\($0.value)" }.joined(separator: ","))",
                "writes": "\(report.writes)", "failures": "\(report.failures.count)",
            ])
        }
        let elapsed = ContinuousClock.now - started
        log.debug("pass done", metadata: ["trigger": "\(trigger.sorted().joined(separator: ","))", "changes": "\(changes.count)",
                                          "seconds": "\(elapsed)"])
        metrics.update {
            $0.peers = peers
            if let skipped { $0.peersSkipped = skipped }
            $0.kernelWrites += report.writes
            $0.changeFailures += report.failures.count
            for (key, value) in counts { $0.changes[key, default: 0] += value }
            $0.lastDuration = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            if report.failures.isEmpty && fileError == nil {
                $0.lastSuccess = Date().timeIntervalSince1970
                $0.lastError = nil
            } else {
                $0.lastError = report.failures.first.map(output.describe) ?? fileError
            }
        }
        if report.failures.isEmpty {
            retryWait = .zero
        } else {
            // A busy kernel or a broken exchange is worth another pass soon; a
            // refusal (EEXIST, EINVAL, ...) repeats until something changes: back off.
            if report.failures.allSatisfy(\.isTransient) { retryWait = .zero }
            scheduleRetry()
        }
    }

    /// "kind action" of a change, for metrics.
    /// The IPv6 plane's changes count under their own kinds (`route6`, `neigh6`, ...).
    static func label(_ change: Change6) -> String {
        switch change {
        case .createDevice, .createTUN: "link6 add"
        case .recreateDevice: "link6 recreate"
        case .updateDevice, .updateTUN: "link6 update"
        case .deleteDevice: "link6 remove"
        case .add(let entry): "\(entry.kind)6 add"
        case .replace(_, let entry): "\(entry.kind)6 update"
        case .remove(let entry): "\(entry.kind)6 remove"
        }
    }

    static func label(_ change: Change) -> String {
        switch change {
        case .createDevice, .createTUN: "link add"
        case .recreateDevice: "link recreate"
        case .updateDevice, .updateTUN: "link update"
        case .deleteDevice: "link remove"
        case .add(let entry): "\(entry.kind) add"
        case .replace(_, let entry): "\(entry.kind) update"
        case .remove(let entry): "\(entry.kind) remove"
        }
    }
}

/// glibc's `malloc_trim` (malloc.h, which the Glibc module does not export):
/// returns freed heap memory to the system.
@_silgen_name("malloc_trim")
func malloc_trim(_ pad: Int) -> Int32

/// glibc's `mallopt` (malloc.h, as `malloc_trim`).
@_silgen_name("mallopt")
func mallopt(_ parameter: Int32, _ value: Int32) -> Int32

/// Waits on the reconciler's thread for async work (nft through swift-subprocess):
/// the work runs on the pool, which holds no thread while the child runs; only
/// the reconciler's own thread waits.
func waitFor<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    let result = Mutex<Result<T, any Error>?>(nil)
    Task {
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
        result.withLock { $0 = outcome }
        done.signal()
    }
    done.wait()
    return try result.withLock { $0! }.get()
}
