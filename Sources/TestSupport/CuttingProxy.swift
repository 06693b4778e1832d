import Foundation
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

/// A TCP proxy in front of a test server (a small Python script) that drops one request part way: after
/// it has passed on the `cutAt`-th request line starting with `method` and then `bytes` more bytes, it
/// closes both sides of that connection. Everything else passes as it is. It writes `cut` to its log
/// when it did.
public final class CuttingProxy {
    public let port: Int
    public let directory: TemporaryDirectory
    private let process: Process

    public var host: String { "127.0.0.1:\(port)" }

    public init(to upstreamPort: Int, method: String, cutAt: Int, bytes: Int) throws {
        let python = try ExternalTools.require("python3")
        directory = try TemporaryDirectory(prefix: "hermetic-cutting-proxy-")
        try Self.script.write(toFile: directory.path + "/proxy.py", atomically: true, encoding: .utf8)
        port = try RegistryFixture.freePort()
        process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [
            directory.path + "/proxy.py", String(port), String(upstreamPort), method, String(cutAt), String(bytes),
            directory.path + "/log",
        ]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = try FileHandle(
            forWritingTo: URL(fileURLWithPath: RegistryFixture.touch(directory.path + "/stderr")))
        try process.run()
        try RegistryFixture.waitForListener(port: port, process: process, log: directory.path + "/stderr")
    }

    // SIGKILL: a process started from the test runner inherits its blocked signals, SIGTERM among them.
    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Whether it cut a request.
    public var didCut: Bool {
        ((try? String(contentsOfFile: directory.path + "/log", encoding: .utf8)) ?? "").contains("cut")
    }

    static let script = #"""
        import socket, sys, threading
        port, upstream, method, cut_at, extra, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
        lock, seen = threading.Lock(), [0]
        def pipe(source, sink, cutting):
            left = None
            try:
                while True:
                    data = source.recv(65536)
                    if not data: break
                    if cutting and left is None and (data.startswith(method + b" /v2/") or b"\r\n" + method + b" /v2/" in data):
                        with lock:
                            seen[0] += 1
                            if seen[0] == cut_at: left = extra + data.find(b"\r\n\r\n") + 4
                    if left is not None:
                        sink.sendall(data[:left])
                        left -= min(left, len(data))
                        if left == 0:
                            open(log, "a").write("cut\n")
                            break
                    else:
                        sink.sendall(data)
            except OSError:
                pass
            for s in (source, sink):
                try: s.shutdown(socket.SHUT_RDWR)
                except OSError: pass
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(64)
        while True:
            client, _ = server.accept()
            remote = socket.create_connection(("127.0.0.1", upstream))
            threading.Thread(target=pipe, args=(client, remote, True), daemon=True).start()
            threading.Thread(target=pipe, args=(remote, client, False), daemon=True).start()
        """#
}
