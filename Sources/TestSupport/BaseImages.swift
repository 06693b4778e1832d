import Hermetic
import Provenance

#if canImport(Glibc)
    import Glibc
#endif

/// Real base images for tests, made on the spot by Hermetic's own layer writer and layout writer.
public enum BaseImages {
    /// A small, fully deterministic base (no binaries): `/etc/passwd` and `/etc/group` with an `app`
    /// user (1000:1000), a few directories. Used by the golden builds, whose digests must not depend on
    /// any package installed on the machine.
    public static func goldenBaseEntries() -> [LayerEntry] {
        let passwd = """
            root:x:0:0:root:/root:/bin/sh
            daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
            app:x:1000:1000:App User:/home/app:/bin/sh
            nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin

            """
        let group = """
            root:x:0:
            daemon:x:1:
            app:x:1000:
            staff:x:50:app
            nogroup:x:65534:

            """
        func dir(_ path: String, _ mode: UInt32 = 0o755, uid: UInt32 = 0) -> LayerEntry {
            LayerEntry(path: path, kind: .directory, mode: mode, uid: uid, gid: uid, mtime: 1_600_000_000)
        }
        func file(_ path: String, _ text: String, _ mode: UInt32 = 0o644) -> LayerEntry {
            LayerEntry(path: path, kind: .regular(.bytes(Array(text.utf8))), mode: mode, mtime: 1_600_000_000)
        }
        return [
            dir("bin"), dir("etc"), dir("home"), dir("home/app", 0o750, uid: 1000), dir("root", 0o700),
            dir("tmp", 0o1777), dir("usr"), dir("usr/local"), dir("usr/local/bin"), dir("srv"),
            file("etc/passwd", passwd), file("etc/group", group), file("etc/hostname", "golden\n"),
            file("etc/os-release", "NAME=\"Hermetic golden base\"\nID=golden\n"),
            LayerEntry(path: "bin/sh", kind: .symlink(target: "/bin/busybox"), mode: 0o777, mtime: 1_600_000_000),
        ]
    }

    /// Writes an OCI layout holding one image made of `entries` (one layer), tagged `tag`, with the given
    /// config environment and ONBUILD triggers; returns the manifest digest.
    @discardableResult
    public static func writeLayout(
        at path: String, entries: [LayerEntry], tag: String = "latest", env: [String] = [],
        platform: Platform = Platform(os: "linux", architecture: "amd64"), epoch: Int64 = 1_600_000_000,
        onBuild: [String] = []
    ) throws -> Digest {
        let layerDir = try FileSystem.makeTemporaryDirectory(in: "/tmp", prefix: "hermetic-base-")
        defer { FileSystem.removeTree(layerDir) }
        let layer = try LayerWriter(sourceDateEpoch: epoch).write(entries, into: layerDir)
        return try writeLayout(
            at: path, layerFile: layer.blobPath, digest: layer.digest, diffID: layer.diffID,
            size: layer.compressedSize, mediaType: layer.mediaType, tag: tag, env: env, platform: platform,
            epoch: epoch, onBuild: onBuild)
    }

    /// Writes an OCI layout whose one layer is `tar`, as given (an uncompressed tar: hostile layers are
    /// built byte by byte with `RawTar`); returns the manifest digest.
    @discardableResult
    public static func writeLayout(at path: String, rawTar tar: [UInt8]) throws -> Digest {
        let layerDir = try FileSystem.makeTemporaryDirectory(in: "/tmp", prefix: "hermetic-base-")
        defer { FileSystem.removeTree(layerDir) }
        try FileSystem.writeAtomically(tar, to: layerDir + "/layer.tar")
        let digest = Digest.sha256(of: tar)
        return try writeLayout(
            at: path, layerFile: layerDir + "/layer.tar", digest: digest, diffID: digest, size: Int64(tar.count),
            mediaType: LayerWriter.tarMediaType)
    }

