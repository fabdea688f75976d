import Foundation
import Logging
import Model
import Reconcile
import Registry

/// flannel's annotation names under a prefix (`newAnnotations` in flannel's
/// pkg/subnet/kube): `<prefix>/kube-subnet-manager`, `backend-type`,
/// `backend-data`, `public-ip`, and the IPv6 and overwrite ones.
public struct KubeAnnotations: Sendable, Hashable {
    public var kubeSubnetManager, backendData, backendV6Data, backendType, publicIP, publicIPv6: String
    public var nodePublicIP, nodePublicIPv6, publicIPOverwrite, publicIPv6Overwrite: String

    public init(prefix: String = "flannel.alpha.coreos.com") throws {
        guard let base = KubernetesSettings.annotationBase(prefix) else {
            throw DaemonError("kubernetes.annotationPrefix \(quoted(prefix)) is not a prefix flanneld accepts (fqdn/[a-z0-9_-]*)")
        }
        kubeSubnetManager = base + "kube-subnet-manager"
        backendData = base + "backend-data"
        backendV6Data = base + "backend-v6-data"
        backendType = base + "backend-type"
        publicIP = base + "public-ip"
        publicIPv6 = base + "public-ipv6"
        nodePublicIP = base + "node-public-ip"
        nodePublicIPv6 = base + "node-public-ipv6"
        publicIPOverwrite = base + "public-ip-overwrite"
        publicIPv6Overwrite = base + "public-ipv6-overwrite"
    }
}

/// Node objects to flannel leases and back, pure: what flanneld's kube subnet
/// manager reads on every Node (`nodeToLease`) and writes on its own (`AcquireLease`).
public enum KubeNodes {
    /// The key a Node's peer has in the view (`NodeRecord.origin`), and its removal's.
    public static func origin(_ name: String) -> String { "node/\(name)" }

    /// The Node's IPv4 pod subnet: `spec.podCIDRs`' IPv4 entry (at most two
    /// entries: IPv4, IPv6 or both), else `spec.podCIDR`. nil with a reason when
    /// there is none yet or it does not parse.
    public static func podSubnet(_ node: KubeNode) -> Result<IPv4Prefix, SkippedLease> {
        func skip(_ reason: String) -> Result<IPv4Prefix, SkippedLease> { .failure(SkippedLease(key: origin(node.name), reason: reason)) }
        let cidrs = node.podCIDRs.isEmpty ? (node.podCIDR.map { [$0] } ?? []) : node.podCIDRs
        if cidrs.count > 2 { return skip("spec.podCIDRs has \(cidrs.count) entries: at most IPv4 and IPv6") }
        guard let text = cidrs.first(where: { !$0.contains(":") }), !text.isEmpty else {
            return skip(cidrs.isEmpty || cidrs == [""] ? "no podCIDR assigned yet (spec.podCIDR)" : "no IPv4 podCIDR (\(cidrs.joined(separator: ",")))")
        }
        guard let prefix = IPv4Prefix(text) else { return skip("spec.podCIDR \(quoted(text)) is not an IPv4 prefix") }
        // Go's net.ParseCIDR gives the network: host bits are dropped.
        return .success(IPv4Prefix(prefix.network, prefix.length))
    }

    /// The Node's IPv6 pod subnet (dual stack): `spec.podCIDRs`' IPv6 entry, else
    /// `spec.podCIDR` if it is IPv6, as flanneld's `nodeToLease` picks it; host
    /// bits dropped as Go's net.ParseCIDR does. A failure says why there is none.
    public static func podSubnetV6(_ node: KubeNode) -> Result<IPv6Prefix, SkippedLease> {
        func skip(_ reason: String) -> Result<IPv6Prefix, SkippedLease> { .failure(SkippedLease(key: origin(node.name), reason: reason)) }
        let cidrs = node.podCIDRs.isEmpty ? (node.podCIDR.map { [$0] } ?? []) : node.podCIDRs
        guard let text = cidrs.first(where: { $0.contains(":") }) else {
            return skip("no IPv6 podCIDR (spec.podCIDRs: [\(cidrs.joined(separator: ","))])")
        }
        guard let prefix = IPv6Prefix(text) else { return skip("spec.podCIDRs' IPv6 entry \(quoted(text)) is not an IPv6 prefix") }
        return .success(IPv6Prefix(prefix.network, prefix.length))
    }

    /// Whether `network` runs an IPv6 plane beside IPv4 that Nodes take part in:
    /// dual stack, and a backend that carries IPv6 (flannel's udp does not).
    static func isDual(_ network: NetworkConfig) -> Bool { network.ipv6 != nil && network.backendType != "udp" }

    /// A peer read from another node's Node, and (dual stack) why its IPv6 half
    /// is left out while its IPv4 half is programmed.
    public struct Peer: Sendable, Hashable {
        public var record: NodeRecord
        public var ipv6Skipped: SkippedIPv6Half?
    }

    /// A peer from another node's Node (flanneld: only Nodes whose
    /// kube-subnet-manager annotation is "true"; nil for the others), checked as
    /// a lease of `network`'s backend is: its public-ip, backend-type and
    /// backend-data, its VNI.
    public static func peer(_ node: KubeNode, annotations: KubeAnnotations, network: NetworkConfig) -> Result<NodeRecord, SkippedLease>? {
        checkedPeer(node, annotations: annotations, network: network).map { $0.map(\.record) }
    }

