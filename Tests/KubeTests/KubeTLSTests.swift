@testable import Daemon
import Foundation
import Logging
import NIOSSL
import Registry
import Testing
import TestSupport

/// A CA, a server certificate for IP 127.0.0.1, a client certificate, and another CA, made with openssl.
struct KubeCertificates {
    let directory: String
    func path(_ name: String) -> String { directory + "/" + name }

    init(directory: String) throws {
        self.directory = directory
        func ca(_ name: String) throws {
            try sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout \(directory)/\(name)-key.pem "
                   + "-out \(directory)/\(name).pem -days 2 -subj '/CN=vxlan-agent kube test \(name)' "
                   + "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>&1")
        }
        func leaf(_ name: String, _ extensions: String) throws {
            try extensions.write(toFile: path("\(name).ext"), atomically: true, encoding: .utf8)
            try sh("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout \(directory)/\(name)-key.pem "
                   + "-out \(directory)/\(name).csr -subj /CN=\(name) 2>&1 && openssl x509 -req -in \(directory)/\(name).csr "
                   + "-CA \(directory)/ca.pem -CAkey \(directory)/ca-key.pem -CAcreateserial -days 2 "
                   + "-extfile \(directory)/\(name).ext -out \(directory)/\(name).pem 2>&1")
        }
        try ca("ca")
        try ca("other-ca")
        try leaf("server", "subjectAltName=IP:127.0.0.1\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        try leaf("client", "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    }

    /// The server's context: its certificate, and a client certificate from the CA required.
    func serverContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(path("server.pem")).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: path("server-key.pem"), format: .pem)))
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(path("ca.pem")))
        configuration.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: configuration)
    }
}

/// The client over TLS: the cluster CA from the kubeconfig (inline data), the
/// client certificate from files next to it, and a server whose CA is not the
/// kubeconfig's refused.
@Suite(.serialized, .blocking) struct KubeTLSTests {
    @Test func kubeconfigWithCADataAndClientCertificate() async throws {
        let directory = NSTemporaryDirectory() + "vxa-kube-tls-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try KubeCertificates(directory: directory)
        let api = try FakeKubeAPI(tls: try certificates.serverContext())
        defer { Task { await api.shutdown() } }
        api.put(nodeJSON("n1", podCIDR: "10.244.1.0/24", annotations: [:]))
        api.put(annotated("n2", ip: "198.18.0.2", subnet: "10.244.2.0/24"))
        try #"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}"#.write(toFile: directory + "/net-conf.json", atomically: true, encoding: .utf8)

        func kubeconfig(ca: String) throws -> AgentConfig {
            let data = try Data(contentsOf: URL(fileURLWithPath: certificates.path("\(ca).pem"))).base64EncodedString()
            try """
            apiVersion: v1
            clusters:
            - cluster:
                certificate-authority-data: \(data)
                server: \(api.url)
              name: tls
            contexts:
            - context: {cluster: tls, user: flannel}
              name: tls
            current-context: tls
            users:
            - name: flannel
              user:
                client-certificate: client.pem
                client-key: client-key.pem
                token: \(api.token)
            """.write(toFile: directory + "/kubeconfig", atomically: true, encoding: .utf8)
            return try AgentConfig.parse(Data("""
                {"node": "n1", "publicIP": "198.18.0.1",
                 "kubernetes": {"kubeconfig": "\(directory)/kubeconfig", "netConfPath": "\(directory)/net-conf.json"}}
                """.utf8), source: "agent.json")
        }
        func read(_ config: AgentConfig) async throws -> [String] {
            let source = try KubeSource(config: config, settings: config.kubernetes!, node: "n1", log: Logger(label: "test"),
                                        environment: [:], serviceAccount: directory + "/none")
            return try await source.read().view.peers.map { "\($0.name) \($0.publicIP)" }
        }
        #expect(api.url.hasPrefix("https://127.0.0.1:"))
        #expect(try await read(try kubeconfig(ca: "ca")) == ["n2 198.18.0.2"])
        // A server certificate the kubeconfig's CA did not sign: refused, and nothing read.
        let requests = api.requests.count
        await #expect { try await read(try kubeconfig(ca: "other-ca")) } throws: { error in
            "\(error)".contains("list nodes") && "\(error)".lowercased().contains("certificate")
        }
        #expect(api.requests.count == requests)
    }
}
