#if canImport(Glibc)
    import Glibc
#endif

/// The entries `WORKDIR` adds: each missing directory of the (absolute, normalized) path, mode 0755,
/// owned by the current USER (root by default), mtime SOURCE_DATE_EPOCH. Existing components are resolved inside the root
/// (a symlink is followed chroot-like, never out of it); nothing is added when the directory exists.
enum DirectoryCreation {
    static let maximumSymlinkHops = 255

    static func entries(
        for path: String, inRoot root: String, sourceDateEpoch: Int64, owner: (uid: UInt32, gid: UInt32) = (0, 0)
    ) throws -> [LayerEntry] {
        var pending = path.split(separator: "/").map(String.init)
        var resolved: [String] = []
        var hops = 0
        while !pending.isEmpty {
            let component = pending.removeFirst()
            if component == "." { continue }
            if component == ".." {
                if !resolved.isEmpty { resolved.removeLast() }
                continue
            }
            let candidate = resolved + [component]
            var info = stat()
            let hostPath = root + "/" + candidate.joined(separator: "/")
            if lstat(hostPath, &info) != 0 {
                guard errno == ENOENT else { throw SystemError("lstat", path: hostPath, errno: errno) }
                // Everything from here on is missing: these are the directories WORKDIR creates.
                var created: [LayerEntry] = []
                var prefix = resolved
                for missing in [component] + pending where missing != "." && missing != ".." {
                    prefix.append(missing)
                    created.append(
                        LayerEntry(
                            path: prefix.joined(separator: "/"), kind: .directory, mode: 0o755,
                            uid: owner.uid, gid: owner.gid, mtime: sourceDateEpoch))
                }
                return created
            }
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                resolved = candidate
            case S_IFLNK:
                hops += 1
                guard hops <= maximumSymlinkHops else {
                    throw SystemError("resolve WORKDIR", path: path, errno: ELOOP)
                }
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let length = readlink(hostPath, &buffer, buffer.count - 1)
                guard length >= 0 else { throw SystemError("readlink", path: hostPath, errno: errno) }
                let target = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if target.hasPrefix("/") { resolved = [] }
                pending = target.split(separator: "/").map(String.init) + pending
            default:
                throw SystemError("WORKDIR", path: path, errno: ENOTDIR)
            }
        }
        return []
    }
}
