import Foundation
import Hermetic
import TestSupport
import Testing

/// A base image layout that lies: each damage must stop the build with ONE line naming the layout or the
/// digest, and leave no output.
@Suite struct TamperedLayoutTests {
    enum Damage: String, CaseIterable, Sendable {
        case flippedLayerByte, truncatedLayer, missingLayer, layerIsSymlinkToDevZero, configLies
        case hostileDigestInIndex, uppercaseDigestInIndex, wrongLayoutVersion, indexCycle, oversizeIndex
    }

    /// Applies a damage to a fresh golden-base layout; returns the digest to pin (as written or recomputed).
    static func damage(_ damage: Damage, layout: String, manifest: Digest) throws -> String {
        let fm = FileManager.default
        let index =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: layout + "/index.json")))
            as? [String: Any]
        let manifestPath = layout + "/blobs/sha256/" + manifest.hex
        let manifestJSON =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: manifestPath)))
            as? [String: Any]
        let layers = manifestJSON?["layers"] as? [[String: Any]] ?? []
        let layerPath = layout + "/blobs/sha256/" + String((layers.first?["digest"] as? String ?? "").dropFirst(7))
        let configPath =
            layout + "/blobs/sha256/"
            + String(((manifestJSON?["config"] as? [String: Any])?["digest"] as? String ?? "").dropFirst(7))
        func writeIndex(_ object: Any) throws {
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: layout + "/index.json"))
        }
        switch damage {
        case .flippedLayerByte:
            var bytes = try Data(contentsOf: URL(fileURLWithPath: layerPath))
            bytes[bytes.count / 2] ^= 0x01
            try bytes.write(to: URL(fileURLWithPath: layerPath))
        case .truncatedLayer:
            let bytes = try Data(contentsOf: URL(fileURLWithPath: layerPath))
            try bytes.prefix(bytes.count - 10).write(to: URL(fileURLWithPath: layerPath))
        case .missingLayer:
            try fm.removeItem(atPath: layerPath)
        case .layerIsSymlinkToDevZero:
            try fm.removeItem(atPath: layerPath)
            try fm.createSymbolicLink(atPath: layerPath, withDestinationPath: "/dev/zero")
        case .configLies:
            // A config listing two diff_ids for one layer (the config blob is rewritten under its new digest,
            // and the manifest and index follow, so only the count is wrong).
            var config =
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath)))
                as? [String: Any] ?? [:]
            var rootfs = config["rootfs"] as? [String: Any] ?? [:]
            let ids = rootfs["diff_ids"] as? [String] ?? []
            rootfs["diff_ids"] = ids + ids
            config["rootfs"] = rootfs
            let configBytes = try JSONSerialization.data(withJSONObject: config)
            let configDigest = Digest.sha256(of: Array(configBytes))
            try configBytes.write(to: URL(fileURLWithPath: layout + "/blobs/sha256/" + configDigest.hex))
            var newManifest = manifestJSON ?? [:]
            newManifest["config"] = [
                "mediaType": MediaType.imageConfig, "digest": configDigest.description, "size": configBytes.count,
            ]
            let manifestBytes = try JSONSerialization.data(withJSONObject: newManifest)
            let newDigest = Digest.sha256(of: Array(manifestBytes))
            try manifestBytes.write(to: URL(fileURLWithPath: layout + "/blobs/sha256/" + newDigest.hex))
            try writeIndex([
                "schemaVersion": 2,
                "manifests": [
                    [
                        "mediaType": MediaType.imageManifest, "digest": newDigest.description,
                        "size": manifestBytes.count,
                    ]
                ],
            ])
            return newDigest.description
        case .hostileDigestInIndex, .uppercaseDigestInIndex:
            let text =
                damage == .hostileDigestInIndex
                ? "sha256:../../../../etc/passwd" : "sha256:" + manifest.hex.uppercased()
            try writeIndex([
                "schemaVersion": 2, "manifests": [["mediaType": MediaType.imageManifest, "digest": text, "size": 10]],
            ])
        case .wrongLayoutVersion:
            try #"{"imageLayoutVersion":"9.9.9"}"#.write(
                toFile: layout + "/oci-layout", atomically: true, encoding: .utf8)
        case .indexCycle:
            // An index blob that lists itself cannot be written (its digest would change); a pair that lists
            // each other can't either. So the cycle is index.json → index A → index A (by digest, claimed).
            let inner: [String: Any] = [
                "schemaVersion": 2, "mediaType": MediaType.imageIndex,
                "manifests": [
                    [
                        "mediaType": MediaType.imageIndex, "digest": "sha256:" + String(repeating: "a", count: 64),
                        "size": 100,
                    ]
                ],
            ]
            let bytes = try JSONSerialization.data(withJSONObject: inner)
            let digest = Digest.sha256(of: Array(bytes))
            try bytes.write(to: URL(fileURLWithPath: layout + "/blobs/sha256/" + digest.hex))
            try writeIndex([
                "schemaVersion": 2,
                "manifests": [
                    [
                        "mediaType": MediaType.imageIndex, "digest": digest.description,
                        "size": bytes.count,
                    ]
                ],
            ])
            return digest.description
        case .oversizeIndex:
            try Data(count: 5 << 20).write(to: URL(fileURLWithPath: layout + "/index.json"))
        }
        _ = index
        return manifest.description
    }

    @Test(arguments: Damage.allCases)
    func refusesDamagedLayouts(damage: Damage) throws {
        let scratch = try TemporaryDirectory(prefix: "tampered-")
        let layout = scratch.path + "/base"
        let manifest = try BaseImages.writeGoldenBase(at: layout)
        let pin = try Self.damage(damage, layout: layout, manifest: manifest)
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try "FROM base\nCOPY Dockerfile /\n".write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet",
            "--build-context", "base=oci-layout://\(layout)@\(pin)", "-o", "type=oci,dest=\(scratch.path)/out",
        ])
        #expect(outcome.status != 0)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: "), "\(damage): \(outcome.standardError)")
        #expect(
            outcome.standardError.contains(layout) || outcome.standardError.contains("sha256:")
                || outcome.standardError.contains("invalid digest"), "\(damage): \(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))
    }
}

