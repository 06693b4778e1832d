// Image/ — OCI types (descriptors, manifests, indexes, configs, platforms) and image layouts on disk:
// read with every blob checked against its digest, written under a temporary name.

#if canImport(Glibc)
    import Glibc
#endif

/// A failure reading an image layout: printed with the layout path and, where there is one, the digest.
public struct LayoutError: HermeticError {
    public var layout: String
    public var digest: Digest?
    public var reason: String
    /// The reason when a pinned digest is nowhere under the layout's index.json.
    public static let notInLayout = "not found in this layout"
    public var description: String {
        digest.map { "image layout \(layout): blob \($0): \(reason)" } ?? "image layout \(layout): \(reason)"
    }
}

/// An image found in a layout: the platform manifest, its config, and their descriptors.
public struct ResolvedImage: Sendable {
    public var manifestDescriptor: Descriptor
    public var manifest: ImageManifest
    public var configDescriptor: Descriptor
    public var config: ImageConfig
}

/// Reads an OCI image layout on disk, treating it as hostile: every blob is read by a validated digest
/// only, checked against its descriptor's size and digest while it streams, and refused if it is not a
/// regular file. JSON blobs are size-capped before they are parsed.
public struct OCILayoutReader: Sendable {
    public let path: String
    public let index: ImageIndex

    static let maximumJSONSize: Int64 = 4 << 20
    static let maximumIndexDepth = 8

    public init(path: String) throws {
        self.path = path
        let layoutFile: [UInt8]
        do {
            layoutFile = try FileSystem.readFile(path + "/oci-layout", limit: 64 << 10, followSymlinks: false)
        } catch {
            throw LayoutError(
                layout: path,
                reason: "no readable oci-layout file (is this an OCI image layout?): \(Self.whyUnreadable(error))")
        }
        struct LayoutMarker: Decodable { var imageLayoutVersion: String }
        guard let marker = try? JSONDecoding.decode(LayoutMarker.self, from: layoutFile),
            marker.imageLayoutVersion == "1.0.0"
        else {
            throw LayoutError(layout: path, reason: "oci-layout must say {\"imageLayoutVersion\":\"1.0.0\"}")
        }
        let indexBytes: [UInt8]
        do {
            indexBytes = try FileSystem.readFile(
                path + "/index.json", limit: Int(Self.maximumJSONSize), followSymlinks: false)
        } catch {
            throw LayoutError(layout: path, reason: "index.json cannot be read: \(Self.whyUnreadable(error))")
        }
        do {
            index = try JSONDecoding.decode(ImageIndex.self, from: indexBytes)
        } catch {
            throw LayoutError(layout: path, reason: "index.json is not a valid image index: \(Self.brief(error))")
        }
        guard index.schemaVersion == 2 else {
            throw LayoutError(layout: path, reason: "index.json schemaVersion \(index.schemaVersion) (expected 2)")
        }
    }

    /// The descriptor in index.json for a tag (`org.opencontainers.image.ref.name`), or the only one.
    public func topLevelDescriptor(tag: String?) throws -> Descriptor {
        if let tag {
            let matches = index.manifests.filter { $0.annotations?["org.opencontainers.image.ref.name"] == tag }
            guard let first = matches.first else {
                throw LayoutError(layout: path, reason: "no image is tagged \"\(tag)\"")
            }
            guard matches.allSatisfy({ $0.digest == first.digest }) else {
                throw LayoutError(layout: path, reason: "the tag \"\(tag)\" names several different images")
            }
            return first
        }
        // Referrers (an attestation or other artifact listed beside the image, OCI 1.1) are no image.
        let images = index.manifests.filter { !Self.isReferrerEntry($0) }
        let distinct = Set(images.map(\.digest))
        guard distinct.count == 1, let only = images.first else {
            throw LayoutError(
                layout: path,
                reason: "holds \(distinct.count) images; name one with :tag or @sha256:… in the --build-context value")
        }
        return only
    }

