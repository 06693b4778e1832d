import Foundation
import Hermetic
import TestSupport
import Testing

/// `--progress` in buildx's forms (SPEC §5), through the real binary: plain text with each step's
/// duration, and the live tty view on a real terminal (a tmux pane, whose final screen is read back).
@Suite(.serialized) struct ProgressTests {
    struct Build {
        var scratch: TemporaryDirectory
        var context: String
        var baseDigest: Digest

        init(_ dockerfile: String, files: [String: String] = [:]) throws {
            scratch = try TemporaryDirectory(prefix: "progress-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            for (name, text) in files {
                try text.write(toFile: context + "/" + name, atomically: true, encoding: .utf8)
            }
            baseDigest = try BaseImages.writeBusybox(at: scratch.path + "/busybox")
        }

        var arguments: [String] {
            [
                "build", context, "--state-dir", scratch.path + "/state", "--build-context",
                "busybox=oci-layout://\(scratch.path)/busybox@\(baseDigest)", "-o",
                "type=oci,dest=\(scratch.path)/layout",
            ]
        }

        func run(_ extra: [String]) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(arguments + extra)
        }
    }

    /// Stderr with every duration (the only part that varies) replaced by `D`.
    static func normalized(_ text: String) throws -> String {
        let durations = try Regex(#"\d+\.\ds"#)
        return text.replacing(durations, with: "D")
    }

    /// Plain: `#K NAME`, the step's output, `#K DONE 0.3s`, an empty line; stage names only with several
    /// stages. Piped stderr makes `auto` choose plain.
    @Test func plainGivesEachStepItsDuration() throws {
        let build = try Build(
            """
            FROM busybox AS compile
            RUN echo compiled > /out
            FROM busybox
            COPY --from=compile /out /out
            RUN cat /out && echo second line

            """)
        // --no-cache: both runs run their steps (the second would otherwise be all cache hits, below).
        for mode in ["plain", "auto"] {
            let outcome = try build.run(["--progress", mode, "--no-cache"])
            #expect(outcome.status == 0, "\(outcome.standardError)")
            #expect(
                try Self.normalized(outcome.standardError) == """
                    #1 [compile 1/2] FROM busybox AS compile
                    #1 DONE D

                    #2 [compile 2/2] RUN echo compiled > /out
                    #2 DONE D

                    #3 [stage-1 1/3] FROM busybox
                    #3 DONE D

                    #4 [stage-1 2/3] COPY --from=compile /out /out
                    #4 DONE D

                    #5 [stage-1 3/3] RUN cat /out && echo second line
                    compiled
                    second line
                    #5 DONE D


                    """, "\(mode): \(outcome.standardError)")
        }
        // Warm: every RUN and COPY is buildx's `#K CACHED`, with no output and no DONE line.
        let warm = try build.run(["--progress", "plain"])
        #expect(warm.status == 0, "\(warm.standardError)")
        #expect(
            try Self.normalized(warm.standardError) == """
                #1 [compile 1/2] FROM busybox AS compile
                #1 DONE D

                #2 [compile 2/2] RUN echo compiled > /out
                #2 CACHED

                #3 [stage-1 1/3] FROM busybox
                #3 DONE D

                #4 [stage-1 2/3] COPY --from=compile /out /out
                #4 CACHED

                #5 [stage-1 3/3] RUN cat /out && echo second line
                #5 CACHED


                """, "warm: \(warm.standardError)")
        let failing = try Build("FROM busybox\nRUN echo about to fail && exit 3\n")
        let failed = try failing.run(["--progress", "plain"])
        #expect(failed.status == 1)
        let error =
            "Dockerfile:2: RUN: process \"/bin/sh -c echo about to fail && exit 3\" did not complete successfully: "
            + "exit code: 3" + BuildxMessagesTests.offlineNote
        #expect(
            try Self.normalized(failed.standardError) == """
                #1 [1/2] FROM busybox
                #1 DONE D

                #2 [2/2] RUN echo about to fail && exit 3
                about to fail
                #2 ERROR: \(error)

                error: \(error)

                """, "\(failed.standardError)")
    }

    /// In a multi-platform build every step names its platform; the step number is padded to the total's
    /// width, as BuildKit's prefixCommand does.
    @Test func multiPlatformStepsNameTheirPlatform() throws {
        var dockerfile = "FROM scratch\nCOPY f /f\n"
        for number in 1...9 { dockerfile += "LABEL n\(number)=\(number)\n" }
        let build = try Build(dockerfile, files: ["f": "f\n"])
        let outcome = try build.run(["--progress", "plain", "--platform", "linux/amd64,linux/arm64"])
        #expect(outcome.status == 0, "\(outcome.standardError)")
        let names = outcome.standardError.split(separator: "\n").filter { $0.hasPrefix("#") && !$0.contains(" DONE ") }
        var expected: [String] = []
        for platform in ["linux/amd64", "linux/arm64"] {
            expected += ["[\(platform)  1/11] FROM scratch", "[\(platform)  2/11] COPY f /f"]
            expected += (1...9).map { "[\(platform) \($0 + 2 < 10 ? " " : "")\($0 + 2)/11] LABEL n\($0)=\($0)" }
        }
        #expect(names.count == expected.count, "\(outcome.standardError)")
        for (index, (line, name)) in zip(names, expected).enumerated() {
            #expect(line == "#\(index + 1) \(name)", "\(outcome.standardError)")
        }
    }

    /// A tmux server of the test's own (its own socket), running one command in a pane of a known size.
    struct Terminal {
        /// Held by the terminal, so the socket outlives every use of it (`stop` included).
        let directory: TemporaryDirectory
        let tmux: String
        var socket: String { directory.path + "/tmux.sock" }

        init() throws {
            tmux = try ExternalTools.require("tmux")
            directory = try TemporaryDirectory(prefix: "progress-tty-")
        }

        func start(_ command: [String], columns: Int = 110, rows: Int = 30) throws {
            let quoted = command.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
            let line = quoted.joined(separator: " ") + "; echo EXIT=$?; sleep 600"
            // The server tmux starts keeps every descriptor it inherits: a pipe some test reads to its end (this
            // one's, or another's the test process had open) would then never end. It gets none (bash, as sh
            // cannot name a descriptor above 9).
            let closeInherited = #"for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done; "#
            let started = try HermeticProcess.run(
                try ExternalTools.require("bash"),
                [
                    "-c", closeInherited + #"exec "$0" "$@" </dev/null >/dev/null 2>&1"#, tmux, "-S", socket,
                    "new-session", "-d", "-x", String(columns), "-y", String(rows), "/bin/sh", "-c", line,
                ],
                environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "xterm"])
            try #require(started.status == 0, "tmux new-session failed (status \(started.status))")
        }

        func screen() throws -> String {
            try HermeticProcess.run(tmux, ["-S", socket, "capture-pane", "-p"]).standardOutput
        }

        /// Reads the screen until `done` holds of it (a minute at most).
        func wait(for what: String, _ done: (String) -> Bool) throws -> String {
            for _ in 0..<600 {
                let text = try screen()
                if done(text) { return text }
                usleep(100_000)
            }
            let text = try screen()
            Issue.record("the terminal never showed \(what): \(text)")
            return text
        }

        /// Kills what runs in the pane (its process group: the shell, the build and its steps), then the server.
        /// The test process blocks signals that its children inherit, tmux's SIGHUP among them: only SIGKILL is
        /// sure to end them.
        func stop() {
            let pane = try? HermeticProcess.run(tmux, ["-S", socket, "display-message", "-p", "#{pane_pid}"])
            if let text = pane?.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines), let pid = Int32(text),
                pid > 1
            {
                kill(-pid, SIGKILL)
            }
            _ = try? HermeticProcess.run(tmux, ["-S", socket, "kill-server"])
        }
    }

    /// The tty view on a real terminal: the running step shows its output under it with a running timer;
    /// when it ends well it collapses to one line, and the last screen says FINISHED with the total. `auto`
    /// chooses it on a terminal. The step waits on a file the test makes, so the live moment is exact.
    @Test func ttyIsALiveViewThatCollapsesSteps() throws {
        let build = try Build(
            """
            FROM busybox
            RUN echo built > /built
            RUN --mount=type=cache,target=/gate,id=gate echo live-$((6*7)) && touch /gate/ready && until [ -e /gate/go ]; do sleep 0.1; done
            LABEL done=yes

            """)
        let terminal = try Terminal()
        defer { terminal.stop() }
        try terminal.start([HermeticProcess.binaryPath] + build.arguments + ["--progress", "auto"])

        let live = try terminal.wait(for: "the running step's output") { $0.contains(" => => # live-42") }
        let liveLines = live.split(separator: "\n").map(String.init)
        #expect(liveLines.first?.hasPrefix("[+] Building ") == true, "\(live)")
        #expect(liveLines.first?.hasSuffix(" (2/4)") == true, "\(live)")
        #expect(liveLines.contains { $0.hasPrefix(" => [2/4] RUN echo built > /built") }, "\(live)")
        #expect(liveLines.contains { $0.hasPrefix(" => [3/4] RUN --mount=type=cache") }, "\(live)")
        #expect(!live.contains("#1 "), "plain's text in the tty view: \(live)")

        // Open the gate: the step wrote `ready` into its cache directory under the state directory.
        let state = build.scratch.path + "/state"
        let ready = try #require(
            FileManager.default.enumerator(atPath: state)?.compactMap { $0 as? String }.first {
                $0.hasSuffix("/ready")
            })
        try Data().write(
            to: URL(fileURLWithPath: state + "/" + ready).deletingLastPathComponent().appendingPathComponent("go"))

        let final = try terminal.wait(for: "the end of the build") { $0.contains("EXIT=") }
        let lines = final.split(separator: "\n").map(String.init)
        #expect(final.contains("EXIT=0"), "\(final)")
        let header = try Regex(#"^\[\+\] Building \d+\.\ds \(4/4\) FINISHED$"#)
        #expect(lines.first?.wholeMatch(of: header) != nil, "\(final)")
        let steps = [
            "[1/4] FROM busybox", "[2/4] RUN echo built > /built", "[3/4] RUN --mount=type=cache",
            "[4/4] LABEL done=yes",
        ]
        let timer = try Regex(#" \d+\.\ds$"#)
        for step in steps {
            let line = lines.first { $0.hasPrefix(" => " + step) }
            #expect(line?.contains(timer) == true, "\(step): \(final)")
        }
        #expect(!final.contains("live-42"), "a finished step's output stays on screen: \(final)")
        #expect(lines.contains { $0.hasPrefix("sha256:") }, "\(final)")
    }

    /// A failed step in the tty view is marked ERROR and keeps its last output lines; the error line follows.
    @Test func ttyKeepsTheFailedStepsOutput() throws {
        let build = try Build("FROM busybox\nRUN echo first && echo about to fail && exit 3\n")
        let terminal = try Terminal()
        defer { terminal.stop() }
        try terminal.start([HermeticProcess.binaryPath] + build.arguments + ["--progress", "tty"])
        let final = try terminal.wait(for: "the end of the build") { $0.contains("EXIT=") }
        let lines = final.split(separator: "\n").map(String.init)
        #expect(final.contains("EXIT=1"), "\(final)")
        #expect(lines.first?.hasSuffix(" (1/2)") == true, "\(final)")
        let failed = try #require(lines.firstIndex { $0.hasPrefix(" => ERROR [2/2] RUN echo first") }, "\(final)")
        #expect(Array(lines.dropFirst(failed + 1).prefix(2)) == [" => => # first", " => => # about to fail"])
        #expect(lines.contains { $0.hasPrefix("error: Dockerfile:2: RUN: process") }, "\(final)")
    }
}
