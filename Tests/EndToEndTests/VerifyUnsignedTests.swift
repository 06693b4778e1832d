import Foundation
import Hermetic
import Provenance
import TestSupport
import Testing

/// `hermetic verify --allow-unsigned`: an unsigned provenance is checked (subject, statement, blobs, policy)
/// and the output says plainly that no signature was checked; without it, verify asks for a key.
@Suite(.serialized) struct VerifyUnsignedTests {
    struct Fixture {
        let scratch: TemporaryDirectory
        let context: String
        let baseArgument: String

        init() throws {
            scratch = try TemporaryDirectory(prefix: "verify-unsigned-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try "FROM base\nCOPY app.txt /app.txt\n".write(
                toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
            let digest = try BaseImages.writeGoldenBase(at: scratch.path + "/base")
            baseArgument = "base=oci-layout://\(scratch.path)/base@\(digest)"
        }

        func path(_ name: String) -> String { scratch.path + "/" + name }

        func build(_ name: String, _ extra: [String] = []) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "--build-context", baseArgument,
                    "-o", "type=oci,dest=\(path(name))",
                ] + extra)
        }

        func verify(_ arguments: [String]) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(["verify"] + arguments)
        }
    }

    @Test func anUnsignedImageIsCheckedAndSaysNoSignatureWasChecked() throws {
        let fixture = try Fixture()
        try #require(try fixture.build("img").status == 0)
        let image = fixture.path("img")

        let noKey = try fixture.verify([image])
        #expect(noKey.status == 1)
        #expect(
            noKey.standardError
                == "error: verify: no --key given: pass --key PUB to check the signature, or --allow-unsigned to check an unsigned provenance without one\n",
            "\(noKey.standardError)")

        let allowed = try fixture.verify([image, "--allow-unsigned", "--require-pinned"])
        #expect(allowed.status == 0, "\(allowed.standardError)")
        #expect(
            allowed.standardOutput
                == "verified without a signature: \(image): no signature was checked (the provenance is not signed)\n",
            "\(allowed.standardOutput)")

        // A key does not make an unsigned provenance pass, unless --allow-unsigned says so.
        let key = fixture.path("k.pem")
        try #require(try HermeticProcess.hermetic(["key", "generate", "--out", key]).status == 0)
        let keyed = try fixture.verify([image, "--key", key + ".pub"])
        #expect(keyed.status == 1)
        #expect(
            keyed.standardError
                == "error: the provenance is not signed (--allow-unsigned checks the rest without a signature, and says so)\n",
            "\(keyed.standardError)")
        let keyedAllowed = try fixture.verify([image, "--key", key + ".pub", "--allow-unsigned"])
        #expect(keyedAllowed.status == 0, "\(keyedAllowed.standardError)")
        #expect(keyedAllowed.standardOutput.contains("no signature was checked"), "\(keyedAllowed.standardOutput)")

        // The policy still applies.
        let policy = try fixture.verify([image, "--allow-unsigned", "--expect-arg", "MODE=x"])
        #expect(policy.status == 1 && policy.standardError.contains("build arg MODE"), "\(policy.standardError)")

        // A signed image with --allow-unsigned and no key passes on its other checks, but says that its
        // signature was not checked; with the key it is checked.
        try #require(try fixture.build("signed", ["--sign-key", key]).status == 0)
        let publicKey = try VerificationKey(
            pem: Array(try Data(contentsOf: URL(fileURLWithPath: key + ".pub"))), source: "pub")
        let signedUnchecked = try fixture.verify([fixture.path("signed"), "--allow-unsigned"])
        #expect(signedUnchecked.status == 0, "\(signedUnchecked.standardError)")
        #expect(
            signedUnchecked.standardOutput.contains(
                "no signature was checked (no --key was given for its signature by key \(publicKey.keyID))"),
            "\(signedUnchecked.standardOutput)")
        let signedChecked = try fixture.verify([fixture.path("signed"), "--allow-unsigned", "--key", key + ".pub"])
        #expect(signedChecked.standardOutput == "verified: \(fixture.path("signed"))\n")
    }

    /// The layout rewritten consistently (blob digests, manifests, index, index.json) around a provenance
    /// whose subject names another manifest: no signature protects it, but the subject check catches it.
    @Test func aTamperedSubjectFailsWithAllowUnsigned() throws {
        let fixture = try Fixture()
        try #require(try fixture.build("img").status == 0)
        let tampered = fixture.path("tampered")
        try #require(try HermeticProcess.run("/bin/cp", ["-a", fixture.path("img"), tampered]).status == 0)
        let forged = Digest.sha256(of: Array("another image".utf8))
        try ProvenanceRewriter.rewrite(layout: tampered) { statement in
            var subjects = statement["subject"] as? [[String: Any]] ?? []
            subjects[0]["digest"] = ["sha256": forged.hex]
            statement["subject"] = subjects
        }
        let manifest = try #require(try StoredAttestations.load(fixture.path("img")).imageManifests?.first)
        let outcome = try fixture.verify([tampered, "--allow-unsigned"])
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError.contains("error: the image manifest \(manifest) is not a subject of the provenance"),
            "\(outcome.standardError)")

        // The same rewrite that changes nothing passes: the failure above is the subject's alone.
        let untouched = fixture.path("untouched")
        try #require(try HermeticProcess.run("/bin/cp", ["-a", fixture.path("img"), untouched]).status == 0)
        try ProvenanceRewriter.rewrite(layout: untouched) { _ in }
        let clean = try fixture.verify([untouched, "--allow-unsigned"])
        #expect(clean.status == 0, "\(clean.standardError)")
    }

    /// Carried Dockerfile bytes that do not match the recorded digest fail verify (and rebuild would not use
    /// them).
    @Test func carriedDockerfileBytesMustMatchTheirDigest() throws {
        let fixture = try Fixture()
        let outside = fixture.path("outside.Dockerfile")
        try "FROM base\nCOPY app.txt /app.txt\n".write(toFile: outside, atomically: true, encoding: .utf8)
        try #require(try fixture.build("img", ["-f", outside]).status == 0)
        try ProvenanceRewriter.rewrite(layout: fixture.path("img")) { statement in
            guard var predicate = statement["predicate"] as? [String: Any],
                var definition = predicate["buildDefinition"] as? [String: Any],
                var external = definition["externalParameters"] as? [String: Any],
                var dockerfile = external["dockerfile"] as? [String: Any]
            else { return }
            dockerfile["content"] = Data("FROM base\nRUN evil\n".utf8).base64EncodedString()
            external["dockerfile"] = dockerfile
            definition["externalParameters"] = external
            predicate["buildDefinition"] = definition
            statement["predicate"] = predicate
        }
        let forgedDigest = Digest.sha256(of: Array("FROM base\nRUN evil\n".utf8))
        let outcome = try fixture.verify([fixture.path("img"), "--allow-unsigned"])
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError.contains(
                "the provenance's externalParameters.dockerfile: content has \(forgedDigest), but the recorded digest is"
            ),
            "\(outcome.standardError)")
    }
}

