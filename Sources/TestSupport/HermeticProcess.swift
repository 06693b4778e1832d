import Foundation

/// Runs the real `hermetic` binary (built beside the test bundle) and other real tools.
public enum HermeticProcess {
    public struct Outcome: Sendable {
        public var status: Int32
        public var standardOutput: String
        public var standardError: String
    }

    /// The `hermetic` executable in the build products directory of the running tests.
    public static var binaryPath: String {
        let exe =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("hermetic").path
    }

    /// Runs `hermetic ARGUMENTS` with exactly `environment` (nothing inherited) under `umask`.
    public static func hermetic(
        _ arguments: [String], environment: [String: String] = [:], umask: String = "022",
        currentDirectory: String? = nil
    ) throws -> Outcome {
        var env = environment
        if env["PATH"] == nil { env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin" }
        // Every build starts cold unless its test names a state directory: one test's cached steps must
        // never make another test's build pass (or two builds of one test agree) without running.
        var coldState: TemporaryDirectory?
        if arguments.first == "build", env["HERMETIC_STATE_DIR"] == nil,
            !arguments.contains(where: { $0 == "--state-dir" || $0.hasPrefix("--state-dir=") })
        {
            let state = try TemporaryDirectory(prefix: "hermetic-test-state-")
            env["HERMETIC_STATE_DIR"] = state.path
            coldState = state
        }
        defer { withExtendedLifetime(coldState) {} }
        return try run(
            "/bin/sh", ["-c", "umask \(umask) && exec \"$0\" \"$@\"", binaryPath] + arguments,
            environment: env, currentDirectory: currentDirectory)
    }

    /// Runs a program; returns its status and output. A missing program throws.
    public static func run(
        _ program: String, _ arguments: [String], environment: [String: String]? = nil,
        currentDirectory: String? = nil
    ) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read both pipes before waiting so a chatty child cannot block on a full pipe.
        let group = DispatchGroup()
        nonisolated(unsafe) var errData = Data()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Outcome(
            status: process.terminationStatus, standardOutput: String(decoding: outData, as: UTF8.self),
            standardError: String(decoding: errData, as: UTF8.self))
    }

    /// Finds a tool on PATH, then on the usual system paths; nil if it is not installed.
    public static func tool(_ name: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        for directory in path + ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
            let path = directory + "/" + name
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }
}
