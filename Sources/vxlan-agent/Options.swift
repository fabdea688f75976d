import Agent
import ArgumentParser
import Foundation
import Reconcile
import Registry

/// Options shared by the commands that read a configuration.
struct ConfigOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "The configuration file (JSON).")
    var config: String

    @Option(help: "This host's node name (default: \"node\" in the file, then the hostname).")
    var node: String?

    @Option(help: "The lock that keeps two syncs from interleaving (default: one per network namespace under /run/vxlan-agent).")
    var lockFile: String?

    @Option(help: "Seconds to wait for the lock before giving up with exit code 75.")
    var lockTimeout: Double = 30

    func validate() throws {
        guard lockTimeout.isFinite, (0...86_400).contains(lockTimeout) else {
            throw ValidationError("--lock-timeout must be a number of seconds from 0 to 86400, not \(lockTimeout)")
        }
        if let node, node.isEmpty { throw ValidationError("--node must not be empty") }
        if config.isEmpty { throw ValidationError("--config must name a file") }
    }

    /// The file, with its interface selection (`interfaces`, `interfaceRegex`,
    /// `interfaceCanReach`) resolved on this host's kernel; `strict: false` keeps
    /// the file as it is when that fails (cleanup must work without the underlay).
    func load(strict: Bool = true) throws -> (AgentConfig, String) {
        let file = try AgentConfig.load(path: self.config)
        let config = strict ? try file.resolvingInterface(on: try HostNetworkReader.read())
            : ((try? file.resolvingInterface(on: try HostNetworkReader.read())) ?? file)
        return (config, nodeName(config))
    }

    /// The configuration read up to its nodes (see `AgentConfig.Staged`), and this node's name.
    func stage() throws -> (AgentConfig.Staged, String) {
        let staged = try AgentConfig.stage(AgentConfig.readFile(config), source: config)
        return (staged, nodeName(staged.partial))
    }

    func nodeName(_ config: AgentConfig) -> String {
        AgentConfig.nodeName(flag: node, config: config)
    }

    /// Takes the lock, waiting up to `--lock-timeout` (or `timeout`).
    func lock(timeout: Duration? = nil) throws -> SyncLock {
        try SyncLock(path: lockFile ?? SyncLock.defaultPath, timeout: timeout ?? .milliseconds(Int(lockTimeout * 1000)))
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

/// Prints to standard error.
func warn(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Runs a command body, turning every error into a message and an exit code.
func guarded(_ body: () async throws -> Int32) async throws -> Never {
    let status: Int32
    do {
        status = try await body()
    } catch let failure as SyncLock.Failure {
        warn("vxlan-agent: \(failure)")
        status = { if case .busy = failure { ExitStatus.busy } else { ExitStatus.error } }()
    } catch {
        warn("vxlan-agent: \(error)")
        status = ExitStatus.error
    }
    throw ExitCode(status)
}
