// libFuzzer target: kernel replies. The input is what one recv() on the
// NETLINK_ROUTE socket returns: a buffer of nlmsghdr-framed messages. It is
// copied into an 8-byte-aligned buffer (as NetlinkSocket's receive buffer is)
// and walked with forEachMessage; each NLMSG_ERROR goes through
// vxa_parse_error (errno, sequence, extended-ACK text), every other message
// through each of the typed parsers (a dump of links, addresses, neighbors,
// FDB entries, nexthops, routes; of both families), and what parses is rendered.
import CNetlinkShim
import CLibMnl
@testable import Dataplane
import Model
@testable import Netlink

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 8)
    defer { buffer.deallocate() }
    if count > 0 { buffer.copyMemory(from: UnsafeRawBufferPointer(start: start, count: count)) }

    forEachMessage(in: UnsafeRawBufferPointer(buffer)) { message in
        _ = (message.type, message.flags, message.sequence, message.length)
        if message.type == UInt16(NLMSG_ERROR) {
            var code: Int32 = 0, answered: UInt32 = 0
            var text: UnsafePointer<CChar>?
            if vxa_parse_error(message.header, &code, &answered, &text) == 0, code != 0 {
                _ = NetlinkError(operation: "fuzz", code: code, kernelMessage: text.map { String(cString: $0) }).description
            }
            return true
        }
        if let link = Parse.link(message) { _ = "\(link)" }
        if let (index, prefix) = Parse.address(message) { _ = "\(index) \(prefix)" }
        if let (index, neighbor) = Parse.neighbor(message) { _ = "\(index) \(neighbor)" }
        if let (index, entry) = Parse.fdb(message) { _ = "\(index) \(entry)" }
        if let nexthop = Parse.nexthop(message) { _ = "\(nexthop)" }
        if let (table, route) = Parse.route(message) { _ = "\(table) \(route)" }
        // The IPv6 plane's readers (dual stack).
        if let (index, prefix) = Parse.address6(message) { _ = "\(index) \(prefix)" }
        if let (index, neighbor) = Parse.neighbor6(message) { _ = "\(index) \(neighbor)" }
        if let (index, entry) = Parse.fdb6(message) { _ = "\(index) \(entry)" }
        if let nexthop = Parse.nexthop6(message) { _ = "\(nexthop)" }
        if let (table, route) = Parse.route6(message) { _ = "\(table) \(route)" }
        return true
    }
    return 0
}
