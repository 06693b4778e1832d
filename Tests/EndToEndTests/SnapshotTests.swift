import Foundation
import TestSupport
import Testing

@testable import Hermetic

/// Snapshots (SPEC §10): each layer unpacked once per store and stacked as overlay lowers. They must give
/// exactly the filesystem that unpacking every layer in order gives, save the work they exist for, and
/// never let a layout's lie about a diff_id through.
@Suite struct SnapshotTests {
    /// Every overlay case a layer can bring over its parents: deletions (whiteouts), a directory removed
    /// and made again (opaque), a hard link to a file of a lower layer, mode and time changes of lower
    /// files, symlinks. Each stage reads its stack with a RUN, so the listing is what steps saw. (Not a
    /// directory's link count: overlayfs reports 1 for a directory merged from several layers, SPEC §10.)
    static let dockerfile = """
        FROM base AS tree
        RUN mkdir -p /t/a/b /t/keep /t/gone && echo 1 > /t/a/b/f && echo 2 > /t/keep/k && echo 3 > /t/gone/g \\
            && ln /t/keep/k /t/keep/hard && ln -s ../keep/k /t/a/link && chmod 0750 /t/a && touch -d @1000 /t/a/b/f
        RUN rm -rf /t/gone && rm /t/keep/hard && rm -rf /t/a/b && mkdir /t/a/b && echo new > /t/a/b/n \\
            && chmod 0600 /t/keep/k && ln /t/keep/k /t/keep/hard2 && rm /etc/group
        RUN mkdir /t/gone && echo back > /t/gone/g2 && touch -d @2000 /t/keep
        RUN { find /t -type d -exec stat -c '%n %F %a %u %g %Y' {} + && \\
            find /t ! -type d -exec stat -c '%n %F %a %u %g %h %s %Y' {} + ; } | sort > /tree-listing && ls /etc >> /tree-listing
        FROM base
        COPY --from=tree /t /t
        COPY --from=tree /tree-listing /tree-listing
        COPY app.txt /app.txt
        RUN { find /t -type d -exec stat -c '%n %F %a %u %g %Y' {} + && \\
            find /t ! -type d -exec stat -c '%n %F %a %u %g %h %s %Y' {} + ; } | sort > /listing && ls /etc >> /listing

        """

    final class Fixture {
        let scratch: TemporaryDirectory
        let context: String
        let base: Digest
        var count = 0

        init(_ dockerfile: String = SnapshotTests.dockerfile) throws {
            scratch = try TemporaryDirectory(prefix: "snapshots-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "one\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
            base = try BaseImages.writeBusybox(at: scratch.path + "/base")
        }

        /// Builds with `state`; returns the image digest, the output tree and the progress text.
        func build(state: String, environment: [String: String] = [:]) throws -> (
            digest: String, out: String, progress: String
        ) {
            count += 1
            let out = scratch.path + "/out\(count)"
            let outcome = try HermeticProcess.hermetic(
                [
                    "build", context, "--state-dir", state, "--build-context",
                    "base=oci-layout://\(scratch.path)/base@\(base)", "-o", "type=local,dest=\(out)",
                    "--iidfile", out + ".iid", "--progress", "plain", "--source-date-epoch", "5000",
                ], environment: environment)
            try #require(outcome.status == 0, "build \(count) failed: \(outcome.standardError)")
            return (try String(contentsOfFile: out + ".iid", encoding: .utf8), out, outcome.standardError)
        }

        func snapshots(in state: String) -> Set<String> {
            Set((try? FileManager.default.contentsOfDirectory(atPath: state + "/store/snapshots")) ?? [])
        }
    }

