import Foundation
import Hermetic
import TestSupport
import Testing

/// `--cache-to type=local` and `--cache-from type=local` (SPEC §10, "Cache export and import"), judged by
/// RUN steps that write random bytes: a step that ran again writes other bytes. A builder with an empty
/// state directory and the exported cache runs no step the cache holds and gives the same image.
@Suite struct CacheExportTests {
    /// Stage `tool` writes random bytes the final stage copies; stage `stable` writes the same bytes on every
    /// run. The final stage copies from `stable` before it copies from `tool`, so with `mode=min` its first
    /// two steps can hit while `tool`'s RUN runs again.
    static let dockerfile = """
        FROM base AS tool
        RUN head -c 32 /dev/urandom > /tool-random
        FROM base AS stable
        RUN echo stable > /stable
        FROM base
        COPY --from=stable /stable /stable
        COPY app.txt /app.txt
        COPY --from=tool /tool-random /tool-random
        RUN head -c 32 /dev/urandom > /random

        """

    final class Fixture {
        let scratch: TemporaryDirectory
        let context: String
        let base: Digest

        init(dockerfile: String = CacheExportTests.dockerfile) throws {
            scratch = try TemporaryDirectory(prefix: "cache-export-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
            base = try BaseImages.writeBusybox(at: scratch.path + "/base")
        }

        struct Built {
            var digest: String
            var random: Data?
            var toolRandom: Data?
            /// The first line of the attest file: the DSSE envelope of the SLSA build definition.
            var definition: String
            var progress: String
            var status: Int32
        }

        /// Builds with state directory `state` (under the scratch directory) and `extra` flags.
        func build(state: String, name: String, _ extra: [String]) throws -> Built {
            let out = scratch.path + "/out-" + name
            let outcome = try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "plain", "--state-dir", scratch.path + "/" + state,
                    "--build-context", "base=oci-layout://\(scratch.path)/base@\(base)",
                    "-o", "type=local,dest=\(out)", "--iidfile", out + ".iid", "--attest-file", out + ".attest",
                ] + extra)
            try #require(outcome.status == 0, "\(name): \(outcome.standardError)")
            let attest = try String(contentsOfFile: out + ".attest", encoding: .utf8)
            return Built(
                digest: try String(contentsOfFile: out + ".iid", encoding: .utf8),
                random: FileManager.default.contents(atPath: out + "/random"),
                toolRandom: FileManager.default.contents(atPath: out + "/tool-random"),
                definition: String(attest.split(separator: "\n").first ?? ""), progress: outcome.standardError,
                status: outcome.status)
        }

