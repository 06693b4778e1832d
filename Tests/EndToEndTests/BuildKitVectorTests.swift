import Foundation
import Hermetic
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Cases from BuildKit's frontend/dockerfile/dockerfile_test.go, rebuilt on a local context.
@Suite struct BuildKitVectorTests {
    /// Builds `dockerfile` in a context made by `prepare`, into a local output; returns it and the outcome.
    static func build(
        _ dockerfile: String, prepare: (String) throws -> Void = { _ in }, extra: [String] = [],
        dockerfileName: String = "Dockerfile"
    ) throws -> (scratch: TemporaryDirectory, outcome: HermeticProcess.Outcome, out: String) {
        let scratch = try TemporaryDirectory(prefix: "vector-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try dockerfile.write(toFile: context + "/" + dockerfileName, atomically: true, encoding: .utf8)
        try prepare(context)
        let out = scratch.path + "/out"
        let outcome = try HermeticProcess.hermetic(
            ["build", context, "--progress", "quiet", "--source-date-epoch", "1", "-o", "type=local,dest=\(out)"]
                + extra)
        return (scratch, outcome, out)
    }

    /// testCopySymlinks: a symlink source copied into a directory keeps its own name, with the target's bytes.
    @Test func copySymlinks() throws {
        let (scratch, outcome, out) = try Self.build(
            "FROM scratch\nCOPY foo /d/\nCOPY foo /x\n",
            prepare: { context in
                try "bar-contents".write(toFile: context + "/bar", atomically: true, encoding: .utf8)
                #expect(symlink("bar", context + "/foo") == 0)
            })
        _ = scratch
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect((try? String(contentsOfFile: out + "/d/foo", encoding: .utf8)) == "bar-contents")
        #expect(!FileManager.default.fileExists(atPath: out + "/d/bar"))
        #expect((try? String(contentsOfFile: out + "/x", encoding: .utf8)) == "bar-contents")
    }

    /// testDockerfileLowercase: with no `Dockerfile`, a lowercase `dockerfile` is the default.
    @Test func dockerfileLowercase() throws {
        let (scratch, outcome, out) = try Self.build(
            "FROM scratch\nCOPY <<EOF /x\nlower\nEOF\n", dockerfileName: "dockerfile")
        _ = scratch
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect((try? String(contentsOfFile: out + "/x", encoding: .utf8)) == "lower\n")
    }

    /// testDockerignoreInvalid: a `!` that excludes nothing is refused, naming the file and line.
    @Test func dockerignoreInvalid() throws {
        let (scratch, outcome, _) = try Self.build(
            "FROM scratch\nCOPY . /\n",
            prepare: { context in
                try "a\n!\n".write(toFile: context + "/.dockerignore", atomically: true, encoding: .utf8)
            })
        _ = scratch
        #expect(outcome.status == 1)
        #expect(outcome.standardError.hasPrefix("error: "), "\(outcome.standardError)")
        #expect(
            outcome.standardError.hasSuffix("/ctx/.dockerignore:2: invalid pattern \"!\"\n"), "\(outcome.standardError)"
        )
    }

    /// testCopySocket: a Unix socket in the context is copied as an empty regular file.
    @Test func copySocket() throws {
        let (scratch, outcome, out) = try Self.build(
            "FROM scratch\nCOPY . /\n",
            prepare: { context in
                let socket = try HermeticProcess.run(
                    "/usr/bin/env",
                    [
                        "python3", "-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
                        context + "/socket.sock",
                    ])
                try #require(socket.status == 0, "\(socket.standardError)")
            })
        _ = scratch
        try #require(outcome.status == 0, "\(outcome.standardError)")
        var info = stat()
        #expect(lstat(out + "/socket.sock", &info) == 0)
        #expect((info.st_mode & S_IFMT) == S_IFREG && info.st_size == 0)
    }
}
