import Foundation
import Hermetic
import TestSupport
import Testing

/// The build cache, judged by an oracle that cannot lie: the RUN step writes random bytes, so its file
/// changes exactly when the step ran again. Each case changes one input after a warm build and says
/// whether the step must run again (SPEC §10).
@Suite struct BuildCacheTests {
    static let dockerfile = """
        FROM base AS src
        COPY source.txt /source.txt
        FROM base
        ARG USED
        COPY --from=src /source.txt /from-stage.txt
        COPY input/ /input/
        RUN --mount=type=secret,id=tok,required=false echo "$USED" > /used && head -c 32 /dev/urandom > /random

        """

    final class Fixture {
        let scratch: TemporaryDirectory
        let context: String
        let state: String
        var base: Digest
        var count = 0

        init() throws {
            scratch = try TemporaryDirectory(prefix: "cache-")
            context = scratch.path + "/ctx"
            state = scratch.path + "/state"
            try FileManager.default.createDirectory(atPath: context + "/input", withIntermediateDirectories: true)
            try BuildCacheTests.dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "source\n".write(toFile: context + "/source.txt", atomically: true, encoding: .utf8)
            try "a\n".write(toFile: context + "/input/a.txt", atomically: true, encoding: .utf8)
            try "ignored\n".write(toFile: context + "/input/ignored.txt", atomically: true, encoding: .utf8)
            try "input/ignored.txt\n".write(toFile: context + "/.dockerignore", atomically: true, encoding: .utf8)
            try "one\n".write(toFile: scratch.path + "/secret", atomically: true, encoding: .utf8)
            base = try BaseImages.writeBusybox(at: scratch.path + "/base")
        }

        /// Builds with the shared state directory; returns the image digest, the bytes of /random and the
        /// progress text.
        func build(_ extra: [String] = [], buildArgs: [String] = ["USED=1"]) throws -> (
            digest: String, random: Data, progress: String
        ) {
            count += 1
            let out = scratch.path + "/out\(count)"
            var arguments = [
                "build", context, "--state-dir", state, "--build-context",
                "base=oci-layout://\(scratch.path)/base@\(base)", "-o", "type=local,dest=\(out)",
                "--iidfile", out + ".iid", "--secret", "id=tok,src=\(scratch.path)/secret",
            ]
            for arg in buildArgs { arguments += ["--build-arg", arg] }
            let outcome = try HermeticProcess.hermetic(arguments + extra)
            try #require(outcome.status == 0, "build \(count) failed: \(outcome.standardError)")
            return (
                try String(contentsOfFile: out + ".iid", encoding: .utf8),
                try Data(contentsOf: URL(fileURLWithPath: out + "/random")), outcome.standardError
            )
        }

        func write(_ text: String, to relative: String) throws {
            try text.write(toFile: context + "/" + relative, atomically: true, encoding: .utf8)
        }
    }

