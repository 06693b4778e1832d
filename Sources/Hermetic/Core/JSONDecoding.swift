import Foundation

/// Decoding JSON from bytes we read ourselves (always size-capped by the caller).
enum JSONDecoding {
    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}
