import CLibMnl

/// Requests built up front, sent later by `NetlinkSocket.send(_:)` in chunks of
/// a few KiB, with an ACK asked only on the last request of each chunk.
///
/// Each request gets an index (its position); failures come back by index, so
/// the caller maps them to its own objects without building a description for
/// every request.
public final class Batch {
    /// No request we build comes near this; the buffer always keeps this much free.
    public static let maxMessageSize = 1024

    private(set) var storage: UnsafeMutableRawPointer
    private var capacity: Int
    private(set) var used = 0
    private(set) var offsets: [Int] = []

    public init(expectedMessages: Int = 64) {
        capacity = max(4096, expectedMessages * 80 + Self.maxMessageSize)
        storage = .allocate(byteCount: capacity, alignment: 8)
        // Zeroed: libmnl 1.0.4 leaves attribute padding as it finds it.
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
        offsets.reserveCapacity(expectedMessages)
    }

    deinit { storage.deallocate() }

    public var count: Int { offsets.count }
    public var isEmpty: Bool { offsets.isEmpty }
    public var byteCount: Int { used }

    /// Appends one request and returns its index. `NLM_F_REQUEST` is added to `flags`.
    @discardableResult
    public func append(type: UInt16, flags: UInt16, _ build: (MessageWriter) -> Void) -> Int {
        if capacity - used < Self.maxMessageSize {
            let newCapacity = capacity * 2
            let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 8)
            grown.initializeMemory(as: UInt8.self, repeating: 0, count: newCapacity)
            grown.copyMemory(from: storage, byteCount: used)
            storage.deallocate()
            storage = grown
            capacity = newCapacity
        }
        let writer = MessageWriter(at: storage + used, type: type, flags: flags | UInt16(NLM_F_REQUEST))
        build(writer)
        let length = Int(writer.header.pointee.nlmsg_len)
        precondition(length <= Self.maxMessageSize, "netlink request larger than \(Self.maxMessageSize) bytes")
        offsets.append(used)
        used += length
        return offsets.count - 1
    }

    func header(at index: Int) -> UnsafeMutablePointer<nlmsghdr> {
        (storage + offsets[index]).bindMemory(to: nlmsghdr.self, capacity: 1)
    }

    /// The raw bytes of request `index` (for golden-byte tests).
    public func bytes(of index: Int) -> [UInt8] {
        let start = offsets[index]
        let end = index + 1 < offsets.count ? offsets[index + 1] : used
        return Array(UnsafeRawBufferPointer(start: storage + start, count: end - start))
    }

    /// The end offset of request `index`.
    func end(of index: Int) -> Int { index + 1 < offsets.count ? offsets[index + 1] : used }

    func pointer(at offset: Int) -> UnsafeMutableRawPointer { storage + offset }
}

/// A request of a batch that the kernel refused.
public struct BatchFailure: Sendable, Hashable {
    /// The index `Batch.append` returned for the request.
    public var index: Int
    /// The error, with the batch's generic operation; callers re-label it with `about(_:)`.
    public var error: NetlinkError
}
