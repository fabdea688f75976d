import Foundation
import Model
import Reconcile
@testable import Registry
import Testing
import TestSupport

/// The byte-level lease reader (Registry/LeaseReader.swift) against the general
/// one (JSONFields, flanneld's dialect): where it answers, it answers the same;
/// where it does not, `LeaseAttributes.parse` is the general reader's, errors included.
@Suite("the lease reader: flanneld's leases read from their bytes, with the general reader's answers")
struct LeaseReaderTests {
    static func reader(_ value: String) -> LeaseAttributes? {
        Array(value.utf8).withUnsafeBufferPointer(LeaseReader.attributes)
    }

    static func general(_ value: String) -> Swift.Result<LeaseAttributes, ConfigError> {
        Swift.Result { () throws(ConfigError) -> LeaseAttributes in try LeaseAttributes.parseFields(Array(value.utf8), key: "/p/subnets/10.244.1.0-24") }
    }

    static func parsed(_ value: String) -> Swift.Result<LeaseAttributes, ConfigError> {
        Swift.Result { () throws(ConfigError) -> LeaseAttributes in try LeaseAttributes.parse(Array(value.utf8), key: "/p/subnets/10.244.1.0-24") }
    }

    static let mac = "0e:01:c6:12:00:01"

    /// Values the reader reads itself, and what they say.
    static let read: [(String, String)] = [
        ("flanneld's lease", HostileLeases.vxlan("198.18.0.1", mac)),
        ("without a VNI", #"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("VNI null", #"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":null,"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("VNI 0", HostileLeases.vxlan("198.18.0.1", mac, vni: "0")),
        ("VNI 16777215", HostileLeases.vxlan("198.18.0.1", mac, vni: "16777215")),
        ("dual stack", HostileLeases.dualStack.entries[0].value),
        ("PublicIPv6 an IPv4 address", #"{"PublicIP":"198.18.0.1","PublicIPv6":"198.18.0.9","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("BackendV6Data null", #"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"},"BackendV6Data":null}"#),
        ("white space everywhere", "\n {\t\"PublicIP\" : \"198.18.0.1\" ,\r\n \"BackendType\":\"vxlan\", \"BackendData\" : { \"VNI\" : 1 , \"VtepMAC\" : \"0e:01:c6:12:00:01\" } } \n"),
        ("names in any case", #"{"publicip":"198.18.0.1","BACKENDTYPE":"vxlan","backendData":{"vni":1,"vtepmac":"0e:01:c6:12:00:01"}}"#),
        ("the last of duplicate names wins", #"{"PublicIP":"198.18.0.7","publicIP":"198.18.0.1","BackendType":"udp","BackendType":"vxlan","BackendData":{"VtepMAC":"ff:ff:ff:ff:ff:ff"},"BackendData":{"VNI":2,"VNI":1,"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("a null after a value: the null wins", #"{"PublicIP":"198.18.0.1","PublicIPv6":"fd00::1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("unknown fields of every kind", #"{"Junk":[1,-2.5e+3,true,false,null,{"a":[[]]},"x"],"PublicIP":"198.18.0.1","Expires":"2026-11-30T10:00:00Z","BackendType":"vxlan","BackendData":{"More":{},"VtepMAC":"0e:01:c6:12:00:01","VNI":1}}"#),
        ("a MAC in upper case, with dashes", #"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"0E-01-C6-12-00-01"}}"#),
        ("a MAC with both separators (MACAddress takes either at each place)", #"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01-c6:12-00:01"}}"#),
    ]

    @Test("the reader reads flanneld's leases itself, and gives what the general reader gives", arguments: read)
    func reads(_ name: String, _ value: String) throws {
        let attributes = try #require(Self.reader(value), "\(name): the reader answers")
        #expect(Self.general(value) == .success(attributes), "\(name)")
        #expect(Self.parsed(value) == .success(attributes))
    }

    /// Values the reader leaves to the general reader: valid ones it does not
    /// read itself, and every error.
    static let left: [(String, String)] = [
        ("an escape in a name", #"{"Public\u0049P":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("a name with the Kelvin sign (Go folds it to k)", #"{"PublicIP":"198.18.0.1","BackendType":"vxlan","Bac\#u{212A}endData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("a non-ASCII unknown field", #"{"PublicIP":"198.18.0.1","Nöte":"ü","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("VNI 1e0", HostileLeases.vxlan("198.18.0.1", mac, vni: "1e0")),
        ("VNI 1.0", HostileLeases.vxlan("198.18.0.1", mac, vni: "1.0")),
        ("VNI -0", HostileLeases.vxlan("198.18.0.1", mac, vni: "-0")),
        ("VNI a string of digits", HostileLeases.vxlan("198.18.0.1", mac, vni: #""1""#)),
        ("VNI true", HostileLeases.vxlan("198.18.0.1", mac, vni: "true")),
        ("VNI 16777216", HostileLeases.vxlan("198.18.0.1", mac, vni: "16777216")),
        ("VNI of 30 digits", HostileLeases.vxlan("198.18.0.1", mac, vni: String(repeating: "9", count: 30))),
        ("a broken BackendV6Data", #"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"},"BackendV6Data":{"VtepMAC":"zz"}}"#),
        ("BackendV6Data a string", #"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"},"BackendV6Data":"junk"}"#),
        ("an unknown field nested 40 deep (the general reader takes 64)", #"{"PublicIP":"198.18.0.1","Deep":"# + String(repeating: "[", count: 40)
            + String(repeating: "]", count: 40) + #","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("a MAC with a plus sign", #"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"+e:01:c6:12:00:01"}}"#),
        ("a MAC of 5 bytes", #"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00"}}"#),
        ("PublicIP with a leading zero", HostileLeases.vxlan("198.18.0.01", mac)),
        ("PublicIPv6 not an address", #"{"PublicIP":"198.18.0.1","PublicIPv6":"zz","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("PublicIP null after a value", #"{"PublicIP":"198.18.0.1","PublicIP":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("a number with a leading zero", #"{"PublicIP":"198.18.0.1","X":01,"BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("a number without digits after the point", #"{"PublicIP":"198.18.0.1","X":1.,"BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("an unterminated literal", #"{"PublicIP":"198.18.0.1","X":tru"#),
        ("a trailing comma in an array", #"{"PublicIP":"198.18.0.1","X":[1,],"BackendType":"vxlan","BackendData":{"VtepMAC":"0e:01:c6:12:00:01"}}"#),
        ("white space only", " \n"),
        ("a string at the top", #""198.18.0.1""#),
    ]

    @Test("what the reader leaves, the general reader answers, errors included", arguments: left)
    func leaves(_ name: String, _ value: String) {
        #expect(Self.reader(value) == nil, "\(name): left to the general reader")
        #expect(Self.parsed(value) == Self.general(value), "\(name)")
    }

    @Test("every hostile lease value: the reader answers as the general reader or leaves it to it")
    func hostile() {
        var read = 0
        for entry in (HostileLeases.good + HostileLeases.cases.flatMap(\.entries)) {
            if let attributes = Self.reader(entry.value) {
                read += 1
                #expect(Self.general(entry.value) == .success(attributes), "\(entry.name)")
            }
            #expect(Self.parsed(entry.value) == Self.general(entry.value), "\(entry.name)")
        }
        #expect(read > 20, "most hostile values are well-formed leases the reader reads itself")
    }

    @Test("every prefix of a lease, and every byte of it replaced: the same answers")
    func mutations() {
        let value = HostileLeases.dualStack.entries[0].value
        var variants: [String] = (0...value.utf8.count).map { String(decoding: value.utf8.prefix($0), as: UTF8.self) }
        let bytes = Array(value.utf8)
        for index in bytes.indices {
            for replacement in [UInt8(ascii: "\""), UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: ","), UInt8(ascii: "1"), 0x20, 0x00] {
                var copy = bytes
                copy[index] = replacement
                variants.append(String(decoding: copy, as: UTF8.self))
            }
        }
        for variant in variants {
            if let attributes = Self.reader(variant) {
                #expect(Self.general(variant) == .success(attributes), "\(variant)")
            }
            #expect(Self.parsed(variant) == Self.general(variant), "\(variant)")
        }
    }

    @Test("lease keys are read by their bytes; a separator with a combining mark names no subnet")
    func combiningMarks() {
        let prefix = "/coreos.com/network/subnets/"
        #expect(Flannel.subnets(ofLeaseKey: prefix + "10.244.1.0-24") == LeaseKeySubnets(ipv4: IPv4Prefix("10.244.1.0/24"), ipv6: nil))
        for name in ["10.244.1.0-\u{301}24", "10.244.1.0\u{301}-24", "10.244.1.0-24&\u{301}fd00::-64", "10.244.1.0-24\u{301}",
                     "10.244.1.0-2\u{301}4", "\u{301}10.244.1.0-24", "10.244.1.0-24&fd00::-\u{301}64"] {
            #expect(Flannel.subnets(ofLeaseKey: prefix + name) == nil, "\(Flannel.printable(name))")
        }
        // flanneld reads the digits and dots before the length, whatever comes before them.
        #expect(Flannel.heldSubnet(byLeaseKey: prefix + "x/\u{301}10.244.9.0-24") == IPv4Prefix("10.244.9.0/24"))
        #expect(Flannel.heldSubnet(byLeaseKey: prefix + "10.244.9.0-\u{301}24") == nil)
        // The one place the two readings part: what follows the last '&' is cut off, combining mark or not (it
        // was kept whole when the '&' carried one). flanneld's pattern, not anchored at the end, holds 10.244.9.0/24.
        #expect(Flannel.heldSubnet(byLeaseKey: prefix + "10.244.9.0-24&\u{301}") == IPv4Prefix("10.244.9.0/24"))
        #expect(Flannel.heldSubnet(byLeaseKey: prefix + "10.244.9.0-24&junk") == IPv4Prefix("10.244.9.0/24"))
    }
}
