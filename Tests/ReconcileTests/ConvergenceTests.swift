import Dataplane
import Foundation
import Model
import Netlink
import Reconcile
import Testing

/// A kernel in memory behind the same protocol as the real one, with failure
/// injection: the Nth entry write fails with the given errno, like the kernel
/// answering one request of a batch with an NLMSG_ERROR.
final class FakeKernel: KernelDataplane {
    var state = KernelSnapshot()
    var failWrites: [Int: Int32] = [:]
    var writes = 0
    private var nextIndex: Int32 = 10

    func snapshot(deviceName: String, proto: UInt8) throws(DataplaneError) -> KernelSnapshot { state }

    func apply(_ changes: [Change], deviceName: String) -> ApplyReport {
        var report = ApplyReport()
        for change in changes {
            writes += 1
            report.writes += 1
            if let code = failWrites.removeValue(forKey: writes) {
                report.failures.append(ChangeFailure(change: change, cause: .refused(NetlinkError(operation: "\(change)", code: code))))
                continue
            }
            switch change {
            case .createDevice(let device), .recreateDevice(_, let device):
                nextIndex += 1
                state = KernelSnapshot(device: LinkState(index: nextIndex, name: device.name, kind: "vxlan", mtu: device.mtu,
                                                         mac: device.mac, isUp: true, vxlan: device),
                                       routes: state.routes.filter { $0.deviceIndex != state.device?.index })
            case .updateDevice(_, let device):
                state.device?.mtu = device.mtu
                state.device?.mac = device.mac
                state.device?.isUp = true
            case .createTUN(let device):
                nextIndex += 1
                state = KernelSnapshot(device: LinkState(index: nextIndex, name: device.name, kind: "tun", mtu: device.mtu,
                                                         mac: nil, isUp: true, vxlan: nil, tun: device),
                                       routes: state.routes.filter { $0.deviceIndex != state.device?.index })
            case .updateTUN(_, let device):
                state.device?.mtu = device.mtu
                state.device?.isUp = true
            case .deleteDevice:
                state = KernelSnapshot()
            case .add(let entry), .replace(_, let entry):
                remove(entry, key: true)
                insert(entry)
            case .remove(let entry):
                remove(entry, key: false)
            }
        }
        report.deviceIndex = state.device?.index
        return report
    }

    private func insert(_ entry: Entry) {
        switch entry {
        case .address(let a): state.addresses.append(a)
        case .fdb(let e): state.fdb.append(e)
        case .neighbor(let n): state.neighbors.append(n)
        case .nexthop(var n): n.deviceIndex = state.device?.index; state.nexthops.append(n)
        case .route(var r): if r.nexthopID == nil { r.deviceIndex = state.device?.index }; state.routes.append(r)
        }
    }

    private func remove(_ entry: Entry, key: Bool) {
        switch entry {
        case .address(let a): state.addresses.removeAll { $0 == a }
        case .fdb(let e): state.fdb.removeAll { $0.mac == e.mac && (key || $0.dst == e.dst) }
        case .neighbor(let n): state.neighbors.removeAll { $0.ip == n.ip }
        case .nexthop(let n): state.nexthops.removeAll { $0.id == n.id }
        case .route(let r): state.routes.removeAll { $0.key == r.key }
        }
    }
}

@Suite("Convergence against a fake kernel with injected failures")
struct ConvergenceTests {
    func sync(_ kernel: FakeKernel, _ desired: DesiredState) throws -> ApplyReport {
        let plan = try Differ.plan(desired: desired, snapshot: try kernel.snapshot(deviceName: "flannel.1", proto: 152))
        return kernel.apply(plan.changes, deviceName: "flannel.1")
    }

    @Test("a sync with failures is completed by the next one; then zero writes", arguments: [3, 7, 12, 20])
    func converges(failing nth: Int) throws {
        let kernel = FakeKernel()
        kernel.failWrites = [nth: ENOBUFS, nth + 2: EEXIST]
        let desired = Fixture.desired((2...6).map { Fixture.node(UInt8($0)) })
        let first = try sync(kernel, desired)
        #expect(first.failures.count == 2)
        let second = try sync(kernel, desired)
        #expect(second.failures.isEmpty)
        #expect(second.writes == 2)
        let third = try sync(kernel, desired)
        #expect(third.writes == 0)
        #expect(try Differ.plan(desired: desired, snapshot: kernel.state).isEmpty)
    }

    @Test("peers leave and join across syncs: the kernel ends up holding exactly the desired peers")
    func churn() throws {
        let kernel = FakeKernel()
        _ = try sync(kernel, Fixture.desired((2...9).map { Fixture.node(UInt8($0)) }))
        let next = Fixture.desired([2, 4, 6, 8, 10, 11].map { Fixture.node(UInt8($0)) })
        _ = try sync(kernel, next)
        #expect(Set(kernel.state.neighbors) == Set(next.neighbors))
        #expect(Set(kernel.state.fdb) == Set(next.fdb))
        #expect(Set(kernel.state.routes.map(\.dst)) == Set(next.routes.map(\.dst)))
        #expect(Set(kernel.state.nexthops.map(\.id)) == Set(next.nexthops.map(\.id)))
        #expect(try sync(kernel, next).writes == 0)
    }
}
