import Foundation
import Hermetic

/// A directory removed when the value is released.
public final class TemporaryDirectory {
    public let path: String
    public init(prefix: String) throws {
        path = try FileSystem.makeTemporaryDirectory(in: "/tmp", prefix: prefix)
    }
    deinit { FileSystem.removeTree(path) }
}

/// Copies a test context the way a fresh checkout would look elsewhere: same names and contents, modes
/// normalized as git stores them (0755 if executable, else 0644; directories 0755), symlinks as symlinks,
/// but in a chosen creation order and with a chosen mtime on everything.
public enum ContextCopier {
    public static func copy(from source: String, to destination: String, reverseOrder: Bool, mtime: Int) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: destination, withIntermediateDirectories: true)
        var names = try fm.contentsOfDirectory(atPath: source).sorted()
        if reverseOrder { names.reverse() }
        for name in names {
            let from = source + "/" + name
            let to = destination + "/" + name
            let attributes = try fm.attributesOfItem(atPath: from)
            let type = attributes[.type] as? FileAttributeType
            if type == .typeSymbolicLink {
                try fm.createSymbolicLink(atPath: to, withDestinationPath: fm.destinationOfSymbolicLink(atPath: from))
                continue
            }
            if type == .typeDirectory {
                try copy(from: from, to: to, reverseOrder: reverseOrder, mtime: mtime)
                chmod(to, 0o755)
            } else {
                try fm.copyItem(atPath: from, toPath: to)
                let executable = ((attributes[.posixPermissions] as? Int) ?? 0) & 0o100 != 0
                chmod(to, executable ? 0o755 : 0o644)
            }
            var times = [timespec(tv_sec: mtime, tv_nsec: 0), timespec(tv_sec: mtime, tv_nsec: 0)]
            utimensat(AT_FDCWD, to, &times, AT_SYMLINK_NOFOLLOW)
        }
    }
}

/// Outside verifiers of our output. A missing tool is a test failure, never a skip.
public enum ExternalTools {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public static func require(_ name: String) throws -> String {
        guard let path = HermeticProcess.tool(name) else {
            throw Failure(description: "\(name) is not installed (scripts/install-deps installs it)")
        }
        return path
    }

    /// `skopeo inspect` and `umoci stat`-free check: skopeo must read the layout's image.
    /// `tag`: the image's ref name, which skopeo needs when index.json lists referrers beside the image.
    public static func checkLayout(_ layout: String, tag: String? = nil) throws {
        let skopeo = try require("skopeo")
        let reference = "oci:\(layout)" + (tag.map { ":" + $0 } ?? "")
        let outcome = try HermeticProcess.run(skopeo, ["inspect", "--raw", reference])
        guard outcome.status == 0 else {
            throw Failure(description: "skopeo inspect \(reference) failed: \(outcome.standardError)")
        }
    }
}
