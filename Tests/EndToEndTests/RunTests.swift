import Foundation
import Hermetic
import TestSupport
import Testing

/// RUN in the sandbox, end to end, on a real busybox base image made by the test.
@Suite(.serialized) struct RunTests {
    struct Build {
        var scratch: TemporaryDirectory
        var context: String
        var baseDigest: Digest

        init(dockerfile: String, files: [String: String] = [:]) throws {
            scratch = try TemporaryDirectory(prefix: "run-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            for (name, text) in files {
                try text.write(toFile: context + "/" + name, atomically: true, encoding: .utf8)
            }
            baseDigest = try BaseImages.writeBusybox(at: scratch.path + "/busybox")
        }

        func run(
            _ extra: [String] = [], output: String = "out", environment: [String: String] = [:], umask: String = "022"
        ) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "--source-date-epoch", "1700000000",
                    "--state-dir", scratch.path + "/state",
                    "--build-context", "busybox=oci-layout://\(scratch.path)/busybox@\(baseDigest)",
                    "-o", "type=local,dest=\(scratch.path)/\(output)", "-o",
                    "type=oci,dest=\(scratch.path)/\(output).oci",
                    "--iidfile", "\(scratch.path)/\(output).iid",
                ] + extra, environment: environment, umask: umask)
        }

        func file(_ output: String, _ path: String) -> String? {
            try? String(contentsOfFile: "\(scratch.path)/\(output)/\(path)", encoding: .utf8)
        }

        func digest(_ output: String) -> String? {
            try? String(contentsOfFile: "\(scratch.path)/\(output).iid", encoding: .utf8)
        }
    }

    @Test func seedPatternIsReproducible() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox AS builder
                WORKDIR /work
                RUN echo "built at $(date +%Y)" > stamp && mkdir -p out && echo hello > out/hello.txt && touch -d @1 out/old
                RUN rm /etc/hostname && ln -s hello.txt out/link
                FROM scratch
                COPY --from=builder /work/out/ /app/
                """)
        let first = try build.run(output: "one")
        try #require(first.status == 0, "\(first.standardError)")
        let second = try build.run(output: "two")
        try #require(second.status == 0, "\(second.standardError)")
        #expect(build.digest("one") == build.digest("two"))
        #expect(build.file("one", "app/hello.txt") == "hello\n")
        #expect(
            (try? FileManager.default.destinationOfSymbolicLink(atPath: build.scratch.path + "/one/app/link"))
                == "hello.txt")
    }

    @Test func deletionsUserWorkdirShellAndHeredocs() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN rm /etc/os-release
                USER app
                WORKDIR /home/app/project
                RUN id -u > uid && id -g > gid && pwd > pwd
                USER root
                SHELL ["/bin/sh", "-ec"]
                RUN <<EOF
                echo "from heredoc" > /heredoc.txt
                echo "second line" >> /heredoc.txt
                EOF
                RUN cat <<EOT > /fed.txt
                fed by $((1 + 1))
                EOT
                """)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out", "etc/os-release") == nil)
        #expect(build.file("out", "home/app/project/uid") == "1000\n")
        #expect(build.file("out", "home/app/project/gid") == "1000\n")
        #expect(build.file("out", "home/app/project/pwd") == "/home/app/project\n")
        #expect(build.file("out", "heredoc.txt") == "from heredoc\nsecond line\n")
        #expect(build.file("out", "fed.txt") == "fed by 2\n")
    }

    /// BuildKit's heredoc delimiter forms (parser_heredoc_test.go): blanks after `<<`, quoted parts of the
    /// delimiter, an escaped quote; a lone heredoc word is the script.
    @Test func heredocDelimiterForms() throws {
        let build = try Build(
            dockerfile: #"""
                FROM busybox
                RUN << EOF
                echo spaced > /spaced
                EOF
                RUN <<eo'f'
                echo "quoted $((1 + 1))" > /quoted
                eof
                RUN <<eo\'f
                echo escaped > /escaped
                eo'f
                RUN <<'one two'
                echo two words > /words
                one two

                """#)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out", "spaced") == "spaced\n")
        #expect(build.file("out", "quoted") == "quoted 2\n")
        #expect(build.file("out", "escaped") == "escaped\n")
        #expect(build.file("out", "words") == "two words\n")
    }

    /// BuildKit's testRunShebangHeredoc: a lone heredoc starting with `#!` is a file, /dev/pipes/NAME (mode
    /// 0755, read-only), that the shell runs; it never reaches the layer, and a non-root USER can run it.
    @Test func shebangHeredocRunsAsAFile() throws {
        let build = try Build(
            dockerfile: #"""
                FROM busybox
                RUN <<EOF
                #!/bin/awk -f
                BEGIN {
                	print "hello" >> "/dest"
                	print "world" >> "/dest"
                }
                EOF
                RUN <<SCRIPT
                #!/bin/sh
                echo "$0 $(stat -c %a "$0")" > /script
                touch "$0" 2>/dev/null || echo read-only >> /script
                SCRIPT
                USER app
                RUN <<-AS_APP
                	#!/bin/sh
                	id -u > /home/app/ran
                	AS_APP

                """#)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out", "dest") == "hello\nworld\n")
        #expect(build.file("out", "script") == "/dev/pipes/SCRIPT 755\nread-only\n")
        #expect(build.file("out", "home/app/ran") == "1000\n")
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/out/dev/pipes"))
    }

    /// BuildKit's testOnBuildHeredoc: an ONBUILD trigger keeps its heredoc and runs with it.
    @Test func onbuildTriggerWithHeredoc() throws {
        let build = try Build(
            dockerfile: #"""
                FROM busybox AS base
                ONBUILD RUN <<EOF
                echo "hello world" >> /dest
                EOF
                FROM base
                RUN cat /dest > /copied

                """#)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out", "dest") == "hello world\n")
        #expect(build.file("out", "copied") == "hello world\n")
    }

    /// A base image's trigger with a heredoc runs with it; a trigger of two instructions is refused (BuildKit:
    /// "onbuild trigger should be a single expression").
    @Test func baseImageTriggersWithHeredocs() throws {
        let build = try Build(dockerfile: "FROM triggered\nRUN cat /dest > /copied\n")
        func run(_ trigger: String) throws -> HermeticProcess.Outcome {
            let layout = build.scratch.path + "/triggered-\(UInt32.random(in: 0...UInt32.max))"
            let digest = try BaseImages.writeLayout(
                at: layout, entries: BaseImages.busyboxEntries(), platform: .host, onBuild: [trigger])
            return try build.run(["--build-context", "triggered=oci-layout://\(layout)@\(digest)"])
        }
        let outcome = try run("RUN <<EOF\necho \"hello world\" >> /dest\nEOF")
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out", "copied") == "hello world\n")
        let refused = try run("RUN true\nRUN true")
        #expect(refused.status == 1)
        #expect(
            refused.standardError
                == "error: Dockerfile:1: ONBUILD trigger of the base image: onbuild trigger should be a single expression\n",
            "\(refused.standardError)")
    }

    /// BuildKit's testBuiltinArgs: proxy build args in any case are seen in both cases without an ARG, and
    /// win over an ENV of the same name (BuildKit appends them; the runtime keeps the last).
    @Test func proxyBuildArgsAreExportedInBothCases() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                ARG FOO
                ARG BAR
                ARG BAZ=bazcontent
                ENV HTTPS_PROXY=fromenv
                RUN echo -n $HTTP_PROXY::$http_proxy::$NO_PROXY::$no_proxy::$FOO::$BAR::$BAZ > /out
                RUN echo -n $HTTPS_PROXY::$https_proxy::${ALL_PROXY-unset}::${all_proxy-unset} > /https
                """)
        let outcome = try build.run([
            "--build-arg", "FOO=foocontents", "--build-arg", "http_proxy=hpvalue", "--build-arg", "NO_PROXY=npvalue",
            "--build-arg", "Https_Proxy=hs", "--build-arg", "all_proxy=",
        ])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out", "out") == "hpvalue::hpvalue::npvalue::npvalue::foocontents::::bazcontent")
        #expect(build.file("out", "https") == "hs::hs::unset::unset")
    }

    @Test func environmentIsExactlyTheStages() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                ARG GIVEN
                ARG DEFAULTED=yes
                ENV FROM_ENV=1
                RUN env | sort > /env.txt && hostname > /hostname.txt
                """)
        let outcome = try build.run(
            ["--build-arg", "GIVEN=g", "--build-arg", "HTTP_PROXY=http://proxy.invalid", "-t", "run:1"],
            environment: ["LEAK_ME": "leaked"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        let env = build.file("out", "env.txt") ?? ""
        #expect(env.contains("GIVEN=g\n") && env.contains("DEFAULTED=yes\n") && env.contains("FROM_ENV=1\n"))
        #expect(env.contains("HTTP_PROXY=http://proxy.invalid\n"))
        #expect(env.contains("http_proxy=http://proxy.invalid\n"))
        #expect(env.contains("SOURCE_DATE_EPOCH=1700000000\n"))
        #expect(!env.contains("LEAK_ME"))
        #expect(build.file("out", "hostname.txt") == "buildkitsandbox\n")
        // History names the build args the step saw, never their values.
        let skopeo = try ExternalTools.require("skopeo")
        let config = try HermeticProcess.run(skopeo, ["inspect", "--config", "oci:\(build.scratch.path)/out.oci:1"])
        #expect(config.standardOutput.contains("# build args: GIVEN DEFAULTED"), "\(config.standardOutput)")
        #expect(!config.standardOutput.contains("GIVEN=g"))
    }

    @Test func mountsLeaveNothingInTheLayer() throws {
        let canary = "s3cr3t-canary-\(UInt64.random(in: 1...UInt64.max))"
        // The Dockerfile must not hold the canary itself: steps compare digests of it.
        let canaryDigest = Digest.sha256(of: Array(canary.utf8)).hex
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/x && test -f /scratch/x
                RUN --mount=type=cache,target=/cache,id=../../escape echo cached >> /cache/log && cp /cache/log /cache-copy
                RUN --mount=type=secret,id=token test "$(sha256sum < /run/secrets/token | cut -d' ' -f1)" = "\(canaryDigest)" && echo ok > /secret-ok
                RUN --mount=type=secret,id=token,env=TOKEN test "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" = "\(canaryDigest)"
                RUN --mount=type=bind,source=data,target=/data cp /data/in.txt /copied.txt
                RUN --mount=type=bind,source=data,target=/data,rw echo changed > /data/in.txt
                """, files: [:])
        try FileManager.default.createDirectory(atPath: build.context + "/data", withIntermediateDirectories: true)
        try "input\n".write(toFile: build.context + "/data/in.txt", atomically: true, encoding: .utf8)
        let secretFile = build.scratch.path + "/token"
        try canary.write(toFile: secretFile, atomically: true, encoding: .utf8)
        let outcome = try build.run(["--secret", "id=token,src=\(secretFile)", "--progress", "plain"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out", "secret-ok") == "ok\n")
        #expect(build.file("out", "copied.txt") == "input\n")
        #expect(build.file("out", "cache-copy") == "cached\n")
        #expect(try String(contentsOfFile: build.context + "/data/in.txt", encoding: .utf8) == "input\n")
        for gone in ["scratch", "cache", "data", "run/secrets/token"] {
            #expect(
                build.file("out", gone + "/x") == nil
                    && !FileManager.default.fileExists(atPath: build.scratch.path + "/out/" + gone + "/in.txt"))
        }
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/out/run/secrets/token"))
        // The cache id cannot leave the state directory, and it persists (--no-cache: the step runs again
        // rather than being a hit of the build cache).
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/escape"))
        let again = try build.run(["--secret", "id=token,src=\(secretFile)", "--no-cache"], output: "again")
        try #require(again.status == 0, "\(again.standardError)")
        #expect(build.file("again", "cache-copy") == "cached\ncached\n")
        // No trace of the secret in any output: layers (decompressed), config, logs, the state directory.
        try SecretScan.assertAbsent(canary, under: build.scratch.path, excluding: [secretFile])
        #expect(!outcome.standardError.contains(canary) && !outcome.standardOutput.contains(canary))
    }

    /// Bind mounts never write to the host: a read-write bind of one file is a private copy, a read-only
    /// bind is read-only all the way down (a host mount below its source included), and a file
    /// .dockerignore hides cannot be bound.
    @Test func bindMountsNeverReachTheHost() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN --mount=type=bind,source=file.txt,target=/m,rw echo changed > /m && grep -q changed /m
                RUN --mount=type=bind,from=named,target=/nd sh -c 'if echo x > /nd/sub/f; then exit 9; fi; test "$(cat /nd/sub/f)" = below'
                RUN --mount=type=bind,from=named,source=top.txt,target=/t,rw echo changed > /t
                """, files: ["file.txt": "original\n", ".dockerignore": "ignored.txt\n", "ignored.txt": "hidden\n"])
        let named = build.scratch.path + "/named"
        try FileManager.default.createDirectory(atPath: named + "/sub", withIntermediateDirectories: true)
        try "top\n".write(toFile: named + "/top.txt", atomically: true, encoding: .utf8)
        // A mount below the named context's directory, as a user's own submount would be.
        try #require(
            HermeticProcess.run("/bin/mount", ["-t", "tmpfs", "tmpfs", named + "/sub"]).status == 0,
            "mounting a tmpfs needs root")
        defer { _ = try? HermeticProcess.run("/bin/umount", [named + "/sub"]) }
        try "below".write(toFile: named + "/sub/f", atomically: true, encoding: .utf8)
        let outcome = try build.run(["--build-context", "named=\(named)"])
        #expect(outcome.status == 0, "\(outcome.standardError)")
        #expect(try String(contentsOfFile: build.context + "/file.txt", encoding: .utf8) == "original\n")
        #expect(try String(contentsOfFile: named + "/sub/f", encoding: .utf8) == "below")
        #expect(try String(contentsOfFile: named + "/top.txt", encoding: .utf8) == "top\n")

        try """
        FROM busybox
        RUN --mount=type=bind,source=ignored.txt,target=/ig cat /ig
        """.write(toFile: build.context + "/Dockerfile", atomically: true, encoding: .utf8)
        let ignored = try build.run(output: "ignored")
        #expect(ignored.status == 1)
        #expect(ignored.standardError.contains("ignored.txt: not found"), "\(ignored.standardError)")
        #expect(!ignored.standardError.contains("hidden"))
    }

    /// A step's output reaches the person through a pipe, secrets masked: reopening its stderr cannot
    /// truncate the builder's log file, and a printed secret shows as ****.
    @Test func stepOutputIsRelayedThroughAPipeWithSecretsMasked() throws {
        let canary = "relay-canary-\(UInt64.random(in: 1...UInt64.max))"
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN readlink /proc/self/fd/2 > /stderr-is && printf 'FORGED\\n' > /proc/self/fd/2
                RUN --mount=type=secret,id=tok cat /run/secrets/tok && printf '%s' "$(cat /run/secrets/tok)" | cut -c1-5
                """)
        let secretFile = build.scratch.path + "/tok"
        try (canary + "\n").write(toFile: secretFile, atomically: true, encoding: .utf8)
        let log = build.scratch.path + "/build.log"
        let hermetic = HermeticProcess.binaryPath
        let outcome = try HermeticProcess.run(
            "/bin/sh",
            [
                "-c", "exec \"$0\" \"$@\" 2> \(log)", hermetic, "build", build.context, "--progress", "plain",
                "--state-dir", build.scratch.path + "/state", "--secret", "id=tok,src=\(secretFile)",
                "--build-context", "busybox=oci-layout://\(build.scratch.path)/busybox@\(build.baseDigest)",
                "-o", "type=local,dest=\(build.scratch.path)/out",
            ])
        let text = try String(contentsOfFile: log, encoding: .utf8)
        try #require(outcome.status == 0, "\(text)")
        #expect(build.file("out", "stderr-is")?.hasPrefix("pipe:") == true)
        #expect(text.hasPrefix("#1 [1/3] FROM busybox\n#1 DONE "), "\(text)")
        #expect(text.contains("FORGED\n"))
        #expect(!text.contains(canary) && text.contains("****"), "\(text)")
        #expect(text.contains("relay"), "a part of a secret is not masked: \(text)")
    }

    /// SIGTERM to the builder while a non-root step runs: the step dies, and the workspace (which holds the
    /// step's secret file) and the step's cgroup are gone; the exit status says which signal.
    @Test func aSignalledBuilderLeavesNothingBehind() throws {
        let marker = "47.\(UInt32.random(in: 100_000...999_999))"
        let build = try Build(
            dockerfile: """
                FROM busybox
                USER 1000:1000
                RUN --mount=type=secret,id=tok,uid=1000 (setsid sleep \(marker) &) ; touch /tmp/started; exec sleep \(marker)
                """)
        let secretFile = build.scratch.path + "/tok"
        try "signal-canary-secret\n".write(toFile: secretFile, atomically: true, encoding: .utf8)
        let temporary = build.scratch.path + "/tmp"
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: HermeticProcess.binaryPath)
        process.arguments = [
            "build", build.context, "--progress", "quiet", "--state-dir", build.scratch.path + "/state",
            "--secret", "id=tok,src=\(secretFile)",
            "--build-context", "busybox=oci-layout://\(build.scratch.path)/busybox@\(build.baseDigest)",
            "-o", "type=local,dest=\(build.scratch.path)/out",
        ]
        process.environment = ["PATH": "/usr/bin:/bin", "TMPDIR": temporary]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        func stepProcesses() -> [String] {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.filter { entry in
                guard Int(entry) != nil,
                    let command = try? String(contentsOfFile: "/proc/\(entry)/cmdline", encoding: .utf8)
                else { return false }
                return command.contains(marker)
            } ?? []
        }
        // Until the step's two sleeps run (the upper dir holds tmp/started by then).
        var waited = 0
        while stepProcesses().count < 2 && waited < 300 {
            usleep(50_000)
            waited += 1
        }
        try #require(stepProcesses().count >= 2, "the step did not start")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 128 + SIGTERM)
        usleep(200_000)
        #expect(stepProcesses().isEmpty, "step processes survived the builder")
        #expect(try FileManager.default.contentsOfDirectory(atPath: temporary) == [])
        #expect(StepCgroupsListing.owned(by: process.processIdentifier).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/out"))
        // What a builder killed outright left behind goes with the next build.
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let stale = temporary + "/" + WorkspaceJanitor.workspacePrefix(pid: gone.processIdentifier) + "x"
        try FileManager.default.createDirectory(atPath: stale + "/p0", withIntermediateDirectories: true)
        try "secret".write(toFile: stale + "/p0/value", atomically: true, encoding: .utf8)
        // A killed builder's workspace has its .owner, no longer locked; one without is not proven dead.
        close(try WorkspaceJanitor.lockWorkspace(stale))
        let unproven = temporary + "/" + WorkspaceJanitor.workspacePrefix(pid: gone.processIdentifier) + "bare"
        try FileManager.default.createDirectory(atPath: unproven, withIntermediateDirectories: true)
        try "FROM scratch\n".write(toFile: build.context + "/Dockerfile", atomically: true, encoding: .utf8)
        let next = try HermeticProcess.hermetic(
            ["build", build.context, "--progress", "quiet", "-o", "type=local,dest=\(build.scratch.path)/next"],
            environment: ["TMPDIR": temporary])
        #expect(next.status == 0, "\(next.standardError)")
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(FileManager.default.fileExists(atPath: unproven))
        try FileManager.default.removeItem(atPath: unproven)

        // A workspace whose .owner is locked belongs to a live builder, even one whose pid looks dead from
        // here (another PID namespace sharing this TMPDIR): it is left alone until the lock goes.
        let live = temporary + "/" + WorkspaceJanitor.workspacePrefix(pid: gone.processIdentifier) + "live"
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: true)
        let lock = try WorkspaceJanitor.lockWorkspace(live)
        let during = try HermeticProcess.hermetic(
            ["build", build.context, "--progress", "quiet", "-o", "type=local,dest=\(build.scratch.path)/during"],
            environment: ["TMPDIR": temporary])
        #expect(during.status == 0, "\(during.standardError)")
        #expect(FileManager.default.fileExists(atPath: live + "/.owner"))
        close(lock)
        let after = try HermeticProcess.hermetic(
            ["build", build.context, "--progress", "quiet", "-o", "type=local,dest=\(build.scratch.path)/after"],
            environment: ["TMPDIR": temporary])
        #expect(after.status == 0, "\(after.standardError)")
        #expect(!FileManager.default.fileExists(atPath: live))
    }

    /// A step that copies a secret into the filesystem fails the build: the value never reaches a layer.
    @Test func aSecretWrittenIntoTheFilesystemFailsTheBuild() throws {
        let canary = "layer-canary-\(UInt64.random(in: 1...UInt64.max))"
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN --mount=type=secret,id=tok mkdir -p /opt && (echo header; cat /run/secrets/tok) > /opt/leak
                """)
        let secretFile = build.scratch.path + "/tok"
        try (canary + "\n").write(toFile: secretFile, atomically: true, encoding: .utf8)
        let outcome = try build.run(["--secret", "id=tok,src=\(secretFile)"])
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError.hasPrefix("error: Dockerfile:2: the value of secret tok would be written"),
            "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/out"))
        try SecretScan.assertAbsent(canary, under: build.scratch.path, excluding: [secretFile])
    }

    /// A relative TMPDIR is the current directory's: RUN works there (the sandbox takes absolute paths only).
    @Test func aRelativeTemporaryDirectoryWorks() throws {
        let build = try Build(dockerfile: "FROM busybox\nRUN echo ran > /ran\n")
        try FileManager.default.createDirectory(atPath: build.scratch.path + "/rel", withIntermediateDirectories: true)
        let outcome = try HermeticProcess.hermetic(
            [
                "build", build.context, "--progress", "quiet", "--state-dir", build.scratch.path + "/state",
                "--build-context", "busybox=oci-layout://\(build.scratch.path)/busybox@\(build.baseDigest)",
                "-o", "type=local,dest=\(build.scratch.path)/out",
            ], environment: ["TMPDIR": "rel"], currentDirectory: build.scratch.path)
        #expect(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out", "ran") == "ran\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: build.scratch.path + "/rel").isEmpty)
    }

    /// On a terminal, a step's escape sequences are shown, not obeyed (no retitling or clearing it).
    @Test func escapeSequencesDoNotReachATerminal() throws {
        let build = try Build(dockerfile: "FROM busybox\nRUN printf 'A\\033]0;PWNTITLE\\007B\\033[2JC\\n'\n")
        let script = try ExternalTools.require("script")
        let command = [
            HermeticProcess.binaryPath, "build", build.context, "--progress", "plain", "--state-dir",
            build.scratch.path + "/state", "--build-context",
            "busybox=oci-layout://\(build.scratch.path)/busybox@\(build.baseDigest)", "-o",
            "type=local,dest=\(build.scratch.path)/out",
        ].map { "'\($0)'" }.joined(separator: " ")
        // util-linux script gives the build a pseudo-terminal and copies what it shows.
        let outcome = try HermeticProcess.run(
            script, ["-qec", command, build.scratch.path + "/typescript"],
            environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "dumb"])
        #expect(outcome.status == 0, "\(outcome.standardOutput)")
        #expect(outcome.standardOutput.contains("A^[]0;PWNTITLE"), "\(outcome.standardOutput)")
        #expect(!outcome.standardOutput.contains("\u{1b}]0;PWNTITLE"))
        #expect(!outcome.standardOutput.contains("\u{1b}[2J"))
    }

    @Test func failuresAreOneLineAndKeepNothing() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN echo partial > /partial && exit 3
                """)
        let outcome = try build.run()
        #expect(outcome.status != 0)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: Dockerfile:2:") && lines[0].contains("exit code: 3"))
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/out"))
    }

    /// The caller's umask shaped the directories the builder made (the stage root, the sandbox's `/`): under
    /// 027 a USER step could not enter `/`. The same build under any umask gives the same image.
    @Test func theCallersUmaskChangesNothing() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                USER app
                WORKDIR /home/app/new
                RUN ls / > /dev/null && echo made > made.txt
                USER root
                RUN mkdir -p /opt/x && echo y > /opt/x/y
                """)
        let usual = try build.run(output: "usual")
        try #require(usual.status == 0, "\(usual.standardError)")
        for umask in ["027", "077", "000"] {
            let other = try build.run(output: "umask-" + umask, umask: umask)
            try #require(other.status == 0, "umask \(umask): \(other.standardError)")
            #expect(build.digest("umask-" + umask) == build.digest("usual"), "umask \(umask)")
        }
    }

    /// The second run finds the cache the first one filled: the image, and its attestation, are the same, so
    /// the index digest is too.
    @Test func aWarmCacheMountKeepsTheDigest() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN --mount=type=cache,target=/cache echo run >> /cache/log && echo built > /built
                """)
        let first = try build.run(output: "first")
        try #require(first.status == 0, "\(first.standardError)")
        // --no-cache: the step runs again, on the cache mount its first run filled.
        let second = try build.run(["--no-cache"], output: "second")
        try #require(second.status == 0, "\(second.standardError)")
        #expect(build.digest("first")?.hasPrefix("sha256:") == true)
        #expect(build.digest("second") == build.digest("first"))
        // The cache did persist between the runs.
        let logs = try FileManager.default.subpathsOfDirectory(atPath: build.scratch.path + "/state")
            .filter { $0.hasSuffix("/log") || $0 == "log" }
        let log = try logs.first.map {
            try String(contentsOfFile: build.scratch.path + "/state/" + $0, encoding: .utf8)
        }
        #expect(log == "run\nrun\n", "\(logs)")
    }

    /// BuildKit's testMountTmpfsSize: a tmpfs at /dev/shm sizes the step's shared memory; other mounts there
    /// stay refused.
    @Test func aTmpfsAtDevShmSizesIt() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN --mount=type=tmpfs,target=/dev/shm,size=128m mount | grep /dev/shm > /tmpfssize
                RUN mount | grep /dev/shm > /default
                """)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(
            build.file("out", "tmpfssize")?.contains("size=131072k") == true, "\(build.file("out", "tmpfssize") ?? "")")
        #expect(build.file("out", "default")?.contains("size=65536k") == true)
        let bind = try Build(dockerfile: "FROM busybox\nRUN --mount=type=bind,target=/dev/shm true\n")
        let refused = try bind.run()
        #expect(refused.status == 1)
        #expect(
            refused.standardError.contains("target /dev/shm is reserved by the sandbox"), "\(refused.standardError)")
    }

    /// BuildKit's testOnBuildInheritedStageWithFrom: an ONBUILD COPY --from=STAGE of a base stage copies
    /// from that stage of the Dockerfile (it was looked up as an image).
    @Test func onbuildCopyFromAStage() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox AS src
                RUN mkdir -p /in && echo -n 12 > /in/file
                FROM busybox AS base
                ONBUILD COPY --from=src /in/file /out/foo
                FROM base AS mid
                RUN cp /out/foo /out/bar
                FROM scratch
                COPY --from=mid /out/bar /
                """)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out", "bar") == "12")
    }

    @Test func theErrorLineStartsAfterAStepsUnfinishedLine() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN printf 'no newline at the end' && exit 4
                """)
        let outcome = try build.run(["--progress", "plain"])
        #expect(outcome.status == 1)
        let lines = outcome.standardError.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.contains("no newline at the end"), "\(outcome.standardError)")
        #expect(lines.contains { $0.hasPrefix("error: Dockerfile:2: RUN: process") }, "\(outcome.standardError)")
    }

    @Test func networkIsOnlyLoopbackUnlessGranted() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN ! wget -q -T 2 -O /dev/null http://127.0.0.1:1/ && ip link 2>/dev/null | grep -c '^[0-9]' > /links || cat /proc/net/dev | tail -n +3 | wc -l > /links
                RUN --network=host true
                """)
        let denied = try build.run()
        #expect(denied.status != 0)
        #expect(denied.standardError.contains("network.host"))
    }
}

