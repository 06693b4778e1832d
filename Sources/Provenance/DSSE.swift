import Foundation

/// A DSSE envelope (https://github.com/secure-systems-lab/dsse, protocol v1): the payload, its type, and
/// signatures over PAE(type, payload). Base64 is standard, with padding.
public struct DSSEEnvelope: Codable, Sendable, Hashable {
    public var payload: String
    public var payloadType: String
    public var signatures: [Signature]

    public struct Signature: Codable, Sendable, Hashable {
        public var keyid: String
        public var sig: String
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
        guard let data = Data(base64Encoded: payload) else {
            throw EnvelopeError(description: "the envelope's payload is not valid base64")
        }
        return Array(data)
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
            guard let bytes = Data(base64Encoded: signature.sig) else { return .invalid(keyid: signature.keyid) }
            let candidates = keys.filter { signature.keyid.isEmpty || $0.keyID == signature.keyid }
            guard !candidates.isEmpty else { return .unknownKey(keyid: signature.keyid) }
            return candidates.contains { $0.verify(Array(bytes), of: message) }
                ? .valid(keyid: signature.keyid) : .invalid(keyid: signature.keyid)
        }
    }
}
