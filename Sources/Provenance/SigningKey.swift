internal import COpenSSLCrypto
import Foundation

/// Every error this module reports to a person: one line, naming the file or key at fault.
public protocol ProvenanceError: Error, CustomStringConvertible {}

public struct KeyError: ProvenanceError {
    public var what: String
    public var reason: String
    public var description: String { "\(what): \(reason)" }
}

public enum KeyAlgorithm: String, Sendable, CaseIterable {
    case ecdsaP256 = "ecdsa-p256"
    case ed25519
}

/// An `EVP_PKEY` owned by Swift; freed on deinit. Not Sendable: one thread at a time.
final class OwnedKey {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { EVP_PKEY_free(pointer) }

    var algorithm: KeyAlgorithm? {
        switch EVP_PKEY_get_base_id(pointer) {
        case NID_X9_62_id_ecPublicKey:
            return EVP_PKEY_get_bits(pointer) == 256 ? .ecdsaP256 : nil
        case NID_ED25519: return .ed25519
        default: return nil
        }
    }

    /// DER SubjectPublicKeyInfo.
    func publicKeyDER() throws -> [UInt8] {
        let length = i2d_PUBKEY(pointer, nil)
        guard length > 0 else { throw KeyError(what: "public key", reason: "cannot be encoded") }
        var bytes = [UInt8](repeating: 0, count: Int(length))
        try bytes.withUnsafeMutableBufferPointer { buffer in
            var cursor: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
            guard i2d_PUBKEY(pointer, &cursor) == length else {
                throw KeyError(what: "public key", reason: "cannot be encoded")
            }
        }
        return bytes
    }
}

/// Reads everything a memory BIO holds.
private func drain(_ bio: OpaquePointer) -> [UInt8] {
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = BIO_read(bio, &buffer, Int32(buffer.count))
        if count <= 0 { break }
        result.append(contentsOf: buffer[0..<Int(count)])
    }
    return result
}

/// Refuses any passphrase prompt: encrypted keys are an error, never an interactive question.
private let noPassphrase:
    @convention(c) (UnsafeMutablePointer<CChar>?, Int32, Int32, UnsafeMutableRawPointer?) -> Int32 = {
        _, _, _, _ in -1
    }

/// The key id: lowercase hex sha256 of the DER SubjectPublicKeyInfo.
func keyID(of der: [UInt8]) -> String {
    var digest = [UInt8](repeating: 0, count: 32)
    var length: UInt32 = 0
    _ = EVP_Digest(der, der.count, &digest, &length, EVP_sha256(), nil)
    return digest.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
        .joined()
}

/// A private key (ECDSA P-256 or Ed25519) that signs DSSE envelopes.
public final class SigningKey {
    let key: OwnedKey
    public let algorithm: KeyAlgorithm
    public let keyID: String

    init(key: OwnedKey, source: String) throws {
        guard let algorithm = key.algorithm else {
            throw KeyError(what: source, reason: "unsupported key type (expected ECDSA P-256 or Ed25519)")
        }
        self.key = key
        self.algorithm = algorithm
        self.keyID = Provenance.keyID(of: try key.publicKeyDER())
    }

    public static func generate(_ algorithm: KeyAlgorithm) throws -> SigningKey {
        let id = algorithm == .ed25519 ? NID_ED25519 : NID_X9_62_id_ecPublicKey
        guard let context = EVP_PKEY_CTX_new_id(id, nil) else {
            throw KeyError(what: "key generation", reason: "EVP_PKEY_CTX_new_id failed")
        }
        defer { EVP_PKEY_CTX_free(context) }
        guard EVP_PKEY_keygen_init(context) == 1 else {
            throw KeyError(what: "key generation", reason: "keygen_init failed")
        }
        if algorithm == .ecdsaP256 {
            guard EVP_PKEY_CTX_set_ec_paramgen_curve_nid(context, NID_X9_62_prime256v1) == 1 else {
                throw KeyError(what: "key generation", reason: "cannot select P-256")
            }
        }
        var generated: OpaquePointer?
        guard EVP_PKEY_keygen(context, &generated) == 1, let generated else {
            throw KeyError(what: "key generation", reason: "EVP_PKEY_keygen failed")
        }
        return try SigningKey(key: OwnedKey(generated), source: "generated key")
    }

