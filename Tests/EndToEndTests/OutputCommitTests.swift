import Foundation
import Hermetic
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The commit of a build's outputs is one point: a signal before it leaves the old outputs and nothing
/// else beside them; a signal after it lets the build finish. Moments made exact by FIFOs the builder reads
/// just before and just after that point (HERMETIC_TEST_PAUSE_BEFORE_COMMIT / _AFTER_COMMIT).
@Suite(.serialized) struct OutputCommitTests {
    struct Scene {
        var scratch: TemporaryDirectory
        var context: String
        var baseDigest: Digest
        var outputs: String { scratch.path + "/outputs" }
        var temporary: String { scratch.path + "/tmp" }

        init() throws {
            scratch = try TemporaryDirectory(prefix: "commit-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: scratch.path + "/tmp", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(
                atPath: scratch.path + "/outputs", withIntermediateDirectories: true)
            try "FROM busybox\nARG V\nRUN echo $V > /v\n".write(
                toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            baseDigest = try BaseImages.writeBusybox(at: scratch.path + "/busybox")
        }

        func arguments(version: String) -> [String] {
            [
                "build", context, "--progress", "plain", "--source-date-epoch", "0", "--state-dir",
                scratch.path + "/state", "--build-arg", "V=\(version)",
                "--build-context", "busybox=oci-layout://\(scratch.path)/busybox@\(baseDigest)",
                "-o", "type=oci,dest=\(outputs)/image", "-o", "type=local,dest=\(outputs)/root",
                "-o", "type=oci,dest=\(outputs)/image.tar", "--iidfile", "\(outputs)/iid",
            ]
        }

        func build(version: String) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(arguments(version: version), environment: ["TMPDIR": temporary])
        }

        /// Starts a build that stops at `pause` (BEFORE or AFTER) on a new FIFO; returns it and the FIFO.
        func startPaused(version: String, _ pause: String, log: String) throws -> (Process, String) {
            let fifo = scratch.path + "/pause-\(UInt32.random(in: 0...UInt32.max))"
            guard mkfifo(fifo, 0o600) == 0 else { throw SystemError("mkfifo", path: fifo, errno: errno) }
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: HermeticProcess.binaryPath)
            process.arguments = arguments(version: version)
            process.environment = [
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": temporary,
                "HERMETIC_TEST_PAUSE_\(pause)_COMMIT": fifo,
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            try process.run()
            return (process, fifo)
        }

