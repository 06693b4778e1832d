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
            name: "WORKDIR expanding to nothing", dockerfile: "FROM scratch\nARG EMPTY\nWORKDIR $EMPTY\n",
            expected: ["Dockerfile:3:", "normalizing workdir: cannot normalize nothing"]),
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
            name: "bad glob", dockerfile: "FROM scratch\nCOPY [ /x\n",
            expected: ["Dockerfile:2:", "syntax error in pattern"]),
        Case(
            name: "empty platform", dockerfile: "FROM scratch\n", extraArguments: ["--platform", ","],
            expected: ["--platform"]),
        Case(
            name: "bad tag", dockerfile: "FROM scratch\n", extraArguments: ["-t", "UPPER:::bad tag"],
            expected: ["-t", "invalid reference format"]),
        Case(
            name: "uppercase tag", dockerfile: "FROM scratch\n", extraArguments: ["-t", "Example/App:1"],
            expected: ["-t", "lowercase"]),
        Case(
            name: "missing secret file", dockerfile: "FROM scratch\n",
            extraArguments: ["--secret", "id=x,src=/nonexistent/secret"], expected: ["--secret", "/nonexistent"]),
        Case(
            name: "ssh socket that is not one", dockerfile: "FROM scratch\n",
            extraArguments: ["--ssh", "default=/etc/passwd"], expected: ["--ssh", "not a Unix socket"]),
        Case(
            name: "state dir that is a file", dockerfile: "FROM scratch\n",
            extraArguments: ["--state-dir", "/etc/passwd"], expected: ["--state-dir"]),
        Case(
            name: "named context with a newline", dockerfile: "FROM scratch\n",
            extraArguments: ["--build-context", "x\ny=/tmp"], expected: ["--build-context", "x\\ny"]),
        Case(
            name: "bad chown user", dockerfile: "FROM scratch\nCOPY --chown=nosuchuser a.txt /\n",
            files: ["a.txt": "a"], expected: ["Dockerfile:2:", "nosuchuser"]),
        // A layer holding it would be refused by every applier (and ours once removed the root's parent).
        Case(
            name: "COPY to a whiteout of ..", dockerfile: "FROM scratch\nCOPY a.txt /.wh...\n",
            files: ["a.txt": "a"], expected: ["Dockerfile:2:", "\".wh...\"", "invalid whiteout name"]),
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

    /// Destinations the build must not touch: an input of the build (the context, or a directory holding it),
    /// a non-empty directory that is not ours, a side file whose directory is missing. Each is refused up
    /// front, with the context and the directory left exactly as they were and no output written.
    /// Swift reads argv from /proc/self/cmdline: without /proc a build must not pass for a bare `hermetic`.
    @Test func withoutProcTheCommandFailsInsteadOfPrintingHelp() throws {
        let outcome = try HermeticProcess.run(
            try ExternalTools.require("unshare"),
            [
                "-m", "--propagation", "private", "/bin/sh", "-c", "umount -l /proc && exec \"$0\" build /nonexistent",
                HermeticProcess.binaryPath,
            ])
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError
                == "error: hermetic cannot read its command line: /proc is not mounted (hermetic needs /proc)\n")
        #expect(outcome.standardOutput.isEmpty)
    }

    @Test func destinationsThatWouldLoseDataAreRefused() throws {
        let scratch = try TemporaryDirectory(prefix: "destinations-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context + "/src", withIntermediateDirectories: true)
        try "FROM scratch\nCOPY src/ /a/\n".write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        try "main\n".write(toFile: context + "/src/main.c", atomically: true, encoding: .utf8)
        let precious = scratch.path + "/precious"
        try FileManager.default.createDirectory(atPath: precious, withIntermediateDirectories: true)
        try "keep\n".write(toFile: precious + "/CANARY", atomically: true, encoding: .utf8)
        // A directory whose only entry has a name that is not UTF-8 is not empty either.
        let oddOnly = scratch.path + "/odd"
        try FileManager.default.createDirectory(atPath: oddOnly, withIntermediateDirectories: true)
        let oddName = Array((oddOnly + "/caf").utf8).map { CChar(bitPattern: $0) } + [CChar(bitPattern: 0xe9), 0]
        let oddFD = open(oddName, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
        try #require(oddFD >= 0)
        close(oddFD)
        let key = scratch.path + "/precious/signing.pem"
        try #require(try HermeticProcess.hermetic(["key", "generate", "--out", key]).status == 0)
        let keyBefore = try String(contentsOfFile: key, encoding: .utf8)
        let cases: [([String], String)] = [
            (["-o", "type=local,dest=\(oddOnly)"], "--output"),
            (
                ["-o", "type=oci,dest=\(scratch.path)/out", "--sign-key", key, "--metadata-file", key],
                "--metadata-file"
            ),
            (["-o", "type=local,dest=\(context)"], "--output"),
            (["-o", "type=oci,dest=\(scratch.path)"], "--output"),
            (["-o", "type=local,dest=\(context)/src/.."], "--output"),
            (["-o", "type=oci,dest=\(precious)"], "--output"),
            (["-o", "type=local,dest=\(precious)"], "--output"),
            (["-o", "type=oci,dest=\(precious)/CANARY/x"], "--output"),
            (["-o", "type=oci,dest=\(scratch.path)/out", "--iidfile", "\(scratch.path)/missing/iid"], "--iidfile"),
            (["-o", "type=oci,dest=\(scratch.path)/out", "--metadata-file", precious], "--metadata-file"),
            (["-o", "type=oci,dest=\(scratch.path)/out", "-o", "type=local,dest=\(scratch.path)/out"], "--output"),
        ]
        for (arguments, flag) in cases {
            let outcome = try HermeticProcess.hermetic(["build", context, "--progress", "quiet"] + arguments)
            let lines = outcome.standardError.split(separator: "\n")
            #expect(outcome.status == 1 && lines.count == 1, "\(arguments): \(outcome.standardError)")
            #expect(lines.first?.hasPrefix("error: \(flag)") == true, "\(arguments): \(outcome.standardError)")
            #expect(try String(contentsOfFile: context + "/src/main.c", encoding: .utf8) == "main\n")
            #expect(try String(contentsOfFile: precious + "/CANARY", encoding: .utf8) == "keep\n")
            #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"), "\(arguments)")
        }
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == ["ctx", "odd", "precious"])
        #expect(FileSystem.directoryByteNames(oddOnly)?.count == 1)
        #expect(try String(contentsOfFile: key, encoding: .utf8) == keyBefore)

        // What hermetic wrote before, it may replace: an OCI layout, and a local tree it marked (where the
        // filesystem has user xattrs; elsewhere the second build asks for an empty destination).
        for output in ["type=local,dest=\(scratch.path)/tree", "type=oci,dest=\(scratch.path)/layout"] {
            let first = try HermeticProcess.hermetic(["build", context, "--progress", "quiet", "-o", output])
            #expect(first.status == 0, "\(output): \(first.standardError)")
            let second = try HermeticProcess.hermetic(["build", context, "--progress", "quiet", "-o", output])
            if output.hasPrefix("type=local") && !OutputDestinationCheck.hasLocalMarker(scratch.path + "/tree") {
                #expect(second.status == 1 && second.standardError.contains("not written by hermetic"))
            } else {
                #expect(second.status == 0, "\(output): \(second.standardError)")
            }
        }
        #expect(try String(contentsOfFile: scratch.path + "/tree/a/main.c", encoding: .utf8) == "main\n")
    }

    /// Usage errors and values with line breaks are one line too: the parser's (exit 64) and ours (exit 1,
    /// the newline shown escaped).
    @Test func usageErrorsAndNewlinesInValuesAreOneLine() throws {
        let scratch = try TemporaryDirectory(prefix: "usage-")
        let cases: [([String], Int32)] = [
            // (`--source-date-epoch -1` is a value now, as `--source-date-epoch=-1`: BuildFlagEdgeTests.)
            (["build", scratch.path, "--source-date-epoch"], 64),
            (["build"], 64),
            (["frobnicate"], 64),
            (["build", scratch.path, "--platform", "linux/amd64\nlinux/arm64"], 1),
            (["build", scratch.path, "--build-arg", "A\nB"], 1),
        ]
        for (arguments, status) in cases {
            let outcome = try HermeticProcess.hermetic(arguments)
            let lines = outcome.standardError.split(separator: "\n")
            #expect(outcome.status == status, "\(arguments): \(outcome.standardError)")
            #expect(lines.count == 1 && lines[0].hasPrefix("error: "), "\(arguments): \(outcome.standardError)")
        }
        // A key is never overwritten unless asked.
        let key = scratch.path + "/key.pem"
        #expect(try HermeticProcess.hermetic(["key", "generate", "--out", key]).status == 0)
        let before = try String(contentsOfFile: key, encoding: .utf8)
        let again = try HermeticProcess.hermetic(["key", "generate", "--out", key])
        #expect(again.status == 1 && again.standardError.hasPrefix("error: --out"), "\(again.standardError)")
        #expect(try String(contentsOfFile: key, encoding: .utf8) == before)
        #expect(try HermeticProcess.hermetic(["key", "generate", "--out", key, "--force"]).status == 0)
        #expect(try String(contentsOfFile: key, encoding: .utf8) != before)

        let help = try HermeticProcess.hermetic(["build", "--help"])
        #expect(help.status == 0 && help.standardOutput.contains("USAGE: hermetic build"))
    }
}

