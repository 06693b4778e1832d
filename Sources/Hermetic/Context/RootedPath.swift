#if canImport(Glibc)
    import Glibc
#endif

/// Resolves a path inside a root directory the way a chroot would: `..` stops at the root, and a symlink
/// (absolute or relative) is followed *inside* the root, never out of it. At most 255 links are followed.
public enum RootedPath {
    public static let maximumLinks = 255

    public struct ResolutionError: HermeticError {
        public var path: String
        public var reason: String
        public var description: String { "\(path): \(reason)" }
    }

    /// Normalized components of `path` (relative to the root), with `.`/`..` applied lexically.
    public static func components(_ path: String) -> [String] {
        var parts: [String] = []
        for part in path.split(separator: "/") {
            if part == "." { continue }
            if part == ".." {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(String(part))
        }
        return parts
    }

    /// The in-root components `path` leads to. Components that do not exist are kept as written (so a
    /// path to be created resolves too). With `followFinal: false` a final symlink is not followed.
    public static func resolve(_ path: String, inRoot root: String, followFinal: Bool = true) throws -> [String] {
        var pending = components(path)
        var resolved: [String] = []
        var links = 0
        while !pending.isEmpty {
            let component = pending.removeFirst()
            if component == ".." {
                if !resolved.isEmpty { resolved.removeLast() }
                continue
            }
            if component == "." { continue }
            let candidate = resolved + [component]
            let host = root + "/" + candidate.joined(separator: "/")
            var info = stat()
            guard lstat(host, &info) == 0 else {
                // Missing: the rest cannot contain links that exist.
                resolved = candidate
                continue
            }
            let isLast = pending.isEmpty
            if (info.st_mode & S_IFMT) == S_IFLNK && (followFinal || !isLast) {
                links += 1
                guard links <= maximumLinks else {
                    throw ResolutionError(path: path, reason: "too many levels of symbolic links")
                }
                let target = try readLink(host)
                if target.hasPrefix("/") { resolved = [] }
                pending = target.split(separator: "/").map(String.init) + pending
                continue
            }
            resolved = candidate
        }
        return resolved
    }

    /// A symlink's target. One that is not valid UTF-8 is an error: decoded with U+FFFD it would name
    /// another path (and layer format 1 stores UTF-8 targets only).
    public static func readLink(_ path: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink(path, &buffer, buffer.count - 1)
        guard length >= 0 else { throw SystemError("readlink", path: path, errno: errno) }
        let bytes = buffer[0..<length].map { UInt8(bitPattern: $0) }
        guard let target = String(validating: bytes, as: UTF8.self) else {
            throw ResolutionError(
                path: displayable(path), reason: "symlink target \"\(displayable(bytes: bytes))\" is not valid UTF-8")
        }
        return target
    }

    /// lstat of an in-root path; nil when it does not exist.
    public static func status(_ components: [String], inRoot root: String) -> stat? {
        var info = stat()
        let host = components.isEmpty ? root : root + "/" + components.joined(separator: "/")
        return lstat(host, &info) == 0 ? info : nil
    }
}
