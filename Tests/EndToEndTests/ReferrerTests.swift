import Foundation
import Hermetic
import Provenance
import TestSupport
import Testing

/// The provenance as OCI 1.1 referrers (the default `--attest-format`): an artifact manifest per image
/// manifest, naming it as `subject`, listed beside the image in index.json; the image digest is the image's
/// alone, and outside readers take the layout as it is. `--attest-format buildkit` keeps BuildKit's form.
@Suite(.serialized) struct ReferrerTests {
    struct Fixture {
        let scratch: TemporaryDirectory
        let context: String
        let baseArgument: String
        let key: String

        init() throws {
            scratch = try TemporaryDirectory(prefix: "referrers-")
            context = scratch.path + "/ctx"
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try "FROM base\nARG VERSION=1\nCOPY app.txt /app/app.txt\nLABEL version=$VERSION\n".write(
                toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
            let digest = try BaseImages.writeGoldenBase(at: scratch.path + "/base")
            baseArgument = "base=oci-layout://\(scratch.path)/base@\(digest)"
            key = scratch.path + "/k.pem"
            // The default algorithm: ECDSA P-256, whose signatures are randomized.
            let generated = try HermeticProcess.hermetic(["key", "generate", "--out", key])
            try #require(generated.status == 0, "\(generated.standardError)")
        }

        /// Builds into the layout `name` (tag `app:1`), signed with the ECDSA key unless `signed` is false.
        @discardableResult
        func build(_ name: String, _ extra: [String] = [], signed: Bool = true) throws -> String {
            let outcome = try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "-t", "app:1", "--build-context", baseArgument,
                    "-o", "type=oci,dest=\(path(name))", "--iidfile", path(name) + ".iid",
                    "--metadata-file", path(name) + ".json",
                ] + (signed ? ["--sign-key", key] : []) + extra)
            try #require(outcome.status == 0, "build \(name): \(outcome.standardError)")
            return try String(contentsOfFile: path(name) + ".iid", encoding: .utf8)
        }

