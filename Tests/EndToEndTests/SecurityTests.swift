import Foundation
import Hermetic
import TestSupport
import Testing

/// Escape attempts written as Dockerfiles, run by the real binary on a busybox base. Each probe must fail
/// inside the step (the step then succeeds because it expects the failure) or stop the build with one clear
/// line; the host's canary files stay untouched.
@Suite(.serialized) struct SecurityTests {
    struct Probe: CustomStringConvertible, Sendable {
        var name: String
        var dockerfile: String
        /// nil: the build must succeed; otherwise text the one error line must contain.
        var expectedError: String?
        /// Either outcome is safe (the build must still end, and the host stay untouched).
        var eitherOutcome = false
        var description: String { name }
    }

    static let canaryDirectory = "/tmp/hermetic-security-canary"

    static let probes: [Probe] = [
        Probe(
            name: "mount and unshare are refused",
            dockerfile: """
                FROM busybox
                RUN ! mount -t tmpfs none /mnt && ! unshare -m true && ! unshare -n true
                """),
        Probe(
            name: "no network but loopback",
            dockerfile: """
                FROM busybox
                RUN ! wget -q -T 2 -O /dev/null http://10.0.2.2/ && ! wget -q -T 2 -O /dev/null http://127.0.0.1:9/
                RUN test "$(tail -n +3 /proc/net/dev | wc -l)" = 1
                """),
        Probe(
            name: "the host root is not reachable through /proc",
            dockerfile: """
                FROM busybox
                RUN ! cat /proc/1/root\(canaryDirectory)/canary && ! ls \(canaryDirectory)
                """),
        Probe(
            name: "setuid gives a non-root USER nothing",
            dockerfile: """
                FROM busybox
                RUN cp /bin/busybox /bin/busybox-suid && chmod 4755 /bin/busybox-suid
                USER app
                RUN test "$(/bin/busybox-suid id -u)" = 1000 && ! /bin/busybox-suid touch /root/owned
                """),
        // Contained by the pids limit: the step either ends by itself (its PID 1 exits and the namespace with
        // it) or is ended by its timeout; either way the build ends and the host is untouched.
        Probe(
            name: "a fork bomb is contained",
            dockerfile: """
                FROM busybox
                RUN bomb() { bomb | bomb & }; bomb; sleep 2; exit 0
                """, eitherOutcome: true),
        Probe(
            name: "WORKDIR through /proc/self/fd is refused",
            dockerfile: """
                FROM busybox
                WORKDIR /proc/self/fd/7
                RUN pwd
                """, expectedError: "Dockerfile:"),
        // The image plants symlinks (from the context) at `/rootlink`, `/up` and `/etc/resolv.conf`; COPY,
        // WORKDIR and the sandbox's own resolv.conf must stay inside the root.
        Probe(
            name: "writes through image symlinks stay inside the root",
            dockerfile: """
                FROM busybox
                COPY links/ /
                COPY --chmod=644 probe.txt /rootlink/probe-root.txt
                COPY probe.txt /up/probe-up.txt
                RUN test -f /probe-root.txt && test -f /probe-up.txt && (echo nameserver 127.0.0.1 > /etc/resolv.conf || true)
                WORKDIR /rootlink/work
                RUN test "$(pwd -P)" = /work && test -d /work
                """),
        Probe(
            name: "a failing step leaves nothing",
            dockerfile: """
                FROM busybox
                RUN touch /should-not-survive && exit 9
                """, expectedError: "exit code: 9"),
    ]

    @Test(arguments: probes)
    func probeFailsSafely(probe: Probe) throws {
        try FileManager.default.createDirectory(atPath: Self.canaryDirectory, withIntermediateDirectories: true)
        let canary = Self.canaryDirectory + "/canary"
        try "untouched\n".write(toFile: canary, atomically: true, encoding: .utf8)
        let hostResolv = try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)

        let scratch = try TemporaryDirectory(prefix: "security-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try probe.dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        try "probe\n".write(toFile: context + "/probe.txt", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: context + "/links/etc", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: context + "/links/rootlink", withDestinationPath: "/")
        try FileManager.default.createSymbolicLink(atPath: context + "/links/up", withDestinationPath: "../../../../..")
        try FileManager.default.createSymbolicLink(
            atPath: context + "/links/etc/resolv.conf", withDestinationPath: canary)
        let base = try BaseImages.writeBusybox(at: scratch.path + "/busybox")
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", scratch.path + "/state", "--step-timeout", "15",
            "--build-context", "busybox=oci-layout://\(scratch.path)/busybox@\(base)",
            "-o", "type=local,dest=\(scratch.path)/out",
        ])
        if probe.eitherOutcome {
            #expect(
                outcome.status == 0 || outcome.standardError.split(separator: "\n").count == 1,
                "\(outcome.standardError)")
        } else if let expected = probe.expectedError {
            #expect(outcome.status != 0)
            let lines = outcome.standardError.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].contains(expected), "\(outcome.standardError)")
            #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))
        } else {
            #expect(outcome.status == 0, "\(outcome.standardError)")
        }
        #expect(try String(contentsOfFile: canary, encoding: .utf8) == "untouched\n")
        #expect((try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) == hostResolv)
        for stray in ["/probe-root.txt", "/probe-up.txt", "/should-not-survive", "/rootlink"] {
            #expect(!FileManager.default.fileExists(atPath: stray), "\(stray) appeared on the host")
        }
    }
}
