import Foundation
import Hermetic
import TestSupport
import Testing

/// `hermetic inspect`, `verify` and `rebuild` given a registry reference (`REG/REPO:TAG` or `@sha256:…`):
/// the image pushed by `hermetic build` to a real `docker-registry` on loopback (which has no referrers API:
/// the referrers tag `sha256-HEX` is read), or served by a small registry that has the referrers API; the
/// results are those of the layout the same build wrote.
@Suite struct RegistryAttestationTests {
    static let dockerfile = "FROM base\nARG VERSION=1\nRUN echo built > /built.txt\nCOPY app.txt /app.txt\n"

    /// A signed build of a busybox-based image, written to a layout and pushed to `name` in one build.
    struct Pushed {
        let scratch: TemporaryDirectory
        let context: String
        let base: String
        let key: String
        let layout: String
        /// What the build printed: the image's digest.
        let digest: String

        /// `name`: where to push it too (nil: the layout only).
        init(name: String?, format: String = "referrers", provenance: Bool = true) throws {
            scratch = try TemporaryDirectory(prefix: "registry-attest-")
            base = scratch.path + "/busybox"
            let baseDigest = try BaseImages.writeBusybox(at: base)
            context = try RegistryPullTests.makeContext(scratch, dockerfile: RegistryAttestationTests.dockerfile)
            key = scratch.path + "/k.pem"
            let generated = try HermeticProcess.hermetic(["key", "generate", "--out", key])
            try #require(generated.status == 0, "\(generated.standardError)")
            layout = scratch.path + "/out"
            let built = try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "--state-dir", scratch.path + "/state",
                    "--build-context", "base=oci-layout://\(base)@\(baseDigest)", "--build-arg", "VERSION=7",
                    "--attest-format", format, "-o", "type=oci,dest=\(layout)",
                ] + (name.map { ["-o", "type=image,name=\($0),push=true"] } ?? [])
                    + (provenance ? ["--sign-key", key] : ["--provenance", "false"]))
            try #require(built.status == 0, "\(built.standardError)")
            digest = built.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func hermetic(_ arguments: [String]) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(arguments)
        }

        func rebuild(_ target: String) throws -> HermeticProcess.Outcome {
            try hermetic([
                "rebuild", target, "--context", context, "--key", key + ".pub", "--build-context",
                "base=oci-layout://\(base)",
            ])
        }
    }

    /// The digest of the one platform manifest of a layout's image (the image itself in the referrers
    /// form; the first entry of the wrapping index in BuildKit's).
    static func platformManifest(_ layout: String, image: String, format: String) throws -> String {
        guard format == "buildkit" else { return image }
        let index = try JSONDecoder().decode(
            ImageIndex.self,
            from: Data(contentsOf: URL(fileURLWithPath: layout + "/blobs/sha256/" + image.dropFirst("sha256:".count))))
        return try #require(index.manifests.first?.digest.description)
    }

    /// Signed, pushed with `-o type=image,…,push=true`: by tag and by digest, inspect shows what it shows for
    /// the layout (after a first line naming the digest read and the tag it came from), verify passes with
    /// the public key, and rebuild reproduces the platform manifest the registry holds.
    @Test(arguments: ["referrers", "buildkit"])
    func inspectVerifyAndRebuildReadTheRegistryAsTheLayout(format: String) throws {
        let registry = try RegistryFixture()
        let name = "\(registry.host)/apps/attested"
        let pushed = try Pushed(name: name + ":v1", format: format)
        let manifest = try Self.platformManifest(pushed.layout, image: pushed.digest, format: format)
        let byTag = name + ":v1"
        let byDigest = name + "@" + pushed.digest
        let shown = [byTag: "\(byDigest) (tag v1)", byDigest: byDigest]

        let onLayout = try pushed.hermetic(["inspect", pushed.layout, "--key", pushed.key + ".pub"])
        try #require(onLayout.status == 0, "\(onLayout.standardError)")
        let layoutJSON = try pushed.hermetic(["inspect", pushed.layout, "--format", "json"])
        let layoutStatement =
            try #require(
                try JSONSerialization.jsonObject(with: Data(layoutJSON.standardOutput.utf8)) as? [String: Any])[
                "statement"]
            as? [String: Any]
        for target in [byTag, byDigest] {
            let inspected = try pushed.hermetic(["inspect", target, "--key", pushed.key + ".pub"])
            #expect(inspected.status == 0, "\(target): \(inspected.standardError)")
            let lines = inspected.standardOutput.split(separator: "\n", omittingEmptySubsequences: false)
            #expect(lines.first == "image         \(shown[target] ?? "")"[...], "\(inspected.standardOutput)")
            #expect(inspected.standardOutput.contains("verified with key"), "\(inspected.standardOutput)")
            #expect(inspected.standardOutput.contains("build arg     VERSION=7"))
            if format == "referrers" {
                // The run record is a referrer too: the whole summary is the layout's.
                #expect(lines.dropFirst().joined(separator: "\n") == onLayout.standardOutput)
            }
            let json = try pushed.hermetic(["inspect", target, "--format", "json"])
            let object = try #require(
                try JSONSerialization.jsonObject(with: Data(json.standardOutput.utf8)) as? [String: Any])
            #expect(
                NSDictionary(dictionary: object["statement"] as? [String: Any] ?? [:])
                    == NSDictionary(dictionary: layoutStatement ?? ["layout": "none"]))
            let image = object["image"] as? [String: Any]
            #expect(image?["digest"] as? String == pushed.digest)
            #expect(image?["name"] as? String == name)
            #expect(image?["tag"] as? String == (target == byTag ? "v1" : nil))

            let verified = try pushed.hermetic([
                "verify", target, "--key", pushed.key + ".pub", "--require-pinned", "--expect-arg", "VERSION=7",
            ])
            #expect(verified.status == 0, "\(target): \(verified.standardError)")
            #expect(verified.standardOutput == "verified: \(shown[target] ?? "")\n")
            let wrongArg = try pushed.hermetic([
                "verify", target, "--key", pushed.key + ".pub", "--expect-arg", "VERSION=8",
            ])
            #expect(wrongArg.status == 1)
            #expect(wrongArg.standardError == "error: build arg VERSION is \"7\", expected \"8\"\n")
        }
        // Rebuilt from the provenance the registry holds: the platform manifest the registry holds again.
        for target in format == "referrers" ? [byTag, byDigest] : [byTag] {
            let rebuilt = try pushed.rebuild(target)
            #expect(rebuilt.status == 0, "\(target): \(rebuilt.standardError)")
            #expect(
                rebuilt.standardOutput
                    == "reproduced: \(manifest) (of \(byDigest)\(target == byTag ? ", tag v1" : ""))\n")
        }
        let onLayoutRebuild = try pushed.rebuild(pushed.layout)
        #expect(onLayoutRebuild.standardOutput == "reproduced: \(manifest)\n", "\(onLayoutRebuild.standardError)")
        guard format == "referrers" else { return }
        // Another context: the registry's manifest is not reproduced; the COPY's layer is named, and the
        // registry's copy of that one layer is fetched to name the file that differs.
        try "changed\n".write(toFile: pushed.context + "/app.txt", atomically: true, encoding: .utf8)
        let differs = try pushed.rebuild(byDigest)
        #expect(differs.status == 1)
        let lines = differs.standardError.split(separator: "\n").map(String.init)
        #expect(
            lines.first?.hasPrefix("error: rebuild differs: expected \(manifest) (of \(byDigest)), got sha256:") == true
        )
        #expect(
            lines.dropFirst().first?.hasPrefix("the layer made by Dockerfile:4 (COPY app.txt /app.txt) differs") == true
        )
        #expect(lines.count == 3, "\(differs.standardError)")
        #expect(lines.last?.hasPrefix("  app.txt: was file, size 4, ") == true, "\(differs.standardError)")
        #expect(lines.last?.contains("; now file, size 8, ") == true, "\(differs.standardError)")
    }

    /// An image pushed without provenance: one line naming the host, the digest and what was looked for.
    @Test func anImageWithoutAttestationsIsOneLineNamingTheHost() throws {
        let registry = try RegistryFixture()
        let name = "\(registry.host)/apps/bare"
        let pushed = try Pushed(name: name + ":v1", provenance: false)
        let hex = pushed.digest.dropFirst("sha256:".count)
        for arguments in [
            ["inspect", name + ":v1"], ["verify", name + ":v1", "--key", pushed.key + ".pub"],
            ["rebuild", name + "@" + pushed.digest, "--context", pushed.context],
        ] {
            let outcome = try pushed.hermetic(arguments)
            #expect(outcome.status == 1, "\(arguments)")
            #expect(
                outcome.standardError
                    == "error: registry \(registry.host): apps/bare@\(pushed.digest): no attestations found: no in-toto referrer of \(pushed.digest) is listed (referrers tag sha256-\(hex): the registry has no referrers API) and no image index holds BuildKit's attestation manifests (pushed with --provenance false?)\n",
                "\(arguments)")
        }
        // A tag or repository the registry does not have: one line, the host and what was asked.
        let missing = try pushed.hermetic(["inspect", name + ":nosuch"])
        #expect(missing.status == 1)
        #expect(missing.standardError == "error: registry \(registry.host): apps/bare:nosuch: not found (404)\n")
    }

    /// Two platforms behind Basic auth: with docker's credentials (DOCKER_CONFIG) each platform manifest's
    /// referrers are found under its own referrers tag and verify passes; without them, one line naming the
    /// host and the 401, and the password never shows.
    @Test func eachPlatformIsReadWithDockersCredentials() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-attest-auth-")
        let password = "1nspect-Secret"
        let registry = try RegistryFixture(user: "reader", password: password)
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY app.txt /app.txt\n")
        let docker = scratch.path + "/docker"
        try FileManager.default.createDirectory(atPath: docker, withIntermediateDirectories: true)
        let auth = Data("reader:\(password)".utf8).base64EncodedString()
        try #"{"auths":{"\#(registry.host)":{"auth":"\#(auth)"}}}"#.write(
            toFile: docker + "/config.json", atomically: true, encoding: .utf8)
        let key = scratch.path + "/k.pem"
        #expect(try HermeticProcess.hermetic(["key", "generate", "--out", key]).status == 0)
        let name = "\(registry.host)/multi/app"
        let environment = ["DOCKER_CONFIG": docker]
        let built = try HermeticProcess.hermetic(
            [
                "build", context, "--progress", "quiet", "--state-dir", scratch.path + "/state", "--platform",
                "linux/amd64,linux/arm64", "--sign-key", key, "-o", "type=oci,dest=\(scratch.path)/out", "--push", "-t",
                name + ":v2",
            ], environment: environment)
        try #require(built.status == 0, "\(built.standardError)")
        let digest = built.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        let index = try JSONDecoder().decode(
            ImageIndex.self,
            from: Data(
                contentsOf: URL(
                    fileURLWithPath: scratch.path + "/out/blobs/sha256/" + digest.dropFirst("sha256:".count))))
        #expect(index.manifests.count == 2)

        let verified = try HermeticProcess.hermetic(
            ["verify", name + ":v2", "--key", key + ".pub"], environment: environment)
        #expect(verified.status == 0, "\(verified.standardError)")
        #expect(verified.standardOutput == "verified: \(name)@\(digest) (tag v2)\n")
        let inspected = try HermeticProcess.hermetic(["inspect", name + "@" + digest], environment: environment)
        #expect(inspected.status == 0, "\(inspected.standardError)")
        for manifest in index.manifests {
            #expect(
                inspected.standardOutput.contains(" sha256:\(manifest.digest.hex)\n"), "\(inspected.standardOutput)")
        }

        let empty = scratch.path + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let anonymous = try HermeticProcess.hermetic(
            ["verify", name + ":v2", "--key", key + ".pub"], environment: ["DOCKER_CONFIG": empty])
        #expect(anonymous.status == 1)
        #expect(anonymous.standardError.split(separator: "\n").count == 1, "\(anonymous.standardError)")
        #expect(
            anonymous.standardError.hasPrefix("error: registry \(registry.host): multi/app:v2: ")
                && anonymous.standardError.contains("401"), "\(anonymous.standardError)")
        #expect(!(verified.standardOutput + verified.standardError + anonymous.standardError).contains(password))
    }

    /// A registry serving HTTPS with a certificate from the test's own CA: inspect, verify and rebuild refuse
    /// it in one line until `--registry-ca` names that CA, as build does.
    @Test func aTLSRegistryIsTrustedThroughRegistryCA() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-attest-tls-")
        let authority = try TestCertificateAuthority(in: scratch.path)
        let registry = try RegistryFixture(tls: (authority.serverCertificate, authority.serverKey))
        let context = try RegistryPullTests.makeContext(scratch, dockerfile: "FROM scratch\nCOPY app.txt /app.txt\n")
        let key = scratch.path + "/k.pem"
        #expect(try HermeticProcess.hermetic(["key", "generate", "--out", key]).status == 0)
        let name = "\(registry.host)/secure/app:v1"
        let built = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", scratch.path + "/state", "--sign-key", key,
            "--push", "-t", name, "--registry-ca", authority.caCertificate,
        ])
        try #require(built.status == 0, "\(built.standardError)")
        let digest = built.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        for command in [
            ["inspect", name], ["verify", name, "--key", key + ".pub"], ["rebuild", name, "--context", context],
        ] {
            let untrusted = try HermeticProcess.hermetic(command)
            #expect(untrusted.status == 1)
            #expect(
                untrusted.standardError
                    == "error: registry \(registry.host): cannot be reached over HTTP (/v2/ answered 400 over HTTP) or HTTPS (TLS: the registry's certificate is not trusted (CERTIFICATE_VERIFY_FAILED; trust a private CA with --registry-ca FILE))\n",
                "\(command): \(untrusted.standardError)")
            let trusted = try HermeticProcess.hermetic(command + ["--registry-ca", authority.caCertificate])
            #expect(trusted.status == 0, "\(command): \(trusted.standardError)")
            #expect(trusted.standardOutput.contains("\(digest)"), "\(command): \(trusted.standardOutput)")
        }
    }

    /// A referrer put under the referrers tag by hand, whose statement says another build arg than the
    /// signed one (the envelope's signature kept). Alone, verify refuses it (its signature does not verify);
    /// beside the true referrer, after or before it, verify takes the true one (one provenance that passes
    /// is enough, as for cosign's verify-attestation) and inspect shows the first listed, saying there are two.
    /// With only the run record's referrer left, there is no provenance: one line.
    @Test func aTamperedReferrerIsRefusedByVerify() throws {
        let registry = try RegistryFixture()
        let name = "\(registry.host)/apps/tampered"
        let pushed = try Pushed(name: name + ":v1")
        let python = try ExternalTools.require("python3")
        let script = pushed.scratch.path + "/tamper.py"
        try Self.tamperScript.write(toFile: script, atomically: true, encoding: .utf8)
        for mode in ["append", "prepend", "replace", "run-record-only"] {
            let tampered = try HermeticProcess.run(
                python,
                [
                    script, "http://\(registry.host)", "apps/tampered", pushed.digest, mode,
                    pushed.scratch.path + "/listed",
                ])
            try #require(tampered.status == 0, "\(tampered.standardError)")
            let verified = try pushed.hermetic(["verify", name + ":v1", "--key", pushed.key + ".pub"])
            let inspected = try pushed.hermetic(["inspect", name + ":v1", "--key", pushed.key + ".pub"])
            #expect(inspected.status == (mode == "run-record-only" ? 1 : 0), "\(mode): \(inspected.standardError)")
            let lines = verified.standardError.split(separator: "\n")
            switch mode {
            case "run-record-only":
                // Referrers there, but none with a provenance: one line, naming where they were looked for.
                for outcome in [verified, inspected] {
                    #expect(outcome.status == 1)
                    #expect(
                        outcome.standardError
                            == "error: \(name)@\(pushed.digest) (tag v1): no attestation names the image: no referrer in the registry's referrers has \(pushed.digest) as subject (built with --provenance false?)\n"
                    )
                }
            case "replace":
                #expect(verified.status == 1, "\(mode): \(verified.standardOutput)")
                #expect(lines.count == 1, "\(verified.standardError)")
                #expect(
                    lines.first?.hasPrefix("error: no signature verifies with the given keys (the signature by key ")
                        == true && lines.first?.hasSuffix(" does not verify)") == true, "\(verified.standardError)")
                #expect(inspected.standardOutput.contains("build arg     VERSION=8"))
                #expect(!inspected.standardOutput.contains("provenances"))
            default:
                #expect(verified.status == 0, "\(mode): \(verified.standardError)")
                #expect(verified.standardOutput == "verified: \(name)@\(pushed.digest) (tag v1)\n")
                #expect(
                    inspected.standardOutput.contains(
                        "build arg     VERSION=\(mode == "append" ? "7" : "8")\n"), "\(inspected.standardOutput)")
                #expect(
                    inspected.standardOutput.contains(
                        "\nprovenances   2 held by the registry's referrers; the first listed is shown (verify takes the first that passes)\n"
                    ), "\(inspected.standardOutput)")
            }
        }
    }

    /// Two builders, each with its own key, build the same image from the same inputs and push it under two
    /// tags: the registry's referrers then hold the same statement twice, signed by each; verify by either
    /// tag passes with either builder's key (not only the first listed's), and rebuild with the second's key.
    @Test func twoBuildersPushingTheSameImageAreEachVerified() throws {
        let registry = try RegistryFixture()
        let name = "\(registry.host)/apps/twice"
        let first = try Pushed(name: name + ":v1")
        let second = try Pushed(name: name + ":latest")
        try #require(first.digest == second.digest, "the same image twice")
        for (tag, builder) in [("v1", second), ("latest", first)] {
            let verified = try builder.hermetic(["verify", name + ":" + tag, "--key", builder.key + ".pub"])
            #expect(verified.status == 0, "\(tag): \(verified.standardError)")
            #expect(verified.standardOutput == "verified: \(name)@\(first.digest) (tag \(tag))\n")
        }
        let rebuilt = try second.rebuild(name + "@" + first.digest)
        #expect(rebuilt.status == 0, "\(rebuilt.standardError)")
        #expect(rebuilt.standardOutput == "reproduced: \(first.digest) (of \(name)@\(first.digest))\n")
        let other = try second.hermetic([
            "verify", name + ":v1", "--key", first.key + ".pub", "--key", second.key + ".pub",
        ])
        #expect(other.status == 0, "\(other.standardError)")
    }

    /// A registry with the referrers API: the attestations are found through it (a page at a time), the
    /// referrers tag is never asked for, and the results are the layout's. Where it serves a statement whose
    /// bytes are not its digest's, inspect and verify stop with one line naming the host and the blob.
    @Test func theReferrersAPIIsReadWhereTheRegistryHasIt() throws {
        let pushed = try Pushed(name: nil)
        let api = try ReferrersRegistry(layout: pushed.layout)
        let name = "\(api.host)/apps/api"
        let onLayout = try pushed.hermetic(["inspect", pushed.layout, "--key", pushed.key + ".pub"])
        let inspected = try pushed.hermetic(["inspect", name + ":v1", "--key", pushed.key + ".pub"])
        #expect(inspected.status == 0, "\(inspected.standardError)")
        #expect(
            inspected.standardOutput == "image         \(name)@\(pushed.digest) (tag v1)\n" + onLayout.standardOutput)
        let verified = try pushed.hermetic(["verify", name + "@" + pushed.digest, "--key", pushed.key + ".pub"])
        #expect(verified.status == 0, "\(verified.standardError)")
        #expect(verified.standardOutput == "verified: \(name)@\(pushed.digest)\n")
        let paths = api.requestedPaths
        #expect(paths.contains("/v2/apps/api/referrers/\(pushed.digest)"), "\(paths)")
        #expect(
            paths.contains("/v2/apps/api/referrers/\(pushed.digest)?page=1"), "two referrers, a page each: \(paths)")
        #expect(!paths.contains { $0.contains("/manifests/sha256-") }, "\(paths)")
        // No layer of the image is fetched, only its manifest, config and the attestations.
        let manifest = try JSONDecoder().decode(
            ImageManifest.self,
            from: Data(
                contentsOf: URL(
                    fileURLWithPath: pushed.layout + "/blobs/sha256/" + pushed.digest.dropFirst("sha256:".count))))
        #expect(!paths.contains { path in manifest.layers.contains { path.hasSuffix($0.digest.description) } })
        #expect(paths.contains("/v2/apps/api/blobs/\(manifest.config.digest)"))

        let tampered = try ReferrersRegistry(layout: pushed.layout, behaviour: .tamperedStatements)
        for command in ["inspect", "verify"] {
            let outcome = try pushed.hermetic([command, "\(tampered.host)/apps/api:v1", "--key", pushed.key + ".pub"])
            #expect(outcome.status == 1)
            #expect(
                outcome.standardError.hasPrefix("error: registry \(tampered.host): statement apps/api@sha256:")
                    && outcome.standardError.contains(": content does not match its digest (it hashes to sha256:")
                    && outcome.standardError.split(separator: "\n").count == 1, "\(outcome.standardError)")
        }
    }

    /// Replaces the referrers tag of IMAGE with (`replace`), or adds to it after (`append`) or before
    /// (`prepend`) the list it held first (kept in the file STATE), a copy of its provenance referrer whose
    /// statement and envelope payload say VERSION=8; prints the copy's digest.
    static let tamperScript = #"""
        import base64, hashlib, json, os, sys, urllib.request
        base, repo, image, mode, state = sys.argv[1:6]
        def digest(b): return "sha256:" + hashlib.sha256(b).hexdigest()
        def request(method, url, data=None, headers={}):
            r = urllib.request.Request(url if url.startswith("http") else base + url, data=data, method=method, headers=headers)
            return urllib.request.urlopen(r)
        def get(path, accept="application/vnd.oci.image.index.v1+json"):
            return request("GET", "/v2/%s/%s" % (repo, path), headers={"Accept": accept}).read()
        def put_blob(data):
            location = request("POST", "/v2/%s/blobs/uploads/" % repo).headers["Location"]
            request("PUT", location + ("&" if "?" in location else "?") + "digest=" + digest(data), data, {"Content-Type": "application/octet-stream"})
        def put_manifest(ref, data, media):
            request("PUT", "/v2/%s/manifests/%s" % (repo, ref), data, {"Content-Type": media})
        tag = image.replace(":", "-")
        if not os.path.exists(state): open(state, "wb").write(get("manifests/" + tag))
        listed = json.loads(open(state, "rb").read())
        entry = next(e for e in listed["manifests"] if e["annotations"]["in-toto.io/predicate-type"] == "https://slsa.dev/provenance/v1")
        manifest = json.loads(get("manifests/" + entry["digest"], "application/vnd.oci.image.manifest.v1+json"))
        for layer in manifest["layers"]:
            data = get("blobs/" + layer["digest"], "*/*")
            if layer["mediaType"] == "application/vnd.dsse.envelope.v1+json":
                envelope = json.loads(data)
                payload = base64.b64decode(envelope["payload"])
                changed = payload.replace(b'"VERSION":"7"', b'"VERSION":"8"')
                assert changed != payload, "the envelope's statement has no VERSION 7"
                envelope["payload"] = base64.b64encode(changed).decode()
                data = json.dumps(envelope).encode()
            else:
                changed = data.replace(b'"VERSION":"7"', b'"VERSION":"8"')
                assert changed != data, "the statement has no VERSION 7"
                data = changed
            put_blob(data)
            layer["digest"], layer["size"] = digest(data), len(data)
        forged = json.dumps(manifest).encode()
        put_manifest(digest(forged), forged, "application/vnd.oci.image.manifest.v1+json")
        forged_entry = dict(entry, digest=digest(forged), size=len(forged))
        original = listed["manifests"]
        run_records = [e for e in original if e is not entry and e["annotations"]["in-toto.io/predicate-type"] != entry["annotations"]["in-toto.io/predicate-type"]]
        listed["manifests"] = {"replace": [forged_entry], "append": original + [forged_entry], "prepend": [forged_entry] + original, "run-record-only": run_records}[mode]
        put_manifest(tag, json.dumps(listed).encode(), "application/vnd.oci.image.index.v1+json")
        print(digest(forged))
        """#
}