    /// Writes an OCI layout whose one layer is the file `layerFile`, described as given: `diffID` may lie
    /// (a hostile layout whose config names another layer's diff_id); returns the manifest digest.
    public static func writeLayout(
        at path: String, layerFile: String, digest: Digest, diffID: Digest, size: Int64, mediaType: String,
        tag: String = "latest", env: [String] = [],
        platform: Platform = Platform(os: "linux", architecture: "amd64"), epoch: Int64 = 1_600_000_000,
        onBuild: [String] = []
    ) throws -> Digest {
        let writer = try OCILayoutWriter(stagingParent: FileSystem.parentDirectory(of: path))
        let layerDescriptor = try writer.putBlob(
            copyingFile: layerFile, digest: digest, size: size, mediaType: mediaType)
        var config = ImageConfig.empty
        config.architecture = platform.architecture
        config.os = platform.os
        config.variant = platform.variant
        config.created = RFC3339.format(epoch)
        var container = ContainerConfig()
        container.env = env.isEmpty ? ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] : env
        container.cmd = ["/bin/sh"]
        container.onBuild = onBuild.isEmpty ? nil : onBuild
        config.config = container
        config.rootfs.diffIDs = [diffID]
        config.history = [
            History(created: RFC3339.format(epoch), createdBy: "test base image", comment: nil, emptyLayer: nil)
        ]
        let configDescriptor = try writer.putCanonicalJSON(config, mediaType: MediaType.imageConfig)
        let manifest = ImageManifest(config: configDescriptor, layers: [layerDescriptor])
        var manifestDescriptor = try writer.putCanonicalJSON(manifest, mediaType: MediaType.imageManifest)
        manifestDescriptor.annotations = ["org.opencontainers.image.ref.name": tag]
        manifestDescriptor.platform = platform
        try writer.finish(index: ImageIndex(manifests: [manifestDescriptor]), to: path)
        return manifestDescriptor.digest
    }

    /// The golden base as an OCI layout at `path`; returns its manifest digest.
    @discardableResult
    public static func writeGoldenBase(at path: String) throws -> Digest {
        try writeLayout(at: path, entries: goldenBaseEntries())
    }
}

extension BaseImages {
    /// A busybox base image from Debian's `busybox-static`: `/bin/busybox` plus a relative symlink per
    /// applet (never `busybox --install -s`, which links to the host path), `/etc/passwd` and `/etc/group`
    /// from the golden base, `/tmp`, `/root`, `/home/app`. Throws when busybox-static is missing.
    public static func busyboxEntries() throws -> [LayerEntry] {
        let binary = "/bin/busybox"
        var info = stat()
        guard lstat(binary, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw ExternalTools.Failure(
                description: "\(binary) is missing: install Debian's busybox-static (scripts/install-deps)")
        }
        let listed = try HermeticProcess.run(binary, ["--list"])
        guard listed.status == 0 else {
            throw ExternalTools.Failure(description: "busybox --list failed: \(listed.standardError)")
        }
        var entries = goldenBaseEntries().filter { $0.path != "bin/sh" }
        entries.append(
            LayerEntry(
                path: "bin/busybox", kind: .regular(.file(path: binary, size: Int64(info.st_size))),
                mode: 0o755, mtime: 1_600_000_000))
        for applet in listed.standardOutput.split(separator: "\n").map(String.init).sorted()
        where !applet.isEmpty && applet != "busybox" && !applet.contains("/") {
            entries.append(
                LayerEntry(
                    path: "bin/" + applet, kind: .symlink(target: "busybox"), mode: 0o777,
                    mtime: 1_600_000_000))
        }
        return entries
    }

    /// The busybox base as an OCI layout at `path`; returns its manifest digest.
    @discardableResult
    public static func writeBusybox(at path: String) throws -> Digest {
        // The host's busybox binary: the image is for the host's platform.
        try writeLayout(at: path, entries: busyboxEntries(), platform: .host)
    }
}

extension BaseImages {
    /// A layout whose tag names an image index with one image per platform, each with its own entries.
    /// Returns the index digest.
    @discardableResult
    public static func writeMultiPlatformLayout(
        at path: String, images: [(platform: Platform, entries: [LayerEntry])], tag: String = "latest",
        epoch: Int64 = 1_600_000_000
    ) throws -> Digest {
        let writer = try OCILayoutWriter(stagingParent: FileSystem.parentDirectory(of: path))
        let layerDir = try FileSystem.makeTemporaryDirectory(in: "/tmp", prefix: "hermetic-base-")
        defer { FileSystem.removeTree(layerDir) }
        var manifests: [Descriptor] = []
        for image in images {
            let layer = try LayerWriter(sourceDateEpoch: epoch).write(image.entries, into: layerDir)
            let layerDescriptor = try writer.putBlob(
                copyingFile: layer.blobPath, digest: layer.digest, size: layer.compressedSize,
                mediaType: layer.mediaType)
            var config = ImageConfig.empty
            config.architecture = image.platform.architecture
            config.os = image.platform.os
            config.variant = image.platform.variant
            config.created = RFC3339.format(epoch)
            config.rootfs.diffIDs = [layer.diffID]
            let configDescriptor = try writer.putCanonicalJSON(config, mediaType: MediaType.imageConfig)
            var descriptor = try writer.putCanonicalJSON(
                ImageManifest(config: configDescriptor, layers: [layerDescriptor]), mediaType: MediaType.imageManifest)
            descriptor.platform = image.platform
            manifests.append(descriptor)
        }
        var top = try writer.putCanonicalJSON(ImageIndex(manifests: manifests), mediaType: MediaType.imageIndex)
        top.annotations = ["org.opencontainers.image.ref.name": tag]
        try writer.finish(index: ImageIndex(manifests: [top]), to: path)
        return top.digest
    }
}
