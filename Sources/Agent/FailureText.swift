import Dataplane
import Model
import Reconcile

extension PlanOutput {
    /// A failed change in the plan's own words (the same renderer as its lines:
    /// device name and index, the agent's protocol), then why:
    /// `add route 10.244.7.0/24 nhid 1985478663 via 10.244.7.0 dev flannel.1 onlink: ENOENT (No such file or directory); kernel: Nexthop id does not exist`,
    /// `add neigh 10.244.2.0 lladdr 0e:... dev flannel.1: skipped, its fdb entry for 0e:... failed`,
    /// `add fdb ...: the exchange broke, whether it landed is unknown: ENOBUFS (...)`.
    public func describe(_ failure: ChangeFailure) -> String {
        describe(failure, words: renderer.words(failure.change))
    }

    /// The same for the IPv6 plane's changes (dual stack), in its device's words.
    public func describe(_ failure: ChangeFailureOf<IPv6Address>) -> String {
        describe(failure, words: (renderer6 ?? renderer).words(failure.change))
    }

    func describe<A: IPFamilyAddress>(_ failure: ChangeFailureOf<A>, words: String) -> String {
        switch failure.cause {
        case .refused(let error):
            return error.about(words).description
        case .exchange(let error):
            return "\(words): the exchange broke, whether it landed is unknown: \(error)"
        case .skipped:
            return "\(words): skipped, \(failure.reason ?? "what it depends on failed")"
        }
    }
}