        func path(_ name: String) -> String { scratch.path + "/" + name }
    }

    /// index.json of a layout, decoded.
    static func layoutIndex(_ layout: String) throws -> ImageIndex {
        try JSONDecoder().decode(ImageIndex.self, from: Data(contentsOf: URL(fileURLWithPath: layout + "/index.json")))
    }

    static func blob(_ layout: String, _ digest: Digest) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: layout + "/blobs/sha256/" + digest.hex))
    }

    static let slsa = "https://slsa.dev/provenance/v1"
    static let runRecord = "https://hermetic.build/run-record/v1"

    /// The index.json entries that are not the image and carry statements of `predicateType`: its referrers.
    static func referrers(_ layout: String, image: String, predicateType: String = slsa) throws -> [Descriptor] {
        try layoutIndex(layout).manifests.filter {
            $0.digest.description != image && $0.annotations?["in-toto.io/predicate-type"] == predicateType
        }
    }

    @Test func twoSignedBuildsGiveTheSameImageDigestAndDifferentReferrers() throws {
        let fixture = try Fixture()
        let first = try fixture.build("one")
        let second = try fixture.build("two")
        let unsigned = try fixture.build("unsigned", signed: false)
        let bare = try fixture.build("bare", ["--provenance", "false"], signed: false)
        #expect(first == second, "two signed builds of the same inputs give different image digests")
        #expect(first == unsigned && first == bare, "the image digest depends on the attestations")

        // The image entry of index.json is the manifest itself, as in a build without provenance.
        let bareTop = try #require(try Self.layoutIndex(fixture.path("bare")).manifests.first)
        #expect(bareTop.digest.description == bare && bareTop.mediaType == MediaType.imageManifest)
        for name in ["one", "two"] {
            let entries = try Self.layoutIndex(fixture.path(name)).manifests
            #expect(entries.count == 3, "\(name): the image, its provenance and its run record: \(entries)")
            #expect(entries.first?.digest.description == first && entries.first?.mediaType == MediaType.imageManifest)
            #expect(entries.first?.annotations?["org.opencontainers.image.ref.name"] == "1")
            #expect(entries.first?.annotations?["dev.hermetic.run-record"] == nil, "the run record is a referrer")
            let metadata = try JSONDecoder().decode(
                [String: String].self, from: Data(contentsOf: URL(fileURLWithPath: fixture.path(name) + ".json")))
            #expect(metadata["containerimage.digest"] == first)
            #expect(metadata["containerimage.descriptor.mediaType"] == MediaType.imageManifest)
        }

        // The referrers differ (the ECDSA signatures do), each an artifact manifest naming the image.
        let one = try #require(try Self.referrers(fixture.path("one"), image: first).first)
        let two = try #require(try Self.referrers(fixture.path("two"), image: first).first)
        #expect(one.digest != two.digest, "the two signed referrers are the same")
        let records = try ["one", "two", "unsigned"].map { name in
            try #require(try Self.referrers(fixture.path(name), image: first, predicateType: Self.runRecord).first)
        }
        #expect(Set(records.map(\.digest)).count == 3, "the run records (invocation id, times) differ")
        for (name, entry) in [("one", one), ("two", two)] {
            let layout = fixture.path(name)
            #expect(entry.artifactType == "application/vnd.in-toto+json")
            #expect(entry.annotations?["in-toto.io/predicate-type"] == Self.slsa)
            #expect(entry.annotations?["vnd.docker.reference.digest"] == first)
            #expect(entry.annotations?["vnd.docker.reference.type"] == "attestation-manifest")
            #expect(entry.annotations?["org.opencontainers.image.ref.name"] == nil, "a referrer has no tag")
            let bytes = try Self.blob(layout, entry.digest)
            #expect(Digest.sha256(of: Array(bytes)) == entry.digest && Int64(bytes.count) == entry.size)
            let manifest = try JSONDecoder().decode(ImageManifest.self, from: bytes)
            #expect(manifest.mediaType == MediaType.imageManifest)
            #expect(manifest.artifactType == "application/vnd.in-toto+json")
            #expect(manifest.subject?.digest.description == first)
            #expect(manifest.subject?.mediaType == MediaType.imageManifest)
            #expect(manifest.subject?.size == bareTop.size)
            // The OCI 1.1 empty descriptor as config, its `{}` blob in the layout.
            #expect(manifest.config.mediaType == "application/vnd.oci.empty.v1+json")
            #expect(manifest.config.size == 2)
            #expect(try Self.blob(layout, manifest.config.digest) == Data("{}".utf8))
            #expect(
                manifest.layers.map(\.mediaType) == [
                    "application/vnd.in-toto+json", "application/vnd.dsse.envelope.v1+json",
                ])
            #expect(manifest.annotations?["in-toto.io/predicate-type"] == Self.slsa)
            #expect(manifest.layers.allSatisfy { $0.annotations?["in-toto.io/predicate-type"] == Self.slsa })
        }
        // The statements are the same bytes; only the envelopes (signatures) differ.
        let manifests = try [("one", one), ("two", two)].map { name, entry in
            try JSONDecoder().decode(ImageManifest.self, from: Self.blob(fixture.path(name), entry.digest))
        }
        #expect(manifests[0].layers[0].digest == manifests[1].layers[0].digest)
        #expect(manifests[0].layers[1].digest != manifests[1].layers[1].digest)

        // BuildKit's form, the same two signed builds: the index holds the signature, so its digest varies.
        let kitOne = try fixture.build("kit-one", ["--attest-format", "buildkit"])
        let kitTwo = try fixture.build("kit-two", ["--attest-format", "buildkit"])
        #expect(kitOne != kitTwo && kitOne != first)
        #expect(try Self.layoutIndex(fixture.path("kit-one")).manifests.map(\.mediaType) == [MediaType.imageIndex])
    }

    /// umoci and skopeo read the default layout, provenance on and signed, by the image's name.
    @Test func umociAndSkopeoReadTheDefaultLayout() throws {
        let fixture = try Fixture()
        let digest = try fixture.build("img")
        let skopeo = try ExternalTools.require("skopeo")
        let raw = try HermeticProcess.run(skopeo, ["inspect", "--raw", "oci:\(fixture.path("img")):1"])
        try #require(raw.status == 0, "skopeo inspect: \(raw.standardError)")
        #expect(Digest.sha256(of: Array(raw.standardOutput.utf8)).description == digest)
        let config = try HermeticProcess.run(skopeo, ["inspect", "--config", "oci:\(fixture.path("img")):1"])
        #expect(config.status == 0 && config.standardOutput.contains("\"version\": \"1\""), "\(config.standardError)")
        let copied = try HermeticProcess.run(
            skopeo, ["copy", "oci:\(fixture.path("img")):1", "oci:\(fixture.path("copy")):1"])
        #expect(copied.status == 0, "skopeo copy: \(copied.standardError)")

        let umoci = try ExternalTools.require("umoci")
        let bundle = fixture.path("bundle")
        let unpacked = try HermeticProcess.run(umoci, ["unpack", "--image", fixture.path("img") + ":1", bundle])
        try #require(unpacked.status == 0, "umoci unpack: \(unpacked.standardError)")
        #expect(try String(contentsOfFile: bundle + "/rootfs/app/app.txt", encoding: .utf8) == "app\n")
    }

    /// inspect, verify and rebuild find the provenance in either form, and verify checks it the same way.
    @Test(arguments: ["referrers", "buildkit"])
    func inspectVerifyAndRebuildReadBothForms(format: String) throws {
        let fixture = try Fixture()
        let digest = try fixture.build("img", ["--attest-format", format, "--build-arg", "VERSION=7"])
        let layout = fixture.path("img")
        let verified = try HermeticProcess.hermetic([
            "verify", layout, "--key", fixture.key + ".pub", "--require-pinned", "--expect-arg", "VERSION=7",
        ])
        #expect(verified.status == 0 && verified.standardOutput == "verified: \(layout)\n", "\(verified.standardError)")
        let tagged = try HermeticProcess.hermetic(["verify", layout + ":1", "--key", fixture.key + ".pub"])
        #expect(tagged.status == 0, "\(tagged.standardError)")
        let inspected = try HermeticProcess.hermetic(["inspect", layout, "--key", fixture.key + ".pub"])
        #expect(inspected.status == 0, "\(inspected.standardError)")
        #expect(inspected.standardOutput.contains("verified with key"))
        #expect(inspected.standardOutput.contains("build arg     VERSION=7"))
        let stored = try StoredAttestations.load(layout)
        let manifest = try #require(stored.imageManifests?.first)
        if format == "referrers" { #expect(manifest.description == digest) }
        #expect(try stored.statement().subject.first?.digest?["sha256"] == manifest.hex)
        #expect(try stored.runRecordStatement()?.predicate["metadata"]?["invocationId"] != nil)

        let rebuilt = try HermeticProcess.hermetic([
            "rebuild", layout, "--context", fixture.context, "--key", fixture.key + ".pub",
            "--build-context", "base=oci-layout://\(fixture.path("base"))",
        ])
        #expect(rebuilt.status == 0, "\(rebuilt.standardError)")
        #expect(rebuilt.standardOutput == "reproduced: \(manifest)\n", "\(rebuilt.standardOutput)")
    }

    /// Several platforms: the image is the index of their manifests, and each manifest has its own referrer.
    /// verify wants every one: with one referrer taken out of index.json, it names the manifest left bare.
    @Test func eachPlatformManifestHasItsReferrer() throws {
        let fixture = try Fixture()
        try "FROM scratch\nCOPY app.txt /app.txt\n".write(
            toFile: fixture.context + "/Dockerfile", atomically: true, encoding: .utf8)
        let digest = try fixture.build("multi", ["--platform", "linux/amd64,linux/arm64"])
        let layout = fixture.path("multi")
        let entries = try Self.layoutIndex(layout).manifests
        let top = try #require(entries.first)
        #expect(top.digest.description == digest && top.mediaType == MediaType.imageIndex)
        let imageIndex = try JSONDecoder().decode(ImageIndex.self, from: Self.blob(layout, top.digest))
        #expect(imageIndex.manifests.count == 2, "the image index holds the platforms only")
        let referrers = try Self.referrers(layout, image: digest)
        #expect(try Self.referrers(layout, image: digest, predicateType: Self.runRecord).count == 2)
        let subjects = try referrers.map { entry in
            try JSONDecoder().decode(ImageManifest.self, from: Self.blob(layout, entry.digest)).subject?.digest
        }
        #expect(Set(subjects.compactMap { $0 }) == Set(imageIndex.manifests.map(\.digest)))
        #expect(try HermeticProcess.hermetic(["verify", layout, "--key", fixture.key + ".pub"]).status == 0)

        // The same layout without the second referrer.
        let pruned = fixture.path("pruned")
        try #require(try HermeticProcess.run("/bin/cp", ["-a", layout, pruned]).status == 0)
        var index = try Self.layoutIndex(pruned)
        index.manifests.removeAll { $0.digest == referrers.last?.digest }
        try Data(try CanonicalJSON.encode(index)).write(to: URL(fileURLWithPath: pruned + "/index.json"))
        let bare = try #require(subjects.last ?? nil)
        let outcome = try HermeticProcess.hermetic(["verify", pruned, "--key", fixture.key + ".pub"])
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError
                == "error: the image manifest \(bare) has no attestation: no referrer in index.json names it as subject\n",
            "\(outcome.standardError)")
    }

    /// A layout whose referrer is gone has no provenance to read: one line saying so, exit 1.
    @Test func anImageWithoutItsReferrerHasNoProvenance() throws {
        let fixture = try Fixture()
        let digest = try fixture.build("img")
        var index = try Self.layoutIndex(fixture.path("img"))
        index.manifests.removeAll { $0.digest.description != digest }
        try Data(try CanonicalJSON.encode(index)).write(to: URL(fileURLWithPath: fixture.path("img") + "/index.json"))
        let outcome = try HermeticProcess.hermetic(["verify", fixture.path("img"), "--key", fixture.key + ".pub"])
        #expect(outcome.status == 1)
        #expect(
            outcome.standardError
                == "error: \(fixture.path("img")): no attestation names the image: no referrer in index.json has \(digest) as subject (built with --provenance false?)\n",
            "\(outcome.standardError)")
    }

    /// An untagged layout with referrers is still one image to Hermetic: `hermetic lock` and an unpinned
    /// `--build-context` name it past the referrer, which is no image.
    @Test func anUntaggedLayoutWithReferrersIsOneImage() throws {
        let fixture = try Fixture()
        let built = try HermeticProcess.hermetic([
            "build", fixture.context, "--progress", "quiet", "--build-context", fixture.baseArgument,
            "-o", "type=oci,dest=\(fixture.path("untagged"))", "--iidfile", fixture.path("untagged.iid"),
        ])
        try #require(built.status == 0, "\(built.standardError)")
        let digest = try String(contentsOfFile: fixture.path("untagged.iid"), encoding: .utf8)
        #expect(try Self.layoutIndex(fixture.path("untagged")).manifests.count == 3)
        let child = fixture.path("child")
        try FileManager.default.createDirectory(atPath: child, withIntermediateDirectories: true)
        try "FROM app\nCOPY extra.txt /extra.txt\n".write(
            toFile: child + "/Dockerfile", atomically: true, encoding: .utf8)
        try "extra\n".write(toFile: child + "/extra.txt", atomically: true, encoding: .utf8)
        let appContext = "app=oci-layout://\(fixture.path("untagged"))"
        let locked = try HermeticProcess.hermetic(["lock", child, "--build-context", appContext])
        #expect(locked.status == 0, "\(locked.standardError)")
        let lock = try String(contentsOfFile: child + "/hermetic.lock", encoding: .utf8)
        #expect(lock.contains(digest), "\(lock)")
        let childBuilt = try HermeticProcess.hermetic([
            "build", child, "--progress", "quiet", "--build-context", appContext,
            "-o", "type=oci,dest=\(fixture.path("child-image"))",
        ])
        #expect(childBuilt.status == 0, "\(childBuilt.standardError)")
    }

    @Test func anUnknownAttestFormatIsOneLine() throws {
        let fixture = try Fixture()
        let outcome = try HermeticProcess.hermetic([
            "build", fixture.context, "--progress", "quiet", "--attest-format", "cosign",
            "-o", "type=oci,dest=\(fixture.path("img"))",
        ])
        #expect(outcome.status != 0)
        #expect(
            outcome.standardError == "error: --attest-format \"cosign\": expected referrers or buildkit\n",
            "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: fixture.path("img")))
    }

    /// Outside implementations read the signed provenance and run record out of the referrers, as a consumer
    /// of the layout would find them: the entries of index.json whose manifest's subject is the image, each DSSE
    /// layer verified by securesystemslib with our public key, and each statement validated by the
    /// in-toto-attestation bindings (the checks ProvenanceTests runs on the attest file).
    @Test(arguments: ["ecdsa-p256", "ed25519"])
    func outsideToolsVerifyTheReferrersEnvelope(algorithm: String) throws {
        let fixture = try Fixture()
        let key = fixture.path("signing-\(algorithm).pem")
        try #require(
            try HermeticProcess.hermetic(["key", "generate", "--out", key, "--algorithm", algorithm]).status == 0)
        let digest = try fixture.build("img", ["--sign-key", key], signed: false)
        let script = """
            import json, sys, base64, os
            from cryptography.hazmat.primitives.serialization import load_pem_public_key
            from securesystemslib.signer import SSlibKey
            from securesystemslib.dsse import Envelope
            from google.protobuf import json_format
            from in_toto_attestation.v1.statement import Statement
            from in_toto_attestation.v1 import statement_pb2
            from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
            layout, public_key, image = sys.argv[1], sys.argv[2], sys.argv[3]
            def blob(digest):
                return open(os.path.join(layout, 'blobs', 'sha256', digest.split(':')[1]), 'rb').read()
            index = json.load(open(os.path.join(layout, 'index.json')))
            statements = {}
            for entry in index['manifests']:
                manifest = json.loads(blob(entry['digest']))
                if manifest.get('subject', {}).get('digest') != image:
                    continue
                assert manifest['artifactType'] == 'application/vnd.in-toto+json', manifest
                layer = [l for l in manifest['layers'] if l['mediaType'] == 'application/vnd.dsse.envelope.v1+json'][0]
                envelope_json = json.loads(blob(layer['digest']))
                envelope = Envelope.from_dict(envelope_json)
                keyid = list(envelope.signatures.keys())[0]
                key = SSlibKey.from_crypto(load_pem_public_key(open(public_key, 'rb').read()), keyid=keyid)
                envelope.verify([key], 1)
                statement = json.loads(base64.b64decode(envelope_json['payload']))
                Statement.copy_from_pb(json_format.ParseDict(statement, statement_pb2.Statement())).validate()
                assert statement['subject'][0]['digest']['sha256'] == image.split(':')[1], statement['subject']
                assert statement['predicateType'] == layer['annotations']['in-toto.io/predicate-type'], layer
                statements[statement['predicateType']] = statement
            assert sorted(statements) == ['https://hermetic.build/run-record/v1', 'https://slsa.dev/provenance/v1'], statements.keys()
            predicate = statements['https://slsa.dev/provenance/v1']['predicate']
            provenance = json_format.ParseDict(predicate, provenance_pb2.Provenance())
            assert provenance.build_definition.build_type.startswith('https://'), provenance.build_definition.build_type
            print('interop ok', key.scheme)
            """
        try script.write(toFile: fixture.path("interop.py"), atomically: true, encoding: .utf8)
        let python = try ExternalTools.require("python3")
        let interop = try HermeticProcess.run(
            python, [fixture.path("interop.py"), fixture.path("img"), key + ".pub", digest],
            environment: ProcessInfo.processInfo.environment)
        #expect(
            interop.status == 0 && interop.standardOutput.contains("interop ok"),
            "outside verification failed (scripts/test installs securesystemslib and in-toto-attestation): \(interop.standardError)"
        )
    }
}
