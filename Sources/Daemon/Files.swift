import Foundation

/// Writes `text` to `path` atomically (a temporary file in the same directory,
/// then rename), creating the directory if needed. Returns false, writing
/// nothing, when the file already holds exactly `text`.
@discardableResult
func writeAtomically(_ text: String, to path: String, mode: Int = 0o644) throws -> Bool {
    if let current = FileManager.default.contents(atPath: path), current == Data(text.utf8) { return false }
    let directory = (path as NSString).deletingLastPathComponent
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let temporary = "\(directory)/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
    guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
        throw DaemonError("cannot write \(temporary): \(String(cString: strerror(errno)))")
    }
    guard rename(temporary, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(temporary)
        throw DaemonError("cannot rename \(temporary) to \(path): \(reason)")
    }
    return true
}

/// An error of the daemon, ready to print.
public struct DaemonError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
