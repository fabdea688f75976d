import Agent
import ArgumentParser
import Dataplane
import Foundation
import Reconcile
import Registry

struct Cleanup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove everything the agent created: its routes, nexthops and VXLAN device.",
        discussion: "Routes and nexthops go first: deleting a device that 50,000 nexthops still use takes the kernel tens of seconds.")

    @OptionGroup var options: ConfigOptions

    @Flag(help: "Show what would be removed; change nothing.")
    var dryRun = false

    func run() throws {
        try guarded {
            let (config, _) = try options.load()
            let deviceName = config.deviceName ?? config.network.deviceName
            let lock = dryRun ? nil : try options.lock()
            defer { withExtendedLifetime(lock) {} }
            let dataplane = try Dataplane()
            let snapshot = try dataplane.snapshot(deviceName: deviceName, proto: AgentSettings.defaultProtocol)
            let plan = Differ.cleanup(snapshot: snapshot)
            let out = PlanOutput(renderer: Renderer(deviceName: deviceName, proto: AgentSettings.defaultProtocol,
                                                    deviceIndex: snapshot.device?.index))
            if dryRun || plan.isEmpty {
                for line in out.lines(plan) { print(line) }
                print(plan.isEmpty ? "nothing to clean up" : "\(plan.changes.count) to remove")
                return dryRun && !plan.isEmpty ? ExitStatus.pending : ExitStatus.ok
            }
            let report = dataplane.apply(plan.changes, deviceName: deviceName)
            for failure in report.failures { warn("error: \(failure.message)") }
            print("removed \(plan.changes.count - report.failures.count) of \(plan.changes.count) (\(report.writes) kernel writes)")
            return report.failures.isEmpty ? ExitStatus.ok : ExitStatus.error
        }
    }
}
