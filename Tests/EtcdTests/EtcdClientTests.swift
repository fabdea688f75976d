import Foundation
@testable import Etcd
import Testing

/// The client against a real etcd 3.4 on loopback, one etcd per test.
@Suite(etcdTests)
struct EtcdClientTests {
    @Test func putGetListDelete() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                #expect(try await client.get("/test/none") == nil)

                let first = try await client.put("/test/subnets/a", value: "alpha")
                let second = try await client.put("/test/subnets/b", value: "{\"PublicIP\":\"198.18.0.2\"}")
                try await client.put("/test/subnetsX", value: "outside the prefix")
                try await client.put("/tesu", value: "outside the prefix too")
                #expect(second > first)

                let a = try #require(try await client.get("/test/subnets/a"))
                #expect(a.key == "/test/subnets/a")
                #expect(a.string == "alpha")
                #expect(a.value == Array("alpha".utf8))
                #expect(a.createRevision == first && a.modRevision == first)
                #expect(a.version == 1 && a.lease == 0)

                let updated = try await client.put("/test/subnets/a", value: "again")
                let a2 = try #require(try await client.get("/test/subnets/a"))
                #expect(a2.version == 2 && a2.createRevision == first && a2.modRevision == updated)

                let (kvs, revision) = try await client.list(prefix: "/test/subnets/")
                #expect(kvs.map(\.key) == ["/test/subnets/a", "/test/subnets/b"])
                #expect(kvs.map(\.string) == ["again", "{\"PublicIP\":\"198.18.0.2\"}"])
                #expect(revision >= updated)
                #expect(try await client.list(prefix: "/nothing/").kvs.isEmpty)
                #expect(try await client.list(prefix: "/test").kvs.count == 3)
                #expect(try await client.list(prefix: "").kvs.count == 4)

                // Raw bytes, and a value that is not UTF-8, survive the base64 round trip.
                try await client.put("/test/bytes", bytes: [0, 0xff, 0x80, 10])
                #expect(try await client.get("/test/bytes")?.value == [0, 0xff, 0x80, 10])

