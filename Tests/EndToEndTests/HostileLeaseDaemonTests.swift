import Foundation
import Testing
import TestSupport

/// The hostile-leases family (Tests/TestSupport/HostileLeases.swift) against a real
/// etcd and a real kernel: every hostile lease written in one transaction next to
/// two good ones, with `vxlan-agent run` watching, restarted (the list path), and
/// `diff`/`sync` reading the same etcd.
@Suite("hostile leases in etcd: vxlan-agent run, diff and sync", kernelTests, .blocking, .serialized)
struct HostileLeaseDaemonTests {
    /// Writes `entries` in one etcd transaction (the JSON gateway, keys and values base64).
    func put(_ cluster: DaemonCluster, _ entries: [HostileLeases.Entry]) throws {
        let operations = entries.map { entry in
            ["requestPut": ["key": Data(entry.key.utf8).base64EncodedString(), "value": Data(entry.value.utf8).base64EncodedString()]]
        }
        let path = "\(cluster.directory)/txn-\(UUID().uuidString.prefix(8)).json"
        try JSONSerialization.data(withJSONObject: ["success": operations]).write(to: URL(fileURLWithPath: path))
        let answer = try sh("ip netns exec \(cluster.prefix)-ul curl -sS --fail-with-body --data-binary @\(path) http://127.0.0.1:2379/v3/kv/txn")
        try #require(answer.contains(#""succeeded":true"#), "\(answer)")
    }

