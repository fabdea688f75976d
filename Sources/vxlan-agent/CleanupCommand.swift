import Agent
import ArgumentParser
import Daemon
import Dataplane
import Foundation
import Model
import Reconcile
import Registry

struct Cleanup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup",
        abstract: "Remove everything the agent created: routes, nexthops, the VXLAN (or udp's TUN) device, the masquerade table, "
            + "subnet.env and the CNI configuration.",
        discussion: """
        Routes and nexthops go first: deleting a device that 50,000 nexthops still use takes the kernel tens of seconds. \
        Stop the daemon first (it would put everything back). The etcd lease is left to expire (24 h) unless \
        --release-lease is given; other nodes remove this node's entries when it goes.
        """)

    @OptionGroup var options: ConfigOptions

    @Flag(help: "Show what would be removed; change nothing.")
    var dryRun = false

    @Flag(help: "Also delete this node's lease in etcd (the node leaves the cluster now).")
    var releaseLease = false

    func run() async throws {
        try await guarded {
            let (config, nodeName) = try options.load(strict: false)
            let deviceName = try await deviceName(config)
            let lock = dryRun ? nil : try options.lock()
            defer { withExtendedLifetime(lock) {} }
            let dataplane = try Dataplane()
            // Whatever backend ran: the device by its configured name, and a udp or vxlan device of the other kind.
            let other = deviceName == NetworkConfig.tunName ? [(name: "flannel.1", kind: "vxlan")] : [(name: NetworkConfig.tunName, kind: "tun")]
            let snapshot = try dataplane.snapshot(deviceName: deviceName, proto: AgentSettings.defaultProtocol, hostAddresses: nil,
                                                  leftovers: other)
            let plan = Differ.cleanup(snapshot: snapshot)
            let out = PlanOutput(renderer: Renderer(deviceName: deviceName, proto: AgentSettings.defaultProtocol,
                                                    deviceIndex: snapshot.device?.index))
            var files = [config.daemon.subnetFile]
            if let cni = config.daemon.cniConfFile { files.append(cni) }
            files = files.filter { FileManager.default.fileExists(atPath: $0) }
            let table = await Masquerade.exists()
            if dryRun {
                for line in out.lines(plan) { print(line) }
                if table { print("- nft table ip \(Masquerade.table)") }
                for file in files { print("- file \(file)") }
                let nothing = plan.isEmpty && !table && files.isEmpty
                print(nothing ? "nothing to clean up" : "\(plan.changes.count + (table ? 1 : 0) + files.count) to remove")
                return nothing ? ExitStatus.ok : ExitStatus.pending
            }
            var failed = false
            if !plan.isEmpty {
                let report = dataplane.apply(plan.changes, deviceName: deviceName)
                for failure in report.failures { warn("error: \(out.describe(failure))") }
                failed = !report.failures.isEmpty
                print("removed \(plan.changes.count - report.failures.count) of \(plan.changes.count) kernel entries (\(report.writes) kernel writes)")
            }
            do {
                if try await Masquerade.remove() { print("removed nft table ip \(Masquerade.table)") }
            } catch {
                warn("error: \(error)")
                failed = true
            }
            for file in files {
                if unlink(file) == 0 { print("removed \(file)") } else {
                    warn("error: cannot remove \(file): \(String(cString: strerror(errno)))")
                    failed = true
                }
            }
            if releaseLease {
                do {
                    let released = try await releaseLeases(config: config, node: nodeName)
                    print(released.isEmpty ? "no lease of this node in etcd" : released.map { "released \($0)" }.joined(separator: "\n"))
                } catch {
                    warn("error: \(error)")
                    failed = true
                }
            }
            if plan.isEmpty && !table && files.isEmpty && !releaseLease { print("nothing to clean up") }
            return failed ? ExitStatus.error : ExitStatus.ok
        }
    }

    /// The device's name: from the file, or `flannel.<VNI>` with the VNI from the
    /// inventory or from etcd (flannel.1 if etcd does not answer).
    func deviceName(_ config: AgentConfig) async throws -> String {
        if let name = config.deviceName { return name }
        if let network = config.network { return network.deviceName }
        do {
            return try await readEtcdNetwork(config: config).deviceName
        } catch {
            warn("warning: cannot read the network configuration from etcd (\(error)); assuming flannel.1")
            return "flannel.1"
        }
    }
}
