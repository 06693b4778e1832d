import Foundation
import Hermetic
import Provenance
import TestSupport
import Testing

/// A lock pin that the layout does not hold names the lock file and the line; `--iidfile` and
/// `--metadata-file` hold the digest the help and SPEC say (the image index's when provenance is on).
@Suite(.serialized) struct PinAndImageIDTests {
    @Test func aStaleLockPinNamesTheLockFileAndTheLine() throws {
        let scratch = try TemporaryDirectory(prefix: "stale-lock-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try "FROM base\nCOPY app.txt /app.txt\n".write(
            toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
        // The lock is made against one layout; the build is given another, which lacks the pinned image.
        let old = scratch.path + "/old"
        let current = scratch.path + "/current"
        let pinned = try BaseImages.writeGoldenBase(at: old)
        _ = try BaseImages.writeBusybox(at: current)
        let locked = try HermeticProcess.hermetic([
            "lock", context, "--build-context", "base=oci-layout://\(old)",
        ])
        try #require(locked.status == 0, "\(locked.standardError)")
        let built = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--build-context", "base=oci-layout://\(current)",
            "-o", "type=oci,dest=\(scratch.path)/image",
        ])
        #expect(built.status == 1)
        #expect(
            built.standardError
                == "error: Dockerfile:1: image \"base\": \(context)/hermetic.lock pins \(pinned) but oci-layout://\(current) does not hold it (run hermetic lock again)\n",
            "\(built.standardError)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/image"))

        // A pin in the --build-context value is named as such, without the hint to lock again.
        let pinnedByContext = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--build-context", "base=oci-layout://\(current)@\(pinned)",
            "-o", "type=oci,dest=\(scratch.path)/image",
        ])
        #expect(pinnedByContext.status == 1)
        #expect(
            pinnedByContext.standardError
                == "error: Dockerfile:1: image \"base\": --build-context pins \(pinned) but oci-layout://\(current) does not hold it\n",
            "\(pinnedByContext.standardError)")
    }

    /// The image digest is the image's alone: with the provenance as referrers (the default), signed or
    /// not, it is the manifest digest a `--provenance false` build gives; only BuildKit's form wraps the image
    /// (and its attestation) in an index, whose digest it then is, as buildx writes.
    @Test func theImageIDFileHoldsTheImageDigestAndTheIndexDigestOnlyInBuildKitForm() throws {
        let scratch = try TemporaryDirectory(prefix: "iidfile-")
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try "FROM base\nCOPY app.txt /app.txt\n".write(
            toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        try "app\n".write(toFile: context + "/app.txt", atomically: true, encoding: .utf8)
        let base = try BaseImages.writeGoldenBase(at: scratch.path + "/base")
        func build(_ name: String, _ extra: [String]) throws -> (
            iid: String, metadata: [String: String], top: Descriptor
        ) {
            let outcome = try HermeticProcess.hermetic(
                [
                    "build", context, "--progress", "quiet", "--build-context",
                    "base=oci-layout://\(scratch.path)/base@\(base)", "-o", "type=oci,dest=\(scratch.path)/\(name)",
                    "--iidfile", "\(scratch.path)/\(name).iid", "--metadata-file", "\(scratch.path)/\(name).json",
                ] + extra)
            try #require(outcome.status == 0, "\(outcome.standardError)")
            let iid = try String(contentsOfFile: "\(scratch.path)/\(name).iid", encoding: .utf8)
            #expect(outcome.standardOutput == iid + "\n", "stdout prints the same digest")
            let metadata = try JSONDecoder().decode(
                [String: String].self, from: Data(contentsOf: URL(fileURLWithPath: "\(scratch.path)/\(name).json")))
            let top = try #require(try OCILayoutReader(path: "\(scratch.path)/\(name)").index.manifests.first)
            return (iid, metadata, top)
        }
        // The help says which digest it is.
        let help = try HermeticProcess.hermetic(["build", "--help"])
        #expect(
            help.standardOutput.replacingOccurrences(of: "\n", with: " ").split(separator: " ").joined(separator: " ")
                .contains(
                    "the image index's for several platforms (or with --attest-format buildkit and provenance on), else the manifest's"
                ),
            "\(help.standardOutput)")

        let plain = try build("plain", ["--provenance", "false"])
        #expect(plain.top.mediaType == MediaType.imageManifest)
        #expect(plain.iid == plain.top.digest.description)
        #expect(plain.metadata["containerimage.digest"] == plain.iid)
        #expect(plain.metadata["containerimage.config.digest"] != nil)

        let attested = try build("attested", [])
        #expect(attested.iid == plain.iid, "the referrers leave the image digest as it is")
        #expect(attested.top.mediaType == MediaType.imageManifest)
        #expect(attested.metadata["containerimage.digest"] == attested.iid)
        #expect(attested.metadata["containerimage.descriptor.mediaType"] == MediaType.imageManifest)
        #expect(attested.metadata["containerimage.config.digest"] == plain.metadata["containerimage.config.digest"])

        let buildkit = try build("buildkit", ["--attest-format", "buildkit"])
        #expect(buildkit.top.mediaType == MediaType.imageIndex)
        #expect(buildkit.iid == buildkit.top.digest.description)
        #expect(buildkit.metadata["containerimage.digest"] == buildkit.iid)
        #expect(buildkit.metadata["containerimage.descriptor.mediaType"] == MediaType.imageIndex)
        // The config digest is the one-platform image's, with or without the index around it.
        #expect(buildkit.metadata["containerimage.config.digest"] == plain.metadata["containerimage.config.digest"])
        // The index of the BuildKit form holds that same manifest.
        let index = try JSONDecoder().decode(
            ImageIndex.self,
            from: Data(
                contentsOf: URL(fileURLWithPath: "\(scratch.path)/buildkit/blobs/sha256/\(buildkit.top.digest.hex)")))
        #expect(index.manifests.contains { $0.digest.description == plain.iid })
    }
}