extension TamperedLayoutTests {
    enum HostileLayer: String, CaseIterable, Sendable {
        case whiteoutOfParent, dotdot, notATar
        var tar: [UInt8] {
            switch self {
            case .whiteoutOfParent:
                RawTar.archive([RawTar.Entry(name: "etc/x", data: [1]), RawTar.Entry(name: ".wh...")])
            case .dotdot: RawTar.archive([RawTar.Entry(name: "../escape", data: [1])])
            case .notATar: [UInt8](repeating: 0x41, count: 4096)
            }
        }
    }

    /// A base image's bad layer is named by its layout and digest, never by the workspace copy the error
    /// once named (gone by then); nothing around the workspace is touched, nothing is left.
    @Test(arguments: HostileLayer.allCases)
    func badLayersAreNamedByLayoutAndDigest(layer: HostileLayer) throws {
        let scratch = try TemporaryDirectory(prefix: "tampered-")
        let layout = scratch.path + "/base"
        let manifest = try BaseImages.writeLayout(at: layout, rawTar: layer.tar)
        let context = scratch.path + "/ctx"
        let temporary = scratch.path + "/tmp"
        for directory in [context, temporary] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        try "canary".write(toFile: scratch.path + "/canary", atomically: true, encoding: .utf8)
        try "FROM base\n".write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        let outcome = try HermeticProcess.hermetic(
            [
                "build", context, "--progress", "quiet", "--build-context",
                "base=oci-layout://\(layout)@\(manifest)", "-o", "type=oci,dest=\(scratch.path)/out",
            ], environment: ["TMPDIR": temporary])
        #expect(outcome.status == 1)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: layer "), "\(layer): \(outcome.standardError)")
        let digest = Digest.sha256(of: layer.tar)
        #expect(
            outcome.standardError.contains("\(digest) of image \"base\" (layout \(layout))"), "\(outcome.standardError)"
        )
        #expect(!outcome.standardError.contains("hermetic-build-"), "\(outcome.standardError)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: temporary).isEmpty)
        #expect(try String(contentsOfFile: scratch.path + "/canary", encoding: .utf8) == "canary")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))
    }
}