extension RunTests {
    @Test func requireHermeticRefusesWarmCachesAndNetwork() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                ARG API_TOKEN=
                RUN --mount=type=cache,target=/cache,id=warm echo run >> /cache/log
                """)
        let first = try build.run(["--require-hermetic"], output: "first")
        try #require(first.status == 0, "\(first.standardError)")
        #expect(first.standardError.contains("SecretsUsedInArgOrEnv") && first.standardError.contains("API_TOKEN"))
        // --no-cache: the step runs on the warm cache mount (a hit would replay the cold run's record, rightly).
        let second = try build.run(["--require-hermetic", "--no-cache"], output: "second")
        #expect(second.status != 0)
        #expect(second.standardError.contains("--require-hermetic") && second.standardError.contains("id warm"))
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/second"))
    }
}

extension RunTests {
    @Test func sshMountForwardsTheAgentSocket() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo "$SSH_AUTH_SOCK" > /ssh-ok
                RUN --mount=type=ssh,id=missing,required=false test -z "$SSH_AUTH_SOCK"
                """)
        // A listening Unix socket stands in for an agent.
        let socket = build.scratch.path + "/agent.sock"
        let listener = Process()
        listener.executableURL = URL(fileURLWithPath: try ExternalTools.require("python3"))
        listener.arguments = [
            "-c",
            "import socket,sys,time;s=socket.socket(socket.AF_UNIX);s.bind(sys.argv[1]);s.listen(1);time.sleep(60)",
            socket,
        ]
        try listener.run()
        defer { listener.terminate() }
        for _ in 0..<50 where !FileManager.default.fileExists(atPath: socket) { usleep(100_000) }
        let outcome = try build.run(["--ssh", "default=\(socket)"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out", "ssh-ok") == "/run/buildkit/ssh_agent.0\n")
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/out/run/buildkit/ssh_agent.0"))
        let missing = try build.run([], output: "missing")
        // Without --ssh the optional mount is skipped, so the first step's `test -S` fails there.
        #expect(missing.status != 0 && missing.standardError.contains("Dockerfile:2:"), "\(missing.standardError)")
    }
}