    /// A PKCS#8 PEM private key; `source` names it in errors.
    public convenience init(pem: [UInt8], source: String) throws {
        guard pem.count < 1 << 20,
            let bio = pem.withUnsafeBytes({ BIO_new_mem_buf($0.baseAddress, Int32($0.count)) })
        else {
            throw KeyError(what: source, reason: "not a PEM private key")
        }
        defer { BIO_free(bio) }
        guard let pointer = PEM_read_bio_PrivateKey(bio, nil, noPassphrase, nil) else {
            ERR_clear_error()
            let text = String(decoding: pem, as: UTF8.self)
            let reason =
                text.contains("ENCRYPTED") ? "encrypted private keys are not supported" : "not a PEM private key"
            throw KeyError(what: source, reason: reason)
        }
        try self.init(key: OwnedKey(pointer), source: source)
    }

    public func privateKeyPEM() throws -> [UInt8] {
        guard let bio = BIO_new(BIO_s_mem()) else { throw KeyError(what: "private key", reason: "BIO_new failed") }
        defer { BIO_free(bio) }
        guard PEM_write_bio_PrivateKey(bio, key.pointer, nil, nil, 0, nil, nil) == 1 else {
            throw KeyError(what: "private key", reason: "cannot be written as PEM")
        }
        return drain(bio)
    }

    public var publicKey: VerificationKey {
        get throws { try VerificationKey(der: try key.publicKeyDER(), source: "public key") }
    }

    /// Signs `message` (ECDSA: SHA-256, DER-encoded signature; Ed25519: pure).
    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        guard let context = EVP_MD_CTX_new() else { throw KeyError(what: keyID, reason: "EVP_MD_CTX_new failed") }
        defer { EVP_MD_CTX_free(context) }
        let digest = algorithm == .ecdsaP256 ? EVP_sha256() : nil
        guard EVP_DigestSignInit(context, nil, digest, nil, key.pointer) == 1 else {
            throw KeyError(what: keyID, reason: "cannot start signing")
        }
        var length = 0
        guard EVP_DigestSign(context, nil, &length, message, message.count) == 1 else {
            throw KeyError(what: keyID, reason: "cannot size the signature")
        }
        var signature = [UInt8](repeating: 0, count: length)
        guard EVP_DigestSign(context, &signature, &length, message, message.count) == 1 else {
            throw KeyError(what: keyID, reason: "signing failed")
        }
        return Array(signature[0..<length])
    }
}

/// A public key that verifies DSSE signatures.
public final class VerificationKey {
    let key: OwnedKey
    public let algorithm: KeyAlgorithm
    public let keyID: String

    init(der: [UInt8], source: String) throws {
        var cursor: UnsafePointer<UInt8>? = nil
        let pointer: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            cursor = buffer.baseAddress
            return d2i_PUBKEY(nil, &cursor, buffer.count)
        }
        guard let pointer else { throw KeyError(what: source, reason: "not a public key") }
        let owned = OwnedKey(pointer)
        guard let algorithm = owned.algorithm else {
            throw KeyError(what: source, reason: "unsupported key type (expected ECDSA P-256 or Ed25519)")
        }
        self.key = owned
        self.algorithm = algorithm
        self.keyID = Provenance.keyID(of: der)
    }

    /// A SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).
    public convenience init(pem: [UInt8], source: String) throws {
        guard pem.count < 1 << 20,
            let bio = pem.withUnsafeBytes({ BIO_new_mem_buf($0.baseAddress, Int32($0.count)) })
        else {
            throw KeyError(what: source, reason: "not a PEM public key")
        }
        defer { BIO_free(bio) }
        guard let pointer = PEM_read_bio_PUBKEY(bio, nil, noPassphrase, nil) else {
            ERR_clear_error()
            throw KeyError(what: source, reason: "not a PEM public key (BEGIN PUBLIC KEY)")
        }
        let owned = OwnedKey(pointer)
        try self.init(der: try owned.publicKeyDER(), source: source)
    }

    public func publicKeyPEM() throws -> [UInt8] {
        guard let bio = BIO_new(BIO_s_mem()) else { throw KeyError(what: "public key", reason: "BIO_new failed") }
        defer { BIO_free(bio) }
        guard PEM_write_bio_PUBKEY(bio, key.pointer) == 1 else {
            throw KeyError(what: "public key", reason: "cannot be written as PEM")
        }
        return drain(bio)
    }

    public func verify(_ signature: [UInt8], of message: [UInt8]) -> Bool {
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        let digest = algorithm == .ecdsaP256 ? EVP_sha256() : nil
        guard EVP_DigestVerifyInit(context, nil, digest, nil, key.pointer) == 1 else { return false }
        let result = EVP_DigestVerify(context, signature, signature.count, message, message.count)
        ERR_clear_error()
        return result == 1
    }
}
