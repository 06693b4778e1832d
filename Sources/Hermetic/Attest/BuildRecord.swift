/// What a build used and made, gathered while it runs, for its provenance.
struct BuildRecord: Sendable {
    struct ImageUse: Sendable, Hashable {
        var reference: String
        /// The digest that pins it (manifest or index).
        var pinnedDigest: Digest?
        var manifestDigest: Digest
        var pinnedBy: String
    }

    struct RemoteUse: Sendable, Hashable {
        var url: String
        var checksum: Digest
    }

    struct LayerMade: Sendable {
        var platform: String
        var stage: String
        var line: Int
        var createdBy: String
        /// The blob as exported (compressed), or the tar itself for a layer no output carries.
        var digest: Digest
        var mediaType = MediaType.layerTar
        var diffID: Digest
    }

    var images: [ImageUse] = []
    var remotes: [RemoteUse] = []
    var layers: [LayerMade] = []
    var steps: [RunRecord] = []
    /// Distinct base-image layers `force-compression=true` compressed again: when there are none, the
    /// option changed nothing and the provenance does not record it.
    var baseLayersRecompressed = 0
    /// The cache keys of every RUN/COPY/ADD step of every stage built: what `--cache-to mode=max` exports.
    /// Never in the provenance (a cached build's provenance is a cold build's).
    var stepKeys: [CacheKey] = []

    mutating func merge(_ other: BuildRecord) {
        for image in other.images where !images.contains(image) { images.append(image) }
        for remote in other.remotes where !remotes.contains(remote) { remotes.append(remote) }
        layers += other.layers
        steps += other.steps
        stepKeys += other.stepKeys
    }
}
