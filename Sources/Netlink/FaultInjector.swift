#if canImport(Glibc)
import Glibc
#endif
import CLibMnl

/// An interposer that fails chosen requests the way the kernel or the socket
/// would, in front of the real kernel: tests wrap a real `NetlinkSocket` (in a
/// namespace of their own) with it, so everything above (batching, ACK
/// matching, dump retries, `Dataplane.apply`'s phases and dependency skipping)
/// runs as in production and meets the failure.
///
/// For every request message it sends, it asks `decide` (with the request's
/// number, counted from 1 over the injector's life) whether to fail it, and how.
/// Not for sharing across threads, like the socket it sits in.
public final class FaultInjector: NetlinkInterposer {
    public enum Fault: Sendable, Hashable, CustomStringConvertible {
        /// The kernel refuses the request: an `NLMSG_ERROR` with this errno (and
        /// an extended-ACK text) answers its sequence number, in order with the
        /// kernel's other answers; the request itself never reaches the kernel.
        case refuse(Int32)
        /// `sendmsg` fails with this errno at this request: the requests before it
        /// in its datagram reached the kernel, it and the ones after it did not.
        case breakSend(Int32)
        /// The request's datagram is sent whole, then the next receive fails with
        /// this errno (as an overflowed receive buffer does); the kernel's answers
        /// stay queued behind the failure.
        case breakReceive(Int32)
        /// A dump request: its first reply carries `NLM_F_DUMP_INTR`, as when the
        /// table changed while the kernel walked it, and the rest of its entries
        /// are lost (up to `NLMSG_DONE`): taken as the truth, it would be short.
        case interruptDump

        public var description: String {
            switch self {
            case .refuse(let code): "refuse \(NetlinkError(operation: "", code: code).codeName)"
            case .breakSend(let code): "break send \(NetlinkError(operation: "", code: code).codeName)"
            case .breakReceive(let code): "break receive \(NetlinkError(operation: "", code: code).codeName)"
            case .interruptDump: "interrupt dump"
            }
        }
    }

    /// One request on its way to the kernel.
    public struct Request {
        /// 1 for the first request the injector saw, 2 for the next, ...
        public let number: Int
        /// The request as it would be sent (sequence number set).
        public let message: Message
        public var isDump: Bool { message.flags & UInt16(NLM_F_DUMP) == UInt16(NLM_F_DUMP) }
    }

    /// A fault that was injected, for a test to report.
    public struct Injection: Sendable, Hashable, CustomStringConvertible {
        public var number: Int
        /// The request's netlink message type (`RTM_NEWNEIGH`, ...).
        public var type: UInt16
        public var fault: Fault
        public var description: String { "request \(number) (type \(type)): \(fault)" }
    }

    /// The extended-ACK text of an injected refusal.
    public static let kernelMessage = "injected by FaultInjector"

    private let decide: (Request) -> Fault?
    /// False lets everything through: the failures stop.
    public var isEnabled = true
    public private(set) var requestCount = 0
    public private(set) var injections: [Injection] = []

    /// Datagrams to deliver before anything still queued in the kernel.
    private var queued: [[UInt8]] = []
    /// Dumps whose first reply is still to be marked interrupted.
    private var interrupting: Set<UInt32> = []
    /// Interrupted dumps whose entries are being dropped, up to their end.
    private var truncating: Set<UInt32> = []
    private var failingReceive: Int32?
    private let scratch: UnsafeMutableRawBufferPointer

    public init(_ decide: @escaping (Request) -> Fault?) {
        self.decide = decide
        scratch = .allocate(byteCount: 256 * 1024, alignment: 8)
    }

    deinit { scratch.deallocate() }

    /// Injects `fault` on the `n`th (from 1) request for which `matching` holds.
    public static func nth(_ n: Int, where matching: @escaping (Message) -> Bool, _ fault: Fault) -> FaultInjector {
        var seen = 0
        return FaultInjector { request in
            guard matching(request.message) else { return nil }
            seen += 1
            return seen == n ? fault : nil
        }
    }

    // MARK: NetlinkInterposer

