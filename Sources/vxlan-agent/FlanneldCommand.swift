import Agent
import ArgumentParser
import Daemon
import Foundation
import Logging
import Registry

/// `vxlan-agent flanneld ...`, or the binary started as `flanneld` (a symlink):
/// flanneld's own command line (etcd registry, interface selection, subnet.env,
/// masquerade, healthz, -v), read by `FlanneldFlags` exactly as flanneld reads
/// it, then the same daemon as `run`. Documented here for --help, the man page
/// and completions; the arguments are read by `FlanneldLauncher`, not by
/// ArgumentParser (Go's flag syntax is not ArgumentParser's: `-etcd-endpoints=...`).
struct FlanneldCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flanneld",
        abstract: "Run as a drop-in for flanneld: flanneld's flags and FLANNELD_* environment variables (etcd mode).",
        discussion: """
        Accepts flanneld's flags for the etcd registry and the backends the agent has (vxlan, host-gw, udp): \
        --etcd-endpoints, --etcd-prefix, --etcd-keyfile, --etcd-certfile, --etcd-cafile, --iface (repeatable), \
        --iface-regex (repeatable), --iface-can-reach, --public-ip, --public-ipv6, --ip-masq, --subnet-file, \
        --subnet-lease-renew-margin, --healthz-ip, --healthz-port, -v, --version; each also as FLANNELD_<FLAG> \
        in the environment (the command line wins). flanneld's other flags (--kube-subnet-mgr and the kube flags, \
        --iptables-*, --etcd-username/--etcd-password, ...) are refused with what to use instead. \
        A symlink named flanneld to this binary runs this command. See Docs/migrating-from-flannel.md.
        """)

    @Argument(parsing: .captureForPassthrough, help: "flanneld's flags (see `vxlan-agent flanneld -help`).")
    var flags: [String] = []

    func run() async throws {
        let status = await FlanneldLauncher.run(program: "flanneld", arguments: flags,
                                                environment: ProcessInfo.processInfo.environment)
        throw ExitCode(status)
    }
}

/// Which interface flanneld's selection flags pick on this host, without starting anything.
struct InterfaceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "interface",
        abstract: "Print the underlay interface and address flanneld's selection flags choose on this host.",
        discussion: """
        The same choice `vxlan-agent flanneld` makes at start: each --iface, then each --iface-regex, then \
        --iface-can-reach; with none of them the interface holding --public-ip, else the default route's. \
        Prints: <name> <address> mtu <MTU>, and ` ipv6 <address>` when the interface has a global IPv6 \
        address (what dual stack and IPv6-only networks use without --public-ipv6: not link-local, temporary, \
        deprecated or tentative). An interface with a global IPv6 address and no IPv4 one is chosen too \
        (an IPv6-only underlay): its <address> is `none`. --iface also takes an IPv6 address.
        """)

    @Option(help: "An interface name or address (repeatable; tried in order).")
    var iface: [String] = []
    @Option(help: "A regular expression matched against the addresses, then the names (repeatable).")
    var ifaceRegex: [String] = []
    @Option(help: "An IPv4 address: the interface the route to it leaves by.")
    var ifaceCanReach: String?
    @Option(help: "The public IP: with no other option, the interface holding it.")
    var publicIP: String?
    @Option(help: "The public IPv6 address: with no other option and no --public-ip, the interface holding it.")
    var publicIPv6: String?

    func run() throws {
        let selection = InterfaceSelection(names: iface, regexes: ifaceRegex, canReach: ifaceCanReach, publicIP: publicIP,
                                           publicIPv6: publicIPv6)
        do {
            let choice = try selection.choose(on: try HostNetworkReader.read())
            print("\(choice.interface.name) \(choice.address.map { "\($0)" } ?? "none") mtu \(choice.interface.mtu)"
                  + (choice.ipv6Address.map { " ipv6 \($0)" } ?? ""))
        } catch {
            warn("vxlan-agent: \(error)")
            throw ExitCode(ExitStatus.error)
        }
    }
}

enum FlanneldLauncher {
    /// Whether this process was started as flanneld (argv[0]'s base name).
    static var startedAsFlanneld: Bool {
        (CommandLine.arguments.first.map { URL(fileURLWithPath: $0).lastPathComponent }) == "flanneld"
    }

    /// Reads flanneld's command line and runs the daemon; returns the exit status.
    static func run(program: String, arguments: [String], environment: [String: String]) async -> Int32 {
        let options: FlanneldOptions
        do {
            options = try FlanneldFlags.parse(arguments: arguments, environment: environment)
        } catch {
            warn("\(program): \(error)")
            return 2 // Go's flag package: exit status 2 for a usage error
        }
        if options.help {
            warn(FlanneldFlags.usage(program: program))
            return 0
        }
        if options.version {
            // flanneld prints its version to standard error.
            warn(VXLANAgent.version)
            return 0
        }
        let config: AgentConfig
        do {
            try options.validate()
            let choice = try options.interfaceSelection.choose(on: try HostNetworkReader.read())
            var chosen = try options.agentConfig(interface: choice.interface.name, interfaceIP: choice.address)
            // flanneld: without --public-ipv6, the chosen interface's IPv6 address (used in dual stack only).
            if chosen.publicIPv6 == nil { chosen.publicIPv6 = choice.ipv6Address }
            config = chosen
        } catch {
            warn("\(program): \(error)")
            return ExitStatus.error
        }
        let level = Logger.Level(rawValue: options.logLevel) ?? .info
        LoggingSystem.bootstrap { LogfmtHandler(label: $0, level: level) }
        let log = Logger(label: "vxlan-agent")
        log.info("flanneld command line", metadata: ["interface": "\(config.interface ?? "")", "publicIP": "\(config.publicIP.map { "\($0)" } ?? "")",
                                                      "publicIPv6": "\(config.publicIPv6.map { "\($0)" } ?? "")",
                                                      "etcd": "\(config.etcd?.endpoints.joined(separator: ",") ?? "")"])
        var daemonOptions = Daemon.Options(configPath: "flanneld command line", node: nil, lockPath: SyncLock.defaultPath)
        daemonOptions.preloaded = config
        let daemon: Daemon
        do {
            daemon = try Daemon(options: daemonOptions, log: log)
        } catch {
            log.critical("cannot start", metadata: ["error": "\(error)"])
            return ExitStatus.error
        }
        return await daemon.run()
    }
}
