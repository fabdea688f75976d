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
        abstract: "Remove everything the agent created: routes, nexthops, the VXLAN (or udp's TUN) device, dual stack's IPv6 device, the masquerade tables, "
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
            // Dual stack's IPv6 device (flannel-v6.<VNI>), with its routes and nexthops, if there is one of ours.
            let deviceName6 = deviceName.hasPrefix("flannel.") ? "flannel-v6." + deviceName.dropFirst("flannel.".count)
                : (config.network?.ipv6DeviceName ?? "flannel-v6.1")
            var plan6: Plan6?
            var index6: Int32?
            if let link = try dataplane.link(named: deviceName6), link.kind == "vxlan" {
                let snapshot6 = try dataplane.snapshot6(deviceName: deviceName6, proto: AgentSettings.defaultProtocol)
                plan6 = Differ.cleanup(snapshot: snapshot6)
                index6 = snapshot6.device?.index
            }
            let out = PlanOutput(renderer: Renderer(deviceName: deviceName, proto: AgentSettings.defaultProtocol,
                                                    deviceIndex: snapshot.device?.index),
                                 renderer6: Renderer(deviceName: deviceName6, proto: AgentSettings.defaultProtocol, deviceIndex: index6))
            let entries = plan.changes.count + (plan6?.changes.count ?? 0)
            let nothingInKernel = plan.isEmpty && (plan6?.isEmpty ?? true)
            var files = [config.daemon.subnetFile]
            if let cni = config.daemon.cniConfFile { files.append(cni) }
            files = files.filter { FileManager.default.fileExists(atPath: $0) }
            let table = await Masquerade.exists()
            if dryRun {
                for line in out.lines(plan, plan6) { print(line) }
                if table { print("- nft table \(Masquerade.table) (ip, ip6)") }
                for file in files { print("- file \(file)") }
                let nothing = nothingInKernel && !table && files.isEmpty
                print(nothing ? "nothing to clean up" : "\(entries + (table ? 1 : 0) + files.count) to remove")
                return nothing ? ExitStatus.ok : ExitStatus.pending
            }
            var failed = false
            if !nothingInKernel {
                let report = dataplane.apply(plan.changes, deviceName: deviceName)
                let report6 = plan6.map { dataplane.apply($0.changes, deviceName: deviceName6) }
                let failures = report.failures.map(out.describe) + (report6?.failures.map(out.describe) ?? [])
                for failure in failures { warn("error: \(failure)") }
                failed = !failures.isEmpty
                print("removed \(entries - failures.count) of \(entries) kernel entries (\(report.writes + (report6?.writes ?? 0)) kernel writes)")
            }
            do {
                if try await Masquerade.remove() { print("removed nft table \(Masquerade.table)") }
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
            if nothingInKernel && !table && files.isEmpty && !releaseLease { print("nothing to clean up") }
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
