import AsyncHTTPClient
import Foundation
import NIOCore
import Provenance

#if canImport(Glibc)
    import Glibc
#endif

/// `hermetic inspect|verify|rebuild REG/REPO@sha256:…` (or `:TAG`): fetches an image's manifests and its
/// attestations — never its layers — into an OCI layout directory, for the layout reader to take as it takes
/// any layout (one reader for both). The manifest or index the reference names (a tag resolved once, to the
/// digest of its bytes), each platform manifest and its config, BuildKit's attestation manifests inside the
/// index, and the in-toto referrers of each platform manifest, found through the referrers API
/// (`GET /v2/NAME/referrers/DIGEST`) or, where the registry answers that with 404, through the referrers tag
/// `sha256-HEX`; each referrer's manifest, config and statement blobs. Every body is held to a size limit and
/// checked against its digest and size as it is read; nothing unverified is written.
public struct RegistryAttestationFetcher: Sendable {
    public let client: RegistryClient

    /// A statement or envelope blob of an attestation: the limit the layout reader reads them with.
    public static let maximumStatementSize: Int64 = 64 << 20
    /// Manifests, indexes, configs and referrers lists.
    static let maximumManifestSize = RegistryPuller.maximumManifestSize
    /// In-toto referrers read per platform manifest, and pages of a referrers list followed.
    static let maximumReferrers = 1000
    static let maximumReferrerPages = 100

    public init(client: RegistryClient) {
        self.client = client
    }

    /// What was fetched: the image by digest (and the tag it was resolved from), and how its attestations
    /// were found.
    public struct Fetched: Sendable {
        /// The reference with the digest read (its tag kept when one was resolved).
        public var reference: RegistryReference
        public var top: Descriptor
        /// `referrers API`, `referrers tag sha256-…` or `image index` (BuildKit's form), as found.
        public var foundThrough: [String]
    }

    /// Fetches `reference` into a new layout at `layout` (a directory that exists and is empty).
    public func fetch(_ reference: RegistryReference, into layout: String) async throws -> Fetched {
        var writer = LayoutBlobs(path: layout)
        try writer.prepare()
        let (top, topBytes) = try await fetchTop(reference)
        try writer.put(topBytes, top.digest)
        var pinned = reference
        pinned.digest = top.digest
        var imageManifests: [Descriptor] = []
        var buildkit = false
        if MediaType.isIndex(top.mediaType) {
            let index: ImageIndex = try decode(topBytes, pinned, top.digest, what: "image index")
            for entry in index.manifests where MediaType.isManifest(entry.mediaType) {
                let manifest = try await fetchManifest(pinned, entry, into: &writer)
                if LayoutAttestations.isBuildKitAttestation(entry) {
                    buildkit = true
                    try await fetchBlobs(pinned, of: manifest, into: &writer)
                } else {
                    try await fetchConfig(pinned, of: manifest, into: &writer)
                    imageManifests.append(entry)
                }
            }
        } else if MediaType.isManifest(top.mediaType) {
            let manifest: ImageManifest = try decode(topBytes, pinned, top.digest, what: "manifest")
            try await fetchConfig(pinned, of: manifest, into: &writer)
            imageManifests.append(top)
        } else {
            throw RegistryError(
                host: reference.registry, subject: subject(pinned, top.digest),
                reason: "not an image manifest or index (media type \"\(top.mediaType)\")")
        }
        var entries = [top]
        var foundThrough = buildkit ? ["the image index (BuildKit's attestation manifests)"] : []
        // BuildKit's form inside the index is what the reader takes when there is one; referrers then are not.
        if !buildkit {
            var seen = Set<Digest>()
            for image in imageManifests {
                let (listed, place) = try await referrers(pinned, of: image.digest)
                if !foundThrough.contains(place) { foundThrough.append(place) }
                for entry in listed where seen.insert(entry.digest).inserted {
                    let manifest = try await fetchManifest(pinned, entry, into: &writer)
                    // Another image's referrer (a tag index can name anything) is not read further.
                    guard manifest.subject?.digest == image.digest else { continue }
                    try await fetchBlobs(pinned, of: manifest, into: &writer)
                    var listedEntry = Descriptor(mediaType: entry.mediaType, digest: entry.digest, size: entry.size)
                    listedEntry.artifactType = entry.artifactType
                    listedEntry.annotations = entry.annotations
                    entries.append(listedEntry)
                }
            }
            if entries.count == 1 {
                throw RegistryError(
                    host: reference.registry, subject: subject(pinned, top.digest),
                    reason: "no attestations found: no in-toto referrer of "
                        + imageManifests.map(\.digest.description).joined(separator: ", ")
                        + " is listed (\(foundThrough.joined(separator: "; "))) and no image index holds BuildKit's "
                        + "attestation manifests (pushed with --provenance false?)")
            }
        }
        try writer.finish(index: ImageIndex(manifests: entries))
        return Fetched(reference: pinned, top: top, foundThrough: foundThrough)
    }

