import Foundation
import Testing

/// Whether this process may create network namespaces (root, iproute2). Computed once.
public let canUseNamespaces: Bool = {
    guard getuid() == 0 else { return false }
    let name = "vxa-probe-\(getpid())"
    defer { _ = try? sh("ip netns del \(name) 2>/dev/null") }
    return (try? sh("ip netns add \(name)")) != nil
}()

public let isCI = ProcessInfo.processInfo.environment["CI"] == "true"

/// Kernel tests run where they can; under CI=true they always run, and fail
/// (through `requireKernel()`) instead of skipping when they cannot.
public let kernelTests: ConditionTrait = .enabled(if: canUseNamespaces || isCI, "needs root and network namespaces")

public func requireKernel() throws {
    try #require(canUseNamespaces, "root and network namespaces are required (CI=true makes this a failure, not a skip)")
}

public struct CommandFailure: Error, CustomStringConvertible {
    public var command: String
    public var status: Int32
    public var output: String
    public var description: String { "`\(command)` exited \(status): \(output)" }

    public init(command: String, status: Int32, output: String) {
        self.command = command
        self.status = status
        self.output = output
    }
}

public struct Result {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Starts `argv` (looked up in PATH) with stdin from /dev/null, stdout to
/// `stdout` and stderr to `stderr` (or to stdout's file when nil). posix_spawn,
/// not Foundation's Process (whose waitUntilExit can hang under concurrent
/// tests), with the signal mask cleared: the test runner's threads block
/// signals, and a child must not inherit that (SIGTERM would never reach it).
public func spawn(_ argv: [String], stdout: String, stderr: String? = nil) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o600)
    if let stderr {
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o600)
    } else {
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
    }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t(), all = sigset_t()
    sigemptyset(&empty)
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &empty)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { cArgs.forEach { free($0) } }
    var pid: pid_t = 0
    let result = posix_spawnp(&pid, argv[0], &actions, &attributes, cArgs, environ)
    guard result == 0 else {
        throw CommandFailure(command: argv.joined(separator: " "), status: -1, output: String(cString: strerror(result)))
    }
    return pid
}

/// Waits for a child; returns its exit status (128 + signal when killed).
public func waitForExit(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}

