import Foundation
import Hermetic
import TestSupport
import Testing

/// Every output type, read back by outside tools; the same build gives the same digest in every form.
@Suite struct OutputTests {
    static let dockerfile = """
        FROM base
        COPY --chown=app:app hello.txt /home/app/hello.txt
        ENV GREETING=hello
        CMD ["/bin/sh"]

        """

    func buildAll(_ scratch: TemporaryDirectory) throws -> (
        digest: String, metadata: [String: Any]
    ) {
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try Self.dockerfile.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        try "hello\n".write(toFile: context + "/hello.txt", atomically: true, encoding: .utf8)
        let base = try BaseImages.writeGoldenBase(at: scratch.path + "/base")
        let outcome = try HermeticProcess.hermetic(
            [
                "build", context, "--progress", "quiet", "-t", "example.test/hello:1.0",
                "--build-context", "base=oci-layout://\(scratch.path)/base@\(base)",
                "-o", "type=oci,dest=\(scratch.path)/layout", "-o", "type=oci,dest=\(scratch.path)/image.oci.tar",
                "-o", "type=docker,dest=\(scratch.path)/image.docker.tar", "-o",
                "type=local,dest=\(scratch.path)/rootfs",
                "--iidfile", scratch.path + "/iid", "--metadata-file", scratch.path + "/metadata.json",
            ])
        try #require(outcome.status == 0, "build failed: \(outcome.standardError)")
        let digest = try String(contentsOfFile: scratch.path + "/iid", encoding: .utf8)
        #expect(outcome.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == digest)
        let metadata =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: scratch.path + "/metadata.json"))) as? [String: Any] ?? [:]
        return (digest, metadata)
    }

    /// With the provenance on (the default): it is a referrer beside the image in index.json, so umoci (which
    /// refuses an image index holding BuildKit's attestation manifests) unpacks the image as it is.
    @Test func everyOutputIsReadableByOutsideTools() throws {
        let scratch = try TemporaryDirectory(prefix: "outputs-")
        let (digest, metadata) = try buildAll(scratch)
        #expect(metadata["containerimage.digest"] as? String == digest)
        #expect(digest.hasPrefix("sha256:") && digest.count == 71)

        // Archives are readable by all, like the other outputs (the test runs the build under umask 022).
        for archive in ["image.oci.tar", "image.docker.tar"] {
            let attributes = try FileManager.default.attributesOfItem(atPath: scratch.path + "/" + archive)
            #expect((attributes[.posixPermissions] as? Int) == 0o644, "\(archive)")
        }
        let skopeo = try ExternalTools.require("skopeo")
        for reference in [
            "oci:\(scratch.path)/layout:1.0", "oci-archive:\(scratch.path)/image.oci.tar:1.0",
            "docker-archive:\(scratch.path)/image.docker.tar",
        ] {
            let inspected = try HermeticProcess.run(skopeo, ["inspect", "--config", reference])
            #expect(inspected.status == 0, "skopeo inspect \(reference): \(inspected.standardError)")
            #expect(inspected.standardOutput.contains("GREETING=hello"), "\(reference)")
        }
        // The manifest skopeo reads from the layout is the one whose digest we reported.
        let raw = try HermeticProcess.run(skopeo, ["inspect", "--raw", "oci:\(scratch.path)/layout:1.0"])
        #expect(Digest.sha256(of: Array(raw.standardOutput.utf8)).description == digest)

        // umoci unpacks the layout to the same files as our own type=local export.
        let umoci = try ExternalTools.require("umoci")
        let bundle = scratch.path + "/bundle"
        let unpacked = try HermeticProcess.run(umoci, ["unpack", "--image", "\(scratch.path)/layout:1.0", bundle])
        try #require(unpacked.status == 0, "umoci unpack: \(unpacked.standardError)")
        #expect(try FileTreeListing.list(bundle + "/rootfs") == FileTreeListing.list(scratch.path + "/rootfs"))
        #expect(try String(contentsOfFile: bundle + "/rootfs/home/app/hello.txt", encoding: .utf8) == "hello\n")
        var info = stat()
        #expect(
            lstat(scratch.path + "/rootfs/home/app/hello.txt", &info) == 0 && info.st_uid == 1000 && info.st_gid == 1000
        )
    }

    /// podman loads the `type=docker` archive under its `-t` name, as the config digest we reported.
    @Test func podmanLoadsTheDockerArchiveByName() throws {
        let scratch = try TemporaryDirectory(prefix: "outputs-podman-")
        let (_, metadata) = try buildAll(scratch)
        let podman = try ExternalTools.require("podman")
        let storage = [
            "--root", scratch.path + "/podman-root", "--runroot", scratch.path + "/podman-run", "--storage-driver",
            "vfs",
        ]
        let loaded = try HermeticProcess.run(podman, storage + ["load", "-i", scratch.path + "/image.docker.tar"])
        try #require(loaded.status == 0, "podman load: \(loaded.standardError)")
        #expect(loaded.standardOutput.contains("example.test/hello:1.0"), "\(loaded.standardOutput)")
        let inspected = try HermeticProcess.run(
            podman, storage + ["image", "inspect", "--format", "{{.Id}} {{.RepoTags}}", "example.test/hello:1.0"])
        try #require(inspected.status == 0, "podman image inspect: \(inspected.standardError)")
        let configDigest = try #require(metadata["containerimage.config.digest"] as? String)
        #expect(inspected.standardOutput.hasPrefix(String(configDigest.dropFirst("sha256:".count))))
        #expect(inspected.standardOutput.contains("example.test/hello:1.0"))
        // Only the image itself is in the archive: manifest.json, its config and its layers.
        let listing = try HermeticProcess.run("/usr/bin/tar", ["-tf", scratch.path + "/image.docker.tar"])
        #expect(!listing.standardOutput.contains("index.json"), "\(listing.standardOutput)")
        #expect(listing.standardOutput.contains("manifest.json"))
    }

    /// With the provenance attached (the default), the image digest is the same every time, and skopeo reads
    /// the image by its name beside the referrer.
    @Test func sameInputsSameDigestTwice() throws {
        let first = try TemporaryDirectory(prefix: "outputs-a-")
        let second = try TemporaryDirectory(prefix: "outputs-b-")
        #expect(try buildAll(first).digest == buildAll(second).digest)
        let skopeo = try ExternalTools.require("skopeo")
        let inspected = try HermeticProcess.run(skopeo, ["inspect", "--config", "oci:\(first.path)/layout:1.0"])
        #expect(
            inspected.status == 0 && inspected.standardOutput.contains("GREETING=hello"), "\(inspected.standardError)")
    }
}