    /// `peer`, and in a dual-stack network the peer's IPv6 half: the Node's IPv6
    /// podCIDR, its public-ipv6 and backend-v6-data annotations, checked as
    /// `Flannel.check` checks a dual-stack lease's (a global unicast PublicIPv6
    /// outside the IPv6 network, BackendV6Data's VtepMAC and VNI). A missing or
    /// broken IPv6 half keeps the IPv4 peer and says why (flanneld drops the
    /// whole Node instead).
    public static func checkedPeer(_ node: KubeNode, annotations: KubeAnnotations, network: NetworkConfig) -> Result<Peer, SkippedLease>? {
        guard node.annotations[annotations.kubeSubnetManager] == "true" else { return nil }
        guard network.enableIPv4 else { return ipv6OnlyPeer(node, annotations: annotations, network: network).map { Peer(record: $0) } }
        let key = origin(node.name)
        func skip(_ reason: String) -> Result<Peer, SkippedLease> { .failure(SkippedLease(key: key, reason: reason)) }
        let subnet: IPv4Prefix
        switch podSubnet(node) {
        case .success(let prefix): subnet = prefix
        case .failure(let skipped): return .failure(skipped)
        }
        guard let ipText = node.annotations[annotations.publicIP] else { return skip("\(annotations.publicIP) is missing") }
        // The annotations as the lease value flanneld's etcd registry would hold,
        // read by the same reader: backend-data must be one JSON value of its own.
        var value = "{\"PublicIP\":\(jsonString(ipText))"
        let type = node.annotations[annotations.backendType] ?? ""
        if !type.isEmpty { value += ",\"BackendType\":\(jsonString(type))" }
        if let data = node.annotations[annotations.backendData], !data.isEmpty {
            guard isJSON(data) else { return skip("\(annotations.backendData) is not JSON: \(quoted(data))") }
            value += ",\"BackendData\":" + data
        }
        let attributes: LeaseAttributes
        do {
            attributes = try LeaseAttributes.parse(Array((value + "}").utf8), key: key, backendType: network.backendType)
        } catch {
            let field = [annotations.publicIP: "PublicIP", annotations.backendType: "BackendType", annotations.backendData: "BackendData"]
                .first { error.field.hasPrefix($0.value) }?.key ?? error.field
            return skip(field.isEmpty ? error.message : "\(field): \(error.message)")
        }
        if let vni = attributes.vni, vni != network.vni {
            return skip("\(annotations.backendData): VNI \(vni), but the network uses VNI \(network.vni)")
        }
        var peer = Peer(record: NodeRecord(name: node.name, publicIP: attributes.publicIP, subnet: subnet,
                                           vtepMAC: attributes.vtepMAC, origin: key))
        guard isDual(network) else { return .success(peer) }
        switch ipv6Half(node, subnet: subnet, value: value, annotations: annotations, network: network) {
        case .success(let half): peer.record.ipv6 = half
        case .failure(let skipped): peer.ipv6Skipped = skipped
        }
        return .success(peer)
    }

    /// A Node's IPv6 half in a dual-stack network: what the Node says is read as
    /// the dual-stack lease flanneld's etcd registry would hold
    /// (`10.244.2.0-24&fd00:10:244:2::-64`, `PublicIPv6`, `BackendV6Data`) and
    /// checked by `Flannel.check`; reasons name the annotation or field at fault.
    /// `value`: the IPv4 part of that lease value, unterminated.
    static func ipv6Half(_ node: KubeNode, subnet: IPv4Prefix, value: String, annotations: KubeAnnotations,
                         network: NetworkConfig) -> Result<NodeRecord.IPv6Half, SkippedIPv6Half> {
        func skip(_ reason: String) -> Result<NodeRecord.IPv6Half, SkippedIPv6Half> { .failure(SkippedIPv6Half(key: origin(node.name), reason: reason)) }
        guard let ipv6 = network.ipv6 else { return skip("the network is not dual stack") }
        let subnetV6: IPv6Prefix
        switch podSubnetV6(node) {
        case .success(let prefix): subnetV6 = prefix
        case .failure(let skipped):
            return skip(skipped.reason + (skipped.reason.hasPrefix("no IPv6") ? ": an IPv4-only Node in a dual-stack network" : ""))
        }
        guard subnetV6.length == ipv6.subnetLen, ipv6.network.contains(subnetV6) else {
            return skip("spec.podCIDRs' IPv6 entry \(subnetV6) is not a /\(ipv6.subnetLen) inside the IPv6 network \(ipv6.network)")
        }
        guard let addressText = node.annotations[annotations.publicIPv6], !addressText.isEmpty else {
            return skip("\(annotations.publicIPv6) is missing: a dual-stack node publishes its IPv6 underlay address there")
        }
        guard IPv6Address(addressText) != nil else {
            return skip("\(annotations.publicIPv6): \(quoted(addressText)) is not an IPv6 address")
        }
        var lease = value + ",\"PublicIPv6\":\(jsonString(addressText))"
        if let data = node.annotations[annotations.backendV6Data], !data.isEmpty {
            guard isJSON(data) else { return skip("\(annotations.backendV6Data) is not JSON: \(quoted(data))") }
            lease += ",\"BackendV6Data\":" + data
        }
        let entry = LeaseEntry(key: Flannel.leaseKey(prefix: origin(node.name), subnet: subnet, ipv6: subnetV6), value: Array((lease + "}").utf8))
        let reason: String
        switch Flannel.check(entry, network: network) {
        case .success(let checked):
            if let half = checked.ipv6 { return .success(half) }
            reason = checked.ipv6Skipped ?? "not read"
        case .failure(let skipped): reason = skipped.reason
        }
        // The lease's field names are the Node's annotations here.
        for (field, name) in [("PublicIPv6", annotations.publicIPv6), ("BackendV6Data", annotations.backendV6Data)] where reason.hasPrefix(field) {
            let rest = reason.dropFirst(field.count)
            return skip(name + (rest.hasPrefix(".") ? ": " + rest.dropFirst() : rest))
        }
        return skip(reason)
    }

