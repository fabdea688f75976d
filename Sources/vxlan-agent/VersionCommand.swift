import ArgumentParser
import Dataplane
import Foundation

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "version",
        abstract: "Print the version and what this kernel and process can do.")

    func run() throws {
        print("vxlan-agent \(VXLANAgent.version)")
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        print("kernel:            Linux \(release)")
        guard let dataplane = try? Dataplane() else {
            print("netlink:           unavailable (cannot open a NETLINK_ROUTE socket)")
            throw ExitCode(1)
        }
        print("netlink:           ok (libmnl, receive buffer \(dataplane.socket.receiveBufferBytes / 1024) KiB)")
        print("nexthop objects:   \(dataplane.supportsNexthops ? "yes: route layout nexthop" : "no: route layout classic")")
        let vxlan = FileManager.default.fileExists(atPath: "/sys/module/vxlan") ? "loaded" : "not loaded (the kernel loads it on first use)"
        print("vxlan module:      \(vxlan)")
        print("CAP_NET_ADMIN:     \(hasNetAdmin() ? "yes" : "no (sync needs it; diff does not)")")
    }

    func hasNetAdmin() -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let mask = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16) else { return false }
        return mask & (1 << 12) != 0
    }
}
