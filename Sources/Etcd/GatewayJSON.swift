import Foundation

// The JSON that etcd's gRPC gateway speaks: protobuf's JSON mapping of
// etcdserverpb, with the proto field names (`create_revision`, `range_end`; but
// `ID` and `TTL` in the lease messages, case-sensitive). Its quirks:
// - bytes fields (keys, values) are base64;
// - int64 fields are JSON strings ("revision":"42"); we send strings too;
// - fields at their zero value are left out of answers: a missing `kvs`, `count`,
//   `succeeded`, `lease`, `version` means empty, 0, false;
// - unknown or misspelt request fields are silently ignored (`"ttl":60` grants
//   a lease with etcd's minimum TTL), so the names here matter;
// - errors come back as a non-200 status with `{"error","message","code"}`,
//   `code` being the gRPC status code; inside a stream (watch, keepalive) as
//   `{"error":{"grpc_code","http_code","message","http_status"}}`.

enum Gateway {}

extension Gateway {
    /// An int64 that etcd writes as a string; numbers are taken too.
    struct Int64String: Decodable, Hashable {
        var value: Int64

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let text = try? container.decode(String.self) {
                guard let value = Int64(text) else {
                    throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an int64: \(text)")
                }
                self.value = value
            } else {
                self.value = try container.decode(Int64.self)
            }
        }
    }

    /// Bytes that etcd writes as base64.
    struct Base64Bytes: Decodable, Hashable {
        var bytes: [UInt8]

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let data = Data(base64Encoded: text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not base64: \(text)")
            }
            self.bytes = [UInt8](data)
        }
    }

    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
    static func base64(_ text: String) -> String { base64(Array(text.utf8)) }

    static func int64(_ value: Int64) -> String { String(value) }
}

// MARK: Answers

extension Gateway {
    struct Header: Decodable {
        var revision: Int64String?
        var rev: Int64 { revision?.value ?? 0 }
    }

    struct KV: Decodable {
        var key: Base64Bytes?
        var value: Base64Bytes?
        var create_revision: Int64String?
        var mod_revision: Int64String?
        var version: Int64String?
        var lease: Int64String?

        var keyValue: KeyValue {
            KeyValue(
                key: String(decoding: key?.bytes ?? [], as: UTF8.self),
                value: value?.bytes ?? [],
                createRevision: create_revision?.value ?? 0,
                modRevision: mod_revision?.value ?? 0,
                version: version?.value ?? 0,
                lease: lease?.value ?? 0)
        }
    }

    struct RangeResponse: Decodable {
        var header: Header?
        var kvs: [KV]?
        var more: Bool?
        var count: Int64String?
    }

    struct PutResponse: Decodable {
        var header: Header?
    }

    struct DeleteRangeResponse: Decodable {
        var header: Header?
        var deleted: Int64String?
    }

    struct TxnResponse: Decodable {
        var header: Header?
        var succeeded: Bool?
    }

    struct LeaseGrantResponse: Decodable {
        var header: Header?
        var ID: Int64String?
        var TTL: Int64String?
        var error: String?
    }

    struct LeaseKeepAliveResponse: Decodable {
        var header: Header?
        var ID: Int64String?
        var TTL: Int64String?
    }

    struct LeaseTimeToLiveResponse: Decodable {
        var header: Header?
        var ID: Int64String?
        var TTL: Int64String?
        var grantedTTL: Int64String?
    }

    struct LeaseRevokeResponse: Decodable {
        var header: Header?
    }

    struct Event: Decodable {
        /// "PUT" is the zero value and so is left out; "DELETE" is written.
        var type: String?
        var kv: KV?
    }

    struct WatchResponse: Decodable {
        var header: Header?
        var watch_id: Int64String?
        var created: Bool?
        var canceled: Bool?
        var compact_revision: Int64String?
        var cancel_reason: String?
        var events: [Event]?
    }

    /// An error answer to a unary call: `{"error":"...","message":"...","code":5}`.
    struct ErrorBody: Decodable {
        var error: String?
        var message: String?
        var code: Int?
    }

    /// An error inside a stream: `{"error":{"grpc_code":14,"http_code":503,"message":"..."}}`.
    struct StreamError: Decodable {
        var grpc_code: Int?
        var http_code: Int?
        var message: String?
        var http_status: String?
    }

    /// One message of a streamed answer (watch, keepalive).
    struct StreamMessage<Result: Decodable>: Decodable {
        var result: Result?
        var error: StreamError?
    }
}

// MARK: Requests

extension Gateway {
    struct RangeRequest: Encodable {
        var key: String
        var range_end: String?
        var revision: String?
        /// Only keys created at this revision or later (etcd's `min_create_revision`).
        var min_create_revision: String?
        /// The keys and their revisions without their values.
        var keys_only: Bool?
    }

    struct PutRequest: Encodable {
        var key: String
        var value: String
        var lease: String?
    }

    struct DeleteRangeRequest: Encodable {
        var key: String
        var range_end: String?
    }

    struct Compare: Encodable {
        var key: String
        /// "VERSION", "CREATE", "MOD", "VALUE", "LEASE".
        var target: String
        /// "EQUAL", "GREATER", "LESS", "NOT_EQUAL".
        var result: String
        /// Sent even when 0. etcd 3.4 would take a missing `version` as 0 (and a
        /// missing target/result as VERSION/EQUAL, the enums' zero values), but
        /// only by accident of its implementation; we say what we mean.
        var version: String
    }

    struct RequestOp: Encodable {
        var request_put: PutRequest
    }

    struct TxnRequest: Encodable {
        var compare: [Compare]
        var success: [RequestOp]
        var failure: [RequestOp]
    }

    struct LeaseGrantRequest: Encodable {
        var TTL: String
        var ID: String
    }

    struct LeaseIDRequest: Encodable {
        var ID: String
    }

    struct WatchCreateRequest: Encodable {
        var key: String
        var range_end: String
        var start_revision: String
        var progress_notify: Bool
    }

    /// One message on a watch's request stream: the create request first,
    /// then progress requests (etcd 3.4+ answers each with a header-only
    /// response when the watch is in sync).
    struct WatchRequest: Encodable {
        var create_request: WatchCreateRequest?
        var progress_request: WatchProgressRequest?

        init(create_request: WatchCreateRequest) { self.create_request = create_request }
        init(progress_request: WatchProgressRequest) { self.progress_request = progress_request }
    }

    struct WatchProgressRequest: Encodable {}
}

extension Gateway {
    /// The end of the range of keys that start with `prefix`: the prefix with its
    /// last byte that is not 0xff incremented and the rest dropped, as clientv3's
    /// `GetPrefixRangeEnd`. An empty prefix (or all 0xff) gives "\0": every key.
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xff {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }
}
