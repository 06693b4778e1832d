import Foundation
import Hermetic
import TestSupport
import Testing

/// `--cache-to type=registry` and `--cache-from type=registry` (and buildx's bare `REF`) against a real
/// `docker-registry` on loopback (SPEC §10, "Cache export and import"), judged as the local cache is: by
/// RUN steps that write random bytes (`CacheExportTests.Fixture`), so a step that ran again writes others.
@Suite struct RegistryCacheTests {
    /// The `--cache-to` progress line of `name`: what was exported and uploaded.
    static func exportLine(_ progress: String, _ name: String) -> String {
        progress.split(separator: "\n").map(String.init).first { $0.hasPrefix("--cache-to \(name): ") } ?? ""
    }

    /// The raw manifest `docker://REF` names, as skopeo reads it.
    static func manifest(_ reference: String) throws -> (bytes: String, json: [String: Any]) {
        let raw = try RegistryPushTests.skopeo(["inspect", "--tls-verify=false", "--raw", "docker://\(reference)"])
        return (raw, try RegistryPushTests.json(raw))
    }

    /// The file in docker-registry's storage that holds `digest`'s bytes.
    static func storedBlob(_ registry: RegistryFixture, _ digest: String) -> String {
        let hex = String(digest.dropFirst("sha256:".count))
        return registry.directory.path + "/storage/docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data"
    }

