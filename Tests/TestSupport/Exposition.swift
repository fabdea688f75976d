import Foundation

/// A Prometheus text exposition (format 0.0.4) as a scraper reads it: each
/// family's `# TYPE`, and each sample's value by name and labels, whatever the
/// order of families, series and labels and however a number is written
/// (`2`, `2.0`, `2e0`).
public struct Exposition: CustomStringConvertible {
    public struct Sample: Hashable {
        public var name: String
        public var labels: [String: String]
    }

    public private(set) var types: [String: String] = [:]
    public private(set) var help: [String: String] = [:]
    public private(set) var samples: [Sample: Double] = [:]
    public let description: String

    /// Parses `text`; a line that is neither a comment nor `name{labels} value` is an error naming it.
    public init(_ text: String) throws {
        description = text
        for line in text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) {
            if line.hasPrefix("# TYPE ") || line.hasPrefix("# HELP ") {
                let parts = line.dropFirst(7).split(separator: " ", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { throw CommandFailure(command: "parse /metrics", status: 0, output: "bad line: \(line)") }
                if line.hasPrefix("# TYPE ") { types[parts[0]] = parts[1] } else { help[parts[0]] = parts[1] }
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw CommandFailure(command: "parse /metrics", status: 0, output: "bad line: \(line)")
            }
            let series = line[..<space]
            guard let brace = series.firstIndex(of: "{") else {
                samples[Sample(name: String(series), labels: [:])] = value
                continue
            }
            guard series.hasSuffix("}") else { throw CommandFailure(command: "parse /metrics", status: 0, output: "bad line: \(line)") }
            var labels: [String: String] = [:]
            var rest = Substring(series[series.index(after: brace)..<series.index(before: series.endIndex)])
            while !rest.isEmpty {
                guard let equals = rest.firstIndex(of: "="), rest[rest.index(after: equals)...].first == "\"" else {
                    throw CommandFailure(command: "parse /metrics", status: 0, output: "bad labels: \(line)")
                }
                let key = String(rest[..<equals])
                var index = rest.index(equals, offsetBy: 2)
                var text = ""
                while index < rest.endIndex, rest[index] != "\"" {
                    if rest[index] == "\\", rest.index(after: index) < rest.endIndex {
                        index = rest.index(after: index)
                        text.append(rest[index] == "n" ? "\n" : rest[index])
                    } else {
                        text.append(rest[index])
                    }
                    index = rest.index(after: index)
                }
                guard index < rest.endIndex else { throw CommandFailure(command: "parse /metrics", status: 0, output: "bad labels: \(line)") }
                labels[key] = text
                rest = rest[rest.index(after: index)...]
                if rest.first == "," { rest = rest.dropFirst() }
            }
            samples[Sample(name: String(series[..<brace]), labels: labels)] = value
        }
    }

    /// The value of the series `name{labels}`; nil if there is none.
    public subscript(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples[Sample(name: name, labels: labels)]
    }
}

/// The body of an HTTP response (after the blank line that ends the headers).
public func httpBody(_ response: String) -> String {
    guard let range = response.range(of: "\r\n\r\n") else { return response }
    return String(response[range.upperBound...])
}
