import Foundation
import Etcd
import Synchronization
import Testing
import TestSupport

// A real etcd for each test: loopback only, random free ports, a temporary
// data dir, killed and removed when the test ends, pass or fail.

let isCI = ProcessInfo.processInfo.environment["CI"] == "true"

/// The etcd and etcdctl binaries, if installed (Debian: etcd-server, etcd-client).
let etcdBinaries: (etcd: String, etcdctl: String)? = {
    func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
    guard let etcd = find("etcd"), let etcdctl = find("etcdctl") else { return nil }
    return (etcd, etcdctl)
}()

/// Tests run where etcd is installed; under CI=true they always run, and fail
/// (in `withEtcd`) instead of skipping when it is not.
let etcdTests: ConditionTrait = .enabled(
    if: etcdBinaries != nil || isCI,
    "needs etcd and etcdctl (apt-get install etcd-server etcd-client)")

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: Processes

/// Runs a program (no shell) to completion; returns its status and merged output.
@discardableResult
func run(_ argv: [String]) throws -> (status: Int32, output: String) {
    let log = NSTemporaryDirectory() + "registry-tests-\(getpid())-\(UUID().uuidString).log"
    defer { unlink(log) }
    let pid = try spawn(argv, log: log)
    let status = wait(pid)
    return (status, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
}

/// Runs a program that must succeed.
func check(_ argv: [String]) throws {
    let (status, output) = try run(argv)
    guard status == 0 else {
        throw HarnessError("\(argv.joined(separator: " ")) exited \(status): \(output)")
    }
}

/// Starts a program with stdout and stderr to `log` (TestSupport's spawn).
func spawn(_ argv: [String], log: String) throws -> pid_t {
    try TestSupport.spawn(argv, stdout: log)
}

/// Waits for a child; returns its exit status (128 + signal when killed).
func wait(_ pid: pid_t) -> Int32 { waitForExit(pid) }

/// A TCP port on 127.0.0.1 that nothing listens on right now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
            bind(fd, address, length) == 0 && getsockname(fd, address, &length) == 0
        }
    }
    guard bound else { throw HarnessError("bind: \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: address.sin_port))
}

func makeTemporaryDirectory(_ name: String) throws -> String {
    let path = NSTemporaryDirectory() + "\(name)-\(getpid())-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

// MARK: etcd

/// Certificates made with openssl for one TLS test.
struct TestCertificates {
    var directory: String
    var ca: String { directory + "/ca.pem" }
    var serverCert: String { directory + "/server.pem" }
    var serverKey: String { directory + "/server-key.pem" }
    var clientTLS: EtcdTLS { EtcdTLS(caFile: ca, certFile: directory + "/client.pem", keyFile: directory + "/client-key.pem") }
    /// A client certificate signed by another CA, that etcd must refuse.
    var strangerTLS: EtcdTLS { EtcdTLS(caFile: ca, certFile: directory + "/stranger.pem", keyFile: directory + "/stranger-key.pem") }

    /// A CA, a server certificate for IP 127.0.0.1 and a client certificate it
    /// signs; another CA and a client certificate signed by it.
    static func make(in directory: String) throws -> TestCertificates {
        func path(_ name: String) -> String { directory + "/" + name }
        func ca(_ name: String) throws {
            try check(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                       "-keyout", path("\(name)-key.pem"), "-out", path("\(name).pem"), "-days", "2",
                       "-subj", "/CN=vxlan-agent test \(name)",
                       "-addext", "basicConstraints=critical,CA:TRUE",
                       "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        }
        func leaf(_ name: String, signedBy issuer: String, extensions: String) throws {
            try check(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                       "-keyout", path("\(name)-key.pem"), "-out", path("\(name).csr"), "-subj", "/CN=\(name)"])
            try extensions.write(toFile: path("\(name).ext"), atomically: true, encoding: .utf8)
            try check(["openssl", "x509", "-req", "-in", path("\(name).csr"), "-CA", path("\(issuer).pem"),
                       "-CAkey", path("\(issuer)-key.pem"), "-CAcreateserial", "-days", "2",
                       "-extfile", path("\(name).ext"), "-out", path("\(name).pem")])
        }
        try ca("ca")
        try ca("other-ca")
        // clientAuth too: etcd's JSON gateway dials etcd's own gRPC server
        // presenting --cert-file, which --client-cert-auth then checks. With
        // serverAuth alone every gateway call fails with gRPC code 14.
        try leaf("server", signedBy: "ca", extensions: """
            subjectAltName=IP:127.0.0.1
            keyUsage=critical,digitalSignature
            extendedKeyUsage=serverAuth,clientAuth
            """)
        let clientExtensions = """
            keyUsage=critical,digitalSignature
            extendedKeyUsage=clientAuth
            """
        try leaf("client", signedBy: "ca", extensions: clientExtensions)
        try leaf("stranger", signedBy: "other-ca", extensions: clientExtensions)
        return TestCertificates(directory: directory)
    }
}

/// One etcd process on 127.0.0.1.
final class EtcdServer: Sendable {
    let endpoint: String
    let directory: String
    let certificates: TestCertificates?
    private let pid = Mutex<pid_t?>(nil)

    private init(endpoint: String, directory: String, certificates: TestCertificates?, pid: pid_t) {
        self.endpoint = endpoint
        self.directory = directory
        self.certificates = certificates
        self.pid.withLock { $0 = pid }
    }

    /// Starts etcd (with TLS and client certificate authentication when
    /// `certificates` is given) and waits, at most 30 s, until it answers.
    static func start(directory: String, certificates: TestCertificates?) async throws -> EtcdServer {
        guard let binaries = etcdBinaries else {
            throw HarnessError("etcd and etcdctl are not installed (apt-get install etcd-server etcd-client)")
        }
        var lastError: any Error = HarnessError("etcd did not start")
        // A port found free can be taken before etcd binds it: try again with others.
        for attempt in 1...3 {
            let clientPort = try freePort(), peerPort = try freePort()
            let scheme = certificates == nil ? "http" : "https"
            let endpoint = "\(scheme)://127.0.0.1:\(clientPort)"
            let peer = "http://127.0.0.1:\(peerPort)"
            let log = directory + "/etcd-\(attempt).log"
            var argv = [binaries.etcd, "--name", "test", "--data-dir", directory + "/data-\(attempt)",
                        "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                        "--initial-cluster", "test=\(peer)", "--initial-cluster-state", "new"]
            if let certificates {
                argv += ["--client-cert-auth", "--trusted-ca-file", certificates.ca,
                         "--cert-file", certificates.serverCert, "--key-file", certificates.serverKey]
            }
            let pid = try spawn(argv, log: log)
            let server = EtcdServer(endpoint: endpoint, directory: directory, certificates: certificates, pid: pid)
            do {
                try await server.waitUntilHealthy(log: log)
                return server
            } catch {
                server.kill()
                lastError = error
            }
        }
        throw lastError
    }

    /// etcdctl's arguments to reach this server.
    var etcdctl: [String] {
        var argv = [etcdBinaries?.etcdctl ?? "etcdctl", "--endpoints", endpoint, "--command-timeout", "5s"]
        if let certificates {
            let tls = certificates.clientTLS
            argv += ["--cacert", certificates.ca, "--cert", tls.certFile!, "--key", tls.keyFile!]
        }
        return argv
    }

    private func waitUntilHealthy(log: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        var last = ""
        while ContinuousClock.now < deadline {
            guard let pid = pid.withLock({ $0 }), Glibc.kill(pid, 0) == 0 else { break }
            let argv = etcdctl + ["endpoint", "health"]
            let (status, output) = try await offThePool { try run(argv) }   // etcdctl takes ~0.1 s: not on a cooperative thread
            // Healthy, and it is ours: a port found free can be taken by another
            // test's etcd first; ours then exits (address in use) while that one answers.
            if status == 0 {
                let serving = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("ready to serve client requests")
                if serving, Glibc.kill(pid, 0) == 0 { return }
            }
            last = output
            try await Task.sleep(for: .milliseconds(100))
        }
        let etcdLog = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        throw HarnessError("etcd at \(endpoint) did not become healthy: \(last)\n--- etcd log (end) ---\n\(etcdLog.suffix(3000))")
    }

    /// Compacts the history up to `revision` (etcdctl, not the client under test).
    func compact(_ revision: Int64) throws {
        try check(etcdctl + ["compaction", "--physical", String(revision)])
    }

    /// Freezes etcd (SIGSTOP): its connections stay open, the kernel still
    /// acknowledges what arrives, and nothing answers, as with a silent partition.
    func pause() {
        if let pid = pid.withLock({ $0 }) { Glibc.kill(pid, SIGSTOP) }
    }

    /// Lets a paused etcd run again (SIGCONT).
    func resume() {
        if let pid = pid.withLock({ $0 }) { Glibc.kill(pid, SIGCONT) }
    }

    /// Stops etcd: SIGTERM and wait, or SIGKILL with `force`. Idempotent.
    func kill(force: Bool = true) {
        guard let pid = pid.withLock({ (pid: inout pid_t?) -> pid_t? in defer { pid = nil }; return pid }) else { return }
        Glibc.kill(pid, force ? SIGKILL : SIGTERM)
        _ = wait(pid)
    }
}

/// Runs `body` with a fresh etcd (TLS with `tls: true`); stops it and removes
/// its directory afterwards, whether `body` succeeded or not.
func withEtcd<T>(tls: Bool = false, _ body: (EtcdServer) async throws -> T) async throws -> T {
    try #require(etcdBinaries != nil, "etcd and etcdctl are required (apt-get install etcd-server etcd-client); CI=true makes this a failure, not a skip")
    let directory = try makeTemporaryDirectory("registry-tests-etcd")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let certificates = tls ? try TestCertificates.make(in: directory) : nil
    let server = try await EtcdServer.start(directory: directory, certificates: certificates)
    defer { server.kill() }
    return try await body(server)
}

/// Runs `body` with a client, shut down afterwards whether `body` succeeded or not.
/// Its deadlines are 15 s, not the daemon's 5: these tests check answers, not
/// liveness (WatchLivenessTests does, with its own), and under the whole suite
/// on 2 cores (kernel tests, iperf3 through the udp tunnel, a dozen etcds) an
/// etcd was seen taking more than 5 s to answer a watch's progress request.
func withClient<T>(_ endpoints: [String], tls: EtcdTLS? = nil, _ body: (EtcdClient) async throws -> T) async throws -> T {
    let client = try EtcdClient(endpoints: endpoints, tls: tls, requestTimeout: .seconds(15), watchProgressInterval: .seconds(5))
    do {
        let result = try await body(client)
        try await client.shutdown()
        return result
    } catch {
        try? await client.shutdown()
        throw error
    }
}

// MARK: Watches

/// Consumes a watch in the background and keeps what it saw, so a test can
/// wait (boundedly) for events or for the error that ends the stream.
final class WatchRecorder: Sendable {
    private final class Seen: Sendable {
        let state = Mutex<(batches: [WatchBatch], failure: (any Error)?, ended: Bool)>(([], nil, false))
    }
    private let seen = Seen()
    private let task: Task<Void, Never>

    init(_ stream: AsyncThrowingStream<WatchBatch, any Error>) {
        let seen = self.seen
        task = Task {
            do {
                for try await batch in stream {
                    seen.state.withLock { $0.batches.append(batch) }
                }
                seen.state.withLock { $0.ended = true }
            } catch {
                seen.state.withLock { $0.failure = error }
            }
        }
    }

    deinit { stop() }

    func stop() { task.cancel() }

    var batches: [WatchBatch] { seen.state.withLock { $0.batches } }
    /// The error that ended the stream, if it failed.
    var failure: (any Error)? { seen.state.withLock { $0.failure } }
    var events: [WatchEvent] { batches.flatMap(\.events) }

    /// Waits until `count` events have arrived; fails after 30 s or when the stream ends first.
    func waitForEvents(_ count: Int) async throws -> [WatchEvent] {
        try await waitUntil("\(count) watch events") {
            let (events, failure, ended) = seen.state.withLock { ($0.batches.flatMap(\.events), $0.failure, $0.ended) }
            if events.count >= count { return events }
            if let failure { throw HarnessError("the watch failed after \(events.count) events: \(failure)") }
            if ended { throw HarnessError("the watch ended after \(events.count) events") }
            return nil
        }
    }

    /// Waits until the stream fails; returns the error.
    func waitForFailure() async throws -> any Error {
        try await waitUntil("the watch to fail") {
            let (failure, ended) = seen.state.withLock { ($0.failure, $0.ended) }
            if ended { throw HarnessError("the watch ended without an error") }
            return failure
        }
    }
}

/// Polls `probe` every 20 ms until it returns a value; fails after `seconds`.
/// A bound on a wait, not a timing assertion.
func waitUntil<T>(_ what: String, seconds: Int = 30, _ probe: () throws -> T?) async throws -> T {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        if let value = try probe() { return value }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw HarnessError("gave up waiting for \(what) after \(seconds) s")
}
