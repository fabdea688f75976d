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
    guard let publicIP = config.publicIP else { throw DaemonError("\(config.source): publicIP is required with etcd") }
    let previous = (try? String(contentsOfFile: config.daemon.subnetFile, encoding: .utf8)).flatMap(SubnetEnv.previousSubnet(in:))
    return try await withEtcd(config) { client, settings in
        try await read(client: client, settings: settings, node: node, publicIP: publicIP, publicIPv6: config.publicIPv6,
                       previous: previous, subnetFile: config.daemon.subnetFile)
    }
}

private func read(client: EtcdClient, settings: EtcdSettings, node: String, publicIP: IPv4Address, publicIPv6: IPv6Address?,
                  previous: IPv4Prefix?, subnetFile: String) async throws -> (view: ClusterView, warnings: [String]) {
    let configKey = Flannel.configKey(prefix: settings.prefix)
    guard let value = try await client.get(configKey) else {
        throw DaemonError("no network configuration at \(configKey) in etcd")
    }
    let network = try NetworkConfig.parse(Data(value.value), source: "etcd \(configKey)")
    let subnets = Flannel.subnetsPrefix(prefix: settings.prefix)
    let (kvs, _) = try await client.list(prefix: subnets)
    let entries = kvs.map { LeaseEntry(key: $0.key, value: $0.value, etcdLease: $0.lease) }
    let own: Lease
    do {
        own = try Flannel.ownLease(among: entries, network: network, publicIP: publicIP, previousSubnet: previous)
    } catch .noLease {
        throw DaemonError("no lease in etcd under \(subnets) has PublicIP \(publicIP) and a /\(network.subnetLen) between "
                          + "SubnetMin \(network.subnetMin) and SubnetMax \(network.subnetMax) of \(network.network): "
                          + "`vxlan-agent run` takes one (sync does not write to etcd)")
    } catch .several(let keys) {
        throw DaemonError("several leases in etcd have PublicIP \(publicIP) (\(keys.map { Flannel.printable($0) }.joined(separator: ", "))) "
                          + "and \(subnetFile) names none of their subnets: which one is this node's is unknown; "
                          + "delete the ones that are not")
    }
    let result = Flannel.clusterView(network: network, leases: entries, node: node, publicIP: publicIP,
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

/// Deletes every lease whose PublicIP is this node's; returns their keys.
public func releaseLeases(config: AgentConfig, node: String) async throws -> [String] {
    guard config.etcd != nil, let publicIP = config.publicIP else { return [] }
    return try await withEtcd(config) { client, settings in
        let (kvs, _) = try await client.list(prefix: Flannel.subnetsPrefix(prefix: settings.prefix))
        var released: [String] = []
        for kv in kvs where (try? Lease.parse(key: kv.key, value: kv.value, backendType: nil))?.attributes.publicIP == publicIP {
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