    /// A peer of an IPv6-only network (`EnableIPv4: false`), as flanneld's
    /// `nodeToLease` reads a Node then: its IPv6 podCIDR, `public-ipv6`,
    /// `backend-type` and (vxlan) `backend-v6-data`; no IPv4 field is read. The
    /// checks are a dual-stack lease's IPv6 half's (`Flannel.check`): the podCIDR a
    /// /`IPv6SubnetLen` inside `IPv6Network`, a global unicast `public-ipv6` outside
    /// it, `backend-v6-data`'s VtepMAC and VNI. The IPv6 half is all such a Node
    /// has, so a broken one skips it, with the reason naming the field.
    static func ipv6OnlyPeer(_ node: KubeNode, annotations: KubeAnnotations, network: NetworkConfig) -> Result<NodeRecord, SkippedLease> {
        let key = origin(node.name)
        func skip(_ reason: String) -> Result<NodeRecord, SkippedLease> { .failure(SkippedLease(key: key, reason: reason)) }
        guard let ipv6 = network.ipv6 else { return skip("the network has no IPv6Network") }
        let subnet: IPv6Prefix
        switch ipv6OnlySubnet(node) {
        case .success(let prefix): subnet = prefix
        case .failure(let skipped): return .failure(skipped)
        }
        guard subnet.length == ipv6.subnetLen, ipv6.network.contains(subnet) else {
            return skip("\(podCIDRField(node)) \(subnet) is not a /\(ipv6.subnetLen) inside the IPv6 network \(ipv6.network)")
        }
        // flanneld's vxlan and host-gw ignore a Node of another backend ("ignoring non-vxlan v6 subnet").
        let type = node.annotations[annotations.backendType] ?? ""
        guard !type.isEmpty else {
            return skip("\(annotations.backendType) is missing: flanneld programs only Nodes whose backend-type is \(quoted(network.backendType))")
        }
        guard type == network.backendType else {
            return skip("\(annotations.backendType): \(quoted(type)): only \(network.backendType) Nodes can be reached by \(network.backendType)"
                        + " (flanneld ignores the others)")
        }
        guard let addressText = node.annotations[annotations.publicIPv6], !addressText.isEmpty else {
            return skip("\(annotations.publicIPv6) is missing: an IPv6-only node publishes its IPv6 underlay address there")
        }
        guard let address = IPv6Address(addressText) else {
            return skip("\(annotations.publicIPv6): \(quoted(addressText)) is not an IPv6 address")
        }
        if address.isUnspecified || address.isLoopback || address.isMulticast || address.isLinkLocal || address.isIPv4Mapped {
            return skip("\(annotations.publicIPv6): \(address) is not a global unicast address a peer can send to")
        }
        if ipv6.network.contains(address) {
            return skip("\(annotations.publicIPv6): \(address) is inside the IPv6 pod network \(ipv6.network): "
                        + "its packets would be routed back into the overlay")
        }
        let half = NodeRecord.IPv6Half(subnet: subnet, publicIP: address)
        guard network.backendType == "vxlan" else { return .success(.ipv6Only(name: node.name, ipv6: half, origin: key)) }
        let dataName = annotations.backendV6Data
        guard let data = node.annotations[dataName], !data.isEmpty, data != "null" else {
            return skip("\(dataName) is missing: an IPv6-only vxlan node says its VTEP's VtepMAC there")
        }
        do {
            let fields = try JSONFields.parse(Data(data.utf8), source: dataName, dialect: .flanneld)
            guard let macText = try fields.string("VtepMAC") else { return skip("\(dataName): VtepMAC is required") }
            guard let mac = MACAddress(macText) else { return skip("\(dataName): VtepMAC: \(quoted(macText)) is not a MAC address") }
            if let vni = try fields.integer("VNI", in: 0...16_777_215), vni != network.vni {
                return skip("\(dataName): VNI: \(vni), but the network uses VNI \(network.vni)")
            }
            return .success(.ipv6Only(name: node.name, ipv6: NodeRecord.IPv6Half(subnet: subnet, publicIP: address, vtepMAC: mac), origin: key))
        } catch {
            return skip("\(dataName)" + (error.field.isEmpty ? " is not a JSON object: " : ": \(error.field): ") + error.message)
        }
    }