    enum Expectation { case runsAgain, cached }

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var expectation: Expectation
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "a context file's bytes", expectation: .runsAgain),
        Case(name: "a context file's mode", expectation: .runsAgain),
        Case(name: "a context file's owner", expectation: .runsAgain),
        Case(name: "a build arg the step uses", expectation: .runsAgain),
        Case(name: "the base image", expectation: .runsAgain),
        Case(name: "a .dockerignore change that COPY sees", expectation: .runsAgain),
        Case(name: "the COPY --from source", expectation: .runsAgain),
        Case(name: "--no-cache", expectation: .runsAgain),
        Case(name: "--no-cache-filter of the stage", expectation: .runsAgain),
        Case(name: "only mtimes", expectation: .cached),
        Case(name: "a build arg the step cannot see", expectation: .cached),
        Case(name: "a file .dockerignore excludes", expectation: .cached),
        Case(name: "a secret's value", expectation: .cached),
        Case(name: "--no-cache-filter of another stage", expectation: .cached),
        Case(name: "nothing", expectation: .cached),
    ]

    @Test(arguments: cases)
    func theStepRunsAgainExactlyWhenAnInputChanged(_ change: Case) throws {
        let fixture = try Fixture()
        let first = try fixture.build()
        var extra: [String] = []
        var buildArgs = ["USED=1"]
        switch change.name {
        case "a context file's bytes": try fixture.write("A\n", to: "input/a.txt")
        case "a context file's mode": chmod(fixture.context + "/input/a.txt", 0o600)
        case "a context file's owner": chown(fixture.context + "/input/a.txt", 1234, 1234)
        case "a build arg the step uses": buildArgs = ["USED=2"]
        case "the base image":
            var entries = try BaseImages.busyboxEntries()
            entries.append(LayerEntry(path: "new", kind: .regular(.bytes([1])), mode: 0o644))
            fixture.base = try BaseImages.writeLayout(at: fixture.scratch.path + "/base2", entries: entries)
            try FileManager.default.removeItem(atPath: fixture.scratch.path + "/base")
            try FileManager.default.moveItem(
                atPath: fixture.scratch.path + "/base2", toPath: fixture.scratch.path + "/base")
        case "a .dockerignore change that COPY sees": try fixture.write("\n", to: ".dockerignore")
        case "the COPY --from source": try fixture.write("changed\n", to: "source.txt")
        case "--no-cache": extra = ["--no-cache"]
        case "--no-cache-filter of the stage": extra = ["--no-cache-filter", "stage-1"]
        case "only mtimes":
            for file in ["input/a.txt", "source.txt", "Dockerfile", "input"] {
                var times = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
                utimensat(AT_FDCWD, fixture.context + "/" + file, &times, 0)
            }
        case "a build arg the step cannot see": buildArgs = ["USED=1", "UNDECLARED=x"]
        case "a file .dockerignore excludes": try fixture.write("changed\n", to: "input/ignored.txt")
        case "a secret's value":
            try "two\n".write(toFile: fixture.scratch.path + "/secret", atomically: true, encoding: .utf8)
        case "--no-cache-filter of another stage": extra = ["--no-cache-filter", "src"]
        default: break
        }
        let second = try fixture.build(extra, buildArgs: buildArgs)
        switch change.expectation {
        case .runsAgain:
            #expect(second.random != first.random, "\(change.name): the step did not run again")
            #expect(second.digest != first.digest)
        case .cached:
            #expect(second.random == first.random, "\(change.name): the step ran again")
            #expect(second.progress.contains("CACHED"))
        }
        if change.name == "nothing" || change.name == "a secret's value" {
            #expect(second.digest == first.digest)
        }
    }

    /// A RUN that binds the build context runs again when what it binds changed (the key takes the context's
    /// digest), and hits when nothing did.
    @Test func aChangedBindSourceRunsTheStepAgain() throws {
        let scratch = try TemporaryDirectory(prefix: "cache-bind-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context + "/data", withIntermediateDirectories: true)
        try """
        FROM base
        RUN --mount=type=bind,source=data,target=/d cat /d/x > /seen && head -c 32 /dev/urandom > /random

        """.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        try "one\n".write(toFile: context + "/data/x", atomically: true, encoding: .utf8)
        let base = try BaseImages.writeBusybox(at: scratch.path + "/base")
        var count = 0
        func build() throws -> Data {
            count += 1
            let out = scratch.path + "/out\(count)"
            let outcome = try HermeticProcess.hermetic([
                "build", context, "--state-dir", scratch.path + "/state", "--build-context",
                "base=oci-layout://\(scratch.path)/base@\(base)", "-o", "type=local,dest=\(out)",
            ])
            try #require(outcome.status == 0, "\(outcome.standardError)")
            return try Data(contentsOf: URL(fileURLWithPath: out + "/random"))
        }
        let first = try build()
        #expect(try build() == first)
        try "two\n".write(toFile: context + "/data/x", atomically: true, encoding: .utf8)
        #expect(try build() != first)
    }

    /// A cached layer was scanned for the secrets of the build that stored it; a later build's secret value
    /// found in it fails that build as running the step would have.
    @Test func aHitIsScannedForThisBuildsSecrets() throws {
        let scratch = try TemporaryDirectory(prefix: "cache-secret-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try "FROM base\nRUN --mount=type=secret,id=tok,required=false echo public-words > /f\n".write(
            toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        let base = try BaseImages.writeBusybox(at: scratch.path + "/base")
        func build(secret: String) throws -> HermeticProcess.Outcome {
            try secret.write(toFile: scratch.path + "/secret", atomically: true, encoding: .utf8)
            return try HermeticProcess.hermetic([
                "build", context, "--state-dir", scratch.path + "/state", "--build-context",
                "base=oci-layout://\(scratch.path)/base@\(base)", "--secret", "id=tok,src=\(scratch.path)/secret",
            ])
        }
        let first = try build(secret: "unrelated-value")
        #expect(first.status == 0, "\(first.standardError)")
        let second = try build(secret: "public-words")
        #expect(second.status == 1)
        #expect(
            second.standardError.contains(
                "Dockerfile:2: the value of secret tok would be written into this step's layer"),
            "\(second.standardError)")
    }

    /// A warm build gives the image and attestation a cold one gives, byte for byte: the index digest
    /// covers the provenance. (No randomness here, so two cold builds agree too.)
    @Test func aCachedBuildIsTheColdBuild() throws {
        let scratch = try TemporaryDirectory(prefix: "cache-same-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try """
        FROM base AS build
        RUN --mount=type=cache,target=/c echo built > /built && ls /c > /listing && touch /c/warm
        FROM base
        COPY --from=build /built /built
        COPY app.txt /app.txt
        RUN cat /app.txt /built > /both

        """.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
        let base = try BaseImages.writeBusybox(at: scratch.path + "/base")
        func build(state: String, name: String) throws -> (digest: String, progress: String) {
            let outcome = try HermeticProcess.hermetic([
                "build", context, "--state-dir", scratch.path + "/" + state, "--build-context",
                "base=oci-layout://\(scratch.path)/base@\(base)", "-o", "type=oci,dest=\(scratch.path)/\(name)",
                "--iidfile", scratch.path + "/\(name).iid",
            ])
            try #require(outcome.status == 0, "\(name): \(outcome.standardError)")
            return (try String(contentsOfFile: scratch.path + "/\(name).iid", encoding: .utf8), outcome.standardError)
        }
        let cold = try build(state: "a", name: "cold")
        let warm = try build(state: "a", name: "warm")
        let otherCold = try build(state: "b", name: "other")
        #expect(warm.progress.components(separatedBy: "CACHED").count - 1 == 4, "\(warm.progress)")
        #expect(!cold.progress.contains("CACHED"))
        #expect(cold.digest == warm.digest)
        #expect(cold.digest == otherCold.digest)
    }
}
