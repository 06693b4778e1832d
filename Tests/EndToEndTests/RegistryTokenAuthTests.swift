import Foundation
import Hermetic
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// docker's Bearer token flow against the real thing: Debian's `docker-registry` with `auth: token`, and a
/// token service of the test's own that signs RS256 JWTs and grants `alice` pull and push on `team/app` but
/// only pull on `team/base`. skopeo pushes the base (as `admin`); hermetic locks it, builds from it and
/// pushes the result with the credentials docker's config.json (or a credential helper) gives, asking the
/// token service once for each set of scopes, and neither the password nor a token is ever shown or kept.
@Suite struct RegistryTokenAuthTests {
    static let alicePassword = "al1ce-T0ken-pw"
    static let adminPassword = "adm1n-T0ken-pw"

    /// A token service, a registry that trusts it, and `team/base:1.0` (busybox) pushed there by skopeo.
    struct Setup {
        let scratch: TemporaryDirectory
        let tokens: TokenService
        let registry: RegistryFixture
        let base: Digest

        init(_ prefix: String) throws {
            scratch = try TemporaryDirectory(prefix: prefix)
            tokens = try TokenService(users: [
                "alice": .init(
                    password: RegistryTokenAuthTests.alicePassword,
                    grants: ["team/app": ["pull", "push"], "team/base": ["pull"], "team/tools": ["pull"]]),
                "admin": .init(password: RegistryTokenAuthTests.adminPassword, grants: ["*": ["pull", "push"]]),
            ])
            registry = try RegistryFixture(tokenService: tokens)
            let layout = scratch.path + "/busybox"
            let written = try BaseImages.writeBusybox(at: layout)
            base = try registry.push(
                layout: layout, as: "team/base", destinationTag: "1.0",
                credentials: "admin:\(RegistryTokenAuthTests.adminPassword)")
            #expect(base == written)
        }

        /// `$DOCKER_CONFIG` holding `config.json` with `json`.
        func dockerConfig(_ json: String) throws -> String {
            let directory = scratch.path + "/docker-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try json.write(toFile: directory + "/config.json", atomically: true, encoding: .utf8)
            return directory
        }

        /// docker login's `auths` entry for this registry.
        func loginConfig(user: String = "alice", password: String = RegistryTokenAuthTests.alicePassword) throws
            -> String
        {
            let auth = Data("\(user):\(password)".utf8).base64EncodedString()
            return try dockerConfig(#"{"auths":{"\#(registry.host)":{"auth":"\#(auth)"}}}"#)
        }

        /// What skopeo (as admin) reads under `reference` (below the registry host).
        func skopeoInspect(_ reference: String, raw: Bool = false) throws -> String {
            let skopeo = try ExternalTools.require("skopeo")
            let arguments =
                ["inspect", "--tls-verify=false", "--creds", "admin:\(RegistryTokenAuthTests.adminPassword)"]
                + (raw ? ["--raw"] : []) + ["docker://\(registry.host)/\(reference)"]
            let outcome = try HermeticProcess.run(skopeo, arguments)
            try #require(outcome.status == 0, "skopeo \(arguments): \(outcome.standardError)")
            return outcome.standardOutput
        }

        /// The token requests hermetic made (skopeo's are its own), from `since` on.
        func hermeticTokenRequests(since: Int = 0) throws -> [TokenService.Request] {
            Array(try tokens.requests().dropFirst(since)).filter { $0.userAgent?.hasPrefix("hermetic/") == true }
        }
    }

    /// A request's scopes as a set: each `repository:NAME:ACTIONS` with its actions sorted (the registry's
    /// challenge lists them in any order: `pull,push` or `push,pull`).
    static func scopeSet(_ request: TokenService.Request) -> String {
        request.scopes.flatMap { $0.split(separator: " ") }.map { scope in
            var parts = scope.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            if let actions = parts.popLast() {
                parts.append(actions.split(separator: ",").sorted().joined(separator: ","))
            }
            return parts.joined(separator: ":")
        }.sorted().joined(separator: " ")
    }

    static let dockerfileBody = "RUN echo built > /built.txt\nCOPY app.txt /app.txt\n"

