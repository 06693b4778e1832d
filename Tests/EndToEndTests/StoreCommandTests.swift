import Foundation
import Hermetic
import TestSupport
import Testing

/// `hermetic du`, `hermetic prune` and `hermetic store check` on a store that real builds filled.
@Suite struct StoreCommandTests {
    final class Fixture {
        let scratch: TemporaryDirectory
        let state: String
        let base: Digest

        init() throws {
            scratch = try TemporaryDirectory(prefix: "store-")
            state = scratch.path + "/state"
            let context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try """
            FROM base
            COPY app.txt /app.txt
            RUN cp /app.txt /copy.txt && mkdir -p /data && echo data > /data/file

            """.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
            base = try BaseImages.writeBusybox(at: scratch.path + "/base")
        }

        func build(_ name: String) throws -> (digest: String, progress: String) {
            let outcome = try HermeticProcess.hermetic([
                "build", scratch.path + "/ctx", "--state-dir", state, "--build-context",
                "base=oci-layout://\(scratch.path)/base@\(base)", "-o", "type=oci,dest=\(scratch.path)/\(name)",
                "--iidfile", scratch.path + "/\(name).iid",
            ])
            try #require(outcome.status == 0, "build \(name): \(outcome.standardError)")
            return (try String(contentsOfFile: scratch.path + "/\(name).iid", encoding: .utf8), outcome.standardError)
        }

        func hermetic(_ arguments: [String]) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(arguments + ["--state-dir", state])
        }

