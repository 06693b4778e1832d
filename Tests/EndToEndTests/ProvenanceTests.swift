import Foundation
import Hermetic
import Provenance
import TestSupport
import Testing

/// Attestations end to end: determinism, signing, verification by us and by outside implementations,
/// tampering, and secrets never reaching them.
@Suite(.serialized) struct ProvenanceTests {
    static let dockerfile = """
        FROM base
        ARG VERSION=1
        COPY app.txt /app/app.txt
        LABEL version=$VERSION

        """

    struct Fixture {
        let scratch: TemporaryDirectory
        let context: String
        let baseArgument: String

        init() throws {
            scratch = try TemporaryDirectory(prefix: "provenance-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try ProvenanceTests.dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
            let digest = try BaseImages.writeGoldenBase(at: scratch.path + "/base")
            baseArgument = "base=oci-layout://\(scratch.path)/base@\(digest)"
        }

        func build(_ name: String, _ extra: [String] = [], environment: [String: String] = [:]) throws
            -> HermeticProcess.Outcome
        {
            try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "-t", "app:1", "--build-context", baseArgument,
                    "-o", "type=oci,dest=\(scratch.path)/\(name)", "--attest-file", "\(scratch.path)/\(name).jsonl",
                    "--iidfile", "\(scratch.path)/\(name).iid",
                ] + extra, environment: environment)
        }

