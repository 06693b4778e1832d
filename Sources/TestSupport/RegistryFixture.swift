import Foundation
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

/// A real registry for tests: Debian's `docker-registry` (distribution 2.8) on a free loopback port, its
/// storage in a temporary directory, optionally behind htpasswd Basic auth. Stopped (by its pid) when the
/// fixture goes away.
public final class RegistryFixture {
    public let port: Int
    public let directory: TemporaryDirectory
    private let process: Process

    /// `host:port`, as a reference's registry part.
    public var host: String { "127.0.0.1:\(port)" }

    /// Starts a registry; with `user` and `password` it requires them (Basic auth, bcrypt htpasswd).
    /// With `tls`, it serves HTTPS only, with that certificate and key (PEM files). With `tokenService`, it
    /// takes only the Bearer tokens that service signs (`auth: token`). With `accessLog`, it logs every
    /// request (`requestLog`).
    public init(
        user: String? = nil, password: String? = nil, tls: (certificate: String, key: String)? = nil,
        tokenService: TokenService? = nil, accessLog: Bool = false
    ) throws {
        let registry = try ExternalTools.require("docker-registry")
        directory = try TemporaryDirectory(prefix: "hermetic-registry-")
        port = try Self.freePort()
        var config = """
            version: 0.1
            log:
              level: error
              accesslog:
                disabled: \(!accessLog)
            storage:
              filesystem:
                rootdirectory: \(directory.path)/storage
            http:
              addr: 127.0.0.1:\(port)

            """
        if let user, let password {
            let htpasswd = try ExternalTools.require("htpasswd")
            let made = try HermeticProcess.run(htpasswd, ["-Bbn", user, password])
            guard made.status == 0 else {
                throw ExternalTools.Failure(description: "htpasswd failed: \(made.standardError)")
            }
            try made.standardOutput.write(toFile: directory.path + "/htpasswd", atomically: true, encoding: .utf8)
            config += """
                auth:
                  htpasswd:
                    realm: hermetic-test
                    path: \(directory.path)/htpasswd

                """
        }
        if let tokenService { config += tokenService.registryConfiguration }
        if let tls {
            config = config.replacingOccurrences(
                of: "  addr: 127.0.0.1:\(port)\n",
                with: "  addr: 127.0.0.1:\(port)\n  tls:\n    certificate: \(tls.certificate)\n    key: \(tls.key)\n")
        }
        try config.write(toFile: directory.path + "/config.yml", atomically: true, encoding: .utf8)
        process = Process()
        process.executableURL = URL(fileURLWithPath: registry)
        process.arguments = ["serve", directory.path + "/config.yml"]
        // The access log goes to standard output.
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: Self.touch(directory.path + "/log")))
        process.standardOutput = accessLog ? log : FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = log
        try process.run()
        try Self.waitForListener(port: port, process: process, log: directory.path + "/log")
    }

    // SIGKILL: a process started from the test runner inherits its blocked signals, SIGTERM among them.
    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// The requests the registry logged (`accessLog`), one per line as `METHOD PATH?QUERY STATUS`, the path
    /// and query percent-decoded.
    public var requestLog: [String] {
        let text = (try? String(contentsOfFile: directory.path + "/log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            // Combined log format: … "METHOD URI HTTP/1.1" STATUS SIZE …
            let parts = line.split(separator: "\"")
            guard parts.count > 2 else { return nil }
            let request = parts[1].split(separator: " ")
            guard request.count == 3, let status = parts[2].split(separator: " ").first else { return nil }
            let uri = String(request[1]).removingPercentEncoding ?? String(request[1])
            return "\(request[0]) \(uri) \(status)"
        }
    }

    /// Pushes the image `layout:tag` as `REPO:TAG` (or `REPO:destinationTag`) with skopeo (`skopeoOptions`
    /// such as `--all` or `--format v2s2` before the images); returns the digest the registry holds it by.
    public func push(
        layout: String, tag: String = "latest", as repository: String, destinationTag: String? = nil,
        credentials: String? = nil, skopeoOptions: [String] = []
    ) throws -> Digest {
        let skopeo = try ExternalTools.require("skopeo")
        let digestFile = directory.path + "/digest-\(UInt32.random(in: 0...UInt32.max))"
        var arguments = [
            "copy", "--dest-tls-verify=false", "--digestfile", digestFile, "oci:\(layout):\(tag)",
            "docker://\(host)/\(repository):\(destinationTag ?? tag)",
        ]
        if let credentials { arguments.insert(contentsOf: ["--dest-creds", credentials], at: 1) }
        arguments.insert(contentsOf: skopeoOptions, at: 1)
        let pushed = try HermeticProcess.run(skopeo, arguments)
        guard pushed.status == 0 else {
            throw ExternalTools.Failure(description: "skopeo copy to \(host) failed: \(pushed.standardError)")
        }
        let text = try String(contentsOfFile: digestFile, encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        return try Digest(parsing: text)
    }

    /// A port nothing listens on now (the kernel's pick for port 0).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ExternalTools.Failure(description: "socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw ExternalTools.Failure(description: "bind: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Waits (at most 30 s) until something accepts connections on the port; fails if the process ends.
    static func waitForListener(port: Int, process: Process, log: String) throws {
        for _ in 0..<300 {
            guard process.isRunning else {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                throw ExternalTools.Failure(description: "the test server exited: \(text)")
            }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            close(fd)
            if connected { return }
            usleep(100_000)
        }
        throw ExternalTools.Failure(description: "nothing listens on 127.0.0.1:\(port) after 30 s")
    }

    static func touch(_ path: String) -> String {
        FileManager.default.createFile(atPath: path, contents: nil)
        return path
    }
}

/// A certificate authority made by `openssl` for one test, and a server certificate it signed for
/// 127.0.0.1 (an IP subject alternative name).
public struct TestCertificateAuthority {
    public let caCertificate: String
    public let serverCertificate: String
    public let serverKey: String

    public init(in directory: String) throws {
        let openssl = try ExternalTools.require("openssl")
        caCertificate = directory + "/ca.pem"
        serverCertificate = directory + "/server.pem"
        serverKey = directory + "/server.key"
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: directory + "/san.ext", atomically: true, encoding: .utf8)
        let steps: [[String]] = [
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory + "/ca.key", "-out",
                caCertificate, "-days", "2", "-subj", "/CN=hermetic test CA",
            ],
            [
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", serverKey, "-out", directory + "/server.csr",
                "-subj", "/CN=127.0.0.1",
            ],
            [
                "x509", "-req", "-in", directory + "/server.csr", "-CA", caCertificate, "-CAkey",
                directory + "/ca.key", "-CAcreateserial", "-out", serverCertificate, "-days", "2", "-extfile",
                directory + "/san.ext",
            ],
        ]
        for step in steps {
            let outcome = try HermeticProcess.run(openssl, step)
            guard outcome.status == 0 else {
                throw ExternalTools.Failure(description: "openssl \(step[0]) failed: \(outcome.standardError)")
            }
        }
    }
}
