// Export/ — `BuiltImage`s in; OCI blobs (config, manifest, index, attestation manifests) out, written
// to each `-o` output under a temporary name and put in place together (PendingOutputs).

import Foundation
import Provenance

/// The image, assembled as blobs in a staging layout, before it is written to any output.
struct ExportedImage {
    /// The manifest digest (one platform) or the image index digest (several platforms, or the BuildKit
    /// attestation form, whose index holds the attestation manifests).
    var imageDigest: Digest
    var configDigest: Digest?
    var topDescriptor: Descriptor
    var manifests: [(platform: Platform, manifest: ImageManifest, descriptor: Descriptor)]
    var tags: [String]
    /// Attestation blobs (statement, envelope, and a referrer's empty config), in either form.
    var attestationBlobs: [(bytes: [UInt8], mediaType: String)] = []
    /// `--attest-format buildkit`: the manifests that carry them, inside the image index.
    var attestationManifests: [(manifest: ImageManifest, configBytes: [UInt8], descriptor: Descriptor)] = []
    /// `--attest-format referrers` (the default): artifact manifests naming their image manifest as
    /// `subject`, listed beside the image in index.json (Attestations.swift).
    var referrers: [(manifest: ImageManifest, descriptor: Descriptor)] = []
    /// The run record (varies per build): kept beside the image, named by an index.json annotation.
    var runRecord: [UInt8]?

    /// What `--metadata-file` holds, with buildx's key names.
    func metadataJSON() throws -> [UInt8] {
        var object: [String: String] = [
            "containerimage.digest": imageDigest.description,
            "containerimage.descriptor.mediaType": topDescriptor.mediaType,
            "containerimage.descriptor.size": String(topDescriptor.size),
            "hermetic.layer-format": HermeticVersion.layerFormat,
        ]
        if let configDigest { object["containerimage.config.digest"] = configDigest.description }
        if !tags.isEmpty { object["image.name"] = tags.joined(separator: ",") }
        return try CanonicalJSON.encode(object)
    }
}

/// Turns built images into OCI blobs (config, manifest, index) and writes them to each requested output.
/// Every output goes to a temporary name first and is renamed into place when complete.
struct ImageExporter {
    var images: [BuiltImage]
    var tags: [String]
    var sourceDateEpoch: Int64

    /// Manifest annotation recording the layer canonicalization, so a later builder can reproduce it.
    static let layerFormatAnnotation = "dev.hermetic.layer-format"
    static let runRecordAnnotation = "dev.hermetic.run-record"

    /// The exporter for the same images with every layer this build made compressed with `compression`
    /// into `directory` (each distinct layer once, whichever platforms share it). Layers of steps that no
    /// output carries were never handed here, so they are never compressed.
    func compressingMadeLayers(
        _ compression: LayerCompression, workers: Int, into directory: String, store: ContentStore? = nil
    ) throws -> ImageExporter {
        guard compression != .uncompressed else { return self }
        let writer = LayerWriter(sourceDateEpoch: sourceDateEpoch, compression: compression, workers: workers)
        let scheme = Self.storedScheme(compression)
        var compressed: [Digest: LayerRecord] = [:]
        var result = self
        for imageIndex in result.images.indices {
            for layerIndex in result.images[imageIndex].layers.indices {
                let layer = result.images[imageIndex].layers[layerIndex]
                guard layer.madeByBuild, layer.descriptor.mediaType == MediaType.layerTar else { continue }
                if compressed[layer.diffID] == nil {
                    var replaced = layer
                    if let store, let stored = store.compressedLayer(diffID: layer.diffID, scheme: scheme) {
                        replaced.descriptor = stored
                        replaced.blobPath = store.blobPath(stored.digest)
                    } else {
                        // A cached tar is checked against its diff_id as it is read; one this build wrote was
                        // hashed as it was written.
                        let written = try writer.compressTar(
                            at: layer.blobPath, diffID: layer.diffID, into: store?.temporaryDirectory ?? directory,
                            checkingDiffID: !layer.hashedThisBuild)
                        replaced.descriptor = Descriptor(
                            mediaType: written.mediaType, digest: written.digest, size: written.compressedSize)
                        replaced.blobPath = written.blobPath
                        if let store {
                            replaced.blobPath = try store.adopt(fileAt: written.blobPath, as: written.digest)
                            try store.storeCompressedLayer(replaced.descriptor, diffID: layer.diffID, scheme: scheme)
                        }
                    }
                    compressed[layer.diffID] = replaced
                }
                result.images[imageIndex].layers[layerIndex] = compressed[layer.diffID] ?? layer
            }
        }
        return result
    }

    /// Names a compression with the library version that fixes its bytes, so a stored blob is reused only
    /// where compressing again would give the same bytes.
    static func storedScheme(_ compression: LayerCompression) -> String {
        switch compression {
        case .uncompressed: return "tar"
        case .gzip(let level): return "gzip\(level)-libdeflate\(LayerCompression.deflateVersion)"
        case .zstd(let level): return "zstd\(level)-libzstd\(LayerCompression.zstdVersion)"
        }
    }

