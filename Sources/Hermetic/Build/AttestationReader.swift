import Foundation
import Provenance

/// Attestations as stored: in an OCI layout written by `hermetic build` (the attestation manifest in the
/// image index, the run record named by index.json), or in an `--attest-file` (JSON lines of envelopes).
public struct StoredAttestations: Sendable {
    /// The build-definition envelope (signatures may be empty when the build was not signed).
    public var definition: DSSEEnvelope
    public var runRecord: DSSEEnvelope?
    /// Platform manifest digests of the image, when read from a layout (to check the subject against).
    public var imageManifests: [Digest]?

    public struct ReadError: HermeticError {
        public var source: String
        public var reason: String
        public var description: String { "\(source): \(reason)" }
    }

    public func statement() throws -> InTotoStatement {
        try JSONDecoder().decode(InTotoStatement.self, from: Data(try definition.payloadBytes()))
    }

    public func runRecordStatement() throws -> InTotoStatement? {
        guard let runRecord else { return nil }
        return try JSONDecoder().decode(InTotoStatement.self, from: Data(try runRecord.payloadBytes()))
    }

    /// `path` is a layout directory (optionally `DIR:tag`) or an attestation file.
    public static func load(_ target: String) throws -> StoredAttestations {
        var path = target
        var tag: String?
        if !FileSystem.exists(path), let colon = target.lastIndex(of: ":") {
            path = String(target[..<colon])
            tag = String(target[target.index(after: colon)...])
        }
        guard FileSystem.exists(path) else { throw ReadError(source: target, reason: "no such file or image layout") }
        if FileSystem.isDirectory(path) { return try fromLayout(path, tag: tag) }
        return try fromFile(path)
    }

    static func decodeEnvelopeOrStatement(_ bytes: [UInt8], source: String) throws -> DSSEEnvelope {
        if let envelope = try? JSONDecoder().decode(DSSEEnvelope.self, from: Data(bytes)) { return envelope }
        guard (try? JSONDecoder().decode(InTotoStatement.self, from: Data(bytes))) != nil else {
            throw ReadError(source: source, reason: "neither a DSSE envelope nor an in-toto statement")
        }
        return DSSEEnvelope(payload: bytes, payloadType: InTotoStatement.payloadType)
    }

    static func fromFile(_ path: String) throws -> StoredAttestations {
        let bytes = try FileSystem.readFile(path, limit: 64 << 20)
        // One (possibly pretty-printed) envelope or statement, or JSON lines of them.
        if let whole = try? decodeEnvelopeOrStatement(bytes, source: path) {
            return StoredAttestations(definition: whole, runRecord: nil, imageManifests: nil)
        }
        let lines = bytes.split(separator: 0x0a).filter { !$0.allSatisfy { $0 == 0x20 || $0 == 0x0d } }
        guard let first = lines.first else { throw ReadError(source: path, reason: "empty") }
        var definition: DSSEEnvelope?
        var runRecord: DSSEEnvelope?
        for line in lines.count == 1 ? [first] : Array(lines) {
            let envelope = try decodeEnvelopeOrStatement(Array(line), source: path)
            let statement = try JSONDecoder().decode(InTotoStatement.self, from: Data(try envelope.payloadBytes()))
            if statement.predicateType == SLSAProvenance.predicateType {
                definition = envelope
            } else {
                runRecord = envelope
            }
        }
        guard let definition else { throw ReadError(source: path, reason: "no SLSA provenance statement in it") }
        return StoredAttestations(definition: definition, runRecord: runRecord, imageManifests: nil)
    }