    // MARK: Manifests

    /// The manifest or index the reference names: by digest (its bytes must hash to it), else by tag
    /// (`latest` when none), resolved once to the digest of the bytes read.
    private func fetchTop(_ reference: RegistryReference) async throws -> (Descriptor, [UInt8]) {
        let name = reference.digest?.description ?? reference.tag ?? "latest"
        let what = reference.repository + (reference.digest == nil ? ":" : "@") + name
        let (bytes, contentType) = try await collect(
            reference, path: "manifests/\(name)", accept: RegistryPuller.manifestTypes, subject: what,
            expected: nil, limit: Self.maximumManifestSize)
        let digest = Digest.sha256(of: bytes)
        if let pinned = reference.digest, pinned != digest {
            throw RegistryError(
                host: reference.registry, subject: what,
                reason: "content does not match its digest (it hashes to \(digest))")
        }
        struct Probe: Decodable {
            var mediaType: String?
            var manifests: [Descriptor]?
            var layers: [Descriptor]?
        }
        let probe = try? JSONDecoding.decode(Probe.self, from: bytes)
        let mediaType: String
        if let type = probe?.mediaType, RegistryPuller.manifestTypes.contains(type) {
            mediaType = type
        } else if let contentType, RegistryPuller.manifestTypes.contains(contentType) {
            mediaType = contentType
        } else if probe?.manifests != nil {
            mediaType = MediaType.imageIndex
        } else if probe?.layers != nil {
            mediaType = MediaType.imageManifest
        } else {
            throw RegistryError(
                host: reference.registry, subject: what,
                reason: "not an image manifest or index (media type \"\(probe?.mediaType ?? contentType ?? "none")\")")
        }
        return (Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count)), bytes)
    }

    private func fetchManifest(_ reference: RegistryReference, _ entry: Descriptor, into writer: inout LayoutBlobs)
        async throws -> ImageManifest
    {
        let what = subject(reference, entry.digest)
        guard entry.size <= Self.maximumManifestSize else {
            throw RegistryError(host: reference.registry, subject: what, reason: "a manifest over 4 MiB is refused")
        }
        let (bytes, _) = try await collect(
            reference, path: "manifests/\(entry.digest)", accept: RegistryPuller.manifestTypes, subject: what,
            expected: entry, limit: Self.maximumManifestSize)
        try writer.put(bytes, entry.digest)
        return try decode(bytes, reference, entry.digest, what: "manifest")
    }

    /// An image manifest's config (at most 4 MiB), for the reader's check of the image's blobs.
    private func fetchConfig(_ reference: RegistryReference, of manifest: ImageManifest, into writer: inout LayoutBlobs)
        async throws
    {
        try await fetchBlob(reference, manifest.config, limit: Self.maximumManifestSize, what: "config", into: &writer)
    }

    /// An attestation manifest's config and layers (its statements and envelopes).
    private func fetchBlobs(_ reference: RegistryReference, of manifest: ImageManifest, into writer: inout LayoutBlobs)
        async throws
    {
        try await fetchConfig(reference, of: manifest, into: &writer)
        for layer in manifest.layers {
            try await fetchBlob(reference, layer, limit: Self.maximumStatementSize, what: "statement", into: &writer)
        }
    }

    private func fetchBlob(
        _ reference: RegistryReference, _ descriptor: Descriptor, limit: Int64, what kind: String,
        into writer: inout LayoutBlobs
    ) async throws {
        guard !writer.has(descriptor.digest) else { return }
        let what = "\(kind) " + subject(reference, descriptor.digest)
        guard descriptor.size >= 0, descriptor.size <= limit else {
            throw RegistryError(
                host: reference.registry, subject: what,
                reason: "its size \(descriptor.size) is over the limit of \(limit) bytes for a \(kind)")
        }
        let (bytes, _) = try await collect(
            reference, path: "blobs/\(descriptor.digest)", accept: ["*/*"], subject: what, expected: descriptor,
            limit: limit)
        try writer.put(bytes, descriptor.digest)
    }

    /// Streams one blob of the image (a layer rebuild compares files in) to `path`, hashed as it comes: under
    /// a temporary name beside it, renamed only when its size and digest are the descriptor's.
    public func download(_ reference: RegistryReference, _ descriptor: Descriptor, to path: String) async throws {
        let what = "blob " + subject(reference, descriptor.digest)
        try await client.withRetries {
            let response = try await client.get(
                reference, path: "\(reference.repository)/blobs/\(descriptor.digest)", accept: ["*/*"], subject: what)
            let temporary = path + ".partial"
            let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SystemError("create", path: temporary, errno: errno) }
            var kept = false
            defer {
                close(fd)
                if !kept { unlink(temporary) }
            }
            let hasher = SHA256Hasher()
            var total: Int64 = 0
            do {
                for try await buffer in response.body {
                    total += Int64(buffer.readableBytes)
                    guard total <= descriptor.size else {
                        throw RegistryError(
                            host: reference.registry, subject: what,
                            reason: "longer than its descriptor's size \(descriptor.size)")
                    }
                    try buffer.withUnsafeReadableBytes { bytes in
                        hasher.update(bytes)
                        try FileSystem.writeAll(fd, bytes, path: temporary)
                    }
                }
            } catch let error as RegistryError {
                throw error
            } catch let error as SystemError {
                throw error
            } catch {
                throw client.transportError(error, host: reference.registry, subject: what)
            }
            guard total == descriptor.size else {
                throw RegistryError(
                    host: reference.registry, subject: what,
                    reason: "the body has \(total) bytes, the descriptor says \(descriptor.size) (truncated)",
                    retryable: true)
            }
            let actual = hasher.finalize()
            guard actual == descriptor.digest else {
                throw RegistryError(
                    host: reference.registry, subject: what,
                    reason: "content does not match its digest (it hashes to \(actual))")
            }
            guard rename(temporary, path) == 0 else { throw SystemError("rename", path: path, errno: errno) }
            kept = true
        }
    }

    // MARK: Referrers

    /// The in-toto referrers the registry lists for `subject`: through the referrers API, else (404, the
    /// API's absence) through the referrers tag; only entries of in-toto's `artifactType` are kept.
    private func referrers(_ reference: RegistryReference, of subject: Digest) async throws -> (
        [Descriptor], String
    ) {
        var listed: [Descriptor] = []
        var place = "referrers API"
        var target = "\(reference.repository)/referrers/\(subject)"
        var pages = 0
        while true {
            pages += 1
            let what = "referrers of \(reference.repository)@\(subject)"
            guard pages <= Self.maximumReferrerPages else {
                throw RegistryError(
                    host: reference.registry, subject: what,
                    reason: "the referrers list runs over \(Self.maximumReferrerPages) pages")
            }
            guard let (index, next) = try await referrersPage(reference, target: target, subject: what) else {
                // The first page's 404: the registry has no referrers API.
                let tag = RegistryPusher.referrersTag(subject)
                place = "referrers tag \(tag): the registry has no referrers API"
                listed = try await referrersTag(reference, tag: tag)
                break
            }
            listed += index.manifests
            guard let next else { break }
            target = next
        }
        let kept = listed.filter {
            $0.artifactType == ImageExporter.attestationArtifactType && MediaType.isManifest($0.mediaType)
        }
        guard kept.count <= Self.maximumReferrers else {
            throw RegistryError(
                host: reference.registry, subject: "\(reference.repository)@\(subject)",
                reason: "more than \(Self.maximumReferrers) in-toto referrers are listed (\(place))")
        }
        return (kept, place)
    }

    /// One page of the referrers API (an image index, at most 4 MiB) and the target of the next (`Link`
    /// with `rel="next"`); nil when the first page is not found (no referrers API).
    private func referrersPage(_ reference: RegistryReference, target: String, subject what: String) async throws
        -> (ImageIndex, String?)?
    {
        try await client.withRetries {
            let response = try await client.send(
                .GET, reference, target: target, headers: [("Accept", MediaType.imageIndex)], subject: what)
            switch response.status.code {
            case 404 where target.hasPrefix(reference.repository + "/referrers/"):
                await RegistryClient.discard(response)
                return nil
            case 200:
                let bytes = try await body(of: response, reference: reference, subject: what)
                let index: ImageIndex = try decode(bytes, reference, nil, what: "referrers list", subject: what)
                return (index, Self.nextLink(response.headers.first(name: "Link")))
            default:
                throw await RegistryClient.unexpected(response, host: reference.registry, subject: what)
            }
        }
    }

    /// The image index the referrers tag holds (404: none).
    private func referrersTag(_ reference: RegistryReference, tag: String) async throws -> [Descriptor] {
        let what = "referrers tag \(reference.repository):\(tag)"
        return try await client.withRetries {
            let response = try await client.send(
                .GET, reference, target: "\(reference.repository)/manifests/\(tag)",
                headers: [("Accept", MediaType.imageIndex)], subject: what)
            switch response.status.code {
            case 404:
                await RegistryClient.discard(response)
                return []
            case 200:
                let bytes = try await body(of: response, reference: reference, subject: what)
                let index: ImageIndex = try decode(bytes, reference, nil, what: "referrers tag", subject: what)
                return index.manifests
            default:
                throw await RegistryClient.unexpected(response, host: reference.registry, subject: what)
            }
        }
    }

    /// The target of `Link: <URL>; rel="next"`: a path or URL the client sends as it is.
    static func nextLink(_ header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ",") {
            let fields = part.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let first = fields.first, first.hasPrefix("<"), first.hasSuffix(">"),
                fields.dropFirst().contains(where: { $0.replacingOccurrences(of: "\"", with: "") == "rel=next" })
            else { continue }
            return String(first.dropFirst().dropLast())
        }
        return nil
    }

    // MARK: Bodies

    /// GETs `path` below the repository and reads its body: at most `limit` bytes, and exactly `expected`'s
    /// size and digest when given. Returns the bytes and the Content-Type.
    private func collect(
        _ reference: RegistryReference, path: String, accept: [String], subject what: String, expected: Descriptor?,
        limit: Int64
    ) async throws -> ([UInt8], String?) {
        try await client.withRetries {
            let response = try await client.get(
                reference, path: "\(reference.repository)/\(path)", accept: accept, subject: what)
            let length = response.headers.first(name: "Content-Length").flatMap { Int64($0) }
            if let expected, let length, length != expected.size {
                await RegistryClient.discard(response)
                throw RegistryError(
                    host: reference.registry, subject: what,
                    reason: "the response's Content-Length is \(length), the descriptor's size \(expected.size)")
            }
            let bytes = try await body(
                of: response, reference: reference, subject: what, limit: expected?.size ?? limit)
            if let expected {
                guard Int64(bytes.count) == expected.size else {
                    throw RegistryError(
                        host: reference.registry, subject: what,
                        reason: "the body has \(bytes.count) bytes, the descriptor says \(expected.size) (truncated)",
                        retryable: true)
                }
                let actual = Digest.sha256(of: bytes)
                guard actual == expected.digest else {
                    throw RegistryError(
                        host: reference.registry, subject: what,
                        reason: "content does not match its digest (it hashes to \(actual))")
                }
            }
            return (
                bytes,
                response.headers.first(name: "Content-Type").map {
                    String($0.split(separator: ";").first ?? "").trimmingCharacters(in: .whitespaces)
                }
            )
        }
    }

    private func body(
        of response: HTTPClientResponse, reference: RegistryReference, subject what: String,
        limit: Int64 = RegistryAttestationFetcher.maximumManifestSize
    ) async throws -> [UInt8] {
        do {
            return Array(try await response.body.collect(upTo: Int(limit)).readableBytesView)
        } catch is NIOTooManyBytesError {
            throw RegistryError(
                host: reference.registry, subject: what,
                reason: limit == Self.maximumManifestSize
                    ? "over 4 MiB: a manifest or list that large is refused"
                    : "longer than its descriptor's size \(limit)")
        } catch {
            throw client.transportError(error, host: reference.registry, subject: what)
        }
    }

    private func decode<T: Decodable>(
        _ bytes: [UInt8], _ reference: RegistryReference, _ digest: Digest?, what kind: String, subject: String? = nil
    ) throws -> T {
        do {
            return try JSONDecoding.decode(T.self, from: bytes)
        } catch {
            throw RegistryError(
                host: reference.registry, subject: subject ?? self.subject(reference, digest),
                reason: "the \(kind) is not valid JSON of its kind: \(OCILayoutReader.brief(error))")
        }
    }

    private func subject(_ reference: RegistryReference, _ digest: Digest?) -> String {
        reference.repository + (digest.map { "@\($0)" } ?? "")
    }
}

/// The layout the fetched blobs go into: `oci-layout`, `blobs/sha256/HEX` (each written under a temporary
/// name and renamed), and `index.json` last.
private struct LayoutBlobs {
    var path: String
    var written = Set<Digest>()

    func prepare() throws {
        try FileSystem.makeDirectories(path + "/blobs/sha256", mode: 0o700)
        try FileSystem.writeAtomically(Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: path + "/oci-layout")
    }

    func has(_ digest: Digest) -> Bool { written.contains(digest) }

    /// `bytes` has been checked against `digest` by the caller.
    mutating func put(_ bytes: [UInt8], _ digest: Digest) throws {
        guard written.insert(digest).inserted else { return }
        try FileSystem.writeAtomically(bytes, to: path + "/blobs/sha256/" + digest.hex, mode: 0o600)
    }

    func finish(index: ImageIndex) throws {
        try FileSystem.writeAtomically(try CanonicalJSON.encode(index), to: path + "/index.json")
    }
}
