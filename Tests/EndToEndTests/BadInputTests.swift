import Foundation
import Hermetic
import TestSupport
import Testing

/// Bad input of every kind gets ONE line on stderr, `error: …`, naming the file and line or the argument,
/// a non-zero exit, and no output left behind.
@Suite struct BadInputTests {
    struct Case: CustomStringConvertible, Sendable {
        var name: String
        var dockerfile: String
        var files: [String: String] = [:]
        var extraArguments: [String] = []
        /// Text the one error line must contain (the locator and the gist).
        var expected: [String]
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "unknown instruction", dockerfile: "FROM scratch\nFROBNICATE x\n",
            expected: ["Dockerfile:2:", "FROBNICATE"]),
        Case(
            name: "unterminated heredoc", dockerfile: "FROM scratch\nCOPY <<EOF /x\nnever ends\n",
            expected: ["Dockerfile:2:", "heredoc"]),
        Case(
            name: "bad escape directive", dockerfile: "# escape=x\nFROM scratch\n",
            expected: ["Dockerfile:1:", "escape"]),
        Case(
            name: "line over 64 KiB", dockerfile: "FROM scratch\nLABEL a=\(String(repeating: "x", count: 70_000))\n",
            expected: ["Dockerfile:2:"]),
        Case(
            name: "stage cycle",
            dockerfile: "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n",
            expected: ["Dockerfile:", "circular dependency"]),
        Case(
            name: "missing file", dockerfile: "FROM scratch\nCOPY missing.txt /\n",
            expected: ["Dockerfile:2:", "missing.txt"]),
        Case(
            name: "source outside the context", dockerfile: "FROM scratch\nCOPY ../etc/passwd /\n",
            expected: ["Dockerfile:2:", "../etc/passwd"]),
        Case(name: "instruction before FROM", dockerfile: "ENV A=b\nFROM scratch\n", expected: ["Dockerfile:1:"]),
        Case(
            name: "empty Dockerfile", dockerfile: "",
            expected: ["error: Dockerfile:1: the Dockerfile cannot be empty"]),
        Case(
            name: "Dockerfile of comments only", dockerfile: "# syntax=docker/dockerfile:1\n\n# nothing here\n",
            expected: ["error: Dockerfile:3: file with no instructions"]),
        Case(
            name: "unknown target", dockerfile: "FROM scratch AS a\n", extraArguments: ["--target", "nope"],
            expected: ["--target", "nope"]),
        Case(
            name: "bad output flag", dockerfile: "FROM scratch\n",
            extraArguments: ["--output", "type=registry,dest=x"],
            expected: ["--output", "registry"]),
        Case(
            name: "bad epoch", dockerfile: "FROM scratch\n", extraArguments: ["--source-date-epoch", "yesterday"],
            expected: ["--source-date-epoch"]),
        Case(
            name: "unpinned base", dockerfile: "FROM base\n", extraArguments: [],
            expected: ["Dockerfile:1:", "base"]),
        Case(
            name: "RUN without the sandbox", dockerfile: "FROM scratch\nRUN true\n", expected: ["Dockerfile:2:", "RUN"]),
        Case(
            name: "hostile digest in FROM", dockerfile: "FROM base@sha256:../../../etc/passwd\n",
            expected: ["Dockerfile:1:"]),
        Case(
            name: "bad chown user", dockerfile: "FROM scratch\nCOPY --chown=nosuchuser a.txt /\n",
            files: ["a.txt": "a"], expected: ["Dockerfile:2:", "nosuchuser"]),
    ]

    @Test(arguments: cases)
    func failsWithOneClearLine(testCase: Case) throws {
        let scratch = try TemporaryDirectory(prefix: "badinput-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try testCase.dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        for (name, text) in testCase.files {
            try text.write(toFile: context + "/" + name, atomically: true, encoding: .utf8)
        }
        let output = scratch.path + "/out"
        let outcome = try HermeticProcess.hermetic(
            [
                "build", context, "--progress", "quiet", "--output", "type=oci,dest=\(output)",
                "--iidfile", scratch.path + "/iid",
            ] + testCase.extraArguments)
        #expect(outcome.status != 0)
        let lines = outcome.standardError.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(lines.count == 1, "expected one line, got: \(outcome.standardError)")
        let line = String(lines.first ?? "")
        #expect(line.hasPrefix("error: "), "got: \(line)")
        for fragment in testCase.expected {
            #expect(line.contains(fragment), "\"\(line)\" should mention \"\(fragment)\"")
        }
        #expect(!FileManager.default.fileExists(atPath: output), "an output was left behind")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/iid"), "an iidfile was left behind")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0 != "ctx" }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
    }
}
