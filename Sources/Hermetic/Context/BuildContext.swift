// Context/ — a directory in (the build context, a stage's root, a directory context) with its
// .dockerignore; out: the files a COPY/ADD reads, planned as `LayerEntry` values, and the context digest.

#if canImport(Glibc)
    import Glibc
#endif

/// A tree that COPY/ADD reads from: the build context (with its .dockerignore), another stage's root, an
/// image's root, or a directory named context. Sources resolve inside it chroot-like and never leave it.
public struct BuildContext: Sendable {
    public var root: String
    public var ignore: DockerIgnore
    /// True for the build context: its files' mtimes are not inputs (SOURCE_DATE_EPOCH replaces them)
    /// and their owners are 0:0 (Docker's rule for context files).
    public var isBuildContext: Bool
    /// The build context's file digests remembered from earlier builds (nil: every file is read).
    var rememberedDigests: ContextFileDigests?

    public init(root: String, ignore: DockerIgnore, isBuildContext: Bool = false) {
        self.root = root
        self.ignore = ignore
        self.isBuildContext = isBuildContext
    }

    /// The sha256 of a regular file of the tree (or of any tree, for a path outside it).
    func fileDigest(_ path: String) throws -> Digest {
        if let rememberedDigests, rememberedDigests.covers(path) { return try rememberedDigests.digest(of: path) }
        return try ContextDigest.fileDigest(path)
    }

    /// A source that matched: its path in the tree (components) and its lstat.
    public struct Match: Sendable {
        /// Where the source is in the tree, symlinks followed.
        public var components: [String]
        public var info: stat
        public var hostPath: String
        /// The name it is copied under into a directory: its last component as written, so a symlink
        /// `foo -> bar` copies as `foo` (BuildKit follows the link for the content only).
        public var name: String
    }

    public struct SourceError: HermeticError {
        public var message: String
        public var description: String { message }
    }

    /// Resolves one COPY/ADD source (already expanded). Wildcards match per component; a source that
    /// would leave the tree is an error, not clamped.
    public func resolve(_ source: String) throws -> [Match] {
        var depth = 0
        for part in source.split(separator: "/") {
            if part == ".." {
                depth -= 1
                guard depth >= 0 else {
                    throw SourceError(message: "source \"\(source)\" is outside the build context")
                }
            } else if part != "." {
                depth += 1
            }
        }
        let parts = RootedPath.components(source)
        if !parts.contains(where: Self.hasWildcard) {
            let resolved = try RootedPath.resolve(source, inRoot: root)
            let relative = resolved.joined(separator: "/")
            guard let info = RootedPath.status(resolved, inRoot: root), !ignore.isExcluded(relative) || resolved.isEmpty
            else {
                throw SourceError(
                    message:
                        "\"\(source)\": not found in \(isBuildContext ? "the build context" : "the source") (or excluded by .dockerignore)"
                )
            }
            let written = parts.last.flatMap { $0 == "." || $0 == ".." ? nil : $0 }
            return [
                Match(components: resolved, info: info, hostPath: host(resolved), name: written ?? resolved.last ?? "")
            ]
        }
        for part in parts where Self.hasWildcard(part) && !Glob.isWellFormed(part) {
            throw SourceError(message: "\"\(source)\": syntax error in pattern")
        }
        var frontier: [[String]] = [[]]
        for part in parts {
            var next: [[String]] = []
            for prefix in frontier {
                if Self.hasWildcard(part) {
                    for name in try listDirectory(prefix) where Glob.matches(part, name) {
                        next.append(prefix + [name])
                    }
                } else {
                    next.append(prefix + [part])
                }
            }
            frontier = next
        }
        let matches = frontier.sorted { $0.joined(separator: "/") < $1.joined(separator: "/") }.compactMap {
            components -> Match? in
            guard !ignore.isExcluded(components.joined(separator: "/")),
                let info = RootedPath.status(components, inRoot: root)
            else { return nil }
            return Match(components: components, info: info, hostPath: host(components), name: components.last ?? "")
        }
        // BuildKit's Dockerfile frontend copies with AllowEmptyWildcard: a pattern matching nothing copies nothing.
        return matches
    }

    static func hasWildcard(_ text: String) -> Bool { text.contains { $0 == "*" || $0 == "?" || $0 == "[" } }

    func host(_ components: [String]) -> String {
        components.isEmpty ? root : root + "/" + components.joined(separator: "/")
    }

    /// Names in an in-tree directory (empty if it is not a directory), sorted. A name that is not valid
    /// UTF-8 stops the build, naming it, unless .dockerignore excludes it (matched as decoded with U+FFFD):
    /// layer format 1 stores UTF-8 names only, and leaving the file out would copy less than was asked.
    func listDirectory(_ components: [String]) throws -> [String] {
        let path = host(components)
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else { return [] }
        let prefix = components.isEmpty ? "" : components.joined(separator: "/") + "/"
        do {
            let names = try FileSystem.directoryNames(strict: path) { lossy in ignore.isExcluded(prefix + lossy) }
            return (names ?? []).sorted()
        } catch let error as NonUTF8NameError {
            let shown = displayable(bytes: Array(prefix.utf8) + error.name)
            throw SourceError(
                message:
                    "\"\(shown)\" in \(isBuildContext ? "the build context" : "the source"): file name is not valid UTF-8 (layers store UTF-8 names\(isBuildContext ? "; rename it or exclude it in .dockerignore" : ""))"
            )
        }
    }

    /// Every entry below an in-tree directory (not following symlinks), excluding ignored paths, sorted,
    /// each with its path relative to `components`.
    func walk(_ components: [String], limit: Int = 1_000_000) throws -> [(relative: [String], info: stat)] {
        var result: [(relative: [String], info: stat)] = []
        var stack: [[String]] = [[]]
        while let relative = stack.popLast() {
            for name in try listDirectory(components + relative).reversed() {
                let child = relative + [name]
                let full = components + child
                if ignore.isExcluded(full.joined(separator: "/")) {
                    // An excluded directory is still walked if an exception could re-include something in it.
                    var info = stat()
                    if lstat(host(full), &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR,
                        ignore.mayReinclude(under: full.joined(separator: "/"))
                    {
                        stack.append(child)
                    }
                    continue
                }
                var info = stat()
                guard lstat(host(full), &info) == 0 else { continue }
                result.append((child, info))
                guard result.count <= limit else {
                    throw SourceError(message: "\"\(full.joined(separator: "/"))\": more than \(limit) files")
                }
                if (info.st_mode & S_IFMT) == S_IFDIR { stack.append(child) }
            }
        }
        return result.sorted { $0.relative.joined(separator: "/") < $1.relative.joined(separator: "/") }
    }
}
