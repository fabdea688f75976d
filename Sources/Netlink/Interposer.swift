/// The raw exchange under a `NetlinkSocket`: when one is set
/// (`NetlinkSocket.interposer`), every datagram the socket sends (a chunk of a
/// batch, a request, a dump request) and every datagram it receives (replies,
/// ACKs, errors, dump parts, events) goes through it instead of straight to
/// the kernel. It may pass them on through `wire`, change them, hold them back,
/// answer in the kernel's place or fail. Tests use it to inject failures under
/// the real code (`FaultInjector`); production leaves it nil, which costs one
/// branch per datagram and nothing per message.
public protocol NetlinkInterposer: AnyObject {
    /// Called in place of one `sendmsg` of `datagram` (whole netlink messages).
    /// Throwing means the send failed: the socket reports a broken exchange.
    func send(_ datagram: UnsafeRawBufferPointer, wire: NetlinkWire) throws(NetlinkError)

    /// Called in place of one `recv` into `buffer`: the datagram's length, or nil
    /// when `blocking` is false and nothing is queued.
    func receive(into buffer: UnsafeMutableRawBufferPointer, blocking: Bool, wire: NetlinkWire) throws(NetlinkError) -> Int?
}

/// The kernel end of a `NetlinkSocket`, as an interposer sees it: the socket's
/// own send and receive, without the interposer.
public struct NetlinkWire {
    let socket: NetlinkSocket

    /// The port id the kernel assigned to the socket (ACKs carry it).
    public var portID: UInt32 { socket.portID }

    /// Sends one datagram to the kernel as it is.
    public func send(_ datagram: UnsafeRawBufferPointer) throws(NetlinkError) {
        guard let base = datagram.baseAddress, !datagram.isEmpty else { return }
        try socket.sendRaw(base, datagram.count, "send to netlink socket")
    }

    /// Receives one datagram from the kernel; nil when non-blocking and none is queued.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, blocking: Bool) throws(NetlinkError) -> Int? {
        try socket.receiveRaw(into: buffer, blocking: blocking)
    }
}

@available(*, unavailable)
extension NetlinkWire: Sendable {}
