import Foundation
import Model

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
/// The forward chain accepts in our own table only: a drop policy in another
/// table (Docker's iptables FORWARD) still applies (nftables runs every table's
/// base chains).
public enum Masquerade {
    public static let table = "vxlan-agent"

    public static func ruleset(network: IPv4Prefix, subnet: IPv4Prefix) -> String {
        """
        table ip \(table) {
            chain postrouting {
                type nat hook postrouting priority srcnat; policy accept;
                ip saddr \(network) ip daddr \(network) return comment "pod to pod: never NAT"
                ip saddr \(network) ip daddr 224.0.0.0/4 return comment "multicast: never NAT"
                ip saddr \(network) masquerade fully-random comment "pod to outside"
                ip saddr != \(network) ip daddr \(subnet) return comment "outside to this node's pods: keep the source"
                ip saddr != \(network) ip daddr \(network) masquerade fully-random comment "host to other nodes' pods"
            }
            chain forward {
                type filter hook forward priority filter; policy accept;
                ip saddr \(network) accept
                ip daddr \(network) accept
            }
        }

        """
    }

    /// The whole transaction: create-if-missing, delete, define. One `nft -f`.
    public static func transaction(network: IPv4Prefix, subnet: IPv4Prefix) -> String {
        "table ip \(table)\ndelete table ip \(table)\n" + ruleset(network: network, subnet: subnet)
    }

    /// Installs (or replaces) the table.
    public static func apply(network: IPv4Prefix, subnet: IPv4Prefix) throws {
        try nft(["-f", "-"], input: transaction(network: network, subnet: subnet))
    }

    /// Removes the table; true if there was one.
    @discardableResult
    public static func remove() throws -> Bool {
        guard try exists() else { return false }
        try nft(["delete", "table", "ip", table])
        return true
    }

    public static func exists() throws -> Bool {
        (try? nft(["list", "table", "ip", table])) != nil
    }

    /// Runs nft; an error carries its message.
    @discardableResult
    static func nft(_ arguments: [String], input: String? = nil) throws -> String {
        guard let binary = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw DaemonError("nft not found: install nftables (apt-get install nftables) or set \"ipMasq\": false")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        let errors = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: errors, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw DaemonError("nft \(arguments.joined(separator: " ")) failed: \(text)")
        }
        return String(decoding: output, as: UTF8.self)
    }
}
