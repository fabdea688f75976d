import Agent
import ArgumentParser
import Daemon
import Foundation
import Logging

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Keep this node in sync continuously (the daemon).",
        discussion: """
        Reconciles when the registry changes (etcd watch), when the kernel loses or gains something of the agent's \
        (netlink events: a deleted route, neighbor or FDB entry is written again within a millisecond, a device at once), and every \
        resyncInterval. Writes subnet.env and the CNI configuration, keeps the masquerade table, serves /healthz \
        and /metrics. SIGTERM/SIGINT stop it and leave the forwarding state in place; SIGHUP reloads the file. \
        Logs go to standard error, one logfmt line per event.
        """)

    @OptionGroup var options: ConfigOptions

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        if Logger.Level(rawValue: logLevel) == nil { throw ValidationError("--log-level: \(logLevel) is not a level") }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { LogfmtHandler(label: $0, level: level) }
        let log = Logger(label: "vxlan-agent")
        let daemon: Daemon
        do {
            var daemonOptions = Daemon.Options(configPath: options.config, node: options.node,
                                               lockPath: options.lockFile ?? SyncLock.defaultPath)
            daemonOptions.prepare = { try $0.resolvingInterface(on: try HostNetworkReader.read()) }
            daemon = try Daemon(options: daemonOptions, log: log)
        } catch {
            log.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(ExitStatus.error)
        }
        let status = await daemon.run()
        throw ExitCode(status)
    }
}
