import Foundation
import Hermetic
import Provenance
import TestSupport
import Testing

/// buildx's compression keys on `-o` (`compression=`, `compression-level=`, `force-compression=`) through the
/// real binary: the same image as the flags, one-line refusals naming the key, and `force-compression=true`
/// compressing the busybox base layer again, stored for later builds and passed back by `rebuild`.
@Suite struct OutputCompressionKeyTests {
    /// A busybox base (one gzip layer) and a context whose image adds one layer of its own.
    struct Fixture {
        let scratch: TemporaryDirectory
        var context: String { scratch.path + "/ctx" }
        let base: Digest
        var baseArgument: String { "base=oci-layout://\(scratch.path)/base@\(base)" }

        init(_ name: String) throws {
            scratch = try TemporaryDirectory(prefix: "output-keys-\(name)-")
            try FileManager.default.createDirectory(
                atPath: scratch.path + "/ctx", withIntermediateDirectories: true)
            try "FROM base\nCOPY app.txt /app.txt\n".write(
                toFile: scratch.path + "/ctx/Dockerfile", atomically: true, encoding: .utf8)
            try "app\n".write(toFile: scratch.path + "/ctx/app.txt", atomically: true, encoding: .utf8)
            base = try BaseImages.writeBusybox(at: scratch.path + "/base")
        }

        /// `hermetic build` of the context with `arguments` (outputs, flags); its outcome.
        func run(_ arguments: [String], state: String? = nil) throws -> HermeticProcess.Outcome {
            try HermeticProcess.hermetic(
                ["build", context, "--progress", "quiet", "-t", "example.test/keys:1", "--build-context", baseArgument]
                    + (state.map { ["--state-dir", $0] } ?? []) + arguments)
        }

        /// Builds into the layout `name` (with `keys` appended to its `-o`) and returns the printed digest.
        func build(_ name: String, keys: String = "", _ flags: [String] = [], state: String? = nil) throws -> String {
            let outcome = try run(
                ["-o", "type=oci,dest=\(layout(name))\(keys)", "--attest-file", layout(name) + ".attest"] + flags,
                state: state)
            try #require(outcome.status == 0, "build \(keys) \(flags): \(outcome.standardError)")
            return outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func layout(_ name: String) -> String { scratch.path + "/" + name }

        /// The base image's one layer, as its layout holds it, and its diff_id.
        func baseLayer() throws -> (descriptor: [String: Any], diffID: String) {
            let index = try Self.json(scratch.path + "/base/index.json")
            let top = ((index["manifests"] as? [[String: Any]]) ?? [])[0]
            let manifest = try Self.json(Self.blob(scratch.path + "/base", top["digest"] as? String ?? ""))
            let layer = ((manifest["layers"] as? [[String: Any]]) ?? [])[0]
            let config = try Self.json(
                Self.blob(scratch.path + "/base", (manifest["config"] as? [String: Any])?["digest"] as? String ?? ""))
            let diffIDs = (config["rootfs"] as? [String: Any])?["diff_ids"] as? [String] ?? []
            return (layer, diffIDs.first ?? "")
        }

        /// The digest of the platform manifest of a layout: its first entry (the referrers follow it), or
        /// the first manifest of that entry when it is an index (`--attest-format buildkit`).
        func manifestDigest(_ name: String) throws -> String {
            let index = try Self.json(layout(name) + "/index.json")
            let top = try #require((index["manifests"] as? [[String: Any]])?.first, "\(name): index.json is empty")
            let digest = top["digest"] as? String ?? ""
            guard top["mediaType"] as? String == MediaType.imageIndex else { return digest }
            let imageIndex = try Self.json(Self.blob(layout(name), digest))
            let first = try #require((imageIndex["manifests"] as? [[String: Any]])?.first, "\(name): empty index")
            return first["digest"] as? String ?? ""
        }

        /// The platform manifest and config of such a layout.
        func image(_ name: String) throws -> (manifest: [String: Any], config: [String: Any]) {
            let manifest = try Self.json(Self.blob(layout(name), try manifestDigest(name)))
            let configDigest = (manifest["config"] as? [String: Any])?["digest"] as? String ?? ""
            return (manifest, try Self.json(Self.blob(layout(name), configDigest)))
        }

        /// `externalParameters.compression` of the build definition in the layout's attest file.
        func compressionParameter(_ name: String) throws -> JSONValue? {
            let line = try String(contentsOfFile: layout(name) + ".attest", encoding: .utf8).split(separator: "\n")[0]
            let envelope = try JSONDecoder().decode(DSSEEnvelope.self, from: Data(line.utf8))
            let statement = try JSONDecoder().decode(InTotoStatement.self, from: Data(try envelope.payloadBytes()))
            return statement.predicate["buildDefinition"]?["externalParameters"]?["compression"]
        }

        static func json(_ path: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
                ?? [:]
        }

        static func blob(_ layout: String, _ digest: String) -> String {
            layout + "/blobs/sha256/" + digest.replacingOccurrences(of: "sha256:", with: "")
        }
    }