    /// The IPv6 podCIDR of a Node in an IPv6-only network; no podCIDR at all is
    /// "not assigned yet" (waited for), an IPv4 one alone says so.
    static func ipv6OnlySubnet(_ node: KubeNode) -> Result<IPv6Prefix, SkippedLease> {
        let cidrs = node.podCIDRs.isEmpty ? (node.podCIDR.map { [$0] } ?? []) : node.podCIDRs
        func skip(_ reason: String) -> Result<IPv6Prefix, SkippedLease> { .failure(SkippedLease(key: origin(node.name), reason: reason)) }
        if cidrs.isEmpty || cidrs == [""] { return skip("no podCIDR assigned yet (spec.podCIDR)") }
        if cidrs.count > 2 { return skip("spec.podCIDRs has \(cidrs.count) entries: at most IPv4 and IPv6") }
        switch podSubnetV6(node) {
        case .success(let prefix): return .success(prefix)
        case .failure(let skipped) where skipped.reason.hasPrefix("no IPv6"):
            return skip(skipped.reason + ": an IPv4 Node in an IPv6-only network (EnableIPv4: false)")
        case .failure(let skipped): return .failure(skipped)
        }
    }

    /// The field a Node's IPv6 podCIDR was read from, for messages.
    static func podCIDRField(_ node: KubeNode) -> String {
        node.podCIDRs.isEmpty ? "spec.podCIDR" : "spec.podCIDRs' IPv6 entry"
    }