        func hermetic(_ arguments: [String]) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(arguments)
        }
        func path(_ name: String) -> String { scratch.path + "/" + name }
    }

    @Test func definitionIsByteIdenticalAndRunRecordIsNot() throws {
        let fixture = try Fixture()
        try #require(try fixture.build("one").status == 0)
        try #require(try fixture.build("two").status == 0)
        let one = try String(contentsOfFile: fixture.path("one.jsonl"), encoding: .utf8).split(separator: "\n")
        let two = try String(contentsOfFile: fixture.path("two.jsonl"), encoding: .utf8).split(separator: "\n")
        try #require(one.count == 2 && two.count == 2)
        #expect(one[0] == two[0], "the build-definition statements differ")
        #expect(one[1] != two[1], "the run records should differ (invocation id)")
        #expect(
            try String(contentsOfFile: fixture.path("one.iid"), encoding: .utf8)
                == String(contentsOfFile: fixture.path("two.iid"), encoding: .utf8))
        let stored = try StoredAttestations.load(fixture.path("one"))
        let statement = try stored.statement()
        #expect(statement.predicateType == SLSAProvenance.predicateType)
        let external = statement.predicate["buildDefinition"]?["externalParameters"]
        #expect(external?["dockerfile"]?["path"]?.stringValue == "Dockerfile")
        #expect(
            statement.subject.first?.digest?["sha256"].map { "sha256:" + $0 }
                == stored.imageManifests?.first?.description)
        guard case .array(let dependencies)? = statement.predicate["buildDefinition"]?["resolvedDependencies"] else {
            Issue.record("no resolvedDependencies")
            return
        }
        #expect(dependencies.contains { $0["name"]?.stringValue == "base" && $0["digest"] != nil })
        #expect(try stored.runRecordStatement()?.predicate["metadata"]?["invocationId"] != nil)
    }

    @Test(arguments: ["ecdsa-p256", "ed25519"])
    func signedProvenanceVerifiesHereAndWithOutsideTools(algorithm: String) throws {
        let fixture = try Fixture()
        let key = fixture.path("signing.pem")
        try #require(try fixture.hermetic(["key", "generate", "--out", key, "--algorithm", algorithm]).status == 0)
        let built = try fixture.build("signed", ["--sign-key", key, "--build-arg", "VERSION=7"])
        try #require(built.status == 0, "\(built.standardError)")
        let verified = try fixture.hermetic([
            "verify", fixture.path("signed"), "--key", key + ".pub", "--require-pinned",
            "--require-no-network", "--expect-arg", "VERSION=7",
        ])
        #expect(verified.status == 0, "\(verified.standardError)")
        let wrongArg = try fixture.hermetic([
            "verify", fixture.path("signed"), "--key", key + ".pub", "--expect-arg", "VERSION=8",
        ])
        #expect(wrongArg.status != 0 && wrongArg.standardError.contains("VERSION"))
        let inspected = try fixture.hermetic(["inspect", fixture.path("signed"), "--key", key + ".pub"])
        #expect(inspected.status == 0 && inspected.standardOutput.contains("verified with key"))

        // Outside implementations: securesystemslib verifies the DSSE signature with our public key, and the
        // in-toto-attestation bindings load and validate the Statement and the SLSA v1 predicate.
        let script = """
            import json, sys, base64
            from cryptography.hazmat.primitives.serialization import load_pem_public_key
            from securesystemslib.signer import SSlibKey
            from securesystemslib.dsse import Envelope
            from google.protobuf import json_format
            from in_toto_attestation.v1.statement import Statement
            from in_toto_attestation.v1 import statement_pb2
            from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
            envelope_json = json.loads(open(sys.argv[1]).readline())
            envelope = Envelope.from_dict(envelope_json)
            keyid = list(envelope.signatures.keys())[0]
            key = SSlibKey.from_crypto(load_pem_public_key(open(sys.argv[2], 'rb').read()), keyid=keyid)
            envelope.verify([key], 1)
            statement = json.loads(base64.b64decode(envelope_json['payload']))
            Statement.copy_from_pb(json_format.ParseDict(statement, statement_pb2.Statement())).validate()
            provenance = json_format.ParseDict(statement['predicate'], provenance_pb2.Provenance())
            assert provenance.build_definition.build_type.startswith('https://'), provenance.build_definition.build_type
            print('interop ok', key.scheme)
            """
        try script.write(toFile: fixture.path("interop.py"), atomically: true, encoding: .utf8)
        let python = try ExternalTools.require("python3")
        let interop = try HermeticProcess.run(
            python, [fixture.path("interop.py"), fixture.path("signed.jsonl"), key + ".pub"],
            environment: ProcessInfo.processInfo.environment)
        #expect(
            interop.status == 0 && interop.standardOutput.contains("interop ok"),
            "outside verification failed (scripts/test installs securesystemslib and in-toto-attestation): \(interop.standardError)"
        )
    }

    @Test func tamperingIsDetected() throws {
        let fixture = try Fixture()
        let key = fixture.path("k.pem")
        try #require(try fixture.hermetic(["key", "generate", "--out", key]).status == 0)
        try #require(try fixture.build("img", ["--sign-key", key]).status == 0)
        let lines = try String(contentsOfFile: fixture.path("img.jsonl"), encoding: .utf8).split(separator: "\n").map(
            String.init)
        var envelope = try JSONDecoder().decode(DSSEEnvelope.self, from: Data(lines[0].utf8))

        var payload = try envelope.payloadBytes()
        payload[payload.count / 2] ^= 0x01
        var flippedPayload = envelope
        flippedPayload.payload = Data(payload).base64EncodedString()
        try (String(decoding: try CanonicalJSON.encode(flippedPayload), as: UTF8.self) + "\n").write(
            toFile: fixture.path("payload.jsonl"), atomically: true, encoding: .utf8)
        #expect(try fixture.hermetic(["verify", fixture.path("payload.jsonl"), "--key", key + ".pub"]).status != 0)

        var signature = Array(Data(base64Encoded: envelope.signatures[0].sig) ?? Data())
        signature[signature.count - 3] ^= 0x01
        envelope.signatures[0].sig = Data(signature).base64EncodedString()
        try (String(decoding: try CanonicalJSON.encode(envelope), as: UTF8.self) + "\n").write(
            toFile: fixture.path("signature.jsonl"), atomically: true, encoding: .utf8)
        let badSignature = try fixture.hermetic(["verify", fixture.path("signature.jsonl"), "--key", key + ".pub"])
        #expect(badSignature.status != 0 && badSignature.standardError.contains("does not verify"))

        // A changed image: the subject no longer names the layout's manifest.
        let other = try fixture.build("other", ["--sign-key", key, "--build-arg", "VERSION=2"])
        try #require(other.status == 0)
        let otherStored = try StoredAttestations.load(fixture.path("other"))
        var swapped = try StoredAttestations.load(fixture.path("img"))
        swapped.imageManifests = otherStored.imageManifests
        let failures = try AttestationVerifier(keys: [
            try VerificationKey(
                pem: Array(try Data(contentsOf: URL(fileURLWithPath: key + ".pub"))), source: "k")
        ]).failures(of: swapped)
        #expect(failures.contains { $0.contains("is not a subject") })
    }

    /// verify reads every blob of the image: a flipped byte in a layer, the config or an attestation manifest
    /// of the layout fails it, each with one line naming the blob.
    @Test func verifyChecksEveryBlobOfTheLayout() throws {
        let fixture = try Fixture()
        let key = fixture.path("k.pem")
        try #require(try fixture.hermetic(["key", "generate", "--out", key, "--algorithm", "ed25519"]).status == 0)
        try #require(try fixture.build("img", ["--sign-key", key]).status == 0)
        #expect(try fixture.hermetic(["verify", fixture.path("img"), "--key", key + ".pub"]).status == 0)
        let reader = try OCILayoutReader(path: fixture.path("img"))
        let image = try reader.resolveImage(reference: nil, digest: nil, platform: .host)
        let targets = [
            ("layer", image.manifest.layers.last?.digest), ("config", image.manifest.config.digest),
        ]
        for (what, digest) in targets {
            let copy = fixture.path("img-\(what)")
            try #require(HermeticProcess.run("/bin/cp", ["-a", fixture.path("img"), copy]).status == 0)
            let blob = try #require(digest).hex
            let handle = try #require(FileHandle(forUpdatingAtPath: "\(copy)/blobs/sha256/\(blob)"))
            try handle.seek(toOffset: 20)
            let byte = try #require(try handle.read(upToCount: 1)).first ?? 0
            try handle.seek(toOffset: 20)
            try handle.write(contentsOf: [byte ^ 0x01])
            try handle.close()
            let outcome = try fixture.hermetic(["verify", copy, "--key", key + ".pub"])
            #expect(outcome.status == 1, "tampered \(what) passed verify")
            #expect(outcome.standardError.contains(blob), "\(what): \(outcome.standardError)")
        }
    }

    /// DSSE's rules: a foreign signature beside a good one is skipped; URL-safe base64 and a missing keyid
    /// are read; a payloadType other than in-toto's fails.
    @Test func dsseEnvelopesAreReadAsTheSpecSays() throws {
        let fixture = try Fixture()
        let key = fixture.path("k.pem")
        let other = fixture.path("other.pem")
        try #require(try fixture.hermetic(["key", "generate", "--out", key]).status == 0)
        try #require(try fixture.hermetic(["key", "generate", "--out", other, "--algorithm", "ed25519"]).status == 0)
        try #require(try fixture.build("img", ["--sign-key", key]).status == 0)
        let line = try String(contentsOfFile: fixture.path("img.jsonl"), encoding: .utf8).split(separator: "\n")[0]
        let envelope = try JSONDecoder().decode(DSSEEnvelope.self, from: Data(line.utf8))
        func write(_ text: String, _ name: String) throws -> String {
            try (text + "\n").write(toFile: fixture.path(name), atomically: true, encoding: .utf8)
            return fixture.path(name)
        }
        func verify(_ path: String) throws -> HermeticProcess.Outcome {
            try fixture.hermetic(["verify", path, "--key", key + ".pub"])
        }

        var countersigned = envelope
        try countersigned.sign(
            with: try SigningKey(pem: Array(try Data(contentsOf: URL(fileURLWithPath: other))), source: other))
        countersigned.signatures.reverse()
        let both = try verify(
            try write(String(decoding: try CanonicalJSON.encode(countersigned), as: UTF8.self), "two"))
        #expect(both.status == 0, "\(both.standardError)")

        // URL-safe alphabet, no padding, no keyid: written by hand, as another producer might.
        func urlSafe(_ base64: String) -> String {
            String(
                base64.compactMap { character -> Character? in
                    character == "+" ? "-" : character == "/" ? "_" : character == "=" ? nil : character
                })
        }
        let unpadded = """
            {"payload":"\(urlSafe(envelope.payload))","payloadType":"\(envelope.payloadType)",\
            "signatures":[{"sig":"\(urlSafe(envelope.signatures[0].sig))"}]}
            """
        let relaxed = try verify(try write(unpadded, "relaxed"))
        #expect(relaxed.status == 0, "\(relaxed.standardError)")

        var retyped = envelope
        retyped.payloadType = "text/plain"
        let typed = try verify(try write(String(decoding: try CanonicalJSON.encode(retyped), as: UTF8.self), "typed"))
        #expect(typed.status == 1 && typed.standardError.contains("payloadType"), "\(typed.standardError)")
    }

    /// Several platforms: the subjects are exactly the platform manifests; the index (which holds the
    /// attestations) is not one.
    @Test func multiPlatformSubjectsAreThePlatformManifests() throws {
        let fixture = try Fixture()
        try "FROM scratch\nCOPY app.txt /app.txt\n".write(
            toFile: fixture.context + "/Dockerfile", atomically: true, encoding: .utf8)
        let built = try fixture.build("multi", ["--platform", "linux/amd64,linux/arm64"])
        try #require(built.status == 0, "\(built.standardError)")
        let stored = try StoredAttestations.load(fixture.path("multi"))
        let manifests = try #require(stored.imageManifests)
        #expect(manifests.count == 2)
        let subjects = try stored.statement().subject
        #expect(subjects.compactMap { $0.digest?["sha256"] }.sorted() == manifests.map(\.hex).sorted())
        #expect(subjects.map(\.name) == ["app:1@linux/amd64", "app:1@linux/arm64"])
        let imageDigest = try String(contentsOfFile: fixture.path("multi.iid"), encoding: .utf8)
        #expect(!subjects.contains { "sha256:" + ($0.digest?["sha256"] ?? "") == imageDigest })
    }

    @Test func secretValuesNeverReachOutputs() throws {
        let fixture = try Fixture()
        let canary = "canary-\(UInt64.random(in: 1...UInt64.max))"
        try canary.write(toFile: fixture.path("secret.txt"), atomically: true, encoding: .utf8)
        // A secret passed as a build arg too: the build must refuse, naming only the id.
        let leaked = try fixture.build(
            "leak", ["--secret", "id=tok,src=\(fixture.path("secret.txt"))", "--build-arg", "VERSION=\(canary)"])
        #expect(leaked.status != 0)
        #expect(leaked.standardError.contains("secret tok") && !leaked.standardError.contains(canary))
        #expect(!FileManager.default.fileExists(atPath: fixture.path("leak")))
        let clean = try fixture.build("clean", ["--secret", "id=tok,src=\(fixture.path("secret.txt"))"])
        try #require(clean.status == 0, "\(clean.standardError)")
        try SecretScan.assertAbsent(canary, under: fixture.scratch.path, excluding: [fixture.path("secret.txt")])
    }

    @Test func minimalModeHasNoPerStepDetails() throws {
        let fixture = try Fixture()
        try #require(try fixture.build("min", ["--provenance", "mode=min,version=v1"]).status == 0)
        let bad = try fixture.build("bad", ["--provenance", "mode=mid"])
        #expect(bad.status == 1 && bad.standardError.hasPrefix("error: --provenance \"mode=mid\""))
        let statement = try StoredAttestations.load(fixture.path("min")).statement()
        #expect(statement.predicate["runDetails"]?["byproducts"] == nil)
        try #require(try fixture.build("none", ["--provenance", "false"]).status == 0)
        #expect(throws: (any Error).self) { try StoredAttestations.load(fixture.path("none")) }
    }
}
