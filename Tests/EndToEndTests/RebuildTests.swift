import Foundation
import Hermetic
import Provenance
import TestSupport
import Testing

/// `hermetic rebuild`: from the provenance alone, in a different environment; a match exits 0, a mismatch
/// names the layer, the instruction and the files.
@Suite(.serialized) struct RebuildTests {
    func prepare(_ dockerfile: String, base: (TemporaryDirectory) throws -> Digest) throws
        -> (TemporaryDirectory, String, String)
    {
        let scratch = try TemporaryDirectory(prefix: "rebuild-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        try "data\n".write(toFile: context + "/data.txt", atomically: true, encoding: .utf8)
        let digest = try base(scratch)
        return (scratch, context, "base=oci-layout://\(scratch.path)/base@\(digest)")
    }

    @Test func aReproducibleBuildRebuildsBitForBitAndSignsAVSA() throws {
        let (scratch, context, baseArgument) = try prepare(
            "FROM base\nARG MODE=x\nCOPY data.txt /data.txt\nRUN cat /data.txt > /copy\n"
        ) {
            try BaseImages.writeBusybox(at: $0.path + "/base")
        }
        let built = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--build-arg", "MODE=y",
            "--source-date-epoch", "1700000000", "--build-context", baseArgument, "-t", "app:1",
            "-o", "type=oci,dest=\(scratch.path)/image", "--state-dir", scratch.path + "/state",
        ])
        try #require(built.status == 0, "\(built.standardError)")
        let key = scratch.path + "/key.pem"
        try #require(
            try HermeticProcess.hermetic(["key", "generate", "--out", key, "--algorithm", "ed25519"]).status == 0)
        let rebuilt = try HermeticProcess.hermetic([
            "rebuild", scratch.path + "/image", "--context", context,
            "--build-context", "base=oci-layout://\(scratch.path)/base", "--sign-key", key, "--vsa-file",
            scratch.path + "/vsa.json",
        ])
        #expect(rebuilt.status == 0, "\(rebuilt.standardError)")
        #expect(rebuilt.standardOutput.hasPrefix("reproduced: sha256:"))
        let envelope = try JSONDecoder().decode(
            DSSEEnvelope.self,
            from: Data(contentsOf: URL(fileURLWithPath: scratch.path + "/vsa.json")))
        let publicKey = try VerificationKey(
            pem: Array(try Data(contentsOf: URL(fileURLWithPath: key + ".pub"))), source: "pub")
        #expect(try envelope.verify(with: [publicKey]) == [.valid(keyid: publicKey.keyID)])
        let vsa = try JSONDecoder().decode(InTotoStatement.self, from: Data(try envelope.payloadBytes()))
        #expect(vsa.predicateType == VerificationSummary.predicateType)
        #expect(vsa.predicate["verificationResult"]?.stringValue == "PASSED")
        #expect(vsa.predicate["verifiedLevels"] == .array([.string("SLSA_BUILD_LEVEL_1")]))
        let stored = try StoredAttestations.load(scratch.path + "/image")
        let subject = try #require(try stored.statement().subject.first?.digest?["sha256"])
        #expect(vsa.predicate["resourceUri"]?.stringValue == "pkg:oci/app@sha256%3A\(subject)?tag=1")
        let provenanceDigest = Digest.sha256(of: try stored.definition.payloadBytes()).hex
        #expect(
            vsa.predicate["inputAttestations"]?.arrayValue?.first?["digest"]?["sha256"]?.stringValue == provenanceDigest
        )

        // Every ResourceDescriptor of the provenance has a uri, digest or content (in-toto's minimum); a
        // run-step's digest is that of its own record.
        let predicate = try stored.statement().predicate
        let descriptors =
            (predicate["buildDefinition"]?["resolvedDependencies"]?.arrayValue ?? [])
            + (predicate["runDetails"]?["byproducts"]?.arrayValue ?? [])
        #expect(descriptors.count >= 4)
        for descriptor in descriptors {
            #expect(descriptor["uri"] != nil || descriptor["digest"] != nil || descriptor["content"] != nil)
        }
        let step = try #require(descriptors.first { $0["name"]?.stringValue == "run-step" })
        let annotations = try #require(step["annotations"])
        #expect(
            step["digest"]?["sha256"]?.stringValue == Digest.sha256(of: try CanonicalJSON.encode(annotations)).hex)

        // --key: the provenance must verify first; this one is unsigned.
        let unverified = try HermeticProcess.hermetic([
            "rebuild", scratch.path + "/image", "--context", context,
            "--build-context", "base=oci-layout://\(scratch.path)/base", "--key", key + ".pub",
        ])
        #expect(
            unverified.status == 1 && unverified.standardError.contains("not signed"), "\(unverified.standardError)")
    }

    @Test func aNonReproducibleStepIsNamedWithItsFile() throws {
        let (scratch, context, baseArgument) = try prepare(
            "FROM base\nCOPY data.txt /data.txt\nRUN od -An -tx8 -N8 /dev/urandom > /stamp\n"
        ) {
            try BaseImages.writeBusybox(at: $0.path + "/base")
        }
        let built = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--build-context", baseArgument,
            "-o", "type=oci,dest=\(scratch.path)/image", "--state-dir", scratch.path + "/state",
        ])
        try #require(built.status == 0, "\(built.standardError)")
        let rebuilt = try HermeticProcess.hermetic([
            "rebuild", scratch.path + "/image", "--context", context,
            "--build-context", "base=oci-layout://\(scratch.path)/base",
        ])
        #expect(rebuilt.status == 1)
        #expect(rebuilt.standardError.contains("the layer made by Dockerfile:3"), "\(rebuilt.standardError)")
        #expect(rebuilt.standardError.contains("Dockerfile:3"), "\(rebuilt.standardError)")
        #expect(rebuilt.standardError.contains("stamp: was file"), "\(rebuilt.standardError)")
    }

    @Test func missingInputsAreNamed() throws {
        let (scratch, context, baseArgument) = try prepare("FROM base\nCOPY data.txt /d\n") {
            try BaseImages.writeGoldenBase(at: $0.path + "/base")
        }
        try #require(
            try HermeticProcess.hermetic([
                "build", context, "--progress", "quiet", "--build-context", baseArgument,
                "-o", "type=oci,dest=\(scratch.path)/image",
            ]).status == 0)
        let rebuilt = try HermeticProcess.hermetic(["rebuild", scratch.path + "/image", "--context", context])
        #expect(rebuilt.status == 1)
        #expect(rebuilt.standardError.contains("--build-context base="), "\(rebuilt.standardError)")
    }
}
