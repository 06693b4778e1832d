import Foundation
import Hermetic
import TestSupport
import Testing

/// Base images pulled from registries by digest: a real `docker-registry` (anonymous and behind Basic auth)
/// that skopeo pushed to; the image is the one its layout builds, and credentials are never shown or kept.
@Suite struct RegistryPullTests {
    /// A context directory with `Dockerfile` (and `app.txt`) under `scratch`.
    static func makeContext(_ scratch: TemporaryDirectory, dockerfile: String, name: String = "Dockerfile") throws
        -> String
    {
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try dockerfile.write(toFile: context + "/" + name, atomically: true, encoding: .utf8)
        try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
        return context
    }

    /// Every blob in the store has the digest it is named by, and nothing is left in its tmp/.
    static func expectStoreHoldsOnlyVerifiedBlobs(_ state: String, sourceLocation: SourceLocation = #_sourceLocation)
        throws
    {
        let blobs = state + "/store/blobs/sha256"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: blobs)) ?? [] {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: blobs + "/" + name))
            #expect(Digest.sha256(of: Array(bytes)).hex == name, "blob \(name)", sourceLocation: sourceLocation)
        }
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: state + "/store/tmp")) ?? []
        #expect(leftovers.isEmpty, "left in tmp/: \(leftovers)", sourceLocation: sourceLocation)
    }

    static let body = "RUN echo built > /built.txt\nCOPY app.txt /app.txt\n"

    @Test func aBaseFromARealRegistryBuildsTheImageItsLayoutBuilds() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-pull-")
        let layout = scratch.path + "/busybox"
        let layoutDigest = try BaseImages.writeBusybox(at: layout)
        let registry = try RegistryFixture()
        let pushed = try registry.push(layout: layout, as: "tools/busybox")
        // skopeo pushes the OCI manifest as it is, so the registry holds it under the layout's digest.
        #expect(pushed == layoutDigest)
        let reference = "\(registry.host)/tools/busybox@\(pushed)"
        let context = try Self.makeContext(scratch, dockerfile: "FROM \(reference)\n" + Self.body)
        try ("FROM base\n" + Self.body).write(toFile: context + "/Dockerfile.base", atomically: true, encoding: .utf8)
        let state = scratch.path + "/state"
        let common = ["--progress", "quiet", "--provenance", "false"]
        let fromRegistry = try HermeticProcess.hermetic(
            ["build", context, "--state-dir", state, "-o", "type=oci,dest=\(scratch.path)/pulled"] + common)
        try #require(fromRegistry.status == 0, "\(fromRegistry.standardError)")
        let fromLayout = try HermeticProcess.hermetic(
            [
                "build", context, "-f", context + "/Dockerfile.base", "--build-context",
                "base=oci-layout://\(layout)@\(layoutDigest)",
            ] + common)
        try #require(fromLayout.status == 0, "\(fromLayout.standardError)")
        #expect(fromRegistry.standardOutput == fromLayout.standardOutput)
        #expect(FileManager.default.fileExists(atPath: state + "/store/blobs/sha256/" + pushed.hex))
        try Self.expectStoreHoldsOnlyVerifiedBlobs(state)

        // The same image through a docker-image:// named context.
        let named = try HermeticProcess.hermetic(
            [
                "build", context, "-f", context + "/Dockerfile.base", "--build-context",
                "base=docker-image://\(reference)",
            ] + common)
        try #require(named.status == 0, "\(named.standardError)")
        #expect(named.standardOutput == fromLayout.standardOutput)

        // The provenance names the image as written and its pin.
        let attest = scratch.path + "/attest.jsonl"
        let attested = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", state, "--attest-file", attest,
        ])
        try #require(attested.status == 0, "\(attested.standardError)")
        let firstLine = try String(contentsOfFile: attest, encoding: .utf8).split(separator: "\n")[0]
        let envelope = try JSONSerialization.jsonObject(with: Data(firstLine.utf8)) as? [String: Any]
        let payload = try #require(Data(base64Encoded: envelope?["payload"] as? String ?? ""))
        let statement = try JSONSerialization.jsonObject(with: payload) as? [String: Any]
        let definition = (statement?["predicate"] as? [String: Any])?["buildDefinition"] as? [String: Any]
        let dependencies = definition?["resolvedDependencies"] as? [[String: Any]] ?? []
        let image = dependencies.first { $0["name"] as? String == reference }
        #expect((image?["digest"] as? [String: String])?["sha256"] == pushed.hex, "\(dependencies)")
    }

    @Test func anUnpinnedRegistryBaseIsRefusedWithTheCommandThatPinsIt() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-unpinned-")
        let context = try Self.makeContext(scratch, dockerfile: "FROM 127.0.0.1:5/tools/busybox:1.36\n" + Self.body)
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "-o", "type=oci,dest=\(scratch.path)/out",
        ])
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError
                == "error: Dockerfile:1: image \"127.0.0.1:5/tools/busybox:1.36\": not pinned by digest: a build never resolves a tag (pin it as 127.0.0.1:5/tools/busybox:1.36@sha256:…, or run hermetic lock; skopeo inspect --format '{{.Digest}}' docker://127.0.0.1:5/tools/busybox:1.36 prints the digest)\n"
        )
    }

    @Test func aRegistryBehindBasicAuthTakesDockersCredentialsAndNeverShowsThem() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-auth-")
        let layout = scratch.path + "/busybox"
        try BaseImages.writeBusybox(at: layout)
        let password = "s3cret-Pa55word"
        let registry = try RegistryFixture(user: "tester", password: password)
        let pushed = try registry.push(layout: layout, as: "busybox", credentials: "tester:\(password)")
        let context = try Self.makeContext(
            scratch, dockerfile: "FROM \(registry.host)/busybox@\(pushed)\nCOPY app.txt /app.txt\n")
        func build(_ environment: [String: String]) throws -> HermeticProcess.Outcome {
            let state = scratch.path + "/state-\(UInt32.random(in: 0...UInt32.max))"
            let outcome = try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "--state-dir", state, "-o",
                    "type=oci,dest=\(state)-out",
                ], environment: environment)
            #expect(!outcome.standardError.contains(password) && !outcome.standardOutput.contains(password))
            let base64 = Data("tester:\(password)".utf8).base64EncodedString()
            // Regular files only (a stage snapshot's symlinks would read the same binary again and again).
            let stored = FileManager.default.enumerator(atPath: state)?.allObjects as? [String] ?? []
            let secrets = [Data(password.utf8), Data(base64.utf8)]
            for path in stored {
                var info = stat()
                guard lstat(state + "/" + path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG,
                    let bytes = FileManager.default.contents(atPath: state + "/" + path)
                else { continue }
                #expect(secrets.allSatisfy { bytes.range(of: $0) == nil }, "\(path) holds the credentials")
            }
            return outcome
        }
        func writeConfig(_ json: String) throws -> String {
            let directory = scratch.path + "/docker-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try json.write(toFile: directory + "/config.json", atomically: true, encoding: .utf8)
            return directory
        }

        let anonymous = try build([:])
        #expect(anonymous.status == 1)
        #expect(
            anonymous.standardError.hasPrefix(
                "error: Dockerfile:1: image \"\(registry.host)/busybox@\(pushed)\": registry \(registry.host): ")
                && anonymous.standardError.contains(
                    "needs credentials (401, Basic); log in with docker login \(registry.host)"),
            "\(anonymous.standardError)")

        let auth = Data("tester:\(password)".utf8).base64EncodedString()
        let withAuths = try build([
            "DOCKER_CONFIG": try writeConfig(#"{"auths":{"\#(registry.host)":{"auth":"\#(auth)"}}}"#)
        ])
        #expect(withAuths.status == 0, "\(withAuths.standardError)")

        let wrong = Data("tester:wrong-\(password)".utf8).base64EncodedString()
        let refused = try build([
            "DOCKER_CONFIG": try writeConfig(#"{"auths":{"http://\#(registry.host)/v2/":{"auth":"\#(wrong)"}}}"#)
        ])
        #expect(refused.status == 1)
        #expect(refused.standardError.contains("answered 401 again"), "\(refused.standardError)")

        // A credential helper, as `credsStore` names it: asked for exactly this registry's address.
        let bin = scratch.path + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let helper = """
            #!/bin/sh
            [ "$1" = get ] || exit 1
            read server
            [ "$server" = "\(registry.host)" ] || { echo "credentials not found in native keychain"; exit 1; }
            printf '{"ServerURL":"%s","Username":"tester","Secret":"\(password)"}' "$server"

            """
        try helper.write(toFile: bin + "/docker-credential-hermetictest", atomically: true, encoding: .utf8)
        chmod(bin + "/docker-credential-hermetictest", 0o755)
        let withHelper = try build([
            "DOCKER_CONFIG": try writeConfig(#"{"credsStore":"hermetictest"}"#), "PATH": bin + ":/usr/bin:/bin",
        ])
        #expect(withHelper.status == 0, "\(withHelper.standardError)")
        #expect(withAuths.standardOutput == withHelper.standardOutput)
    }

    /// The Bearer flow: the token service gets the user's credentials, the registry the token, and blob
    /// storage on another origin (a redirect to localhost from 127.0.0.1) neither.
    @Test func aBearerTokenComesFromTheRealmAndNoCredentialFollowsARedirectElsewhere() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-bearer-")
        let registry = try HostileRegistry.tokenRegistry()
        let context = try Self.makeContext(
            scratch, dockerfile: "FROM \(registry.host)/hostile@\(registry.manifest)\nCOPY app.txt /app.txt\n")
        let docker = scratch.path + "/docker"
        try FileManager.default.createDirectory(atPath: docker, withIntermediateDirectories: true)
        let auth = Data("tester:t0ken-pa55".utf8).base64EncodedString()
        try #"{"auths":{"\#(registry.host)":{"auth":"\#(auth)"}}}"#.write(
            toFile: docker + "/config.json", atomically: true, encoding: .utf8)
        let outcome = try HermeticProcess.hermetic(
            [
                "build", context, "--progress", "quiet", "--provenance", "false", "-o",
                "type=local,dest=\(scratch.path)/out",
            ], environment: ["DOCKER_CONFIG": docker])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(FileManager.default.fileExists(atPath: scratch.path + "/out/hello.txt"))
        let requests = registry.requestedPaths
        #expect(requests.contains { $0.hasPrefix("/token?") && $0.hasSuffix(" authorized") }, "\(requests)")
        #expect(
            requests.contains { $0.hasPrefix("/v2/hostile/manifests/") && $0.hasSuffix(" authorized") }, "\(requests)")
        let storage = requests.filter { $0.hasPrefix("/storage/") }
        #expect(storage.count == 2 && storage.allSatisfy { !$0.hasSuffix(" authorized") }, "\(requests)")
    }

    /// A registry serving HTTPS with a certificate from a CA of the test's own: refused until `--registry-ca`
    /// names that CA, beside the system's store.
    @Test func aTLSRegistryIsTrustedThroughRegistryCA() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-tls-")
        let authority = try TestCertificateAuthority(in: scratch.path)
        let layout = scratch.path + "/busybox"
        try BaseImages.writeBusybox(at: layout)
        let registry = try RegistryFixture(tls: (authority.serverCertificate, authority.serverKey))
        let pushed = try registry.push(layout: layout, as: "busybox")
        let context = try Self.makeContext(
            scratch, dockerfile: "FROM \(registry.host)/busybox@\(pushed)\nCOPY app.txt /app.txt\n")
        let arguments = ["build", context, "--progress", "quiet", "-o", "type=oci,dest=\(scratch.path)/out"]
        let untrusted = try HermeticProcess.hermetic(arguments)
        #expect(untrusted.status == 1)
        #expect(
            untrusted.standardError.hasSuffix(
                "error: Dockerfile:1: image \"\(registry.host)/busybox@\(pushed)\": registry \(registry.host): cannot be reached over HTTP (/v2/ answered 400 over HTTP) or HTTPS (TLS: the registry's certificate is not trusted (CERTIFICATE_VERIFY_FAILED; trust a private CA with --registry-ca FILE))\n"
            ), "\(untrusted.standardError)")
        #expect(untrusted.standardError.split(separator: "\n").count == 1)
        let trusted = try HermeticProcess.hermetic(arguments + ["--registry-ca", authority.caCertificate])
        #expect(trusted.status == 0, "\(trusted.standardError)")
        let notAFile = try HermeticProcess.hermetic(arguments + ["--registry-ca", scratch.path])
        #expect(notAFile.standardError == "error: --registry-ca \"\(scratch.path)\": not a readable file\n")
    }
}
