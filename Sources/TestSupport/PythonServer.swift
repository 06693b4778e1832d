import Foundation
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

/// A test server written in Python, the part every fake of these tests shares: its script written into
/// `directory`, started with python3 (standard error to `directory/stderr`), ready when the script has
/// written its ready file (a JSON object: its port and whatever else it tells), and killed with the fixture.
public final class PythonServer {
    public let directory: TemporaryDirectory
    /// What the script wrote when it listened.
    private let ready: [String: Any]
    private let process: Process

    /// Starts `script` (written as `directory/NAME`) with `arguments` after it; `readyFile` is where the
    /// script says it listens. `directory`: one the caller filled first, else a new one named `prefix`.
    public init(
        script: String, name: String, arguments: [String], readyFile: String = "ready.json",
        directory: TemporaryDirectory? = nil, prefix: String = "hermetic-python-server-"
    ) throws {
        let python = try ExternalTools.require("python3")
        let directory = try directory ?? TemporaryDirectory(prefix: prefix)
        self.directory = directory
        try script.write(toFile: directory.path + "/" + name, atomically: true, encoding: .utf8)
        process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [directory.path + "/" + name] + arguments
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = try FileHandle(
            forWritingTo: URL(fileURLWithPath: RegistryFixture.touch(directory.path + "/stderr")))
        try process.run()
        var ready: [String: Any]?
        for _ in 0..<300 where ready == nil {
            if let data = FileManager.default.contents(atPath: directory.path + "/" + readyFile) {
                ready = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
            }
            if ready == nil {
                guard process.isRunning else { break }
                usleep(100_000)
            }
        }
        guard let ready else {
            let log = (try? String(contentsOfFile: directory.path + "/stderr", encoding: .utf8)) ?? ""
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            throw ExternalTools.Failure(description: "\(name) did not start: \(log)")
        }
        self.ready = ready
    }

    // SIGKILL: a process started from the test runner inherits its blocked signals, SIGTERM among them.
    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// A number the ready file holds (written as a number or as a string of digits).
    public func readyNumber(_ key: String) throws -> Int {
        guard let value = (ready[key] as? Int) ?? (ready[key] as? String).flatMap({ Int($0) }) else {
            throw ExternalTools.Failure(description: "the test server's ready file has no number \(key)")
        }
        return value
    }

    /// A string the ready file holds.
    public func readyText(_ key: String) throws -> String {
        guard let value = ready[key] as? String else {
            throw ExternalTools.Failure(description: "the test server's ready file has no text \(key)")
        }
        return value
    }

    /// The lines of `directory/requests.log` (what the script logged of each request), in order.
    public var requestLog: [String] {
        ((try? String(contentsOfFile: directory.path + "/requests.log", encoding: .utf8)) ?? "")
            .split(separator: "\n").map(String.init)
    }
}
