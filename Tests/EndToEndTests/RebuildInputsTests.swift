import Foundation
import Hermetic
import Provenance
import TestSupport
import Testing

/// `hermetic rebuild` of builds whose Dockerfile is not in the context (`-f -`, `-f ../docker/Dockerfile`),
/// `rebuild -f`, and a mismatch in an intermediate stage, end to end through the real binary.
@Suite(.serialized) struct RebuildInputsTests {
    struct Fixture {
        let scratch: TemporaryDirectory
        /// `WORKSPACE/app` (the context) beside `WORKSPACE/docker`.
        let context: String
        let base: String
        let baseArgument: String

        init() throws {
            scratch = try TemporaryDirectory(prefix: "rebuild-inputs-")
            context = scratch.path + "/ws/app"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(
                atPath: scratch.path + "/ws/docker", withIntermediateDirectories: true)
            try "data\n".write(toFile: context + "/data.txt", atomically: true, encoding: .utf8)
            base = scratch.path + "/base"
            let digest = try BaseImages.writeBusybox(at: base)
            baseArgument = "base=oci-layout://\(base)@\(digest)"
        }

        func path(_ name: String) -> String { scratch.path + "/" + name }

        func buildArguments(_ image: String) -> [String] {
            [
                "build", ".", "--progress", "quiet", "--source-date-epoch", "1700000000", "--build-context",
                baseArgument, "-o", "type=oci,dest=\(path(image))", "--state-dir", path("state"),
            ]
        }