extension BadInputTests {
    /// A context file whose name is not UTF-8 (layer format 1 stores UTF-8 names) is named, escaped, not
    /// silently left out of `COPY . /`; excluded by .dockerignore it is left out like any excluded file.
    @Test func aContextNameThatIsNotUTF8IsNamed() throws {
        let scratch = try TemporaryDirectory(prefix: "badinput-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context + "/sub", withIntermediateDirectories: true)
        try "FROM scratch\nCOPY . /\n".write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        let name = Array((context + "/sub/caf").utf8).map { CChar(bitPattern: $0) } + [CChar(bitPattern: 0xe9), 0]
        let fd = open(name, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        close(fd)
        let temporary = scratch.path + "/tmp"
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        func build(_ output: String) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                ["build", context, "--progress", "quiet", "--output", "type=oci,dest=\(scratch.path)/\(output)"],
                environment: ["TMPDIR": temporary])
        }
        let outcome = try build("out")
        #expect(outcome.status == 1)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: Dockerfile:2: COPY"), "\(outcome.standardError)")
        #expect(outcome.standardError.contains(#""sub/caf\xe9" in the build context"#), "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: temporary).isEmpty)
        try "sub/caf*\n".write(toFile: context + "/.dockerignore", atomically: true, encoding: .utf8)
        let excluded = try build("excluded")
        #expect(excluded.status == 0, "\(excluded.standardError)")
    }
}

