import Foundation
import Model
import Subprocess
import SystemPackage

/// IP masquerade for pod traffic, in an nftables table of the agent's own
/// (`ip vxlan-agent`), always replaced whole in one `nft -f` transaction, so the
/// rules are never half there. The rules are flannel's:
///
/// - pod to pod (anywhere in the network): never NATed;
/// - pod to multicast: never NATed;
/// - pod to outside: masqueraded (fully random ports: no collisions between pods);
/// - outside to this node's pods: source kept;
/// - this host (not a pod) to other nodes' pods: masqueraded, so replies come back
///   over VXLAN;
/// - forwarding to and from the pod network accepted.
///
/// Dual stack adds the same rules for the IPv6 network in `ip6 vxlan-agent`
/// (flannel's MasqIP6Rules: multicast is ff00::/8).
///
/// The forward chain accepts in our own table only: a drop policy in another
/// table (Docker's iptables FORWARD) still applies (nftables runs every table's
/// base chains).
public enum Masquerade {
    public static let table = "vxlan-agent"

    public static func ruleset(network: IPv4Prefix, subnet: IPv4Prefix) -> String {
        ruleset(family: "ip", match: "ip", network: "\(network)", subnet: "\(subnet)", multicast: "224.0.0.0/4")
    }

    /// The IPv6 half of a dual-stack node: the same rules in `ip6 vxlan-agent`.
    public static func ruleset6(network: IPv6Prefix, subnet: IPv6Prefix) -> String {
        ruleset(family: "ip6", match: "ip6", network: "\(network)", subnet: "\(subnet)", multicast: "ff00::/8")
    }

    static func ruleset(family: String, match ip: String, network: String, subnet: String, multicast: String) -> String {
        """
        table \(family) \(table) {
            chain postrouting {
                type nat hook postrouting priority srcnat; policy accept;
                \(ip) saddr \(network) \(ip) daddr \(network) return comment "pod to pod: never NAT"
                \(ip) saddr \(network) \(ip) daddr \(multicast) return comment "multicast: never NAT"
                \(ip) saddr \(network) masquerade fully-random comment "pod to outside"
                \(ip) saddr != \(network) \(ip) daddr \(subnet) return comment "outside to this node's pods: keep the source"
                \(ip) saddr != \(network) \(ip) daddr \(network) masquerade fully-random comment "host to other nodes' pods"
            }
            chain forward {
                type filter hook forward priority filter; policy accept;
                \(ip) saddr \(network) accept
                \(ip) daddr \(network) accept
            }
        }

        """
    }

    /// The whole transaction: create-if-missing, delete, define, for both
    /// families (an IPv4-only node deletes an `ip6` table a dual-stack run left,
    /// an IPv6-only one the `ip` table). One `nft -f`.
    public static func transaction(ipv4: (network: IPv4Prefix, subnet: IPv4Prefix)?,
                                   ipv6: (network: IPv6Prefix, subnet: IPv6Prefix)?) -> String {
        "table ip \(table)\ndelete table ip \(table)\n" + (ipv4.map { ruleset(network: $0.network, subnet: $0.subnet) } ?? "")
            + "table ip6 \(table)\ndelete table ip6 \(table)\n" + (ipv6.map { ruleset6(network: $0.network, subnet: $0.subnet) } ?? "")
    }

    public static func transaction(network: IPv4Prefix, subnet: IPv4Prefix,
                                   ipv6: (network: IPv6Prefix, subnet: IPv6Prefix)? = nil) -> String {
        transaction(ipv4: (network, subnet), ipv6: ipv6)
    }

    /// Installs (or replaces) the tables: each family's with its network, the other removed.
    public static func apply(ipv4: (network: IPv4Prefix, subnet: IPv4Prefix)?,
                             ipv6: (network: IPv6Prefix, subnet: IPv6Prefix)?) async throws {
        try await nft(["-f", "-"], input: transaction(ipv4: ipv4, ipv6: ipv6))
    }

    public static func apply(network: IPv4Prefix, subnet: IPv4Prefix,
                             ipv6: (network: IPv6Prefix, subnet: IPv6Prefix)? = nil) async throws {
        try await apply(ipv4: (network, subnet), ipv6: ipv6)
    }

    /// Removes the tables (IPv4's, and IPv6's if there is one); true if there was any.
    @discardableResult
    public static func remove() async throws -> Bool {
        var removed = false
        for family in ["ip", "ip6"] where await exists(family: family) {
            try await nft(["delete", "table", family, table])
            removed = true
        }
        return removed
    }

    /// Whether a table is there (false also when nft cannot be run).
    public static func exists() async -> Bool {
        let ip = await exists(family: "ip")
        let ip6 = await exists(family: "ip6")
        return ip || ip6
    }

    static func exists(family: String) async -> Bool {
        (try? await nft(["list", "table", family, table])) != nil
    }

    /// What runs nft: empty for nft itself; tests put `ip netns exec NS` in front,
    /// so the table is written in their namespace and never in the root one.
    @TaskLocal static var launcher: [String] = []

    /// Runs nft through swift-subprocess: the task waits for it, no thread of
    /// the pool is held while nft runs. An error carries nft's message.
    @discardableResult
    static func nft(_ arguments: [String], input: String? = nil) async throws -> String {
        let argv = launcher + [try binary()] + arguments
        // nft's standard input is a pipe filled and closed before it starts, not
        // Subprocess' `.string` input: swift-subprocess 1.0.2 traps ("FileDescriptor
        // was not closed") when a child exits without reading its input and the
        // write fails, as nft does when it refuses to run (swift-subprocess issue #367).
        let stdin = try filledPipe(input ?? "")
        defer { try? stdin.close() }
        let result: ExecutionResult<Void, StringOutput<UTF8>, StringOutput<UTF8>>
        do {
            result = try await run(.path(FilePath(argv[0])), arguments: Arguments(Array(argv.dropFirst())),
                                   input: .fileDescriptor(stdin, closeAfterSpawningProcess: false),
                                   output: .string(limit: 1 << 20), error: .string(limit: 1 << 16))
        } catch {
            throw DaemonError("nft \(arguments.joined(separator: " ")): cannot run \(argv[0]): \(error)")
        }
        guard result.terminationStatus.isSuccess else {
            let text = result.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
            throw DaemonError("nft \(arguments.joined(separator: " ")) failed (\(result.terminationStatus)): \(text)")
        }
        return result.standardOutput
    }

    /// The read end of a pipe (close-on-exec) that holds `text` and is closed for
    /// writing: a reader gets `text`, then end of file. `text` must fit in the
    /// pipe's buffer (a page at least; the ruleset is under 1.5 KiB).
    static func filledPipe(_ text: String) throws -> FileDescriptor {
        let bytes = Array(text.utf8)
        guard bytes.count <= 4096 else { throw DaemonError("nft: \(bytes.count) bytes of input is more than a pipe holds") }
        do {
            let (readEnd, writeEnd) = try FileDescriptor.pipe(options: .closeOnExec)
            do {
                try writeEnd.closeAfter { _ = try writeEnd.writeAll(bytes) }
            } catch {
                try? readEnd.close()
                throw error
            }
            return readEnd
        } catch {
            throw DaemonError("nft: a pipe for its input: \(error)")
        }
    }

    static func binary() throws -> String {
        guard let binary = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw DaemonError("nft not found: install nftables (apt-get install nftables) or set \"ipMasq\": false")
        }
        return binary
    }
}
