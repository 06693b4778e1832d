import Foundation
import Hermetic
import TestSupport
import Testing

/// Push paths no local `docker-registry` takes, against `PushRegistry` (a fake in Python): the referrers
/// API, an upload `Location` on another host, a chunk cut short and resumed, and answers a push must not
/// take.
@Suite struct RegistryPushFakeRegistryTests {
    static func push(
        _ context: String, state: String, to name: String, _ extra: [String] = [], environment: [String: String] = [:]
    ) throws -> HermeticProcess.Outcome {
        try HermeticProcess.hermetic(
            ["build", context, "--progress", "quiet", "--state-dir", state, "--push", "-t", name] + extra,
            environment: environment)
    }

    @Test func aRegistryWithTheReferrersAPIListsTheAttestationsItselfAndGetsNoReferrersTag() throws {
        let scratch = try TemporaryDirectory(prefix: "push-referrers-api-")
        let registry = try PushRegistry(.referrers)
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY app.txt /app.txt\n")
        let outcome = try Self.push(
            context, state: scratch.path + "/state", to: "\(registry.host)/apps/ref:v1",
            ["-o", "type=oci,dest=\(scratch.path)/out"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let digest = outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        let index = try RegistryPushTests.json(
            try String(contentsOfFile: scratch.path + "/out/index.json", encoding: .utf8))
        let referrers = (index["manifests"] as? [[String: Any]] ?? []).dropFirst().compactMap {
            $0["digest"] as? String
        }
        try #require(referrers.count == 2, "the build definition and the run record: \(index)")

        // Only the tag asked for: no referrers tag was read or written.
        #expect(registry.tags("apps/ref") == ["v1"])
        #expect(!registry.requestLog.contains { $0.contains("sha256-") }, "\(registry.requestLog)")
        // Each referrer went up after its subject and before the tag.
        let log = registry.requestLog
        let subjectAt = try #require(log.firstIndex { $0.hasPrefix("PUT /v2/apps/ref/manifests/\(digest)") })
        let tagAt = try #require(log.firstIndex { $0.hasPrefix("PUT /v2/apps/ref/manifests/v1") })
        for referrer in referrers {
            let at = try #require(log.firstIndex { $0.hasPrefix("PUT /v2/apps/ref/manifests/\(referrer)") })
            #expect(subjectAt < at && at < tagAt)
        }
        // The registry's referrers API lists both, with in-toto's artifactType.
        let curl = try ExternalTools.require("curl")
        let answer = try HermeticProcess.run(
            curl, ["-sf", "http://\(registry.host)/v2/apps/ref/referrers/\(digest)"])
        try #require(answer.status == 0, "\(answer.standardError)")
        let listed = try RegistryPushTests.json(answer.standardOutput)["manifests"] as? [[String: Any]] ?? []
        #expect(Set(listed.compactMap { $0["digest"] as? String }) == Set(referrers))
        #expect(listed.count == 2)
        #expect(listed.allSatisfy { $0["artifactType"] as? String == "application/vnd.in-toto+json" })
    }

    /// docker's config.json with the fake's Basic credentials.
    static func dockerConfig(_ scratch: TemporaryDirectory, host: String) throws -> [String: String] {
        let docker = scratch.path + "/docker"
        try FileManager.default.createDirectory(atPath: docker, withIntermediateDirectories: true)
        let auth = Data("tester:t0ken-pa55".utf8).base64EncodedString()
        try #"{"auths":{"\#(host)":{"auth":"\#(auth)"}}}"#.write(
            toFile: docker + "/config.json", atomically: true, encoding: .utf8)
        return ["DOCKER_CONFIG": docker]
    }

    @Test func blobsSentToAStorageHostOnALoopbackAliasGoThereWithoutTheRegistrysCredentials() throws {
        let scratch = try TemporaryDirectory(prefix: "push-storage-host-")
        let registry = try PushRegistry(.storage, storageHost: "127.0.0.2")
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY app.txt /app.txt\n")
        let outcome = try Self.push(
            context, state: scratch.path + "/state", to: "\(registry.host)/apps/st:v1", ["--provenance", "false"],
            environment: try Self.dockerConfig(scratch, host: registry.host))
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let log = registry.requestLog
        // The layer and the config, each in one PUT to the storage host with its bytes, never with the
        // registry's Authorization; every upload was started at the registry with it.
        let stored = log.filter { $0.hasPrefix("storage ") }
        #expect(stored.count == 2, "\(log)")
        #expect(stored.allSatisfy { $0.hasPrefix("storage PUT /upload/") && !$0.contains(" authorized") }, "\(log)")
        #expect(stored.allSatisfy { !$0.hasSuffix(" length=0") })
        let started = log.filter { $0.hasPrefix("POST /v2/apps/st/blobs/uploads/") && $0.contains(" authorized") }
        #expect(started.count == 2, "\(log)")
        #expect(registry.tags("apps/st") == ["v1"])

        // A storage host nothing listens on: the error names it, not the registry.
        let closed = "127.0.0.1:\(try RegistryFixture.freePort())"
        let unreachable = try PushRegistry(.storage, storageHost: closed)
        let failed = try Self.push(
            context, state: scratch.path + "/state", to: "\(unreachable.host)/apps/st:v1", ["--provenance", "false"],
            environment: try Self.dockerConfig(scratch, host: unreachable.host))
        #expect(failed.status == 1)
        #expect(failed.standardError.split(separator: "\n").count == 1, "\(failed.standardError)")
        #expect(
            failed.standardError.hasPrefix("error: registry \(closed): blob apps/st@sha256:"), "\(failed.standardError)"
        )
        #expect(unreachable.tags("apps/st").isEmpty)
    }

