import Etcd
import Foundation
import Model
import Reconcile
import Registry

/// The cluster as etcd holds it right now, read once (for `sync` and `diff`
/// with the etcd registry): this node must already hold a lease (the daemon
/// takes it); skipped leases are returned as warnings. The view is built by
/// `Flannel.clusterView`, as the daemon builds it.
public func readEtcdView(config: AgentConfig, node: String) async throws -> (view: ClusterView, warnings: [String]) {
    guard config.publicIP != nil || config.publicIPv6 != nil else {
        throw DaemonError("\(config.source): publicIP is required with etcd (publicIPv6 in an IPv6-only network)")
    }
    let file = try? String(contentsOfFile: config.daemon.subnetFile, encoding: .utf8)
    return try await withEtcd(config) { client, settings in
        try await read(client: client, settings: settings, node: node, publicIP: config.publicIP, publicIPv6: config.publicIPv6,
                       previous: file.flatMap(SubnetEnv.previousSubnet(in:)), previousIPv6: file.flatMap(SubnetEnv.previousIPv6Subnet(in:)),
                       subnetFile: config.daemon.subnetFile, source: config.source)
    }
}

private func read(client: EtcdClient, settings: EtcdSettings, node: String, publicIP: IPv4Address?, publicIPv6: IPv6Address?,
                  previous: IPv4Prefix?, previousIPv6: IPv6Prefix?, subnetFile: String,
                  source: String) async throws -> (view: ClusterView, warnings: [String]) {
    let configKey = Flannel.configKey(prefix: settings.prefix)
    guard let value = try await client.get(configKey) else {
        throw DaemonError("no network configuration at \(configKey) in etcd")
    }
    let network = try NetworkConfig.parse(Data(value.value), source: "etcd \(configKey)")
    let subnets = Flannel.subnetsPrefix(prefix: settings.prefix)
    // IPv6 only: this node is known by its PublicIPv6 (every lease's PublicIP is 0.0.0.0).
    let ipv6Only = !network.enableIPv4
    let address: String
    if ipv6Only {
        guard let publicIPv6 else {
            throw DaemonError("\(source): publicIPv6 is required with etcd when the network is IPv6-only (EnableIPv4 false in \(configKey))")
        }
        address = "PublicIPv6 \(publicIPv6)"
    } else {
        guard let publicIP else { throw DaemonError("\(source): publicIP is required with etcd") }
        address = "PublicIP \(publicIP)"
    }
    let (kvs, _) = try await client.list(prefix: subnets)
    let entries = kvs.map { LeaseEntry(key: $0.key, value: $0.value, etcdLease: $0.lease) }
    let own: Lease
    do {
        own = try Flannel.ownLease(among: entries, network: network, publicIP: publicIP ?? IPv4Address(0), previousSubnet: previous,
                                   publicIPv6: publicIPv6, previousIPv6Subnet: previousIPv6)
    } catch .noLease {
        let range = if let ipv6 = network.ipv6, ipv6Only {
            "a 0.0.0.0-0&<ipv6>-\(ipv6.subnetLen) key with a /\(ipv6.subnetLen) between IPv6SubnetMin \(ipv6.subnetMin) and "
                + "IPv6SubnetMax \(ipv6.subnetMax) of \(ipv6.network)"
        } else {
            "a /\(network.subnetLen) between SubnetMin \(network.subnetMin) and SubnetMax \(network.subnetMax) of \(network.network)"
        }
        throw DaemonError("no lease in etcd under \(subnets) has \(address) and \(range): "
                          + "`vxlan-agent run` takes one (sync does not write to etcd)")
    } catch .several(let keys) {
        throw DaemonError("several leases in etcd have \(address) (\(keys.map { Flannel.printable($0) }.joined(separator: ", "))) "
                          + "and \(subnetFile) names none of their subnets: which one is this node's is unknown; "
                          + "delete the ones that are not")
    }
    let result = Flannel.clusterView(network: network, leases: entries, node: node, publicIP: publicIP ?? IPv4Address(0),
                                     publicIPv6: publicIPv6, own: (own.key, own.subnet))
    return (result.view, result.skipped.map(\.description) + result.skippedIPv6.map(\.description))
}

/// The network configuration in etcd (`<prefix>/config`).
public func readEtcdNetwork(config: AgentConfig) async throws -> NetworkConfig {
    try await withEtcd(config) { client, settings in
        let key = Flannel.configKey(prefix: settings.prefix)
        guard let value = try await client.get(key) else { throw DaemonError("no network configuration at \(key) in etcd") }
        return try NetworkConfig.parse(Data(value.value), source: "etcd \(key)")
    }
}

/// Deletes every lease whose PublicIP is this node's; returns their keys. In an
/// IPv6-only network (`<prefix>/config` says EnableIPv4 false), every IPv6-only
/// lease whose PublicIPv6 is this node's.
public func releaseLeases(config: AgentConfig, node: String) async throws -> [String] {
    guard config.etcd != nil, config.publicIP != nil || config.publicIPv6 != nil else { return [] }
    return try await withEtcd(config) { client, settings in
        // Without a readable configuration, the IPv4 rule (what was done before IPv6-only networks).
        let network = try? await client.get(Flannel.configKey(prefix: settings.prefix)).flatMap {
            try? NetworkConfig.parse(Data($0.value), source: "etcd")
        }
        let ipv6Only = network.map { !$0.enableIPv4 } ?? false
        let (kvs, _) = try await client.list(prefix: Flannel.subnetsPrefix(prefix: settings.prefix))
        var released: [String] = []
        for kv in kvs {
            guard let lease = try? Lease.parse(key: kv.key, value: kv.value, backendType: nil, ipv6Only: ipv6Only) else { continue }
            let ours = ipv6Only ? config.publicIPv6 != nil && lease.attributes.publicIPv6 == config.publicIPv6
                : config.publicIP != nil && lease.attributes.publicIP == config.publicIP
            guard ours else { continue }
            _ = try await client.delete(kv.key)
            released.append(kv.key)
        }
        return released
    }
}

func withEtcd<T: Sendable>(_ config: AgentConfig, _ body: (EtcdClient, EtcdSettings) async throws -> T) async throws -> T {
    guard let settings = config.etcd else { throw DaemonError("\(config.source): no etcd registry configured") }
    let client = try makeEtcdClient(settings, requestTimeout: .seconds(3))
    do {
        let result = try await body(client, settings)
        try? await client.shutdown()
        return result
    } catch {
        try? await client.shutdown()
        throw error
    }
}

/// The client for the configured endpoints, with TLS when a CA or client certificate is given.
func makeEtcdClient(_ settings: EtcdSettings, requestTimeout: Duration = .seconds(5)) throws -> EtcdClient {
    let tls = settings.caFile != nil || settings.certFile != nil
        ? EtcdTLS(caFile: settings.caFile, certFile: settings.certFile, keyFile: settings.keyFile) : nil
    return try EtcdClient(endpoints: settings.endpoints, tls: tls, requestTimeout: requestTimeout)
}
