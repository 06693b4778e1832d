// For <sys/xattr.h>, which Swift's Glibc module does not carry.
internal import CArchive

#if canImport(Glibc)
    import Glibc
#endif

/// A build's outputs (layouts, archives, local trees, the iid, metadata and attestation files), each
/// complete under a temporary name beside its destination, put in place together only once every one
/// of them was written. A build that fails before that leaves none of them, and no temporary either.
///
/// Each destination has a lock file beside it (`.hermetic-lock-TAG`, TAG from its name), held from before
/// anything is staged until the build is done with it: a second build writing the same destination waits
/// for the first. Everything for one destination is staged in one directory beside it
/// (`.hermetic-stage-TAG-…`), so a holder of the lock knows that any such directory was left by a build
/// that died (SIGKILL, a crash) and removes it. On a signal, the staging directories go with the workspace.
final class PendingOutputs {
    private struct Item {
        var temporary: String
        var destination: String
        var isDirectory: Bool
    }
    private struct Destination {
        var lockFile: String
        var lock: Int32
        var staging: String
    }
    private var items: [Item] = []
    private var destinations: [String: Destination] = [:]
    private let signals: WorkspaceJanitor.SignalGuard

    /// Extended attribute on the root of a `type=local` tree we wrote, so a later build may replace it.
    static let localMarker = "user.dev.hermetic.output"

    /// Locks every destination (absolute paths), in path order so that two builds never wait for each
    /// other, and makes its staging directory. `waiting` is told of a destination another build is writing.
    init(destinations paths: [String], signals: WorkspaceJanitor.SignalGuard, waiting: (String) -> Void) throws {
        self.signals = signals
        for path in Set(paths).sorted() {
            let parent = FileSystem.parentDirectory(of: path)
            try FileSystem.makeDirectories(parent)
            let tag = Self.tag(path)
            let lockFile = parent + "/.hermetic-lock-" + tag
            let lock = try Self.lock(lockFile, destination: path, waiting: waiting)
            // Held now, so removing it on a signal is safe (a waiter then finds it gone and makes it again).
            do {
                _ = try signals.creating({ lockFile }, path: { $0 })
            } catch {
                close(lock)
                throw error
            }
            // Only a holder of this lock stages for `path`: what is staged for it now was left by a dead build.
            for name in FileSystem.directoryNames(parent) ?? [] where name.hasPrefix(".hermetic-stage-\(tag)-") {
                FileSystem.removeTree(parent + "/" + name)
            }
            let staging: String
            do {
                staging = try signals.creating(
                    { try FileSystem.makeTemporaryDirectory(in: parent, prefix: ".hermetic-stage-\(tag)-") },
                    path: { $0 })
            } catch {
                signals.forget(lockFile)
                unlink(lockFile)
                close(lock)
                throw error
            }
            destinations[path] = Destination(lockFile: lockFile, lock: lock, staging: staging)
        }
    }

    /// The first 16 hex digits of the sha256 of the destination's name: its staging and lock files' names
    /// stay short and tell destinations in one directory apart.
    static func tag(_ destination: String) -> String {
        String(Digest.sha256(of: Array(FileSystem.baseName(destination).utf8)).hex.prefix(16))
    }

    /// An exclusive lock on `path`, made if missing, that is still `path` once held (a holder unlinks it
    /// when done; one who opened it before that has locked a file no longer there, and tries again).
    private static func lock(_ path: String, destination: String, waiting: (String) -> Void) throws -> Int32 {
        var told = false
        while true {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard fd >= 0 else { throw SystemError("create the lock file", path: path, errno: errno) }
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                guard errno == EWOULDBLOCK else {
                    let code = errno
                    close(fd)
                    throw SystemError("lock", path: path, errno: code)
                }
                if !told {
                    waiting(destination)
                    told = true
                }
                while flock(fd, LOCK_EX) != 0 {
                    guard errno == EINTR else {
                        let code = errno
                        close(fd)
                        throw SystemError("lock", path: path, errno: code)
                    }
                }
            }
            var held = stat()
            var current = stat()
            if fstat(fd, &held) == 0, lstat(path, &current) == 0, held.st_ino == current.st_ino,
                held.st_dev == current.st_dev
            {
                return fd
            }
            close(fd)
        }
    }

    /// Where what is put at `destination` (absolute, one of those given to init) is written first.
    func stagingDirectory(for destination: String) -> String {
        destinations[destination]?.staging ?? FileSystem.parentDirectory(of: destination)
    }

    func addDirectory(_ temporary: String, destination: String) {
        items.append(Item(temporary: temporary, destination: destination, isDirectory: true))
    }

    func addFile(_ temporary: String, destination: String) {
        items.append(Item(temporary: temporary, destination: destination, isDirectory: false))
    }

    /// Writes `bytes` to a temporary file in `destination`'s staging directory (mode 0644, whatever the umask).
    func addFile(_ bytes: [UInt8], destination: String) throws {
        let temporary = try FileSystem.writeTemporary(bytes, beside: stagingDirectory(for: destination) + "/file")
        addFile(temporary, destination: destination)
    }

    /// FIFOs read to their end just before and just after the commit point (tests only: they make the
    /// moment of a signal exact).
    struct CommitPauses {
        var before: String?
        var after: String?
    }

    /// The commit point: once it is passed a signal no longer stops the build (it ends with exit 0);
    /// before it, a signal leaves every destination as it was.
    func commit(pauses: CommitPauses = CommitPauses()) throws {
        TestPause.wait(on: pauses.before)
        guard signals.beginCommit() else { throw WorkspaceJanitor.InterruptedError() }
        TestPause.wait(on: pauses.after)
        for item in items {
            if item.isDirectory {
                try FileSystem.replaceDirectory(at: item.destination, with: item.temporary)
            } else {
                guard rename(item.temporary, item.destination) == 0 else {
                    throw SystemError("rename to", path: item.destination, errno: errno)
                }
            }
        }
    }

    deinit {
        for destination in destinations.values {
            FileSystem.removeTree(destination.staging)
            signals.forget(destination.staging)
            // Forgotten first: once unlinked, the name may be another build's lock.
            signals.forget(destination.lockFile)
            unlink(destination.lockFile)
            close(destination.lock)
        }
    }
}