/// Inputs that must be regular files: a FIFO (with no writer) or a device in their place gets one
/// `error:` line naming the path, never a hang. Each run has a timeout, so a hang fails the test.
@Suite struct NonRegularInputTests {
    enum Input: String, CaseIterable, Sendable {
        case dockerfileFIFO, dockerfileDevZero, signKeyFIFO, dockerIgnoreFIFO, lockFileFIFO
        case indexJSONFIFO, ociLayoutFIFO, inspectFIFO, verifyKeyFIFO, rebuildFIFO
    }

    @Test(arguments: Input.allCases)
    func refusedByNameWithoutHanging(input: Input) throws {
        let scratch = try TemporaryDirectory(prefix: "fifo-")
        let context = scratch.path + "/ctx"
        let fifo = scratch.path + "/fifo"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try "FROM scratch\n".write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        #expect(mkfifo(fifo, 0o644) == 0)
        let layout = scratch.path + "/base"
        let manifest = try BaseImages.writeGoldenBase(at: layout)
        let output = ["-o", "type=oci,dest=\(scratch.path)/out", "--progress", "quiet"]
        var arguments: [String]
        var named = fifo
        switch input {
        case .dockerfileFIFO: arguments = ["build", context, "-f", fifo] + output
        case .dockerfileDevZero:
            arguments = ["build", context, "-f", "/dev/zero"] + output
            named = "/dev/zero"
        case .signKeyFIFO: arguments = ["build", context, "--sign-key", fifo] + output
        case .dockerIgnoreFIFO, .lockFileFIFO:
            named = context + (input == .dockerIgnoreFIFO ? "/.dockerignore" : "/hermetic.lock")
            #expect(mkfifo(named, 0o644) == 0)
            arguments = ["build", context] + output
        case .indexJSONFIFO, .ociLayoutFIFO:
            named = layout + (input == .indexJSONFIFO ? "/index.json" : "/oci-layout")
            try FileManager.default.removeItem(atPath: named)
            #expect(mkfifo(named, 0o644) == 0)
            try "FROM base\n".write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            arguments = ["build", context, "--build-context", "base=oci-layout://\(layout)@\(manifest)"] + output
        case .inspectFIFO: arguments = ["inspect", fifo]
        case .verifyKeyFIFO: arguments = ["verify", fifo, "--key", fifo]
        case .rebuildFIFO: arguments = ["rebuild", fifo, "--context", context]
        }
        let outcome = try HermeticProcess.run(
            "/bin/sh", ["-c", "umask 022 && exec timeout 60 \"$0\" \"$@\"", HermeticProcess.binaryPath] + arguments,
            environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"])
        #expect(outcome.status == 1, "\(input): status \(outcome.status) (124 is a hang): \(outcome.standardError)")
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: "), "\(input): \(outcome.standardError)")
        let layoutNamed = input == .indexJSONFIFO || input == .ociLayoutFIFO
        #expect(outcome.standardError.contains(layoutNamed ? layout : named), "\(input): \(outcome.standardError)")
        switch input {
        case .dockerfileFIFO:
            // A pipe is a Dockerfile a person may hand over (-f -, -f /dev/stdin); with no writer it is empty.
            #expect(outcome.standardError.contains("cannot be empty"), "\(input): \(outcome.standardError)")
        case .signKeyFIFO, .verifyKeyFIFO:
            break  // keys may come through a pipe too: read as an empty key, refused as one, naming it
        default:
            #expect(outcome.standardError.contains("not a regular file"), "\(input): \(outcome.standardError)")
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"), "\(input)")
    }
}

/// The Dockerfile on standard input, as docker build takes it: `-f -` and `-f /dev/stdin` from a pipe.
@Suite struct DockerfileFromStandardInputTests {
    @Test func pipedDockerfilesBuildTheSameImage() throws {
        let scratch = try TemporaryDirectory(prefix: "stdin-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try "a\n".write(toFile: context + "/a.txt", atomically: true, encoding: .utf8)
        try "FROM scratch\nCOPY a.txt /a\n".write(
            toFile: scratch.path + "/Dockerfile", atomically: true, encoding: .utf8)
        var digests: [String] = []
        for flag in ["-", "/dev/stdin"] {
            let outcome = try HermeticProcess.run(
                "/bin/sh",
                [
                    "-c", "cat \"$1\" | \"$0\" build \"$2\" -f \"$3\" --progress quiet --provenance false -o \"$4\"",
                    HermeticProcess.binaryPath, scratch.path + "/Dockerfile", context, flag,
                    "type=oci,dest=\(scratch.path)/out\(digests.count)",
                ], environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"])
            #expect(outcome.status == 0, "-f \(flag): \(outcome.standardError)")
            digests.append(outcome.standardOutput)
        }
        let file = try HermeticProcess.hermetic([
            "build", context, "-f", scratch.path + "/Dockerfile", "--progress", "quiet", "--provenance", "false",
            "-o", "type=oci,dest=\(scratch.path)/file",
        ])
        #expect(digests == [file.standardOutput, file.standardOutput] && file.standardOutput.hasPrefix("sha256:"))
    }
}