    static func isJSON(_ text: String) -> Bool {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed)) != nil
    }

    static func jsonString(_ text: String) -> String {
        (try? JSONEncoder().encode(text)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
    }

    /// The annotations flanneld writes on its own Node for `network`'s backend
    /// (`AcquireLease`): backend-type, backend-data (vxlan: `{"VNI":1,"VtepMAC":...}`;
    /// host-gw and udp: `null`), public-ip, kube-subnet-manager "true". udp has
    /// no backend type (flanneld's udp leases have none). Dual stack (`publicIPv6`
    /// given in a dual-stack network of vxlan or host-gw) adds public-ipv6 and
    /// backend-v6-data (vxlan: the IPv6 VTEP's `{"VNI":1,"VtepMAC":...}`; host-gw: `null`).
    /// IPv6-only (`EnableIPv4: false`): backend-type, public-ipv6, backend-v6-data and
    /// kube-subnet-manager; host-gw adds backend-data `null` and public-ip `0.0.0.0`
    /// (`publicIP` is not read).
    public static func ownAnnotations(network: NetworkConfig, publicIP: IPv4Address, publicIPv6: IPv6Address? = nil,
                                      annotations: KubeAnnotations) -> [String: String] {
        func data(_ vni: UInt32?, _ mac: MACAddress?) -> String {
            mac.map { mac in "{" + (vni.map { "\"VNI\":\($0)," } ?? "") + "\"VtepMAC\":\"\(mac)\"}" } ?? "null"
        }
        if !network.enableIPv4 {
            // IPv6-only, as flanneld's AcquireLease writes it: its lease has PublicIP
            // 0.0.0.0 and BackendData null; vxlan writes neither public-ip nor
            // backend-data then, host-gw (the `BackendType != "vxlan"` branch) writes both.
            var written = [annotations.backendType: network.backendType, annotations.kubeSubnetManager: "true"]
            if network.backendType != "vxlan" {
                written[annotations.backendData] = "null"
                written[annotations.publicIP] = "0.0.0.0"
            }
            if let publicIPv6 {
                written[annotations.publicIPv6] = "\(publicIPv6)"
                written[annotations.backendV6Data] = network.backendType == "vxlan"
                    ? data(network.vni, .vtep(vni: network.vni, publicIPv6: publicIPv6)) : "null"
            }
            return written
        }
        let attributes = LeaseAttributes.own(publicIP: publicIP, publicIPv6: publicIPv6, network: network)
        var written = [annotations.backendType: attributes.backendType, annotations.backendData: data(attributes.vni, attributes.vtepMAC),
                       annotations.publicIP: "\(publicIP)", annotations.kubeSubnetManager: "true"]
        if let address = attributes.publicIPv6 {
            written[annotations.publicIPv6] = "\(address)"
            written[annotations.backendV6Data] = data(attributes.backendV6?.vni, attributes.backendV6?.vtepMAC)
        }
        return written
    }

    /// This node's public IP: the Node's public-ip-overwrite annotation (flanneld
    /// publishes it instead of its own address), else the configured one, else
    /// the Node's first IPv4 InternalIP.
    public static func publicIP(of node: KubeNode, configured: IPv4Address?, annotations: KubeAnnotations) -> IPv4Address? {
        if let text = node.annotations[annotations.publicIPOverwrite], let address = IPv4Address(text) { return address }
        // node-public-ip: flanneld takes it as its --public-ip, over the flag (GetStoredPublicIP).
        if let text = node.annotations[annotations.nodePublicIP], let address = IPv4Address(text) { return address }
        if let configured { return configured }
        return node.internalIPs.lazy.compactMap { IPv4Address($0) }.first
    }

    /// This node's public IPv6 address (dual stack): the Node's
    /// public-ipv6-overwrite annotation, else the configured one (publicIPv6,
    /// --public-ipv6, or the address of the interface chosen by the interface
    /// selection), else the Node's first IPv6 InternalIP that is not link-local.
    public static func publicIPv6(of node: KubeNode, configured: IPv6Address?, annotations: KubeAnnotations) -> IPv6Address? {
        if let text = node.annotations[annotations.publicIPv6Overwrite], let address = IPv6Address(text) { return address }
        // node-public-ipv6: flanneld takes it as its --public-ipv6, over the flag (GetStoredPublicIP).
        if let text = node.annotations[annotations.nodePublicIPv6], let address = IPv6Address(text) { return address }
        if let configured { return configured }
        return node.internalIPs.lazy.compactMap { IPv6Address($0) }.first { !$0.isLinkLocal && !$0.isIPv4Mapped }
    }

    /// The strategic merge patch that makes the Node's annotations `wanted`, or
    /// nil when they say so already (flanneld patches only then).
    public static func annotationPatch(_ node: KubeNode, wanted: [String: String]) -> [UInt8]? {
        let differing = wanted.filter { node.annotations[$0.key] != $0.value }
        guard !differing.isEmpty else { return nil }
        let fields = differing.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
        return Array("{\"metadata\":{\"annotations\":{\(fields.joined(separator: ","))}}}".utf8)
    }

    /// flanneld's `CompleteLease`: NetworkUnavailable False, reason FlannelIsUp.
    public static func networkAvailablePatch(now: Date = Date()) -> [UInt8] {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        let time = formatter.string(from: now)
        return Array(("{\"status\":{\"conditions\":[{\"type\":\"NetworkUnavailable\",\"status\":\"False\","
            + "\"lastHeartbeatTime\":\"\(time)\",\"lastTransitionTime\":\"\(time)\","
            + "\"reason\":\"FlannelIsUp\",\"message\":\"Flannel is running on this node\"}]}}").utf8)
    }

    /// This node's record, or why it cannot be built yet.
    /// Dual stack: the Node's IPv6 podCIDR (inside IPv6Network) and a public IPv6
    /// address are required too, as flanneld's vxlan and host-gw need both.
    public static func local(_ node: KubeNode?, name: String, network: NetworkConfig, configuredIP: IPv4Address?,
                             configuredIPv6: IPv6Address? = nil, annotations: KubeAnnotations) -> Result<NodeRecord, DaemonError> {
        guard let node else { return .failure(DaemonError("Node \(quoted(name)) does not exist (yet)")) }
        guard network.enableIPv4 else {
            return ipv6OnlyLocal(node, name: name, network: network, configuredIPv6: configuredIPv6, annotations: annotations)
        }
        let subnet: IPv4Prefix
        switch podSubnet(node) {
        case .success(let prefix): subnet = prefix
        case .failure(let skipped): return .failure(DaemonError("node \(quoted(name)) pod cidr not assigned: \(skipped.reason)"))
        }
        guard network.network.contains(subnet) && subnet.length >= network.network.length else {
            return .failure(DaemonError("subnet \(network.network) specified in the flannel net config doesn't contain "
                                        + "\(subnet) PodCIDR of the \(quoted(name)) node"))
        }
        guard let publicIP = publicIP(of: node, configured: configuredIP, annotations: annotations) else {
            return .failure(DaemonError("node \(quoted(name)): no public IP: set publicIP (--public-ip), or the Node needs an IPv4 InternalIP"))
        }
        var record = NodeRecord(name: name, publicIP: publicIP, subnet: subnet, vtepMAC: .vtep(vni: network.vni, publicIP: publicIP),
                                origin: origin(name))
        guard let ipv6 = network.ipv6, isDual(network) else { return .success(record) }
        let subnetV6: IPv6Prefix
        switch podSubnetV6(node) {
        case .success(let prefix): subnetV6 = prefix
        case .failure(let skipped):
            return .failure(DaemonError("node \(quoted(name)) IPv6 pod cidr not assigned: \(skipped.reason), and the network is dual stack "
                                        + "(EnableIPv6; the controller manager assigns both families with --cluster-cidr=<IPv4>,<IPv6>)"))
        }
        switch localHalf(node, name: name, subnet: subnetV6, ipv6: ipv6, network: network, configuredIPv6: configuredIPv6,
                         annotations: annotations, stack: "dual stack (EnableIPv6)") {
        case .success(let half): record.ipv6 = half
        case .failure(let error): return .failure(error)
        }
        return .success(record)
    }

    /// This node's IPv6 half once its IPv6 podCIDR is known: the podCIDR inside
    /// IPv6Network, a public IPv6 address, the derived VTEP MAC (vxlan). `stack`
    /// names the network's kind in the messages.
    static func localHalf(_ node: KubeNode, name: String, subnet: IPv6Prefix, ipv6: NetworkConfig.IPv6Part, network: NetworkConfig,
                          configuredIPv6: IPv6Address?, annotations: KubeAnnotations, stack: String) -> Result<NodeRecord.IPv6Half, DaemonError> {
        guard ipv6.network.contains(subnet) else {
            return .failure(DaemonError("subnet \(ipv6.network) specified in the flannel net config doesn't contain "
                                        + "\(subnet) IPv6 PodCIDR of the \(quoted(name)) node"))
        }
        guard let publicIPv6 = publicIPv6(of: node, configured: configuredIPv6, annotations: annotations) else {
            return .failure(DaemonError("node \(quoted(name)): no public IPv6 address, and the network is \(stack): set publicIPv6 "
                                        + "(--public-ipv6), or the Node needs an IPv6 InternalIP"))
        }
        return .success(NodeRecord.IPv6Half(subnet: subnet, publicIP: publicIPv6,
                                            vtepMAC: network.backendType == "vxlan" ? .vtep(vni: network.vni, publicIPv6: publicIPv6) : nil))
    }

    /// This node's record in an IPv6-only network: its IPv6 podCIDR (inside
    /// IPv6Network) and public IPv6 address; no IPv4 podCIDR or address is needed
    /// or read (`NodeRecord.ipv6Only`).
    static func ipv6OnlyLocal(_ node: KubeNode, name: String, network: NetworkConfig, configuredIPv6: IPv6Address?,
                              annotations: KubeAnnotations) -> Result<NodeRecord, DaemonError> {
        guard let ipv6 = network.ipv6 else { return .failure(DaemonError("the network has no IPv6Network")) }
        let subnet: IPv6Prefix
        switch ipv6OnlySubnet(node) {
        case .success(let prefix): subnet = prefix
        case .failure(let skipped) where skipped.reason.hasPrefix("no podCIDR"):
            return .failure(DaemonError("node \(quoted(name)) pod cidr not assigned: \(skipped.reason)"))
        case .failure(let skipped):
            return .failure(DaemonError("node \(quoted(name)) IPv6 pod cidr not assigned: \(skipped.reason)"))
        }
        return localHalf(node, name: name, subnet: subnet, ipv6: ipv6, network: network, configuredIPv6: configuredIPv6,
                         annotations: annotations, stack: "IPv6-only (EnableIPv4: false)")
            .map { .ipv6Only(name: name, ipv6: $0, origin: origin(name)) }
    }

    /// What `sync` and `diff` read from the listed Nodes: the view, the Nodes left
    /// out (with why), and (dual stack) the peers whose IPv6 half is left out.
    public struct View: Sendable {
        public var view: ClusterView
        public var skipped: [SkippedLease]
        public var skippedIPv6: [SkippedIPv6Half]

        /// One line per Node left out, then one per IPv6 half left out.
        public var warnings: [String] { skipped.map(\.description) + skippedIPv6.map(\.description) }
    }

    /// The view from listed Nodes, and the Nodes left out (with why), as `sync` reads it.
    public static func view(nodes: [KubeNode], node name: String, network: NetworkConfig, configuredIP: IPv4Address?,
                            configuredIPv6: IPv6Address? = nil, annotations: KubeAnnotations) -> Result<View, DaemonError> {
        let local: NodeRecord
        switch Self.local(nodes.first { $0.name == name }, name: name, network: network, configuredIP: configuredIP,
                          configuredIPv6: configuredIPv6, annotations: annotations) {
        case .success(let record): local = record
        case .failure(let error): return .failure(error)
        }
        var peers: [NodeRecord] = [], skipped: [SkippedLease] = [], skippedIPv6: [SkippedIPv6Half] = []
        for node in nodes.sorted(by: { $0.name < $1.name }) where node.name != name {
            switch checkedPeer(node, annotations: annotations, network: network) {
            case .success(let peer)?:
                peers.append(peer.record)
                if let half = peer.ipv6Skipped { skippedIPv6.append(half) }
            case .failure(let reason)?: skipped.append(reason)
            case nil: break
            }
        }
        return .success(View(view: ClusterView(network: network, local: local, peers: peers), skipped: skipped, skippedIPv6: skippedIPv6))
    }
}

