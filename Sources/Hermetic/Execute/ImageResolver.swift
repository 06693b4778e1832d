/// Finds the image a reference names (`FROM ref`, `COPY --from=ref`) among the named contexts, and makes
/// sure it is pinned by digest: by the reference itself, the `--build-context` value, or the lock file.
public struct ImageResolver: Sendable {
    public var namedContexts: [String: NamedContext]
    public var lockFile: LockFile?
    public var lockFilePath: String?

    public init(namedContexts: [String: NamedContext], lockFile: LockFile?, lockFilePath: String?) {
        self.namedContexts = namedContexts
        self.lockFile = lockFile
        self.lockFilePath = lockFilePath
    }

    /// Where an image comes from and the manifest (or index) digest that pins it.
    public struct PinnedImage: Sendable, Hashable {
        public var reference: String
        public var layoutPath: String
        public var tag: String?
        public var digest: Digest?
        /// How the pin was found, for messages and provenance.
        public var pinnedBy: String
    }

    public enum Requirement { case pinned, unpinnedAllowed }

    public func resolve(_ reference: String, requirement: Requirement = .pinned) throws -> PinnedImage {
        let (name, referenceDigest) = Self.split(reference)
        guard let context = namedContexts[reference] ?? namedContexts[name] else {
            throw ResolutionError(
                reference: reference,
                reason:
                    "no --build-context names it (hermetic reads images only from OCI layouts given as --build-context \(name)=oci-layout:///path)"
            )
        }
        guard case .ociLayout(let path, let tag, let contextDigest) = context else {
            throw ResolutionError(
                reference: reference, reason: "its --build-context is a directory, not an oci-layout:// image")
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
            throw ResolutionError(
                reference: reference,
                reason:
                    "not pinned by digest (pin it in the Dockerfile as NAME@sha256:…, in the --build-context value, or run hermetic lock)"
            )
        }
        return PinnedImage(
            reference: reference, layoutPath: path, tag: tag, digest: pins.first?.0,
            pinnedBy: pins.first?.1 ?? "nothing")
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
