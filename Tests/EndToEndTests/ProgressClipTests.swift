import Foundation
import Hermetic
import TestSupport
import Testing

/// A step's output in plain progress is clipped at BuildKit's step log limit (2 MiB, or
/// `BUILDKIT_STEP_LOG_MAX_SIZE`), with BuildKit's line: a stage held behind another keeps its output in
/// memory until it is written, so it must be bounded. The image does not change.
extension ProgressTests {
    /// Two stages that run at once, each writing 3 MiB: the later one is held while the first runs.
    static let loud = """
        FROM busybox AS first
        RUN yes first | head -c 3145728
        FROM busybox
        RUN yes second | head -c 3145728
        COPY --from=first /etc/hostname /first

        """

    @Test func stepOutputIsClippedAtBuildKitsLimit() throws {
        let build = try Build(Self.loud)
        let outcome = try build.run(["--progress", "plain", "--no-cache"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let clip = "\n[output clipped, log limit 2MiB reached]\n"
        #expect(outcome.standardError.components(separatedBy: clip).count == 3, "clipped once per step")
        let firstLines = outcome.standardError.split(separator: "\n").filter { $0 == "first" }.count
        // 2 MiB of "first\n" (6 bytes a line), the last line cut short.
        #expect(firstLines == (2 << 20) / 6)
        #expect(outcome.standardError.utf8.count < 4 << 20 + 4096)

        let serial = try build.run(["--progress", "plain", "--no-cache", "--jobs", "1"])
        #expect(serial.standardOutput == outcome.standardOutput)
        #expect(try Self.normalized(serial.standardError) == Self.normalized(outcome.standardError))
    }

    @Test(arguments: [("1024", "1KiB"), ("1000", "1000B")])
    func theLimitIsBuildKitsEnvironmentVariable(value: String, shown: String) throws {
        let build = try Build(Self.loud)
        let outcome = try HermeticProcess.hermetic(
            build.arguments + ["--progress", "plain"], environment: ["BUILDKIT_STEP_LOG_MAX_SIZE": value])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let clip = "\n[output clipped, log limit \(shown) reached]\n"
        let parts = outcome.standardError.components(separatedBy: clip)
        try #require(parts.count == 3, "\(outcome.standardError.prefix(4000))")
        let limit = Int(value) ?? 0
        // What the first step showed: everything after its `#K RUN` line, `limit` bytes exactly.
        let shownBytes = parts[0].split(separator: "RUN yes first | head -c 3145728\n", maxSplits: 1).last ?? ""
        #expect(shownBytes.utf8.count == limit)
    }

    @Test func aNegativeLimitShowsEverything() throws {
        let build = try Build(Self.loud)
        let outcome = try HermeticProcess.hermetic(
            build.arguments + ["--progress", "plain"], environment: ["BUILDKIT_STEP_LOG_MAX_SIZE": "-1"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(!outcome.standardError.contains("[output clipped"))
        #expect(outcome.standardError.split(separator: "\n").filter { $0 == "second" }.count == 3_145_728 / 7)
    }
}
