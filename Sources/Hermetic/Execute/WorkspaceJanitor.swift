import Dispatch
import Foundation
import Sandbox

#if canImport(Glibc)
    import Glibc
#endif

/// Keeps a build's scratch space from outliving it. A workspace is named `hermetic-build-PID-…` after
/// the builder that made it; it holds unpacked layers and, while a step runs, the step's secret files.
/// - A workspace is locked from the moment it has that name: it is made under a name no janitor looks at
///   (`.hermetic-new-…`), its `.owner` file is created and locked (`flock`, exclusive), and only then is it
///   renamed into place. The kernel releases the lock when its builder dies, in whatever PID namespace.
/// - On SIGINT, SIGTERM or SIGHUP the builder stops its other threads where they are, kills its steps,
///   unmounts and removes its workspaces and staged outputs, then exits with 128 + the signal (the
///   `defer`s of a killed process never run).
/// - A builder that was killed outright (SIGKILL, a crash) leaves them behind; the next build removes a
///   workspace whose `.owner` it can lock without waiting, and nothing it cannot prove dead that way (a
///   staging name an hour old is the one exception: `removeStaleStaging`).
public enum WorkspaceJanitor {
    public static func workspacePrefix(pid: Int32 = getpid()) -> String { "hermetic-build-\(pid)-" }

