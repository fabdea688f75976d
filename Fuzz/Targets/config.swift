// libFuzzer target: the configuration parsers, from arbitrary bytes.
// - AgentConfig.parse: the agent's file (RawConfig's decoding, then JSONFields);
// - NetworkConfig.parse: flannel's net-conf.json (JSONFields), as read from a
//   file or from etcd's <prefix>/config.
// Whatever parses must describe itself and round-trip: the JSON we write for a
// network configuration parses back to the same configuration.
import Foundation
import Reconcile
import Registry

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let data = Data(bytes: start, count: count)
    do {
        let config = try AgentConfig.parse(data, source: "fuzz.json")
        if let network = config.network { roundTrip(network) }
        if let (view, _) = try? config.view(node: config.node ?? config.nodes.first?.record.name ?? "") {
            _ = view.peers.count
        }
    } catch {
        precondition(!error.description.isEmpty)
    }
    do {
        roundTrip(try NetworkConfig.parse(data, source: "etcd /coreos.com/network/config"))
    } catch {
        precondition(!error.description.isEmpty)
    }
    return 0
}

func roundTrip(_ network: NetworkConfig) {
    let text = network.json
    let again: NetworkConfig
    do {
        again = try NetworkConfig.parse(Data(text.utf8), source: "round trip")
    } catch {
        fatalError("the JSON written for a parsed configuration does not parse: \(text): \(error)")
    }
    // DirectRouting is accepted, not written (vxlan-agent always encapsulates).
    var expected = network
    expected.directRouting = false
    precondition(again == expected, "round trip changed the configuration: \(text)")
}