        func rebuild(_ image: String, _ extra: [String] = []) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                ["rebuild", path(image), "--context", context, "--build-context", "base=oci-layout://\(base)"]
                    + extra)
        }

        func dockerfileParameter(_ image: String) throws -> JSONValue? {
            try StoredAttestations.load(path(image)).statement().predicate["buildDefinition"]?["externalParameters"]?[
                "dockerfile"]
        }
    }

    static let dockerfile = "FROM base\nCOPY data.txt /data.txt\nRUN cat /data.txt > /copy\n"

    /// `-f -`: the provenance carries the Dockerfile's bytes, and rebuild feeds them to the build again.
    @Test func aStdinBuildIsRebuiltFromTheRecordedBytes() throws {
        let fixture = try Fixture()
        let dockerfile = fixture.path("piped.Dockerfile")
        try Self.dockerfile.write(toFile: dockerfile, atomically: true, encoding: .utf8)
        // Standard input is the Dockerfile: run through a shell that redirects it.
        let built = try HermeticProcess.run(
            "/bin/sh",
            ["-c", "exec \"$0\" \"$@\" < \"$DOCKERFILE\"", HermeticProcess.binaryPath]
                + fixture.buildArguments("image") + ["-f", "-"],
            environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DOCKERFILE": dockerfile],
            currentDirectory: fixture.context)
        try #require(built.status == 0, "\(built.standardError)")

        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: dockerfile)))
        let recorded = try #require(try fixture.dockerfileParameter("image"))
        #expect(recorded["origin"]?.stringValue == "stdin")
        #expect(recorded["path"]?.stringValue == "-")
        #expect(recorded["digest"]?["sha256"]?.stringValue == Digest.sha256(of: bytes).hex)
        #expect(recorded["content"]?.stringValue == Data(bytes).base64EncodedString())

        let rebuilt = try fixture.rebuild("image")
        #expect(rebuilt.status == 0, "\(rebuilt.standardError)")
        let subject = try #require(
            try StoredAttestations.load(fixture.path("image")).statement().subject.first?.digest?["sha256"])
        #expect(rebuilt.standardOutput == "reproduced: sha256:\(subject)\n", "\(rebuilt.standardOutput)")

        // rebuild -f with the same bytes works too; with other bytes it names both digests.
        #expect(try fixture.rebuild("image", ["-f", dockerfile]).status == 0)
        let other = fixture.path("other.Dockerfile")
        try (Self.dockerfile + "LABEL x=y\n").write(toFile: other, atomically: true, encoding: .utf8)
        let wrong = try fixture.rebuild("image", ["-f", other])
        let otherDigest = Digest.sha256(of: Array(try Data(contentsOf: URL(fileURLWithPath: other))))
        #expect(wrong.status == 1)
        #expect(
            wrong.standardError
                == "error: rebuild: -f \(other) has \(otherDigest), but the provenance records the Dockerfile as \(Digest.sha256(of: bytes))\n",
            "\(wrong.standardError)")
    }

    /// `-f ../docker/Dockerfile` (common in CI): recorded relative to the context with its bytes; rebuild asks
    /// for the file, checks it against the recorded digest and then reproduces the image.
    @Test func aDockerfileOutsideTheContextIsRebuiltWithDashF() throws {
        let fixture = try Fixture()
        let dockerfile = fixture.path("ws/docker/Dockerfile")
        try Self.dockerfile.write(toFile: dockerfile, atomically: true, encoding: .utf8)
        let built = try HermeticProcess.hermetic(
            fixture.buildArguments("image") + ["-f", "../docker/Dockerfile"], currentDirectory: fixture.context)
        try #require(built.status == 0, "\(built.standardError)")
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: dockerfile)))
        let recorded = try #require(try fixture.dockerfileParameter("image"))
        #expect(recorded["origin"]?.stringValue == "outside-context")
        #expect(recorded["path"]?.stringValue == "../docker/Dockerfile")
        #expect(recorded["digest"]?["sha256"]?.stringValue == Digest.sha256(of: bytes).hex)
        #expect(recorded["content"]?.stringValue == Data(bytes).base64EncodedString())

        let inspected = try HermeticProcess.hermetic(["inspect", fixture.path("image")])
        #expect(
            inspected.standardOutput.contains(
                "dockerfile    ../docker/Dockerfile \(Digest.sha256(of: bytes)) (outside-context, its bytes carried)\n"),
            "\(inspected.standardOutput)")

        let missing = try fixture.rebuild("image")
        #expect(missing.status == 1)
        #expect(
            missing.standardError
                == "error: rebuild: the Dockerfile was read from ../docker/Dockerfile outside the context; pass -f PATH\n",
            "\(missing.standardError)")

        let rebuilt = try fixture.rebuild("image", ["-f", dockerfile])
        #expect(rebuilt.status == 0, "\(rebuilt.standardError)")
        #expect(rebuilt.standardOutput.hasPrefix("reproduced: sha256:"), "\(rebuilt.standardOutput)")

        let other = fixture.path("ws/app/Dockerfile")
        try "FROM base\n".write(toFile: other, atomically: true, encoding: .utf8)
        let wrong = try fixture.rebuild("image", ["-f", other])
        let otherDigest = Digest.sha256(of: Array(try Data(contentsOf: URL(fileURLWithPath: other))))
        #expect(wrong.status == 1)
        #expect(
            wrong.standardError
                == "error: rebuild: -f \(other) has \(otherDigest), but the provenance records the Dockerfile as \(Digest.sha256(of: bytes))\n",
            "\(wrong.standardError)")
    }

    /// A Dockerfile in the context is found there; changed since the build, it is refused with both digests.
    @Test func aChangedDockerfileInTheContextIsRefusedWithBothDigests() throws {
        let fixture = try Fixture()
        let dockerfile = fixture.context + "/build.Dockerfile"
        try Self.dockerfile.write(toFile: dockerfile, atomically: true, encoding: .utf8)
        let built = try HermeticProcess.hermetic(
            fixture.buildArguments("image") + ["-f", "build.Dockerfile"], currentDirectory: fixture.context)
        try #require(built.status == 0, "\(built.standardError)")
        let recorded = try #require(try fixture.dockerfileParameter("image"))
        #expect(recorded["origin"] == nil, "a file in the context has no origin")
        #expect(recorded["path"]?.stringValue == "build.Dockerfile")
        #expect(recorded["content"] == nil, "a Dockerfile in the context is not carried")
        let original = Digest.sha256(of: Array(try Data(contentsOf: URL(fileURLWithPath: dockerfile))))
        #expect(try fixture.rebuild("image").status == 0)

        try (Self.dockerfile + "# edited\n").write(toFile: dockerfile, atomically: true, encoding: .utf8)
        let edited = Digest.sha256(of: Array(try Data(contentsOf: URL(fileURLWithPath: dockerfile))))
        let refused = try fixture.rebuild("image")
        #expect(refused.status == 1)
        #expect(
            refused.standardError.contains("has \(edited), but the provenance records the Dockerfile as \(original)"),
            "\(refused.standardError)")
    }

    /// The carried bytes are base64 in the statement, where a plain search would miss a secret's value: they
    /// are searched decoded, so a `--secret` value written in a piped Dockerfile (here only in a comment)
    /// still fails the build, naming only the id, and nothing is written.
    @Test func aSecretValueInACarriedDockerfileFailsTheBuild() throws {
        let fixture = try Fixture()
        let canary = "canary-\(UInt64.random(in: 1...UInt64.max))"
        try canary.write(toFile: fixture.path("secret.txt"), atomically: true, encoding: .utf8)
        let dockerfile = fixture.path("piped.Dockerfile")
        try ("# \(canary)\n" + Self.dockerfile).write(toFile: dockerfile, atomically: true, encoding: .utf8)
        let built = try HermeticProcess.run(
            "/bin/sh",
            ["-c", "exec \"$0\" \"$@\" < \"$DOCKERFILE\"", HermeticProcess.binaryPath]
                + fixture.buildArguments("image") + [
                    "-f", "-", "--secret", "id=tok,src=\(fixture.path("secret.txt"))",
                ],
            environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DOCKERFILE": dockerfile],
            currentDirectory: fixture.context)
        #expect(built.status == 1)
        #expect(
            built.standardError
                == "error: the value of secret tok appears in the Dockerfile the provenance carries; refusing to write it\n",
            "\(built.standardError)")
        #expect(!FileManager.default.fileExists(atPath: fixture.path("image")))
    }

    /// A difference born in an intermediate stage: the report names that stage and its step, then the layer
    /// of the image it reaches, with that layer's files.
    @Test func anIntermediateStageMismatchNamesTheStageAndItsLine() throws {
        let fixture = try Fixture()
        try """
        FROM base AS builder
        COPY data.txt /data.txt
        RUN od -An -tx8 -N8 /dev/urandom > /stamp
        FROM base
        COPY --from=builder /stamp /app/stamp

        """.write(toFile: fixture.context + "/Dockerfile", atomically: true, encoding: .utf8)
        let built = try HermeticProcess.hermetic(fixture.buildArguments("image"), currentDirectory: fixture.context)
        try #require(built.status == 0, "\(built.standardError)")
        let rebuilt = try fixture.rebuild("image")
        #expect(rebuilt.status == 1)
        let lines = rebuilt.standardError.split(separator: "\n").map(String.init)
        #expect(
            lines.contains {
                $0.hasPrefix("the layer made by Dockerfile:3 (RUN ") && $0.contains(" in stage builder differs")
            },
            "\(rebuilt.standardError)")
        #expect(
            lines.contains(
                "  stage builder is not part of the image, so its layers are not kept: the build first differs at Dockerfile:3"
            ), "\(rebuilt.standardError)")
        #expect(
            lines.contains { $0.hasPrefix("it reaches the image through the layer made by Dockerfile:5 (COPY ") },
            "\(rebuilt.standardError)")
        #expect(lines.contains { $0.hasPrefix("  app/stamp: was file") }, "\(rebuilt.standardError)")
        #expect(!rebuilt.standardError.contains("not at hand"), "\(rebuilt.standardError)")
    }
}
