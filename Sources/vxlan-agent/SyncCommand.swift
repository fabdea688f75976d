import Agent
import ArgumentParser
import Daemon
import Dataplane
import Foundation
import Logging
import Model
import Reconcile
import Registry

struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Make the kernel match the configuration, once (for cron); --dry-run shows the diff.",
        discussion: """
        Creates or repairs the VXLAN device, and for every other node its FDB entry, neighbor and route; \
        removes what the agent owns and no longer wants. Quiet on success: one summary line.
        Exit codes: 0 in sync, 1 error (nothing changed if the configuration is bad), 2 changes pending \
        (--dry-run), 3 applied but some peers were skipped or some changes failed, 75 lock busy.
        """)

    @OptionGroup var options: ConfigOptions

    @Flag(help: "Compute and print the plan; change nothing.")
    var dryRun = false

    @Option(help: "text or json.")
    var output: OutputFormat = .text

    @Flag(name: .shortAndLong, help: "List each change applied.")
    var verbose = false

    @Option(help: "auto (default: nexthop objects where the kernel has them), nexthop, or classic.")
    var routeLayout: String?

    @Flag(help: "Print how long each phase took, to standard error.")
    var timings = false

    func validate() throws {
        if let routeLayout, routeLayout != "auto", RouteLayout(rawValue: routeLayout) == nil {
            throw ValidationError("--route-layout must be auto, nexthop or classic")
        }
    }

    func run() async throws {
        try await guarded { try await runSync(options: options, dryRun: dryRun, output: output, verbose: verbose, layoutOverride: routeLayout, timings: timings) }
    }
}

struct Diff: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Show what a sync would change (alias of sync --dry-run). Exit 0 in sync, 2 changes pending, 1 error.")

    @OptionGroup var options: ConfigOptions

    @Option(help: "text or json.")
    var output: OutputFormat = .text

    @Option(help: "auto, nexthop, or classic.")
    var routeLayout: String?

    func validate() throws {
        // Without this, an unknown layout was silently taken as auto.
        if let routeLayout, routeLayout != "auto", RouteLayout(rawValue: routeLayout) == nil {
            throw ValidationError("--route-layout must be auto, nexthop or classic")
        }
    }

    func run() async throws {
        try await guarded { try await runSync(options: options, dryRun: true, output: output, verbose: true, layoutOverride: routeLayout) }
    }
}

