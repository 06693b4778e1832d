import Dispatch
import Sandbox

#if canImport(Glibc)
    import Glibc
#endif

/// Keeps a build's scratch space from outliving it. A workspace is named `hermetic-build-PID-…` after
/// the builder that owns it; it holds unpacked layers and, while a step runs, the step's secret files.
/// - On SIGINT, SIGTERM or SIGHUP the builder kills its steps, unmounts and removes its workspaces and
///   step cgroups, then exits with 128 + the signal (the `defer`s of a killed process never run).
/// - A builder that was killed outright (SIGKILL, a crash) leaves them behind; the next build removes the
///   workspaces and cgroups of builders that no longer run.
public enum WorkspaceJanitor {
    public static func workspacePrefix(pid: Int32 = getpid()) -> String { "hermetic-build-\(pid)-" }

    /// Where workspaces go: `$TMPDIR`, else /tmp.
    public static func workspaceParent(_ environment: [String: String]) -> String {
        environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    }

    /// Installs the signal handlers for this process's workspaces under `parent`; they act as long as the
    /// caller keeps the returned sources.
    public static func installSignalHandlers(workspaceParent parent: String) -> [any DispatchSourceSignal] {
        let queue = DispatchQueue(label: "hermetic.signals")
        return [SIGINT, SIGTERM, SIGHUP].map { signalNumber in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler {
                cleanUp(owner: getpid(), under: parent)
                _exit(128 + signalNumber)
            }
            source.resume()
            return source
        }
    }

    /// Removes what builders that are no longer running left under `parent`.
    public static func removeStale(under parent: String) {
        var owners = Set<Int32>()
        for name in FileSystem.directoryNames(parent) ?? [] {
            if let pid = owner(ofWorkspace: name), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH {
                owners.insert(pid)
            }
        }
        for pid in owners { cleanUp(owner: pid, under: parent) }
        StepCgroups.removeStale()
    }

    static func owner(ofWorkspace name: String) -> Int32? {
        guard name.hasPrefix("hermetic-build-") else { return nil }
        let rest = name.dropFirst("hermetic-build-".count)
        guard let dash = rest.firstIndex(of: "-") else { return nil }
        return Int32(rest[..<dash])
    }

    /// Kills `owner`'s steps, then unmounts and removes its workspaces and step cgroups.
    static func cleanUp(owner: Int32, under parent: String) {
        StepCgroups.killAndRemove(owner: owner)
        let prefix = workspacePrefix(pid: owner)
        for name in FileSystem.directoryNames(parent) ?? [] where name.hasPrefix(prefix) {
            let workspace = parent + "/" + name
            // Deepest first: a step's scratch tmpfs and anything mounted below it.
            for mountpoint in mountpoints(under: workspace).sorted(by: { $0.count > $1.count }) {
                umount2(mountpoint, 2)  // MNT_DETACH
            }
            FileSystem.removeTree(workspace)
        }
    }

    /// Mount points at or below `directory`, from /proc/self/mountinfo (field 5, octal escapes decoded).
    static func mountpoints(under directory: String) -> [String] {
        guard let bytes = try? FileSystem.readFile("/proc/self/mountinfo", limit: 16 << 20) else { return [] }
        var result: [String] = []
        for line in bytes.split(separator: 0x0a) {
            let fields = line.split(separator: 0x20, omittingEmptySubsequences: false)
            guard fields.count > 4 else { continue }
            let path = decodeOctalEscapes(Array(fields[4]))
            if path == directory || path.hasPrefix(directory + "/") { result.append(path) }
        }
        return result
    }

    static func decodeOctalEscapes(_ field: [UInt8]) -> String {
        var out: [UInt8] = []
        var index = 0
        while index < field.count {
            if field[index] == UInt8(ascii: "\\"), index + 3 < field.count,
                let value = UInt8(String(decoding: field[(index + 1)...(index + 3)], as: UTF8.self), radix: 8)
            {
                out.append(value)
                index += 4
            } else {
                out.append(field[index])
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