    static func fromLayout(_ path: String, tag: String?) throws -> StoredAttestations {
        let reader = try OCILayoutReader(path: path)
        let top = try reader.topLevelDescriptor(tag: tag)
        guard MediaType.isIndex(top.mediaType) else {
            throw ReadError(source: path, reason: "the image carries no attestation (built with --provenance false?)")
        }
        let index = try reader.readJSON(top, as: ImageIndex.self)
        let attestationEntries = index.manifests.filter {
            $0.annotations?["vnd.docker.reference.type"] == "attestation-manifest"
        }
        let images = index.manifests.filter { $0.annotations?["vnd.docker.reference.type"] == nil }.map(\.digest)
        guard let entry = attestationEntries.first else {
            throw ReadError(source: path, reason: "the image index holds no attestation manifest")
        }
        let manifest = try reader.readJSON(entry, as: ImageManifest.self)
        guard
            let layer = manifest.layers.first(where: {
                $0.annotations?["in-toto.io/predicate-type"] == SLSAProvenance.predicateType
            })
        else {
            throw ReadError(source: path, reason: "the attestation manifest has no SLSA provenance layer")
        }
        let definition = try decodeEnvelopeOrStatement(try reader.readBlob(layer, limit: 64 << 20), source: path)
        var runRecord: DSSEEnvelope?
        if let text = top.annotations?["dev.hermetic.run-record"], let digest = try? Digest(parsing: text) {
            let descriptor = Descriptor(
                mediaType: InTotoStatement.payloadType, digest: digest,
                size: Int64((try? FileSystem.readFile(reader.blobPath(digest), limit: 64 << 20).count) ?? 0))
            runRecord = try? decodeEnvelopeOrStatement(try reader.readBlob(descriptor, limit: 64 << 20), source: path)
        }
        return StoredAttestations(definition: definition, runRecord: runRecord, imageManifests: images)
    }
}

/// `hermetic verify`: signature, subject and policy checks; each failure is one line.
public struct AttestationVerifier {
    public var keys: [VerificationKey]
    public var requirePinned = false
    public var requireNoNetwork = false
    public var expectedArgs: [String: String] = [:]

    public init(keys: [VerificationKey]) {
        self.keys = keys
    }

    public func failures(of stored: StoredAttestations) throws -> [String] {
        var failures: [String] = []
        let checks = try stored.definition.verify(with: keys)
        if checks.isEmpty { failures.append("the provenance is not signed") }
        for check in checks {
            switch check {
            case .valid: break
            case .invalid(let id): failures.append("the signature by key \(id) does not verify")
            case .unknownKey(let id): failures.append("the signature by key \(id) matches no given --key")
            }
        }
        let statement = try stored.statement()
        guard statement.predicateType == SLSAProvenance.predicateType else {
            return failures + ["the statement's predicateType is \(statement.predicateType), not SLSA provenance v1"]
        }
        if let manifests = stored.imageManifests {
            let subjects = Set(statement.subject.compactMap { $0.digest?["sha256"] })
            for manifest in manifests where !subjects.contains(manifest.hex) {
                failures.append("the image manifest \(manifest) is not a subject of the provenance")
            }
        }
        let predicate = statement.predicate
        let external = predicate["buildDefinition"]?["externalParameters"]
        for (key, value) in expectedArgs.sorted(by: { $0.key < $1.key }) {
            let actual = external?["buildArgs"]?[key]?.stringValue
            if actual != value {
                failures.append("build arg \(key) is \(actual.map { "\"\($0)\"" } ?? "not set"), expected \"\(value)\"")
            }
        }
        if requirePinned, case .array(let dependencies)? = predicate["buildDefinition"]?["resolvedDependencies"] {
            for dependency in dependencies where dependency["digest"] == nil {
                failures.append(
                    "dependency \(dependency["name"]?.stringValue ?? dependency["uri"]?.stringValue ?? "?") is not pinned by digest"
                )
            }
        }
        if requireNoNetwork {
            guard case .array(let byproducts)? = predicate["runDetails"]?["byproducts"] else {
                return failures + ["the provenance has no per-step records (built with --provenance mode=min)"]
            }
            for step in byproducts where step["name"]?.stringValue == "run-step" {
                if step["annotations"]?["network"]?.stringValue != "none" {
                    failures.append(
                        "the step at \(step["annotations"]?["instruction"]?.stringValue ?? "?") had network access")
                }
            }
        }
        return failures
    }
}
