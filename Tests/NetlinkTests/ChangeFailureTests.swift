import Dataplane
import Glibc
import Model
import Netlink
import Testing

/// A failed change keeps its cause typed, so the daemon can tell a busy kernel
/// (try again soon) from a refusal that repeats until something changes.
@Suite("ChangeFailure: the cause stays typed")
struct ChangeFailureTests {
    static let change = Change.add(.route(Route(dst: IPv4Prefix("10.244.2.0/24")!, gateway: nil, nexthopID: 7, proto: 152)))

    @Test("transient: ENOBUFS, ENOMEM, EBUSY, EAGAIN, EINTR refusals and any broken exchange",
          arguments: [(ENOBUFS, true), (ENOMEM, true), (EBUSY, true), (EAGAIN, true), (EINTR, true),
                      (EEXIST, false), (EINVAL, false), (ENODEV, false), (ENETUNREACH, false)])
    func refusal(code: Int32, transient: Bool) {
        let error = NetlinkError(operation: "add route", code: code)
        let refused = ChangeFailure(change: Self.change, cause: .refused(error))
        #expect(refused.isTransient == transient)
        #expect(refused.code == code)
        #expect(refused.codeName == error.codeName)
        let broken = ChangeFailure(change: Self.change, cause: .exchange(error))
        #expect(broken.isTransient)
    }

    @Test("a skipped change has no errno and is not retried at once")
    func skipped() {
        let failure = ChangeFailure(change: Self.change, cause: .skipped, reason: "device flannel.1 does not exist")
        #expect(failure.cause == .skipped)
        #expect(failure.code == nil && failure.codeName == nil)
        #expect(!failure.isTransient)
    }
}