    @Test func snapshotsGiveWhatUnpackingGives() throws {
        let fixture = try Fixture()
        let unpacked = try fixture.build(
            state: fixture.scratch.path + "/state-unpacked", environment: ["HERMETIC_SNAPSHOTS": "off"])
        #expect(fixture.snapshots(in: fixture.scratch.path + "/state-unpacked").isEmpty)
        let stacked = try fixture.build(state: fixture.scratch.path + "/state-stacked")
        // The stacked build really stacked: one snapshot per layer read (base, the tree stage's RUNs, the
        // final stage's COPYs), never zero.
        #expect(fixture.snapshots(in: fixture.scratch.path + "/state-stacked").count >= 5)
        #expect(stacked.digest == unpacked.digest)
        for name in ["/listing", "/tree-listing"] {
            let a = try String(contentsOfFile: unpacked.out + name, encoding: .utf8)
            let b = try String(contentsOfFile: stacked.out + name, encoding: .utf8)
            #expect(a == b, "\(name) differs between unpacking and snapshots")
        }
        let treeListing = try String(contentsOfFile: stacked.out + "/tree-listing", encoding: .utf8)
        let lines = treeListing.split(separator: "\n").map(String.init)
        // What the RUN over the snapshot stack saw: whiteouts hide, an opaque directory hides its old
        // entries, a hard link to a lower file counts 2.
        #expect(!lines.contains { $0.hasPrefix("/t/gone/g ") || $0.hasPrefix("/t/keep/hard ") })
        #expect(!lines.contains { $0.hasPrefix("/t/a/b/f ") || $0 == "group" })
        #expect(lines.contains("passwd"))
        #expect(lines.contains { $0.hasPrefix("/t/gone/g2 regular file 644 0 0 1 5 ") })
        #expect(lines.contains { $0.hasPrefix("/t/keep/k regular file 600 0 0 2 2 ") })
        #expect(lines.contains { $0.hasPrefix("/t/keep/hard2 regular file 600 0 0 2 2 ") })
        #expect(lines.contains("/t/keep directory 755 0 0 2000"))
        #expect(lines.contains { $0.hasPrefix("/t/a directory 750 ") })
        // The final stage's base keeps /etc/group: a deletion in one stage's snapshot is not another's.
        let listing = try String(contentsOfFile: stacked.out + "/listing", encoding: .utf8)
        #expect(listing.split(separator: "\n").contains("group"))
    }

    @Test func aLateChangeUnpacksNothingBuiltBefore() throws {
        let fixture = try Fixture()
        let state = fixture.scratch.path + "/state"
        _ = try fixture.build(state: state)
        let before = fixture.snapshots(in: state)
        try "two\n".write(toFile: fixture.context + "/app.txt", atomically: true, encoding: .utf8)
        let warm = try fixture.build(state: state)
        let made = fixture.snapshots(in: state).subtracting(before)
        // Only the new app.txt layer was unpacked: the final RUN reads it.
        #expect(made.count == 1, "snapshots made by the rebuild: \(made.sorted())")
        #expect(warm.progress.components(separatedBy: " CACHED").count - 1 == 6)
        let cold = try fixture.build(state: fixture.scratch.path + "/state-cold")
        #expect(warm.digest == cold.digest)
    }

    /// A base layer whose blob was never seen is checked again, even when a snapshot of the diff_id its
    /// config claims is in the store.
    @Test func aLayoutLyingAboutADiffIDIsRefusedWithAWarmStore() throws {
        let scratch = try TemporaryDirectory(prefix: "snapshot-lie-")
        let honestTar = RawTar.archive([
            RawTar.Entry(name: "bin/", type: UInt8(ascii: "5")),
            RawTar.Entry(name: "bin/x", data: Array("honest".utf8)),
        ])
        let otherTar = RawTar.archive([RawTar.Entry(name: "bin/", type: UInt8(ascii: "5"))])
        let honest = try BaseImages.writeLayout(at: scratch.path + "/honest", rawTar: honestTar)
        try FileSystem.writeAtomically(otherTar, to: scratch.path + "/other.tar")
        let lying = try BaseImages.writeLayout(
            at: scratch.path + "/lying", layerFile: scratch.path + "/other.tar", digest: Digest.sha256(of: otherTar),
            diffID: Digest.sha256(of: honestTar), size: Int64(otherTar.count), mediaType: MediaType.layerTar)
        try FileManager.default.createDirectory(atPath: scratch.path + "/ctx", withIntermediateDirectories: true)
        try "FROM base\nLABEL a=b\n".write(toFile: scratch.path + "/ctx/Dockerfile", atomically: true, encoding: .utf8)
        let state = scratch.path + "/state"
        func build(_ layout: String, _ digest: Digest) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic([
                "build", scratch.path + "/ctx", "--state-dir", state, "--build-context",
                "base=oci-layout://\(scratch.path)/\(layout)@\(digest)", "--progress", "quiet",
            ])
        }
        let first = try build("honest", honest)
        try #require(first.status == 0, "\(first.standardError)")
        let honestSnapshot = state + "/store/snapshots/" + SnapshotStore.name(Digest.sha256(of: honestTar))
        #expect(FileManager.default.fileExists(atPath: honestSnapshot + "/fs/bin/x"))
        let lied = try build("lying", lying)
        #expect(lied.status != 0)
        #expect(lied.standardError.contains("diff_id mismatch"), "\(lied.standardError)")
        #expect(lied.standardError.contains("lying"), "the error names the layout: \(lied.standardError)")
    }