    /// Neither a password nor a token the service issued in hermetic's output, nor in any regular file
    /// under `directories` (the state directory, the layout with the provenance).
    static func expectNothingLeaks(
        _ outcomes: [HermeticProcess.Outcome], directories: [String], tokens: TokenService,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let issued = try tokens.requests().compactMap(\.token)
        #expect(!issued.isEmpty, sourceLocation: sourceLocation)
        var secrets = [alicePassword, adminPassword, Data("alice:\(alicePassword)".utf8).base64EncodedString()]
        // A token's signature is its secret part; a token cut short must not be there either.
        secrets += issued.flatMap { token in [token, String(token.split(separator: ".").last ?? "")] }
        for outcome in outcomes {
            for secret in secrets {
                #expect(
                    !outcome.standardOutput.contains(secret) && !outcome.standardError.contains(secret),
                    "a secret in hermetic's output: \(outcome.standardError)", sourceLocation: sourceLocation)
            }
        }
        let needles = secrets.map { Data($0.utf8) }
        var scanned = 0
        for directory in directories {
            // Regular files only (a stage snapshot's symlinks would read the same binary again and again).
            for path in FileManager.default.enumerator(atPath: directory)?.allObjects as? [String] ?? [] {
                var info = stat()
                guard lstat(directory + "/" + path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG,
                    let bytes = FileManager.default.contents(atPath: directory + "/" + path)
                else { continue }
                scanned += 1
                #expect(
                    needles.allSatisfy { bytes.range(of: $0) == nil }, "\(directory)/\(path) holds a secret",
                    sourceLocation: sourceLocation)
            }
        }
        #expect(scanned > 0, "nothing was scanned in \(directories)", sourceLocation: sourceLocation)
    }

