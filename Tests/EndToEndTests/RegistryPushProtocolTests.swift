import Foundation
import Hermetic
import TestSupport
import Testing

/// Push against a real `docker-registry` (its access log on): a base image's layers pulled from one
/// repository are mounted into another of the same registry instead of uploaded, never across registries;
/// a blob over the chunk size goes up in `PATCH`es.
@Suite struct RegistryPushProtocolTests {
    static let chunk = 16 << 20

    /// `bytes` random bytes in `context/big.bin`: a layer that gzip cannot make smaller.
    static func writeRandomFile(_ context: String, bytes: Int) throws {
        let random = try #require(FileHandle(forReadingAtPath: "/dev/urandom"))
        let data = try #require(try random.read(upToCount: bytes))
        try #require(data.count == bytes)
        try data.write(to: URL(fileURLWithPath: context + "/big.bin"))
    }

    @Test func aBaseImagesLayersAreMountedFromTheRepositoryTheyWerePulledFrom() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-push-mount-")
        let layout = scratch.path + "/busybox"
        _ = try BaseImages.writeBusybox(at: layout)
        let registry = try RegistryFixture(accessLog: true)
        let other = try RegistryFixture(accessLog: true)
        let base = try registry.push(layout: layout, as: "library/base")
        let inspected = try RegistryPushTests.json(
            try RegistryPushTests.skopeo([
                "inspect", "--tls-verify=false", "docker://\(registry.host)/library/base@\(base)",
            ]))
        let baseLayers = try #require(inspected["Layers"] as? [String])
        try #require(!baseLayers.isEmpty)
        let context = try RegistryPullTests.makeContext(
            scratch, dockerfile: "FROM \(registry.host)/library/base@\(base)\nCOPY app.txt /app.txt\n")
        let state = scratch.path + "/state"
        func push(_ names: [String]) throws -> String {
            let outcome = try HermeticProcess.hermetic(
                ["build", context, "--progress", "quiet", "--state-dir", state, "--provenance", "false", "--push"]
                    + names.flatMap { ["-t", $0] })
            try #require(outcome.status == 0, "\(outcome.standardError)")
            return outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // One build pushed to a repository of the registry the base came from, to another registry, and
        // to a second repository of the first.
        let digest = try push([
            "\(registry.host)/apps/app:v1", "\(other.host)/apps/app:v1", "\(registry.host)/apps/two:v1",
        ])

        let log = registry.requestLog
        for layer in baseLayers {
            #expect(
                log.contains("POST /v2/apps/app/blobs/uploads/?mount=\(layer)&from=library/base 201"),
                "\(layer) not mounted: \(log)")
            #expect(!log.contains { $0.hasPrefix("PUT /v2/apps/app/blobs/uploads/") && $0.contains(layer) })
        }
        // The layer of the COPY, and the config, have no source: uploaded, without a mount asked.
        #expect(log.filter { $0.hasPrefix("POST /v2/apps/app/blobs/uploads/ 202") }.count == 2, "\(log)")
        #expect(log.filter { $0.hasPrefix("PUT /v2/apps/app/blobs/uploads/") && $0.hasSuffix(" 201") }.count == 2)
        // The other registry holds no copy to mount from: every blob is uploaded there, no mount asked.
        let otherLog = other.requestLog
        #expect(!otherLog.contains { $0.contains("mount=") }, "\(otherLog)")
        for layer in baseLayers {
            #expect(otherLog.contains { $0.hasPrefix("PUT /v2/apps/app/blobs/uploads/") && $0.contains(layer) })
        }
        // The second repository mounts every layer: the base's from where it was pulled, the COPY's from
        // the repository it was pushed to just before. The config (not a store blob) is uploaded.
        let manifest = try RegistryPushTests.json(
            try RegistryPushTests.skopeo([
                "inspect", "--tls-verify=false", "--raw", "docker://\(registry.host)/apps/app:v1",
            ]))
        let layers = (manifest["layers"] as? [[String: Any]] ?? []).compactMap { $0["digest"] as? String }
        try #require(layers.count == baseLayers.count + 1, "\(manifest)")
        let copyLayer = layers[baseLayers.count]
        for layer in baseLayers {
            #expect(log.contains("POST /v2/apps/two/blobs/uploads/?mount=\(layer)&from=library/base 201"), "\(log)")
        }
        #expect(log.contains("POST /v2/apps/two/blobs/uploads/?mount=\(copyLayer)&from=apps/app 201"), "\(log)")
        #expect(log.filter { $0.hasPrefix("PUT /v2/apps/two/blobs/uploads/") }.count == 1, "\(log)")
        for repository in ["\(registry.host)/apps/app", "\(other.host)/apps/app", "\(registry.host)/apps/two"] {
            let pushed = try RegistryPushTests.json(
                try RegistryPushTests.skopeo(["inspect", "--tls-verify=false", "docker://\(repository):v1"]))
            #expect(pushed["Digest"] as? String == digest)
            #expect(Array((pushed["Layers"] as? [String] ?? []).prefix(baseLayers.count)) == baseLayers)
        }

