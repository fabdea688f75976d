/// Files for a TLS connection to etcd (`https://` endpoints), all PEM.
///
/// `caFile` replaces the system's trust roots when given. `certFile` and `keyFile`
/// (given together or not at all) are the client certificate and key that etcd
/// asks for when it runs with `--client-cert-auth`.
public struct EtcdTLS: Sendable, Hashable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// One key as etcd stores it.
///
/// Keys are text (etcd's are bytes; a key that is not UTF-8 is decoded with
/// replacement characters). Values are the raw bytes; `string` decodes them as UTF-8.
public struct KeyValue: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]
    /// The revision of the put that created the key.
    public var createRevision: Int64
    /// The revision of the last put to the key.
    public var modRevision: Int64
    /// How many puts since the key was created: 1 for a new key.
    public var version: Int64
    /// The lease the key is attached to, 0 for none.
    public var lease: Int64

    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64, lease: Int64) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }

    /// The value as UTF-8 text.
    public var string: String { String(decoding: value, as: UTF8.self) }
}

/// One change seen by a watch.
public enum WatchEvent: Sendable, Hashable {
    /// The key was created or changed; the key-value as it is after the put.
    case put(KeyValue)
    /// The key was deleted (or its lease expired or was revoked) at `modRevision`.
    case delete(key: String, modRevision: Int64)

    public var key: String {
        switch self {
        case .put(let kv): kv.key
        case .delete(let key, _): key
        }
    }

    /// The revision of the change.
    public var modRevision: Int64 {
        switch self {
        case .put(let kv): kv.modRevision
        case .delete(_, let revision): revision
        }
    }
}

/// The events of one watch response, in revision order. Never empty.
public struct WatchBatch: Sendable, Hashable {
    /// etcd's store revision when it sent the batch (the response header's
    /// revision). Every event is at or below it; it can be above the last event
    /// when later changes did not touch the watched keys.
    public var revision: Int64
    public var events: [WatchEvent]

    public init(revision: Int64, events: [WatchEvent]) {
        self.revision = revision
        self.events = events
    }

    /// Where a new watch continues after this batch: one past its last event.
    /// (Not `revision + 1`: etcd may split a long catch-up into several batches
    /// that all carry the current store revision.) A revision of Int64.max,
    /// which only a broken or hostile etcd sends, stays where it is instead of trapping.
    public var nextRevision: Int64 {
        let last = events.last?.modRevision ?? revision
        return last == .max ? last : last + 1
    }
}
