import Foundation
import Hermetic
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Builds at once on one TMPDIR and one state directory, and signals at chosen moments, end to end.
@Suite(.serialized) struct ConcurrencyTests {
    /// A scratch directory with a busybox base, a context and a TMPDIR of its own.
    struct Scene {
        var scratch: TemporaryDirectory
        var context: String
        var baseDigest: Digest
        var temporary: String { scratch.path + "/tmp" }
        var state: String { scratch.path + "/state" }

        init(dockerfile: String) throws {
            scratch = try TemporaryDirectory(prefix: "concurrency-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: scratch.path + "/tmp", withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            baseDigest = try BaseImages.writeBusybox(at: scratch.path + "/busybox")
        }

        func arguments(_ extra: [String]) -> [String] {
            [
                "build", context, "--progress", "quiet", "--source-date-epoch", "0", "--state-dir", state,
                "--build-context", "busybox=oci-layout://\(scratch.path)/busybox@\(baseDigest)",
            ] + extra
        }

        /// Starts `hermetic build` without waiting; its standard error goes to `log`.
        func start(_ extra: [String], log: String) throws -> Process {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: HermeticProcess.binaryPath)
            process.arguments = arguments(extra)
            process.environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": temporary]
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            try process.run()
            return process
        }

        /// The names in TMPDIR (every one is a builder's: the test puts nothing there).
        func leftInTemporary() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: temporary).sorted()
        }

        /// Files under TMPDIR whose bytes hold `value`.
        func filesHolding(_ value: String) -> [String] {
            let walker = FileManager.default.enumerator(atPath: temporary)
            var found: [String] = []
            while let name = walker?.nextObject() as? String {
                let path = temporary + "/" + name
                if let bytes = FileManager.default.contents(atPath: path),
                    String(decoding: bytes, as: UTF8.self).contains(value)
                {
                    found.append(path)
                }
            }
            return found
        }

        /// The host directory of cache mount `id` (as RunStep names it), made so a test can put FIFOs in it.
        func cacheDirectory(id: String) throws -> String {
            let directory = state + "/cache/" + Digest.sha256(of: Array(id.utf8)).hex
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            return directory
        }
    }

    /// 3 rounds of 8 builds at once, all on one TMPDIR and one state directory: every one succeeds, all
    /// make the same image, and no workspace remains. (Before workspaces were locked from the moment they
    /// had their name, a janitor could take the lock of one being set up and remove it: `mkdir
    /// …/hermetic-build-…/p0: No such file or directory` in 7 of 40 builds.)
    @Test func eightBuildsAtOnceOnOneTemporaryDirectory() throws {
        let scene = try Scene(
            dockerfile: """
                FROM busybox
                RUN echo hello > /hello && ls /bin | wc -l > /count
                """)
        var digests: [String] = []
        for round in 0..<3 {
            let builds = try (0..<8).map { index in
                let name = "\(scene.scratch.path)/r\(round)-\(index)"
                return (
                    name,
                    try scene.start(
                        ["-o", "type=oci,dest=\(name).oci", "--iidfile", "\(name).iid"], log: name + ".log")
                )
            }
            for (name, process) in builds {
                process.waitUntilExit()
                let log = (try? String(contentsOfFile: name + ".log", encoding: .utf8)) ?? ""
                #expect(process.terminationStatus == 0, "\(name): \(log)")
                if let digest = try? String(contentsOfFile: name + ".iid", encoding: .utf8) { digests.append(digest) }
            }
        }
        #expect(digests.count == 24 && Set(digests).count == 1, "\(digests)")
        #expect(try scene.leftInTemporary() == [])
    }

    /// The exact moment of that race: build A stops between creating its workspace's `.owner` and locking
    /// it (a FIFO the test holds), build B runs whole on the same TMPDIR meanwhile, then A goes on. B's
    /// janitor must leave A's workspace alone (it cannot prove A dead), and both succeed.
    @Test func aWorkspaceBeingSetUpIsNotTakenForStale() throws {
        let scene = try Scene(
            dockerfile: """
                FROM busybox
                RUN echo hello > /hello
                """)
        let fifo = scene.scratch.path + "/pause"
        try #require(mkfifo(fifo, 0o600) == 0)
        let first = scene.scratch.path + "/first"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: HermeticProcess.binaryPath)
        process.arguments = scene.arguments(["-o", "type=oci,dest=\(first).oci"])
        process.environment = [
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": scene.temporary,
            "HERMETIC_TEST_WORKSPACE_PAUSE": fifo,
        ]
        _ = FileManager.default.createFile(atPath: first + ".log", contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: first + ".log"))
        try process.run()
        // Opening the FIFO for writing returns once A opened it: A is at the pause, and stays there until
        // the FIFO is closed.
        let writer = open(fifo, O_WRONLY | O_CLOEXEC)
        try #require(writer >= 0)
        let second = try HermeticProcess.hermetic(
            scene.arguments(["-o", "type=oci,dest=\(scene.scratch.path)/second.oci"]),
            environment: ["TMPDIR": scene.temporary])
        #expect(second.status == 0, "\(second.standardError)")
        close(writer)
        process.waitUntilExit()
        let log = (try? String(contentsOfFile: first + ".log", encoding: .utf8)) ?? ""
        #expect(process.terminationStatus == 0, "\(log)")
        #expect(try scene.leftInTemporary() == [])
    }

    /// A build whose RUN step mounts a secret and waits on FIFOs the test holds, in the cache mount `sync`:
    /// the step writes `ready` once it runs (its secret mounted), then waits for a line on `go`.
    struct SecretStep {
        var scene: Scene
        var secretValue = "signal-secret-\(UInt64.random(in: 1...UInt64.max))"
        var ready: String
        var go: String
        var process: Process

        init(afterGo: String) throws {
            scene = try Scene(
                dockerfile: """
                    FROM busybox
                    RUN --mount=type=secret,id=tok --mount=type=cache,id=sync,target=/sync cat /run/secrets/tok >/dev/null && echo ready > /sync/ready && read go < /sync/go && \(afterGo)
                    """)
            let sync = try scene.cacheDirectory(id: "sync")
            ready = sync + "/ready"
            go = sync + "/go"
            guard mkfifo(ready, 0o666) == 0, mkfifo(go, 0o666) == 0 else {
                throw SystemError("mkfifo", path: sync, errno: errno)
            }
            let secretFile = scene.scratch.path + "/tok"
            try secretValue.write(toFile: secretFile, atomically: true, encoding: .utf8)
            process = try scene.start(
                [
                    "--secret", "id=tok,src=\(secretFile)", "-o", "type=oci,dest=\(scene.scratch.path)/out.oci",
                    "--iidfile", scene.scratch.path + "/out.iid",
                ], log: scene.scratch.path + "/build.log")
        }

        /// Returns once the step runs with its secret mounted.
        func waitUntilReady() throws {
            let fd = open(ready, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SystemError("open", path: ready, errno: errno) }
            defer { close(fd) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 64)
            while case let count = read(fd, &buffer, buffer.count), count > 0 { bytes += buffer[..<count] }
            #expect(String(decoding: bytes, as: UTF8.self) == "ready\n")
        }

        /// Lets the step go on.
        func release() throws {
            let fd = open(go, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SystemError("open", path: go, errno: errno) }
            defer { close(fd) }
            _ = write(fd, "go\n", 3)
        }

        /// After the signal: 128 + it, and nothing of the build in TMPDIR (so no secret), no output.
        func expectCleanEnd(after signalNumber: Int32) throws {
            process.waitUntilExit()
            let log = (try? String(contentsOfFile: scene.scratch.path + "/build.log", encoding: .utf8)) ?? ""
            #expect(process.terminationStatus == 128 + signalNumber, "\(log)")
            #expect(try scene.leftInTemporary() == [])
            #expect(scene.filesHolding(secretValue) == [])
            #expect(!FileManager.default.fileExists(atPath: scene.scratch.path + "/out.oci"))
            #expect(!FileManager.default.fileExists(atPath: scene.scratch.path + "/out.iid"))
        }
    }

    /// SIGINT or SIGTERM while a RUN step that mounts a secret runs: exit 128 + the signal, no workspace
    /// and no file holding the secret left in TMPDIR (SPEC §6).
    @Test(arguments: [SIGINT, SIGTERM]) func aSignalDuringASecretStepLeavesNoWorkspace(signalNumber: Int32) throws {
        let step = try SecretStep(afterGo: "true")
        try step.waitUntilReady()
        kill(step.process.processIdentifier, signalNumber)
        try step.expectCleanEnd(after: signalNumber)
    }

    /// The signal just as the step, released, writes into its root (in the workspace) as fast as it can:
    /// the builder stops its own threads and kills the step before it removes the workspace, so nothing
    /// is written there after the removal began. Five times over for each signal.
    @Test(arguments: [SIGINT, SIGTERM]) func aSignalWhileAStepWritesLeavesNoWorkspace(signalNumber: Int32) throws {
        for _ in 0..<5 {
            let step = try SecretStep(
                afterGo: "i=0; while [ $i -lt 20000 ]; do echo $i > /f$i; i=$((i+1)); done")
            try step.waitUntilReady()
            try step.release()
            kill(step.process.processIdentifier, signalNumber)
            try step.expectCleanEnd(after: signalNumber)
        }
    }

    /// The signal while the builder itself writes into its workspace (unpacking a base of 30000 files, seen
    /// as the files appearing there): its other threads are stopped before the workspace is removed, so
    /// none goes on writing into it after the removal began.
    @Test(arguments: [SIGINT, SIGTERM]) func aSignalWhileTheBuilderUnpacksLeavesNoWorkspace(signalNumber: Int32)
        throws
    {
        let scene = try Scene(dockerfile: "FROM big\nRUN true\n")
        var entries = try BaseImages.busyboxEntries()
        entries.append(LayerEntry(path: "many", kind: .directory, mode: 0o755))
        for index in 0..<30000 {
            entries.append(
                LayerEntry(path: "many/\(index)", kind: .regular(.bytes(Array("\(index)".utf8))), mode: 0o644))
        }
        let big = try BaseImages.writeLayout(at: scene.scratch.path + "/big", entries: entries, platform: .host)
        let process = try scene.start(
            [
                "--build-context", "big=oci-layout://\(scene.scratch.path)/big@\(big)",
                "-o", "type=oci,dest=\(scene.scratch.path)/out.oci",
            ], log: scene.scratch.path + "/build.log")
        // Until the unpacked base has files in the workspace (or the build ended).
        func unpacking() -> Bool {
            for workspace in (try? FileManager.default.contentsOfDirectory(atPath: scene.temporary)) ?? []
            where workspace.hasPrefix("hermetic-build-") {
                // The stage's directories are in its own directory of the platform's (StageScheduler).
                let stage = scene.temporary + "/" + workspace + "/p0/s0"
                for entry in (try? FileManager.default.contentsOfDirectory(atPath: stage)) ?? []
                where FileManager.default.fileExists(atPath: stage + "/" + entry + "/many/100") {
                    return true
                }
            }
            return false
        }
        while process.isRunning && !unpacking() { usleep(1000) }
        try #require(process.isRunning, "the build ended before the base was unpacked")
        kill(process.processIdentifier, signalNumber)
        process.waitUntilExit()
        #expect(process.terminationStatus == 128 + signalNumber)
        #expect(try scene.leftInTemporary() == [])
    }
}