    /// How the agent prints a key: control characters as `\n`, `\t`, `\r` or
    /// `\uNNNN`, the middle of a key longer than 256 characters elided.
    func printable(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        func escaped(_ part: ArraySlice<Unicode.Scalar>) -> String {
            var result = ""
            for scalar in part {
                let names: [UInt32: String] = [0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t"]
                if let name = names[scalar.value] {
                    result += name
                } else if scalar.value < 0x20 || (scalar.value >= 0x7f && scalar.value < 0xa0) {
                    let digits = String(scalar.value, radix: 16)
                    result += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
            return result
        }
        guard scalars.count > 256 else { return escaped(scalars[...]) }
        return escaped(scalars[..<128]) + "…(\(scalars.count) characters)…" + escaped(scalars[(scalars.count - 128)...])
    }

    /// The "lease skipped" and "peer skipped" records of a daemon log, their fields unquoted.
    func skipRecords(_ log: String) -> [[String: String]] {
        log.split(separator: "\n").compactMap { line -> [String: String]? in
            var fields: [String: String] = [:]
            var rest = Substring(line)
            while let equals = rest.firstIndex(of: "=") {
                let name = String(rest[..<equals]).trimmingCharacters(in: .whitespaces)
                rest = rest[rest.index(after: equals)...]
                var value = ""
                if rest.first == "\"" {
                    rest = rest.dropFirst()
                    var escaped = false
                    while let character = rest.first {
                        rest = rest.dropFirst()
                        if escaped {
                            value.append(character == "n" ? "\n" : character)
                            escaped = false
                        } else if character == "\\" {
                            escaped = true
                        } else if character == "\"" {
                            break
                        } else {
                            value.append(character)
                        }
                    }
                } else {
                    let end = rest.firstIndex(of: " ") ?? rest.endIndex
                    value = String(rest[..<end])
                    rest = rest[end...]
                }
                fields[name] = value
            }
            return ["lease skipped", "peer skipped"].contains(fields["msg"]) ? fields : nil
        }
    }

    /// Whether a skip record names `key` and gives a reason containing `fragment`.
    func names(_ record: [String: String], key: String, fragment: String) -> Bool {
        if record["msg"] == "lease skipped" { return record["key"] == printable(key) && record["error"]?.contains(fragment) == true }
        return record["reason"]?.contains("(\(printable(key))): ") == true && record["reason"]?.contains(fragment) == true
    }

    @Test("every hostile lease is skipped and logged with its key, the good peers are programmed, the own lease avoids a dual-stack key's subnet")
    func hostileLeases() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 1, network: HostileLeases.network)
        defer { cluster.close() }

        // Before the daemon: the good peers, and a dual-stack key holding 10.244.13.0/24,
        // one of the two subnets between SubnetMin and SubnetMax (issue 9, item 3).
        try put(cluster, HostileLeases.good + HostileLeases.dualStack.entries)
        try cluster.start(1)
        try cluster.waitUntil("h1 programs the good peers and the dual-stack lease") {
            try cluster.routes(1) == ["10.244.2.0/24", "10.244.3.0/24", "10.244.13.0/24"] && (try? cluster.subnet(1)) != nil
        }
        #expect(try cluster.subnet(1) == HostileLeases.ownSubnet, "not the subnet the dual-stack key holds")
        #expect(try cluster.leases()[HostileLeases.ownKey] != nil)

        // Every other hostile lease, in one transaction.
        let cases = HostileLeases.cases.filter { !$0.pureOnly && $0 != HostileLeases.dualStack }
        try put(cluster, cases.flatMap(\.entries))
        let entries = HostileLeases.good + HostileLeases.cases.filter { !$0.pureOnly }.flatMap(\.entries)
        var programmed: [(subnet: String, ip: String, mac: String)] = []
        var skipped: [(key: String, fragment: String)] = []
        for entry in entries {
            switch entry.outcome {
            case .programmed(let subnet, let ip, let mac): programmed.append((subnet, ip, mac))
            case .skipped(let fragment): skipped.append((entry.key, fragment))
            }
        }
        #expect(skipped.count >= 50)

        /// The kernel holds exactly the programmed peers; each skipped lease is logged
        /// with its key (in the log written after `logOffset`, by the running daemon).
        func check(_ what: String, logOffset: Int = 0) throws {
            func log() -> String { String(cluster.log(1).utf8.dropFirst(logOffset)) ?? "" }
            try cluster.waitUntil("\(what): the good peers programmed, every hostile lease logged, healthy", seconds: 30) {
                let records = skipRecords(log())
                return try cluster.routes(1) == Set(programmed.map { $0.subnet })
                    && skipped.allSatisfy { skip in records.contains { names($0, key: skip.key, fragment: skip.fragment) } }
                    && cluster.metrics(1)["vxlan_agent_peers"] == Double(programmed.count)
            }
            let records = skipRecords(log())
            for skip in skipped {
                #expect(records.contains { names($0, key: skip.key, fragment: skip.fragment) }, "\(printable(skip.key)): \(skip.fragment)")
            }
            let neighbors = try cluster.neighbors(1), fdb = try cluster.fdb(1)
            for peer in programmed {
                #expect(neighbors.contains("\(peer.subnet.replacingOccurrences(of: ".0/24", with: ".0")) lladdr \(peer.mac) PERMANENT"), "\(neighbors)")
                #expect(fdb.contains("\(peer.mac) dst \(peer.ip) self permanent"), "\(fdb)")
            }
            let macs = Set(fdb.split(separator: "\n").filter { $0.contains(" dst ") }.map { String($0.split(separator: " ")[0]) })
            #expect(macs == Set(programmed.map { $0.mac }), "no FDB entry for a skipped lease")
            #expect(try cluster.http(1, "/healthz").contains("200 OK"))
            let metrics = try cluster.metrics(1)
            let leaseSkips = Set(records.filter { $0["msg"] == "lease skipped" }.compactMap { $0["key"] }).count
            #expect(metrics["vxlan_agent_leases_invalid"] == Double(leaseSkips), "\(metrics)")
            #expect(metrics["vxlan_agent_peers_skipped"] == Double(skipped.count - leaseSkips), "\(metrics)")
            #expect(metrics["vxlan_agent_peers"] == Double(programmed.count), "\(metrics)")
        }
        try check("watched")

        // diff reads the same etcd and sees the same: nothing to change, the same leases skipped (exit 3).
        let lock = "--lock-file \(cluster.hostDirectory(1))/sync.lock"
        let diff = try run("ip netns exec \(cluster.ns(1)) \(agentBinary) diff --config \(cluster.configPath(1)) \(lock)")
        #expect(diff.status == 3, "\(diff.stdout)\(diff.stderr)")
        for skip in skipped {
            #expect((diff.stdout + diff.stderr).contains(printable(skip.key)), "diff names \(printable(skip.key))")
        }
        #expect(!diff.stdout.split(separator: "\n").contains { ["+ ", "- ", "~ "].contains($0.prefix(2)) }, "nothing to change: \(diff.stdout)")

        // Restarted, the daemon lists the same leases at start: the same result, the same lease.
        #expect(cluster.stop(1) == 0)
        let offset = cluster.log(1).utf8.count
        try cluster.start(1)
        try check("listed at start", logOffset: offset)
        #expect(try cluster.subnet(1) == HostileLeases.ownSubnet)
        #expect(String(cluster.log(1).utf8.dropFirst(offset))?.contains("msg=\"lease acquired\" key=\(HostileLeases.ownKey)") == true)

        // sync with the daemon stopped: in sync, the same leases skipped (exit 3), the kernel unchanged.
        #expect(cluster.stop(1) == 0)
        let routes = try cluster.routes(1), fdb = try cluster.fdb(1)
        let sync = try run("ip netns exec \(cluster.ns(1)) \(agentBinary) sync --config \(cluster.configPath(1)) \(lock)")
        #expect(sync.status == 3, "\(sync.stdout)\(sync.stderr)")
        for skip in skipped {
            #expect(sync.stderr.contains(printable(skip.key)), "sync names \(printable(skip.key))")
        }
        #expect(try cluster.routes(1) == routes)
        #expect(try cluster.fdb(1) == fdb)
    }
}
