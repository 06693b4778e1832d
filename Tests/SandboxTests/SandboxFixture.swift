import Foundation
import Testing

@testable import Sandbox

/// A busybox root filesystem (one lower layer) plus upper and work directories in a fresh temp dir,
/// removed on deinit. Sandbox requirements that are missing fail the test with the reason.
final class SandboxFixture {
    let base: String
    var lower: String { base + "/lower" }
    var upper: String { base + "/upper" }
    var work: String { base + "/work" }
    /// A host file the step must never read or change.
    var canary: String { base + "/host-canary" }
    let canaryText = "host-canary-\(UInt64.random(in: 0...UInt64.max))"

    static let applets = [
        "sh", "cat", "ls", "echo", "env", "id", "hostname", "rm", "mkdir", "touch", "sleep", "test", "true",
        "false", "mount", "unshare", "nc", "grep", "stat", "pwd", "wc", "ps", "mknod", "readlink",
    ]

    init() throws {
        try #require(
            getuid() == 0, "the sandbox needs root (namespaces, overlayfs, cgroups); running as uid \(getuid())")
        let filesystems = try String(contentsOfFile: "/proc/filesystems", encoding: .utf8)
        try #require(filesystems.contains("\toverlay\n"), "overlayfs is not available in /proc/filesystems")
        try #require(
            FileManager.default.isExecutableFile(atPath: "/bin/busybox"), "/bin/busybox (busybox-static) is missing")

        var template = Array("/tmp/hermetic-sandbox-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        try #require(made != nil, "mkdtemp failed: errno \(errno)")
        base = String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)

        let manager = FileManager.default
        for directory in [lower + "/bin", lower + "/etc", lower + "/tmp", lower + "/root", upper, work] {
            try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        chmod(lower + "/tmp", 0o1777)
        try manager.copyItem(atPath: "/bin/busybox", toPath: lower + "/bin/busybox")
        for applet in Self.applets {
            try manager.createSymbolicLink(atPath: lower + "/bin/" + applet, withDestinationPath: "busybox")
        }
        try "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/tmp:/bin/sh\n"
            .write(toFile: lower + "/etc/passwd", atomically: false, encoding: .utf8)
        try "root:x:0:\nbuilder:x:1000:\n".write(toFile: lower + "/etc/group", atomically: false, encoding: .utf8)
        try canaryText.write(toFile: canary, atomically: false, encoding: .utf8)
    }

    deinit {
        removeTree(base, depth: 0)
    }

    func plan(_ argv: [String], environment: [String] = ["PATH=/bin"]) -> SandboxPlan {
        SandboxPlan(
            rootLayers: [lower], upperDirectory: upper, workDirectory: work, argv: argv, environment: environment,
            hostname: "sandbox-test", timeoutSeconds: 30, pidsLimit: 256)
    }

    func shell(_ script: String) -> SandboxPlan { plan(["/bin/sh", "-c", script]) }

    struct Output {
        var result: SandboxResult
        var stdout: String
        var stderr: String
    }

    /// Runs the plan with stdout and stderr captured in files.
    func run(_ plan: SandboxPlan) throws -> Output {
        let outPath = base + "/stdout-\(UInt32.random(in: 0...UInt32.max))"
        let errPath = outPath + ".err"
        let out = open(outPath, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0o600)
        let err = open(errPath, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0o600)
        defer {
            close(out)
            close(err)
            unlink(outPath)
            unlink(errPath)
        }
        try #require(out >= 0 && err >= 0)
        let result = try Sandbox.run(plan, stdout: out, stderr: err)
        return Output(
            result: result, stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }

    /// Entries of the upper directory, relative, sorted.
    func upperEntries() -> [String] {
        (FileManager.default.subpaths(atPath: upper) ?? []).sorted()
    }

    func canaryIntact() -> Bool {
        (try? String(contentsOfFile: canary, encoding: .utf8)) == canaryText
    }

    /// Compiles a static probe binary from C source into the lower layer at /probe.
    func installProbe(source: String) throws {
        let sourcePath = base + "/probe.c"
        try source.write(toFile: sourcePath, atomically: false, encoding: .utf8)
        try #require(
            FileManager.default.isExecutableFile(atPath: "/usr/bin/cc"), "cc is missing: cannot build the syscall probe"
        )
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/cc")
        process.arguments = ["-static", "-O1", "-o", lower + "/probe", sourcePath]
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "cc -static failed building the probe")
    }
}
