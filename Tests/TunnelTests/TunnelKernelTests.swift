import CTunnelShim
import Foundation
import Model
import Testing
import TestSupport
@testable import Tunnel

/// Two hosts (namespaces) joined by a veth pair on 198.18.0.0/24, each with a
/// TUN device flannel0 (10.244.N.0/32, route 10.244.0.0/16, accept_local: the
/// tunnel's ICMP errors come from this node's own flannel0 address, which the
/// kernel otherwise drops as a martian) and a `Tunnel` of its own running in
/// this test process: the data path alone, as the agent's control plane sets it up.
final class TunnelPair {
    let prefix = "vxa-tun-\(getpid())"
    var tunnels: [Tunnel] = []

    func ns(_ host: Int) -> String { "\(prefix)-h\(host)" }

    init(peers: Bool = true) throws {
        do {
            try sh("""
            ip netns add \(ns(1)); ip netns add \(ns(2))
            for n in 1 2; do ip netns exec \(prefix)-h$n sysctl -qw net.ipv6.conf.all.disable_ipv6=1; ip -n \(prefix)-h$n link set lo up; done
            ip -n \(ns(1)) link add eth0 type veth peer name eth0 netns \(ns(2))
            ip -n \(ns(1)) addr add 198.18.0.1/24 dev eth0; ip -n \(ns(1)) link set eth0 up
            ip -n \(ns(2)) addr add 198.18.0.2/24 dev eth0; ip -n \(ns(2)) link set eth0 up
            """)
            for host in 1...2 {
                let namespace = ns(host)
                let tunnel: Tunnel = try inNamespace(namespace) {
                    // The device as the control plane makes it: persistent, the queues' flags.
                    let fd = vxa_tun_open("flannel0", 0)
                    guard fd >= 0 else { throw TunnelError(operation: "create flannel0", code: -fd) }
                    _ = vxa_tun_set_persist(fd, 1)
                    Glibc.close(fd)
                    let table = TunnelTable(network: IPv4Prefix("10.244.0.0/16")!, subnetLen: 24,
                                            local: IPv4Prefix("10.244.\(host).0/24")!,
                                            peers: peers ? [(IPv4Prefix("10.244.\(3 - host).0/24")!, IPv4Address("198.18.0.\(3 - host)")!)] : [])
                    return try Tunnel(settings: TunnelSettings(device: "flannel0", localIP: IPv4Address("198.18.0.\(host)")!, port: 8285,
                                                               tunnelAddress: IPv4Address("10.244.\(host).0")!, queues: 2), table: table)
                }
                tunnels.append(tunnel)
                try sh("""
                ip -n \(namespace) addr add 10.244.\(host).0/32 dev flannel0
                ip -n \(namespace) link set flannel0 mtu 1472 up
                ip -n \(namespace) route add 10.244.0.0/16 dev flannel0
                ip netns exec \(namespace) sysctl -qw net.ipv4.conf.flannel0.accept_local=1
                """)
                tunnel.start()
            }
        } catch {
            close()
            throw error
        }
    }

    func close() {
        for tunnel in tunnels { tunnel.stop() }
        tunnels = []
        _ = try? run("ip netns del \(ns(1)) 2>/dev/null; ip netns del \(ns(2)) 2>/dev/null")
    }
}

/// Runs `body` on a thread inside the namespace (its sockets and TUN queues are made there).
final class ResultBox<T>: @unchecked Sendable {
    // @unchecked: written by the namespace thread before it signals, read after the wait.
    var result: Swift.Result<T, any Error>?
}

func inNamespace<T>(_ namespace: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
        defer { done.signal() }
        let fd = open("/var/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
        typealias SetNS = @convention(c) (Int32, Int32) -> Int32
        guard fd >= 0, let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns"),
              unsafeBitCast(symbol, to: SetNS.self)(fd, 0x4000_0000) == 0 else {
            box.result = .failure(CommandFailure(command: "setns \(namespace)", status: errno, output: ""))
            return
        }
        Glibc.close(fd)
        box.result = Swift.Result { try body() }
    }
    thread.start()
    done.wait()
    return try box.result!.get()
}