/// Kubernetes Node objects, as flanneld's `--kube-subnet-mgr`: each node's
/// subnet is its Node's podCIDR, each node's backend data are annotations on
/// its Node, and the network is flannel's net-conf.json in a file. `read`
/// lists the Nodes once; `run` lists, then watches from the list's
/// resourceVersion (a watch that ends is resumed from the last version seen;
/// 410 Gone lists again), writes this node's annotations, and waits for a
/// podCIDR when the Node has none yet.
public final class KubeSource: ClusterSource {
    let config: AgentConfig
    let settings: KubernetesSettings
    let node: String
    let log: Logger
    let credentials: KubeCredentials
    let annotations: KubeAnnotations
    let network: NetworkConfig
    /// The server's watch timeout (`timeoutSeconds`); tests shorten it.
    let watchTimeout: Duration

    public init(config: AgentConfig, settings: KubernetesSettings, node: String, log: Logger,
                environment: [String: String] = ProcessInfo.processInfo.environment,
                serviceAccount: String = KubeCredentials.serviceAccountDirectory, watchTimeout: Duration = .seconds(300)) throws {
        self.config = config
        self.settings = settings
        self.node = node
        self.log = log
        self.watchTimeout = watchTimeout
        annotations = try KubeAnnotations(prefix: settings.annotationPrefix)
        credentials = try KubeCredentials.resolve(settings, environment: environment, serviceAccount: serviceAccount)
        let data: Data
        do {
            data = try AgentConfig.readFile(settings.netConfPath)
        } catch {
            throw DaemonError("failed to read net conf \(settings.netConfPath) (kubernetes.netConfPath, --net-config-path): \(error.message)")
        }
        network = try NetworkConfig.parse(data, source: settings.netConfPath)
    }

