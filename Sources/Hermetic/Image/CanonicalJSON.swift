import Foundation

/// The one JSON form Hermetic writes (configs, manifests, indexes, index.json, lock and metadata files):
/// object keys sorted by their UTF-8 bytes at every level, no insignificant whitespace, UTF-8 text,
/// `/` not escaped, integers only. Equal values always give equal bytes, whatever order keys were set in.
public enum CanonicalJSON {
    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }
}

/// `{}` — the value type of Docker's `ExposedPorts` and `Volumes` maps.
public struct EmptyObject: Codable, Sendable, Hashable {
    public init() {}
    public init(from decoder: any Decoder) throws {
        _ = try decoder.container(keyedBy: EmptyKey.self)
    }
    public func encode(to encoder: any Encoder) throws {
        _ = encoder.container(keyedBy: EmptyKey.self)
    }
    private struct EmptyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}
