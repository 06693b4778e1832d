import Foundation
import Hermetic
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Stages that do not depend on each other, and the platforms of one build, run at the same time, at most
/// `--jobs` at once (SPEC §5); the image, the provenance and the progress do not depend on it.
@Suite(.serialized) struct StageSchedulerTests {
    /// A context with `dockerfile`, a busybox base (for the host, or for linux/amd64 and linux/386 with
    /// the host's binary, which runs on both here), a TMPDIR and a state directory of its own.
    struct Scene {
        var scratch: TemporaryDirectory
        var context: String
        var baseDigest: Digest
        var temporary: String { scratch.path + "/tmp" }
        var state: String { scratch.path + "/state" }

        init(_ dockerfile: String, platforms: [Platform]? = nil) throws {
            scratch = try TemporaryDirectory(prefix: "scheduler-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: scratch.path + "/tmp", withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            if let platforms {
                let entries = try BaseImages.busyboxEntries()
                baseDigest = try BaseImages.writeMultiPlatformLayout(
                    at: scratch.path + "/busybox", images: platforms.map { ($0, entries) })
            } else {
                baseDigest = try BaseImages.writeBusybox(at: scratch.path + "/busybox")
            }
        }

        /// `hermetic build` with this scene's base, TMPDIR and (unless `coldState`) state directory.
        func build(_ extra: [String], coldState: Bool = false) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                [
                    "build", context, "--source-date-epoch", "0",
                    "--build-context", "busybox=oci-layout://\(scratch.path)/busybox@\(baseDigest)",
                ] + (coldState ? [] : ["--state-dir", state]) + extra,
                environment: ["TMPDIR": temporary])
        }

        /// The host directory of cache mount `id`, made so the test can put FIFOs in it.
        func cacheDirectory(id: String) throws -> String {
            let directory = state + "/cache/" + Digest.sha256(of: Array(id.utf8)).hex
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            return directory
        }

        func makeFIFOs(_ names: [String], id: String) throws {
            let directory = try cacheDirectory(id: id)
            for name in names where mkfifo(directory + "/" + name, 0o666) != 0 {
                throw SystemError("mkfifo", path: directory + "/" + name, errno: errno)
            }
        }

        func read(_ path: String) throws -> String {
            try String(contentsOfFile: scratch.path + "/" + path, encoding: .utf8)
        }

        func leftInTemporary() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: temporary).sorted()
        }
    }

    /// Stage a writes to FIFO ab and then reads FIFO ba; stage b reads ab and then writes ba. Each blocks
    /// until the other runs: one after the other they wait forever (until the step timeout).
    static let rendezvous = """
        FROM busybox AS a
        RUN --mount=type=cache,id=meet,target=/meet echo from-a > /meet/ab && read x < /meet/ba && echo "$x" > /a.txt
        FROM busybox AS b
        RUN --mount=type=cache,id=meet,target=/meet read x < /meet/ab && echo from-b > /meet/ba && echo "$x" > /b.txt
        FROM busybox
        COPY --from=a /a.txt /a.txt
        COPY --from=b /b.txt /b.txt

        """

    /// Two independent stages really overlap with --jobs 2: each RUN finishes only while the other runs.
    /// With --jobs 1 the same build waits until its step timeout, so the test cannot pass by a sequential run.
    @Test func independentStagesRunAtTheSameTime() throws {
        let scene = try Scene(Self.rendezvous)
        try scene.makeFIFOs(["ab", "ba"], id: "meet")
        let together = try scene.build(
            [
                "--jobs", "2", "--step-timeout", "60", "--progress", "plain", "-o",
                "type=local,dest=\(scene.scratch.path)/out",
            ])
        #expect(together.status == 0, "\(together.standardError)")
        #expect(try scene.read("out/a.txt") == "from-b\n")
        #expect(try scene.read("out/b.txt") == "from-a\n")

        let alone = try scene.build(["--jobs", "1", "--no-cache", "--step-timeout", "3", "--progress", "plain"])
        #expect(alone.status != 0)
        #expect(alone.standardError.contains("(step timeout)"), "\(alone.standardError)")
        #expect(try scene.leftInTemporary() == [])
    }

    /// Three stages in a ring of FIFOs (a → b → c → a) finish only if all three run at once. With --jobs 3
    /// on this machine's two cores, each stage needs a thread of its own: on Swift's cooperative pool (one
    /// thread per core) the third step would never start while two wait in waitpid.
    @Test func moreStagesThanCoresRunAtOnce() throws {
        let scene = try Scene(
            """
            FROM busybox AS a
            RUN --mount=type=cache,id=ring,target=/r echo a > /r/ab && read x < /r/ca && echo "$x" > /got
            FROM busybox AS b
            RUN --mount=type=cache,id=ring,target=/r read x < /r/ab && echo b > /r/bc && echo "$x" > /got
            FROM busybox AS c
            RUN --mount=type=cache,id=ring,target=/r read x < /r/bc && echo c > /r/ca && echo "$x" > /got
            FROM busybox
            COPY --from=a /got /a
            COPY --from=b /got /b
            COPY --from=c /got /c

            """)
        try scene.makeFIFOs(["ab", "bc", "ca"], id: "ring")
        let outcome = try scene.build(
            [
                "--jobs", "3", "--step-timeout", "60", "--progress", "plain", "-o",
                "type=local,dest=\(scene.scratch.path)/out",
            ])
        #expect(outcome.status == 0, "\(outcome.standardError)")
        #expect(try scene.read("out/a") == "c\n")
        #expect(try scene.read("out/b") == "a\n")
        #expect(try scene.read("out/c") == "b\n")
    }

    /// Three stages with RUN steps, each made into the final image: the same index (with the provenance,
    /// whose byproducts list layers and steps in plan order) with --jobs 1, --jobs 2 and --jobs 2 again.
    @Test func theImageIsTheSameWhateverTheJobs() throws {
        let scene = try Scene(
            """
            FROM busybox AS slow
            RUN sleep 1 && echo slow > /slow.txt
            RUN echo more > /more.txt
            FROM busybox AS quick
            RUN echo quick > /quick.txt
            FROM busybox AS middle
            RUN echo middle > /middle.txt
            FROM busybox
            COPY --from=quick /quick.txt /
            COPY --from=slow /slow.txt /more.txt /
            COPY --from=middle /middle.txt /

            """)
        var digests: [String] = []
        for (round, jobs) in ["1", "2", "2", "3"].enumerated() {
            let iid = scene.scratch.path + "/iid\(round)"
            let outcome = try scene.build(["--jobs", jobs, "--progress", "quiet", "--iidfile", iid], coldState: true)
            #expect(outcome.status == 0, "\(outcome.standardError)")
            digests.append(try scene.read("iid\(round)"))
        }
        #expect(Set(digests).count == 1, "\(digests)")
        #expect(digests.first?.hasPrefix("sha256:") == true)
    }

    /// Plain progress comes in plan order whatever finishes first: a later stage that ends first is held
    /// until the earlier one is done. Three runs with --jobs 2 and one with --jobs 1 print the same lines
    /// (durations aside).
    @Test func plainProgressIsInPlanOrder() throws {
        let scene = try Scene(
            """
            FROM busybox AS first
            RUN sleep 1 && echo first-out
            FROM busybox AS second
            RUN echo second-out
            FROM busybox
            COPY --from=first /etc/passwd /1
            COPY --from=second /etc/passwd /2

            """)
        var logs: [String] = []
        for jobs in ["2", "2", "2", "1"] {
            let outcome = try scene.build(["--jobs", jobs, "--progress", "plain", "--no-cache"])
            #expect(outcome.status == 0, "\(outcome.standardError)")
            logs.append(outcome.standardError.replacing(try Regex(#"\d+\.\ds"#), with: "D"))
        }
        #expect(Set(logs).count == 1, "\(logs)")
        let log = logs[0]
        let first = try #require(log.range(of: "first-out"))
        let second = try #require(log.range(of: "second-out"))
        #expect(first.lowerBound < second.lowerBound)
        #expect(log.contains("#2 [first 2/2] RUN sleep 1 && echo first-out\nfirst-out\n#2 DONE D\n"), "\(log)")
        #expect(log.contains("#4 [second 2/2] RUN echo second-out\nsecond-out\n#4 DONE D\n"), "\(log)")
    }

    /// A stage fails while a later one runs: the later one's step is killed (CANCELED, its process gone),
    /// nothing is left in TMPDIR, and the error is the failing stage's.
    @Test func aFailingStageStopsTheStagesAfterIt() throws {
        let marker = "\(UInt32.random(in: 100_000...999_999))"
        let scene = try Scene(
            """
            FROM busybox AS bad
            RUN --mount=type=cache,id=sync,target=/sync read x < /sync/started && exit 3
            FROM busybox AS slow
            RUN --mount=type=cache,id=sync,target=/sync echo started > /sync/started && sleep \(marker)
            FROM busybox
            COPY --from=bad /etc/passwd /1
            COPY --from=slow /etc/passwd /2

            """)
        try scene.makeFIFOs(["started"], id: "sync")
        let outcome = try scene.build(["--jobs", "2", "--progress", "plain", "--step-timeout", "30"])
        #expect(outcome.status != 0)
        let lines = outcome.standardError.split(separator: "\n").map(String.init)
        #expect(lines.last?.contains("Dockerfile:2") == true, "\(outcome.standardError)")
        #expect(lines.last?.contains("exit code: 3") == true, "\(outcome.standardError)")
        #expect(lines.contains { $0.hasSuffix(" CANCELED") }, "\(outcome.standardError)")
        #expect(!outcome.standardError.contains("step timeout"))
        #expect(try scene.leftInTemporary() == [])
        #expect(Self.processes(holding: "sleep \(marker)") == [])
    }

    /// Two stages fail, the later one (in plan order) first: the error is the earlier one's, as with
    /// --jobs 1, which stops at the first stage that fails.
    @Test func theErrorIsTheEarliestFailingStagesInPlanOrder() throws {
        let scene = try Scene(
            """
            FROM busybox AS early
            RUN --mount=type=cache,id=sync,target=/sync read x < /sync/late-failed && sleep 1 && exit 5
            FROM busybox AS late
            RUN --mount=type=cache,id=sync,target=/sync echo failing > /sync/late-failed && exit 4
            FROM busybox
            COPY --from=early /etc/passwd /1
            COPY --from=late /etc/passwd /2

            """)
        try scene.makeFIFOs(["late-failed"], id: "sync")
        let outcome = try scene.build(["--jobs", "2", "--progress", "plain", "--step-timeout", "60"])
        #expect(outcome.status != 0)
        let lines = outcome.standardError.split(separator: "\n").map(String.init)
        #expect(lines.last?.contains("Dockerfile:2") == true, "\(outcome.standardError)")
        #expect(lines.last?.contains("exit code: 5") == true, "\(outcome.standardError)")
        // The later stage's failure is shown at its step, after the earlier stage's.
        let early = try #require(outcome.standardError.range(of: "ERROR: Dockerfile:2"))
        let late = try #require(outcome.standardError.range(of: "ERROR: Dockerfile:4"))
        #expect(early.lowerBound < late.lowerBound, "\(outcome.standardError)")
        #expect(try scene.leftInTemporary() == [])
    }

    /// The platforms of one build run at the same time: each platform's step finishes only while the
    /// other's runs (linux/386 runs natively here).
    @Test func platformsRunAtTheSameTime() throws {
        let scene = try Scene(
            """
            FROM busybox
            ARG TARGETARCH
            RUN --mount=type=cache,id=meet,target=/meet if [ "$TARGETARCH" = amd64 ]; then echo from-amd64 > /meet/p && read x < /meet/q; else read x < /meet/p && echo from-386 > /meet/q; fi && echo "$x" > /got

            """, platforms: [Platform(os: "linux", architecture: "amd64"), Platform(os: "linux", architecture: "386")])
        try scene.makeFIFOs(["p", "q"], id: "meet")
        let outcome = try scene.build(
            [
                "--jobs", "2", "--platform", "linux/amd64,linux/386", "--step-timeout", "60", "--progress", "plain",
                "-o", "type=local,dest=\(scene.scratch.path)/out",
            ])
        #expect(outcome.status == 0, "\(outcome.standardError)")
        // type=local writes the first platform's filesystem.
        #expect(try scene.read("out/got") == "from-386\n")
    }

    /// A multi-platform build with two stages per platform gives the same index with --jobs 1 and 4.
    @Test func aMultiPlatformImageIsTheSameWhateverTheJobs() throws {
        let scene = try Scene(
            """
            FROM busybox AS tool
            ARG TARGETARCH
            RUN echo "tool for $TARGETARCH" > /tool
            FROM busybox
            RUN echo base > /base
            COPY --from=tool /tool /tool

            """, platforms: [Platform(os: "linux", architecture: "amd64"), Platform(os: "linux", architecture: "386")])
        var digests: [String] = []
        for (round, jobs) in ["1", "4", "4"].enumerated() {
            let iid = scene.scratch.path + "/iid\(round)"
            let outcome = try scene.build(
                ["--jobs", jobs, "--platform", "linux/amd64,linux/386", "--progress", "quiet", "--iidfile", iid],
                coldState: true)
            #expect(outcome.status == 0, "\(outcome.standardError)")
            digests.append(try scene.read("iid\(round)"))
        }
        #expect(Set(digests).count == 1, "\(digests)")
    }

    /// Two stages whose first RUN binds a different stage each: each step sees its own stage's files (the
    /// planned source of a mount was looked up by its position in any stage, so the second step bound the
    /// first one's stage, or with stages run on their own found it not built).
    @Test(arguments: ["1", "2"]) func eachStageBindsTheStageItNames(jobs: String) throws {
        let scene = try Scene(
            """
            FROM busybox AS one
            RUN echo one > /id
            FROM busybox AS two
            RUN echo two > /id
            FROM busybox AS x
            RUN --mount=type=bind,from=one,target=/m cat /m/id > /x
            FROM busybox AS y
            RUN --mount=type=bind,from=two,target=/m cat /m/id > /y
            FROM busybox
            COPY --from=x /x /x
            COPY --from=y /y /y

            """)
        let outcome = try scene.build(
            ["--jobs", jobs, "--progress", "plain", "-o", "type=local,dest=\(scene.scratch.path)/out"])
        #expect(outcome.status == 0, "\(outcome.standardError)")
        #expect(try scene.read("out/x") == "one\n")
        #expect(try scene.read("out/y") == "two\n")
    }

    /// SIGINT or SIGTERM while two stages' steps run at once: exit 128 + the signal, both steps killed and
    /// nothing left in TMPDIR.
    @Test(arguments: [SIGINT, SIGTERM]) func aSignalWhileStagesRunAtOnceLeavesNothing(signalNumber: Int32) throws {
        let marker = "\(UInt32.random(in: 100_000...999_999))"
        let scene = try Scene(
            """
            FROM busybox AS a
            RUN --mount=type=cache,id=sync,target=/sync echo a > /sync/a && sleep \(marker)
            FROM busybox AS b
            RUN --mount=type=cache,id=sync,target=/sync echo b > /sync/b && sleep \(marker)
            FROM busybox
            COPY --from=a /etc/passwd /1
            COPY --from=b /etc/passwd /2

            """)
        try scene.makeFIFOs(["a", "b"], id: "sync")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: HermeticProcess.binaryPath)
        process.arguments = [
            "build", scene.context, "--jobs", "2", "--progress", "quiet", "--state-dir", scene.state,
            "--build-context", "busybox=oci-layout://\(scene.scratch.path)/busybox@\(scene.baseDigest)",
        ]
        process.environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": scene.temporary]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Both steps are running once each has written its FIFO.
        for name in ["a", "b"] {
            let path = try scene.cacheDirectory(id: "sync") + "/" + name
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            try #require(fd >= 0)
            var buffer = [UInt8](repeating: 0, count: 16)
            while read(fd, &buffer, buffer.count) > 0 {}
            close(fd)
        }
        #expect(Self.processes(holding: "sleep \(marker)").count >= 2)
        kill(process.processIdentifier, signalNumber)
        process.waitUntilExit()
        #expect(process.terminationStatus == 128 + signalNumber)
        #expect(try scene.leftInTemporary() == [])
        #expect(Self.processes(holding: "sleep \(marker)") == [])
    }

    /// Processes whose command line holds `text` (its words joined by spaces).
    static func processes(holding text: String) -> [Int32] {
        var found: [Int32] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name),
                let bytes = FileManager.default.contents(atPath: "/proc/\(name)/cmdline")
            else { continue }
            let words = bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if words.joined(separator: " ").contains(text) { found.append(pid) }
        }
        return found
    }
}