    /// One build of state A pushes a `mode=max` cache, a `mode=min` one (buildx's bare `REF`) and a local
    /// one. An empty state B with `--cache-from type=registry` of the max cache runs no step and gives A's
    /// image and random bytes; an empty state C with the bare min ref runs what min leaves out. What the
    /// registry holds is the local layout's manifest, byte for byte.
    @Test func anEmptyStoreWithTheRegistryCacheRunsNoStepAndGivesTheSameImage() throws {
        let fixture = try CacheExportTests.Fixture()
        let registry = try RegistryFixture()
        let maxRef = "\(registry.host)/cache/app:max"
        let minRef = "\(registry.host)/cache/app:min"
        let local = fixture.path("local")
        let first = try fixture.build(
            state: "a", name: "a",
            [
                "--cache-to", "type=registry,ref=\(maxRef),mode=max,image-manifest=true,oci-mediatypes=true",
                "--cache-to", minRef, "--cache-to", "type=local,dest=\(local),mode=max",
            ])
        #expect(CacheExportTests.cachedSteps(first.progress).isEmpty, "\(first.progress)")

        // The registry's manifest is the local layout's: the same digest, artifactType and blobs.
        let pushed = try Self.manifest(maxRef)
        let index = try RegistryPushTests.json(try String(contentsOfFile: local + "/index.json", encoding: .utf8))
        let entry = try #require((index["manifests"] as? [[String: Any]])?.first)
        #expect(Digest.sha256(of: Array(pushed.bytes.utf8)).description == entry["digest"] as? String)
        #expect(pushed.json["artifactType"] as? String == "application/vnd.dev.hermetic.buildcache.v1")
        let counts = try CacheExportTests.layoutSteps(local)
        #expect(counts.steps == 6 && (pushed.json["layers"] as? [Any])?.count == counts.layers)
        #expect(
            Self.exportLine(first.progress, "type=registry,ref=\(maxRef)").contains(
                "6 cached steps, \(counts.layers) layers"), "\(first.progress)")
        // Steps of the same content share a layer (`RUN echo stable` and the copy of its file).
        let minLayers = try #require(try Self.manifest(minRef).json["layers"] as? [Any]).count
        #expect(
            Self.exportLine(first.progress, "type=registry,ref=\(minRef)").contains(
                "4 cached steps, \(minLayers) layers"), "\(first.progress)")

        let second = try fixture.build(state: "b", name: "b", ["--cache-from", "type=registry,ref=\(maxRef)"])
        #expect(CacheExportTests.cachedSteps(second.progress) == CacheExportTests.allSteps, "\(second.progress)")
        #expect(second.digest == first.digest)
        #expect(second.random != nil && second.random == first.random)
        #expect(second.toolRandom != nil && second.toolRandom == first.toolRandom)
        #expect(!first.definition.isEmpty && second.definition == first.definition)
        try RegistryPullTests.expectStoreHoldsOnlyVerifiedBlobs(fixture.path("b"))

        // mode=min: `tool`'s and `stable`'s RUN run again; the copy from `stable` hits, the one from `tool`
        // does not (its random bytes are new), so neither does the last RUN.
        let third = try fixture.build(state: "c", name: "c", ["--cache-from", minRef])
        #expect(
            CacheExportTests.cachedSteps(third.progress) == [
                "COPY --from=stable /stable /stable", "COPY app.txt /app.txt",
            ], "\(third.progress)")
        #expect(third.toolRandom != nil && third.toolRandom != first.toolRandom)
        #expect(third.random != first.random)
    }

    /// A second export of the same steps uploads nothing (HEAD finds every blob); after a change, only the
    /// layers that changed and the new list of steps go up. The tag names the newest cache.
    @Test func aSecondExportUploadsOnlyWhatTheRegistryLacks() throws {
        let fixture = try CacheExportTests.Fixture()
        let registry = try RegistryFixture()
        let ref = "\(registry.host)/cache/again:latest"
        let name = "type=registry,ref=\(ref)"
        let first = try fixture.build(state: "a", name: "a", ["--cache-to", name])
        #expect(
            Self.exportLine(first.progress, name).hasSuffix("5 of 5 blobs uploaded, 0 already there"),
            "\(first.progress)")
        let firstManifest = try Self.manifest(ref).bytes
        let again = try fixture.build(state: "a", name: "again", ["--cache-to", name])
        #expect(CacheExportTests.cachedSteps(again.progress).count == 6, "\(again.progress)")
        #expect(
            Self.exportLine(again.progress, name).hasSuffix("0 of 5 blobs uploaded, 5 already there"),
            "\(again.progress)")
        #expect(try Self.manifest(ref).bytes == firstManifest)

        // app.txt changes: its COPY and the RUN after it make new layers; the copy from `tool` gives the
        // same layer under a new key; and the list of steps is new.
        try "changed\n".write(toFile: fixture.context + "/app.txt", atomically: true, encoding: .utf8)
        let changed = try fixture.build(state: "a", name: "changed", ["--cache-to", name])
        #expect(
            Self.exportLine(changed.progress, name).hasSuffix("3 of 5 blobs uploaded, 2 already there"),
            "\(changed.progress)")
        let latest = try Self.manifest(ref).bytes
        #expect(latest != firstManifest)
        // The tag names the newest cache: in an empty store, the COPY of the changed app.txt hits.
        let cold = try fixture.build(state: "b", name: "b", ["--cache-from", ref])
        #expect(
            CacheExportTests.cachedSteps(cold.progress) == [
                "COPY --from=stable /stable /stable", "COPY app.txt /app.txt",
            ], "\(cold.progress)")
    }

    /// What cannot be imported is one warning line naming the cache, and the build runs cold: a tag the
    /// registry does not have (404), a registry nothing answers on, one that wants credentials it is not
    /// given, an image that is not a cache; and hostile ones: a manifest over 4 MiB, a redirect loop, a 401
    /// loop.
    @Test func aCacheThatCannotBeReadIsAWarningAndTheBuildRunsCold() throws {
        let fixture = try CacheExportTests.Fixture(dockerfile: "FROM base\nCOPY app.txt /app.txt\n")
        let registry = try RegistryFixture()
        _ = try registry.push(layout: fixture.path("base"), as: "images/busybox", destinationTag: "v1")
        let locked = try RegistryFixture(user: "cacher", password: "c4che-Secret")
        let closed = "127.0.0.1:\(try RegistryFixture.freePort())"
        let oversized = try HostileRegistry(.oversizedManifest)
        let loop = try HostileRegistry(.redirectLoop)
        let unauthorized = try HostileRegistry(.unauthorizedLoop)
        let cases: [(ref: String, says: String)] = [
            ("\(registry.host)/cache/none:here", "registry \(registry.host): cache/none:here: not found (404)"),
            ("\(closed)/cache/app:v1", "registry \(closed): cannot be reached"),
            (
                "\(locked.host)/cache/app:v1",
                "registry \(locked.host): cache/app:v1: the registry needs credentials (401, Basic)"
            ),
            (
                "\(registry.host)/images/busybox:v1",
                "registry \(registry.host): images/busybox:v1: not a hermetic build cache"
            ),
            (
                "\(oversized.host)/hostile:v1",
                "registry \(oversized.host): hostile:v1: a manifest over 4 MiB is refused"
            ),
            ("\(loop.host)/hostile:v1", "registry \(loop.host): hostile:v1: redirect loop"),
            ("\(unauthorized.host)/hostile:v1", "registry \(unauthorized.host): hostile:v1: authentication failed"),
        ]
        for (number, item) in cases.enumerated() {
            // The first with the export keys buildx users write on both flags (accepted, no effect), the
            // second in buildx's bare form.
            let flag =
                [
                    "type=registry,ref=\(item.ref),mode=max,ignore-error=true,image-manifest=true,oci-mediatypes=true",
                    item.ref,
                ].dropFirst(number).first ?? "type=registry,ref=\(item.ref)"
            let built = try fixture.build(state: "cold\(number)", name: "cold\(number)", ["--cache-from", flag])
            let warnings = built.progress.split(separator: "\n").filter { $0.contains("--cache-from") }
            #expect(warnings.count == 1, "\(item.ref): \(built.progress)")
            #expect(
                warnings.first?.hasPrefix("warning: --cache-from type=registry,ref=\(item.ref): \(item.says)") == true
                    && warnings.first?.hasSuffix("; no cache imported") == true, "\(item.ref): \(built.progress)")
            #expect(CacheExportTests.cachedSteps(built.progress).isEmpty, "\(built.progress)")
        }
    }

    /// A registry that serves other bytes than a blob's digest (its storage changed behind its back): the
    /// layer is never stored, its step is skipped with a warning naming the host and runs again, the image is
    /// the same. A manifest whose bytes are not the digest the registry sends for the tag is refused whole.
    @Test func aRegistryThatLiesStoresNothingUnverified() throws {
        let fixture = try CacheExportTests.Fixture(
            dockerfile: "FROM base\nCOPY app.txt /app.txt\nRUN echo two > /two\n")
        let registry = try RegistryFixture()
        let ref = "\(registry.host)/cache/lie:v1"
        let first = try fixture.build(state: "a", name: "a", ["--cache-to", "type=registry,ref=\(ref),mode=max"])
        _ = try fixture.build(state: "a", name: "a2", ["--cache-to", "type=registry,ref=\(ref)-manifest"])
        // The COPY's layer: the tar that holds "app\n"; one byte changed, same size.
        let layers = try #require(try Self.manifest(ref).json["layers"] as? [[String: Any]])
        var spoiled: String?
        for layer in layers {
            let digest = try #require(layer["digest"] as? String)
            let path = Self.storedBlob(registry, digest)
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let at = bytes.range(of: Data("app\n".utf8), options: .backwards)?.lowerBound else { continue }
            bytes[at + 1] = UInt8(ascii: "q")
            try bytes.write(to: URL(fileURLWithPath: path))
            spoiled = digest
        }
        let layer = try #require(spoiled)
        let second = try fixture.build(state: "b", name: "b", ["--cache-from", ref])
        let warnings = second.progress.split(separator: "\n").filter { $0.contains("--cache-from") }
        #expect(warnings.count == 1, "\(second.progress)")
        #expect(
            warnings.first?.contains("cached step sha256:") == true
                && warnings.first?.contains(
                    "skipped: registry \(registry.host): blob cache/lie@\(layer): content does not match its digest")
                    == true,
            "\(second.progress)")
        #expect(CacheExportTests.cachedSteps(second.progress) == ["RUN echo two > /two"], "\(second.progress)")
        #expect(second.digest == first.digest)
        try RegistryPullTests.expectStoreHoldsOnlyVerifiedBlobs(fixture.path("b"))

        // The manifest of the second tag: its stored bytes changed, so they are not the digest the tag names.
        let manifestDigest = Digest.sha256(of: Array(try Self.manifest("\(ref)-manifest").bytes.utf8)).description
        let path = Self.storedBlob(registry, manifestDigest)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let at = try #require(bytes.range(of: Data("\"size\"".utf8))).lowerBound
        bytes[at + 1] = UInt8(ascii: "S")
        try bytes.write(to: URL(fileURLWithPath: path))
        let third = try fixture.build(state: "c", name: "c", ["--cache-from", "\(ref)-manifest"])
        let refused = third.progress.split(separator: "\n").filter { $0.contains("--cache-from") }
        #expect(refused.count == 1, "\(third.progress)")
        #expect(
            refused.first?.contains(
                "registry \(registry.host): cache/lie:v1-manifest: content does not match its digest \(manifestDigest)")
                == true && refused.first?.hasSuffix("; no cache imported") == true, "\(third.progress)")
        #expect(CacheExportTests.cachedSteps(third.progress).isEmpty, "\(third.progress)")
        try RegistryPullTests.expectStoreHoldsOnlyVerifiedBlobs(fixture.path("c"))
    }

    /// A registry that refuses the push (Basic auth, no credentials) fails the build in one line naming the
    /// cache and the host, and no output is written; with `ignore-error=true` it is a warning and the build
    /// succeeds, as BuildKit's.
    @Test func aRefusedExportFailsTheBuildUnlessIgnoreError() throws {
        let fixture = try CacheExportTests.Fixture(dockerfile: "FROM base\nCOPY app.txt /app.txt\n")
        let registry = try RegistryFixture(user: "cacher", password: "c4che-Secret")
        let ref = "\(registry.host)/cache/locked:v1"
        let out = fixture.path("out")
        func build(_ cacheTo: String) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic([
                "build", fixture.context, "--progress", "quiet", "--state-dir", fixture.path("state"),
                "--build-context", "base=oci-layout://\(fixture.path("base"))@\(fixture.base)",
                "-o", "type=oci,dest=\(out)", "--cache-to", cacheTo,
            ])
        }
        let failed = try build("type=registry,ref=\(ref)")
        #expect(failed.status == 1)
        #expect(failed.standardError.split(separator: "\n").count == 1, "\(failed.standardError)")
        #expect(
            failed.standardError.hasPrefix("error: --cache-to type=registry,ref=\(ref): registry \(registry.host): ")
                && failed.standardError.contains("needs credentials (401, Basic)"), "\(failed.standardError)")
        #expect(!FileManager.default.fileExists(atPath: out))

        let ignored = try build("type=registry,ref=\(ref),ignore-error=true")
        #expect(ignored.status == 0, "\(ignored.standardError)")
        let lines = ignored.standardError.split(separator: "\n")
        #expect(lines.count == 1, "\(ignored.standardError)")
        #expect(
            lines.first?.hasPrefix("warning: --cache-to type=registry,ref=\(ref): registry \(registry.host): ") == true
                && lines.first?.hasSuffix("(ignored: ignore-error=true)") == true, "\(ignored.standardError)")
        #expect(FileManager.default.fileExists(atPath: out + "/index.json"))
    }

    /// A layer tar in the store whose bytes are not its digest (the build does not read it: its step hits and
    /// its compressed blob is stored) is refused by the registry; the build fails with the way out, as the
    /// local export does.
    @Test func aDamagedStoreLayerFailsTheExportWithTheWayOut() throws {
        let fixture = try CacheExportTests.Fixture(dockerfile: "FROM scratch\nCOPY app.txt /app.txt\n")
        let registry = try RegistryFixture()
        let ref = "\(registry.host)/cache/damaged:v1"
        _ = try fixture.build(state: "a", name: "a", [])
        let steps = try FileManager.default.contentsOfDirectory(atPath: fixture.path("a/store/steps"))
        try #require(steps.count == 1, "\(steps)")
        let record = try RegistryPushTests.json(
            try String(contentsOfFile: fixture.path("a/store/steps/" + steps[0]), encoding: .utf8))
        let diffID = try #require((record["layer"] as? [String: Any])?["diffID"] as? String)
        let blob = fixture.path("a/store/blobs/sha256/" + diffID.dropFirst("sha256:".count))
        var bytes = try Data(contentsOf: URL(fileURLWithPath: blob))
        let at = try #require(bytes.range(of: Data("app\n".utf8), options: .backwards)).lowerBound
        bytes[at + 1] = UInt8(ascii: "q")
        try bytes.write(to: URL(fileURLWithPath: blob))
        let failed = try HermeticProcess.hermetic([
            "build", fixture.context, "--progress", "quiet", "--state-dir", fixture.path("a"),
            "-o", "type=oci,dest=\(fixture.path("out"))", "--cache-to", ref,
        ])
        #expect(failed.status == 1)
        #expect(failed.standardError.split(separator: "\n").count == 1, "\(failed.standardError)")
        #expect(
            failed.standardError.hasPrefix(
                "error: --cache-to type=registry,ref=\(ref): the build cache's copy of a layer cannot be used (\(blob): "
                    + "its bytes have digest sha256:")
                && failed.standardError.contains("run hermetic store check --repair"),
            "\(failed.standardError)")
        #expect(!FileManager.default.fileExists(atPath: fixture.path("out")))
    }

    /// The keys of buildx's `type=registry` that hermetic does not honour are refused in one line naming
    /// them, before anything is built.
    @Test func registryKeysHermeticDoesNotTakeAreRefusedInOneLine() throws {
        let fixture = try CacheExportTests.Fixture(dockerfile: "FROM base\nCOPY app.txt /app.txt\n")
        let cases: [(flag: String, value: String, says: String)] = [
            ("--cache-to", "type=registry,ref=localhost:5000/c,compression=zstd", "compression= is not supported"),
            ("--cache-to", "type=registry,ref=localhost:5000/c,image-manifest=false", "image-manifest=false is not"),
            ("--cache-to", "type=registry,ref=localhost:5000/c,oci-mediatypes=false", "oci-mediatypes=false is not"),
            ("--cache-to", "type=registry,ref=localhost:5000/c,ignore-error=maybe", "ignore-error must be true or"),
            ("--cache-to", "type=registry,ref=localhost:5000/c,mode=all", "mode must be min or max"),
            ("--cache-to", "type=registry,ref=localhost:5000/c,registry.insecure=true", "--insecure-registry"),
            ("--cache-to", "type=registry,ref=localhost:5000/c,dest=x", "unknown key \"dest\" for type=registry"),
            ("--cache-to", "type=registry,mode=max", "ref= is required"),
            ("--cache-to", "localhost:5000/c@sha256:" + String(repeating: "a", count: 64), "cannot name a digest"),
            ("--cache-to", "type=gha", "unknown type \"gha\" (supported: local, registry)"),
            ("--cache-from", "type=registry,ref=Not A Ref", "image reference"),
            ("--cache-from", "type=registry,ref=localhost:5000/c,src=x", "unknown key \"src\" for type=registry"),
        ]
        for item in cases {
            let outcome = try HermeticProcess.hermetic([
                "build", fixture.context, "--build-context", "base=oci-layout://\(fixture.path("base"))",
                item.flag, item.value,
            ])
            let lines = outcome.standardError.split(separator: "\n")
            #expect(outcome.status != 0 && lines.count == 1, "\(item.value): \(outcome.standardError)")
            #expect(
                outcome.standardError.hasPrefix("error: \(item.flag) \"\(item.value)\": ")
                    && outcome.standardError.contains(item.says), "\(item.value): \(outcome.standardError)")
        }
        // A cache under the tag of the image the build pushes (`:latest` either way) would replace it there.
        let clash = try HermeticProcess.hermetic([
            "build", fixture.context, "--build-context", "base=oci-layout://\(fixture.path("base"))",
            "--push", "-t", "localhost:5000/app", "--cache-to", "localhost:5000/app:latest",
        ])
        #expect(clash.status != 0 && clash.standardError.split(separator: "\n").count == 1, "\(clash.standardError)")
        #expect(
            clash.standardError.hasPrefix(
                "error: --cache-to \"type=registry,ref=localhost:5000/app:latest\": the same tag as an image this "
                    + "build pushes"), "\(clash.standardError)")
    }
}
