import Foundation
import Hermetic
import TestSupport
import Testing

/// `-o type=image,…,push=true`, `type=registry` and `--push`: the built image pushed to a real
/// `docker-registry` on loopback, read back by skopeo and built from again; its provenance listed under
/// the referrers tag (`sha256-<hex>`), since that registry has no referrers API.
@Suite struct RegistryPushTests {
    static func skopeo(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let outcome = try HermeticProcess.run(try ExternalTools.require("skopeo"), arguments)
        try #require(
            outcome.status == 0, "skopeo \(arguments): \(outcome.standardError)", sourceLocation: sourceLocation)
        return outcome.standardOutput
    }

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test func aPushedImageIsWhatSkopeoReadsAndWhatABuildFromItTakes() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-push-")
        let layout = scratch.path + "/busybox"
        let base = try BaseImages.writeBusybox(at: layout)
        let registry = try RegistryFixture()
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM base\n" + RegistryPullTests.body)
        let state = scratch.path + "/state"
        let name = "\(registry.host)/apps/pushed:v1"
        func build(_ extra: [String]) throws -> String {
            let outcome = try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "--state-dir", state, "--build-context",
                    "base=oci-layout://\(layout)@\(base)", "-o", "type=oci,dest=\(scratch.path)/out",
                ] + extra)
            try #require(outcome.status == 0, "\(outcome.standardError)")
            return outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let digest = try build(["-o", "type=image,name=\(name),push=true"])

        // What the registry holds under the tag is the image the build printed (and wrote to the layout).
        let inspected = try Self.json(try Self.skopeo(["inspect", "--tls-verify=false", "docker://\(name)"]))
        #expect(inspected["Digest"] as? String == digest)
        let index = try Self.json(try String(contentsOfFile: scratch.path + "/out/index.json", encoding: .utf8))
        let entries = index["manifests"] as? [[String: Any]] ?? []
        #expect(entries.first?["digest"] as? String == digest)
        let referrers = entries.dropFirst().compactMap { $0["digest"] as? String }
        try #require(referrers.count == 2, "the build definition and the run record: \(entries)")

        // The referrers tag lists both attestation manifests, with in-toto's artifactType.
        let hex = String(digest.dropFirst("sha256:".count))
        let tagged = "docker://\(registry.host)/apps/pushed:sha256-\(hex)"
        let listed = try Self.json(try Self.skopeo(["inspect", "--tls-verify=false", "--raw", tagged]))
        let listedEntries = listed["manifests"] as? [[String: Any]] ?? []
        #expect(Set(listedEntries.compactMap { $0["digest"] as? String }) == Set(referrers))
        #expect(listedEntries.allSatisfy { $0["artifactType"] as? String == "application/vnd.in-toto+json" })
        let referrer = try Self.json(
            try Self.skopeo([
                "inspect", "--tls-verify=false", "--raw", "docker://\(registry.host)/apps/pushed@\(referrers[0])",
            ]))
        #expect((referrer["subject"] as? [String: Any])?["digest"] as? String == digest)

        // skopeo copies it out; a build from that copy, and one from the registry by digest, both work.
        let copied = scratch.path + "/copied"
        _ = try Self.skopeo(["copy", "--src-tls-verify=false", "docker://\(name)", "oci:\(copied):img"])
        let nextScratch = try TemporaryDirectory(prefix: "registry-push-next-")
        let next = try RegistryPullTests.makeContext(
            nextScratch, dockerfile: "FROM again\nRUN cat /built.txt /app.txt > /both.txt\n")
        for source in ["oci-layout://\(copied)@\(digest)", "docker-image://\(registry.host)/apps/pushed@\(digest)"] {
            let outcome = try HermeticProcess.hermetic([
                "build", next, "--progress", "quiet", "--state-dir", state, "--provenance", "false",
                "--build-context", "again=\(source)", "-o", "type=local,dest=\(scratch.path)/tree",
            ])
            try #require(outcome.status == 0, "\(source): \(outcome.standardError)")
            let both = try String(contentsOfFile: scratch.path + "/tree/both.txt", encoding: .utf8)
            #expect(both == "built\napp\n")
        }

        // Pushed again (--push with -t): the same digest. Its run record (and its definition, which names
        // the -t) are new referrers, appended after the first build's; none is listed twice.
        #expect(try build(["--push", "-t", name]) == digest)
        let secondIndex = try Self.json(try String(contentsOfFile: scratch.path + "/out/index.json", encoding: .utf8))
        let secondReferrers = (secondIndex["manifests"] as? [[String: Any]] ?? []).dropFirst().compactMap {
            $0["digest"] as? String
        }
        let again = try Self.json(try Self.skopeo(["inspect", "--tls-verify=false", "--raw", tagged]))
        let listedAgain = (again["manifests"] as? [[String: Any]] ?? []).compactMap { $0["digest"] as? String }
        #expect(Set(listedAgain) == Set(referrers + secondReferrers))
        #expect(listedAgain.count == Set(listedAgain).count, "\(listedAgain)")
        #expect(
            try Self.json(try Self.skopeo(["inspect", "--tls-verify=false", "docker://\(name)"]))["Digest"] as? String
                == digest)
    }

    /// Two platforms behind Basic auth: the index goes up with both manifests, under the credentials docker
    /// keeps; a second push reads no blob the registry has (the store's copy of the layer is spoiled in
    /// between, and the push still succeeds); without credentials the push fails in one line.
    @Test func anIndexIsPushedWithDockersCredentialsAndBlobsTheRegistryHasAreNotSentAgain() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-push-auth-")
        let password = "pu5h-Secret"
        let registry = try RegistryFixture(user: "pusher", password: password)
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY app.txt /app.txt\n")
        let docker = scratch.path + "/docker"
        try FileManager.default.createDirectory(atPath: docker, withIntermediateDirectories: true)
        let auth = Data("pusher:\(password)".utf8).base64EncodedString()
        try #"{"auths":{"\#(registry.host)":{"auth":"\#(auth)"}}}"#.write(
            toFile: docker + "/config.json", atomically: true, encoding: .utf8)
        let state = scratch.path + "/state"
        let name = "\(registry.host)/multi:v2"
        func push(_ environment: [String: String]) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "--state-dir", state, "--platform",
                    "linux/amd64,linux/arm64", "--push", "-t", name,
                ], environment: environment)
        }
        let first = try push(["DOCKER_CONFIG": docker])
        try #require(first.status == 0, "\(first.standardError)")
        let digest = first.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!first.standardError.contains(password))
        let raw = try Self.skopeo([
            "inspect", "--tls-verify=false", "--creds", "pusher:\(password)", "--raw", "docker://\(name)",
        ])
        #expect(Digest.sha256(of: Array(raw.utf8)).description == digest)
        let index = try Self.json(raw)
        let manifests = index["manifests"] as? [[String: Any]] ?? []
        #expect(
            Set(manifests.compactMap { ($0["platform"] as? [String: Any])?["architecture"] as? String })
                == ["amd64", "arm64"])
        let manifest = try Self.json(
            try Self.skopeo([
                "inspect", "--tls-verify=false", "--creds", "pusher:\(password)", "--raw",
                "docker://\(registry.host)/multi@\(manifests.first?["digest"] as? String ?? "")",
            ]))
        let layer = try #require(((manifest["layers"] as? [[String: Any]])?.first?["digest"] as? String))
        let blob = state + "/store/blobs/sha256/" + layer.dropFirst("sha256:".count)
        let original = try Data(contentsOf: URL(fileURLWithPath: blob))
        try Data(count: original.count).write(to: URL(fileURLWithPath: blob))
        let second = try push(["DOCKER_CONFIG": docker])
        try original.write(to: URL(fileURLWithPath: blob))
        #expect(second.status == 0, "a blob was read again: \(second.standardError)")
        #expect(second.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == digest)

        let empty = scratch.path + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let anonymous = try push(["DOCKER_CONFIG": empty])
        #expect(anonymous.status == 1)
        #expect(anonymous.standardError.split(separator: "\n").count == 1, "\(anonymous.standardError)")
        #expect(
            anonymous.standardError.hasPrefix("error: registry \(registry.host): ")
                && anonymous.standardError.contains("needs credentials (401, Basic)"),
            "\(anonymous.standardError)")
    }

    /// A push that fails part way (the registry refuses a blob whose bytes are not its digest's) leaves the
    /// tag naming the image pushed before: the manifest goes last. The error is one line naming the host.
    @Test func aFailedPushLeavesThePreviousTag() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-push-fail-")
        let registry = try RegistryFixture()
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY app.txt /app.txt\n")
        let state = scratch.path + "/state"
        let name = "\(registry.host)/kept:v1"
        func build(_ extra: [String]) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                ["build", context, "--progress", "quiet", "--state-dir", state, "--provenance", "false"] + extra)
        }
        let first = try build(["--push", "-t", name])
        try #require(first.status == 0, "\(first.standardError)")
        let pushed = first.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)

        // Another image, built to a layout first so its layer is in the store; then that copy is spoiled.
        try "changed\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
        let built = try build(["-o", "type=oci,dest=\(scratch.path)/out"])
        try #require(built.status == 0, "\(built.standardError)")
        let index = try Self.json(try String(contentsOfFile: scratch.path + "/out/index.json", encoding: .utf8))
        let top = try #require((index["manifests"] as? [[String: Any]])?.first?["digest"] as? String)
        let manifest = try Self.json(
            try String(
                contentsOfFile: scratch.path + "/out/blobs/sha256/" + top.dropFirst("sha256:".count), encoding: .utf8))
        let layer = try #require((manifest["layers"] as? [[String: Any]])?.first?["digest"] as? String)
        let blob = state + "/store/blobs/sha256/" + layer.dropFirst("sha256:".count)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: blob)[.size] as? Int)
        try Data(count: size).write(to: URL(fileURLWithPath: blob))

        let failed = try build(["--push", "-t", name])
        #expect(failed.status == 1)
        #expect(failed.standardError.split(separator: "\n").count == 1, "\(failed.standardError)")
        #expect(
            failed.standardError.hasPrefix("error: registry \(registry.host): blob kept@\(layer): "),
            "\(failed.standardError)")
        let inspected = try Self.json(try Self.skopeo(["inspect", "--tls-verify=false", "docker://\(name)"]))
        #expect(inspected["Digest"] as? String == pushed)
        #expect(top != pushed)
    }

    /// `--attest-format buildkit`: the index that wraps the image and its attestation manifest is what the
    /// tag names, every manifest it lists is there, and no referrers tag is made.
    @Test func theBuildKitAttestationFormIsPushedAsItsIndex() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-push-buildkit-")
        let registry = try RegistryFixture()
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY app.txt /app.txt\n")
        let name = "\(registry.host)/wrapped:v1"
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", scratch.path + "/state", "--attest-format",
            "buildkit", "-o", "type=registry,name=\(name)",
        ])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let digest = outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        let raw = try Self.skopeo(["inspect", "--tls-verify=false", "--raw", "docker://\(name)"])
        #expect(Digest.sha256(of: Array(raw.utf8)).description == digest)
        let entries = try Self.json(raw)["manifests"] as? [[String: Any]] ?? []
        #expect(entries.count == 2)
        #expect(entries.contains { ($0["platform"] as? [String: Any])?["os"] as? String == "unknown" })
        for entry in entries {
            let listed = try #require(entry["digest"] as? String)
            _ = try Self.skopeo([
                "inspect", "--tls-verify=false", "--raw", "docker://\(registry.host)/wrapped@\(listed)",
            ])
        }
        let tags = try Self.json(
            try Self.skopeo(["list-tags", "--tls-verify=false", "docker://\(registry.host)/wrapped"]))
        #expect(tags["Tags"] as? [String] == ["v1"])
    }

    @Test func anUnreachableRegistryFailsWithOneLineNamingTheHost() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-push-down-")
        let layout = scratch.path + "/busybox"
        let base = try BaseImages.writeBusybox(at: layout)
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM base\nCOPY app.txt /app.txt\n")
        let host = "127.0.0.1:\(try RegistryFixture.freePort())"
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", scratch.path + "/state", "--build-context",
            "base=oci-layout://\(layout)@\(base)", "-o", "type=oci,dest=\(scratch.path)/out", "-o",
            "type=registry,name=\(host)/app:v1",
        ])
        #expect(outcome.status == 1)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome.standardError)")
        #expect(outcome.standardError.hasPrefix("error: registry \(host): "), "\(outcome.standardError)")
        // The push failed before the local outputs were put in place.
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))
    }

    @Test func anImageOutputWithoutPushIsRefusedAsWeKeepNoImageStore() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-push-nostore-")
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY app.txt /\n")
        for output in ["type=image,name=127.0.0.1:5/app:v1", "type=image,name=127.0.0.1:5/app:v1,push=false"] {
            let outcome = try HermeticProcess.hermetic(["build", context, "--progress", "quiet", "-o", output])
            #expect(outcome.status != 0)
            #expect(
                outcome.standardError
                    == "error: --output \"\(output)\": hermetic has no local image store: type=image needs push=true "
                    + "(or use type=oci,dest=DIR, type=docker,dest=FILE.tar)\n")
        }
        let bare = try HermeticProcess.hermetic(["build", context, "--progress", "quiet", "--push"])
        #expect(bare.status != 0)
        #expect(bare.standardError.contains("nothing to push to"), "\(bare.standardError)")
    }
}