@Suite("the udp backend's data path between two namespaces", kernelTests, .blocking, .serialized)
struct TunnelKernelTests {
    @Test("ping both ways; TCP moves 64 KiB writes as merged segments; every packet counted")
    func pingAndTCP() throws {
        try requireKernel()
        let pair = try TunnelPair()
        defer { pair.close() }
        let ping = try run("ip netns exec \(pair.ns(1)) ping -c 3 -i 0.2 -W 2 10.244.2.0")
        #expect(ping.status == 0, "\(ping.stdout)\(ping.stderr)")
        #expect(ping.stdout.contains("ttl=62"), "the kernel on neither side forwards; flannel's proxy decrements TTL once on each side: \(ping.stdout)")
        let back = try run("ip netns exec \(pair.ns(2)) ping -c 1 -W 2 10.244.1.0")
        #expect(back.status == 0, "\(back.stdout)")

        // A bulk TCP transfer: 20 MB through the tunnel, checked end to end by its byte count.
        let server = try spawn(["ip", "netns", "exec", pair.ns(2), "python3", "-c", """
            import socket
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("10.244.2.0", 5201)); s.listen(1)
            c, _ = s.accept(); n = 0
            while True:
                b = c.recv(1 << 20)
                if not b: break
                n += len(b)
            print(n)
            """], stdout: "/tmp/\(pair.prefix)-server.out")
        Thread.sleep(forTimeInterval: 0.3)
        let client = try run("""
            ip netns exec \(pair.ns(1)) python3 -c '
            import socket, time
            for i in range(50):
                try:
                    s = socket.create_connection(("10.244.2.0", 5201), timeout=5); break
                except OSError: time.sleep(0.1)
            block = bytes(range(256)) * 4096
            for i in range(20): s.sendall(block)
            s.close()'
            """)
        #expect(client.status == 0, "\(client.stderr)")
        #expect(waitForExit(server) == 0)
        let received = try String(contentsOfFile: "/tmp/\(pair.prefix)-server.out", encoding: .utf8)
        #expect(received.trimmingCharacters(in: .whitespacesAndNewlines) == "\(20 * 256 * 4096)")
        let sender = pair.tunnels[0].statistics, receiver = pair.tunnels[1].statistics
        #expect(sender.txBytes > 20 * 1_048_576 && receiver.rxBytes > 20 * 1_048_576, "\(sender) \(receiver)")
        #expect(receiver.mergedWrites > 0, "consecutive segments are written to the TUN device merged: \(receiver)")
        #expect(sender.drops.values.reduce(0, +) == 0 && receiver.drops.values.reduce(0, +) == 0, "\(sender.drops) \(receiver.drops)")
    }

    @Test("a datagram from an address that holds no lease, a spoofed inner source, a short one, one for another subnet: dropped and counted, never delivered")
    func hostileDatagrams() throws {
        try requireKernel()
        let pair = try TunnelPair()
        defer { pair.close() }
        try sh("ip -n \(pair.ns(1)) addr add 198.18.0.66/24 dev eth0")
        // Raw inner packets in UDP datagrams to host 2's port, from python in host 1's namespace.
        let script = """
            import socket, struct
            def csum(b):
                s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
                return ~s & 0xffff
            def ip(src, dst, payload=b'x' * 8, proto=17):
                h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
                return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
            def send(frm, pkt):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((frm, 0)); s.sendto(pkt, ('198.18.0.2', 8285)); s.close()
            send('198.18.0.66', ip('10.244.1.5', '10.244.2.0'))   # unknown sender
            send('198.18.0.1', ip('10.244.9.5', '10.244.2.0'))    # spoofed: 10.244.9.0/24 is not host 1's
            send('198.18.0.1', b'\\x45\\x00')                       # short
            send('198.18.0.1', ip('10.244.1.5', '10.244.7.1'))    # not for host 2's subnet
            bad = bytearray(ip('10.244.1.5', '10.244.2.0')); bad[10] ^= 0xff
            send('198.18.0.1', bytes(bad))                         # a bad header checksum
            """
        try sh("ip netns exec \(pair.ns(1)) python3 -c \"\(script.replacingOccurrences(of: "\"", with: "\\\""))\"")
        let deadline = Date().addingTimeInterval(5)
        var stats = pair.tunnels[1].statistics
        while Date() < deadline, stats.drops.values.reduce(0, +) < 5 {
            Thread.sleep(forTimeInterval: 0.05)
            stats = pair.tunnels[1].statistics
        }
        #expect(stats.drops[.unknownSender] == 1)
        #expect(stats.drops[.spoofedSource] == 1)
        #expect(stats.drops[.malformed] == 2)
        #expect(stats.drops[.wrongDestination] == 1)
        #expect(stats.rxPackets == 0, "nothing was written to host 2's TUN device")
    }

    @Test("a packet for a subnet no lease holds is answered with ICMP network unreachable; a peer removed stops at once")
    func noRouteAndRemoval() throws {
        try requireKernel()
        let pair = try TunnelPair()
        defer { pair.close() }
        // From a pod's address (the host's own flannel0 address would be the ICMP's destination and source at once).
        try sh("ip -n \(pair.ns(1)) addr add 10.244.1.5/32 dev lo")
        let unknown = try run("ip netns exec \(pair.ns(1)) ping -c 1 -W 2 -I 10.244.1.5 10.244.9.1")
        #expect(unknown.status != 0)
        #expect(unknown.stdout.contains("Destination Net Unreachable"), "\(unknown.stdout)")
        #expect(pair.tunnels[0].statistics.drops[.noRoute] == 1)

        #expect(try run("ip netns exec \(pair.ns(1)) ping -c 1 -W 2 10.244.2.0").status == 0)
        // Host 1 forgets host 2: its packets to host 2 stop, and host 2's are no longer accepted.
        pair.tunnels[0].update(TunnelTable(network: IPv4Prefix("10.244.0.0/16")!, subnetLen: 24, local: IPv4Prefix("10.244.1.0/24")!, peers: []))
        #expect(try run("ip netns exec \(pair.ns(1)) ping -c 1 -W 1 10.244.2.0").status != 0)
        #expect(try run("ip netns exec \(pair.ns(2)) ping -c 1 -W 1 10.244.1.0").status != 0)
        #expect(pair.tunnels[0].statistics.drops[.unknownSender] ?? 0 >= 1)
    }
}
