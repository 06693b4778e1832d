import Hermetic

extension BaseImages {
    /// One image of a layout written by `writePlatformLayout`: its files, the platform its config states, the
    /// platform its descriptor is labelled with (nil: none, as `skopeo copy` writes a single-platform
    /// layout's index.json), and its config's ONBUILD triggers.
    public struct PlatformImage {
        public var entries: [LayerEntry]
        public var config: Platform
        public var label: Platform?
        public var onBuild: [String]

        public init(entries: [LayerEntry], config: Platform, label: Platform?, onBuild: [String] = []) {
            self.entries = entries
            self.config = config
            self.label = label
            self.onBuild = onBuild
        }
    }

    /// How index.json points at the images.
    public enum LayoutTop {
        /// index.json lists the manifests themselves (one image: a single-platform layout).
        case manifests
        /// index.json holds one image index, which lists the manifests.
        case index
    }

    /// Writes a layout holding `images` (one layer each), the top-level descriptor tagged `latest`;
    /// returns the digest to pin: the one manifest's, or the image index's.
    @discardableResult
    public static func writePlatformLayout(at path: String, images: [PlatformImage], top: LayoutTop) throws -> Digest {
        let writer = try OCILayoutWriter(stagingParent: FileSystem.parentDirectory(of: path))
        let layerDir = try FileSystem.makeTemporaryDirectory(in: "/tmp", prefix: "hermetic-base-")
        defer { FileSystem.removeTree(layerDir) }
        var manifests: [Descriptor] = []
        for image in images {
            let layer = try LayerWriter(sourceDateEpoch: 1_600_000_000).write(image.entries, into: layerDir)
            let layerDescriptor = try writer.putBlob(
                copyingFile: layer.blobPath, digest: layer.digest, size: layer.compressedSize,
                mediaType: layer.mediaType)
            var config = ImageConfig.empty
            config.architecture = image.config.architecture
            config.os = image.config.os
            config.variant = image.config.variant
            config.created = RFC3339.format(1_600_000_000)
            var container = ContainerConfig()
            container.env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
            container.onBuild = image.onBuild.isEmpty ? nil : image.onBuild
            config.config = container
            config.rootfs.diffIDs = [layer.diffID]
            let configDescriptor = try writer.putCanonicalJSON(config, mediaType: MediaType.imageConfig)
            var descriptor = try writer.putCanonicalJSON(
                ImageManifest(config: configDescriptor, layers: [layerDescriptor]), mediaType: MediaType.imageManifest)
            descriptor.platform = image.label
            manifests.append(descriptor)
        }
        let tag = ["org.opencontainers.image.ref.name": "latest"]
        switch top {
        case .manifests:
            guard var first = manifests.first else { throw ExternalTools.Failure(description: "no images") }
            first.annotations = tag
            try writer.finish(index: ImageIndex(manifests: [first] + manifests.dropFirst()), to: path)
            return first.digest
        case .index:
            var index = try writer.putCanonicalJSON(ImageIndex(manifests: manifests), mediaType: MediaType.imageIndex)
            index.annotations = tag
            try writer.finish(index: ImageIndex(manifests: [index]), to: path)
            return index.digest
        }
    }
}
