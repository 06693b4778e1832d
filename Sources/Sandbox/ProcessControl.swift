internal import CSandbox

#if canImport(Glibc)
    import Glibc
#endif

/// Process-wide controls for a builder ending on a signal, and the renames that put outputs in place.
public enum ProcessControl {
    /// Stops every other thread of this process for good (see `hermetic_park_other_threads`), so that a
    /// signal handler's cleanup races with nothing; the caller must then end the process. SIGPROF, because
    /// it is one of the few signals libdispatch's worker threads (where Swift tasks run) leave unblocked.
    public static func parkOtherThreads() {
        _ = hermetic_park_other_threads(SIGPROF, 2000)
    }

    /// A safety net for a cleanup that runs with every other thread stopped: should it wait forever (a lock
    /// a stopped thread held), SIGALRM ends the process after `seconds` (its default action; unblocked here,
    /// as the stopped threads and libdispatch's workers block it). The next build removes what was left.
    public static func endProcessIfStuck(afterSeconds seconds: UInt32) {
        signal(SIGALRM, SIG_DFL)
        var alarmOnly = sigset_t()
        sigemptyset(&alarmOnly)
        sigaddset(&alarmOnly, SIGALRM)
        pthread_sigmask(SIG_UNBLOCK, &alarmOnly, nil)
        alarm(seconds)
    }

    /// SIGKILLs every child of this process and reaps it. A step's sandbox child is its PID namespace's
    /// init: once it is reaped nothing of the step runs and its mount namespace is gone.
    public static func killAndReapChildren() {
        let me = getpid()
        guard let directory = opendir("/proc") else { return }
        var children: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard let pid = Int32(name), let parent = parentProcess(of: pid), parent == me else { continue }
            children.append(pid)
        }
        closedir(directory)
        for pid in children { kill(pid, SIGKILL) }
        for pid in children {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
    }

    /// Field 4 of /proc/PID/stat (after the parenthesised command, which may hold anything).
    static func parentProcess(of pid: Int32) -> Int32? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let count = read(fd, &buffer, buffer.count)
        guard count > 0, let close = buffer[..<count].lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = buffer[(close + 1)..<count].split(separator: UInt8(ascii: " "))
        guard fields.count > 1 else { return nil }
        return Int32(String(decoding: fields[1], as: UTF8.self))
    }

    /// How `rename` replaces an existing destination.
    public enum RenameMode: UInt32 {
        /// Fails with EEXIST when the destination exists.
        case noReplace = 1
        /// Swaps the two names atomically; both must exist.
        case exchange = 2
    }

    /// renameat2(2); false with errno set when it failed (EINVAL: the filesystem does not support `mode`).
    public static func rename(_ source: String, _ destination: String, _ mode: RenameMode) -> Bool {
        hermetic_renameat2(AT_FDCWD, source, AT_FDCWD, destination, mode.rawValue) == 0
    }
}