    /// The records of the layers this build made, with the blob each has in the outputs (compressed),
    /// for the provenance; layers no output carries keep their tar's digest.
    func describingExported(_ made: [BuildRecord.LayerMade]) -> [BuildRecord.LayerMade] {
        var exported: [Digest: Descriptor] = [:]
        for layer in images.flatMap(\.layers) where layer.madeByBuild { exported[layer.diffID] = layer.descriptor }
        return made.map { layer in
            guard let descriptor = exported[layer.diffID] else { return layer }
            var described = layer
            described.digest = descriptor.digest
            described.mediaType = descriptor.mediaType
            return described
        }
    }

    /// Computes every blob and digest; writes nothing outside `stagingParent`.
    func assemble(stagingParent: String) throws -> ExportedImage {
        var manifests: [(Platform, ImageManifest, Descriptor)] = []
        for image in images {
            let configBytes = try CanonicalJSON.encode(image.config)
            let configDescriptor = Descriptor(
                mediaType: MediaType.imageConfig, digest: Digest.sha256(of: configBytes), size: Int64(configBytes.count)
            )
            var manifest = ImageManifest(config: configDescriptor, layers: image.layers.map(\.descriptor))
            manifest.annotations = [Self.layerFormatAnnotation: HermeticVersion.layerFormat]
            let manifestBytes = try CanonicalJSON.encode(manifest)
            var descriptor = Descriptor(
                mediaType: MediaType.imageManifest, digest: Digest.sha256(of: manifestBytes),
                size: Int64(manifestBytes.count))
            descriptor.platform = image.platform
            manifests.append((image.platform, manifest, descriptor))
        }
        if manifests.count == 1, let only = manifests.first {
            var top = only.2
            top.platform = nil
            return ExportedImage(
                imageDigest: only.2.digest, configDigest: only.1.config.digest, topDescriptor: top,
                manifests: manifests, tags: tags)
        }
        let index = ImageIndex(manifests: manifests.map(\.2))
        let indexBytes = try CanonicalJSON.encode(index)
        let top = Descriptor(
            mediaType: MediaType.imageIndex, digest: Digest.sha256(of: indexBytes), size: Int64(indexBytes.count))
        return ExportedImage(
            imageDigest: top.digest, configDigest: nil, topDescriptor: top, manifests: manifests,
            tags: tags)
    }

    /// Writes one output in its destination's staging directory; `pending` puts it in place.
    func prepare(_ exported: ExportedImage, to output: OutputSpec, pending: PendingOutputs) throws {
        let destination = FileSystem.absolute(output.destination)
        let staging = pending.stagingDirectory(for: destination)
        switch output {
        case .local:
            // The layers were read and checked while the image was built: what fails here is the writing
            // (a full disk, a read-only filesystem), so the error names the destination, not a layer.
            do {
                pending.addDirectory(try writeRootFilesystem(in: staging), destination: destination)
            } catch let error as SystemError {
                throw OutputWriteError(destination: output.destination, reason: error.description)
            } catch LayerError.failed(_, let reason) {
                throw OutputWriteError(destination: output.destination, reason: reason)
            }
        case .ociDirectory:
            let writer = try stage(exported, in: staging)
            pending.addDirectory(try writer.finishStaged(index: topLevelIndex(exported)), destination: destination)
        case .ociArchive:
            let writer = try stage(exported, in: staging)
            pending.addFile(
                try writer.finishArchiveStaged(
                    index: topLevelIndex(exported), beside: staging + "/archive", format: .oci),
                destination: destination)
        case .dockerArchive:
            let writer = try stage(exported, in: staging)
            let format = OCILayoutWriter.ArchiveFormat.docker(
                repoTags: tags.map(Self.dockerRepoTag), manifest: exported.manifests[0].manifest)
            pending.addFile(
                try writer.finishArchiveStaged(
                    index: topLevelIndex(exported), beside: staging + "/archive", format: format),
                destination: destination)
        }
    }

    /// index.json: the image (manifest or index), annotated with each `-t` name as OCI ref names want; then
    /// each referrer (an attestation naming its image manifest as `subject`), untagged.
    private func topLevelIndex(_ exported: ExportedImage) -> ImageIndex {
        let names = tags.isEmpty ? [nil] : tags.map { Optional($0) }
        let runRecordDigest = exported.runRecord.map { Digest.sha256(of: $0) }
        return ImageIndex(
            manifests: names.map { name in
                var descriptor = exported.topDescriptor
                var annotations: [String: String] = [:]
                if let name {
                    annotations["org.opencontainers.image.ref.name"] = Self.ociRefName(name)
                    // As BuildKit's OCI exporter: containerd (and podman) find an image by its full name.
                    annotations["io.containerd.image.name"] = Self.normalizedName(name)
                }
                if let runRecordDigest { annotations[Self.runRecordAnnotation] = runRecordDigest.description }
                descriptor.annotations = annotations.isEmpty ? nil : annotations
                return descriptor
            } + exported.referrers.map(\.descriptor))
    }

