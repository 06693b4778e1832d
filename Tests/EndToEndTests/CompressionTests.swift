import Foundation
import Hermetic
import TestSupport
import Testing

/// `--compression`, `--compression-level` and `--jobs` through the real binary: the layers an output
/// carries are compressed as asked, the ones it does not carry never are, and the number of threads
/// never changes a byte.
@Suite struct CompressionTests {
    static let dockerfile = """
        FROM base AS data
        RUN mkdir /data && i=0 && while [ $i -lt 300 ]; do echo "line $i of the data" >> /data/file; i=$((i+1)); done && echo stays > /stays-here
        FROM base
        COPY --from=data /data /data
        COPY app.txt /app.txt

        """

    struct Built {
        var digest: String
        var layout: String
        var stderr: String
    }

    static func build(_ scratch: TemporaryDirectory, name: String, _ extra: [String]) throws -> Built {
        let context = scratch.path + "/ctx"
        if !FileManager.default.fileExists(atPath: context) {
            try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
            try Self.dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
            try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
            let base = try BaseImages.writeBusybox(at: scratch.path + "/base")
            try base.description.write(toFile: scratch.path + "/base.digest", atomically: true, encoding: .utf8)
        }
        let base = try String(contentsOfFile: scratch.path + "/base.digest", encoding: .utf8)
        let layout = scratch.path + "/" + name
        let outcome = try HermeticProcess.hermetic(
            [
                "build", context, "--progress", "quiet", "-t", "example.test/c:1",
                "--build-context", "base=oci-layout://\(scratch.path)/base@\(base)", "-o", "type=oci,dest=\(layout)",
                "--iidfile", layout + ".iid", "--attest-file", layout + ".attest",
            ] + extra)
        try #require(outcome.status == 0, "build \(extra) failed: \(outcome.standardError)")
        return Built(
            digest: try String(contentsOfFile: layout + ".iid", encoding: .utf8), layout: layout,
            stderr: outcome.standardError)
    }

    /// The platform manifest of a layout: its top entry, or the first entry of an index there.
    static func manifest(_ layout: String) throws -> [String: Any] {
        let index = try json(layout + "/index.json")
        let top = ((index["manifests"] as? [[String: Any]]) ?? [])[0]
        let imageIndex = try json(blobPath(layout, top["digest"] as? String ?? ""))
        guard imageIndex["manifests"] != nil else { return imageIndex }
        let image = ((imageIndex["manifests"] as? [[String: Any]]) ?? [])[0]
        return try json(blobPath(layout, image["digest"] as? String ?? ""))
    }

