import Foundation
@testable import Etcd
import Testing

/// A range answer read from its bytes (`Gateway.RangeReader`) against JSONDecoder
/// (`RangeAnswer(decoding:)`): where the reader answers, it answers the same; where
/// it does not, `RangeAnswer` is JSONDecoder's, errors included.
struct GatewayRangeTests {
    static func reader(_ text: String) -> Gateway.RangeAnswer? {
        Data(text.utf8).withUnsafeBytes(Gateway.RangeReader.read)
    }

    static func decoded(_ text: String) -> Gateway.RangeAnswer? {
        try? Gateway.RangeAnswer(decoding: Data(text.utf8))
    }

    static func answer(_ text: String) -> Gateway.RangeAnswer? {
        try? Data(text.utf8).withUnsafeBytes { try Gateway.RangeAnswer($0) }
    }

    static func b64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// Two leases as etcd 3.4.23 answers a list (one attached to a lease, one not).
    static let recorded = #"{"header":{"cluster_id":"15964619957777559220","member_id":"9626908507715864950","revision":"12","raft_term":"2"},"kvs":[{"key":"L2NvcmVvcy5jb20vbmV0d29yay9zdWJuZXRzLzEwLjI0NC4xLjAtMjQ=","create_revision":"3","mod_revision":"3","version":"1","value":"eyJQdWJsaWNJUCI6IjE5OC4xOC4wLjIiLCJQdWJsaWNJUHY2IjpudWxsLCJCYWNrZW5kVHlwZSI6InZ4bGFuIiwiQmFja2VuZERhdGEiOnsiVk5JIjoxLCJWdGVwTUFDIjoiMGU6MDE6YzY6MTI6MDA6MDIifX0=","lease":"681910696275954951"},{"key":"L2NvcmVvcy5jb20vbmV0d29yay9zdWJuZXRzLzEwLjI0NC4yLjAtMjQ=","create_revision":"5","mod_revision":"11","version":"4","value":"e30="}],"count":"2"}"#

