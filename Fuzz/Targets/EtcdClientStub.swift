// Stands in for Sources/Etcd/EtcdClient.swift's class (which needs
// AsyncHTTPClient and NIO) so that the Foundation-only files that extend it
// compile into the etcd fuzz target.
final class EtcdClient {}