/// Runs a shell command, returning its status and output. Output goes through
/// temporary files, not pipes: a background child that inherits a pipe (ip
/// monitor) would keep a read open.
@discardableResult
public func run(_ command: String) throws -> Result {
    let base = NSTemporaryDirectory() + "vxa-run-\(getpid())-\(UUID().uuidString)"
    defer {
        unlink(base + ".out")
        unlink(base + ".err")
    }
    let pid = try spawn(["/bin/bash", "-c", command], stdout: base + ".out", stderr: base + ".err")
    let exitCode = waitForExit(pid)
    return Result(status: exitCode,
                  stdout: (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? "",
                  stderr: (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? "")
}

/// Runs a shell command that must succeed; returns its standard output.
@discardableResult
public func sh(_ command: String) throws -> String {
    let result = try run(command)
    guard result.status == 0 else { throw CommandFailure(command: command, status: result.status, output: result.stdout + result.stderr) }
    return result.stdout
}

/// The package root, from this file's path.
public let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The agent binary `swift build` made.
public var agentBinary: String {
    for configuration in ["debug", "release"] {
        let path = "\(packageRoot)/.build/\(configuration)/vxlan-agent"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return "\(packageRoot)/.build/debug/vxlan-agent"
}

nonisolated(unsafe) private var hostCounter = 0
private let counterLock = NSLock()

/// One simulated host: a network namespace with a veth pair as underlay
/// (198.18.x.y on `eth0`), and a temporary directory for its files. Everything
/// is removed by `close()`, which tests call in a `defer`.
public final class TestHost {
    public let namespace: String
    public let directory: String
    public let publicIP: String

    public init(publicIP: String = "198.18.0.1", underlayMTU: Int = 1500) throws {
        counterLock.lock()
        hostCounter += 1
        let n = hostCounter
        counterLock.unlock()
        namespace = "vxa-e2e-\(getpid())-\(n)"
        directory = NSTemporaryDirectory() + namespace
        self.publicIP = publicIP
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        do {
            try sh("""
            ip netns add \(namespace)
            ip netns exec \(namespace) sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
            ip -n \(namespace) link set lo up
            ip -n \(namespace) link add eth0 mtu \(underlayMTU) type veth peer name eth1 mtu \(underlayMTU)
            ip -n \(namespace) addr add \(publicIP)/24 dev eth0
            ip -n \(namespace) link set eth0 up
            ip -n \(namespace) link set eth1 up
            """)
            // A fresh veth reports its carrier a moment later (the kernel's link
            // watch; later still under load): wait for both ends, so a test's first
            // snapshot of the kernel is a settled one (a "pristine" state read with
            // eth1 still LOWERLAYERDOWN failed a whole-state comparison once).
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline {
                let links = try sh("ip -n \(namespace) -o link show").split(separator: "\n").filter { $0.contains(" eth0@") || $0.contains(" eth1@") }
                if links.count == 2 && links.allSatisfy({ $0.contains("state UP") }) { break }
                Thread.sleep(forTimeInterval: 0.02)
            }
        } catch {
            close()
            throw error
        }
    }

    public func close() {
        _ = try? run("ip netns del \(namespace) 2>/dev/null")
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs a command inside the namespace.
    @discardableResult
    public func exec(_ command: String) throws -> Result {
        try run("ip netns exec \(namespace) \(command)")
    }

    /// Runs the agent inside the namespace with its own lock file.
    @discardableResult
    public func agent(_ arguments: String) throws -> Result {
        try exec("\(agentBinary) \(arguments) --lock-file \(directory)/sync.lock")
    }

    public func write(_ name: String, _ text: String) throws -> String {
        let path = "\(directory)/\(name)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// What `ip` and `bridge` show of the whole namespace, for byte-for-byte
    /// before/after comparisons: every link in detail, every address, the routes
    /// of every table, nexthops, neighbors, FDB entries. Interface indexes and the
    /// per-queue details are left out (a recreated device gets a new index), and
    /// the tables are sorted (a repaired entry may come back in another order).
    public func kernelState() throws -> String {
        try sh("""
        ip netns exec \(namespace) bash -c '
          echo "## links"; ip -d link show | sed -e "s/^[0-9]*: //" -e "s/ numtxqueues.*//"
          echo "## addresses"; ip addr show | sed -e "s/^[0-9]*: //"
          echo "## routes"; ip route show table all | sort
          echo "## nexthops"; ip nexthop show | sort
          echo "## neighbors"; ip neigh show | sort
          echo "## fdb"; bridge fdb show | sort'
        """)
    }

    /// The kernel state once it equals `expected`, or the last one read after
    /// `seconds`: a device the last command created reports its carrier (and so
    /// its link state) a moment later, from the kernel's link watch, and later
    /// still under load; a comparison right away would catch it halfway.
    public func kernelState(settlingTo expected: String, seconds: Double = 5) throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        var state = try kernelState()
        while state != expected && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
            state = try kernelState()
        }
        return state
    }

    /// The kernel state once it equals `expected` (as `kernelState(settlingTo:)`),
    /// and, when it does not, the lines that differ (`- ` expected only, `+ `
    /// read only): a failure then says what the kernel holds that it should not.
    public func kernelStateDifference(settlingTo expected: String, seconds: Double = 5) throws -> String? {
        let state = try kernelState(settlingTo: expected, seconds: seconds)
        guard state != expected else { return nil }
        let want = expected.split(separator: "\n", omittingEmptySubsequences: false)
        let got = state.split(separator: "\n", omittingEmptySubsequences: false)
        let gone = want.filter { !got.contains($0) }.map { "- \($0)" }
        let new = got.filter { !want.contains($0) }.map { "+ \($0)" }
        return (gone + new).joined(separator: "\n") + (gone.isEmpty && new.isEmpty ? "(the same lines in another order or count)" : "")
    }

    /// `ip -j ...` in the namespace, decoded.
    public func json(_ command: String) throws -> [[String: Any]] {
        let text = try sh("ip netns exec \(namespace) \(command)")
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { return [] }
        return (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]]) ?? []
    }
}

/// An inventory for this host (node-1, 198.18.0.1, 10.244.1.0/24) and `peers`
/// more nodes node-2... with public IPs 198.19.x.y and subnets 10.244.N.0/24 (or /8 slices past 254).
public func inventory(peers: Int, skip: Set<Int> = [], vni: Int = 1, extraNodes: String = "", network: String = "10.244.0.0/16") -> String {
    var nodes = [#"{"name": "node-1", "publicIP": "198.18.0.1", "subnet": "\#(subnet(1, network: network))"}"#]
    for k in 2..<(peers + 2) where !skip.contains(k) {
        nodes.append(#"{"name": "node-\#(k)", "publicIP": "198.19.\#(k / 256).\#(k % 256)", "subnet": "\#(subnet(k, network: network))"}"#)
    }
    if !extraNodes.isEmpty { nodes.append(extraNodes) }
    return """
    {"node": "node-1",
     "network": {"Network": "\(network)", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": \(vni), "Port": 8472}},
     "nodes": [\(nodes.joined(separator: ",\n"))]}
    """
}

public func subnet(_ k: Int, network: String) -> String {
    network.hasPrefix("10.244.") ? "10.244.\(k).0/24" : "10.\(k / 256).\(k % 256).0/24"
}

/// setns(fd, CLONE_NEWNET). Glibc exports setns only under _GNU_SOURCE, which
/// Swift's Glibc module does not define: look the symbol up instead.
private func setNetworkNamespace(_ fd: Int32) -> Int32 {
    typealias SetNS = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else { return -1 }
    return unsafeBitCast(symbol, to: SetNS.self)(fd, 0x4000_0000 /* CLONE_NEWNET */)
}

/// Carries a closure and its result across the namespace thread.
private final class NamespaceCall<T>: @unchecked Sendable {
    // @unchecked: written by the worker thread before it signals, read after the wait.
    let body: () throws -> T
    var result: Swift.Result<T, any Error>?
    init(_ body: @escaping () throws -> T) { self.body = body }
}

extension TestHost {
    /// Runs `body` on a thread that has entered this host's network namespace
    /// (setns(2) changes only the calling thread), so a netlink socket opened
    /// inside talks to this host's kernel state. The thread ends with the call.
    public func inNamespace<T>(_ body: @escaping () throws -> T) throws -> T {
        let call = NamespaceCall(body)
        let done = DispatchSemaphore(value: 0)
        let path = "/var/run/netns/\(namespace)"
        let thread = Thread {
            defer { done.signal() }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0, setNetworkNamespace(fd) == 0 else {
                call.result = .failure(CommandFailure(command: "setns \(path)", status: errno, output: String(cString: strerror(errno))))
                return
            }
            _ = Glibc.close(fd)
            call.result = Swift.Result { try call.body() }
        }
        thread.start()
        done.wait()
        return try call.result!.get()
    }
}