    public var interface: String? { config.interface }

    func makeClient() throws -> KubeClient { try KubeClient(credentials: credentials, watchTimeout: watchTimeout) }

    public func read() async throws -> (view: ClusterView, warnings: [String]) {
        let client = try makeClient()
        do {
            let (nodes, _) = try await client.listNodes()
            await client.shutdown()
            switch KubeNodes.view(nodes: nodes, node: node, network: network, configuredIP: config.publicIP,
                                  configuredIPv6: config.publicIPv6, annotations: annotations) {
            case .success(let result): return (result.view, result.warnings)
            case .failure(let error): throw error
            }
        } catch {
            await client.shutdown()
            throw error
        }
    }

    public func shutdown() async {}

    /// What `run` keeps between events: the peers it reported, this node's
    /// Node, and the Nodes skipped (by name: the resourceVersion logged).
    /// One `run`'s, on its task only.
    final class Tracked {
        var version = ""
        var resumed = false
        var peers: [String: NodeRecord] = [:]
        var skipped: [String: String] = [:]
        /// Dual stack: peers whose IPv6 half is left out, by name, with why (logged when the reason changes).
        var skippedIPv6: [String: String] = [:]
        var own: KubeNode?
        /// This node's record as last reported (nil: not ready, nothing reported).
        var local: NodeRecord?
        /// NetworkUnavailable set to False (once per run, as flanneld's CompleteLease).
        var conditionSet = false
        var waitingLogged = false
    }

