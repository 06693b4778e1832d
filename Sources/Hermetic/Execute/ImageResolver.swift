/// Finds the image a reference names (`FROM ref`, `COPY --from=ref`) among the named contexts, and makes
/// sure it is pinned by digest: by the reference itself, the `--build-context` value, or the lock file.
public struct ImageResolver: Sendable {
    public var namedContexts: [String: NamedContext]
    public var lockFile: LockFile?
    public var lockFilePath: String?
    /// Registry images pulled for this build: `REGISTRY/REPO@DIGEST` → a layout over the store's blobs.
    public var pulledLayouts: [String: String] = [:]

    public init(namedContexts: [String: NamedContext], lockFile: LockFile?, lockFilePath: String?) {
        self.namedContexts = namedContexts
        self.lockFile = lockFile
        self.lockFilePath = lockFilePath
    }

    /// Where an image comes from and the manifest (or index) digest that pins it.
    public struct PinnedImage: Sendable, Hashable {
        public var reference: String
        /// The layout the image is read from: the named context's, or for a registry image the layout the
        /// build pulled it into (empty until it is pulled).
        public var layoutPath: String
        public var tag: String?
        public var digest: Digest?
        /// How the pin was found, for messages and provenance.
        public var pinnedBy: String
        /// For an image from a registry: where it is pulled from, with the pinned digest.
        public var registry: RegistryReference?

        /// `REGISTRY/REPO@DIGEST`, the key of `pulledLayouts`.
        var pullKey: String? { registry.map { "\($0.name)@\(digest.map(\.description) ?? "")" } }

        /// Where the image's bytes came from, for errors: the registry repository for a pulled image (its
        /// layout is a workspace detail the user never named), else the layout directory.
        var source: String {
            if let registry { return "pulled from \(registry.name)" }
            return "layout \(layoutPath)"
        }
    }

    public enum Requirement { case pinned, unpinnedAllowed }

    public func resolve(_ reference: String, requirement: Requirement = .pinned) throws -> PinnedImage {
        let (name, referenceDigest) = Self.split(reference)
        var path = ""
        var tag: String?
        var contextDigest: Digest?
        var registry: RegistryReference?
        switch namedContexts[reference] ?? namedContexts[name] {
        case .ociLayout(let layout, let layoutTag, let digest)?:
            (path, tag, contextDigest) = (layout, layoutTag, digest)
        case .directory?:
            throw ResolutionError(
                reference: reference, reason: "its --build-context is a directory, not an oci-layout:// image")
        case .dockerImage(let image)?:
            registry = image
            contextDigest = image.digest
        case nil:
            // No named context: the reference names a registry image, as in `docker build`.
            do throws(RegistryReference.ParseError) {
                registry = try RegistryReference(parsing: reference)
            } catch {
                throw ResolutionError(
                    reference: reference,
                    reason: "no --build-context names it, and it is not a registry reference (\(error.reason))")
            }
        }
        var pins: [(Digest, String)] = []
        if let referenceDigest { pins.append((referenceDigest, "the Dockerfile")) }
        if let contextDigest { pins.append((contextDigest, "--build-context")) }
        if let locked = lockFile?.images[reference] ?? lockFile?.images[name] {
            pins.append((locked, lockFilePath ?? "hermetic.lock"))
        }
        if let first = pins.first, let disagreeing = pins.first(where: { $0.0 != first.0 }) {
            throw ResolutionError(
                reference: reference,
                reason: "pinned to \(first.0) by \(first.1) but to \(disagreeing.0) by \(disagreeing.1)")
        }
        if pins.isEmpty && requirement == .pinned {
            throw ResolutionError(reference: reference, reason: Self.unpinnedReason(name: name, registry: registry))
        }
        registry?.digest = pins.first?.0
        var pinned = PinnedImage(
            reference: reference, layoutPath: path, tag: tag, digest: pins.first?.0,
            pinnedBy: pins.first?.1 ?? "nothing", registry: registry)
        if let key = pinned.pullKey { pinned.layoutPath = pulledLayouts[key] ?? "" }
        return pinned
    }

    /// Why an unpinned reference is refused, with the command that pins it: a build never resolves a tag.
    static func unpinnedReason(name: String, registry: RegistryReference?) -> String {
        guard let registry else {
            return
                "not pinned by digest (pin it in the Dockerfile as NAME@sha256:…, in the --build-context value, or run hermetic lock)"
        }
        var shown = registry
        shown.digest = nil
        return
            "not pinned by digest: a build never resolves a tag (pin it as \(name)@sha256:…, or run hermetic lock; skopeo inspect --format '{{.Digest}}' docker://\(shown) prints the digest)"
    }

    /// Splits `name@sha256:…` into the name and the digest (when the digest part is well-formed).
    static func split(_ reference: String) -> (String, Digest?) {
        guard let at = reference.lastIndex(of: "@") else { return (reference, nil) }
        let name = String(reference[..<at])
        let digest = try? Digest(parsing: String(reference[reference.index(after: at)...]))
        return digest == nil ? (reference, nil) : (name, digest)
    }
}

public struct ResolutionError: HermeticError {
    public var reference: String
    public var reason: String
    public var description: String { "image \"\(reference)\": \(reason)" }
}

/// `hermetic.lock`: image references pinned to manifest (or index) digests.
public struct LockFile: Codable, Sendable, Equatable {
    public var version: Int
    public var images: [String: Digest]

    public init(images: [String: Digest]) {
        self.version = 1
        self.images = images
    }

    public static func load(from path: String) throws -> LockFile {
        let bytes = try FileSystem.readFile(path, limit: 4 << 20)
        let lock: LockFile
        do {
            lock = try JSONDecoding.decode(LockFile.self, from: bytes)
        } catch {
            throw LockFileError(path: path, reason: "\(error)")
        }
        guard lock.version == 1 else {
            throw LockFileError(path: path, reason: "unsupported version \(lock.version) (expected 1)")
        }
        return lock
    }
}

public struct LockFileError: HermeticError {
    public var path: String
    public var reason: String
    public var description: String { "\(path): \(reason)" }
}

extension ImageResolver.PinnedImage {
    /// The pinned digest is nowhere in the layout: names the pin's source (a stale lock file, most often),
    /// not the layout, which is fine.
    var notInLayoutMessage: String {
        let text =
            "image \"\(reference)\": \(pinnedBy) pins \(digest.map(\.description) ?? "?") but oci-layout://\(layoutPath) does not hold it"
        return pinnedBy == "the Dockerfile" || pinnedBy == "--build-context"
            ? text : text + " (run hermetic lock again)"
    }
}
