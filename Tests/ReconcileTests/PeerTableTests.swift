import Model
@testable import Reconcile
import Testing

/// The daemon's one table of peers: what the reconciler and both desired
/// indexes rely on (a removed peer keeps its slot until `settle`, an upsert of
/// a known peer keeps its slot, the last record of an origin wins).
@Suite("PeerTable: the daemon's peers in slots")
struct PeerTableTests {
    static func peer(_ n: Int, ip: Int? = nil) -> NodeRecord {
        NodeRecord(name: "peer-\(n)", publicIP: IPv4Address("198.19.0.\(ip ?? n)")!,
                   subnet: IPv4Prefix("10.244.\(n).0/24")!, origin: "/coreos.com/network/subnets/10.244.\(n).0-24")
    }

    @Test("a removed peer keeps its record and slot until settle; only then does a new peer take the slot")
    func removalAndSettle() throws {
        let table = PeerTable((1...3).map { Self.peer($0) })
        let gone = Self.peer(2)
        let slot = try #require(table.slot(of: gone.origin))
        #expect(table.remove(gone.origin) == gone)
        #expect(table.count == 2 && table[gone.origin] == nil)
        // Not settled: the index that has not taken the removal in still finds it.
        #expect(table.slot(of: gone.origin) == slot && table.record(at: slot) == gone)
        // A peer put in before settle takes a new slot.
        table.upsert(Self.peer(4))
        #expect(table.slot(of: Self.peer(4).origin) != slot)
        table.settle()
        #expect(table.slot(of: gone.origin) == nil)
        // After settle, the freed slot is taken again, and holds the new record.
        table.upsert(Self.peer(5))
        #expect(table.slot(of: Self.peer(5).origin) == slot && table.record(at: slot) == Self.peer(5))
        #expect(table.sorted.map(\.name) == ["peer-1", "peer-3", "peer-4", "peer-5"])
        #expect(table.remove("no such origin") == nil)
    }

    @Test("an upsert of a known peer replaces its record in place and returns the one it had; replace takes the last record of an origin")
    func upsertAndReplace() throws {
        let table = PeerTable((1...3).map { Self.peer($0) })
        let slot = try #require(table.slot(of: Self.peer(2).origin))
        let moved = Self.peer(2, ip: 200)
        #expect(table.upsert(moved) == Self.peer(2))
        #expect(table.slot(of: moved.origin) == slot && table[moved.origin] == moved && table.count == 3)
        #expect(table.upsert(Self.peer(9)) == nil && table.count == 4)
        table.replace(with: [Self.peer(7), Self.peer(7, ip: 77), Self.peer(8)])
        #expect(table.count == 2 && table[Self.peer(7).origin] == Self.peer(7, ip: 77) && table[Self.peer(1).origin] == nil)
        #expect(Set(table.values) == [Self.peer(7, ip: 77), Self.peer(8)])
    }
}