    public func send(_ datagram: UnsafeRawBufferPointer, wire: NetlinkWire) throws(NetlinkError) {
        guard let base = datagram.baseAddress else { return }
        // The kernel handles a datagram's requests in order and has queued every
        // answer to them when sendmsg returns (dumps aside: their later parts come
        // as they are read). So a refusal is put in order by sending the requests
        // before it, reading out what the kernel answered, then queueing the
        // refusal, and so on.
        var drain = !queued.isEmpty
        var segmentStart = 0
        var offset = 0
        while offset + MemoryLayout<nlmsghdr>.size <= datagram.count {
            let header = (base + offset).assumingMemoryBound(to: nlmsghdr.self)
            let length = Int(header.pointee.nlmsg_len)
            guard length >= MemoryLayout<nlmsghdr>.size, length <= datagram.count - offset else { break }
            let next = min(offset + (length + 3) & ~3, datagram.count)
            requestCount += 1
            let fault = isEnabled ? decide(Request(number: requestCount, message: Message(header))) : nil
            if let fault {
                injections.append(Injection(number: requestCount, type: header.pointee.nlmsg_type, fault: fault))
            }
            switch fault {
            case nil:
                break
            case .interruptDump:
                interrupting.insert(header.pointee.nlmsg_seq)
            case .breakReceive(let code):
                failingReceive = code
            case .refuse(let code):
                try flush(datagram, from: segmentStart, to: offset, wire: wire, drain: true)
                queued.append(Self.refusal(of: UnsafePointer(header), code: code, portID: wire.portID))
                drain = true
                segmentStart = next
            case .breakSend(let code):
                try flush(datagram, from: segmentStart, to: offset, wire: wire, drain: drain)
                throw NetlinkError(operation: "send to netlink socket", code: code,
                                   kernelMessage: "injected: the send broke at request \(requestCount)")
            }
            offset = next
        }
        try flush(datagram, from: segmentStart, to: datagram.count, wire: wire, drain: drain)
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer, blocking: Bool, wire: NetlinkWire) throws(NetlinkError) -> Int? {
        if let code = failingReceive {
            failingReceive = nil
            throw NetlinkError(operation: "receive from netlink socket", code: code, kernelMessage: "injected: the receive broke")
        }
        let length: Int
        if !queued.isEmpty {
            let datagram = queued.removeFirst()
            precondition(datagram.count <= buffer.count, "queued datagram larger than the receive buffer")
            datagram.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            length = datagram.count
        } else {
            guard let received = try wire.receive(into: buffer, blocking: blocking) else { return nil }
            length = received
        }
        if interrupting.isEmpty && truncating.isEmpty { return length }
        return interrupt(UnsafeMutableRawBufferPointer(rebasing: buffer[..<length]))
    }

    // MARK: Parts

    private func flush(_ datagram: UnsafeRawBufferPointer, from start: Int, to end: Int, wire: NetlinkWire,
                       drain: Bool) throws(NetlinkError) {
        if end > start { try wire.send(UnsafeRawBufferPointer(rebasing: datagram[start..<end])) }
        guard drain else { return }
        while let length = try wire.receive(into: scratch, blocking: false) {
            queued.append(Array(UnsafeRawBufferPointer(rebasing: scratch[..<length])))
        }
    }

    /// Marks the first reply of each dump to interrupt with `NLM_F_DUMP_INTR`
    /// and drops the entries after it; returns the datagram's new length.
    private func interrupt(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        let base = buffer.baseAddress!
        var read = 0, write = 0
        while read + MemoryLayout<nlmsghdr>.size <= buffer.count {
            let header = (base + read).assumingMemoryBound(to: nlmsghdr.self)
            let length = Int(header.pointee.nlmsg_len)
            guard length >= MemoryLayout<nlmsghdr>.size, length <= buffer.count - read else { break }
            let aligned = min((length + 3) & ~3, buffer.count - read)
            let sequence = header.pointee.nlmsg_seq
            let last = Int32(header.pointee.nlmsg_type) == NLMSG_DONE || Int32(header.pointee.nlmsg_type) == NLMSG_ERROR
            var keep = true
            if interrupting.remove(sequence) != nil {
                header.pointee.nlmsg_flags |= UInt16(NLM_F_DUMP_INTR)
                if !last { truncating.insert(sequence) }
            } else if truncating.contains(sequence) {
                if last { truncating.remove(sequence) } else { keep = false }
            }
            if keep {
                if write != read { (base + write).copyMemory(from: base + read, byteCount: aligned) }
                write += aligned
            }
            read += aligned
        }
        return write
    }

    /// The kernel's refusal of `request`: a capped `NLMSG_ERROR` with an extended-ACK text.
    static func refusal(of request: UnsafePointer<nlmsghdr>, code: Int32, portID: UInt32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 256)
        let length = bytes.withUnsafeMutableBytes { raw -> Int in
            let header = mnl_nlmsg_put_header(raw.baseAddress)!
            header.pointee.nlmsg_type = UInt16(NLMSG_ERROR)
            header.pointee.nlmsg_flags = UInt16(NLM_F_CAPPED | NLM_F_ACK_TLVS)
            header.pointee.nlmsg_seq = request.pointee.nlmsg_seq
            header.pointee.nlmsg_pid = portID
            let error = mnl_nlmsg_put_extra_header(header, MemoryLayout<nlmsgerr>.size)!
                .bindMemory(to: nlmsgerr.self, capacity: 1)
            error.pointee.error = -code
            error.pointee.msg = request.pointee
            mnl_attr_put_strz(header, UInt16(NLMSGERR_ATTR_MSG.rawValue), kernelMessage)
            return Int(header.pointee.nlmsg_len)
        }
        return Array(bytes.prefix(length))
    }
}

@available(*, unavailable)
extension FaultInjector: Sendable {}
