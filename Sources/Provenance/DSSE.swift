import Foundation

/// A DSSE envelope (https://github.com/secure-systems-lab/dsse, protocol v1): the payload, its type, and
/// signatures over PAE(type, payload). We write standard base64 with padding; we read standard or URL-safe,
/// padded or not (DSSE: verifiers must accept either), and a missing `keyid` as an empty one.
public struct DSSEEnvelope: Codable, Sendable, Hashable {
    public var payload: String
    public var payloadType: String
    public var signatures: [Signature]

    public struct Signature: Codable, Sendable, Hashable {
        public var keyid: String
        public var sig: String

        public init(keyid: String, sig: String) {
            self.keyid = keyid
            self.sig = sig
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            keyid = try container.decodeIfPresent(String.self, forKey: .keyid) ?? ""
            sig = try container.decode(String.self, forKey: .sig)
        }
    }

    /// Standard or URL-safe base64, with or without padding.
    static func decodeBase64(_ text: String) -> [UInt8]? {
        var standard = String(
            text.map { character -> Character in
                switch character {
                case "-": "+"
                case "_": "/"
                default: character
                }
            })
        if standard.count % 4 != 0 { standard += String(repeating: "=", count: 4 - standard.count % 4) }
        return Data(base64Encoded: standard).map(Array.init)
    }

    public struct EnvelopeError: ProvenanceError {
        public var description: String
    }

    /// Pre-Authentication Encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in ASCII decimal.
    public static func pae(type: String, payload: [UInt8]) -> [UInt8] {
        let typeBytes = Array(type.utf8)
        return Array("DSSEv1 \(typeBytes.count) ".utf8) + typeBytes + Array(" \(payload.count) ".utf8) + payload
    }

    /// An envelope with no signature yet.
    public init(payload: [UInt8], payloadType: String) {
        self.payload = Data(payload).base64EncodedString()
        self.payloadType = payloadType
        self.signatures = []
    }

    public func payloadBytes() throws -> [UInt8] {
        guard let bytes = Self.decodeBase64(payload) else {
            throw EnvelopeError(description: "the envelope's payload is not valid base64")
        }
        return bytes
    }

    public mutating func sign(with key: SigningKey) throws {
        let signature = try key.sign(Self.pae(type: payloadType, payload: try payloadBytes()))
        signatures.append(Signature(keyid: key.keyID, sig: Data(signature).base64EncodedString()))
    }

    public enum SignatureCheck: Sendable, Hashable {
        case valid(keyid: String)
        case invalid(keyid: String)
        case unknownKey(keyid: String)
    }

    /// Checks every signature against the keys (matched by key id; an empty keyid is tried with every key).
    public func verify(with keys: [VerificationKey]) throws -> [SignatureCheck] {
        let message = Self.pae(type: payloadType, payload: try payloadBytes())
        return signatures.map { signature in
            guard let bytes = Self.decodeBase64(signature.sig) else { return .invalid(keyid: signature.keyid) }
            let candidates = keys.filter { signature.keyid.isEmpty || $0.keyID == signature.keyid }
            guard !candidates.isEmpty else { return .unknownKey(keyid: signature.keyid) }
            return candidates.contains { $0.verify(Array(bytes), of: message) }
                ? .valid(keyid: signature.keyid) : .invalid(keyid: signature.keyid)
        }
    }
}