    @Test func plainHTTPToANonLoopbackStorageHostNeedsInsecureRegistry() throws {
        let address = try #require(
            PushRegistry.nonLoopbackAddress(), "this test needs an IPv4 address outside 127.0.0.0/8")
        let scratch = try TemporaryDirectory(prefix: "push-storage-insecure-")
        let registry = try PushRegistry(.storage, storageHost: address)
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY app.txt /app.txt\n")
        let environment = try Self.dockerConfig(scratch, host: registry.host)
        let storage = "\(address):\(registry.storagePort)"
        let refused = try Self.push(
            context, state: scratch.path + "/state", to: "\(registry.host)/apps/st:v1", ["--provenance", "false"],
            environment: environment)
        #expect(refused.status == 1)
        #expect(refused.standardError.split(separator: "\n").count == 1, "\(refused.standardError)")
        #expect(refused.standardError.hasPrefix("error: registry \(registry.host): blob apps/st@sha256:"))
        #expect(
            refused.standardError.contains("sent the upload to \(storage) in plain HTTP"), "\(refused.standardError)")
        #expect(!registry.requestLog.contains { $0.hasPrefix("storage ") })
        #expect(registry.tags("apps/st").isEmpty)

        let allowed = try Self.push(
            context, state: scratch.path + "/state", to: "\(registry.host)/apps/st:v1",
            ["--provenance", "false", "--insecure-registry", storage], environment: environment)
        try #require(allowed.status == 0, "\(allowed.standardError)")
        let stored = registry.requestLog.filter { $0.hasPrefix("storage ") }
        #expect(stored.count == 2)
        #expect(stored.allSatisfy { !$0.contains(" authorized") })
        #expect(registry.tags("apps/st") == ["v1"])
    }

    @Test func aChunkCutShortIsSentAgainFromWhereTheRegistrySaysItStopped() throws {
        let scratch = try TemporaryDirectory(prefix: "push-chunk-resume-")
        let registry = try PushRegistry(.chunkDrop)
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY big.bin /big.bin\n")
        try RegistryPushProtocolTests.writeRandomFile(context, bytes: RegistryPushProtocolTests.chunk + (5 << 20))
        let outcome = try Self.push(
            context, state: scratch.path + "/state", to: "\(registry.host)/apps/big:v1", ["--provenance", "false"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let log = registry.requestLog
        let chunk = RegistryPushProtocolTests.chunk
        let patches = log.indices.filter { log[$0].hasPrefix("PATCH ") }
        try #require(patches.count == 3, "\(log)")
        #expect(log[patches[0]].hasSuffix(" content-range=0-\(chunk - 1) length=\(chunk)"), "\(log[patches[0]])")
        // The second chunk: half of it arrived before the connection dropped.
        let second = log[patches[1]]
        let range = try #require(second.components(separatedBy: "content-range=").last?.split(separator: " ").first)
        let last = try #require(Int(range.split(separator: "-")[1]))
        #expect(range == "\(chunk)-\(last)")
        let half = (last - chunk + 1) / 2
        #expect(second.hasSuffix(" length=\(half)"), "\(second)")
        // Its status asked, then the rest of that chunk from there, then the session closed.
        let session = try #require(second.split(separator: " ")[1].split(separator: "?").first)
        #expect(log[(patches[1] + 1)..<patches[2]].contains("GET \(session)"), "\(log)")
        #expect(
            log[patches[2]].hasSuffix(" content-range=\(chunk + half)-\(last) length=\(last - chunk - half + 1)"),
            "\(log[patches[2]])")
        let closing = try #require(log[(patches[2] + 1)...].first { $0.hasPrefix("PUT \(session)?digest=") })
        #expect(closing.hasSuffix(" length=0"))
        // The fake checks the whole blob's digest when the session closes: the tag is there.
        #expect(registry.tags("apps/big") == ["v1"])
    }

    /// A registry that names a least chunk length larger than ours gets chunks of that length, and a
    /// blob of at most that length in one PUT.
    @Test func theRegistrysLeastChunkLengthIsTheChunkSize() throws {
        let scratch = try TemporaryDirectory(prefix: "push-chunk-minimum-")
        let registry = try PushRegistry(.chunkMinimum)
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY big.bin /big.bin\n")
        let minimum = 20 << 20
        try RegistryPushProtocolTests.writeRandomFile(context, bytes: minimum + (1 << 20))
        let state = scratch.path + "/state"
        let outcome = try Self.push(
            context, state: state, to: "\(registry.host)/apps/big:v1", ["--provenance", "false"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let patches = registry.requestLog.filter { $0.hasPrefix("PATCH ") }
        try #require(patches.count == 2, "\(registry.requestLog)")
        #expect(patches[0].hasSuffix(" content-range=0-\(minimum - 1) length=\(minimum)"), "\(patches[0])")
        #expect(patches[1].contains(" content-range=\(minimum)-"), "\(patches[1])")

        // 18 MiB: over our chunk size, not over the registry's least chunk length.
        try RegistryPushProtocolTests.writeRandomFile(context, bytes: 18 << 20)
        let smaller = try Self.push(
            context, state: state, to: "\(registry.host)/apps/small:v1", ["--provenance", "false"])
        try #require(smaller.status == 0, "\(smaller.standardError)")
        let small = registry.requestLog.filter { $0.contains("/v2/apps/small/blobs/uploads/") }
        #expect(!small.contains { $0.hasPrefix("PATCH ") }, "\(small)")
        // The config's PUT and the layer's, each with its bytes: the layer's over 16 MiB.
        let lengths = small.filter { $0.hasPrefix("PUT ") }.compactMap {
            $0.components(separatedBy: " length=").last.flatMap { Int($0) }
        }
        #expect(lengths.count == 2, "\(small)")
        #expect(lengths.contains { $0 > RegistryPushProtocolTests.chunk }, "\(small)")
    }

    @Test func answersAPushMustNotTakeFailItInOneLineAndLeaveNoTag() throws {
        let scratch = try TemporaryDirectory(prefix: "push-hostile-")
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY big.bin /big.bin\n")
        try RegistryPushProtocolTests.writeRandomFile(context, bytes: RegistryPushProtocolTests.chunk + (1 << 20))
        let cases: [(PushRegistry.Mode, String)] = [
            (.digestLie, "the registry says it stored sha256:0000000000"),
            (.noLocation, "answered 202 without a Location to upload to"),
            (.redirectLoop, "redirect loop (more than 10 redirects)"),
            (.rangeBackwards, "its upload Range (0-99) goes back before the \(RegistryPushProtocolTests.chunk) bytes"),
        ]
        for (mode, reason) in cases {
            let registry = try PushRegistry(mode)
            let outcome = try Self.push(
                context, state: scratch.path + "/state", to: "\(registry.host)/apps/h:v1", ["--provenance", "false"])
            #expect(outcome.status == 1, "\(mode)")
            #expect(outcome.standardError.split(separator: "\n").count == 1, "\(mode): \(outcome.standardError)")
            #expect(
                outcome.standardError.hasPrefix("error: registry \(registry.host): blob apps/h@sha256:"),
                "\(mode): \(outcome.standardError)")
            #expect(outcome.standardError.contains(reason), "\(mode): \(outcome.standardError)")
            #expect(registry.tags("apps/h").isEmpty, "\(mode)")
        }
    }
}
