import Foundation
import Testing

@testable import Provenance

@Suite struct DSSETests {
    @Test func paeMatchesTheSpecExample() {
        // The DSSE protocol document's example: type "http://example.com/HelloWorld", body "hello world".
        let pae = DSSEEnvelope.pae(type: "http://example.com/HelloWorld", payload: Array("hello world".utf8))
        #expect(String(decoding: pae, as: UTF8.self) == "DSSEv1 29 http://example.com/HelloWorld 11 hello world")
    }

    @Test(arguments: KeyAlgorithm.allCases)
    func signAndVerify(algorithm: KeyAlgorithm) throws {
        let key = try SigningKey.generate(algorithm)
        var envelope = DSSEEnvelope(payload: Array(#"{"a":1}"#.utf8), payloadType: InTotoStatement.payloadType)
        try envelope.sign(with: key)
        let publicKey = try key.publicKey
        #expect(try envelope.verify(with: [publicKey]) == [.valid(keyid: key.keyID)])

        // A flipped payload byte, a flipped signature byte, or another key: each fails.
        var tamperedPayload = envelope
        tamperedPayload.payload = Data(Array(#"{"a":2}"#.utf8)).base64EncodedString()
        #expect(try tamperedPayload.verify(with: [publicKey]) == [.invalid(keyid: key.keyID)])
        var tamperedSignature = envelope
        var signature = Array(Data(base64Encoded: envelope.signatures[0].sig) ?? Data())
        signature[signature.count / 2] ^= 0x01
        tamperedSignature.signatures[0].sig = Data(signature).base64EncodedString()
        #expect(try tamperedSignature.verify(with: [publicKey]) == [.invalid(keyid: key.keyID)])
        let other = try SigningKey.generate(algorithm).publicKey
        #expect(try envelope.verify(with: [other]) == [.unknownKey(keyid: key.keyID)])
    }

    @Test(arguments: KeyAlgorithm.allCases)
    func keysRoundTripThroughPEM(algorithm: KeyAlgorithm) throws {
        let key = try SigningKey.generate(algorithm)
        let reloaded = try SigningKey(pem: try key.privateKeyPEM(), source: "test.pem")
        #expect(reloaded.keyID == key.keyID && reloaded.algorithm == algorithm)
        let publicPEM = try key.publicKey.publicKeyPEM()
        #expect(String(decoding: publicPEM, as: UTF8.self).hasPrefix("-----BEGIN PUBLIC KEY-----"))
        #expect(try VerificationKey(pem: publicPEM, source: "test.pub").keyID == key.keyID)
    }

    @Test func badKeysAreOneLineErrors() {
        #expect(throws: KeyError.self) { try SigningKey(pem: Array("not a key".utf8), source: "bad.pem") }
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"
        do {
            _ = try SigningKey(pem: Array(encrypted.utf8), source: "enc.pem")
            Issue.record("an encrypted key was accepted")
        } catch let error as KeyError {
            #expect(error.description.hasPrefix("enc.pem: "))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func statementEncodesWithTheSpecFieldNames() throws {
        let statement = InTotoStatement(
            subject: [ResourceDescriptor(name: "img", digest: ["sha256": String(repeating: "a", count: 64)])],
            predicateType: SLSAProvenance.predicateType, predicate: .object(["k": .string("v")]))
        let text = String(decoding: try CanonicalJSON.encode(statement), as: UTF8.self)
        #expect(
            text
                == #"{"_type":"https://in-toto.io/Statement/v1","predicate":{"k":"v"},"predicateType":"https://slsa.dev/provenance/v1","subject":[{"digest":{"sha256":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},"name":"img"}]}"#
        )
    }
}