extension RunTests {
    /// A step that nests directories 3,000 deep (paths past PATH_MAX) must end in one clear error or a
    /// layer, never a crash.
    @Test func deepTreesFailCleanly() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN i=0; while [ $i -lt 3000 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done
                """)
        let tmp = build.scratch.path + "/tmp"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let outcome = try build.run(environment: ["TMPDIR": tmp])
        let lines = outcome.standardError.split(separator: "\n")
        #expect(outcome.status == 0 || (lines.count == 1 && lines[0].hasPrefix("error: ")), "\(outcome.standardError)")
        #expect(outcome.status <= 1, "the builder crashed: status \(outcome.status)")
        // Its workspace, paths past PATH_MAX included, is gone.
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp).isEmpty)
    }
}

extension RunTests {
    /// Inside most containers /tmp is on overlayfs, which overlayfs refuses as an upper layer. The same build
    /// with its workspace on a real overlayfs mount must work and give the same image.
    @Test func workspaceOnOverlayfsGivesTheSameImage() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN echo hi > /hi && rm /etc/hostname
                """)
        let overlay = build.scratch.path + "/overlay"
        for part in ["lower", "upper", "work", "merged"] {
            try FileManager.default.createDirectory(atPath: overlay + "/" + part, withIntermediateDirectories: true)
        }
        let mounted = try HermeticProcess.run(
            "/bin/mount",
            [
                "-t", "overlay", "overlay", "-o",
                "lowerdir=\(overlay)/lower,upperdir=\(overlay)/upper,workdir=\(overlay)/work",
                overlay + "/merged",
            ])
        try #require(mounted.status == 0, "this test needs overlayfs (root): \(mounted.standardError)")
        defer { _ = try? HermeticProcess.run("/bin/umount", ["-l", overlay + "/merged"]) }
        let plain = try build.run(output: "plain")
        try #require(plain.status == 0, "\(plain.standardError)")
        let onOverlay = try build.run(output: "on-overlay", environment: ["TMPDIR": overlay + "/merged"])
        try #require(onOverlay.status == 0, "\(onOverlay.standardError)")
        #expect(build.digest("plain") == build.digest("on-overlay"))
        #expect(build.file("on-overlay", "hi") == "hi\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: overlay + "/merged").isEmpty)
        let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
        #expect(!mounts.contains(overlay + "/merged/"), "a scratch tmpfs was left mounted")
    }
}

