import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import NIOSSL

extension EtcdClient {
    /// Turns what async-http-client, NIO and NIOSSL throw into an `EtcdError`
    /// whose code says whether the request can have reached etcd.
    func transportError(_ error: any Error, endpoint: String, operation: String, key: String?) -> EtcdError {
        func make(_ code: EtcdError.Code, _ message: String) -> EtcdError {
            EtcdError(code, endpoint: endpoint, operation: operation, key: key, message: message)
        }
        if let error = error as? EtcdError { return error }
        if error is CancellationError { return make(.cancelled, "cancelled") }
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: return make(.unreachable, "connect timed out after \(requestTimeout)")
            case .tlsHandshakeTimeout: return make(.unreachable, "TLS handshake timed out")
            case .deadlineExceeded, .readTimeout: return make(.timedOut, "no answer within \(requestTimeout)")
            case .remoteConnectionClosed: return make(.connectionLost, "etcd closed the connection")
            case .cancelled: return make(.cancelled, "cancelled")
            case .alreadyShutdown: return make(.invalidArgument, "the client was shut down")
            default: return make(.connectionLost, "\(error)")
            }
        }
        if let error = error as? NIOConnectionError {
            let reasons = error.connectionErrors.map { Self.describe($0.error) }
            let dns = [error.dnsAError, error.dnsAAAAError].compactMap { $0 }.map { "name lookup: \($0)" }
            return make(.unreachable, "cannot connect: " + ((reasons + dns).first ?? "no address to try"))
        }
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EADDRNOTAVAIL, ETIMEDOUT:
                return make(.unreachable, "cannot connect: " + Self.describe(error))
            default:
                return make(.connectionLost, Self.describe(error))
            }
        }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout: return make(.unreachable, "connect timed out after \(requestTimeout)")
            case .ioOnClosedChannel, .alreadyClosed, .outputClosed, .eof:
                return make(.connectionLost, "the connection was closed (\(error))")
            default: return make(.connectionLost, "\(error)")
            }
        }
        if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError {
            // A failed handshake (etcd's certificate not trusted or not naming
            // the host, or ours refused, which TLS 1.3 reports only at the
            // first read) means etcd took no request on this connection.
            let (reasons, explanation) = Self.explainTLS(error)
            var handshake = error is NIOSSLExtraError || explanation != nil
            if case .handshakeFailed = error as? NIOSSLError { handshake = true }
            guard handshake else { return make(.connectionLost, "TLS: \(error)") }
            guard let explanation else { return make(.unreachable, "TLS handshake failed: \(error)") }
            return make(.unreachable, "TLS handshake failed (\(reasons.joined(separator: ", "))): \(explanation)")
        }
        return make(.connectionLost, "\(error)")
    }

    /// BoringSSL's reasons in an error ("CERTIFICATE_VERIFY_FAILED",
    /// "SSLV3_ALERT_BAD_CERTIFICATE") and what they most likely mean here.
    static func explainTLS(_ error: any Error) -> (reasons: [String], explanation: String?) {
        if let error = error as? NIOSSLExtraError, error == .failedToValidateHostname {
            return (["\(error)"], "etcd's certificate does not name the endpoint's host")
        }
        let reasons = "\(error)".components(separatedBy: "OPENSSL_internal:").dropFirst()
            .map { String($0.prefix { $0.isLetter || $0.isNumber || $0 == "_" }) }
            .filter { !$0.isEmpty }
        let refused = ["ALERT_BAD_CERTIFICATE", "ALERT_UNKNOWN_CA", "ALERT_CERTIFICATE_REQUIRED",
                       "ALERT_CERTIFICATE_UNKNOWN", "ALERT_UNSUPPORTED_CERTIFICATE", "ALERT_CERTIFICATE_EXPIRED"]
        for reason in reasons {
            if reason == "CERTIFICATE_VERIFY_FAILED" {
                return (reasons, "etcd's certificate is not signed by a trusted CA (caFile)")
            }
            if refused.contains(where: reason.hasSuffix) {
                return (reasons, "etcd refused the client certificate; certFile and keyFile must be a pair"
                    + " signed by a CA in etcd's --trusted-ca-file")
            }
        }
        return (reasons, nil)
    }

    /// Whether the error is that of a pooled connection found closed: the
    /// request was not written (or, for `remoteConnectionClosed`, may have
    /// been, so only an idempotent request counts).
    static func isStaleConnection(_ error: any Error, idempotent: Bool) -> Bool {
        switch error {
        case ChannelError.ioOnClosedChannel, ChannelError.alreadyClosed, ChannelError.outputClosed:
            return true
        case let error as HTTPClientError where error == .remoteConnectionClosed:
            return idempotent
        default:
            return false
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode))
        }
        return "\(error)"
    }
}