    @Test func aBaseBehindTokenAuthIsLockedBuiltAndPushedWithOneTokenPerScopeSet() throws {
        let setup = try Setup("registry-token-")
        let reference = "\(setup.registry.host)/team/base:1.0"
        let context = try RegistryPullTests.makeContext(
            setup.scratch, dockerfile: "FROM \(reference)\n" + Self.dockerfileBody)
        let docker = try setup.loginConfig()

        // hermetic lock resolves the tag through the registry, with one pull token.
        let locked = try HermeticProcess.hermetic(["lock", context], environment: ["DOCKER_CONFIG": docker])
        try #require(locked.status == 0, "\(locked.standardError)")
        let lockFile = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: context + "/hermetic.lock")))
        #expect((lockFile as? [String: Any])?["images"] as? [String: String] == [reference: setup.base.description])
        let lockTokens = try setup.hermeticTokenRequests()
        #expect(lockTokens.map(\.scopes) == [["repository:team/base:pull"]], "\(lockTokens.map(\.scopes))")
        #expect(lockTokens.allSatisfy { $0.authorization && $0.status == 200 && $0.user == "alice" })

        // The build pulls the pinned base and pushes to team/app; and writes a layout with the provenance.
        let before = try setup.tokens.requests().count
        let state = setup.scratch.path + "/state"
        let out = setup.scratch.path + "/out"
        let name = "\(setup.registry.host)/team/app:v1"
        let built = try HermeticProcess.hermetic(
            [
                "build", context, "--progress", "quiet", "--state-dir", state, "-o",
                "type=image,name=\(name),push=true", "-o", "type=oci,dest=\(out)",
            ], environment: ["DOCKER_CONFIG": docker])
        try #require(built.status == 0, "\(built.standardError)")
        let digest = built.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        let inspected = try RegistryPushTests.json(try setup.skopeoInspect("team/app:v1"))
        #expect(inspected["Digest"] as? String == digest)
        // podman, through the same token flow as alice, stores it by that digest.
        let podman = try RegistryInteropTests.Podman()
        let pulled = try podman.pull(name, credentials: "alice:\(Self.alicePassword)")
        #expect(pulled.digest == digest && pulled.repoDigests.contains("\(setup.registry.host)/team/app@\(digest)"))

        // One token for each set of scopes asked, each asked with the credentials, not one for each of
        // the blobs: the base's layer and config pulled; the layers, config and attestation blobs pushed.
        let buildTokens = try setup.hermeticTokenRequests(since: before)
        // The push asks for pull and push from its first request on (a HEAD, whose challenge names pull only);
        // the base's layer is mounted from team/base, whose challenge names both repositories (one `scope`
        // parameter each, as docker asks). Five uploads at once share each token.
        let scopeSets = buildTokens.map(Self.scopeSet)
        #expect(
            scopeSets == [
                "repository:team/base:pull", "repository:team/app:pull,push",
                "repository:team/app:pull,push repository:team/base:pull",
            ], "\(scopeSets)")
        #expect(buildTokens.last?.scopes.count == 2)
        #expect(buildTokens.allSatisfy { $0.authorization && $0.status == 200 && $0.user == "alice" })
        let pushedBlobs = try Self.blobCount(of: digest, in: out)
        #expect(pushedBlobs >= 5 && buildTokens.count < pushedBlobs, "\(buildTokens.count) tokens, \(pushedBlobs)")

        try Self.expectNothingLeaks([locked, built], directories: [state, out], tokens: setup.tokens)
    }

    /// Blobs the pushed image and its referrers in the layout name (layers, configs, attestation blobs).
    static func blobCount(of digest: String, in layout: String) throws -> Int {
        let index = try RegistryPushTests.json(try String(contentsOfFile: layout + "/index.json", encoding: .utf8))
        let manifests = (index["manifests"] as? [[String: Any]] ?? []).compactMap { $0["digest"] as? String }
        #expect(manifests.first == digest)
        var blobs = Set<String>()
        for manifest in manifests {
            let path = layout + "/blobs/sha256/" + manifest.dropFirst("sha256:".count)
            let object = try RegistryPushTests.json(try String(contentsOfFile: path, encoding: .utf8))
            let config = (object["config"] as? [String: Any])?["digest"] as? String
            let layers = (object["layers"] as? [[String: Any]] ?? []).compactMap { $0["digest"] as? String }
            blobs.formUnion(layers + [config].compactMap { $0 })
        }
        return blobs.count
    }

    /// alice may only pull `team/base`: a push there fails in one line naming the host, and the registry
    /// still holds the base skopeo pushed. A wrong password fails in one line too. Nothing leaks.
    @Test func aPushWithoutPushAccessAndAWrongPasswordFailInOneLine() throws {
        let setup = try Setup("registry-token-denied-")
        let context = try RegistryPullTests.makeContext(
            setup.scratch, dockerfile: "FROM \(setup.registry.host)/team/base@\(setup.base)\n" + Self.dockerfileBody)
        let state = setup.scratch.path + "/state"
        func build(_ docker: String, push name: String) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "--state-dir", state, "-o",
                    "type=image,name=\(name),push=true",
                ],
                environment: ["DOCKER_CONFIG": docker])
        }
        let denied = try build(try setup.loginConfig(), push: "\(setup.registry.host)/team/base:1.0")
        #expect(denied.status == 1)
        #expect(denied.standardError.split(separator: "\n").count == 1, "\(denied.standardError)")
        #expect(denied.standardError.hasPrefix("error: registry \(setup.registry.host): "), "\(denied.standardError)")
        #expect(
            denied.standardError.contains(
                "authentication failed: the registry answered 401 again: the credentials do not grant the access "
                    + "it needs (repository:team/base:")
                && denied.standardError.hasSuffix("), insufficient_scope\n"), "\(denied.standardError)")
        // The token service was asked for push, and granted pull only.
        let asked = try setup.hermeticTokenRequests().filter { Self.scopeSet($0) == "repository:team/base:pull,push" }
        #expect(!asked.isEmpty && asked.allSatisfy { $0.granted == ["repository:team/base:pull"] }, "\(asked)")
        let still = try RegistryPushTests.json(try setup.skopeoInspect("team/base:1.0"))
        #expect(still["Digest"] as? String == setup.base.description)

        let wrong = try build(
            try setup.loginConfig(password: "wrong-" + Self.alicePassword), push: "\(setup.registry.host)/team/app:v1")
        #expect(wrong.status == 1)
        #expect(wrong.standardError.split(separator: "\n").count == 1, "\(wrong.standardError)")
        #expect(
            wrong.standardError.contains("registry \(setup.registry.host): ")
                && wrong.standardError.contains(
                    "the token service 127.0.0.1:\(setup.tokens.port) refused the credentials (401)"),
            "\(wrong.standardError)")
        #expect(!wrong.standardError.contains("wrong-" + Self.alicePassword))

        try Self.expectNothingLeaks([denied, wrong], directories: [state], tokens: setup.tokens)
    }

    /// `credHelpers` names a helper for this registry: hermetic runs `docker-credential-test get` with the
    /// registry's address, once for the pulls of two repositories there and once for the push, and the token
    /// service gets the user it answers.
    @Test func aCredentialHelperGivesTheTokenServiceItsUser() throws {
        let setup = try Setup("registry-token-helper-")
        let tools = try setup.registry.push(
            layout: setup.scratch.path + "/busybox", as: "team/tools", destinationTag: "1.0",
            credentials: "admin:\(Self.adminPassword)")
        let context = try RegistryPullTests.makeContext(
            setup.scratch,
            dockerfile: "FROM \(setup.registry.host)/team/tools@\(tools) AS tools\n"
                + "FROM \(setup.registry.host)/team/base@\(setup.base)\nCOPY --from=tools /bin/busybox /tools-busybox\n"
                + Self.dockerfileBody)
        let bin = setup.scratch.path + "/bin"
        let asked = setup.scratch.path + "/asked"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let helper = """
            #!/bin/sh
            [ "$1" = get ] || exit 1
            read server
            printf '%s\\n' "$server" >> \(asked)
            [ "$server" = "\(setup.registry.host)" ] || { echo "credentials not found in native keychain"; exit 1; }
            printf '{"ServerURL":"%s","Username":"alice","Secret":"\(Self.alicePassword)"}' "$server"

            """
        try helper.write(toFile: bin + "/docker-credential-test", atomically: true, encoding: .utf8)
        chmod(bin + "/docker-credential-test", 0o755)
        let docker = try setup.dockerConfig(#"{"credHelpers":{"\#(setup.registry.host)":"test"}}"#)
        let state = setup.scratch.path + "/state"
        let built = try HermeticProcess.hermetic(
            [
                "build", context, "--progress", "quiet", "--state-dir", state, "--push", "-t",
                "\(setup.registry.host)/team/app:helper",
            ], environment: ["DOCKER_CONFIG": docker, "PATH": bin + ":/usr/bin:/bin"])
        try #require(built.status == 0, "\(built.standardError)")
        let digest = built.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try RegistryPushTests.json(try setup.skopeoInspect("team/app:helper"))["Digest"] as? String == digest)
        let servers = try String(contentsOfFile: asked, encoding: .utf8).split(separator: "\n")
        // Asked once by the pull, though it met two repositories' challenges, and once by the push.
        #expect(servers == [Substring(setup.registry.host), Substring(setup.registry.host)], "\(servers)")
        let requests = try setup.hermeticTokenRequests()
        #expect(!requests.isEmpty && requests.allSatisfy { $0.user == "alice" && $0.authorization }, "\(requests)")

        // Without the helper's answer (another registry's name): anonymous, which this service grants nothing.
        let other = try setup.dockerConfig(#"{"credHelpers":{"127.0.0.1:1":"test"}}"#)
        let anonymous = try HermeticProcess.hermetic(
            [
                "build", context, "--progress", "quiet", "--state-dir", state + "-anonymous", "-o",
                "type=oci,dest=\(state)-anonymous-out",
            ],
            environment: ["DOCKER_CONFIG": other, "PATH": bin + ":/usr/bin:/bin"])
        #expect(anonymous.status == 1)
        #expect(anonymous.standardError.split(separator: "\n").count == 1, "\(anonymous.standardError)")
        #expect(
            anonymous.standardError.contains("registry \(setup.registry.host): team/")
                && anonymous.standardError.hasSuffix(
                    "@\(setup.base): authentication failed: the registry answered 401 again to anonymous access; "
                        + "log in with docker login \(setup.registry.host)\n"),
            "\(anonymous.standardError)")
        try Self.expectNothingLeaks([built, anonymous], directories: [state], tokens: setup.tokens)
    }
}