                #expect(try await client.delete("/test/subnets/a") == 1)
                #expect(try await client.delete("/test/subnets/a") == 0)
                #expect(try await client.get("/test/subnets/a") == nil)
                #expect(try await client.list(prefix: "/test/subnets/").kvs.map(\.key) == ["/test/subnets/b"])
            }
        }
    }

    @Test func createIfAbsentCreatesOnceAndNeverOverwrites() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let key = "/coreos.com/network/subnets/10.244.1.0-24"
                #expect(try await client.createIfAbsent(key, value: "first", lease: nil))
                let created = try #require(try await client.get(key))

                #expect(try await client.createIfAbsent(key, value: "second", lease: nil) == false)
                let after = try #require(try await client.get(key))
                #expect(after == created, "a refused create must change nothing")
                #expect(after.string == "first")

                // Still refused after the key was changed (version 2), and
                // allowed again once it is deleted (version back to 0).
                try await client.put(key, value: "changed")
                #expect(try await client.createIfAbsent(key, value: "third", lease: nil) == false)
                #expect(try await client.get(key)?.string == "changed")
                try await client.delete(key)
                #expect(try await client.createIfAbsent(key, value: "fourth", lease: nil))
                #expect(try await client.get(key)?.string == "fourth")

                // With a lease, as flannel takes a subnet.
                let lease = try await client.grantLease(ttlSeconds: 60)
                #expect(try await client.createIfAbsent(key + "-leased", value: "v", lease: lease))
                #expect(try await client.get(key + "-leased")?.lease == lease)
            }
        }
    }

    @Test func leaseGrantKeepAliveTimeToLiveRevoke() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let lease = try await client.grantLease(ttlSeconds: 120)
                #expect(lease != 0)
                let ttl = try #require(try await client.timeToLive(lease: lease))
                #expect(ttl > 0 && ttl <= 120)
                let renewed = try await client.keepAlive(lease: lease)
                #expect(renewed > 0 && renewed <= 120)

                try await client.put("/test/leased", value: "mine", lease: lease)
                try await client.put("/test/kept", value: "not leased")
                #expect(try await client.get("/test/leased")?.lease == lease)

                try await client.revoke(lease: lease)
                #expect(try await client.get("/test/leased") == nil, "revoking a lease deletes its keys")
                #expect(try await client.get("/test/kept") != nil)
                #expect(try await client.timeToLive(lease: lease) == nil)

                let name = "lease " + String(UInt64(bitPattern: lease), radix: 16)
                let keepAliveError = try await #require(throws: EtcdError.self) {
                    try await client.keepAlive(lease: lease)
                }
                #expect(keepAliveError.code == .leaseNotFound)
                #expect(keepAliveError.description.contains(name))

                let revokeError = try await #require(throws: EtcdError.self) { try await client.revoke(lease: lease) }
                #expect(revokeError.code == .leaseNotFound)

                let putError = try await #require(throws: EtcdError.self) {
                    try await client.put("/test/orphan", value: "v", lease: lease)
                }
                #expect(putError.code == .leaseNotFound)
                #expect(putError.description.contains("put /test/orphan"))
                #expect(putError.description.contains("requested lease not found"))
                #expect(putError.description.contains(etcd.endpoint))
            }
        }
    }

    @Test func watchFromAPastRevisionSeesHistoryThenLiveChanges() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let start = try await client.put("/net/subnets/a", value: "1")
                let putB = try await client.put("/net/subnets/b", value: "2")
                try await client.put("/net/other", value: "not watched")
                let deleteA = try await client.delete("/net/subnets/a")
                #expect(deleteA == 1)

                let recorder = WatchRecorder(client.watch(prefix: "/net/subnets/", startRevision: start))
                defer { recorder.stop() }
                let history = try await recorder.waitForEvents(3)
                #expect(history.count == 3)
                guard history.count == 3 else { return }
                guard case .put(let a) = history[0], case .put(let b) = history[1],
                      case .delete(let deletedKey, let deletedAt) = history[2] else {
                    Issue.record("unexpected events \(history)")
                    return
                }
                #expect(a.key == "/net/subnets/a" && a.string == "1" && a.modRevision == start)
                #expect(b.key == "/net/subnets/b" && b.string == "2" && b.modRevision == putB)
                #expect(deletedKey == "/net/subnets/a" && deletedAt > putB)

                // Live changes after the watch started.
                let putC = try await client.put("/net/subnets/c", value: "3")
                try await client.put("/net/elsewhere", value: "not watched")
                try await client.delete("/net/subnets/b")
                let all = try await recorder.waitForEvents(5)
                #expect(all.count == 5)
                #expect(all.dropFirst(3).first == .put(KeyValue(
                    key: "/net/subnets/c", value: Array("3".utf8), createRevision: putC, modRevision: putC,
                    version: 1, lease: 0)))
                if case .delete(let key, let revision) = all.last {
                    #expect(key == "/net/subnets/b" && revision > putC)
                } else {
                    Issue.record("expected the delete of /net/subnets/b, got \(String(describing: all.last))")
                }
                #expect(all.map(\.modRevision) == all.map(\.modRevision).sorted())
                #expect(!all.contains { !$0.key.hasPrefix("/net/subnets/") })
                #expect(recorder.batches.allSatisfy { batch in batch.events.allSatisfy { $0.modRevision <= batch.revision } })
                #expect(recorder.batches.last?.nextRevision == all.last!.modRevision + 1)
            }
        }
    }

    @Test func watchSeesKeysOfARevokedLeaseDeleted() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                // etcd 3.4 has answered a put with a lease it had just granted "requested
                // lease not found" (2 runs in about 15 on this machine, under load): grant
                // again, at most twice. What this test checks is the watch, below.
                var granted: (lease: Int64, put: Int64)?
                for _ in 1...3 where granted == nil {
                    let lease = try await client.grantLease(ttlSeconds: 60)
                    do {
                        granted = (lease, try await client.put("/net/subnets/leased", value: "x", lease: lease))
                    } catch let error as EtcdError where error.code == .leaseNotFound {
                        continue
                    }
                }
                let (lease, put) = try #require(granted)
                let recorder = WatchRecorder(client.watch(prefix: "/net/subnets/", startRevision: put + 1))
                defer { recorder.stop() }
                try await client.revoke(lease: lease)
                let events = try await recorder.waitForEvents(1)
                #expect(events.first?.key == "/net/subnets/leased")
                if case .delete = events.first {} else { Issue.record("expected a delete, got \(events)") }
            }
        }
    }

    @Test func watchFromACompactedRevisionThrowsCompacted() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let first = try await client.put("/net/subnets/a", value: "1")
                try await client.put("/net/subnets/a", value: "2")
                let third = try await client.put("/net/subnets/a", value: "3")
                try etcd.compact(third)

                let recorder = WatchRecorder(client.watch(prefix: "/net/subnets/", startRevision: first))
                defer { recorder.stop() }
                let failure = try await recorder.waitForFailure()
                let error = try #require(failure as? EtcdError, "\(failure)")
                #expect(error.code == .compacted(compactRevision: third))
                #expect(error.compactRevision == third)
                #expect(error.description.contains("compacted"))
                #expect(error.description.contains(etcd.endpoint))
                #expect(recorder.events.isEmpty)

                // From the compaction revision on, history is there.
                let resumed = WatchRecorder(client.watch(prefix: "/net/subnets/", startRevision: third))
                defer { resumed.stop() }
                let events = try await resumed.waitForEvents(1)
                #expect(events.first?.modRevision == third)
            }
        }
    }

    @Test func watchFailsWhenEtcdStops() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let revision = try await client.put("/net/subnets/a", value: "1")
                let recorder = WatchRecorder(client.watch(prefix: "/net/subnets/", startRevision: revision))
                defer { recorder.stop() }
                _ = try await recorder.waitForEvents(1)  // the watch is established

                etcd.kill(force: false)
                let failure = try await recorder.waitForFailure()
                let error = try #require(failure as? EtcdError, "\(failure)")
                #expect(error.code == .connectionLost)
                #expect(error.description.contains(etcd.endpoint))
                #expect(error.description.contains("watch /net/subnets/"))

                // A new watch cannot even connect.
                let again = WatchRecorder(client.watch(prefix: "/net/subnets/", startRevision: revision))
                defer { again.stop() }
                let second = try #require(try await again.waitForFailure() as? EtcdError)
                #expect(second.code == .unreachable)
            }
        }
    }

    @Test func moreWatchesThanPooledConnections() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let revision = try await client.put("/many/k", value: "v")
                let recorders = (0..<12).map { _ in WatchRecorder(client.watch(prefix: "/many/", startRevision: revision)) }
                defer { recorders.forEach { $0.stop() } }
                for recorder in recorders {
                    #expect(try await recorder.waitForEvents(1).map(\.key) == ["/many/k"])
                }
                // Unary calls still go through while all those watches are open.
                #expect(try await client.get("/many/k")?.string == "v")
            }
        }
    }

    @Test func aGatewayPathEtcdDoesNotServeIsUnimplemented() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let error = try await #require(throws: EtcdError.self) {
                    _ = try await client.call("/v3/no/such/path", Gateway.LeaseIDRequest(ID: "1"),
                                              as: Gateway.LeaseRevokeResponse.self, operation: "probe", key: nil,
                                              idempotent: true)
                }
                #expect(error.code == EtcdClient.noSuchRoute)
                #expect(error.description.contains("HTTP 404"), "\(error)")
            }
        }
    }

    @Test func stoppedEtcdGivesAClearError() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                try await client.put("/test/k", value: "v")
                etcd.kill(force: false)

                let error = try await #require(throws: EtcdError.self) { try await client.get("/test/k") }
                #expect(error.code == .unreachable)
                #expect(error.endpoint == etcd.endpoint)
                #expect(error.description.hasPrefix("etcd \(etcd.endpoint): get /test/k: "))
                #expect(error.description.contains("cannot connect: Connection refused"), "\(error)")

                let putError = try await #require(throws: EtcdError.self) { try await client.put("/test/k", value: "w") }
                #expect(putError.code == .unreachable)
                #expect(putError.description.contains("put /test/k"))
            }
        }
    }

    @Test func theNextEndpointIsUsedWhenOneIsDown() async throws {
        try await withEtcd { etcd in
            let dead = "http://127.0.0.1:\(try freePort())"
            try await withClient([dead, etcd.endpoint]) { client in
                try await client.put("/test/k", value: "v")
                #expect(try await client.get("/test/k")?.string == "v")
                #expect(try await client.createIfAbsent("/test/new", value: "n", lease: nil))
                let lease = try await client.grantLease(ttlSeconds: 30)
                #expect(try await client.keepAlive(lease: lease) > 0)

                let recorder = WatchRecorder(client.watch(prefix: "/test/", startRevision: 1))
                defer { recorder.stop() }
                #expect(try await recorder.waitForEvents(2).map(\.key) == ["/test/k", "/test/new"])
            }
            // Both down: the error names both and why each failed.
            let alsoDead = "http://127.0.0.1:\(try freePort())"
            try await withClient([dead, alsoDead]) { client in
                let error = try await #require(throws: EtcdError.self) { try await client.get("/test/k") }
                #expect(error.code == .unreachable)
                #expect(error.description.contains(dead) && error.description.contains(alsoDead), "\(error)")
                #expect(error.description.contains("Connection refused"), "\(error)")
            }
        }
    }

    @Test func tlsWithClientCertificates() async throws {
        try await withEtcd(tls: true) { etcd in
            let certificates = try #require(etcd.certificates)
            #expect(etcd.endpoint.hasPrefix("https://"))

            try await withClient([etcd.endpoint], tls: certificates.clientTLS) { client in
                let revision = try await client.put("/secure/k", value: "v")
                #expect(try await client.get("/secure/k")?.string == "v")
                #expect(try await client.createIfAbsent("/secure/k", value: "w", lease: nil) == false)
                let recorder = WatchRecorder(client.watch(prefix: "/secure/", startRevision: revision))
                defer { recorder.stop() }
                #expect(try await recorder.waitForEvents(1).first?.key == "/secure/k")
            }

            // A client certificate from another CA: etcd refuses the handshake.
            try await withClient([etcd.endpoint], tls: certificates.strangerTLS) { client in
                let error = try await #require(throws: EtcdError.self) { try await client.get("/secure/k") }
                #expect(error.code == .unreachable)
                #expect(error.description.hasPrefix("etcd \(etcd.endpoint): get /secure/k: TLS handshake failed ("),
                        "\(error)")
                #expect(error.description.contains("etcd refused the client certificate"), "\(error)")
            }

            // No client certificate at all.
            try await withClient([etcd.endpoint], tls: EtcdTLS(caFile: certificates.ca)) { client in
                let error = try await #require(throws: EtcdError.self) { try await client.get("/secure/k") }
                #expect(error.code == .unreachable)
                #expect(error.description.contains("etcd refused the client certificate"), "\(error)")
            }

            // The right client certificate but not trusting etcd's CA.
            let distrustful = EtcdTLS(caFile: certificates.directory + "/other-ca.pem",
                                      certFile: certificates.clientTLS.certFile, keyFile: certificates.clientTLS.keyFile)
            try await withClient([etcd.endpoint], tls: distrustful) { client in
                let error = try await #require(throws: EtcdError.self) { try await client.get("/secure/k") }
                #expect(error.code == .unreachable)
                #expect(error.description.contains("etcd's certificate is not signed by a trusted CA"), "\(error)")
            }

            // Plain HTTP to a TLS endpoint.
            let plain = etcd.endpoint.replacingOccurrences(of: "https://", with: "http://")
            try await withClient([plain]) { client in
                let error = try await #require(throws: EtcdError.self) { try await client.get("/secure/k") }
                #expect(error.description.hasPrefix("etcd \(plain): get /secure/k: "), "\(error)")
            }
        }
    }
}

