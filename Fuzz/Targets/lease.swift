// libFuzzer target: flannel's lease keys and values as they come from etcd.
// The input is `key NUL value` (no NUL: all key, empty value), parsed as the
// daemon does with every key under <prefix>/subnets/. What parses must round-trip:
// flanneld's key for the subnet names the same subnet, and the JSON we write
// for the attributes parses back to them. subnet.env's parser reads the value too.
// The byte-level lease reader answers as the general one or not at all.
import Foundation
import Reconcile
@testable import Registry

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    let split = input.firstIndex(of: 0) ?? input.count
    let key = String(decoding: input[..<split], as: UTF8.self)
    let value = split < input.count ? Array(input[(split + 1)...]) : []

    if let subnet = Flannel.subnet(ofLeaseKey: key) {
        let written = Flannel.leaseKey(prefix: Flannel.defaultPrefix, subnet: subnet)
        precondition(Flannel.subnet(ofLeaseKey: written) == subnet, "lease key round trip: \(key) -> \(written)")
    }
    let general = Result { () throws(ConfigError) -> LeaseAttributes in try LeaseAttributes.parseFields(value, key: key) }
    if let read = value.withUnsafeBufferPointer(LeaseReader.attributes) {
        precondition(general == .success(read), "the lease reader parts from the general reader: \(read)")
    }
    // An IPv6-only network's reading (BackendData not read): the same agreement.
    let general6 = Result { () throws(ConfigError) -> LeaseAttributes in try LeaseAttributes.parseFields(value, key: key, ipv6Only: true) }
    if let read = value.withUnsafeBufferPointer({ LeaseReader.attributes($0, ipv6Only: true) }) {
        precondition(general6 == .success(read), "the lease reader parts from the general reader, IPv6 only: \(read)")
    }
    if let lease = try? Lease.parse(key: key, value: value, etcdLease: 7, ipv6Only: true) {
        precondition(lease.isIPv6Only && Flannel.leaseKey(prefix: Flannel.defaultPrefix, ipv6Only: lease.ipv6Subnet!).hasSuffix(
            "/0.0.0.0-0&\(lease.ipv6Subnet!.network)-\(lease.ipv6Subnet!.length)"), "IPv6-only key: \(key)")
    }
    do {
        let lease = try Lease.parse(key: key, value: value, etcdLease: 7)
        _ = lease.record
        let attributes = lease.attributes
        let again = try LeaseAttributes.parse(Array(attributes.json.utf8), key: key)
        precondition(again == attributes, "lease value round trip: \(attributes.json)")
    } catch {
        precondition(!error.description.isEmpty)
    }
    if let previous = SubnetEnv.previousSubnet(in: String(decoding: value, as: UTF8.self)) {
        _ = previous.description
    }
    return 0
}