    public func run(emit: @escaping @Sendable (RegistryEvent) -> Void) async {
        let client: KubeClient
        do {
            client = try makeClient()
        } catch {
            emit(.connection(false, "\(error)"))
            log.error("\(error)")
            return
        }
        log.info("starting the kube subnet manager", metadata: ["node": "\(node)", "server": "\(credentials.server)",
                                                                "credentials": "\(credentials.origin)"])
        let tracked = Tracked()
        var delay = Duration.milliseconds(250)
        var listed = false
        while !Task.isCancelled {
            do {
                let (nodes, listVersion) = try await client.listNodes(fromCache: !listed)
                listed = true
                emit(.connection(true, nil))
                delay = .milliseconds(250)
                tracked.version = listVersion
                tracked.peers = [:]
                tracked.local = nil
                tracked.own = nodes.first { $0.name == node }
                // Nodes deleted while the watch was away are no longer skipped ones.
                let names = Set(nodes.map(\.name))
                tracked.skipped = tracked.skipped.filter { names.contains($0.key) }
                tracked.skippedIPv6 = tracked.skippedIPv6.filter { names.contains($0.key) }
                for item in nodes where item.name != node { track(item, in: tracked) }
                try await becomeReady(tracked, client: client, emit: emit, force: true)
                log.debug("listed nodes", metadata: ["nodes": "\(nodes.count)", "resourceVersion": "\(listVersion)"])
                // Watch until 410 Gone; a watch the server ends is resumed from the
                // last version, and so is one that breaks, once: a second break
                // before any event is an outage (reported, then a list).
                tracked.resumed = false
                while !Task.isCancelled {
                    do {
                        try await watch(client: client, tracked, emit: emit)
                        tracked.resumed = false
                    } catch let error as KubeError where error.status == nil && !tracked.resumed && !Task.isCancelled {
                        tracked.resumed = true
                        log.info("the watch broke; resuming it from the last resourceVersion",
                                 metadata: ["error": "\(error)", "resourceVersion": "\(tracked.version)"])
                    }
                }
            } catch let error as KubeError where error.isGone {
                log.info("the watch's resourceVersion expired (410 Gone); listing the Nodes again", metadata: ["error": "\(error)"])
            } catch {
                if Task.isCancelled { continue }
                emit(.connection(false, "\(error)"))
                log.error("the Kubernetes API is unavailable; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(8))
            }
        }
        await client.shutdown()
    }

    /// One watch from `version`, applying each event as it comes.
    func watch(client: KubeClient, _ tracked: Tracked, emit: @escaping @Sendable (RegistryEvent) -> Void) async throws {
        try await client.watchNodes(from: tracked.version) { event in
            tracked.resumed = false
            switch event {
            case .bookmark(let rv):
                tracked.version = rv
            case .added(let item), .modified(let item):
                tracked.version = item.resourceVersion
                try await self.apply(item, deleted: false, tracked, client: client, emit: emit)
            case .deleted(let item):
                tracked.version = item.resourceVersion
                try await self.apply(item, deleted: true, tracked, client: client, emit: emit)
            case .error:
                break
            }
        }
    }

    /// Records another node's Node in `tracked`; returns the change to report
    /// (an upsert, a removal, or nothing).
    @discardableResult
    func track(_ item: KubeNode, deleted: Bool = false, in tracked: Tracked) -> (upsert: NodeRecord?, removal: String?) {
        let key = KubeNodes.origin(item.name)
        let result = deleted ? nil : KubeNodes.checkedPeer(item, annotations: annotations, network: network)
        if case .success(let peer)? = result, let half = peer.ipv6Skipped {
            if tracked.skippedIPv6[item.name] != half.reason {
                tracked.skippedIPv6[item.name] = half.reason
                log.warning("node's IPv6 half skipped (IPv4 is programmed)", metadata: ["node": "\(Flannel.printable(item.name))",
                                                                                      "error": "\(Flannel.printable(half.reason, limit: 512))"])
            }
        } else {
            tracked.skippedIPv6[item.name] = nil
        }
        switch result {
        case .success(let peer)?:
            let record = peer.record
            tracked.skipped[item.name] = nil
            if tracked.peers[item.name] == record { return (nil, nil) }
            tracked.peers[item.name] = record
            return (record, nil)
        case .failure(let skipped)?:
            if tracked.skipped[item.name] != item.resourceVersion {
                tracked.skipped[item.name] = item.resourceVersion
                if skipped.reason.hasPrefix("no podCIDR") {
                    log.info("node skipped until it has a podCIDR", metadata: ["node": "\(item.name)"])
                } else {
                    log.warning("node skipped", metadata: ["node": "\(Flannel.printable(item.name))",
                                                           "error": "\(Flannel.printable(skipped.reason, limit: 512))"])
                }
            }
        case nil:
            tracked.skipped[item.name] = nil
        }
        return tracked.peers.removeValue(forKey: item.name) != nil ? (nil, key) : (nil, nil)
    }

    func apply(_ item: KubeNode, deleted: Bool, _ tracked: Tracked, client: KubeClient,
               emit: @escaping @Sendable (RegistryEvent) -> Void) async throws {
        if item.name == node {
            if deleted {
                log.warning("this node's Node was deleted; keeping the last state", metadata: ["node": "\(node)"])
                tracked.own = nil
                return
            }
            tracked.own = item
            try await becomeReady(tracked, client: client, emit: emit, force: false)
            return
        }
        let change = track(item, deleted: deleted, in: tracked)
        // Until this node is ready nothing has been reported: the state that makes it ready carries every peer.
        guard tracked.local != nil, change.upsert != nil || change.removal != nil else { return }
        emit(.peers(upserts: change.upsert.map { [$0] } ?? [], removals: change.removal.map { [$0] } ?? [],
                    invalidLeases: tracked.skipped.count))
    }

    /// Reports the whole state when this node is ready (its Node has a podCIDR)
    /// and its record changed (or `force`: after a list), writing its
    /// annotations first; logs once why it waits otherwise.
    func becomeReady(_ tracked: Tracked, client: KubeClient, emit: @escaping @Sendable (RegistryEvent) -> Void,
                     force: Bool) async throws {
        let local: NodeRecord
        switch KubeNodes.local(tracked.own, name: node, network: network, configuredIP: config.publicIP,
                               configuredIPv6: config.publicIPv6, annotations: annotations) {
        case .success(let record): local = record
        case .failure(let why):
            if !tracked.waitingLogged {
                tracked.waitingLogged = true
                log.warning("waiting for this node's Node: \(why) (the controller manager assigns podCIDRs with --allocate-node-cidrs)",
                            metadata: ["node": "\(node)"])
            }
            return
        }
        tracked.waitingLogged = false
        if let own = tracked.own,
           let patch = KubeNodes.annotationPatch(own, wanted: KubeNodes.ownAnnotations(network: network, publicIP: local.publicIP,
                                                                                       publicIPv6: local.ipv6?.publicIP,
                                                                                       annotations: annotations)) {
            tracked.own = try await client.patchNodeStatus(node, patch: patch)
            var metadata: Logger.Metadata = ["node": "\(node)"]
            if network.enableIPv4 {
                metadata["subnet"] = "\(local.subnet)"
                metadata["public_ip"] = "\(local.publicIP)"
            }
            if let half = local.ipv6 {
                metadata["subnet.ipv6"] = "\(half.subnet)"
                metadata["public_ipv6"] = "\(half.publicIP)"
            }
            log.info("annotations written on this node's Node", metadata: metadata)
        }
        guard force || tracked.local != local else { return }
        if tracked.local == nil {
            log.info("lease acquired", metadata: ["subnet": network.enableIPv4 ? "\(local.subnet)" : "none (IPv6-only)",
                                                  "subnet.ipv6": "\(local.ipv6.map { "\($0.subnet)" } ?? "none")", "node": "\(node)"])
        }
        tracked.local = local
        let peers = tracked.peers.values.sorted { $0.origin < $1.origin }
        emit(.state(ClusterView(network: network, local: local, peers: peers), invalidLeases: tracked.skipped.count))
        if settings.setNodeNetworkUnavailable && !tracked.conditionSet {
            tracked.own = try await client.patchNodeStatus(node, patch: KubeNodes.networkAvailablePatch())
            tracked.conditionSet = true
            log.info("NetworkUnavailable condition set to False", metadata: ["node": "\(node)"])
        }
    }
}
