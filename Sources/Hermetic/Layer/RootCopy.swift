internal import CArchive  // sys/xattr.h

#if canImport(Glibc)
    import Glibc
#endif

/// A private copy of a stage's filesystem for a RUN step where overlayfs cannot be mounted: types,
/// permission bits, owners, times (to the nanosecond) and xattrs as they are; hardlinks become separate
/// files, as overlayfs copies up one name of a linked file; sockets are left out. Returns what
/// `StepDiff.entries(ofCopy:lower:untouched:)` needs to skip files the step never touched.
struct RootCopy {
    var limits: LayerLimits = .standard

    func copy(_ source: String, to destination: String) throws -> StepDiff.Untouched {
        var untouched: StepDiff.Untouched = [:]
        var count = 0
        // Directories get their metadata after their contents (writing them changes the mtime).
        var finish: [(path: String, info: stat)] = []
        var pending = [""]
        var sourceRoot = stat()
        guard lstat(source, &sourceRoot) == 0 else { throw SystemError("lstat", path: source, errno: errno) }
        guard mkdir(destination, 0o700) == 0 else { throw SystemError("mkdir", path: destination, errno: errno) }
        finish.append((destination, sourceRoot))
        try copyAttributes(source, destination)
        while let relative = pending.popLast() {
            let directory = relative.isEmpty ? source : source + "/" + relative
            guard let names = FileSystem.directoryByteNames(directory) else {
                throw SystemError("opendir", path: directory, errno: errno)
            }
            for name in names {
                count += 1
                guard count <= limits.maxEntries else {
                    throw SystemError("copy (more than \(limits.maxEntries) entries)", path: directory, errno: E2BIG)
                }
                let nameText = String(decoding: name, as: UTF8.self)
                guard String(validating: name, as: UTF8.self) != nil else {
                    throw SystemError("copy (name not UTF-8)", path: displayable(bytes: name), errno: EILSEQ)
                }
                let path = relative.isEmpty ? nameText : relative + "/" + nameText
                let from = source + "/" + path
                let to = destination + "/" + path
                var info = stat()
                guard lstat(from, &info) == 0 else { throw SystemError("lstat", path: from, errno: errno) }
                switch info.st_mode & S_IFMT {
                case S_IFDIR:
                    guard mkdir(to, 0o700) == 0 else { throw SystemError("mkdir", path: to, errno: errno) }
                    try copyAttributes(from, to)
                    finish.append((to, info))
                    pending.append(path)
                    continue
                case S_IFREG:
                    try copyFile(from, to)
                case S_IFLNK:
                    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                    let length = readlink(from, &buffer, buffer.count - 1)
                    guard length >= 0 else { throw SystemError("readlink", path: from, errno: errno) }
                    buffer[length] = 0
                    guard symlink(buffer, to) == 0 else { throw SystemError("symlink", path: to, errno: errno) }
                case S_IFIFO:
                    guard mkfifo(to, 0o600) == 0 else { throw SystemError("mkfifo", path: to, errno: errno) }
                case S_IFCHR, S_IFBLK:
                    guard mknod(to, (info.st_mode & S_IFMT) | 0o600, info.st_rdev) == 0 else {
                        throw SystemError("mknod", path: to, errno: errno)
                    }
                default:
                    continue  // sockets: nothing a layer could hold
                }
                try copyAttributes(from, to)
                try setMetadata(to, info)
                var copied = stat()
                guard lstat(to, &copied) == 0 else { throw SystemError("lstat", path: to, errno: errno) }
                untouched[UInt64(copied.st_ino)] = StepDiff.nanoseconds(copied.st_ctim)
            }
        }
        for (path, info) in finish.reversed() { try setMetadata(path, info) }
        return untouched
    }

    private func setMetadata(_ path: String, _ info: stat) throws {
        guard lchown(path, info.st_uid, info.st_gid) == 0 else {
            throw LayerApplier.ownerFailure(
                "lchown", path: Array(path.utf8), uid: info.st_uid, gid: info.st_gid, errno: errno)
        }
        if (info.st_mode & S_IFMT) != S_IFLNK, chmod(path, info.st_mode & 0o7777) != 0 {
            throw SystemError("chmod", path: path, errno: errno)
        }
        var times = [info.st_atim, info.st_mtim]
        guard utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW) == 0 else {
            throw SystemError("utimensat", path: path, errno: errno)
        }
    }

    private func copyFile(_ from: String, _ to: String) throws {
        let input = open(from, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard input >= 0 else { throw SystemError("open", path: from, errno: errno) }
        defer { close(input) }
        let output = open(to, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw SystemError("open", path: to, errno: errno) }
        defer { close(output) }
        var buffer = [UInt8](repeating: 0, count: 1 << 17)
        while true {
            let count = read(input, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw SystemError("read", path: from, errno: errno) }
            if count == 0 { return }
            try buffer.withUnsafeBytes {
                try FileSystem.writeAll(output, UnsafeRawBufferPointer(rebasing: $0[0..<count]), path: to)
            }
        }
    }

    /// Extended attributes, best effort: the step sees what it can be given (a `trusted.*` name needs
    /// host root); layers never carry them from a RUN step anyway.
    private func copyAttributes(_ from: String, _ to: String) throws {
        let size = llistxattr(from, nil, 0)
        guard size > 0 else { return }
        var names = [CChar](repeating: 0, count: size)
        let listed = llistxattr(from, &names, size)
        guard listed > 0 else { return }
        for name in names[0..<listed].split(separator: 0) {
            let key = String(decoding: name.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let length = lgetxattr(from, key, nil, 0)
            guard length >= 0 else { continue }
            var value = [UInt8](repeating: 0, count: max(length, 1))
            let read = lgetxattr(from, key, &value, length)
            guard read >= 0 else { continue }
            _ = lsetxattr(to, key, value, read, 0)
        }
    }
}