    /// An index.json entry that is an artifact rather than an image: it has an `artifactType` (as OCI 1.1
    /// referrers are listed, by Hermetic and ORAS) or BuildKit's attestation annotation.
    public static func isReferrerEntry(_ entry: Descriptor) -> Bool {
        entry.artifactType != nil || entry.annotations?["vnd.docker.reference.type"] == "attestation-manifest"
    }

    /// Finds the image for `platform`: by digest (anywhere under index.json), else by tag, else the only
    /// image; descending through indexes. Its config (and its descriptor's platform, when it has one) must
    /// serve `platform`, else `PlatformMismatchError`.
    public func resolveImage(reference tag: String?, digest: Digest?, platform: Platform) throws -> ResolvedImage {
        var start: Descriptor
        if let digest {
            start =
                try findDescriptor(digest, in: index, depth: 0)
                ?? { throw LayoutError(layout: path, digest: digest, reason: LayoutError.notInLayout) }()
        } else {
            start = try topLevelDescriptor(tag: tag)
        }
        var depth = 0
        var visited = Set<Digest>()
        while MediaType.isIndex(start.mediaType) {
            depth += 1
            guard depth <= Self.maximumIndexDepth, visited.insert(start.digest).inserted else {
                throw LayoutError(
                    layout: path, digest: start.digest, reason: "image indexes nest too deep or form a cycle")
            }
            let nested: ImageIndex = try readJSON(start, as: ImageIndex.self)
            // The best variant among the entries that serve the platform; the first of equals.
            let candidates = nested.manifests.compactMap { descriptor in
                descriptor.platform.flatMap { $0.serves(platform) ? (descriptor, $0.rank(serving: platform)) : nil }
            }
            guard let chosen = candidates.min(by: { $0.1 < $1.1 })?.0 else {
                // Attestation manifests (unknown/unknown) are no image for anyone.
                let available = nested.manifests.compactMap { $0.platform?.normalized }.filter { $0.os != "unknown" }
                throw PlatformMismatchError(layout: path, requested: platform, finding: .noEntry(available: available))
            }
            start = chosen
        }
        guard MediaType.isManifest(start.mediaType) else {
            throw LayoutError(
                layout: path, digest: start.digest, reason: "unsupported media type \"\(start.mediaType)\"")
        }
        let manifest: ImageManifest = try readJSON(start, as: ImageManifest.self)
        guard manifest.schemaVersion == 2 else {
            throw LayoutError(layout: path, digest: start.digest, reason: "manifest schemaVersion must be 2")
        }
        let config: ImageConfig = try readJSON(manifest.config, as: ImageConfig.self)
        // The content must be the platform asked for, whatever pinned it: a manifest pinned directly (a
        // single-platform layout) was never chosen by platform, and its label is not its content.
        let content = Platform(os: config.os, architecture: config.architecture, variant: config.variant)
        guard content.serves(platform) else {
            throw PlatformMismatchError(layout: path, requested: platform, finding: .content(content.normalized))
        }
        if let labelled = start.platform, !labelled.serves(platform) {
            throw PlatformMismatchError(layout: path, requested: platform, finding: .label(labelled.normalized))
        }
        return ResolvedImage(
            manifestDescriptor: start, manifest: manifest, configDescriptor: manifest.config, config: config)
    }

    private func findDescriptor(_ digest: Digest, in index: ImageIndex, depth: Int) throws -> Descriptor? {
        if let direct = index.manifests.first(where: { $0.digest == digest }) { return direct }
        guard depth < Self.maximumIndexDepth else { return nil }
        for descriptor in index.manifests where MediaType.isIndex(descriptor.mediaType) {
            let nested: ImageIndex = try readJSON(descriptor, as: ImageIndex.self)
            if let found = try findDescriptor(digest, in: nested, depth: depth + 1) { return found }
        }
        return nil
    }

    func readJSON<T: Decodable>(_ descriptor: Descriptor, as type: T.Type) throws -> T {
        guard descriptor.size <= Self.maximumJSONSize else {
            throw LayoutError(layout: path, digest: descriptor.digest, reason: "a JSON blob over 4 MiB is refused")
        }
        let bytes = try readBlob(descriptor, limit: Self.maximumJSONSize)
        do {
            return try JSONDecoding.decode(type, from: bytes)
        } catch {
            throw LayoutError(layout: path, digest: descriptor.digest, reason: "invalid JSON: \(Self.brief(error))")
        }
    }

