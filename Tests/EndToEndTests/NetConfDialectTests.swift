import Foundation
import Testing
import TestSupport

/// Item 9 of issue 9, on the etcd side: a net-conf in etcd is read as flanneld
/// reads it (Go's encoding/json), so a cluster of flanneld and vxlan-agent nodes
/// agrees on it: of duplicate keys the last wins, and keys match case-insensitively.
/// (In our own files a duplicate key is an error: HostileInventoryTests.)
@Suite("net-conf in etcd, read as flanneld reads it", kernelTests, .blocking, .serialized)
struct NetConfDialectTests {
    @Test("duplicate and lower-case keys in <prefix>/config: the last wins (VNI 7), as in flanneld; daemons program each other on flannel.7")
    func lastKeyWins() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 2, network: #"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1, "vni": 7}}"#)
        defer { cluster.close() }
        try cluster.startAll(1...2)
        for host in 1...2 {
            let link = try sh("ip -n \(cluster.ns(host)) -d link show flannel.7")
            #expect(link.contains("vxlan id 7 "), "\(link)")
            #expect(try run("ip -n \(cluster.ns(host)) link show flannel.1").status != 0, "no flannel.1 (VNI 1 lost to the later key)")
        }
        let leases = try cluster.leases()
        #expect(leases.count == 2)
        #expect(leases.values.allSatisfy { $0.contains(#""VNI":7"#) }, "\(leases)")
    }
}