    static func layers(_ manifest: [String: Any]) -> [[String: Any]] {
        manifest["layers"] as? [[String: Any]] ?? []
    }

    @Test func outputKeysGiveTheImageTheFlagsGive() throws {
        let fixture = try Fixture("same")
        let byFlags = try fixture.build("flags", ["--compression", "zstd", "--compression-level", "7"])
        let byKeys = try fixture.build("keys", keys: ",compression=zstd,compression-level=7")
        #expect(byFlags == byKeys)
        // A key and a flag that agree; a key beside a flag that says the other thing.
        let both = try fixture.build(
            "both", keys: ",compression=zstd", ["--compression", "zstd", "--compression-level", "7"])
        let mixed = try fixture.build("mixed", keys: ",compression-level=7", ["--compression", "zstd"])
        #expect(both == byFlags)
        #expect(mixed == byFlags)
        let made = try #require(Self.layers(try fixture.image("keys").manifest).last)
        #expect(made["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar+zstd")
        // The default level, and a gzip image that is not the zstd one.
        #expect(
            try fixture.build("zstd3", keys: ",compression=zstd") == fixture.build("zstd3f", ["--compression", "zstd"]))
        #expect(try fixture.build("gzip", keys: ",compression=gzip") != byKeys)

        // type=docker takes the keys too, and two outputs that ask for the same thing are one build.
        let archive = fixture.scratch.path + "/image.docker.tar"
        let two = try fixture.run([
            "-o", "type=oci,dest=\(fixture.layout("two")),compression=zstd,compression-level=7",
            "-o", "type=docker,dest=\(archive),compression=zstd,compression-level=7",
        ])
        try #require(two.status == 0, "\(two.standardError)")
        #expect(two.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == byFlags)
        // The archive's own layer is zstd (the zstd program reads it); its base layer stays gzip.
        let unpacked = fixture.scratch.path + "/docker"
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
        let tar = try ExternalTools.require("tar")
        try #require(try HermeticProcess.run(tar, ["-xf", archive, "-C", unpacked]).status == 0)
        let entries = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: unpacked + "/manifest.json")))
        let paths = ((entries as? [[String: Any]])?.first?["Layers"] as? [String]) ?? []
        try #require(paths.count == 2, "\(paths)")
        let zstd = try ExternalTools.require("zstd")
        #expect(try HermeticProcess.run(zstd, ["-t", unpacked + "/" + paths[1]]).status == 0)
        // (zstd -t also reads gzip: the magic numbers tell them apart.)
        let magic = try paths.map { Array(try Data(contentsOf: URL(fileURLWithPath: unpacked + "/" + $0)).prefix(4)) }
        #expect(magic == [[0x1f, 0x8b, 0x08, 0x00], [0x28, 0xb5, 0x2f, 0xfd]], "\(magic)")
    }

    @Test func conflictsAreRefusedInOneLine() throws {
        let fixture = try Fixture("conflict")
        let a = fixture.layout("a")
        let b = fixture.scratch.path + "/b.tar"
        let cases: [([String], String)] = [
            (
                ["-o", "type=oci,dest=\(a),compression=zstd", "--compression", "gzip"],
                "error: --output \"type=oci,dest=\(a),compression=zstd\": compression=zstd conflicts with "
                    + "--compression gzip: give it in one place"
            ),
            (
                ["-o", "type=oci,dest=\(a),compression-level=3", "--compression-level", "5"],
                "error: --output \"type=oci,dest=\(a),compression-level=3\": compression-level=3 conflicts with "
                    + "--compression-level 5: give it in one place"
            ),
            (
                ["-o", "type=oci,dest=\(a),compression=zstd", "-o", "type=docker,dest=\(b)"],
                "error: --output \"type=docker,dest=\(b)\": its compression (gzip level 6) differs from that of "
                    + "--output \"type=oci,dest=\(a),compression=zstd\" (zstd level 3): a build writes one "
                    + "compression, so give every output the same compression keys (or use --compression)"
            ),
            (
                [
                    "-o", "type=oci,dest=\(a),compression=zstd,force-compression=true", "-o",
                    "type=docker,dest=\(b),compression=zstd",
                ],
                "error: --output \"type=docker,dest=\(b),compression=zstd\": its compression (zstd level 3) differs "
                    + "from that of --output \"type=oci,dest=\(a),compression=zstd,force-compression=true\" (zstd "
                    + "level 3, force-compression): a build writes one compression, so give every output the same "
                    + "compression keys (or use --compression)"
            ),
        ]
        for (arguments, message) in cases {
            let outcome = try fixture.run(arguments)
            #expect(outcome.status != 0, "\(arguments)")
            #expect(outcome.standardError.trimmingCharacters(in: .whitespacesAndNewlines) == message, "\(arguments)")
            #expect(!FileManager.default.fileExists(atPath: a) && !FileManager.default.fileExists(atPath: b))
        }
        // A layerless output beside them takes no part: type=local has no blobs.
        let local = try fixture.run([
            "-o", "type=oci,dest=\(a),compression=zstd", "-o", "type=local,dest=\(fixture.layout("rootfs"))",
        ])
        #expect(local.status == 0, "\(local.standardError)")
    }

    @Test func badValuesAreRefusedNamingTheKey() throws {
        let fixture = try Fixture("bad")
        let dest = fixture.layout("out")
        let cases: [(String, [String], String)] = [
            (
                "compression=estargz", [],
                "compression=estargz is not supported (hermetic writes gzip, zstd or uncompressed layers)"
            ),
            (
                "compression=lz4", [],
                "compression=lz4: unsupported compression type (expected gzip, zstd or uncompressed)"
            ),
            (
                "compression=ZSTD", [],
                "compression=ZSTD: unsupported compression type (expected gzip, zstd or uncompressed)"
            ),
            ("compression-level=high", [], "compression-level=high: not an integer"),
            ("compression-level=10", [], "compression-level=10: compression level 10 is out of range for gzip (0-9)"),
            (
                "compression=zstd,compression-level=0", [],
                "compression-level=0: compression level 0 is out of range for zstd (1-19)"
            ),
            (
                "compression=uncompressed,compression-level=3", [],
                "compression-level=3: a compression level needs gzip or zstd, not uncompressed"
            ),
            ("force-compression=maybe", [], "force-compression=maybe: not a boolean (true or false)"),
        ]
        for (keys, flags, reason) in cases {
            let output = "type=oci,dest=\(dest),\(keys)"
            let outcome = try fixture.run(["-o", output] + flags)
            #expect(outcome.status != 0, "\(keys)")
            #expect(
                outcome.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
                    == "error: --output \"\(output)\": \(reason)", "\(keys)")
        }
        // A flag's bad level, with the compression an output's key chose: the flag is named, and the key.
        let output = "type=oci,dest=\(dest),compression=zstd"
        let flagged = try fixture.run(["-o", output, "--compression-level", "0"])
        #expect(
            flagged.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
                == "error: --compression-level \"0\": compression level 0 is out of range for zstd (1-19) "
                + "(compression=zstd of --output \"\(output)\")")
        // type=local has no blobs to compress: its keys are dest and tar.
        let local = "type=local,dest=\(dest),compression=zstd"
        let refused = try fixture.run(["-o", local])
        #expect(
            refused.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
                == "error: --output \"\(local)\": unknown key \"compression\" for type=local (its keys: dest, tar)")
        #expect(!FileManager.default.fileExists(atPath: dest))
    }

    /// force-compression=true with zstd: the busybox base layer (gzip) is decompressed, checked and compressed
    /// with zstd; `zstd` reads it back to the base's diff_id. Without it the base keeps its gzip blob.
    @Test func forceCompressionRecompressesTheBaseLayer() throws {
        let fixture = try Fixture("force")
        let base = try fixture.baseLayer()
        #expect(base.descriptor["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar+gzip")
        let state = fixture.scratch.path + "/state"

        let kept = try fixture.build("kept", keys: ",compression=zstd", state: state)
        let keptLayers = Self.layers(try fixture.image("kept").manifest)
        try #require(keptLayers.count == 2)
        #expect(keptLayers[0]["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar+gzip")
        #expect(keptLayers[0]["digest"] as? String == base.descriptor["digest"] as? String)
        #expect(keptLayers[1]["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar+zstd")

        let forced = try fixture.build("forced", keys: ",compression=zstd,force-compression=true", state: state)
        #expect(forced != kept)
        let image = try fixture.image("forced")
        let layers = Self.layers(image.manifest)
        try #require(layers.count == 2)
        #expect(layers[0]["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar+zstd")
        #expect(layers[0]["digest"] as? String != base.descriptor["digest"] as? String)
        #expect(layers[1]["digest"] as? String == keptLayers[1]["digest"] as? String)
        let diffIDs = (image.config["rootfs"] as? [String: Any])?["diff_ids"] as? [String] ?? []
        #expect(diffIDs.first == base.diffID)

        // The blob is what its descriptor says, a zstd stream the zstd program accepts, and its tar is the
        // base's diff_id.
        let blobPath = Fixture.blob(fixture.layout("forced"), layers[0]["digest"] as? String ?? "")
        let blob = Array(try Data(contentsOf: URL(fileURLWithPath: blobPath)))
        #expect(Digest.sha256(of: blob).description == layers[0]["digest"] as? String)
        #expect(blob.count == layers[0]["size"] as? Int)
        #expect(Array(blob.prefix(4)) == [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame (the zstd program also reads gzip)")
        let zstd = try ExternalTools.require("zstd")
        let tested = try HermeticProcess.run(zstd, ["-t", blobPath])
        #expect(tested.status == 0, "zstd -t: \(tested.standardError)")
        let tar = fixture.scratch.path + "/base-layer.tar"
        let decompressed = try HermeticProcess.run(zstd, ["-d", "-q", blobPath, "-o", tar])
        try #require(decompressed.status == 0, "zstd -d: \(decompressed.standardError)")
        #expect(Digest.sha256(of: Array(try Data(contentsOf: URL(fileURLWithPath: tar)))).description == base.diffID)

        // The provenance says so, since the output changed; skopeo copies the layout, decompressing each layer
        // into a file it names by the digest of the tar it read: the base's diff_id.
        #expect(
            try fixture.compressionParameter("forced")
                == .object(["type": .string("zstd"), "level": .int(3), "force": .bool(true)]))
        #expect(try fixture.compressionParameter("kept") == .object(["type": .string("zstd"), "level": .int(3)]))
        let skopeo = try ExternalTools.require("skopeo")
        let copy = fixture.scratch.path + "/copy"
        let copied = try HermeticProcess.run(
            skopeo, ["copy", "--dest-decompress", "oci:\(fixture.layout("forced")):1", "dir:\(copy)"])
        #expect(copied.status == 0, "skopeo copy: \(copied.standardError)")
        #expect(
            FileManager.default.fileExists(
                atPath: copy + "/" + base.diffID.replacingOccurrences(of: "sha256:", with: "")))

        // The store holds the base layer compressed, by diff_id and scheme; the next build takes it from there
        // (reading a record marks it used: its time moves) and gives the same image.
        let records = try FileManager.default.contentsOfDirectory(atPath: state + "/store/compressed")
        let hex = base.diffID.replacingOccurrences(of: "sha256:", with: "")
        let record = try #require(records.first { $0.hasPrefix(hex + "-zstd3-libzstd") }, "\(records)")
        let recordPath = state + "/store/compressed/" + record
        let stored = try Fixture.json(recordPath)
        #expect(stored["digest"] as? String == layers[0]["digest"] as? String)
        var old = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
        try #require(utimensat(AT_FDCWD, recordPath, &old, 0) == 0)
        let again = try fixture.build("again", keys: ",compression=zstd,force-compression=true", state: state)
        #expect(again == forced)
        let touched = try FileManager.default.attributesOfItem(atPath: recordPath)[.modificationDate] as? Date
        #expect((touched?.timeIntervalSince1970 ?? 0) > 1_000_000)
        // And a cold store gives the same bytes.
        #expect(try fixture.build("cold", keys: ",compression=zstd,force-compression=true") == forced)
    }

    /// The store's copy of a base layer compressed again, damaged, stops the build with the way out; after
    /// `hermetic store check --repair` the layer is compressed again, to the same image.
    @Test func aDamagedStoredCopyIsNamedWithTheWayOut() throws {
        let fixture = try Fixture("damaged")
        let state = fixture.scratch.path + "/state"
        let keys = ",compression=zstd,force-compression=true"
        let first = try fixture.build("first", keys: keys, state: state)
        let layer = try #require(Self.layers(try fixture.image("first").manifest).first)
        let digest = layer["digest"] as? String ?? ""
        let blob = state + "/store/blobs/sha256/" + digest.replacingOccurrences(of: "sha256:", with: "")
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: blob)))
        bytes[bytes.count / 2] ^= 0xff
        chmod(blob, 0o600)
        try Data(bytes).write(to: URL(fileURLWithPath: blob))

        let refused = try fixture.run(
            ["-o", "type=oci,dest=\(fixture.layout("second"))\(keys)"], state: state)
        let line = refused.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(refused.status != 0)
        #expect(!line.contains("\n"), "\(line)")
        #expect(
            line.hasPrefix(
                "error: layer \(digest) of image \"base\" (layout \(fixture.scratch.path)/base), compressed again by "
                    + "force-compression=true: the build cache's copy of this layer cannot be used ("), "\(line)")
        #expect(line.hasSuffix("); run hermetic store check --repair"), "\(line)")
        #expect(!FileManager.default.fileExists(atPath: fixture.layout("second")))

        let repaired = try HermeticProcess.hermetic(["store", "check", "--repair", "--state-dir", state])
        #expect(repaired.status == 0, "\(repaired.standardOutput)\(repaired.standardError)")
        #expect(try fixture.build("third", keys: keys, state: state) == first)
    }

    /// force-compression=true where the base is already compressed so (gzip, whatever the level) changes
    /// nothing: the same image, provenance and all, as without it.
    @Test func forceCompressionThatChangesNothingIsNotRecorded() throws {
        let fixture = try Fixture("noop")
        let plain = try fixture.build("plain", ["--compression-level", "9"])
        let forced = try fixture.build("forced", keys: ",compression-level=9,force-compression=true")
        #expect(plain == forced)
        #expect(try fixture.compressionParameter("forced") == .object(["type": .string("gzip"), "level": .int(9)]))
        let base = try fixture.baseLayer()
        #expect(
            Self.layers(try fixture.image("forced").manifest)[0]["digest"] as? String == base.descriptor["digest"]
                as? String)
        // force-compression=false and an empty value (true, as BuildKit reads it) parse.
        #expect(
            try fixture.build("false", keys: ",compression=zstd,force-compression=false")
                == fixture.build("zstd", ["--compression", "zstd"]))
        let empty = try fixture.build("empty", keys: ",compression=uncompressed,force-compression=")
        let layers = Self.layers(try fixture.image("empty").manifest)
        #expect(
            layers.allSatisfy { $0["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar" }, "\(layers)")
        #expect(layers.first?["digest"] as? String == base.diffID)
        #expect(empty != plain)
    }

    /// `hermetic rebuild` of a force-compressed image passes force-compression again: the same digest.
    @Test func aRebuildOfAForcedImageGivesTheSameDigest() throws {
        let fixture = try Fixture("rebuild")
        _ = try fixture.build("forced", keys: ",compression=zstd,compression-level=5,force-compression=true")
        #expect(
            Self.layers(try fixture.image("forced").manifest).first?["mediaType"] as? String
                == "application/vnd.oci.image.layer.v1.tar+zstd")
        let rebuilt = try HermeticProcess.hermetic([
            "rebuild", fixture.layout("forced"), "--context", fixture.context,
            "--build-context", "base=oci-layout://\(fixture.scratch.path)/base",
        ])
        #expect(rebuilt.status == 0, "\(rebuilt.standardOutput)\(rebuilt.standardError)")
        #expect(
            rebuilt.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
                == "reproduced: \(try fixture.manifestDigest("forced"))", "\(rebuilt.standardOutput)")
    }

    /// umoci (which refuses an index holding an attestation manifest, and whose 0.4.7 reads no zstd layer)
    /// unpacks a layout forced to uncompressed, base layer and all, to the files of our own type=local output.
    @Test func umociUnpacksAForcedLayout() throws {
        let fixture = try Fixture("umoci")
        let rootfs = fixture.layout("rootfs")
        let outcome = try fixture.run([
            "-o", "type=oci,dest=\(fixture.layout("forced")),compression=uncompressed,force-compression=true",
            "-o", "type=local,dest=\(rootfs)", "--provenance", "false",
        ])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        // Without provenance index.json names the manifest itself: both layers are plain tars now.
        let index = try Fixture.json(fixture.layout("forced") + "/index.json")
        let top = ((index["manifests"] as? [[String: Any]]) ?? [])[0]
        let manifest = try Fixture.json(Fixture.blob(fixture.layout("forced"), top["digest"] as? String ?? ""))
        let types = Self.layers(manifest).map { $0["mediaType"] as? String ?? "" }
        #expect(types == Array(repeating: "application/vnd.oci.image.layer.v1.tar", count: 2), "\(types)")
        let umoci = try ExternalTools.require("umoci")
        let bundle = fixture.scratch.path + "/bundle"
        let unpacked = try HermeticProcess.run(umoci, ["unpack", "--image", "\(fixture.layout("forced")):1", bundle])
        try #require(unpacked.status == 0, "umoci unpack: \(unpacked.standardError)")
        #expect(try FileTreeListing.list(bundle + "/rootfs") == FileTreeListing.list(rootfs))
        #expect(FileManager.default.fileExists(atPath: bundle + "/rootfs/bin/busybox"))
    }
}
