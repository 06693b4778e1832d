// For <sys/xattr.h>, which Swift's Glibc module does not carry.
internal import CArchive

#if canImport(Glibc)
    import Glibc
#endif

/// A build's outputs (layouts, archives, local trees, the iid, metadata and attestation files), each
/// complete under a temporary name beside its destination, put in place together only once every one
/// of them was written. A build that fails before that leaves none of them, and no temporary either.
final class PendingOutputs {
    private struct Item {
        var temporary: String
        var destination: String
        var isDirectory: Bool
    }
    private var items: [Item] = []
    private var committed = 0

    /// Extended attribute on the root of a `type=local` tree we wrote, so a later build may replace it.
    static let localMarker = "user.dev.hermetic.output"

    func addDirectory(_ temporary: String, destination: String) {
        items.append(Item(temporary: temporary, destination: destination, isDirectory: true))
    }

    func addFile(_ temporary: String, destination: String) {
        items.append(Item(temporary: temporary, destination: destination, isDirectory: false))
    }

    /// Writes `bytes` to a temporary file beside `destination` (mode 0644, whatever the umask).
    func addFile(_ bytes: [UInt8], destination: String) throws {
        let temporary = try FileSystem.writeTemporary(bytes, beside: destination)
        addFile(temporary, destination: destination)
    }

    func commit() throws {
        while committed < items.count {
            let item = items[committed]
            if item.isDirectory {
                try FileSystem.replaceDirectory(at: item.destination, with: item.temporary)
            } else {
                guard rename(item.temporary, item.destination) == 0 else {
                    throw SystemError("rename to", path: item.destination, errno: errno)
                }
            }
            committed += 1
        }
    }

    deinit {
        for item in items[committed...] {
            if item.isDirectory { FileSystem.removeTree(item.temporary) } else { unlink(item.temporary) }
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
