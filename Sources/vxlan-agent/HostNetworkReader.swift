import CLibMnl
import Dataplane
import Model
import Netlink
import Registry

/// What interface selection needs from the kernel, read over netlink: every
/// link, every IPv4 address, the IPv4 default route's interface, and route
/// lookups (`ip route get`).
enum HostNetworkReader {
    static func read() throws -> HostNetwork {
        let dataplane = try Dataplane()
        let socket = dataplane.socket
        let links = try socket.dump("dump links", type: UInt16(RTM_GETLINK), build: { m in
            _ = m.familyHeader(ifinfomsg.self) { $0.ifi_family = UInt8(AF_UNSPEC) }
        }, parse: Parse.link)
        let addresses = try dataplane.addresses()
        let ipv6 = try socket.dump("dump IPv6 addresses", type: UInt16(RTM_GETADDR), build: { m in
            _ = m.familyHeader(ifaddrmsg.self) { $0.ifa_family = UInt8(AF_INET6) }
        }, parse: { message -> (index: Int32, address: IPv6InterfaceAddress)? in
            guard message.type == UInt16(RTM_NEWADDR), let header = message.familyHeader(ifaddrmsg.self),
                  header.ifa_family == UInt8(AF_INET6) else { return nil }
            return message.withAttributes(afterHeader: MemoryLayout<ifaddrmsg>.size, maxType: UInt16(__IFA_MAX) - 1) { a in
                guard let bytes = a[UInt16(IFA_ADDRESS)]?.bytes, let address = IPv6Address(bytes: bytes) else { return nil }
                // IFA_FLAGS holds all 32 bits; the header's field the low eight.
                let flags = a[UInt16(IFA_FLAGS)]?.u32 ?? UInt32(header.ifa_flags)
                return (Int32(bitPattern: header.ifa_index),
                        IPv6InterfaceAddress(address: address, temporary: flags & UInt32(IFA_F_TEMPORARY) != 0,
                                             deprecated: flags & UInt32(IFA_F_DEPRECATED) != 0,
                                             tentative: flags & UInt32(IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0))
            } ?? nil
        })
        let interfaces = links.map { link in
            HostInterface(index: link.index, name: link.name, mtu: link.mtu,
                          addresses: addresses.filter { $0.index == link.index }.map(\.prefix.address),
                          ipv6Addresses: ipv6.filter { $0.index == link.index }.map(\.address))
        }
        let defaults = try socket.dump("dump routes", type: UInt16(RTM_GETROUTE), build: { m in
            _ = m.familyHeader(rtmsg.self) { $0.rtm_family = UInt8(AF_INET) }
        }, parse: { message -> Int32? in
            guard message.type == UInt16(RTM_NEWROUTE), let header = message.familyHeader(rtmsg.self),
                  header.rtm_dst_len == 0, header.rtm_table == UInt8(RT_TABLE_MAIN.rawValue), header.rtm_type == UInt8(RTN_UNICAST) else { return nil }
            return message.withAttributes(afterHeader: MemoryLayout<rtmsg>.size, maxType: UInt16(__RTA_MAX.rawValue) - 1) { a -> Int32? in
                if let oif = a[UInt16(RTA_OIF.rawValue)]?.u32 { return Int32(bitPattern: oif) }
                return nil
            } ?? nil
        })
        return HostNetwork(interfaces: interfaces, defaultRouteIndex: defaults.first, route: { ip in
            guard let socket = try? NetlinkSocket() else { return nil }
            return (try? socket.request("route get \(ip)", type: UInt16(RTM_GETROUTE), build: { m in
                _ = m.familyHeader(rtmsg.self) {
                    $0.rtm_family = UInt8(AF_INET)
                    $0.rtm_dst_len = 32
                }
                m.put(UInt16(RTA_DST.rawValue), bytes: [UInt8(ip.value >> 24), UInt8(ip.value >> 16 & 0xff), UInt8(ip.value >> 8 & 0xff), UInt8(ip.value & 0xff)])
            }, parse: { message -> (index: Int32, source: IPv4Address?)? in
                guard message.type == UInt16(RTM_NEWROUTE) else { return nil }
                return message.withAttributes(afterHeader: MemoryLayout<rtmsg>.size, maxType: UInt16(__RTA_MAX.rawValue) - 1) { a -> (index: Int32, source: IPv4Address?)? in
                    guard let oif = a[UInt16(RTA_OIF.rawValue)]?.u32 else { return nil }
                    return (Int32(bitPattern: oif), a[UInt16(RTA_PREFSRC.rawValue)]?.ipv4.map { IPv4Address($0) })
                } ?? nil
            }))?.first
        })
    }
}
