#if canImport(Glibc)
import Glibc
#endif
import CLibMnl
import CNetlinkShim

/// An owning NETLINK_ROUTE socket over libmnl. It is closed exactly once, in
/// `deinit`; nobody else closes the descriptor. Not for sharing across threads:
/// one task owns a socket.
public final class NetlinkSocket {
    private let socket: OpaquePointer
    private var sequence: UInt32
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    /// The port id the kernel assigned.
    public let portID: UInt32
    /// Bytes the kernel will hold for us before it answers ENOBUFS.
    public private(set) var receiveBufferBytes: Int = 0
    /// When set, every datagram this socket sends or receives goes through it
    /// (tests: `FaultInjector`). Nil in production: one branch per datagram.
    public var interposer: (any NetlinkInterposer)?
    /// The sequence number of a dump we stopped reading (a receive failed): the
    /// kernel keeps it running, and answers EBUSY to any other dump on this
    /// socket until its end has been read.
    private var abandonedDump: UInt32?

    /// Default largest sendmsg: DESIGN.md measured 8-16 KiB as the best batch size.
    public static let defaultChunkBytes = 16 * 1024

    /// Opens and binds the socket, raises its buffers (`SO_RCVBUFFORCE` when we
    /// may, the plain option otherwise) and asks for extended and capped ACKs.
    public init(bufferBytes: Int = 32 << 20) throws(NetlinkError) {
        guard let socket = mnl_socket_open(NETLINK_ROUTE) else {
            throw NetlinkError(operation: "open netlink socket", code: errno)
        }
        self.socket = socket
        receiveBuffer = .allocate(byteCount: 256 * 1024, alignment: 8)
        sequence = UInt32(truncatingIfNeeded: time(nil))
        // A failing init never reaches deinit: close here on every error path.
        do {
            _ = try retryingEINTR("bind netlink socket") { mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) }
            portID = mnl_socket_get_portid(socket)
            for option in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
                var on: Int32 = 1
                _ = mnl_socket_setsockopt(socket, option, &on, socklen_t(MemoryLayout<Int32>.size))
            }
            receiveBufferBytes = Self.setBuffer(fd: mnl_socket_get_fd(socket), bytes: bufferBytes,
                                                force: SO_RCVBUFFORCE, plain: SO_RCVBUF)
            _ = Self.setBuffer(fd: mnl_socket_get_fd(socket), bytes: 4 << 20, force: SO_SNDBUFFORCE, plain: SO_SNDBUF)
        } catch {
            mnl_socket_close(socket)
            receiveBuffer.deallocate()
            throw error
        }
    }

    deinit {
        mnl_socket_close(socket)
        receiveBuffer.deallocate()
    }

    public var fileDescriptor: Int32 { mnl_socket_get_fd(socket) }

    private static func setBuffer(fd: Int32, bytes: Int, force: Int32, plain: Int32) -> Int {
        var value = Int32(clamping: bytes)
        let size = socklen_t(MemoryLayout<Int32>.size)
        if setsockopt(fd, SOL_SOCKET, force, &value, size) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, plain, &value, size)
        }
        var actual: Int32 = 0
        var length = size
        _ = getsockopt(fd, SOL_SOCKET, plain == SO_RCVBUF ? SO_RCVBUF : SO_SNDBUF, &actual, &length)
        return Int(actual)
    }

    private func nextSequence(count: Int = 1) -> UInt32 {
        let first = sequence &+ 1
        sequence = sequence &+ UInt32(truncatingIfNeeded: count)
        return first
    }

    // MARK: Multicast

    /// Joins a multicast group (`RTNLGRP_LINK`, `RTNLGRP_NEIGH`, ...).
    public func subscribe(group: UInt32) throws(NetlinkError) {
        var value = Int32(bitPattern: group)
        _ = try retryingEINTR("join netlink group \(group)") {
            setsockopt(fileDescriptor, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &value, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) for messages and hands each
    /// to `body`. Returns false on timeout. An overflowed receive buffer throws
    /// ENOBUFS: events were lost, and the caller must re-dump.
    public func receiveEvents(timeoutMilliseconds: Int32, _ body: (Message) -> Void) throws(NetlinkError) -> Bool {
        var descriptor = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
        let ready = try retryingEINTR("poll netlink socket") { poll(&descriptor, 1, timeoutMilliseconds) }
        if ready == 0 { return false }
        while true {
            guard let length = try receive(blocking: false) else { return true }
            forEachMessage(in: UnsafeRawBufferPointer(rebasing: receiveBuffer[..<length])) { message in
                body(message)
                return true
            }
        }
    }

    // MARK: Receiving

    /// One datagram into the receive buffer; nil when non-blocking and none is queued.
    private func receive(blocking: Bool) throws(NetlinkError) -> Int? {
        let length: Int?
        if let interposer {
            length = try interposer.receive(into: receiveBuffer, blocking: blocking, wire: NetlinkWire(socket: self))
        } else {
            length = try receiveRaw(into: receiveBuffer, blocking: blocking)
        }
        if let abandoned = abandonedDump, let length {
            // Whoever reads it, the end of the abandoned dump frees the socket for dumps.
            forEachMessage(in: UnsafeRawBufferPointer(rebasing: receiveBuffer[..<length])) { message in
                if message.sequence == abandoned && (Int32(message.type) == NLMSG_DONE || Int32(message.type) == NLMSG_ERROR) {
                    abandonedDump = nil
                    return false
                }
                return true
            }
        }
        return length
    }

    /// Reads out the rest of an abandoned dump, if there is one (its replies are
    /// stale: every reader skips other sequence numbers). Gives up when nothing
    /// comes for a second (its end was lost with an overflow, or the kernel never
    /// started it): then the next dump meets EBUSY and says so, as before.
    private func finishAbandonedDump() throws(NetlinkError) {
        while abandonedDump != nil {
            if try receive(blocking: false) != nil { continue }
            var descriptor = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
            if try retryingEINTR("poll netlink socket", { poll(&descriptor, 1, 1000) }) == 0 { abandonedDump = nil }
        }
    }

    /// One datagram from the kernel into `buffer`.
    func receiveRaw(into buffer: UnsafeMutableRawBufferPointer, blocking: Bool) throws(NetlinkError) -> Int? {
        while true {
            let flags = Int32(MSG_TRUNC) | (blocking ? 0 : Int32(MSG_DONTWAIT))
            let length = recv(fileDescriptor, buffer.baseAddress, buffer.count, flags)
            if length >= 0 {
                if length > buffer.count {
                    throw NetlinkError(operation: "receive netlink message of \(length) bytes", code: EMSGSIZE)
                }
                return length
            }
            switch errno {
            case EINTR: continue
            case EAGAIN where !blocking: return nil
            case ENOBUFS:
                throw NetlinkError(operation: "receive from netlink socket", code: ENOBUFS,
                                   kernelMessage: "receive buffer overflowed; replies or events were lost")
            case let code: throw NetlinkError(operation: "receive from netlink socket", code: code)
            }
        }
    }

    private func sendAll(_ pointer: UnsafeRawPointer, _ length: Int, _ operation: @autoclosure () -> String) throws(NetlinkError) {
        if let interposer {
            do {
                try interposer.send(UnsafeRawBufferPointer(start: pointer, count: length), wire: NetlinkWire(socket: self))
            } catch {
                throw error.about(operation())
            }
            return
        }
        try sendRaw(pointer, length, operation())
    }

    /// One datagram to the kernel.
    func sendRaw(_ pointer: UnsafeRawPointer, _ length: Int, _ operation: @autoclosure () -> String) throws(NetlinkError) {
        let sent = try retryingEINTR(operation()) { mnl_socket_sendto(socket, pointer, length) }
        if sent != length { throw NetlinkError(operation: operation(), code: EMSGSIZE) }
    }

    // MARK: Batches

    /// Sends every request of `batch`, `chunkBytes` at a time, with an ACK asked
    /// only on the last request of each chunk, and returns the requests the kernel
    /// refused, by index. Throws only when the exchange itself broke (for
    /// example ENOBUFS): then which requests were applied is unknown.
    public func send(_ batch: Batch, chunkBytes: Int = NetlinkSocket.defaultChunkBytes,
                     operation: String = "netlink batch") throws(NetlinkError) -> [BatchFailure] {
        guard !batch.isEmpty else { return [] }
        let base = nextSequence(count: batch.count)
        var failures: [BatchFailure] = []
        var first = 0
        while first < batch.count {
            let startOffset = batch.offsets[first]
            var last = first
            while last + 1 < batch.count && batch.end(of: last + 1) - startOffset <= chunkBytes { last += 1 }
            for index in first...last {
                let header = batch.header(at: index)
                header.pointee.nlmsg_seq = base &+ UInt32(truncatingIfNeeded: index)
                header.pointee.nlmsg_pid = 0
                header.pointee.nlmsg_flags &= ~UInt16(NLM_F_ACK)
            }
            batch.header(at: last).pointee.nlmsg_flags |= UInt16(NLM_F_ACK)
            try sendAll(batch.pointer(at: startOffset), batch.end(of: last) - startOffset, operation)
            let lastSequence = base &+ UInt32(truncatingIfNeeded: last)
            try awaitAcknowledgement(of: lastSequence) { sequence, error in
                let index = Int(sequence &- base)
                if index >= first && index <= last { failures.append(BatchFailure(index: index, error: error.about(operation))) }
            }
            first = last + 1
        }
        return failures
    }

    /// Reads until the ACK (or error) for `sequence` arrives, reporting every error on the way.
    private func awaitAcknowledgement(of sequence: UInt32, onError: (UInt32, NetlinkError) -> Void,
                                      onReply: (Message) -> Void = { _ in }) throws(NetlinkError) {
        var done = false
        while !done {
            guard let length = try receive(blocking: true) else { continue }
            forEachMessage(in: UnsafeRawBufferPointer(rebasing: receiveBuffer[..<length])) { message in
                if message.type == UInt16(NLMSG_ERROR) {
                    var code: Int32 = 0, answered: UInt32 = 0
                    var text: UnsafePointer<CChar>?
                    guard vxa_parse_error(message.header, &code, &answered, &text) == 0 else { return true }
                    if code != 0 {
                        onError(answered, NetlinkError(operation: "", code: code, kernelMessage: text.map { String(cString: $0) }))
                    }
                    if answered == sequence { done = true; return false }
                } else if message.sequence == sequence {
                    onReply(message)
                }
                return true
            }
        }
    }

    // MARK: Single requests and dumps

    /// Sends one request with an ACK and returns what `parse` makes of the replies.
    public func request<T>(_ operation: @autoclosure () -> String, type: UInt16, flags: UInt16 = 0,
                           build: (MessageWriter) -> Void,
                           parse: (Message) -> T? = { _ in nil as T? }) throws(NetlinkError) -> [T] {
        let batch = Batch(expectedMessages: 1)
        batch.append(type: type, flags: flags | UInt16(NLM_F_ACK), build)
        let seq = nextSequence()
        batch.header(at: 0).pointee.nlmsg_seq = seq
        try sendAll(batch.pointer(at: 0), batch.byteCount, operation())
        var failure: NetlinkError?
        var replies: [T] = []
        try awaitAcknowledgement(of: seq, onError: { answered, error in
            if answered == seq { failure = error }
        }, onReply: { message in
            if let value = parse(message) { replies.append(value) }
        })
        if let failure { throw failure.about(operation()) }
        return replies
    }

    /// Dumps a table: every reply message goes through `parse`; a dump the kernel
    /// marks as interrupted (`NLM_F_DUMP_INTR`, the table changed under it) is
    /// started again, up to a few times.
    @inlinable
    public func dump<T>(_ operation: @autoclosure () -> String, type: UInt16,
                        build: (MessageWriter) -> Void,
                        parse: (Message) -> T?) throws(NetlinkError) -> [T] {
        // Generic only in this inlinable shell: the receive loop below is not,
        // so a dump of 50,000 messages does no generic metadata lookups.
        var results: [T] = []
        try dumpEach(operation(), type: type, build: build, restart: { results.removeAll(keepingCapacity: true) }) { message in
            if let value = parse(message) { results.append(value) }
        }
        return results
    }

    /// The dump loop: `each` sees every reply message; `restart` is called
    /// before an interrupted dump is started again.
    public func dumpEach(_ operation: @autoclosure () -> String, type: UInt16,
                         build: (MessageWriter) -> Void, restart: () -> Void,
                         each: (Message) -> Void) throws(NetlinkError) {
        try finishAbandonedDump()
        for attempt in 0..<5 {
            if attempt > 0 { restart() }
            let batch = Batch(expectedMessages: 1)
            batch.append(type: type, flags: UInt16(NLM_F_DUMP), build)
            let seq = nextSequence()
            batch.header(at: 0).pointee.nlmsg_seq = seq
            try sendAll(batch.pointer(at: 0), batch.byteCount, operation())
            var interrupted = false
            var done = false
            var failure: NetlinkError?
            while !done {
                let received: Int?
                do { received = try receive(blocking: true) } catch {
                    abandonedDump = seq
                    throw error
                }
                guard let length = received else { continue }
                forEachMessage(in: UnsafeRawBufferPointer(rebasing: receiveBuffer[..<length])) { message in
                    guard message.sequence == seq else { return true }
                    if message.flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted = true }
                    switch Int32(message.type) {
                    case NLMSG_DONE:
                        done = true
                        return false
                    case NLMSG_ERROR:
                        var code: Int32 = 0, answered: UInt32 = 0
                        var text: UnsafePointer<CChar>?
                        if vxa_parse_error(message.header, &code, &answered, &text) == 0 && code != 0 {
                            failure = NetlinkError(operation: operation(), code: code,
                                                   kernelMessage: text.map { String(cString: $0) })
                        }
                        done = true
                        return false
                    default:
                        each(message)
                        return true
                    }
                }
            }
            if let failure { throw failure }
            if !interrupted { return }
        }
        throw NetlinkError(operation: operation(), code: EINTR,
                           kernelMessage: "dump kept being interrupted by concurrent changes")
    }
}

@available(*, unavailable)
extension NetlinkSocket: Sendable {}
