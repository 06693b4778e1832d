import Foundation
import Hermetic
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `RUN --mount=type=cache,sharing=…` across two builds at once on one state directory, each step held at
/// chosen moments by FIFOs in the shared cache mount `sync` (BuildKit's meaning of the modes).
@Suite(.serialized) struct CacheSharingTests {
    typealias Scene = ConcurrencyTests.Scene

    /// Reads `fifo` to its end (returns once a writer came and went).
    static func drain(_ fifo: String) throws -> String {
        let fd = open(fifo, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path: fifo, errno: errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64)
        while case let count = read(fd, &buffer, buffer.count), count > 0 { bytes += buffer[..<count] }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Writes a line to `fifo` (blocks until its reader opens it).
    static func send(_ fifo: String) throws {
        let fd = open(fifo, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path: fifo, errno: errno) }
        defer { close(fd) }
        _ = write(fd, "go\n", 3)
    }

    static func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// Two builds whose step logs `ID start`, waits for the test, then logs `ID end` to /c/log: under
    /// `sharing=locked` the second waits for the first (and says so), and the log is never interleaved.
    @Test func lockedWaitsForTheOtherBuild() throws {
        let scene = try Scene(
            dockerfile: """
                FROM busybox
                ARG ID
                RUN --mount=type=cache,id=c,target=/c,sharing=locked --mount=type=cache,id=sync,target=/s echo $ID start >> /c/log && echo $ID > /s/ready-$ID && read x < /s/go-$ID && echo $ID end >> /c/log
                """)
        let sync = try scene.cacheDirectory(id: "sync")
        for name in ["ready-a", "go-a", "ready-b", "go-b"] {
            try #require(mkfifo(sync + "/" + name, 0o666) == 0)
        }
        let logA = scene.scratch.path + "/a.log"
        let logB = scene.scratch.path + "/b.log"
        let a = try scene.start(["--build-arg", "ID=a", "-o", "type=oci,dest=\(scene.scratch.path)/a"], log: logA)
        #expect(try Self.drain(sync + "/ready-a") == "a\n")
        let b = try scene.start(["--build-arg", "ID=b", "-o", "type=oci,dest=\(scene.scratch.path)/b"], log: logB)
        let cacheLog = try scene.cacheDirectory(id: "c") + "/log"
        // Until b says it waits, or (without the lock) has started its step.
        while b.isRunning && !Self.text(logB).contains("waiting for cache mount c")
            && !Self.text(cacheLog).contains("b start")
        {
            usleep(2000)
        }
        #expect(Self.text(logB).contains("waiting for cache mount c (sharing=locked)"), "\(Self.text(logB))")
        try Self.send(sync + "/go-a")
        #expect(try Self.drain(sync + "/ready-b") == "b\n")
        try Self.send(sync + "/go-b")
        a.waitUntilExit()
        b.waitUntilExit()
        #expect(a.terminationStatus == 0, "\(Self.text(logA))")
        #expect(b.terminationStatus == 0, "\(Self.text(logB))")
        #expect(Self.text(cacheLog) == "a start\na end\nb start\nb end\n")
    }

    /// Under `sharing=private` a build gets a directory of its own while another build uses the cache
    /// (it sees nothing of it); once that one is done, the next private step reuses its directory.
    @Test func privateGetsADirectoryOfItsOwnWhileAnotherBuildUsesIt() throws {
        let scene = try Scene(
            dockerfile: """
                FROM busybox
                ARG ID
                RUN --mount=type=cache,id=c,target=/c,sharing=private --mount=type=cache,id=sync,target=/s echo $ID >> /c/mine && ls /c > /seen && echo $ID > /s/ready-$ID && read x < /s/go-$ID
                """)
        let sync = try scene.cacheDirectory(id: "sync")
        for name in ["ready-a", "go-a", "ready-b", "go-b", "ready-c", "go-c"] {
            try #require(mkfifo(sync + "/" + name, 0o666) == 0)
        }
        func start(_ id: String) throws -> Process {
            try scene.start(
                ["--build-arg", "ID=\(id)", "-o", "type=local,dest=\(scene.scratch.path)/\(id)"],
                log: scene.scratch.path + "/\(id).log")
        }
        let a = try start("a")
        #expect(try Self.drain(sync + "/ready-a") == "a\n")
        let b = try start("b")
        #expect(try Self.drain(sync + "/ready-b") == "b\n")
        try Self.send(sync + "/go-a")
        try Self.send(sync + "/go-b")
        a.waitUntilExit()
        b.waitUntilExit()
        #expect(a.terminationStatus == 0, "\(Self.text(scene.scratch.path + "/a.log"))")
        #expect(b.terminationStatus == 0, "\(Self.text(scene.scratch.path + "/b.log"))")
        let main = try scene.cacheDirectory(id: "c")
        #expect(Self.text(main + "/mine") == "a\n")
        #expect(Self.text(main + "-1/mine") == "b\n")
        #expect(Self.text(scene.scratch.path + "/b/seen") == "mine\n")
        // Alone, a private step takes the first free directory again.
        let c = try start("c")
        #expect(try Self.drain(sync + "/ready-c") == "c\n")
        try Self.send(sync + "/go-c")
        c.waitUntilExit()
        #expect(c.terminationStatus == 0)
        #expect(Self.text(main + "/mine") == "a\nc\n")
    }

    /// One id mounted twice in a step under `sharing=locked` is one directory, held once (a second lock
    /// would wait for the first forever).
    @Test func oneLockedIdTwiceInAStepIsOneDirectory() throws {
        let scene = try Scene(
            dockerfile: """
                FROM busybox
                RUN --mount=type=cache,id=x,target=/a,sharing=locked --mount=type=cache,id=x,target=/b,sharing=locked touch /a/f && ls /b > /seen
                """)
        let outcome = try HermeticProcess.hermetic(
            scene.arguments(["-o", "type=local,dest=\(scene.scratch.path)/out"]),
            environment: ["TMPDIR": scene.temporary])
        #expect(outcome.status == 0, "\(outcome.standardError)")
        #expect(Self.text(scene.scratch.path + "/out/seen") == "f\n")
    }
}
