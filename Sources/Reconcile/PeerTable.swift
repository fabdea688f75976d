import Model

/// The peers of a cluster view, each in a numbered slot, by origin (lease key).
///
/// The daemon keeps one of these: the reconciler's view of the cluster between
/// full passes, and the records both planes' desired indexes derive their
/// entries from (an index keeps, per slot, only whether that peer is
/// programmed). At 50,000 peers one table instead of three (the reconciler's
/// dictionary of records, and a copy of the programmed records with their
/// slots in each index) is about 10 MiB less.
///
/// A slot `remove` frees is not taken again until `settle()`: an index that has
/// not taken the removal in yet still finds the removed peer at its slot.
///
/// Not thread-safe: one thread owns it (the reconciler's).
public final class PeerTable: @unchecked Sendable {
    /// By slot; a free slot holds `vacant`.
    private var records: [NodeRecord] = []
    private var slots: [String: Int32] = [:]
    /// Removed since the last `settle`, with the slot each had.
    private var departed: [String: Int32] = [:]
    private var free: [Int32] = []

    private static let vacant = NodeRecord(name: "", publicIP: IPv4Address(0), subnet: IPv4Prefix(IPv4Address(0), 0))

    /// A table of `records` (the last record of an origin wins).
    public init(_ records: [NodeRecord] = []) { replace(with: records) }

    public var count: Int { slots.count }

    public subscript(origin: String) -> NodeRecord? { slots[origin].map { records[Int($0)] } }

    /// Every peer, in no order.
    public var values: [NodeRecord] { slots.values.map { records[Int($0)] } }

    /// Every peer, ordered by origin (a view's order).
    public var sorted: [NodeRecord] { values.sorted { $0.origin < $1.origin } }

    /// Puts a peer in (a new slot) or replaces it (its slot); returns the record it had.
    @discardableResult
    public func upsert(_ record: NodeRecord) -> NodeRecord? {
        if let slot = slots[record.origin] {
            defer { records[Int(slot)] = record }
            return records[Int(slot)]
        }
        if let slot = free.popLast() {
            records[Int(slot)] = record
            slots[record.origin] = slot
        } else {
            slots[record.origin] = Int32(records.count)
            records.append(record)
        }
        return nil
    }

    /// Takes a peer out; returns the record it had. Its slot is free after `settle()`.
    @discardableResult
    public func remove(_ origin: String) -> NodeRecord? {
        guard let slot = slots.removeValue(forKey: origin) else { return nil }
        departed[origin] = slot
        return records[Int(slot)]
    }

    /// Frees the slots of the peers removed since the last call: every index
    /// that reads this table has taken those removals in (or is rebuilt).
    public func settle() {
        guard !departed.isEmpty else { return }
        for slot in departed.values {
            // The record's strings go with it.
            records[Int(slot)] = Self.vacant
            free.append(slot)
        }
        departed = [:]
    }

    /// Replaces every peer with `records` (the last record of an origin wins).
    public func replace(with records: [NodeRecord]) {
        self.records = []
        slots = [:]
        departed = [:]
        free = []
        self.records.reserveCapacity(records.count)
        slots.reserveCapacity(records.count)
        for record in records { upsert(record) }
    }

    /// The slot of a peer, or of one removed since the last `settle()`.
    func slot(of origin: String) -> Int32? { slots[origin] ?? departed[origin] }

    /// The record in a slot (the removed peer's until `settle()`).
    func record(at slot: Int32) -> NodeRecord { records[Int(slot)] }
}