        func path(_ relative: String) -> String { scratch.path + "/" + relative }
    }

    /// The instructions of the steps progress marked `#N CACHED`.
    static func cachedSteps(_ progress: String) -> [String] {
        var titles: [String: String] = [:]
        var cached: [String] = []
        for line in progress.split(separator: "\n").map(String.init) where line.hasPrefix("#") {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            if parts[1] == "CACHED" {
                cached.append(titles[parts[0]] ?? "?")
            } else if parts[1].hasPrefix("["), let close = parts[1].firstIndex(of: "]") {
                titles[parts[0]] = String(parts[1][parts[1].index(close, offsetBy: 2)...])
            }
        }
        return cached.sorted()
    }

    /// The cached steps the layout at `directory` lists, read as a registry client would: index.json, its
    /// manifest, the manifest's config.
    static func layoutSteps(_ directory: String) throws -> (steps: Int, layers: Int) {
        func json(_ path: String) throws -> [String: Any] {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        }
        func blob(_ descriptor: Any?) throws -> String {
            let digest = try #require((descriptor as? [String: Any])?["digest"] as? String)
            return directory + "/blobs/sha256/" + String(digest.dropFirst("sha256:".count))
        }
        let index = try json(directory + "/index.json")
        let entries = try #require(index["manifests"] as? [Any])
        try #require(entries.count == 1, "\(index)")
        let manifest = try json(try blob(entries[0]))
        #expect(manifest["artifactType"] as? String == "application/vnd.dev.hermetic.buildcache.v1")
        let config = try json(try blob(manifest["config"]))
        let steps = try #require(config["steps"] as? [Any])
        let layers = try #require(manifest["layers"] as? [Any])
        for layer in layers {
            #expect(FileManager.default.fileExists(atPath: try blob(layer)), "\(layer)")
        }
        return (steps.count, layers.count)
    }

    static let allSteps = [
        "COPY --from=stable /stable /stable", "COPY --from=tool /tool-random /tool-random", "COPY app.txt /app.txt",
        "RUN echo stable > /stable", "RUN head -c 32 /dev/urandom > /random",
        "RUN head -c 32 /dev/urandom > /tool-random",
    ]

    /// mode=max, state A → cache C; an empty state B with `--cache-from C` runs nothing and gives A's image,
    /// random bytes and build definition; a cold build with an empty state C gives other bytes.
    @Test func anEmptyStoreWithTheCacheRunsNoStepAndGivesTheSameImage() throws {
        let fixture = try Fixture()
        let cache = fixture.path("cache")
        let first = try fixture.build(state: "a", name: "a", ["--cache-to", "type=local,dest=\(cache),mode=max"])
        #expect(Self.cachedSteps(first.progress).isEmpty, "\(first.progress)")
        let counts = try Self.layoutSteps(cache)
        #expect(counts.steps == 6, "\(counts)")
        let second = try fixture.build(state: "b", name: "b", ["--cache-from", "type=local,src=\(cache)"])
        #expect(Self.cachedSteps(second.progress) == Self.allSteps, "\(second.progress)")
        #expect(second.digest == first.digest)
        #expect(second.random != nil && second.random == first.random)
        #expect(second.toolRandom != nil && second.toolRandom == first.toolRandom)
        // Neither --cache-to nor --cache-from enters the provenance: the definitions are the same bytes.
        #expect(!first.definition.isEmpty && second.definition == first.definition)
        // The oracle: without the cache, the same build gives other random bytes and another image.
        let cold = try fixture.build(state: "c", name: "c", [])
        #expect(cold.random != first.random)
        #expect(cold.digest != first.digest)
        #expect(Self.cachedSteps(cold.progress).isEmpty)
    }

    /// mode=min (the default) exports the final stage's steps only: `tool`'s and `stable`'s RUN run again;
    /// the copy from `stable` hits (that stage came out the same), the copy from `tool` does not.
    @Test func modeMinExportsOnlyTheFinalImagesSteps() throws {
        let fixture = try Fixture()
        let cache = fixture.path("cache")
        let first = try fixture.build(state: "a", name: "a", ["--cache-to", "type=local,dest=\(cache)"])
        #expect(try Self.layoutSteps(cache).steps == 4)
        let second = try fixture.build(state: "b", name: "b", ["--cache-from", "type=local,src=\(cache)"])
        #expect(
            Self.cachedSteps(second.progress) == ["COPY --from=stable /stable /stable", "COPY app.txt /app.txt"],
            "\(second.progress)")
        #expect(second.toolRandom != nil && second.toolRandom != first.toolRandom)
        #expect(second.random != first.random)
        // A stage built FROM another exports that stage's steps with min too: they are the image's layers.
        let chained = try Fixture(
            dockerfile: """
                FROM base AS lower
                RUN head -c 32 /dev/urandom > /lower-random
                FROM lower
                RUN head -c 32 /dev/urandom > /random

                """)
        let chainedCache = chained.path("cache")
        let chainedFirst = try chained.build(state: "a", name: "a", ["--cache-to", "type=local,dest=\(chainedCache)"])
        #expect(try Self.layoutSteps(chainedCache).steps == 2)
        let chainedSecond = try chained.build(
            state: "b", name: "b", ["--cache-from", "type=local,src=\(chainedCache)"])
        #expect(Self.cachedSteps(chainedSecond.progress).count == 2, "\(chainedSecond.progress)")
        #expect(chainedSecond.digest == chainedFirst.digest)
    }

    /// A layer tar in the cache whose bytes were changed, or that is a symlink, is skipped with a warning
    /// naming the cache: its step runs again and the image is the same (those steps are deterministic).
    @Test func aTamperedOrSymlinkedBlobIsSkipped() throws {
        let fixture = try Fixture()
        let cache = fixture.path("cache")
        let first = try fixture.build(state: "a", name: "a", ["--cache-to", "type=local,dest=\(cache),mode=max"])
        let blobs = cache + "/blobs/sha256"
        func blobsHolding(_ text: String) throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: blobs).sorted().filter {
                let data = try Data(contentsOf: URL(fileURLWithPath: blobs + "/" + $0))
                return data.range(of: Data(text.utf8)) != nil
            }
        }
        // The COPY of app.txt: its tar holds "app\n"; flip one byte, same size.
        let appBlob = try #require(try blobsHolding("app.txt").first)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: blobs + "/" + appBlob))
        let at = try #require(bytes.range(of: Data("app\n".utf8), options: .backwards)).lowerBound
        bytes[at + 2] = UInt8(ascii: "q")
        try bytes.write(to: URL(fileURLWithPath: blobs + "/" + appBlob))
        // The layers of `stable`: the same bytes, but behind a symlink.
        let stableBlobs = try blobsHolding("stable\n")
        try #require(!stableBlobs.isEmpty)
        for name in stableBlobs {
            try FileManager.default.moveItem(atPath: blobs + "/" + name, toPath: fixture.path(name))
            try FileManager.default.createSymbolicLink(
                atPath: blobs + "/" + name, withDestinationPath: fixture.path(name))
        }
        let second = try fixture.build(state: "b", name: "b", ["--cache-from", "type=local,src=\(cache)"])
        let cached = Self.cachedSteps(second.progress)
        #expect(!cached.contains("COPY app.txt /app.txt"), "\(second.progress)")
        #expect(!cached.contains("RUN echo stable > /stable"), "\(second.progress)")
        #expect(cached.contains("RUN head -c 32 /dev/urandom > /tool-random"), "\(second.progress)")
        #expect(second.progress.contains("--cache-from type=local,src=\(cache): cached step"), "\(second.progress)")
        #expect(second.progress.contains("is a symlink"), "\(second.progress)")
        #expect(second.progress.contains("its bytes have digest"), "\(second.progress)")
        #expect(second.digest == first.digest)
        #expect(second.random == first.random)
    }

    /// A cache that is missing, not a layout, or too large is a one-line warning: the build runs cold.
    @Test func aBadCacheSourceIsAWarningAndTheBuildRunsCold() throws {
        let fixture = try Fixture(dockerfile: "FROM base\nCOPY app.txt /app.txt\n")
        let warm = fixture.path("warm")
        _ = try fixture.build(state: "a", name: "a", ["--cache-to", "type=local,dest=\(warm)"])
        let garbage = fixture.path("garbage")
        try FileManager.default.createDirectory(atPath: garbage + "/blobs/sha256", withIntermediateDirectories: true)
        try "{not json".write(toFile: garbage + "/index.json", atomically: true, encoding: .utf8)
        let large = fixture.path("large")
        try FileManager.default.createDirectory(atPath: large + "/blobs/sha256", withIntermediateDirectories: true)
        try Data(repeating: 0x20, count: 5 << 20).write(to: URL(fileURLWithPath: large + "/index.json"))
        let linked = fixture.path("linked")
        try FileManager.default.createDirectory(atPath: linked + "/blobs/sha256", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: linked + "/index.json", withDestinationPath: warm + "/index.json")
        let cases: [(source: String, says: String)] = [
            (fixture.path("missing"), "does not exist; no cache imported"),
            (garbage, "index.json is not an OCI image index; no cache imported"),
            (large, "index.json is larger than 4194304 bytes; no cache imported"),
            (linked, "index.json is a symlink; no cache imported"),
            (fixture.context + "/app.txt", "is not a directory (not a cache layout); no cache imported"),
        ]
        for (number, item) in cases.enumerated() {
            let built = try fixture.build(
                state: "cold\(number)", name: "cold\(number)", ["--cache-from", "type=local,src=\(item.source)"])
            let warnings = built.progress.split(separator: "\n").filter { $0.contains("--cache-from") }
            #expect(warnings.count == 1 && warnings[0].contains(item.says), "\(item.source): \(built.progress)")
            #expect(Self.cachedSteps(built.progress).isEmpty, "\(built.progress)")
        }
    }

    /// DIR is replaced whole at the commit point: a failed build leaves it as it was and no staging beside
    /// it; the same DIR may be read by --cache-from and replaced by --cache-to in one build.
    @Test func theCacheIsSwappedInOnlyBySuccessfulBuilds() throws {
        let fixture = try Fixture(
            dockerfile: "FROM base\nCOPY app.txt /app.txt\nRUN head -c 32 /dev/urandom > /random\n")
        let cache = fixture.path("cache")
        let first = try fixture.build(state: "a", name: "a", ["--cache-to", "type=local,dest=\(cache)"])
        let index = try Data(contentsOf: URL(fileURLWithPath: cache + "/index.json"))
        // Read and replaced in one build, from an empty store: every step hits, the layout is the same bytes.
        let again = try fixture.build(
            state: "b", name: "b",
            ["--cache-from", "type=local,src=\(cache)", "--cache-to", "type=local,dest=\(cache),mode=max"])
        #expect(Self.cachedSteps(again.progress).count == 2, "\(again.progress)")
        #expect(again.digest == first.digest)
        #expect(try Data(contentsOf: URL(fileURLWithPath: cache + "/index.json")) == index)
        try "FROM base\nCOPY app.txt /app.txt\nRUN exit 3\n".write(
            toFile: fixture.context + "/Dockerfile", atomically: true, encoding: .utf8)
        let failed = try HermeticProcess.hermetic([
            "build", fixture.context, "--state-dir", fixture.path("c"), "--build-context",
            "base=oci-layout://\(fixture.path("base"))", "--cache-to", "type=local,dest=\(cache),mode=max",
        ])
        #expect(failed.status != 0, "\(failed.standardError)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: cache + "/index.json")) == index)
        #expect(try Self.layoutSteps(cache).steps == 2)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: fixture.scratch.path).filter {
            $0.hasPrefix(".hermetic-")
        }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    /// Unknown types and keys, and a destination that is not a layout, are refused in one line naming them.
    @Test func badFlagsAreRefusedInOneLine() throws {
        let fixture = try Fixture(dockerfile: "FROM base\nCOPY app.txt /app.txt\n")
        let occupied = fixture.path("occupied")
        try FileManager.default.createDirectory(atPath: occupied, withIntermediateDirectories: true)
        try "keep\n".write(toFile: occupied + "/file", atomically: true, encoding: .utf8)
        let cases: [(flag: String, value: String, says: String)] = [
            ("--cache-to", "type=local,dest=x,compression=zstd", "unknown key \"compression\" for type=local"),
            ("--cache-to", "type=inline", "unknown type \"inline\" (supported: local, registry)"),
            ("--cache-to", "type=local,dest=x,mode=all", "mode must be min or max"),
            ("--cache-to", "type=local", "dest= is required"),
            ("--cache-to", "dest=x", "type= is required"),
            ("--cache-from", "type=local,dest=x", "unknown key \"dest\" for type=local (its keys: src)"),
            ("--cache-from", "type=local,src=a,src=b", "\"src\" is given twice"),
            ("--cache-to", "type=local,dest=\(occupied)", "neither an empty directory nor an OCI image layout"),
            ("--cache-to", "type=local,dest=\(fixture.context)", "which the build reads"),
        ]
        for item in cases {
            let outcome = try HermeticProcess.hermetic([
                "build", fixture.context, "--build-context", "base=oci-layout://\(fixture.path("base"))",
                item.flag, item.value,
            ])
            let lines = outcome.standardError.split(separator: "\n")
            #expect(outcome.status != 0 && lines.count == 1, "\(item.value): \(outcome.standardError)")
            #expect(
                outcome.standardError.hasPrefix("error: \(item.flag) \"")
                    && outcome.standardError.contains(item.says), "\(item.value): \(outcome.standardError)")
        }
        #expect(FileManager.default.fileExists(atPath: occupied + "/file"))
    }
}
