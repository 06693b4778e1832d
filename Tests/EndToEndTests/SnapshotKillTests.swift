import Foundation
import Hermetic
import TestSupport
import Testing

/// `kill -9` at any moment, snapshots being made among them, leaves the store consistent (SPEC §10): `store
/// check` finds nothing but a killed build's leftovers in `tmp/`, the next build gives the image a cold
/// build gives, and no overlay stays mounted once the next build's janitor ran.
@Suite struct SnapshotKillTests {
    static let dockerfile = """
        FROM base AS data
        RUN mkdir /data && i=0; while [ $i -lt 3000 ]; do echo $i > /data/f$i; i=$((i+1)); done \\
            && head -c 20000000 /dev/zero > /data/big
        FROM base
        COPY --from=data /data /data
        RUN ls /data | wc -l > /count

        """

    @Test func killedBuildsLeaveAConsistentStore() throws {
        let scratch = try TemporaryDirectory(prefix: "snapshot-kill-")
        let context = scratch.path + "/ctx"
        let temporary = scratch.path + "/tmp"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        try Self.dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        let base = try BaseImages.writeBusybox(at: scratch.path + "/base")
        func arguments(_ state: String, _ name: String) -> [String] {
            [
                "build", context, "--state-dir", state, "--build-context",
                "base=oci-layout://\(scratch.path)/base@\(base)", "-o", "type=oci,dest=\(scratch.path)/out-\(name)",
                "--iidfile", scratch.path + "/\(name).iid", "--progress", "quiet",
            ]
        }
        let environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": temporary]
        let started = Date()
        let cold = try HermeticProcess.hermetic(arguments(scratch.path + "/cold", "cold"), environment: environment)
        try #require(cold.status == 0, "\(cold.standardError)")
        let coldSeconds = Date().timeIntervalSince(started)
        let state = scratch.path + "/state"
        for attempt in 1...6 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: HermeticProcess.binaryPath)
            process.arguments = arguments(state, "killed")
            process.environment = environment
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            usleep(useconds_t(coldSeconds * Double(attempt) / 7 * 1_000_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let check = try HermeticProcess.hermetic(["store", "check", "--state-dir", state])
            let findings = check.standardOutput.split(separator: "\n").filter {
                $0 != "the store is consistent" && !$0.hasSuffix(": left by a build that did not finish")
            }
            #expect(findings.isEmpty, "after kill \(attempt): \(check.standardOutput)")
        }
        let next = try HermeticProcess.hermetic(arguments(state, "next"), environment: environment)
        try #require(next.status == 0, "\(next.standardError)")
        let coldDigest = try String(contentsOfFile: scratch.path + "/cold.iid", encoding: .utf8)
        #expect(try String(contentsOfFile: scratch.path + "/next.iid", encoding: .utf8) == coldDigest)
        #expect(WorkspaceMounts.under(temporary).isEmpty, "\(WorkspaceMounts.under(temporary))")
        #expect(try HermeticProcess.hermetic(["store", "check", "--repair", "--state-dir", state]).status == 0)
        let clean = try HermeticProcess.hermetic(["store", "check", "--state-dir", state])
        #expect(clean.standardOutput == "the store is consistent\n", "\(clean.standardOutput)")
    }
}

/// Mount points below a directory, from /proc/self/mountinfo (the test shares the builder's namespace).
enum WorkspaceMounts {
    static func under(_ directory: String) -> [String] {
        let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let path = String(fields[4])
            return path.hasPrefix(directory + "/") ? path : nil
        }
    }
}