    /// A directory in a snapshot's place that no build made (no record) stops the build with the way out,
    /// and after `store check --repair` the build gives its image.
    @Test func aDamagedSnapshotIsNamedWithTheWayOut() throws {
        let fixture = try Fixture("FROM base\nRUN echo x > /x\n")
        let state = fixture.scratch.path + "/state"
        let cold = try fixture.build(state: fixture.scratch.path + "/state-cold")
        let baseLayout = fixture.scratch.path + "/base"
        let index =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: baseLayout + "/index.json"))) as? [String: Any]
        let top = try #require((index?["manifests"] as? [[String: Any]])?.first?["digest"] as? String)
        let manifest =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: baseLayout + "/blobs/sha256/" + top.dropFirst(7))))
            as? [String: Any]
        let configDigest = try #require((manifest?["config"] as? [String: Any])?["digest"] as? String)
        let config =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: baseLayout + "/blobs/sha256/" + configDigest.dropFirst(7))))
            as? [String: Any]
        let diffID = try #require(((config?["rootfs"] as? [String: Any])?["diff_ids"] as? [String])?.first)
        let bogus = state + "/store/snapshots/" + SnapshotStore.name(try Digest(parsing: diffID))
        try FileManager.default.createDirectory(atPath: bogus + "/fs", withIntermediateDirectories: true)
        let outcome = try HermeticProcess.hermetic([
            "build", fixture.context, "--state-dir", state, "--build-context",
            "base=oci-layout://\(baseLayout)@\(fixture.base)", "--progress", "quiet",
        ])
        #expect(outcome.status == 1)
        #expect(outcome.standardError.contains("run hermetic store check --repair"), "\(outcome.standardError)")
        #expect(try HermeticProcess.hermetic(["store", "check", "--repair", "--state-dir", state]).status == 0)
        #expect(try fixture.build(state: state).digest == cold.digest)
    }

    @Test func storeCommandsSeeSnapshots() throws {
        let fixture = try Fixture()
        let state = fixture.scratch.path + "/state"
        _ = try fixture.build(state: state)
        let du = try HermeticProcess.hermetic(["du", "--state-dir", state])
        let line = du.standardOutput.split(separator: "\n").first { $0.hasPrefix("snapshots\t") }
        let entries = line.flatMap { Int($0.split(separator: "\t")[1]) } ?? 0
        #expect(entries == fixture.snapshots(in: state).count && entries > 0, "\(du.standardOutput)")

        // A directory that is no snapshot (no record) is found, and removed by --repair.
        let bogus = state + "/store/snapshots/" + String(repeating: "a", count: 64)
        try FileManager.default.createDirectory(atPath: bogus + "/fs", withIntermediateDirectories: true)
        let check = try HermeticProcess.hermetic(["store", "check", "--state-dir", state])
        #expect(check.status == 1)
        #expect(check.standardOutput.contains(bogus), "\(check.standardOutput)")
        let repair = try HermeticProcess.hermetic(["store", "check", "--repair", "--state-dir", state])
        #expect(repair.status == 0, "\(repair.standardError)")
        #expect(!FileManager.default.fileExists(atPath: bogus))

        let prune = try HermeticProcess.hermetic(["prune", "--state-dir", state])
        #expect(prune.status == 0, "\(prune.standardError)")
        #expect(fixture.snapshots(in: state).isEmpty)
        // A build after the prune makes them again and gives the same image.
        _ = try fixture.build(state: state)
        #expect(!fixture.snapshots(in: state).isEmpty)
    }
}

/// Short links let a long stack mount; one too long for overlayfs's one-page options even so is unpacked
/// into a directory instead, mid-build. Both give the image that unpacking gives.
@Suite struct LongSnapshotStackTests {
    static func build(steps: Int) throws -> (made: Int, listing: String) {
        let run = (1...steps).map { "RUN echo \($0) > /f\($0)" }.joined(separator: "\n")
        let fixture = try SnapshotTests.Fixture(
            "FROM base\n\(run)\nRUN rm /f7 && ls / > /listing && cat /f\(steps) >> /listing\n")
        let stacked = try fixture.build(state: fixture.scratch.path + "/state-stacked")
        let unpacked = try fixture.build(
            state: fixture.scratch.path + "/state-unpacked", environment: ["HERMETIC_SNAPSHOTS": "off"])
        #expect(stacked.digest == unpacked.digest)
        let listing = try String(contentsOfFile: stacked.out + "/listing", encoding: .utf8)
        #expect(listing.contains("f6\n") && !listing.contains("f7\n") && listing.hasSuffix("\(steps)\n"), "\(listing)")
        return (fixture.snapshots(in: fixture.scratch.path + "/state-stacked").count, listing)
    }

    @Test func fortyFiveLayersStack() throws {
        // The base and the 45 RUN layers the last RUN reads: all stacked (without short links, about 30).
        #expect(try Self.build(steps: 45).made == 46)
    }

    @Test func aStackTooLongToMountIsUnpackedInstead() throws {
        // The first layers were stacked before the stack grew too long; the rest were not.
        let made = try Self.build(steps: 90).made
        #expect(made >= 40 && made < 91, "\(made) snapshots")
    }
}