/// What needs no etcd: configuration errors.
struct EtcdClientConfigurationTests {
    @Test func badEndpointsAndTLSFilesAreReportedAtInit() throws {
        #expect(throws: EtcdError.self) { try EtcdClient(endpoints: []) }
        let badScheme = try #require(throws: EtcdError.self) { try EtcdClient(endpoints: ["ftp://127.0.0.1:2379"]) }
        #expect(badScheme.code == .invalidArgument)
        #expect(badScheme.description.contains("ftp://127.0.0.1:2379"))

        let missing = try #require(throws: EtcdError.self) {
            try EtcdClient(endpoints: ["127.0.0.1:2379"], tls: EtcdTLS(caFile: "/nonexistent/ca.pem"))
        }
        #expect(missing.code == .invalidArgument)
        #expect(missing.description.contains("cannot read the CA file /nonexistent/ca.pem: no such file"))

        let notPEM = try #require(throws: EtcdError.self) {
            try EtcdClient(endpoints: ["127.0.0.1:2379"], tls: EtcdTLS(caFile: "/etc/hostname"))
        }
        #expect(notPEM.description.contains("/etc/hostname: not a PEM certificate"))

        let halfPair = try #require(throws: EtcdError.self) {
            try EtcdClient(endpoints: ["127.0.0.1:2379"], tls: EtcdTLS(certFile: "/x/client.pem"))
        }
        #expect(halfPair.description.contains("keyFile"))
    }

    @Test func endpointsWithoutSchemeFollowTLS() async throws {
        let plain = try EtcdClient(endpoints: ["127.0.0.1:2379/", "http://127.0.0.1:2380"])
        #expect(plain.endpoints == ["http://127.0.0.1:2379", "http://127.0.0.1:2380"])
        try await plain.shutdown()
        let secure = try EtcdClient(endpoints: ["127.0.0.1:2379"], tls: EtcdTLS())
        #expect(secure.endpoints == ["https://127.0.0.1:2379"])
        try await secure.shutdown()
        try await secure.shutdown()  // idempotent
    }
}
