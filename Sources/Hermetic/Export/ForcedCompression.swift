// Export/ — `force-compression=true`: a base image's layers in, the same layers compressed as the build's
// own are out (SPEC §3, Compression).

#if canImport(Glibc)
    import Glibc
#endif

extension ImageExporter {
    /// The exporter for the same images with every base-image layer whose compression is not `compression`'s
    /// (gzip, zstd or none: the level is not looked at, as in BuildKit's `NeedsConversion`) decompressed, checked
    /// against its diff_id and compressed again with `compression`, as the build's own layers are; and how
    /// many distinct layers that changed. The compressed blob is stored by diff_id and scheme, so a later build
    /// takes it from the store; without a store the blobs go to `directory`.
    func recompressingBaseLayers(
        _ compression: LayerCompression, workers: Int, into directory: String, store: ContentStore? = nil
    ) throws -> (exporter: ImageExporter, recompressed: Int) {
        var converted: [Digest: LayerRecord] = [:]
        var result = self
        for imageIndex in result.images.indices {
            for layerIndex in result.images[imageIndex].layers.indices {
                let layer = result.images[imageIndex].layers[layerIndex]
                guard !layer.madeByBuild, Self.needsConversion(layer.descriptor.mediaType, to: compression) else {
                    continue
                }
                if converted[layer.diffID] == nil {
                    converted[layer.diffID] = try recompressed(
                        layer, compression, workers: workers, into: directory, store: store)
                }
                result.images[imageIndex].layers[layerIndex] = converted[layer.diffID] ?? layer
            }
        }
        return (result, converted.count)
    }

    /// Whether a layer blob of `mediaType` is compressed otherwise than `compression` asks.
    static func needsConversion(_ mediaType: String, to compression: LayerCompression) -> Bool {
        let wanted: LayerApplier.Compression
        switch compression {
        case .uncompressed: wanted = .none
        case .gzip: wanted = .gzip
        case .zstd: wanted = .zstd
        }
        return LayerApplier.compression(of: mediaType) != wanted
    }

    /// One base layer as `compression` makes it: from the store when it holds this diff_id compressed so,
    /// else decompressed to a temporary tar (diff_id checked), compressed (diff_id checked again) and stored.
    private func recompressed(
        _ layer: LayerRecord, _ compression: LayerCompression, workers: Int, into directory: String,
        store: ContentStore?
    ) throws -> LayerRecord {
        let scheme = Self.storedScheme(compression)
        var replaced = layer
        replaced.storedCopy = true
        replaced.origin = layer.origin + ", compressed again by force-compression=true"
        if let store, let stored = store.compressedLayer(diffID: layer.diffID, scheme: scheme) {
            replaced.descriptor = stored
            replaced.blobPath = store.blobPath(stored.digest)
            return replaced
        }
        let scratch = store?.temporaryDirectory ?? directory
        let tar = try LayerDecompressor().decompress(
            blobAt: layer.blobPath, mediaType: layer.descriptor.mediaType, expectedDiffID: layer.diffID,
            into: scratch, name: layer.displayName)
        let written: (digest: Digest, size: Int64, path: String)
        if compression == .uncompressed {
            written = (layer.diffID, tar.size, tar.path)
        } else {
            defer { unlink(tar.path) }
            let writer = LayerWriter(sourceDateEpoch: sourceDateEpoch, compression: compression, workers: workers)
            let blob = try writer.compressTar(at: tar.path, diffID: layer.diffID, into: scratch)
            written = (blob.digest, blob.compressedSize, blob.blobPath)
        }
        replaced.descriptor = Descriptor(mediaType: compression.mediaType, digest: written.digest, size: written.size)
        replaced.blobPath = written.path
        if let store {
            replaced.blobPath = try store.adopt(fileAt: written.path, as: written.digest)
            try store.storeCompressedLayer(replaced.descriptor, diffID: layer.diffID, scheme: scheme)
        }
        return replaced
    }
}
