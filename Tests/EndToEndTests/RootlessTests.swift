import Foundation
import Hermetic
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Rootless mode: `hermetic build` started by a user who is not root relaunches itself as uid 0 of a
/// user namespace. Runs the real binary as `hermetic-rootless` (subordinate ids in /etc/subuid and
/// /etc/subgid, made by scripts/install-deps) and as `nobody` (no range: only id 0 is mapped).
@Suite(.serialized) struct RootlessTests {
    static let rootlessUser = "hermetic-rootless"

    struct Account {
        var uid: UInt32
        var gid: UInt32

        init(_ name: String) throws {
            guard let entry = getpwnam(name) else {
                throw ExternalTools.Failure(
                    description: "user \(name) is missing: scripts/install-deps makes it (with /etc/subuid ranges)")
            }
            uid = entry.pointee.pw_uid
            gid = entry.pointee.pw_gid
        }
    }

    struct Build {
        var scratch: TemporaryDirectory
        var context: String
        var baseDigest: Digest

        /// - Parameter allRoot: every file of the base owned by root (for a namespace that maps only id 0).
        init(dockerfile: String, allRoot: Bool = false) throws {
            scratch = try TemporaryDirectory(prefix: "rootless-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "from the context\n".write(toFile: context + "/note.txt", atomically: true, encoding: .utf8)
            var entries = try BaseImages.busyboxEntries()
            if allRoot {
                entries = entries.map { entry in
                    var owned = entry
                    owned.uid = 0
                    owned.gid = 0
                    return owned
                }
            }
            baseDigest = try BaseImages.writeLayout(at: scratch.path + "/busybox", entries: entries, platform: .host)
        }

        /// Builds as `account` (nil: as root, this process's user), into `output` under the scratch dir.
        func run(as account: Account?, output: String, extraEnvironment: [String: String] = [:]) throws
            -> HermeticProcess.Outcome
        {
            let arguments = [
                "build", context, "--progress", "quiet", "--source-date-epoch", "1700000000",
                "--state-dir", scratch.path + "/state-" + output,
                "--build-context", "busybox=oci-layout://\(scratch.path)/busybox@\(baseDigest)",
                "-o", "type=oci,dest=\(scratch.path)/\(output).oci", "--iidfile", "\(scratch.path)/\(output).iid",
            ]
            let environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": scratch.path, "TMPDIR": scratch.path]
                .merging(extraEnvironment) { $1 }
            guard let account else { return try HermeticProcess.hermetic(arguments, environment: environment) }
            // The scratch tree is the user's, as a user's own build directory would be.
            let chown = try HermeticProcess.run(
                "/bin/chown", ["-R", "\(account.uid):\(account.gid)", scratch.path])
            try #require(chown.status == 0, "\(chown.standardError)")
            return try HermeticProcess.run(
                try ExternalTools.require("setpriv"),
                [
                    "--reuid=\(account.uid)", "--regid=\(account.gid)", "--clear-groups", "--",
                    HermeticProcess.binaryPath,
                ] + arguments, environment: environment)
        }

        func digest(_ output: String) -> String? {
            try? String(contentsOfFile: "\(scratch.path)/\(output).iid", encoding: .utf8)
        }

        func owner(_ path: String) -> (UInt32, UInt32)? {
            var info = stat()
            guard lstat(scratch.path + "/" + path, &info) == 0 else { return nil }
            return (info.st_uid, info.st_gid)
        }
    }

    @Test func rootlessBuildGivesTheRootDigest() throws {
        let account = try Account(Self.rootlessUser)
        let build = try Build(
            dockerfile: """
                FROM busybox AS builder
                RUN mkdir -p /data/old && echo one > /data/old/a && echo two > /data/old/b
                RUN rm /etc/os-release && rm -rf /data/old && mkdir /data/old && echo three > /data/old/c
                COPY note.txt /data/
                RUN chown -R 1000:1000 /data && chmod 0640 /data/note.txt
                USER app
                WORKDIR /home/app/work
                RUN id -u > uid && id -g > gid && echo mine > mine.txt
                USER root
                RUN --mount=type=cache,target=/cache echo cached > /cache/c && cat /cache/c > /from-cache
                FROM scratch
                COPY --from=builder /data/ /data/
                COPY --from=builder /home/app/work/ /work/
                COPY --from=builder /from-cache /
                """)
        let asRoot = try build.run(as: nil, output: "root")
        try #require(asRoot.status == 0, "\(asRoot.standardError)")
        let rootless = try build.run(as: account, output: "rootless")
        try #require(rootless.status == 0, "\(rootless.standardError)")
        let digest = try #require(build.digest("rootless"))
        #expect(digest.hasPrefix("sha256:"))
        #expect(build.digest("root") == digest)
        // What the user's build wrote belongs to the user on the host.
        #expect(build.owner("rootless.oci/index.json").map { $0.0 } == account.uid)
        // The cache mount persisted under the given state directory, as the user's.
        #expect(build.owner("state-rootless").map { $0.0 } == account.uid)
        // And on a copied root (where overlayfs cannot be mounted) too.
        let copied = try build.run(as: account, output: "copied", extraEnvironment: ["HERMETIC_RUN_ROOT": "copy"])
        try #require(copied.status == 0, "\(copied.standardError)")
        #expect(build.digest("copied") == digest)
    }

    @Test func rootlessWithoutSubordinateIDsRunsRootSteps() throws {
        // nobody has no range in /etc/subuid: only id 0 is mapped, which is enough for root steps.
        let nobody = try Account("nobody")
        let build = try Build(
            dockerfile: """
                FROM busybox
                RUN echo hi > /hi && rm /etc/hostname && mkdir -p /srv/app && echo x > /srv/app/x
                """, allRoot: true)
        let asRoot = try build.run(as: nil, output: "root")
        try #require(asRoot.status == 0, "\(asRoot.standardError)")
        let rootless = try build.run(as: nobody, output: "single")
        try #require(rootless.status == 0, "\(rootless.standardError)")
        #expect(build.digest("single") == build.digest("root"))
        #expect(build.digest("single")?.hasPrefix("sha256:") == true)
    }

    @Test func unmappedUserIsOneClearLine() throws {
        let nobody = try Account("nobody")
        let build = try Build(
            dockerfile: """
                FROM busybox
                USER app
                RUN id
                """, allRoot: true)
        let outcome = try build.run(as: nobody, output: "single")
        #expect(outcome.status == 1)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome.standardError)")
        #expect(
            outcome.standardError.contains(
                "Dockerfile:3: USER app: uid 1000 and gid 1000 are not mapped in the builder's user namespace"),
            "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: build.scratch.path + "/single.oci"))
    }

    @Test func unmappedOwnerInABaseLayerIsOneClearLine() throws {
        let nobody = try Account("nobody")
        // The busybox base has /home/app owned by 1000:1000.
        let build = try Build(dockerfile: "FROM busybox\nRUN true\n")
        let outcome = try build.run(as: nobody, output: "single")
        #expect(outcome.status == 1)
        #expect(outcome.standardError.split(separator: "\n").count == 1, "\(outcome.standardError)")
        #expect(
            outcome.standardError.contains("owner 1000:1000 is not mapped in the builder's user namespace"),
            "\(outcome.standardError)")
        #expect(outcome.standardError.contains("home/app"), "\(outcome.standardError)")
    }
}