/// Checks every destination before anything is built: it must not be (or hold) an input of the build, two
/// outputs must not share one, and what is there already must be something a build may replace.
public struct OutputDestinationCheck {
    /// Paths the build reads: the context, the Dockerfile, named contexts, secret files, ssh sockets, the lock
    /// file, the signing key, the state and work directories.
    var inputs: [String]

    func check(_ options: BuildOptions) throws {
        var seen: [String: String] = [:]
        func claim(_ path: String, _ argument: String, _ value: String) throws {
            let absolute = FileSystem.resolvedPath(path)
            if let other = seen[absolute] {
                throw ArgumentError(argument: argument, value: value, reason: "the same destination as \(other)")
            }
            seen[absolute] = "\(argument) \(value)"
            for input in inputs.map(FileSystem.resolvedPath) {
                if input == absolute || input.hasPrefix(absolute == "/" ? "/" : absolute + "/") {
                    throw ArgumentError(
                        argument: argument, value: value,
                        reason: "it is, or holds, \(input), which the build reads; choose another destination")
                }
            }
            let parent = FileSystem.parentDirectory(of: absolute)
            if FileSystem.exists(parent) && !FileSystem.isDirectory(parent) {
                throw ArgumentError(argument: argument, value: value, reason: "\(parent) is not a directory")
            }
        }
        for output in options.outputs {
            let value = output.destination
            try claim(value, "--output", value)
            let path = FileSystem.absolute(value)
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            let isDirectory = (info.st_mode & S_IFMT) == S_IFDIR
            switch output {
            case .ociArchive, .dockerArchive:
                guard (info.st_mode & S_IFMT) == S_IFREG else {
                    throw ArgumentError(
                        argument: "--output", value: value, reason: "exists and is not a regular file")
                }
            case .ociDirectory:
                guard isDirectory else {
                    throw ArgumentError(argument: "--output", value: value, reason: "exists and is not a directory")
                }
                guard FileSystem.exists(path + "/oci-layout") || FileSystem.directoryByteNames(path)?.isEmpty == true
                else {
                    throw ArgumentError(
                        argument: "--output", value: value,
                        reason: "exists and is neither empty nor an OCI image layout; it would be replaced whole")
                }
            case .local:
                guard isDirectory else {
                    throw ArgumentError(argument: "--output", value: value, reason: "exists and is not a directory")
                }
                guard Self.hasLocalMarker(path) || FileSystem.directoryByteNames(path)?.isEmpty == true else {
                    throw ArgumentError(
                        argument: "--output", value: value,
                        reason: "exists, is not empty and was not written by hermetic; it would be replaced whole")
                }
            }
        }
        for spec in options.cacheTo {
            guard let value = spec.destination else { continue }
            try claim(value, "--cache-to", value)
            let path = FileSystem.absolute(value)
            guard FileSystem.exists(path) else { continue }
            // Replaced whole, as an OCI layout output is: only a layout, or nothing, may be there.
            guard FileSystem.isDirectory(path),
                FileSystem.exists(path + "/oci-layout") || FileSystem.directoryByteNames(path)?.isEmpty == true
            else {
                throw ArgumentError(
                    argument: "--cache-to", value: value,
                    reason:
                        "exists and is neither an empty directory nor an OCI image layout; it would be replaced whole")
            }
        }
        // A cache pushed under the tag of an image this build pushes would take the image's place there.
        for spec in options.cacheTo {
            guard case .registry(let cache) = spec.location,
                options.pushTargets.contains(where: { $0.name == cache.name && ($0.tag ?? "latest") == cache.tag })
            else { continue }
            throw ArgumentError(
                argument: "--cache-to", value: spec.name,
                reason: "the same tag as an image this build pushes; give the cache its own tag (e.g. :buildcache)")
        }
        for (argument, value) in [
            ("--iidfile", options.iidFile), ("--metadata-file", options.metadataFile),
            ("--attest-file", options.attestFile),
        ] {
            guard let value else { continue }
            try claim(value, argument, value)
            let path = FileSystem.absolute(value)
            if FileSystem.isDirectory(path) {
                throw ArgumentError(argument: argument, value: value, reason: "is a directory")
            }
            if !FileSystem.isDirectory(FileSystem.parentDirectory(of: path)) {
                throw ArgumentError(
                    argument: argument, value: value,
                    reason: "its directory \(FileSystem.parentDirectory(of: path)) does not exist")
            }
        }
    }

    /// Best effort: where user xattrs are not supported, a later build asks for an empty destination.
    static func setLocalMarker(_ path: String) {
        var marker = UInt8(ascii: "1")
        _ = lsetxattr(path, PendingOutputs.localMarker, &marker, 1, 0)
    }

    public static func hasLocalMarker(_ path: String) -> Bool {
        var byte: UInt8 = 0
        return lgetxattr(path, PendingOutputs.localMarker, &byte, 1) >= 0
    }
}