    /// Where workspaces go: `$TMPDIR`, else /tmp.
    public static func workspaceParent(_ environment: [String: String]) -> String {
        // Absolute: the sandbox takes only absolute paths, and a relative TMPDIR means the current directory's.
        FileSystem.absolute(environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp")
    }

    /// A workspace and the descriptor that holds its lock (close it after removing the workspace).
    public struct Workspace: Sendable {
        public var path: String
        public var lock: Int32
    }

    /// Makes a workspace under `parent` that is locked before any janitor can see it. `pause` (tests
    /// only): a FIFO read to its end between creating `.owner` and locking it, the moment a janitor used to
    /// take a live workspace for a dead one.
    public static func createWorkspace(in parent: String, pause: String? = nil) throws -> Workspace {
        let newPrefix = ".hermetic-new-"
        let staging = try FileSystem.makeTemporaryDirectory(in: parent, prefix: newPrefix)
        let lock: Int32
        do {
            lock = try lockWorkspace(staging, pause: pause)
        } catch {
            FileSystem.removeTree(staging)
            throw error
        }
        let path = parent + "/" + workspacePrefix() + staging.dropFirst(parent.count + 1 + newPrefix.count)
        guard FileSystem.renameNoReplace(staging, to: path) else {
            let code = errno
            close(lock)
            FileSystem.removeTree(staging)
            throw SystemError("rename into place", path: path, errno: code)
        }
        return Workspace(path: path, lock: lock)
    }

    /// A build stopped by a signal before it could make something it needed.
    public struct InterruptedError: HermeticError {
        public var description: String { "the build was interrupted by a signal" }
    }

    /// The signal handlers of one build, for as long as the caller keeps it, and what the build has on
    /// disk that a signal must remove (workspaces, staged outputs). A guard that was never installed (a
    /// build run from tests) keeps the same records and handles nothing.
    public final class SignalGuard: @unchecked Sendable {
        private let lock = NSLock()
        /// The signal being handled, once one is.
        private var signalled: Int32?
        /// Set at the commit point: from then on a signal waits for the build to finish (exit 0).
        private var committing = false
        private var temporaries: [String] = []
        private var sources: [any DispatchSourceSignal] = []

        public init() {}

        fileprivate func install() {
            let queue = DispatchQueue(label: "hermetic.signals")
            sources = [SIGINT, SIGTERM, SIGHUP].map { signalNumber in
                signal(signalNumber, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
                source.setEventHandler { [self] in handle(signalNumber) }
                source.resume()
                return source
            }
        }

        private func handle(_ signalNumber: Int32) {
            // Under the lock: whatever `creating` made is recorded by now, and nothing more will be.
            let paths: [String]? = lock.withLock {
                if committing { return nil }
                signalled = signalled ?? signalNumber
                return temporaries
            }
            guard let paths else { return }
            // Nothing else of this process moves from here on: no step is started, no file written, no
            // workspace removed halfway by the build's own error path while this removes it too.
            ProcessControl.endProcessIfStuck(afterSeconds: 60)
            ProcessControl.parkOtherThreads()
            ProcessControl.killAndReapChildren()
            StepCgroups.killAndRemove(owner: getpid())
            for path in paths.reversed() { WorkspaceJanitor.remove(path) }
            _exit(128 + signalNumber)
        }

        /// Runs `create`, which makes something on disk at the path `path` gives, and records that path for
        /// removal on a signal: a signal sees it recorded, or comes first and then `create` does not run.
        public func creating<T>(_ create: () throws -> T, path: (T) -> String) throws -> T {
            try lock.withLock {
                guard signalled == nil else { throw InterruptedError() }
                let made = try create()
                temporaries.append(path(made))
                return made
            }
        }

        /// `path` was removed, or put in place: a signal leaves it alone.
        public func forget(_ path: String) {
            lock.withLock { temporaries.removeAll { $0 == path } }
        }

        /// The commit point of the build's outputs. False when a signal came first (then nothing may be put
        /// in place); once true, a signal no longer interrupts the build, which ends with exit 0.
        public func beginCommit() -> Bool {
            lock.withLock {
                guard signalled == nil else { return false }
                committing = true
                return true
            }
        }

        /// Call when the build has ended, before reporting its result: if a signal is being handled, waits
        /// for the handler to end the process.
        public func settle() {
            guard lock.withLock({ signalled != nil }) else { return }
            while true { pause() }
        }

        deinit { sources.forEach { $0.cancel() } }
    }

    /// Installs the signal handlers for this process's build.
    public static func installSignalHandlers() -> SignalGuard {
        let guardian = SignalGuard()
        guardian.install()
        return guardian
    }

    /// Removes what builders that are no longer running left under `parent`: a workspace whose `.owner` can
    /// be locked without waiting (its builder is dead: a live one holds that lock from before the
    /// workspace had its name). A workspace without `.owner` is left alone, as nothing proves it dead.
    public static func removeStale(under parent: String) {
        for name in FileSystem.directoryNames(parent) ?? [] where name.hasPrefix("hermetic-build-") {
            let workspace = parent + "/" + name
            let lockFile = workspace + "/" + ownerFileName
            let fd = open(lockFile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { continue }
            // Still the same file: another janitor may have removed this workspace since it was opened.
            var held = stat()
            var current = stat()
            guard fstat(fd, &held) == 0, lstat(lockFile, &current) == 0, held.st_ino == current.st_ino,
                held.st_dev == current.st_dev
            else { continue }
            remove(workspace)
        }
        removeStaleStaging(under: parent)
        StepCgroups.removeStale()
    }

    /// A workspace still under its staging name (`.hermetic-new-…`) belongs to a builder killed in the
    /// microseconds before it was renamed into place, or to one being set up now. Only age tells them
    /// apart without a race: one untouched for an hour whose `.owner`, if any, can be locked is removed.
    static func removeStaleStaging(under parent: String, now: Int = time(nil)) {
        for name in FileSystem.directoryNames(parent) ?? [] where name.hasPrefix(".hermetic-new-") {
            let staging = parent + "/" + name
            var info = stat()
            guard lstat(staging, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR,
                now - info.st_mtim.tv_sec > 3600
            else { continue }
            let fd = open(staging + "/" + ownerFileName, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
            if fd >= 0 {
                defer { close(fd) }
                guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { continue }
                remove(staging)
            } else {
                remove(staging)
            }
        }
    }

    static let ownerFileName = ".owner"

    /// Marks `workspace` as in use for as long as the returned descriptor is open (close it when done).
    public static func lockWorkspace(_ workspace: String, pause: String? = nil) throws -> Int32 {
        let path = workspace + "/" + ownerFileName
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw SystemError("create", path: path, errno: errno) }
        TestPause.wait(on: pause)
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            close(fd)
            throw SystemError("lock", path: path, errno: code)
        }
        return fd
    }

    /// Unmounts what is mounted at or below `path` (deepest first: a step's scratch tmpfs and anything
    /// mounted below it), then removes it.
    static func remove(_ path: String) {
        for mountpoint in mountpoints(under: path).sorted(by: { $0.count > $1.count }) {
            umount2(mountpoint, 2)  // MNT_DETACH
        }
        FileSystem.removeTree(path)
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