/// `FROM --platform=…` picks that platform's image from a multi-platform base; other stages follow the
/// target platform.
@Suite struct PlatformSelectionTests {
    @Test func fromPlatformSelectsTheBaseImage() throws {
        let scratch = try TemporaryDirectory(prefix: "platforms-")
        func marker(_ text: String) -> [LayerEntry] {
            [
                LayerEntry(path: "etc", kind: .directory, mode: 0o755),
                LayerEntry(path: "etc/arch", kind: .regular(.bytes(Array(text.utf8))), mode: 0o644),
            ]
        }
        let digest = try BaseImages.writeMultiPlatformLayout(
            at: scratch.path + "/base",
            images: [
                (Platform(os: "linux", architecture: "amd64"), marker("amd64\n")),
                (Platform(os: "linux", architecture: "arm64"), marker("arm64\n")),
            ])
        let context = scratch.path + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try """
        FROM --platform=linux/arm64 base AS tools
        FROM base
        COPY --from=tools /etc/arch /tools-arch
        """.write(toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--platform", "linux/amd64",
            "--build-context", "base=oci-layout://\(scratch.path)/base@\(digest)", "-o",
            "type=local,dest=\(scratch.path)/out",
        ])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(try String(contentsOfFile: scratch.path + "/out/etc/arch", encoding: .utf8) == "amd64\n")
        #expect(try String(contentsOfFile: scratch.path + "/out/tools-arch", encoding: .utf8) == "arm64\n")
    }
}

/// A comparable listing of a directory tree: path, type, permission bits, owner, size, symlink target.
enum FileTreeListing {
    static func list(_ root: String) throws -> [String] {
        var result: [String] = []
        let enumerator = FileManager.default.enumerator(atPath: root)
        while let relative = enumerator?.nextObject() as? String {
            var info = stat()
            guard lstat(root + "/" + relative, &info) == 0 else { continue }
            var line =
                "\(relative) \(info.st_mode & S_IFMT) \(String(info.st_mode & 0o7777, radix: 8)) \(info.st_uid):\(info.st_gid)"
            if (info.st_mode & S_IFMT) == S_IFREG { line += " \(info.st_size)" }
            if (info.st_mode & S_IFMT) == S_IFLNK {
                line +=
                    " -> "
                    + ((try? FileManager.default.destinationOfSymbolicLink(atPath: root + "/" + relative)) ?? "?")
            }
            result.append(line)
        }
        return result.sorted()
    }
}

extension OutputTests {
    /// type=local over a directory holding a name that is not UTF-8: the old tree, that name included, is
    /// removed once the new one is in place; nothing (`.hermetic-old-*`) is left beside the destination.
    @Test func localOutputReplacesATreeWithAnyNames() throws {
        let scratch = try TemporaryDirectory(prefix: "output-")
        let context = scratch.path + "/ctx"
        let destination = scratch.path + "/out/rootfs"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try "FROM scratch\nCOPY Dockerfile /x\n".write(
            toFile: context + "/Dockerfile", atomically: true, encoding: .utf8)
        // A tree hermetic wrote (so it may be replaced), with an odd name added to it afterwards.
        let first = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "-o", "type=local,dest=\(destination)",
        ])
        try #require(first.status == 0, "\(first.standardError)")
        try #require(
            OutputDestinationCheck.hasLocalMarker(destination),
            "this filesystem keeps no user xattrs, so a local tree cannot be marked for replacement")
        try FileManager.default.createDirectory(atPath: destination + "/old", withIntermediateDirectories: true)
        let odd = Array((destination + "/old/caf").utf8).map { CChar(bitPattern: $0) } + [CChar(bitPattern: 0xe9), 0]
        let fd = open(odd, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        close(fd)
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "-o", "type=local,dest=\(destination)",
        ])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: destination) == ["x"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path + "/out") == ["rootfs"])
    }
}
