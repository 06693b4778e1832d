import Foundation
import Hermetic
import TestSupport
import Testing

/// A layer of several 1 MiB chunks is several gzip members (or zstd frames): every reader the issue names
/// must take it whole (SPEC §3). Python's gzip, `gzip -t`, `zstd`, umoci and podman each read the
/// layers of a real build and must give back the tar whose sha256 is the config's diff_id.
@Suite struct OutsideReaderTests {
    struct Built {
        var layout: String
        var archive: String
        var payload: Data
    }

    static func build(_ compression: String) throws -> (TemporaryDirectory, Built) {
        let scratch = try TemporaryDirectory(prefix: "readers-\(compression)-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try "FROM scratch\nCOPY big.bin /big.bin\n".write(
            toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        // 3.5 MiB of bytes that do not compress: four chunks, so four members or frames.
        var generator = SystemRandomNumberGenerator()
        let payload = Data((0..<(3_584 * 1024)).map { _ in UInt8.random(in: 0...255, using: &generator) })
        try payload.write(to: URL(fileURLWithPath: context + "/big.bin"))
        let built = Built(layout: scratch.path + "/layout", archive: scratch.path + "/image.tar", payload: payload)
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "-t", "example.test/readers:1", "--compression", compression,
            "-o", "type=oci,dest=\(built.layout)", "-o", "type=docker,dest=\(built.archive)",
        ])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        return (scratch, built)
    }

    /// The image's one layer: its blob's path and the config's diff_id for it.
    static func layer(_ layout: String) throws -> (blob: String, diffID: String) {
        func json(_ path: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
                ?? [:]
        }
        func blob(_ digest: String?) -> String {
            layout + "/blobs/sha256/" + String((digest ?? "").dropFirst("sha256:".count))
        }
        let index = try json(layout + "/index.json")
        let top = try #require((index["manifests"] as? [[String: Any]])?.first)
        let manifest = try json(blob(top["digest"] as? String))
        let layer = try #require((manifest["layers"] as? [[String: Any]])?.first)
        let config = try json(blob((manifest["config"] as? [String: Any])?["digest"] as? String))
        let diffID = try #require(((config["rootfs"] as? [String: Any])?["diff_ids"] as? [String])?.first)
        return (blob(layer["digest"] as? String), diffID)
    }

    @Test func gzipMembersAreReadWhole() throws {
        let (scratch, built) = try Self.build("gzip")
        let layer = try Self.layer(built.layout)
        let gzip = try HermeticProcess.run(try ExternalTools.require("gzip"), ["-t", layer.blob])
        #expect(gzip.status == 0, "gzip -t: \(gzip.standardError)")
        let python = try HermeticProcess.run(
            try ExternalTools.require("python3"),
            [
                "-c",
                "import gzip,hashlib,sys; print('sha256:'+hashlib.sha256(gzip.decompress(open(sys.argv[1],'rb').read())).hexdigest())",
                layer.blob,
            ])
        #expect(python.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == layer.diffID)
        // The blob holds more than one member: the test reads what it means to.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: layer.blob))
        let members = (0..<(bytes.count - 3)).filter {
            bytes[$0] == 0x1f && bytes[$0 + 1] == 0x8b && bytes[$0 + 2] == 8 && bytes[$0 + 3] == 0
        }
        #expect(members.count >= 4, "\(members.count) member headers")

        let umoci = try ExternalTools.require("umoci")
        let unpacked = try HermeticProcess.run(
            umoci, ["unpack", "--image", built.layout + ":1", scratch.path + "/bundle"])
        try #require(unpacked.status == 0, "umoci unpack: \(unpacked.standardError)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.path + "/bundle/rootfs/big.bin")) == built.payload)
        try Self.podmanLoads(scratch, built)
    }

    @Test func zstdFramesAreReadWhole() throws {
        let (scratch, built) = try Self.build("zstd")
        let layer = try Self.layer(built.layout)
        let zstd = try ExternalTools.require("zstd")
        #expect(try HermeticProcess.run(zstd, ["-t", layer.blob]).status == 0)
        let decompressed = scratch.path + "/layer.tar"
        #expect(try HermeticProcess.run(zstd, ["-d", "-q", layer.blob, "-o", decompressed]).status == 0)
        let tar = try Data(contentsOf: URL(fileURLWithPath: decompressed))
        #expect(Digest.sha256(of: Array(tar)).description == layer.diffID)
        try Self.podmanLoads(scratch, built)
    }

    /// podman decompresses every layer of the `type=docker` archive into its store, checking its diff_id.
    static func podmanLoads(_ scratch: TemporaryDirectory, _ built: Built) throws {
        let podman = try ExternalTools.require("podman")
        let storage = [
            "--root", scratch.path + "/podman-root", "--runroot", scratch.path + "/podman-run", "--storage-driver",
            "vfs",
        ]
        let loaded = try HermeticProcess.run(podman, storage + ["load", "-i", built.archive])
        #expect(loaded.status == 0, "podman load: \(loaded.standardError)")
        let mounted = try HermeticProcess.run(podman, storage + ["image", "mount", "example.test/readers:1"])
        try #require(mounted.status == 0, "podman image mount: \(mounted.standardError)")
        let root = mounted.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try Data(contentsOf: URL(fileURLWithPath: root + "/big.bin")) == built.payload)
        _ = try HermeticProcess.run(podman, storage + ["image", "unmount", "--all"])
    }
}