        /// What is in the outputs directory besides the outputs (staged files, lock files).
        func debris() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: outputs).filter { $0.hasPrefix(".") }.sorted()
        }

        func iid() -> String? { try? String(contentsOfFile: outputs + "/iid", encoding: .utf8) }

        /// The digest index.json of the layout names, and the `v` file of the local tree.
        func state() -> [String?] {
            [
                iid(), try? String(contentsOfFile: outputs + "/image/index.json", encoding: .utf8),
                try? String(contentsOfFile: outputs + "/root/v", encoding: .utf8),
                (try? Data(contentsOf: URL(fileURLWithPath: outputs + "/image.tar"))).map {
                    Digest.sha256(of: Array($0)).description
                },
            ]
        }
    }

    /// Opens `fifo` for writing: returns once the build reads it, i.e. stands at the pause. Throws if the
    /// build ended first.
    static func waitForPause(_ fifo: String, of process: Process) throws -> Int32 {
        while true {
            let fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
            if fd >= 0 { return fd }
            guard errno == ENXIO, process.isRunning else {
                throw SystemError("the build did not reach the pause: open", path: fifo, errno: errno)
            }
            usleep(1000)
        }
    }

    @Test(arguments: [SIGINT, SIGTERM]) func aSignalBeforeTheCommitLeavesTheOldOutputsAndNoDebris(
        signalNumber: Int32
    ) throws {
        let scene = try Scene()
        let first = try scene.build(version: "1")
        try #require(first.status == 0, "\(first.standardError)")
        let before = scene.state()
        let (process, fifo) = try scene.startPaused(version: "2", "BEFORE", log: scene.scratch.path + "/log")
        let writer = try Self.waitForPause(fifo, of: process)
        kill(process.processIdentifier, signalNumber)
        process.waitUntilExit()
        close(writer)
        #expect(process.terminationStatus == 128 + signalNumber)
        #expect(scene.state() == before)
        #expect(try scene.debris() == [])
        #expect(try FileManager.default.contentsOfDirectory(atPath: scene.temporary) == [])
    }

    @Test(arguments: [SIGINT, SIGTERM]) func aSignalAfterTheCommitPointLetsTheBuildFinish(signalNumber: Int32)
        throws
    {
        let scene = try Scene()
        let first = try scene.build(version: "1")
        try #require(first.status == 0, "\(first.standardError)")
        let log = scene.scratch.path + "/log"
        let (process, fifo) = try scene.startPaused(version: "2", "AFTER", log: log)
        let writer = try Self.waitForPause(fifo, of: process)
        kill(process.processIdentifier, signalNumber)
        close(writer)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        let after = scene.state()
        #expect(after[0] != nil && after[0] != first.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(after[1]?.contains(after[0] ?? "-") == true)
        #expect(after[2] == "2\n")
        #expect(try scene.debris() == [])
        #expect(try FileManager.default.contentsOfDirectory(atPath: scene.temporary) == [])
    }

    /// A build SIGKILLed with its outputs staged leaves them beside the destinations; the next build to
    /// those destinations removes them (their lock is free, so their builder is dead).
    @Test func stagedOutputsOfAKilledBuildGoWithTheNextBuild() throws {
        let scene = try Scene()
        let (process, fifo) = try scene.startPaused(version: "1", "BEFORE", log: scene.scratch.path + "/log")
        let writer = try Self.waitForPause(fifo, of: process)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        close(writer)
        let left = try scene.debris()
        #expect(left.contains { $0.hasPrefix(".hermetic-stage-") }, "\(left)")
        let next = try scene.build(version: "1")
        #expect(next.status == 0, "\(next.standardError)")
        #expect(try scene.debris() == [])
        #expect(scene.state()[2] == "1\n")
    }

    /// Two builds writing the same destinations at once: the second waits for the first (and says so),
    /// then replaces its outputs; neither fails.
    @Test func aSecondWriterOfTheSameDestinationWaits() throws {
        let scene = try Scene()
        let (first, fifo) = try scene.startPaused(version: "1", "BEFORE", log: scene.scratch.path + "/first.log")
        let writer = try Self.waitForPause(fifo, of: first)
        let secondLog = scene.scratch.path + "/second.log"
        _ = FileManager.default.createFile(atPath: secondLog, contents: nil)
        let second = Process()
        second.executableURL = URL(fileURLWithPath: HermeticProcess.binaryPath)
        second.arguments = scene.arguments(version: "2")
        second.environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": scene.temporary]
        second.standardOutput = FileHandle.nullDevice
        second.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: secondLog))
        try second.run()
        // Until the second says it waits (or ended).
        func waiting() -> Bool {
            ((try? String(contentsOfFile: secondLog, encoding: .utf8)) ?? "").contains(
                "waiting for another build that is writing")
        }
        while second.isRunning && !waiting() { usleep(2000) }
        #expect(second.isRunning && waiting(), "\((try? String(contentsOfFile: secondLog, encoding: .utf8)) ?? "")")
        close(writer)
        first.waitUntilExit()
        second.waitUntilExit()
        #expect(first.terminationStatus == 0)
        #expect(second.terminationStatus == 0, "\((try? String(contentsOfFile: secondLog, encoding: .utf8)) ?? "")")
        #expect(scene.state()[2] == "2\n")
        #expect(try scene.debris() == [])
    }
}