    func blobPath(_ digest: Digest) -> String { "\(path)/blobs/\(digest.algorithm.rawValue)/\(digest.hex)" }

    /// The whole blob, verified; for JSON and other small blobs.
    public func readBlob(_ descriptor: Descriptor, limit: Int64) throws -> [UInt8] {
        guard descriptor.size >= 0, descriptor.size <= limit else {
            throw LayoutError(
                layout: path, digest: descriptor.digest, reason: "size \(descriptor.size) is over the limit \(limit)")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(descriptor.size))
        try streamBlob(descriptor) { chunk in bytes.append(contentsOf: chunk) }
        return bytes
    }

    /// Reads a blob of any size through, checking its size and digest; keeps nothing.
    public func verifyBlob(_ descriptor: Descriptor) throws {
        guard descriptor.size >= 0 else {
            throw LayoutError(layout: path, digest: descriptor.digest, reason: "negative size \(descriptor.size)")
        }
        try streamBlob(descriptor) { _ in }
    }

    /// Copies a blob to `destinationPath` (a temporary name beside it first), verified while it streams.
    public func copyBlob(_ descriptor: Descriptor, to destinationPath: String) throws {
        let temporary = destinationPath + ".partial"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("create", path: temporary, errno: errno) }
        var done = false
        defer {
            close(fd)
            if !done { unlink(temporary) }
        }
        try streamBlob(descriptor) { chunk in
            try chunk.withUnsafeBytes { try FileSystem.writeAll(fd, $0, path: temporary) }
        }
        guard rename(temporary, destinationPath) == 0 else {
            throw SystemError("rename", path: destinationPath, errno: errno)
        }
        done = true
    }

    private func streamBlob(_ descriptor: Descriptor, _ consume: ([UInt8]) throws -> Void) throws {
        let digest = descriptor.digest
        let file = blobPath(digest)
        // O_NOFOLLOW on the blob itself and a regular-file check: a blob that is a symlink (to /dev/zero,
        // a fifo, a host file) is refused before anything is read.
        let fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let reason =
                errno == ENOENT ? "missing from the layout" : errno == ELOOP ? "is a symlink" : "cannot be opened"
            throw LayoutError(layout: path, digest: digest, reason: reason)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw LayoutError(layout: path, digest: digest, reason: "is not a regular file")
        }
        let hasher = SHA256Hasher()
        var total: Int64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw LayoutError(
                    layout: path, digest: digest, reason: "read failed: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            total += Int64(count)
            guard total <= descriptor.size else {
                throw LayoutError(
                    layout: path, digest: digest, reason: "longer than its descriptor's size \(descriptor.size)")
            }
            let chunk = Array(buffer[0..<count])
            chunk.withUnsafeBytes { hasher.update($0) }
            try consume(chunk)
        }
        guard total == descriptor.size else {
            throw LayoutError(
                layout: path, digest: digest, reason: "has \(total) bytes, its descriptor says \(descriptor.size)")
        }
        let actual = hasher.finalize()
        guard actual == digest else {
            throw LayoutError(
                layout: path, digest: digest, reason: "content does not match its digest (it hashes to \(actual))")
        }
    }

    /// Why a layout's own file (oci-layout, index.json) could not be read, without repeating the path.
    static func whyUnreadable(_ error: any Error) -> String {
        if let error = error as? NotRegularFileError { return "not a regular file (\(error.kind))" }
        guard let error = error as? SystemError else { return brief(error) }
        switch error.errno {
        case ENOENT: return "missing"
        case ELOOP: return "is a symlink"
        case EFBIG: return "over 4 MiB"
        default: return String(cString: strerror(error.errno))
        }
    }

    static func brief(_ error: any Error) -> String {
        let text = "\(error)"
        return text.count > 200 ? String(text.prefix(200)) + "…" : text
    }
}
