import Testing

@testable import Hermetic

/// What a COPY/ADD source names, judged as BuildKit's dispatchCopy judges it: after expansion and unquoting,
/// and only for a stage the target needs.
@Suite struct CopySourceRuleTests {
    static let digest = "sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d"

    /// The error planning `text` throws, or `planned`.
    func planning(_ text: String, buildArgs: [String: String] = [:], target: String? = nil) -> String {
        do {
            let dockerfile = try DockerfileParser.parse(Array(text.utf8), file: "Dockerfile")
            _ = try Planner(dockerfile: dockerfile, buildArguments: buildArgs, predefinedArguments: [:])
                .plan(target: target)
            return "planned"
        } catch {
            return "\(error)"
        }
    }

    @Test(arguments: [
        ("https://example.com/a.tgz", CopySourceKind.http), ("HTTP://example.com/a", .http),
        ("https://github.com/moby/buildkit.git", .git), ("https://github.com/o/r.git#v1:sub", .git),
        ("https://github.com/o/r.git?ref=main", .git), ("git://host/o/r", .git), ("ssh://git@host/o/r", .git),
        ("git@github.com:o/r.git", .git), ("deploy_key-1@host.example:repo", .git),
        ("https://example.com/r.git/file", .http), ("src/app.go", .local), ("user@host", .local),
        ("github.com/o/r", .local), ("a:b", .local), ("./x://y", .local),
    ])
    func classifies(source: String, kind: CopySourceKind) {
        #expect(CopySourceKind(of: source) == kind)
    }

    /// The refusals, with the texts the parser gave before they moved to planning.
    @Test(arguments: [
        (
            "FROM scratch\nADD https://example.com/a.tar.gz /a.tar.gz\n",
            "Dockerfile:2: ADD https://example.com/a.tar.gz requires --checksum=sha256:… (remote inputs must be pinned)"
        ),
        (
            "FROM scratch\nCOPY https://example.com/a /a\n",
            "Dockerfile:2: COPY cannot fetch https://example.com/a: use ADD --checksum=sha256:…"
        ),
        (
            "FROM scratch\nADD --checksum=\(digest) local.tar /x\n",
            "Dockerfile:2: ADD --checksum: checksum requires HTTP(S) or Git sources"
        ),
        (
            "FROM scratch\nADD --checksum=\(digest) https://e.com/a https://e.com/b /x/\n",
            "Dockerfile:2: checksum can't be specified for multiple sources"
        ),
        (
            "FROM scratch\nADD --checksum=md5:abc https://e.com/a /x\n",
            "Dockerfile:2: ADD https://e.com/a: --checksum must be sha256:<64 hex>"
        ),
    ])
    func refusals(text: String, message: String) {
        #expect(planning(text) == message)
    }

    /// A git source is refused, with what to do instead, however it is written; the message names it
    /// unquoted.
    @Test(arguments: [
        ("https://github.com/moby/buildkit.git", "https://github.com/moby/buildkit.git"),
        ("\"https://github.com/moby/buildkit.git\"", "https://github.com/moby/buildkit.git"),
        ("'git@github.com:moby/buildkit.git'", "git@github.com:moby/buildkit.git"),
        ("$REPO", "https://github.com/moby/buildkit.git#v0.13.0"),
    ])
    func gitSourcesAreRefusedQuotedOrNot(source: String, shown: String) {
        let text = "FROM scratch\nARG REPO=https://github.com/moby/buildkit.git#v0.13.0\nADD \(source) /src\n"
        #expect(
            planning(text)
                == "Dockerfile:3: ADD \(shown): git sources are not supported by a hermetic build (check the "
                + "repository out and pass it as --build-context NAME=DIR, then COPY --from=NAME)")
    }

    /// BuildKit unquotes a source with the shell lexer before it classifies it: a quoted URL is a URL.
    @Test func aQuotedURLIsAURL() {
        #expect(
            planning("FROM scratch\nADD --checksum=\(Self.digest) \"https://example.invalid/x.tgz\" /x\n") == "planned")
        #expect(
            planning("FROM scratch\nADD 'https://example.invalid/x.tgz' /x\n").hasSuffix(
                "ADD https://example.invalid/x.tgz requires --checksum=sha256:… (remote inputs must be pinned)"))
        #expect(planning("FROM scratch\nARG C=\(Self.digest)\nADD --checksum=$C https://e.com/x /x\n") == "planned")
    }

    /// SPEC: a stage the target does not need never fails the build.
    @Test func aRefusalOnlyFailsAStageTheTargetNeeds() {
        let text = """
            FROM scratch AS app
            COPY main.go /src/
            FROM scratch AS vendored
            ADD https://github.com/moby/buildkit.git /buildkit
            ADD https://example.com/unpinned.tgz /x
            FROM app AS release
            COPY --from=vendored /buildkit /b
            """
        #expect(planning(text, target: "app") == "planned")
        #expect(planning(text, target: "vendored").hasPrefix("Dockerfile:4: ADD https://github.com/moby/buildkit.git"))
        #expect(planning(text).hasPrefix("Dockerfile:4: ADD https://github.com/moby/buildkit.git"))
    }
}