/// Rewrites the (unsigned) provenance statement of a layout written by hermetic build, then every blob above
/// it (the referrer and index.json; or BuildKit's attestation manifest, the image index and index.json), so
/// that the layout is consistent again.
enum ProvenanceRewriter {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func rewrite(layout: String, _ change: (inout [String: Any]) -> Void) throws {
        func blobPath(_ digest: String) -> String { layout + "/blobs/sha256/" + digest.dropFirst("sha256:".count) }
        func readObject(_ path: String) throws -> [String: Any] {
            guard
                let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
                    as? [String: Any]
            else { throw Failure(description: "\(path) is not a JSON object") }
            return object
        }
        /// Writes a blob and points `descriptor` at it.
        func writeBlob(_ object: [String: Any], into descriptor: inout [String: Any]) throws {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            let digest = Digest.sha256(of: Array(data))
            try data.write(to: URL(fileURLWithPath: blobPath(digest.description)))
            descriptor["digest"] = digest.description
            descriptor["size"] = data.count
        }
        /// Rewrites the statement layer of the attestation manifest `descriptor` points at, then the manifest.
        func rewriteAttestation(_ descriptor: inout [String: Any]) throws {
            var attestation = try readObject(blobPath(descriptor["digest"] as? String ?? ""))
            var layers = attestation["layers"] as? [[String: Any]] ?? []
            guard
                let layerNumber = layers.firstIndex(where: {
                    ($0["mediaType"] as? String) == "application/vnd.in-toto+json"
                }),
                let statementDigest = layers[layerNumber]["digest"] as? String
            else { throw Failure(description: "no in-toto layer") }
            var statement = try readObject(blobPath(statementDigest))
            change(&statement)
            try writeBlob(statement, into: &layers[layerNumber])
            attestation["layers"] = layers
            try writeBlob(attestation, into: &descriptor)
        }
        var layoutIndex = try readObject(layout + "/index.json")
        var tops = layoutIndex["manifests"] as? [[String: Any]] ?? []
        if let referrerNumber = tops.firstIndex(where: {
            ($0["annotations"] as? [String: String])?["in-toto.io/predicate-type"] == "https://slsa.dev/provenance/v1"
        }) {
            // A referrer (the default form): the image is untouched, only index.json lists the new manifest.
            try rewriteAttestation(&tops[referrerNumber])
        } else {
            guard let topDigest = tops.first?["digest"] as? String else { throw Failure(description: "no top") }
            var imageIndex = try readObject(blobPath(topDigest))
            var entries = imageIndex["manifests"] as? [[String: Any]] ?? []
            guard
                let entryNumber = entries.firstIndex(where: {
                    ($0["annotations"] as? [String: String])?["vnd.docker.reference.type"] == "attestation-manifest"
                })
            else { throw Failure(description: "no attestation manifest") }
            try rewriteAttestation(&entries[entryNumber])
            imageIndex["manifests"] = entries
            try writeBlob(imageIndex, into: &tops[0])
        }
        layoutIndex["manifests"] = tops
        try JSONSerialization.data(withJSONObject: layoutIndex, options: [.sortedKeys]).write(
            to: URL(fileURLWithPath: layout + "/index.json"))
    }
}
