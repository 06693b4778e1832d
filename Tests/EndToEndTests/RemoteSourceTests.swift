import Foundation
import Hermetic
import TestSupport
import Testing

/// `ADD --checksum=sha256:… <url>`: fetched from a server this test runs on 127.0.0.1, kept only when the
/// checksum matches; a mismatch is one error line naming both digests.
@Suite struct RemoteSourceTests {
    /// A one-shot static file server on an ephemeral loopback port (python3's http.server).
    final class LoopbackServer {
        let process = Process()
        let port: Int
        init(directory: String) throws {
            let script = """
                import http.server, functools, sys
                handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
                server = http.server.HTTPServer(("127.0.0.1", 0), handler)
                print(server.server_address[1], flush=True)
                server.serve_forever()
                """
            process.executableURL = URL(fileURLWithPath: try ExternalTools.require("python3"))
            process.arguments = ["-c", script, directory]
            let out = Pipe()
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            try process.run()
            let line = String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
            guard let port = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                process.terminate()
                throw ExternalTools.Failure(description: "the test HTTP server did not start: \(line)")
            }
            self.port = port
        }
        deinit { process.terminate() }
    }

    @Test func fetchesPinnedFilesAndRefusesMismatches() throws {
        let scratch = try TemporaryDirectory(prefix: "remote-")
        let served = scratch.path + "/served"
        try FileManager.default.createDirectory(atPath: served, withIntermediateDirectories: true)
        let payload = Array("remote payload\n".utf8)
        try Data(payload).write(to: URL(fileURLWithPath: served + "/file.txt"))
        let server = try LoopbackServer(directory: served)
        let url = "http://127.0.0.1:\(server.port)/file.txt"
        let good = Digest.sha256(of: payload)

        func build(checksum: String) throws -> HermeticProcess.Outcome {
            let context = scratch.path + "/ctx-\(checksum.suffix(8))"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try "FROM scratch\nADD --checksum=\(checksum) \(url) /opt/\nADD --checksum=\(checksum) \(url) /named.txt\n"
                .write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            return try HermeticProcess.hermetic([
                "build", context, "--progress", "quiet", "-o", "type=local,dest=\(context)/out",
            ])
        }

        let ok = try build(checksum: good.description)
        try #require(ok.status == 0, "\(ok.standardError)")
        let out = scratch.path + "/ctx-\(good.description.suffix(8))/out"
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/opt/file.txt")) == Data(payload))
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/named.txt")) == Data(payload))
        var info = stat()
        #expect(lstat(out + "/named.txt", &info) == 0 && info.st_mode & 0o7777 == 0o600)

        let wrong = Digest.sha256(of: Array("something else".utf8)).description
        let bad = try build(checksum: wrong)
        #expect(bad.status != 0)
        #expect(bad.standardError.contains("checksum mismatch") && bad.standardError.contains(good.hex))
        #expect(bad.standardError.split(separator: "\n").count == 1)
    }
}