func runSync(options: ConfigOptions, dryRun: Bool, output: OutputFormat, verbose: Bool, layoutOverride: String?,
             timings: Bool = false) async throws -> Int32 {
    let started = ContinuousClock.now
    // Validation first: a bad configuration never reaches the kernel. The nodes of
    // a static inventory (most of the reading) are validated on another thread
    // while this one reads the kernel for this node (`early`): the kernel is only
    // read, its writes wait for the whole configuration.
    let (staged, nodeName) = try options.stage()
    var layout = staged.partial.routeLayout
    if let layoutOverride { layout = layoutOverride == "auto" ? nil : RouteLayout(rawValue: layoutOverride) }
    let staging = ContinuousClock.now
    let validation = Task.detached { () throws -> (AgentConfig, Duration) in
        let clock = ContinuousClock()
        var config: AgentConfig!
        let elapsed = try clock.measure { config = try staged.validated() }
        return (config, elapsed)
    }
    let early = observeEarly(staged: staged, nodeName: nodeName, layout: layout, options: options, dryRun: dryRun)
    let observed = ContinuousClock.now
    let (validated, validating) = try await validation.value
    // `interfaces`, `interfaceRegex`, `interfaceCanReach` chosen on this host's kernel
    // (the early read then does not match, and the kernel is read again for the choice).
    let config = try validated.resolvingInterface(on: try HostNetworkReader.read())
    let loaded = ContinuousClock.now

    let source = try clusterSource(config: config, node: nodeName, log: Logger(label: "vxlan-agent"))
    let (view, warnings) = try await source.read()
    for warning in warnings { warn("warning: \(warning)") }
    let syncer = Syncer(view: view, interface: source.interface, layout: layout, deviceName: config.deviceName)
    let outcome: SyncOutcome
    var lock = early?.lock
    defer { withExtendedLifetime(lock) {} }
    if let early, case .success(let observation) = early.observation, syncer.observes(like: early.syncer) {
        outcome = try syncer.run(dataplane: early.dataplane, observation: observation, dryRun: dryRun)
    } else {
        // Not read early, or read for a node the whole configuration does not
        // confirm, or the read failed: as before, one step after the other (a
        // failure is then reported in its usual order).
        if lock == nil && !dryRun { lock = try options.lock() }
        outcome = try syncer.run(dataplane: early?.dataplane ?? Dataplane(), dryRun: dryRun)
    }
    let plan = outcome.plan
    let plan6 = outcome.plan6
    let out = outcome.output
    if timings {
        func ms(_ d: Duration) -> String { String(format: "%.1f", Double(d.components.attoseconds) / 1e15 + Double(d.components.seconds) * 1e3) }
        var parts = ["config \(ms(staging - started)) ms"]
        if early != nil {
            parts.append("nodes \(ms(validating)) ms (alongside the kernel's \(ms(observed - staging)) ms, then waited \(ms(loaded - observed)) ms)")
        } else {
            parts.append("nodes \(ms(validating)) ms")
        }
        parts += outcome.timings.map { "\($0.0) \(String(format: "%.1f", $0.1 * 1e3)) ms" }
        parts.append("total \(ms(ContinuousClock.now - started)) ms")
        warn("timings: " + parts.joined(separator: ", "))
    }

    // Dual stack: both planes in one output (the IPv6 plane's changes after IPv4's).
    let skipped = plan.skipped.count + (plan6?.skipped.count ?? 0)
    if dryRun {
        if output == .json {
            print(out.json(plan, plan6))
        } else {
            for line in out.lines(plan, plan6) { print(line) }
            print(out.summary(plan, plan6))
        }
        if !plan.isEmpty || !(plan6?.isEmpty ?? true) { return ExitStatus.pending }
        return skipped == 0 ? ExitStatus.ok : ExitStatus.partial
    }

    let report = outcome.report!
    let failures = report.failures.map(out.describe) + (outcome.report6?.failures.map(out.describe) ?? [])
    let writes = report.writes + (outcome.report6?.writes ?? 0)
    if output == .json {
        print(out.json(plan, plan6, applied: true, writes: writes, failures: failures))
    } else {
        if verbose {
            for line in plan.changes.map(out.renderer.describe) { print(line) }
            if let plan6 { for line in plan6.changes.map((out.renderer6 ?? out.renderer).describe) { print(line) } }
        }
        for skipped in plan.skipped + (plan6?.skipped ?? []) { warn("warning: \(skipped)") }
        for kept in plan.kept + (plan6?.kept ?? []) { warn("warning: \(kept)") }
        for failure in failures { warn("error: \(failure)") }
        print(out.summary(plan, plan6, applied: true, writes: writes, failures: failures.count))
    }
    return failures.isEmpty && skipped == 0 ? ExitStatus.ok : ExitStatus.partial
}

/// The kernel read for this node before the inventory's other nodes are
/// validated: the lock (unless dry-run), the dataplane and what `observe` read.
struct EarlyObservation {
    var lock: SyncLock?
    var dataplane: Dataplane
    var syncer: Syncer
    var observation: Result<Syncer.Observation, any Error>
}

/// Reads the kernel for the node `staged` very likely has (a static inventory
/// whose entry for `nodeName` reads plainly), or nil: then nothing is read early.
/// Never waits for the lock: when another sync holds it, `runSync` waits for it
/// after validating the configuration, as it always did.
func observeEarly(staged: AgentConfig.Staged, nodeName: String, layout: RouteLayout?, options: ConfigOptions,
                  dryRun: Bool) -> EarlyObservation? {
    guard let (view, interface) = staged.provisionalView(node: nodeName) else { return nil }
    var lock: SyncLock?
    if !dryRun {
        guard let taken = try? options.lock(timeout: .zero) else { return nil }
        lock = taken
    }
    guard let dataplane = try? Dataplane() else { return nil }
    let syncer = Syncer(view: view, interface: interface, layout: layout, deviceName: staged.partial.deviceName)
    return EarlyObservation(lock: lock, dataplane: dataplane, syncer: syncer,
                            observation: Result { try syncer.observe(dataplane: dataplane) })
}
