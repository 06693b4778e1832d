// Core/ — the small types and system helpers every folder uses: digests, file system calls with typed
// errors, the builder's version.

internal import COpenSSLCrypto

/// A content digest in OCI form (`sha256:<64 lowercase hex>`).
///
/// It is only ever built by parsing and validating a string, or by hashing bytes,
/// so a `Digest` value is always well-formed and safe to use as a file name.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public enum Algorithm: String, Sendable {
        case sha256
    }

    public let algorithm: Algorithm
    /// Lowercase hex of the digest bytes.
    public let hex: String

    public init(parsing text: String) throws(DigestError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw DigestError(text: text, reason: "missing ':' between algorithm and hex")
        }
        let algorithmName = String(text[..<colon])
        let hexPart = String(text[text.index(after: colon)...])
        guard let algorithm = Algorithm(rawValue: algorithmName) else {
            throw DigestError(text: text, reason: "unsupported algorithm (only sha256 is accepted)")
        }
        try self.init(algorithm: algorithm, hex: hexPart, original: text)
    }

    public init(sha256Hex hex: String) throws(DigestError) {
        try self.init(algorithm: .sha256, hex: hex, original: hex)
    }

    private init(algorithm: Algorithm, hex: String, original: String) throws(DigestError) {
        guard hex.utf8.count == 64 else {
            throw DigestError(text: original, reason: "sha256 hex must be 64 characters")
        }
        guard hex.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
            throw DigestError(text: original, reason: "hex must be lowercase 0-9a-f")
        }
        self.algorithm = algorithm
        self.hex = hex
    }

    fileprivate init(trustedSHA256Hex hex: String) {
        self.algorithm = .sha256
        self.hex = hex
    }

    public var description: String { "\(algorithm.rawValue):\(hex)" }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.description < rhs.description }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        do {
            try self.init(parsing: text)
        } catch {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// SHA-256 of a whole buffer.
    public static func sha256<Bytes: Sequence>(of bytes: Bytes) -> Digest where Bytes.Element == UInt8 {
        let hasher = SHA256Hasher()
        let array = Array(bytes)
        array.withUnsafeBytes { hasher.update($0) }
        return hasher.finalize()
    }
}

public struct DigestError: Error, Sendable, CustomStringConvertible {
    public let text: String
    public let reason: String
    public var description: String {
        // Hostile digest strings can be long or contain control characters: show a bounded, escaped prefix.
        let shown = String(
            text.unicodeScalars.prefix(80).map {
                $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f ? Character($0) : "?"
            })
        return "invalid digest \"\(shown)\(text.unicodeScalars.count > 80 ? "…" : "")\": \(reason)"
    }
}

/// Incremental SHA-256 through libcrypto's EVP interface.
public final class SHA256Hasher {
    private let context: OpaquePointer
    public private(set) var byteCount: UInt64 = 0

    public init() {
        guard let ctx = EVP_MD_CTX_new() else {
            preconditionFailure("EVP_MD_CTX_new failed: out of memory")
        }
        context = ctx
        guard EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1 else {
            preconditionFailure("EVP_DigestInit_ex(sha256) failed")
        }
    }

    deinit { EVP_MD_CTX_free(context) }

    public func update(_ buffer: UnsafeRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        EVP_DigestUpdate(context, base, buffer.count)
        byteCount += UInt64(buffer.count)
    }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Finishes the hash; the hasher must not be used afterwards.
    public func finalize() -> Digest {
        var output = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &output, &length)
        let digits = Array("0123456789abcdef".utf8)
        var hex = [UInt8]()
        hex.reserveCapacity(64)
        for byte in output {
            hex.append(digits[Int(byte >> 4)])
            hex.append(digits[Int(byte & 0xf)])
        }
        return Digest(trustedSHA256Hex: String(decoding: hex, as: UTF8.self))
    }
}