/// Looks for a secret in every file of a tree, gzip layers decompressed.
enum SecretScan {
    static func assertAbsent(_ secret: String, under root: String, excluding: [String]) throws {
        let needle = Data(secret.utf8)
        let enumerator = FileManager.default.enumerator(atPath: root)
        while let relative = enumerator?.nextObject() as? String {
            let path = root + "/" + relative
            guard !excluding.contains(path) else { continue }
            var info = stat()
            guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            if data.starts(with: [0x1f, 0x8b]) {
                let gunzip = try HermeticProcess.run("/bin/sh", ["-c", "gzip -dc < '\(path)'"])
                data = Data(gunzip.standardOutput.utf8)
            }
            #expect(data.range(of: needle) == nil, "the secret appears in \(relative)")
        }
    }
}

/// Step cgroups a builder made (`hermetic-step-PID-…`), wherever PidsCgroup may put them.
enum StepCgroupsListing {
    static func owned(by pid: Int32) -> [String] {
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/pids"].flatMap { root -> [String] in
            let enumerator = FileManager.default.enumerator(atPath: root)
            var found: [String] = []
            while let path = enumerator?.nextObject() as? String {
                if path.split(separator: "/").last?.hasPrefix("hermetic-step-\(pid)-") == true { found.append(path) }
                if path.split(separator: "/").count > 6 { enumerator?.skipDescendants() }
            }
            return found
        }
    }
}

extension RunTests {
    /// A step that makes a name that is not UTF-8 (a layer cannot hold it) stops the build with one line
    /// naming the file, escaped; the workspace, that name included, is removed.
    @Test func aNameThatIsNotUTF8IsNamedAndItsWorkspaceRemoved() throws {
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN mkdir -p /w && touch "/w/$(printf 'caf\\351')"
                """)
        let tmp = build.scratch.path + "/tmp"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let outcome = try build.run(environment: ["TMPDIR": tmp])
        #expect(outcome.status == 1)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: Dockerfile:2: RUN"), "\(outcome.standardError)")
        #expect(outcome.standardError.contains(#""w/caf\xe9""#), "\(outcome.standardError)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp).isEmpty)
    }
}