        // A record naming a repository that does not hold the blob (stale): the registry answers the mount
        // 202, and the blob goes up in the session that answer opened.
        let first = baseLayers[0]
        let record = state + "/store/sources/" + first.dropFirst("sha256:".count) + ".json"
        let recorded = try RegistryPushTests.json(try String(contentsOfFile: record, encoding: .utf8))
        // Where it was pulled from first, then where it was pushed.
        #expect(recorded[registry.host] as? [String] == ["library/base", "apps/app", "apps/two"], "\(recorded)")
        #expect(recorded[other.host] as? [String] == ["apps/app"], "\(recorded)")
        try #"{"\#(registry.host)":["library/nothing"]}"#.write(toFile: record, atomically: true, encoding: .utf8)
        #expect(try push(["\(registry.host)/apps/third:v1"]) == digest)
        let third = registry.requestLog.filter { $0.contains("/v2/apps/third/blobs/uploads/") }
        let mountAsked = try #require(
            third.firstIndex {
                $0.hasPrefix("POST /v2/apps/third/blobs/uploads/?mount=\(first)&from=library/nothing 202")
            },
            "\(third)")
        #expect(
            third[(mountAsked + 1)...].first { $0.contains("digest=\(first)") }?.hasPrefix("PUT ") == true
                && third.contains { $0.contains("digest=\(first)") && $0.hasSuffix(" 201") },
            "\(third)")
        #expect(third.filter { $0.contains("mount=") && $0.hasSuffix(" 201") }.count == baseLayers.count, "\(third)")
        // The only session opened without a mount asked is the config's.
        #expect(third.filter { $0.hasPrefix("POST /v2/apps/third/blobs/uploads/ 202") }.count == 1, "\(third)")
    }

    /// A pull records where each blob came from; prune removes the record with the blob.
    @Test func aPullRecordsEachBlobsRepositoryAndPruneRemovesTheRecordWithTheBlob() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-pull-sources-")
        let layout = scratch.path + "/busybox"
        _ = try BaseImages.writeBusybox(at: layout)
        let registry = try RegistryFixture()
        let base = try registry.push(layout: layout, as: "library/base")
        let inspected = try RegistryPushTests.json(
            try RegistryPushTests.skopeo([
                "inspect", "--tls-verify=false", "docker://\(registry.host)/library/base@\(base)",
            ]))
        let baseLayers = try #require(inspected["Layers"] as? [String])
        let context = try RegistryPullTests.makeContext(
            scratch, dockerfile: "FROM \(registry.host)/library/base@\(base)\nCOPY app.txt /app.txt\n")
        let state = scratch.path + "/state"
        let built = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", state, "-o", "type=oci,dest=\(scratch.path)/out",
        ])
        try #require(built.status == 0, "\(built.standardError)")
        let sources = state + "/store/sources/"
        for layer in baseLayers {
            let record = try RegistryPushTests.json(
                try String(contentsOfFile: sources + layer.dropFirst("sha256:".count) + ".json", encoding: .utf8))
            #expect(record.count == 1 && record[registry.host] as? [String] == ["library/base"], "\(record)")
        }
        let pruned = try HermeticProcess.hermetic(["prune", "--all", "--force", "--state-dir", state])
        try #require(pruned.status == 0, "\(pruned.standardError)")
        for layer in baseLayers {
            let hex = String(layer.dropFirst("sha256:".count))
            #expect(!FileManager.default.fileExists(atPath: state + "/store/blobs/sha256/" + hex))
            #expect(!FileManager.default.fileExists(atPath: sources + hex + ".json"))
        }
    }

    @Test func aBlobOverTheChunkSizeGoesUpInChunksAndComesBackWhole() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-push-chunks-")
        let registry = try RegistryFixture(accessLog: true)
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY big.bin /big.bin\n")
        try Self.writeRandomFile(context, bytes: Self.chunk + (5 << 20))
        let state = scratch.path + "/state"
        let name = "\(registry.host)/apps/big:v1"
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", state, "--provenance", "false", "--push", "-t",
            name,
        ])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let digest = outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        let manifest = try RegistryPushTests.json(
            try RegistryPushTests.skopeo(["inspect", "--tls-verify=false", "--raw", "docker://\(name)"]))
        let layers = manifest["layers"] as? [[String: Any]] ?? []
        let size = try #require(layers.first?["size"] as? Int)
        try #require(size > Self.chunk)
        let log = registry.requestLog
        let patches = log.filter { $0.hasPrefix("PATCH /v2/apps/big/blobs/uploads/") }
        #expect(patches.count == (size + Self.chunk - 1) / Self.chunk, "\(log)")
        #expect(patches.allSatisfy { $0.hasSuffix(" 202") }, "\(patches)")
        // The config (small) in one PUT with its bytes; the layer's session closed by a PUT with none.
        #expect(log.filter { $0.hasPrefix("PUT /v2/apps/big/blobs/uploads/") && $0.hasSuffix(" 201") }.count == 2)

        // What the registry holds is the file, byte for byte: a build from it by digest copies it out.
        let next = try TemporaryDirectory(prefix: "registry-push-chunks-back-")
        let back = try RegistryPullTests.makeContext(
            next, dockerfile: "FROM \(registry.host)/apps/big@\(digest)\n")
        let pulled = try HermeticProcess.hermetic([
            "build", back, "--progress", "quiet", "--state-dir", next.path + "/state", "--provenance", "false",
            "-o", "type=local,dest=\(next.path)/tree",
        ])
        try #require(pulled.status == 0, "\(pulled.standardError)")
        let original = try Data(contentsOf: URL(fileURLWithPath: context + "/big.bin"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: next.path + "/tree/big.bin")) == original)
    }

    /// A chunk cut short on its way to a real `docker-registry` (a proxy drops the second PATCH after
    /// 1 MiB): the push asks the upload's status; distribution 2.8 has dropped the session (the PATCH is
    /// its 500, the status its 404), and the blob goes up again in a new one. The image arrives whole.
    @Test func aChunkCutShortOnItsWayToARealRegistryStillGetsTheImageThereWhole() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-push-cut-")
        let registry = try RegistryFixture(accessLog: true)
        let proxy = try CuttingProxy(to: registry.port, method: "PATCH", cutAt: 2, bytes: 1 << 20)
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY big.bin /big.bin\n")
        try Self.writeRandomFile(context, bytes: Self.chunk + (5 << 20))
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", scratch.path + "/state", "--provenance", "false",
            "--push", "-t", "\(proxy.host)/apps/cut:v1",
        ])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(proxy.didCut)
        let digest = outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        let log = registry.requestLog
        let patches = log.indices.filter { log[$0].hasPrefix("PATCH /v2/apps/cut/blobs/uploads/") }
        try #require(patches.count >= 2, "\(log)")
        // After the cut, the upload's status was asked before anything else of that session went up (other
        // blobs go up at the same time), then the blob went up again in a new session.
        func session(_ line: String) -> Substring {
            line.split(separator: "/blobs/uploads/").last?.split(separator: "?").first ?? ""
        }
        let cut = session(log[patches[0]])
        let status = try #require(
            log.indices.first { $0 > patches[0] && log[$0].hasPrefix("GET /v2/apps/cut/blobs/uploads/\(cut)") },
            "\(log)")
        #expect(!log[(patches[0] + 1)..<status].contains { $0.hasPrefix("PUT ") && session($0) == cut }, "\(log)")
        #expect(log[status].hasSuffix(" 404"), "\(log[status])")
        #expect(log[(status + 1)...].contains("POST /v2/apps/cut/blobs/uploads/ 202"), "\(log)")
        let last = try #require(patches.last)
        #expect(last > status && session(log[last]) != cut, "\(log)")
        #expect(log.contains { $0.hasPrefix("PUT /v2/apps/cut/blobs/uploads/") && $0.hasSuffix(" 201") })
        let pushed = try RegistryPushTests.json(
            try RegistryPushTests.skopeo(["inspect", "--tls-verify=false", "docker://\(registry.host)/apps/cut:v1"]))
        #expect(pushed["Digest"] as? String == digest)

        let next = try TemporaryDirectory(prefix: "registry-push-cut-back-")
        let back = try RegistryPullTests.makeContext(next, dockerfile: "FROM \(registry.host)/apps/cut@\(digest)\n")
        let pulled = try HermeticProcess.hermetic([
            "build", back, "--progress", "quiet", "--state-dir", next.path + "/state", "--provenance", "false",
            "-o", "type=local,dest=\(next.path)/tree",
        ])
        try #require(pulled.status == 0, "\(pulled.standardError)")
        let original = try Data(contentsOf: URL(fileURLWithPath: context + "/big.bin"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: next.path + "/tree/big.bin")) == original)
    }
}
