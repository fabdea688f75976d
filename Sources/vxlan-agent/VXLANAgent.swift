import ArgumentParser
import Foundation

/// Exit codes, documented in Docs/operations.md.
enum ExitStatus {
    /// In sync (after a sync), or nothing to do (dry-run).
    static let ok: Int32 = 0
    /// An error: bad configuration, kernel refused the device, ...; nothing or not everything was applied.
    static let error: Int32 = 1
    /// Dry-run only: changes are pending.
    static let pending: Int32 = 2
    /// Applied, but some peers were skipped (invalid) or some changes failed.
    static let partial: Int32 = 3
    /// Another sync holds the lock (EX_TEMPFAIL): try again later.
    static let busy: Int32 = 75
}

@main
struct VXLANAgent: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "vxlan-agent",
        abstract: "Keeps a host's VXLAN forwarding state (flannel.1, routes, ARP and FDB entries) in sync with the cluster.",
        discussion: """
        Exit codes: 0 in sync, 1 error, 2 changes pending (dry-run), 3 applied but peers skipped or \
        changes failed, 75 another sync holds the lock. See Docs/operations.md.
        """,
        version: version,
        subcommands: [Sync.self, Diff.self, Run.self, Cleanup.self, Version.self, FlanneldCommand.self, InterfaceCommand.self]
    )

    /// Started as `flanneld` (a symlink), or as `vxlan-agent flanneld ...`: flanneld's
    /// command line, read with Go's flag syntax, not ArgumentParser's.
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if FlanneldLauncher.startedAsFlanneld {
            Foundation.exit(await FlanneldLauncher.run(program: "flanneld", arguments: arguments, environment: ProcessInfo.processInfo.environment))
        }
        if arguments.first == "flanneld" {
            Foundation.exit(await FlanneldLauncher.run(program: "vxlan-agent flanneld", arguments: Array(arguments.dropFirst()),
                                            environment: ProcessInfo.processInfo.environment))
        }
        await Self.main(nil)
    }
}