    /// `-t name:tag` → the ref name in an OCI layout (the tag; the whole name when it has no tag).
    static func ociRefName(_ tag: String) -> String {
        if let colon = tag.lastIndex(of: ":"), !tag[colon...].contains("/") {
            return String(tag[tag.index(after: colon)...])
        }
        return tag
    }

    /// A `-t` name as Docker normalizes it: `repo:tag` → `docker.io/library/repo:tag`, `org/repo` →
    /// `docker.io/org/repo:latest`; a first component with a `.` or `:`, or `localhost`, is a registry.
    static func normalizedName(_ tag: String) -> String {
        let components = tag.split(separator: "/", maxSplits: 1).map(String.init)
        var name = tag
        if components.count == 1 {
            name = "docker.io/library/" + tag
        } else if let first = components.first, !first.contains("."), !first.contains(":"), first != "localhost" {
            name = "docker.io/" + tag
        }
        return dockerRepoTag(name)
    }

    static func dockerRepoTag(_ tag: String) -> String {
        if let colon = tag.lastIndex(of: ":"), !tag[colon...].contains("/") { return tag }
        return tag + ":latest"
    }

    private func stage(_ exported: ExportedImage, in parent: String) throws -> OCILayoutWriter {
        let writer = try OCILayoutWriter(stagingParent: parent)
        for (image, entry) in zip(images, exported.manifests) {
            for layer in image.layers {
                do {
                    _ = try writer.putBlob(
                        copyingFile: layer.blobPath, digest: layer.descriptor.digest,
                        size: layer.descriptor.size, mediaType: layer.descriptor.mediaType)
                } catch let error as LayoutError where layer.madeByBuild || layer.storedCopy {
                    // The copy is checked against its digest: a damaged blob in the store is named with the
                    // way out, not by the staging path it was refused in.
                    throw StoredBlobError(layer: layer.displayName, reason: error.reason)
                }
            }
            _ = try writer.putCanonicalJSON(image.config, mediaType: MediaType.imageConfig)
            _ = try writer.putCanonicalJSON(entry.manifest, mediaType: MediaType.imageManifest)
        }
        for blob in exported.attestationBlobs { try writer.putBlob(blob.bytes, mediaType: blob.mediaType) }
        for attestation in exported.attestationManifests {
            try writer.putBlob(attestation.configBytes, mediaType: MediaType.imageConfig)
            _ = try writer.putCanonicalJSON(attestation.manifest, mediaType: MediaType.imageManifest)
        }
        for referrer in exported.referrers {
            _ = try writer.putCanonicalJSON(referrer.manifest, mediaType: MediaType.imageManifest)
        }
        if let runRecord = exported.runRecord { try writer.putBlob(runRecord, mediaType: InTotoStatement.payloadType) }
        if MediaType.isIndex(exported.topDescriptor.mediaType) {
            let index = ImageIndex(
                manifests: exported.manifests.map(\.descriptor) + exported.attestationManifests.map(\.descriptor))
            let written = try writer.putCanonicalJSON(index, mediaType: MediaType.imageIndex)
            guard written.digest == exported.topDescriptor.digest else {
                throw LayoutError(
                    layout: writer.stagingDirectory, digest: written.digest,
                    reason: "internal: the index changed while it was written")
            }
        }
        return writer
    }

    /// `type=local`: the final root filesystem of the (first) platform, rebuilt from the image's own layers
    /// in a temporary directory in `parent`, marked as ours so a later build may replace it.
    private func writeRootFilesystem(in parent: String) throws -> String {
        let temporary = try FileSystem.makeTemporaryDirectory(in: parent, prefix: ".hermetic-local-")
        var done = false
        defer { if !done { FileSystem.removeTree(temporary) } }
        for layer in images.first?.layers ?? [] {
            _ = try LayerApplier().apply(
                blobAt: layer.blobPath, mediaType: layer.descriptor.mediaType,
                expectedDiffID: layer.diffID, toRoot: temporary, name: layer.displayName)
        }
        chmod(temporary, 0o755)
        OutputDestinationCheck.setLocalMarker(temporary)
        done = true
        return temporary
    }
}

/// An output that could not be written (a full disk, a read-only filesystem), named by its destination.
struct OutputWriteError: HermeticError {
    var destination: String
    var reason: String
    var description: String { "--output dest=\(destination): cannot write it: \(reason)" }
}

/// A blob the store holds for a layer this build made (or found in its cache) does not have its digest.
struct StoredBlobError: HermeticError {
    var layer: String
    var reason: String
    var description: String {
        "layer \(layer): the build cache's copy of this layer cannot be used (\(reason)); run hermetic store "
            + "check --repair"
    }
}

extension LayerRecord {
    /// How errors name the layer: its digest and where it comes from (an image's layout, or the
    /// instruction that made it), never the workspace copy that is gone once the build fails.
    var displayName: String { origin.isEmpty ? descriptor.digest.description : "\(descriptor.digest) \(origin)" }
}