    static func json(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any] ?? [:]
    }

    static func blobPath(_ layout: String, _ digest: String) -> String {
        layout + "/blobs/sha256/" + digest.replacingOccurrences(of: "sha256:", with: "")
    }

    /// The layer byproducts of the build definition in an attest file.
    static func layerRecords(_ attestFile: String) throws -> [[String: Any]] {
        let line = try String(contentsOfFile: attestFile, encoding: .utf8).split(separator: "\n")[0]
        let envelope = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
        let payload = Data(base64Encoded: envelope["payload"] as? String ?? "") ?? Data()
        let statement = try JSONSerialization.jsonObject(with: payload) as? [String: Any] ?? [:]
        let predicate = statement["predicate"] as? [String: Any]
        let run = predicate?["runDetails"] as? [String: Any]
        return ((run?["byproducts"] as? [[String: Any]]) ?? []).filter { $0["name"] as? String == "layer" }
    }

    @Test func madeLayersTakeTheChosenCompressionAndBaseLayersKeepTheirs() throws {
        let scratch = try TemporaryDirectory(prefix: "compression-")
        let expected: [(flags: [String], mediaType: String)] = [
            ([], "application/vnd.oci.image.layer.v1.tar+gzip"),
            (["--compression", "zstd"], "application/vnd.oci.image.layer.v1.tar+zstd"),
            (["--compression", "uncompressed"], "application/vnd.oci.image.layer.v1.tar"),
        ]
        var digests: Set<String> = []
        var baseLayers: Set<String> = []
        for (number, entry) in expected.enumerated() {
            let built = try Self.build(scratch, name: "out\(number)", entry.flags)
            digests.insert(built.digest)
            let layers = try Self.manifest(built.layout)["layers"] as? [[String: Any]] ?? []
            try #require(layers.count == 3)
            // The busybox base layer keeps the blob it came as (gzip); only our two COPY layers follow the choice.
            #expect(layers[0]["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar+gzip")
            baseLayers.insert(layers[0]["digest"] as? String ?? "")
            #expect(layers[1]["mediaType"] as? String == entry.mediaType, "\(entry.flags)")
            #expect(layers[2]["mediaType"] as? String == entry.mediaType, "\(entry.flags)")
            // Every blob is what its name says and every layer reads back (skopeo checks both).
            let skopeo = try ExternalTools.require("skopeo")
            let copied = try HermeticProcess.run(
                skopeo, ["copy", "oci:\(built.layout):1", "oci:\(scratch.path)/copy\(number):1"])
            #expect(copied.status == 0, "skopeo copy \(entry.flags): \(copied.standardError)")
        }
        #expect(digests.count == 3)
        #expect(baseLayers.count == 1)
    }

    @Test func theNumberOfThreadsNeverChangesTheImage() throws {
        let scratch = try TemporaryDirectory(prefix: "compression-jobs-")
        for compression in ["gzip", "zstd"] {
            let one = try Self.build(scratch, name: "\(compression)-1", ["--compression", compression, "--jobs", "1"])
            let three = try Self.build(
                scratch, name: "\(compression)-3", ["--compression", compression, "--jobs", "3"])
            #expect(one.digest == three.digest, "\(compression)")
        }
    }

    /// The intermediate stage's RUN layer is in the provenance as a tar (digest = diff_id): it was never
    /// compressed. The final stage's layers are there with their compressed digests.
    @Test func layersNoOutputCarriesAreNeverCompressed() throws {
        let scratch = try TemporaryDirectory(prefix: "compression-stages-")
        let built = try Self.build(scratch, name: "out", ["--compression", "zstd", "--compression-level", "7"])
        let records = try Self.layerRecords(built.layout + ".attest")
        try #require(records.count == 3, "\(records)")
        let stages = records.map { ($0["annotations"] as? [String: Any])?["stage"] as? String ?? "" }
        #expect(stages == ["data", "stage-1", "stage-1"])
        let run = records[0]
        let diffID = (run["annotations"] as? [String: Any])?["diffID"] as? String ?? ""
        #expect(run["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar")
        #expect("sha256:" + ((run["digest"] as? [String: String])?["sha256"] ?? "") == diffID)
        let layers = try Self.manifest(built.layout)["layers"] as? [[String: Any]] ?? []
        for (record, layer) in zip(records.dropFirst(), layers.dropFirst()) {
            #expect(record["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar+zstd")
            #expect(
                "sha256:" + ((record["digest"] as? [String: String])?["sha256"] ?? "") == layer["digest"] as? String)
        }
    }

    @Test func badChoicesAreOneLineErrors() throws {
        let scratch = try TemporaryDirectory(prefix: "compression-bad-")
        try FileManager.default.createDirectory(atPath: scratch.path + "/ctx", withIntermediateDirectories: true)
        try "FROM scratch\n".write(toFile: scratch.path + "/ctx/Dockerfile", atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (
                ["--compression", "lz4"],
                "error: --compression \"lz4\": unknown compression \"lz4\" (expected gzip, zstd or uncompressed)"
            ),
            (
                ["--compression-level", "10"],
                "error: --compression-level \"10\": compression level 10 is out of range for gzip (0-9)"
            ),
            (
                ["--compression", "zstd", "--compression-level", "0"],
                "error: --compression-level \"0\": compression level 0 is out of range for zstd (1-19)"
            ),
            (
                ["--compression", "uncompressed", "--compression-level", "3"],
                "error: --compression-level \"3\": a compression level needs gzip or zstd, not uncompressed"
            ),
            (["--jobs", "0"], "error: --jobs \"0\": must be a positive number"),
        ]
        for (flags, message) in cases {
            let outcome = try HermeticProcess.hermetic(["build", scratch.path + "/ctx"] + flags)
            #expect(outcome.status != 0, "\(flags)")
            #expect(outcome.standardError.trimmingCharacters(in: .whitespacesAndNewlines) == message, "\(flags)")
        }
    }
}
