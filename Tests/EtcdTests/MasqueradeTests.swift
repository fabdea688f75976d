@testable import Daemon
import Foundation
import Model
import Testing
import TestSupport

// The async masquerade API, nft run through swift-subprocess, in a namespace of
// the test's own (`ip netns exec NS` in front of nft: the root namespace's
// firewall is never touched).

@Suite("Masquerade: nft through swift-subprocess", kernelTests, .blocking)
struct MasqueradeTests {
    static let network = IPv4Prefix("10.244.0.0/16")!

    /// Whether the root namespace has the table (read only), to show the test left it as it was.
    static func rootHasTable() throws -> Bool { try run("nft list table ip \(Masquerade.table) 2>/dev/null").status == 0 }

    @Test("apply writes the table, a second apply replaces it whole, remove deletes it, a second remove finds none")
    func lifecycle() async throws {
        try requireKernel()
        let root = try Self.rootHasTable()
        let host = try TestHost()
        defer { host.close() }
        let ip = try sh("command -v ip").trimmingCharacters(in: .whitespacesAndNewlines)
        try await Masquerade.$launcher.withValue([ip, "netns", "exec", host.namespace]) {
            #expect(await !Masquerade.exists())
            try await Masquerade.apply(network: Self.network, subnet: IPv4Prefix("10.244.1.0/24")!)
            #expect(await Masquerade.exists())
            let first = try host.exec("nft list table ip vxlan-agent").stdout
            #expect(first.contains("ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return"), "\(first)")
            #expect(first.contains("ip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return"), "\(first)")
            #expect(first.contains("masquerade fully-random"), "\(first)")

            try await Masquerade.apply(network: Self.network, subnet: IPv4Prefix("10.244.2.0/24")!)
            let second = try host.exec("nft list table ip vxlan-agent").stdout
            #expect(second.contains("ip daddr 10.244.2.0/24 return"), "\(second)")
            #expect(!second.contains("10.244.1.0/24"), "the old subnet's rule is gone: \(second)")
            #expect(second.components(separatedBy: "chain postrouting").count == 2, "one table, not two: \(second)")

            #expect(try await Masquerade.remove())
            #expect(await !Masquerade.exists())
            #expect(try host.exec("nft list table ip vxlan-agent").status != 0)
            #expect(try await !Masquerade.remove())
        }
        #expect(try Self.rootHasTable() == root, "the root namespace's nftables are as they were")
    }

    @Test("dual stack: the same rules in ip6 vxlan-agent (multicast ff00::/8); an IPv4-only apply removes it; remove takes both")
    func dualStack() async throws {
        try requireKernel()
        let root = try Self.rootHasTable()
        let host = try TestHost()
        defer { host.close() }
        let ip = try sh("command -v ip").trimmingCharacters(in: .whitespacesAndNewlines)
        try await Masquerade.$launcher.withValue([ip, "netns", "exec", host.namespace]) {
            let v6 = (network: IPv6Prefix("fd00:10:244::/56")!, subnet: IPv6Prefix("fd00:10:244:1::/64")!)
            try await Masquerade.apply(network: Self.network, subnet: IPv4Prefix("10.244.1.0/24")!, ipv6: v6)
            let table6 = try host.exec("nft list table ip6 vxlan-agent").stdout
            #expect(table6.contains("ip6 saddr fd00:10:244::/56 ip6 daddr fd00:10:244::/56 return"), "\(table6)")
            #expect(table6.contains("ip6 saddr fd00:10:244::/56 ip6 daddr ff00::/8 return"), "\(table6)")
            #expect(table6.contains("ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244:1::/64 return"), "\(table6)")
            #expect(table6.contains("masquerade fully-random"), "\(table6)")
            #expect(try host.exec("nft list table ip vxlan-agent").stdout.contains("ip daddr 10.244.1.0/24 return"))

            try await Masquerade.apply(network: Self.network, subnet: IPv4Prefix("10.244.1.0/24")!)
            #expect(try host.exec("nft list table ip6 vxlan-agent").status != 0, "IPv6 turned off: its table goes")
            try await Masquerade.apply(network: Self.network, subnet: IPv4Prefix("10.244.1.0/24")!, ipv6: v6)
            #expect(try await Masquerade.remove())
            #expect(try host.exec("nft list tables").stdout.isEmpty, "both tables removed")
            #expect(await !Masquerade.exists())
        }
        #expect(try Self.rootHasTable() == root, "the root namespace's nftables are as they were")
    }

    @Test("nft's own message is in the error, with the command that failed")
    func failure() async throws {
        try requireKernel()
        let ip = try sh("command -v ip").trimmingCharacters(in: .whitespacesAndNewlines)
        let missing = "vxa-e2e-\(getpid())-missing"
        await Masquerade.$launcher.withValue([ip, "netns", "exec", missing]) {
            await #expect {
                try await Masquerade.apply(network: Self.network, subnet: IPv4Prefix("10.244.1.0/24")!)
            } throws: { error in
                let text = "\(error)"
                return text.hasPrefix("nft -f - failed") && text.contains(missing)
            }
            #expect(await !Masquerade.exists())
        }
    }
}
