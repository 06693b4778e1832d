import Foundation
import Hermetic
import TestSupport
import Testing

/// A builder inside a container may lack capabilities: the sandbox's own needs are one error line before
/// anything runs; Docker's default set for steps shrinks to what the builder has, with a warning.
@Suite(.serialized) struct BuilderEnvironmentTests {
    struct Build {
        var scratch: TemporaryDirectory
        var context: String
        var baseDigest: Digest

        init() throws {
            scratch = try TemporaryDirectory(prefix: "builder-env-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try """
            FROM busybox
            RUN echo made > /made && rm /etc/hostname
            """.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            baseDigest = try BaseImages.writeBusybox(at: scratch.path + "/busybox")
        }

        /// Builds with the builder's bounding set reduced by `dropped` (setpriv syntax, e.g. `-mknod`).
        func run(dropping dropped: [String], output: String) throws -> HermeticProcess.Outcome {
            var prefix: [String] = []
            if !dropped.isEmpty { prefix = ["--bounding-set=" + dropped.joined(separator: ","), "--"] }
            return try HermeticProcess.run(
                try ExternalTools.require("setpriv"),
                prefix + [
                    HermeticProcess.binaryPath, "build", context, "--progress", "quiet", "--source-date-epoch", "1",
                    // --no-cache: each build's RUN steps must run under the capabilities it has.
                    "--state-dir", scratch.path + "/state", "--no-cache",
                    "--build-context", "busybox=oci-layout://\(scratch.path)/busybox@\(baseDigest)",
                    "-o", "type=oci,dest=\(scratch.path)/\(output).oci", "--iidfile", "\(scratch.path)/\(output).iid",
                ], environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"])
        }

        func digest(_ output: String) -> String? {
            try? String(contentsOfFile: "\(scratch.path)/\(output).iid", encoding: .utf8)
        }
    }

    @Test func stepsGetWhatTheBuilderHasWithAWarning() throws {
        let build = try Build()
        let full = try build.run(dropping: [], output: "full")
        try #require(full.status == 0, "\(full.standardError)")
        #expect(full.standardError.isEmpty, "\(full.standardError)")
        // podman's default set lacks these three of Docker's.
        let reduced = try build.run(dropping: ["-mknod", "-net_raw", "-audit_write"], output: "reduced")
        try #require(reduced.status == 0, "\(reduced.standardError)")
        #expect(
            reduced.standardError
                == "warning: RUN steps get Docker's default capabilities without CAP_NET_RAW, CAP_MKNOD, CAP_AUDIT_WRITE, which this builder lacks\n"
        )
        #expect(build.digest("reduced") == build.digest("full"))
    }

    @Test func whatTheSandboxNeedsIsNamedInOneLine() throws {
        let build = try Build()
        let outcome = try build.run(dropping: ["-sys_admin", "-net_admin"], output: "none")
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError
                == "error: Dockerfile:2: RUN needs capabilities this builder lacks: CAP_SYS_ADMIN, CAP_NET_ADMIN (in a container: run it --privileged, or with --cap-add=SYS_ADMIN,NET_ADMIN)\n"
        )
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/none.oci"))
    }
}
