import Provenance

/// How the provenance is stored beside the image in an OCI output (`--attest-format`).
public enum AttestationFormat: String, Sendable, CaseIterable {
    /// OCI 1.1 referrers (the default): an artifact manifest per image manifest, naming it as `subject`,
    /// listed in the layout's index.json; the image is exactly what an attestation-free build gives.
    case referrers
    /// BuildKit's attestation manifests inside an image index that wraps the image (`oci-artifact=false`).
    case buildkit
}

/// The names the attestation manifests carry, in either form.
enum AttestationAnnotation {
    /// On each statement layer, and on a referrer manifest and its index.json entry (BuildKit's name).
    static let predicateType = "in-toto.io/predicate-type"
    /// BuildKit's: what an entry is (`attestation-manifest`) and the digest of the manifest it describes.
    static let referenceType = "vnd.docker.reference.type"
    static let referenceDigest = "vnd.docker.reference.digest"
    static let attestationManifest = "attestation-manifest"
}

extension ImageExporter {
    /// The `artifactType` of a referrer: the media type of the in-toto statement it carries (DSSE's
    /// `payloadType`, and the layer type BuildKit's attestations use), so a referrers query filtered by it
    /// finds in-toto attestations whatever their predicate.
    static let attestationArtifactType = InTotoStatement.payloadType
    /// The OCI 1.1 empty config (`{}`).
    static let emptyConfig: [UInt8] = Array("{}".utf8)

    /// An in-toto statement as stored: its bytes, and its DSSE envelope when the build was signed.
    struct SignedStatement {
        var statement: [UInt8]
        var envelope: [UInt8]?
        var predicateType: String

        /// The statement layer and, when signed, the envelope layer, each annotated with the predicate type.
        var blobs: [(bytes: [UInt8], mediaType: String)] {
            [(statement, InTotoStatement.payloadType)] + (envelope.map { [($0, MediaType.dsseEnvelope)] } ?? [])
        }

        var layers: [Descriptor] {
            blobs.map { blob in
                var layer = Descriptor(
                    mediaType: blob.mediaType, digest: Digest.sha256(of: blob.bytes), size: Int64(blob.bytes.count))
                layer.annotations = [AttestationAnnotation.predicateType: predicateType]
                return layer
            }
        }
    }

    /// Puts the build definition (and, when signed, its DSSE envelope) beside the image in `format`. The run
    /// record is a referrer of its own in the referrers form; in BuildKit's, a blob of the layout named by an
    /// index.json annotation (its envelope when signed), as before.
    func attach(
        definition: SignedStatement, runRecord: SignedStatement?, format: AttestationFormat,
        to exported: ExportedImage
    ) throws -> ExportedImage {
        var result: ExportedImage
        var blobs = definition.blobs
        switch format {
        case .referrers:
            result = try referring(exported, definition)
            if let runRecord {
                result = try referring(result, runRecord)
                blobs += runRecord.blobs
            }
            blobs.append((Self.emptyConfig, MediaType.emptyJSON))
        case .buildkit:
            result = try wrappingInIndex(exported, layers: definition.layers)
            result.runRecord = runRecord.map { $0.envelope ?? $0.statement }
        }
        result.attestationBlobs = blobs
        return result
    }

    /// OCI 1.1 referrers: per image manifest, an artifact manifest (`artifactType` in-toto's, the empty
    /// config, the statement's blobs as layers, `subject` the image manifest). The image is left as it is.
    private func referring(_ exported: ExportedImage, _ attestation: SignedStatement) throws -> ExportedImage {
        var result = exported
        let config = Descriptor(
            mediaType: MediaType.emptyJSON, digest: Digest.sha256(of: Self.emptyConfig),
            size: Int64(Self.emptyConfig.count))
        for entry in exported.manifests {
            var manifest = ImageManifest(config: config, layers: attestation.layers)
            manifest.artifactType = Self.attestationArtifactType
            manifest.subject = Descriptor(
                mediaType: entry.descriptor.mediaType, digest: entry.descriptor.digest, size: entry.descriptor.size)
            // What a registry's referrers API lists for it, with the manifest's own annotations.
            manifest.annotations = [AttestationAnnotation.predicateType: attestation.predicateType]
            let bytes = try CanonicalJSON.encode(manifest)
            var descriptor = Descriptor(
                mediaType: MediaType.imageManifest, digest: Digest.sha256(of: bytes), size: Int64(bytes.count))
            descriptor.artifactType = Self.attestationArtifactType
            descriptor.annotations = [
                AttestationAnnotation.predicateType: attestation.predicateType,
                AttestationAnnotation.referenceDigest: entry.descriptor.digest.description,
                AttestationAnnotation.referenceType: AttestationAnnotation.attestationManifest,
            ]
            result.referrers.append((manifest, descriptor))
        }
        return result
    }

    /// BuildKit's form: an image index holding each platform manifest and, per platform, an attestation
    /// manifest (platform unknown/unknown, annotated `vnd.docker.reference.type: attestation-manifest` and
    /// `vnd.docker.reference.digest`, and with the OCI 1.1 `subject`) whose config is an image config, as
    /// BuildKit's `oci-artifact=false`. The statement is deterministic, so the index digest is too (unsigned).
    private func wrappingInIndex(_ exported: ExportedImage, layers: [Descriptor]) throws -> ExportedImage {
        var result = exported
        var indexEntries = exported.manifests.map(\.descriptor)
        for entry in exported.manifests {
            let config = AttestationConfig(rootfs: RootFS(diffIDs: layers.map(\.digest)))
            let configBytes = try CanonicalJSON.encode(config)
            var manifest = ImageManifest(
                config: Descriptor(
                    mediaType: MediaType.imageConfig, digest: Digest.sha256(of: configBytes),
                    size: Int64(configBytes.count)),
                layers: layers)
            var subject = entry.descriptor
            subject.platform = nil
            manifest.subject = subject
            let bytes = try CanonicalJSON.encode(manifest)
            var descriptor = Descriptor(
                mediaType: MediaType.imageManifest, digest: Digest.sha256(of: bytes), size: Int64(bytes.count))
            descriptor.platform = Platform(os: "unknown", architecture: "unknown")
            descriptor.annotations = [
                AttestationAnnotation.referenceDigest: entry.descriptor.digest.description,
                AttestationAnnotation.referenceType: AttestationAnnotation.attestationManifest,
            ]
            result.attestationManifests.append((manifest, configBytes, descriptor))
            indexEntries.append(descriptor)
        }
        let indexBytes = try CanonicalJSON.encode(ImageIndex(manifests: indexEntries))
        result.topDescriptor = Descriptor(
            mediaType: MediaType.imageIndex, digest: Digest.sha256(of: indexBytes), size: Int64(indexBytes.count))
        result.imageDigest = result.topDescriptor.digest
        return result
    }

    /// The config of a BuildKit attestation manifest (BuildKit's shape: an image config for platform unknown).
    struct AttestationConfig: Encodable {
        var architecture = "unknown"
        var os = "unknown"
        var rootfs: RootFS
    }
}
