import Foundation
import Hermetic
import TestSupport
import Testing

/// Shapes that Dockerfiles of public projects use and that BuildKit builds, end to end through the real
/// binary on a busybox base made by the test: RUN mounts without a target, empty `--chown` parts, quoted
/// ADD sources, refusals only where the target needs them, and every error naming its Dockerfile line.
@Suite struct RealWorldDockerfileTests {
    /// One Dockerfile in a fresh context, with the busybox base as the named context `busybox`.
    struct Build {
        let scratch: TemporaryDirectory
        let context: String
        let baseDigest: Digest

        init(_ dockerfile: String, files: [String: String] = [:]) throws {
            scratch = try TemporaryDirectory(prefix: "realworld-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            for (name, text) in files {
                let path = context + "/" + name
                try FileManager.default.createDirectory(
                    atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try text.write(toFile: path, atomically: true, encoding: .utf8)
            }
            baseDigest = try BaseImages.writeBusybox(at: scratch.path + "/busybox")
        }

        func run(_ extra: [String] = [], environment: [String: String] = [:]) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "--source-date-epoch", "1700000000",
                    "--state-dir", scratch.path + "/state",
                    "--build-context", "busybox=oci-layout://\(scratch.path)/busybox@\(baseDigest)",
                    "-o", "type=local,dest=\(scratch.path)/out",
                ] + extra, environment: environment)
        }

        func file(_ path: String) -> String? {
            try? String(contentsOfFile: scratch.path + "/out/" + path, encoding: .utf8)
        }

        func exists(_ path: String) -> Bool {
            var info = stat()
            return lstat(scratch.path + "/out/" + path, &info) == 0
        }
    }

    /// The one line a failed build printed, without its `error: ` prefix.
    static func errorLine(_ outcome: HermeticProcess.Outcome) -> String {
        let lines = outcome.standardError.split(separator: "\n").filter { $0.hasPrefix("error: ") }
        return lines.last.map { String($0.dropFirst("error: ".count)) } ?? "no error line in: \(outcome.standardError)"
    }

    // MARK: RUN --mount without target=

    /// BuildKit's dispatchRunMounts joins the target to the working directory, so a bind, cache or tmpfs
    /// mount without `target=` lands on it (docker/compose: `RUN --mount=from=binary ls`; buildkit:
    /// `RUN --mount=ro`); nothing of the mount reaches the layer.
    @Test func mountWithoutTargetLandsOnTheWorkingDirectory() throws {
        let build = try Build(
            """
            FROM busybox AS binary
            RUN mkdir -p /out && echo built > /out/tool
            FROM busybox
            WORKDIR /src
            RUN --mount=from=binary,source=/out ls > /from-stage && cat tool >> /from-stage
            RUN --mount=ro cat hello.txt > /from-context
            RUN --mount=type=tmpfs touch scratch-file && ls > /tmpfs-listing
            RUN ls -A /src > /left-in-src
            """,
            files: ["hello.txt": "hello from the context\n"])
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("from-stage") == "tool\nbuilt\n")
        #expect(build.file("from-context") == "hello from the context\n")
        #expect(build.file("tmpfs-listing") == "scratch-file\n")
        #expect(build.file("left-in-src") == "")
    }

    /// A cache mount without `id=` is named by its target as written, cleaned (BuildKit's
    /// `path.Clean(mount.Target)`): `/c/` and `/c` are one cache, and one without a target is `.` wherever the
    /// working directory is.
    @Test func cacheMountIDIsTheCleanedTarget() throws {
        let build = try Build(
            """
            FROM busybox
            RUN --mount=type=cache,target=/c/ echo one > /c/f
            RUN --mount=type=cache,target=/c cat /c/f > /seen-by-target
            WORKDIR /a
            RUN --mount=type=cache echo two > f
            WORKDIR /b
            RUN --mount=type=cache cat f > /seen-without-target
            RUN --mount=type=cache,target=. cat f > /seen-with-dot
            """)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("seen-by-target") == "one\n")
        #expect(build.file("seen-without-target") == "two\n")
        #expect(build.file("seen-with-dot") == "two\n")
    }

    /// A target that comes to `/` is refused with BuildKit's words, naming the line: no WORKDIR, an explicit
    /// `/`, or a relative path that climbs to it.
    @Test(arguments: [
        ("RUN --mount=ro true", "RUN --mount=ro: invalid mount target \"/\""),
        ("RUN --mount=type=cache,target=/ true", "RUN --mount=type=cache,target=/: invalid mount target \"/\""),
        (
            "WORKDIR /src\nRUN --mount=type=tmpfs,target=.. true",
            "RUN --mount=type=tmpfs,target=..: invalid mount target \"/\""
        ),
    ])
    func mountOnTheRootIsRefused(step: String, message: String) throws {
        let build = try Build("FROM busybox\n\(step)\n")
        let outcome = try build.run()
        #expect(outcome.status == 1)
        let line = step.split(separator: "\n").count + 1
        #expect(Self.errorLine(outcome) == "Dockerfile:\(line): \(message)")
    }

    // MARK: --chown with empty parts

    /// BuildKit's llb.WithUser marshals an empty user or group name as id 0: `--chown=${U}:${G}` with both
    /// empty is 0:0, `1000:` is 1000:0, `:1000` is 0:1000; an empty `--chown` (as written or expanded) is no
    /// --chown at all (dispatchCopy), so a stage's file keeps its owner.
    @Test func emptyChownPartsAreRoot() throws {
        let build = try Build(
            """
            FROM busybox AS owned
            RUN echo x > /f && chown 1234:4321 /f
            FROM busybox
            ARG U
            ARG G
            COPY --chown=${U}:${G} a /both-empty
            COPY --chown=1000: a /group-empty
            COPY --chown=:1000 a /user-empty
            COPY --from=owned --chown= /f /chown-empty
            COPY --from=owned --chown=$U /f /chown-expands-empty
            RUN stat -c '%n %u:%g' /both-empty /group-empty /user-empty /chown-empty /chown-expands-empty > /owners
            """,
            files: ["a": "a\n"])
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(
            build.file("owners")
                == "/both-empty 0:0\n/group-empty 1000:0\n/user-empty 0:1000\n/chown-empty 1234:4321\n"
                + "/chown-expands-empty 1234:4321\n")
    }

    // MARK: ADD sources as the shell lexer reads them

    /// BuildKit expands and unquotes a source before it classifies it: a quoted URL with `--checksum` is
    /// fetched (from a server the test runs on 127.0.0.1), not refused as a local path.
    @Test func aQuotedURLIsFetched() throws {
        let served = try TemporaryDirectory(prefix: "realworld-served-")
        let payload = Array("fetched through a quoted URL\n".utf8)
        try Data(payload).write(to: URL(fileURLWithPath: served.path + "/x.txt"))
        let server = try RemoteSourceTests.LoopbackServer(directory: served.path)
        let checksum = Digest.sha256(of: payload)
        let build = try Build(
            """
            FROM busybox
            ADD --checksum=\(checksum) "http://127.0.0.1:\(server.port)/x.txt" /quoted.txt
            ARG URL='http://127.0.0.1:\(server.port)/x.txt'
            ADD --checksum=\(checksum) '$URL' /single-quoted-as-written.txt
            """)
        let outcome = try build.run()
        #expect(outcome.status == 1)
        // Single quotes keep `$URL` as written, as BuildKit's lexer does: a local path, not in the context.
        #expect(Self.errorLine(outcome) == "Dockerfile:4: ADD --checksum: checksum requires HTTP(S) or Git sources")

        let fetched = try Build(
            """
            FROM busybox
            ADD --checksum=\(checksum) "http://127.0.0.1:\(server.port)/x.txt" /quoted.txt
            ARG URL=http://127.0.0.1:\(server.port)/x.txt
            ADD --checksum=\(checksum) "$URL" /double-quoted-variable.txt
            """)
        let good = try fetched.run()
        try #require(good.status == 0, "\(good.standardError)")
        #expect(fetched.file("quoted.txt") == "fetched through a quoted URL\n")
        #expect(fetched.file("double-quoted-variable.txt") == "fetched through a quoted URL\n")
    }

    /// A quoted git URL is a git source: refused as one (it slipped past and failed with `--checksum must
    /// be sha256:<64 hex>`, although no --checksum was given).
    @Test func aQuotedGitURLIsRefusedAsAGitSource() throws {
        let build = try Build("FROM busybox\nADD \"https://github.com/docker/compose.git#v2.24.0\" /src\n")
        let outcome = try build.run()
        #expect(outcome.status == 1)
        #expect(
            Self.errorLine(outcome)
                == "Dockerfile:2: ADD https://github.com/docker/compose.git#v2.24.0: git sources are not supported "
                + "by a hermetic build (check the repository out and pass it as --build-context NAME=DIR, then "
                + "COPY --from=NAME)")
    }

    /// SPEC: a stage the target does not need never fails the build, so a git source or an unpinned URL in
    /// another stage does not stop `--target`; building the stage that has it still fails, before any step.
    @Test func refusedSourcesOnlyFailAStageTheTargetNeeds() throws {
        let build = try Build(
            """
            FROM busybox AS app
            COPY main.sh /app/
            RUN sh /app/main.sh > /app/out
            FROM busybox AS docs
            ADD https://github.com/docker/docs.git /docs
            ADD https://example.invalid/unpinned.tgz /x
            FROM app AS release
            COPY --from=docs /docs /docs
            """,
            files: ["main.sh": "echo built\n"])
        let app = try build.run(["--target", "app", "--progress", "plain"])
        try #require(app.status == 0, "\(app.standardError)")
        #expect(app.standardError.contains("COPY main.sh /app/"), "plain progress names the steps")
        #expect(build.file("app/out") == "built\n")

        let release = try build.run(["--target", "release", "--progress", "plain"])
        #expect(release.status == 1)
        #expect(Self.errorLine(release).hasPrefix("Dockerfile:5: ADD https://github.com/docker/docs.git: git sources"))
        #expect(!release.standardError.contains("main.sh"), "a step ran before the refusal")
    }

    /// SPEC §8's way to build a file whose ADD names a git repository: the checkout as a directory context,
    /// copied without its `.git` as ADD would.
    @Test func aGitSourceBuildsFromACheckoutContext() throws {
        let build = try Build("FROM busybox\nCOPY --from=compose --exclude=.git / /src\nRUN cat /src/VERSION\n")
        let checkout = build.scratch.path + "/compose-checkout"
        try FileManager.default.createDirectory(atPath: checkout + "/.git", withIntermediateDirectories: true)
        try "ref: refs/heads/main\n".write(toFile: checkout + "/.git/HEAD", atomically: true, encoding: .utf8)
        try "v2.24.0\n".write(toFile: checkout + "/VERSION", atomically: true, encoding: .utf8)
        let outcome = try build.run(["--build-context", "compose=\(checkout)"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("src/VERSION") == "v2.24.0\n")
        #expect(!build.exists("src/.git"))
    }

    // MARK: Every error names its line

    /// Errors met while an instruction runs name its Dockerfile line, as every other error does (a WORKDIR
    /// onto a file said only `WORKDIR /src/ui: Not a directory`).
    @Test(arguments: [
        ("FROM busybox\nCOPY a /src/ui\nWORKDIR /src/ui\n", "Dockerfile:3: WORKDIR /src/ui: Not a directory"),
        (
            "FROM busybox\nRUN ln -s loop /loop\nWORKDIR /loop/x\n",
            "Dockerfile:3: resolve WORKDIR /loop/x: Too many levels of symbolic links"
        ),
        ("FROM busybox\nRUN ln -s /etc/passwd/nope /w\nWORKDIR /w\n", "Dockerfile:3: WORKDIR /w: Not a directory"),
    ])
    func executionErrorsNameTheLine(dockerfile: String, expected: String) throws {
        let build = try Build(dockerfile, files: ["a": "a\n"])
        let outcome = try build.run()
        #expect(outcome.status == 1)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome.standardError)")
        #expect(Self.errorLine(outcome) == expected)
    }

    /// An archive ADD extracts, and what goes wrong in it names the line too.
    @Test func aBadArchiveNamesTheLine() throws {
        let build = try Build("FROM busybox\nCOPY a /a\nADD evil.tar /x/\n", files: ["a": "a\n"])
        let tar = RawTar.archive([RawTar.Entry(name: "ok", data: [1]), RawTar.Entry(name: "../../escape", data: [1])])
        try Data(tar).write(to: URL(fileURLWithPath: build.context + "/evil.tar"))
        let outcome = try build.run()
        #expect(outcome.status == 1)
        #expect(outcome.standardError.split(separator: "\n").count == 1, "\(outcome.standardError)")
        #expect(
            Self.errorLine(outcome)
                == "Dockerfile:3: layer \(build.context)/evil.tar: entry \"../../escape\" refused: '..' leaves the "
                + "archive root")
    }

    /// A COPY whose destination's parent is a file fails, as BuildKit's copy fails its MkdirAll
    /// (`mkdir /f: not a directory`); the file is never turned into a directory.
    @Test(arguments: ["COPY a /f/x", "COPY a /f/", "COPY d /f/sub/", "ADD a /f/x", "COPY d /f"])
    func copyBelowAFileFails(step: String) throws {
        let build = try Build("FROM busybox\nCOPY a /f\n\(step)\n", files: ["a": "a\n", "d/inner": "i\n"])
        let outcome = try build.run()
        #expect(outcome.status == 1, "\(step): \(outcome.standardError)")
        let keyword = step.prefix { $0 != " " }
        #expect(Self.errorLine(outcome) == "Dockerfile:3: \(keyword) failed: mkdir /f: not a directory")
    }

    /// SPEC §8: a --chown name the stage does not have is an error, not BuildKit's silent root.
    @Test(arguments: [
        ("nosuchuser", "unable to find user nosuchuser: no matching entries in passwd file"),
        ("app:nosuchgroup", "unable to find group nosuchgroup: no matching entries in group file"),
    ])
    func anUnknownChownNameIsAnError(chown: String, message: String) throws {
        let build = try Build("FROM busybox\nCOPY --chown=\(chown) a /a\n", files: ["a": "a\n"])
        let outcome = try build.run()
        #expect(outcome.status == 1)
        #expect(Self.errorLine(outcome) == "Dockerfile:2: COPY --chown=\(chown): \(message)")
    }
}
