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
    // Validation first: a bad configuration never reaches the kernel.
    let (config, nodeName) = try options.load()
    let loaded = ContinuousClock.now
    let source = try clusterSource(config: config, node: nodeName, log: Logger(label: "vxlan-agent"))
    let (view, warnings) = try await source.read()
    let interface = source.interface
    for warning in warnings { warn("warning: \(warning)") }
    var layout = config.routeLayout
    if let layoutOverride { layout = layoutOverride == "auto" ? nil : RouteLayout(rawValue: layoutOverride) }
    let lock = dryRun ? nil : try options.lock()
    defer { withExtendedLifetime(lock) {} }

    let dataplane = try Dataplane()
    let syncer = Syncer(view: view, interface: interface, layout: layout, deviceName: config.deviceName)
    let outcome = try syncer.run(dataplane: dataplane, dryRun: dryRun)
    let plan = outcome.plan
    let out = outcome.output
    if timings {
        func ms(_ d: Duration) -> String { String(format: "%.1f", Double(d.components.attoseconds) / 1e15 + Double(d.components.seconds) * 1e3) }
        var parts = ["config \(ms(loaded - started)) ms"]
        parts += outcome.timings.map { "\($0.0) \(String(format: "%.1f", $0.1 * 1e3)) ms" }
        parts.append("total \(ms(ContinuousClock.now - started)) ms")
        warn("timings: " + parts.joined(separator: ", "))
    }

    if dryRun {
        if output == .json {
            print(out.json(plan))
        } else {
            for line in out.lines(plan) { print(line) }
            print(out.summary(plan))
        }
        if !plan.isEmpty { return ExitStatus.pending }
        return plan.skipped.isEmpty ? ExitStatus.ok : ExitStatus.partial
    }

    let report = outcome.report!
    let failures = report.failures.map(out.describe)
    if output == .json {
        print(out.json(plan, applied: true, writes: report.writes, failures: failures))
    } else {
        if verbose { for line in plan.changes.map(out.renderer.describe) { print(line) } }
        for skipped in plan.skipped { warn("warning: \(skipped)") }
        for kept in plan.kept { warn("warning: \(kept)") }
        for failure in failures { warn("error: \(failure)") }
        print(out.summary(plan, applied: true, writes: report.writes, failures: failures.count))
    }
    return failures.isEmpty && plan.skipped.isEmpty ? ExitStatus.ok : ExitStatus.partial
}