        func blobs() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: state + "/store/blobs/sha256").sorted()
        }
    }

    @Test func duShowsWhatBuildsLeft() throws {
        let fixture = try Fixture()
        _ = try fixture.build("one")
        let usage = try fixture.hermetic(["du"])
        #expect(usage.status == 0, "\(usage.standardError)")
        let lines = usage.standardOutput.split(separator: "\n").map(String.init)
        #expect(lines.first == "KIND\tENTRIES\tSIZE\tLAST USED")
        // Two cached steps (COPY and RUN), one compressed layer per exported layer (two), their blobs and
        // the base image's layer; the snapshots of the base and of the COPY's layer (the RUN read both).
        #expect(lines.contains { $0.hasPrefix("cached steps\t2\t") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("compressed layers\t2\t") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("blobs\t5\t") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("snapshots\t2\t") }, "\(lines)")
        #expect(lines.last?.hasPrefix("Total:\t") == true)
    }

    @Test func checkFindsADamagedBlobAndRepairRemovesIt() throws {
        let fixture = try Fixture()
        let cold = try fixture.build("cold")
        let clean = try fixture.hermetic(["store", "check"])
        #expect(clean.status == 0 && clean.standardOutput == "the store is consistent\n", "\(clean.standardOutput)")
        // Flip one byte of one blob: its bytes no longer have its name.
        let blobs = try fixture.blobs()
        let victim = fixture.state + "/store/blobs/sha256/" + blobs[0]
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: victim)))
        bytes[bytes.count / 2] ^= 0xff
        try Data(bytes).write(to: URL(fileURLWithPath: victim))
        let damaged = try fixture.hermetic(["store", "check"])
        #expect(damaged.status == 1)
        #expect(damaged.standardOutput.contains(blobs[0]) && damaged.standardOutput.contains("its bytes are sha256:"))
        let repaired = try fixture.hermetic(["store", "check", "--repair"])
        #expect(repaired.status == 0, "\(repaired.standardError)")
        #expect(repaired.standardOutput.contains("(removed)"))
        #expect(!FileManager.default.fileExists(atPath: victim))
        #expect(try fixture.hermetic(["store", "check"]).status == 0)
        // The next build misses what was removed, makes it again, and gives the same image.
        let again = try fixture.build("again")
        #expect(again.digest == cold.digest)
    }

    /// A stored blob whose bytes changed is caught when it is used (a tar's diff_id when it is applied, a
    /// compressed blob's digest when it is copied to an output): the build stops with the way out, and after
    /// `store check --repair` the same build gives the same image.
    @Test func aDamagedCachedLayerStopsTheBuildWithTheWayOut() throws {
        let fixture = try Fixture()
        let cold = try fixture.build("cold")
        for blob in try fixture.blobs() {
            let path = fixture.state + "/store/blobs/sha256/" + blob
            var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
            bytes[bytes.count / 3] ^= 0x01
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }
        let outcome = try HermeticProcess.hermetic([
            "build", fixture.scratch.path + "/ctx", "--state-dir", fixture.state, "--build-context",
            "base=oci-layout://\(fixture.scratch.path)/base@\(fixture.base)", "-o",
            "type=oci,dest=\(fixture.scratch.path)/damaged",
        ])
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError.contains(
                "the build cache's copy of this layer cannot be used")
                && outcome.standardError.contains("run hermetic store check --repair"),
            "\(outcome.standardError)")
        #expect(try fixture.hermetic(["store", "check", "--repair"]).status == 0)
        #expect(try fixture.build("repaired").digest == cold.digest)
    }

    /// A step that runs again writes its tar afresh: the store takes it in place of a damaged copy under
    /// the same name, so `--no-cache` heals what it rewrites.
    @Test func aStepRunAgainReplacesItsDamagedTar() throws {
        let fixture = try Fixture()
        let cold = try fixture.build("cold")
        var damaged: [String] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: fixture.state + "/store/steps") {
            let record = try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: fixture.state + "/store/steps/" + name)))
            guard let layer = (record as? [String: Any])?["layer"] as? [String: Any],
                let diffID = layer["diffID"] as? String
            else { continue }
            let path = fixture.state + "/store/blobs/sha256/" + diffID.dropFirst("sha256:".count)
            var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
            bytes[bytes.count / 3] ^= 0x01
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            damaged.append(path)
        }
        try #require(damaged.count == 2, "\(damaged)")
        let check = try fixture.hermetic(["store", "check"])
        #expect(check.status == 1)
        let again = try HermeticProcess.hermetic([
            "build", fixture.scratch.path + "/ctx", "--state-dir", fixture.state, "--no-cache", "--build-context",
            "base=oci-layout://\(fixture.scratch.path)/base@\(fixture.base)", "-o",
            "type=oci,dest=\(fixture.scratch.path)/again", "--iidfile", fixture.scratch.path + "/again.iid",
        ])
        #expect(again.status == 0, "\(again.standardError)")
        #expect(try String(contentsOfFile: fixture.scratch.path + "/again.iid", encoding: .utf8) == cold.digest)
        let healed = try fixture.hermetic(["store", "check"])
        #expect(healed.standardOutput == "the store is consistent\n", "\(healed.standardOutput)")
    }

    @Test func pruneRemovesWhatTheFilterAndSizeSay() throws {
        let fixture = try Fixture()
        let cold = try fixture.build("cold")
        let recent = try fixture.hermetic(["prune", "--filter", "until=1h", "--force"])
        #expect(
            recent.status == 0 && recent.standardOutput.hasPrefix("Total:\t0B in 0 entries"), "\(recent.standardOutput)"
        )
        #expect(try fixture.build("warm").progress.contains("CACHED"))
        let all = try fixture.hermetic(["prune", "--all", "--force"])
        #expect(all.status == 0, "\(all.standardError)")
        #expect(try fixture.blobs().isEmpty)
        let after = try fixture.build("after")
        #expect(!after.progress.contains("CACHED"))
        #expect(after.digest == cold.digest)
        let kept = try fixture.hermetic(["prune", "--keep-storage", "0", "--force"])
        #expect(kept.status == 0)
        #expect(try fixture.blobs().isEmpty)
    }

    @Test(arguments: [
        (
            ["prune", "--filter", "since=1h"],
            "error: --filter \"since=1h\": expected until=DURATION (e.g. 24h, 90m, 30s)"
        ),
        (["prune", "--keep-storage", "lots"], "error: --keep-storage \"lots\": expected a size such as 512MB or 10GB"),
    ])
    func badFlagsAreOneLine(_ arguments: [String], _ message: String) throws {
        let fixture = try Fixture()
        _ = try fixture.build("one")
        let outcome = try fixture.hermetic(arguments)
        #expect(outcome.status == 1)
        #expect(outcome.standardError == message + "\n")
    }

    @Test func aStateDirectoryWithoutAStoreIsNamed() throws {
        let scratch = try TemporaryDirectory(prefix: "store-none-")
        let outcome = try HermeticProcess.hermetic(["du", "--state-dir", scratch.path])
        #expect(outcome.status == 1)
        #expect(outcome.standardError == "error: --state-dir \"\(scratch.path)\": holds no store (no build used it)\n")
    }
}
