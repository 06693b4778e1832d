import Dispatch
import Foundation
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
        // Absolute: the sandbox takes only absolute paths, and a relative TMPDIR means the current directory's.
        FileSystem.absolute(environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp")
    }

    /// The signal handlers of one build, for as long as the caller keeps it.
    public final class SignalGuard: @unchecked Sendable {
        private let lock = NSLock()
        private var signalled = false
        private var sources: [any DispatchSourceSignal] = []

        init() {}

        fileprivate func install(workspaceParent parent: String) {
            let queue = DispatchQueue(label: "hermetic.signals")
            sources = [SIGINT, SIGTERM, SIGHUP].map { signalNumber in
                signal(signalNumber, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
                source.setEventHandler { [self] in
                    // First, so that a build failing because its step was just killed waits in settle()
                    // for this exit code instead of reporting that failure.
                    lock.withLock { signalled = true }
                    cleanUp(owner: getpid(), under: parent)
                    _exit(128 + signalNumber)
                }
                source.resume()
                return source
            }
        }

        /// Call when the build has ended, before reporting its result: if a signal is being handled, waits
        /// for the handler to end the process.
        public func settle() {
            guard lock.withLock({ signalled }) else { return }
            while true { pause() }
        }

        deinit { sources.forEach { $0.cancel() } }
    }

    /// Installs the signal handlers for this process's workspaces under `parent`.
    public static func installSignalHandlers(workspaceParent parent: String) -> SignalGuard {
        let guardian = SignalGuard()
        guardian.install(workspaceParent: parent)
        return guardian
    }

    /// Removes what builders that are no longer running left under `parent`. A live builder holds an
    /// exclusive lock on its workspace's `.owner` file (released by the kernel when it dies, in whatever PID
    /// namespace it ran); a workspace without one (made in the instant before it was locked) is judged by
    /// its builder's process id.
    public static func removeStale(under parent: String) {
        var owners = Set<Int32>()
        for name in FileSystem.directoryNames(parent) ?? [] {
            guard let pid = owner(ofWorkspace: name), pid != getpid() else { continue }
            let stale: Bool
            let lockFile = parent + "/" + name + "/" + ownerFileName
            let fd = open(lockFile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
            if fd >= 0 {
                stale = flock(fd, LOCK_EX | LOCK_NB) == 0
                close(fd)
            } else {
                stale = kill(pid, 0) != 0 && errno == ESRCH
            }
            if stale { owners.insert(pid) }
        }
        for pid in owners { cleanUp(owner: pid, under: parent) }
        StepCgroups.removeStale()
    }

    static let ownerFileName = ".owner"

    /// Marks `workspace` as in use for as long as the returned descriptor is open (close it when done).
    public static func lockWorkspace(_ workspace: String) throws -> Int32 {
        let path = workspace + "/" + ownerFileName
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw SystemError("create", path: path, errno: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            close(fd)
            throw SystemError("lock", path: path, errno: code)
        }
        return fd
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
