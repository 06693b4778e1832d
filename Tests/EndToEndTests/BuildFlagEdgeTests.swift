import Foundation
import Hermetic
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Flags and destinations at their edges: a relative `--state-dir`, negative values given as a separate
/// word, a `type=local` output on a full disk.
@Suite(.serialized) struct BuildFlagEdgeTests {
    typealias Scene = ConcurrencyTests.Scene

    /// A relative `--state-dir` is the current directory's (as TMPDIR is), resolved before any step runs:
    /// the cache-mount step after a plain one works, and the cache is where the person meant.
    @Test func aRelativeStateDirectoryIsTheCurrentDirectorys() throws {
        let scene = try Scene(
            dockerfile: """
                FROM busybox
                RUN echo a > /a
                RUN --mount=type=cache,target=/c touch /c/x
                """)
        var arguments = scene.arguments(["-o", "type=oci,dest=out"])
        let index = try #require(arguments.firstIndex(of: "--state-dir"))
        arguments[index + 1] = "relative-state"
        let outcome = try HermeticProcess.hermetic(
            arguments, environment: ["TMPDIR": scene.temporary], currentDirectory: scene.scratch.path)
        #expect(outcome.status == 0, "\(outcome.standardError)")
        let cache = scene.scratch.path + "/relative-state/cache/" + Digest.sha256(of: Array("/c".utf8)).hex
        #expect(FileManager.default.fileExists(atPath: cache + "/x"))
    }

    /// `--step-timeout -1` and `--source-date-epoch -1` say what `--step-timeout=-1` says, not that the
    /// value is missing.
    @Test(arguments: ["--step-timeout", "--source-date-epoch"]) func aNegativeValueAsItsOwnWord(flag: String)
        throws
    {
        let scene = try Scene(dockerfile: "FROM busybox\n")
        let joined = try HermeticProcess.hermetic(["build", scene.context, "\(flag)=-1"])
        let separate = try HermeticProcess.hermetic(["build", scene.context, flag, "-1"])
        #expect(joined.status == 1)
        #expect(joined.standardError.hasPrefix("error: \(flag) \"-1\": "), "\(joined.standardError)")
        #expect(separate.status == joined.status)
        #expect(separate.standardError == joined.standardError)
    }

    /// A `type=local` output on a full disk (a 4 MiB tmpfs the test mounts) names the destination, not the
    /// layer whose file could not be written there; nothing is left on that disk.
    @Test func aLocalOutputOnAFullDiskNamesTheDestination() throws {
        let scene = try Scene(
            dockerfile: """
                FROM busybox
                RUN head -c 8388608 /dev/zero > /big
                """)
        let disk = scene.scratch.path + "/disk"
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
        let mounted = try HermeticProcess.run("/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", disk])
        try #require(mounted.status == 0, "mount a tmpfs: \(mounted.standardError)")
        defer { _ = try? HermeticProcess.run("/bin/umount", [disk]) }
        let outcome = try HermeticProcess.hermetic(
            scene.arguments(["-o", "type=local,dest=\(disk)/dest"]), environment: ["TMPDIR": scene.temporary])
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError.hasPrefix("error: --output dest=\(disk)/dest: cannot write it: ")
                && outcome.standardError.contains("No space left on device"), "\(outcome.standardError)")
        #expect(!outcome.standardError.contains("layer sha256"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: disk) == [])
    }
}
