import CLibMnl
import CNetlinkShim
import Glibc
@testable import Netlink
import Testing

/// The refusal `FaultInjector` answers in the kernel's place must read as the
/// kernel's own: the socket and the fuzzed parser see nothing else.
@Suite("FaultInjector: a refusal as the kernel writes it")
struct FaultInjectorTests {
    @Test("an injected refusal decodes to its errno, the request's sequence number and the extended-ACK text",
          arguments: [ENOBUFS, EEXIST, ENODEV, EBUSY])
    func refusalDecodes(code: Int32) throws {
        let batch = Batch(expectedMessages: 1)
        batch.append(type: UInt16(RTM_NEWNEIGH), flags: UInt16(NLM_F_CREATE | NLM_F_REPLACE)) { m in
            m.familyHeader(ndmsg.self) { $0.ndm_family = UInt8(AF_BRIDGE) }
        }
        batch.header(at: 0).pointee.nlmsg_seq = 4242
        let bytes = FaultInjector.refusal(of: UnsafePointer(batch.header(at: 0)), code: code, portID: 77)
        try bytes.withUnsafeBytes { raw in
            // The receive buffer is 8-byte aligned: copy into one as the socket's is.
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: raw.count, alignment: 8)
            defer { buffer.deallocate() }
            buffer.copyMemory(from: raw)
            var messages: [(UInt16, UInt32, UInt32)] = []
            forEachMessage(in: UnsafeRawBufferPointer(buffer)) { message in
                messages.append((message.type, message.sequence, message.header.pointee.nlmsg_pid))
                return true
            }
            try #require(messages.count == 1)
            #expect(messages[0].0 == UInt16(NLMSG_ERROR) && messages[0].1 == 4242 && messages[0].2 == 77)
            let header = buffer.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)
            var decoded: Int32 = 0, answered: UInt32 = 0
            var text: UnsafePointer<CChar>?
            #expect(vxa_parse_error(header, &decoded, &answered, &text) == 0)
            #expect(decoded == code)
            #expect(answered == 4242)
            #expect(text.map { String(cString: $0) } == FaultInjector.kernelMessage)
        }
    }
}