    @Test func aRecordedListIsReadByTheReaderAsJSONDecoderReadsIt() throws {
        let read = try #require(Self.reader(Self.recorded))
        #expect(read == Self.decoded(Self.recorded))
        #expect(read.revision == 12 && read.more == false)
        #expect(read.kvs == [
            KeyValue(key: "/coreos.com/network/subnets/10.244.1.0-24",
                     value: Array(#"{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:01:c6:12:00:02"}}"#.utf8),
                     createRevision: 3, modRevision: 3, version: 1, lease: 681_910_696_275_954_951),
            KeyValue(key: "/coreos.com/network/subnets/10.244.2.0-24", value: Array("{}".utf8),
                     createRevision: 5, modRevision: 11, version: 4, lease: 0),
        ])
    }

    /// A list as etcd 3.4.23 answers it, with a key attached to a lease: etcd's lease IDs take 19 digits.
    static let withLeaseID = #"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"5","raft_term":"2"},"kvs":[{"key":"L2NvcmVvcy5jb20vbmV0d29yay9zdWJuZXRzLzEwLjAuMS4wLTI0","create_revision":"2","mod_revision":"2","version":"1","value":"eyJQdWJsaWNJUCI6IjE5OC4xOS4wLjEiLCJQdWJsaWNJUHY2IjpudWxsLCJCYWNrZW5kVHlwZSI6InZ4bGFuIiwiQmFja2VuZERhdGEiOnsiVk5JIjoxLCJWdGVwTUFDIjoiMGU6MDE6YzY6MTM6MDA6MDEifX0="},{"key":"L2NvcmVvcy5jb20vbmV0d29yay9zdWJuZXRzLzEwLjAuMi4wLTI0","create_revision":"3","mod_revision":"3","version":"1","value":"eyJQdWJsaWNJUCI6IjE5OC4xOS4wLjIiLCJQdWJsaWNJUHY2IjpudWxsLCJCYWNrZW5kVHlwZSI6InZ4bGFuIiwiQmFja2VuZERhdGEiOnsiVk5JIjoxLCJWdGVwTUFDIjoiMGU6MDE6YzY6MTM6MDA6MDIifX0="},{"key":"L2NvcmVvcy5jb20vbmV0d29yay9zdWJuZXRzLzEwLjAuMy4wLTI0","create_revision":"4","mod_revision":"4","version":"1","value":"eyJQdWJsaWNJUCI6IjE5OC4xOS4wLjMiLCJQdWJsaWNJUHY2IjpudWxsLCJCYWNrZW5kVHlwZSI6InZ4bGFuIiwiQmFja2VuZERhdGEiOnsiVk5JIjoxLCJWdGVwTUFDIjoiMGU6MDE6YzY6MTM6MDA6MDMifX0="},{"key":"L2NvcmVvcy5jb20vbmV0d29yay9zdWJuZXRzLzEwLjAuOS4wLTI0","create_revision":"5","mod_revision":"5","version":"1","value":"eA==","lease":"7587899254436510728"}],"count":"4"}"#

    @Test func etcdsLeaseIDsAreRead() throws {
        let read = try #require(Self.reader(Self.withLeaseID))
        #expect(read == Self.decoded(Self.withLeaseID))
        #expect(read.kvs.count == 4 && read.revision == 5)
        #expect(read.kvs.last?.lease == 7_587_899_254_436_510_728)
        #expect(read.kvs.last?.value == Array("x".utf8))
    }

    @Test func base64OfEveryLengthAndEveryByte() throws {
        // Lengths 0...66 cover every padding; the bytes run through all 256 values.
        for length in 0...66 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 37 + length) }
            let text = #"{"kvs":[{"key":"a2V5","value":"\#(Data(bytes).base64EncodedString())"}]}"#
            let read = try #require(Self.reader(text), "length \(length)")
            #expect(read.kvs.first?.value == bytes)
            #expect(read == Self.decoded(text))
        }
        // A key that is not UTF-8 is repaired as String(decoding:) repairs it.
        let notUTF8 = #"{"kvs":[{"key":"/4A=","value":"AP8="}]}"#
        #expect(try #require(Self.reader(notUTF8)) == Self.decoded(notUTF8))
    }

    /// Answers the reader reads itself.
    static let read: [String] = [
        "{}",
        #"{"header":{"revision":"7"}}"#,
        #"{"kvs":null,"more":null,"count":null,"header":null}"#,
        #"{"more":true,"count":"1"}"#,
        #"{"kvs":[{"key":"YQ=="},{"value":""},{}]}"#,
        #"{"kvs":[{"key":null,"value":null,"lease":null,"version":"-0","mod_revision":"007"}]}"#,
        #"{"kvs":[{"lease":"999999999999999999"}]}"#,
        #"{"kvs":[{"lease":"9223372036854775807","version":"-9223372036854775808","mod_revision":"0000000000000000001"}]}"#,
        #" {"unknown":[1,-2.5e+3,true,false,null,{"a":[[]]},"x"],"header":{"raft_term":"2","revision":"3","more":{}}} "#,
        #"{"a":1,"a":2}"#,
    ]

    @Test(arguments: read)
    func answersTheReaderReads(_ text: String) throws {
        let read = try #require(Self.reader(text))
        #expect(read == Self.decoded(text))
        #expect(Self.answer(text) == read)
    }

    /// Answers left to JSONDecoder: some it decodes (leniently), some it refuses.
    static let left: [String] = [
        #"{"kvs":[{"key":"YR=="}]}"#,
        #"{"kvs":[{"key":"===="}]}"#,
        #"{"kvs":[{"key":"YW"}]}"#,
        #"{"kvs":[{"key":"Y Q=="}]}"#,
        #"{"kvs":[{"key":"YQ==","key":"Yg=="}]}"#,
        #"{"header":{"revision":"1"},"header":{"revision":"2"}}"#,
        #"{"header":{"revision":"+5"}}"#,
        #"{"header":{"revision":5}}"#,
        #"{"header":{"revision":""}}"#,
        #"{"kvs":[{"lease":"9223372036854775808"}]}"#,
        #"{"kvs":[{"lease":"-9223372036854775809"}]}"#,
        #"{"kvs":[{"lease":"99999999999999999999"}]}"#,
        #"{"kvs":[{"lease":"00000000000000000001"}]}"#,
        #"{"more":"true"}"#,
        #"{"kvs":[null]}"#,
        #"{"kvs":{}}"#,
        #"{"header":[]}"#,
        #"{"x":01}"#,
        #"{"x":"\u0041"}"#,
        #"{"x":"é"}"#,
        #"{"kvs":[{"key":"YQ=="}],}"#,
        "[]",
        "",
        #"{"kvs":[{"key":"YQ=="}]} {}"#,
        "{\"x\":" + String(repeating: "[", count: 40) + String(repeating: "]", count: 40) + "}",
    ]

    @Test(arguments: left)
    func answersLeftToJSONDecoder(_ text: String) {
        #expect(Self.reader(text) == nil)
        #expect(Self.answer(text) == Self.decoded(text))
    }

    @Test func anAnswerJSONDecoderRefusesIsAnError() {
        #expect(throws: (any Error).self) { try Data(#"{"kvs":[{"key":"YW"}]}"#.utf8).withUnsafeBytes { try Gateway.RangeAnswer($0) } }
        #expect(throws: (any Error).self) { try Data("{\"kvs\":[".utf8).withUnsafeBytes { try Gateway.RangeAnswer($0) } }
    }
}
