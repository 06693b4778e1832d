// Attest/ — a `BuildRecord` and the build's options in; SLSA provenance statements out. Also the way
// back: reading attestations from a layout (inspect, verify) and rebuilding from them (rebuild).

import Provenance
import Sandbox

/// `--provenance mode=min|max`: max (the default) also records each layer and each RUN step.
public enum ProvenanceMode: String, Sendable {
    case min, max
}

/// Builds Hermetic's two attestations of a build (SPEC.md §9):
/// - the **build definition**: an in-toto Statement with an SLSA Provenance v1 predicate holding everything
///   that determines the image and nothing that varies between runs (no times, no invocation id, no host
///   paths), so two builds of the same inputs give byte-identical statements;
/// - the **run record**: a Statement (predicate type ours) with the wall-clock times, the invocation id and
///   host facts, naming the build definition by digest.
struct ProvenanceBuilder {
    static let buildType = "https://hermetic.build/buildtypes/dockerfile/v1"
    static let builderID = "https://hermetic.build/builder/v1"
    static let runRecordType = "https://hermetic.build/run-record/v1"

    var dockerfile: DockerfileSource
    var contextDigest: Digest
    var options: BuildOptions
    var platforms: [Platform]
    var record: BuildRecord
    var manifests: [(platform: Platform, digest: Digest)]
    var mode: ProvenanceMode

    static var seccompPolicyDigest: Digest { Digest.sha256(of: Array(SeccompPolicy.canonicalText.utf8)) }

    /// Each platform manifest (the index that holds them also holds the attestation, so it cannot be one).
    func subjects() -> [ResourceDescriptor] {
        let name = options.tags.first ?? "image"
        guard manifests.count > 1 else {
            return manifests.map { ResourceDescriptor(name: name, digest: ["sha256": $0.digest.hex]) }
        }
        return manifests.map {
            ResourceDescriptor(name: "\(name)@\($0.platform)", digest: ["sha256": $0.digest.hex])
        }
    }

    /// What the person chose (`--compression`, `--compression-level`, an output's `force-compression=true`):
    /// a rebuild passes it again. `force` is there only when it recompressed a base layer: otherwise the
    /// image is the one the build gives without it, and so is the statement.
    static func compressionParameter(_ compression: LayerCompression, forced: Bool = false) -> JSONValue {
        var parameter: [String: JSONValue]
        switch compression {
        case .uncompressed: parameter = ["type": .string("uncompressed")]
        case .gzip(let level): parameter = ["type": .string("gzip"), "level": .int(Int64(level))]
        case .zstd(let level): parameter = ["type": .string("zstd"), "level": .int(Int64(level))]
        }
        if forced { parameter["force"] = .bool(true) }
        return .object(parameter)
    }

    /// How those bytes are made (SPEC §3, Compression): the libraries whose versions fix the blob bytes.
    static func compressionScheme(_ compression: LayerCompression) -> String {
        switch compression {
        case .uncompressed: return "none"
        case .gzip(let level):
            return "gzip level \(level): a member per 1 MiB of tar, libdeflate \(LayerCompression.deflateVersion)"
        case .zstd(let level):
            return "zstd level \(level): a frame per 1 MiB of tar, libzstd \(LayerCompression.zstdVersion)"
        }
    }

