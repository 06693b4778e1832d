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