    func buildDefinition() throws -> InTotoStatement {
        var external: [String: JSONValue] = [
            "dockerfile": dockerfile.parameter,
            "platforms": .array(platforms.map { .string($0.description) }),
            "buildArgs": .object(
                Dictionary(
                    options.buildArgs.map { ($0.name, JSONValue.string($0.value)) }, uniquingKeysWith: { _, b in b })),
            "secrets": .array(requests(kind: "secret", given: Set(options.secrets.keys))),
            "ssh": .array(requests(kind: "ssh", given: Set(options.sshSockets.keys))),
            "entitlements": .array(options.entitlements.map(\.rawValue).sorted().map { .string($0) }),
            "sourceDateEpoch": .int(options.sourceDateEpoch),
            "context": .object(["digest": .object(["sha256": .string(contextDigest.hex)])]),
            "compression": Self.compressionParameter(
                options.compression, forced: options.forceCompression && record.baseLayersRecompressed > 0),
        ]
        if let target = options.target { external["target"] = .string(target) }
        let internalParameters: JSONValue = .object([
            "builderVersion": .string(HermeticVersion.string),
            "layerFormat": .string(HermeticVersion.layerFormat),
            "compression": .string(Self.compressionScheme(options.compression)),
            "sandbox": .object([
                "seccompPolicy": .object(["sha256": .string(Self.seccompPolicyDigest.hex)]),
                "namespaces": .array(["mount", "pid", "network", "uts", "ipc", "cgroup"].map { .string($0) }),
                "pidsLimit": .int(4096),
            ]),
        ])
        var dependencies: [ResourceDescriptor] = [
            ResourceDescriptor(name: "context", digest: ["sha256": contextDigest.hex]),
            ResourceDescriptor(name: "dockerfile", digest: ["sha256": dockerfile.digest.hex]),
        ]
        for image in record.images.sorted(by: { ($0.reference, $0.manifestDigest) < ($1.reference, $1.manifestDigest) })
        {
            var digest = ["sha256": image.manifestDigest.hex]
            if let pinned = image.pinnedDigest, pinned != image.manifestDigest { digest = ["sha256": pinned.hex] }
            dependencies.append(
                ResourceDescriptor(
                    name: image.reference, digest: digest,
                    annotations: [
                        "manifest": .string(image.manifestDigest.description),
                        "pinnedBy": .string(Self.pinKind(image.pinnedBy)),
                    ]))
        }
        for remote in record.remotes.sorted(by: { $0.url < $1.url }) {
            dependencies.append(ResourceDescriptor(uri: remote.url, digest: ["sha256": remote.checksum.hex]))
        }
        var byproducts: [ResourceDescriptor]?
        if mode == .max {
            byproducts = record.layers.map { layer in
                ResourceDescriptor(
                    name: "layer", digest: ["sha256": layer.digest.hex], mediaType: layer.mediaType,
                    annotations: [
                        "diffID": .string(layer.diffID.description),
                        "instruction": .string("\(dockerfile.path):\(layer.line)"),
                        "createdBy": .string(layer.createdBy), "stage": .string(layer.stage),
                        "platform": .string(layer.platform),
                    ])
            }
            byproducts? += try record.steps.map { step in
                let annotations: [String: JSONValue] = [
                    "instruction": .string("\(dockerfile.path):\(step.line)"), "network": .string(step.network),
                    // Which caches, not whether they were warm: the same build run again with the cache its first
                    // run filled must give the same attestation, so the same image index digest. A warm cache
                    // that changes a layer changes the image anyway; `--require-hermetic` refuses warm caches.
                    "cacheMounts": .array(step.cacheMounts.map { .object(["id": .string($0.id)]) }),
                    "secrets": .array(step.secretIDs.map { .string($0) }),
                    "ssh": .array(step.sshIDs.map { .string($0) }),
                    "seccompPolicy": .string(Self.seccompPolicyDigest.description),
                ]
                // A ResourceDescriptor needs a uri, digest or content: the digest of the record itself.
                let digest = Digest.sha256(of: try CanonicalJSON.encode(JSONValue.object(annotations)))
                return ResourceDescriptor(name: "run-step", digest: ["sha256": digest.hex], annotations: annotations)
            }
        }
        let predicate = SLSAProvenance(
            buildDefinition: .init(
                buildType: Self.buildType, externalParameters: .object(external),
                internalParameters: internalParameters, resolvedDependencies: dependencies),
            runDetails: .init(
                builder: .init(id: Self.builderID, version: ["hermetic": HermeticVersion.string]),
                metadata: nil, byproducts: byproducts))
        return InTotoStatement(
            subject: subjects(), predicateType: SLSAProvenance.predicateType,
            predicate: try JSONValue.from(predicate))
    }

    /// Secret or ssh ids the person gave or a step asked for: whether a step required it and whether it
    /// was given (never a value).
    func requests(kind: String, given: Set<String>) -> [JSONValue] {
        var required: [String: Bool] = [:]
        for step in record.steps {
            for request in step.requested where request.kind == kind {
                required[request.id] = (required[request.id] ?? false) || request.required
            }
        }
        for id in given where required[id] == nil { required[id] = false }
        return required.keys.sorted().map { id in
            .object(["id": .string(id), "required": .bool(required[id] ?? false), "given": .bool(given.contains(id))])
        }
    }

    /// Where a pin came from, without host paths (they differ between machines).
    static func pinKind(_ pinnedBy: String) -> String {
        pinnedBy == "the Dockerfile" || pinnedBy == "--build-context" ? pinnedBy : "lock file"
    }

    func runRecord(definitionDigest: Digest, invocationID: String, startedOn: String, finishedOn: String)
        -> InTotoStatement
    {
        InTotoStatement(
            subject: subjects(), predicateType: Self.runRecordType,
            predicate: .object([
                "definition": .object(["digest": .object(["sha256": .string(definitionDigest.hex)])]),
                "builder": .object([
                    "id": .string(Self.builderID), "version": .object(["hermetic": .string(HermeticVersion.string)]),
                ]),
                "metadata": .object([
                    "invocationId": .string(invocationID), "startedOn": .string(startedOn),
                    "finishedOn": .string(finishedOn),
                ]),
                "host": .object(["platform": .string(Platform.host.description)]),
            ]))
    }
}
