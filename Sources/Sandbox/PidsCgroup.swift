#if canImport(Glibc)
    import Glibc
#endif

/// A per-step cgroup with the pids controller: cgroup v2 when its pids controller is available
/// (`/sys/fs/cgroup` unified, or the hybrid `/sys/fs/cgroup/unified`), else the cgroup v1 pids
/// hierarchy. RLIMIT_NPROC is not a substitute: it counts per user across the host and is not enforced
/// for root, the usual RUN user, so without a pids controller a limited step is refused.
///
/// The child writes itself into `procsFile` before anything else, so every process of the step is
/// counted. The cgroup is removed after the step's PID namespace is gone.
final class PidsCgroup {
    let directory: String
    var procsFile: String { directory + "/cgroup.procs" }

    private init(directory: String) { self.directory = directory }

    static func create(limit: Int) throws(SandboxError) -> PidsCgroup {
        guard limit > 0 else { throw SandboxError.invalidPlan(field: "pidsLimit", reason: "must be positive") }
        let parent = try parentDirectory()
        let name = "hermetic-step-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let directory = parent + "/" + name
        guard mkdir(directory, 0o755) == 0 else {
            throw SandboxError.system(call: "mkdir", path: directory, errno: errno)
        }
        let group = PidsCgroup(directory: directory)
        try writeFile(directory + "/pids.max", "\(limit)")
        return group
    }

    /// How many forks the limit refused (the `max` line of pids.events).
    func refusedForks() -> Int {
        guard let text = readSmallFile(directory + "/pids.events") else { return 0 }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 2, fields[0] == "max" { return Int(fields[1]) ?? 0 }
        }
        return 0
    }

    deinit {
        // The PID namespace is gone when this runs; rmdir can still race the kernel's last exit
        // accounting for a moment.
        for _ in 0..<50 {
            if rmdir(directory) == 0 || errno == ENOENT { return }
            usleep(10_000)
        }
    }

    private static func parentDirectory() throws(SandboxError) -> String {
        let memberships = readSmallFile("/proc/self/cgroup") ?? ""
        var v1PidsPath: String?
        var v2Path: String?
        for line in memberships.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if fields[0] == "0" && fields[1].isEmpty { v2Path = String(fields[2]) }
            if fields[1].split(separator: ",").contains("pids") { v1PidsPath = String(fields[2]) }
        }
        let mounts = CgroupMounts(mountinfo: readSmallFile("/proc/self/mountinfo") ?? "")
        for mount in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            guard let v2Path, let controllers = readSmallFile(mount + "/cgroup.controllers"),
                controllers.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("pids")
            else { continue }
            let parent = mounts.directory(of: v2Path, under: mount)
            // Children only get the controller when the parent hands it down.
            let subtree = readSmallFile(parent + "/cgroup.subtree_control") ?? ""
            if !subtree.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("pids") {
                try writeFile(parent + "/cgroup.subtree_control", "+pids")
            }
            return parent
        }
        if let v1PidsPath, access("/sys/fs/cgroup/pids/cgroup.procs", F_OK) == 0 {
            return mounts.directory(of: v1PidsPath, under: "/sys/fs/cgroup/pids")
        }
        throw SandboxError.pidsLimitUnavailable(
            reason: "no cgroup v2 pids controller under /sys/fs/cgroup and no cgroup v1 pids hierarchy")
    }
}

/// Step cgroups by owner (`hermetic-step-PID-…`), for a builder cleaning up after itself on a signal or
/// after a builder that was killed.
public enum StepCgroups {
    /// Kills every process in `owner`'s step cgroups, then removes them.
    public static func killAndRemove(owner: Int32) {
        for directory in directories(owner: owner) {
            for line in (readSmallFile(directory + "/cgroup.procs") ?? "").split(separator: "\n") {
                if let pid = Int32(line), pid > 0 { kill(pid, SIGKILL) }
            }
            for _ in 0..<50 {
                if rmdir(directory) == 0 || errno == ENOENT { break }
                usleep(10_000)
            }
        }
    }

    /// Removes the step cgroups of builders that no longer run.
    public static func removeStale() {
        for directory in directories(owner: nil) {
            let name = directory.split(separator: "/").last.map(String.init) ?? ""
            let pid = name.split(separator: "-").dropFirst(2).first.flatMap { Int32($0) }
            if let pid, pid != getpid(), kill(pid, 0) != 0, errno == ESRCH { killAndRemove(owner: pid) }
        }
    }

    /// The candidate parents PidsCgroup may use, read only (nothing is enabled here).
    static func directories(owner: Int32?) -> [String] {
        let memberships = readSmallFile("/proc/self/cgroup") ?? ""
        let mounts = CgroupMounts(mountinfo: readSmallFile("/proc/self/mountinfo") ?? "")
        var parents: [String] = []
        for line in memberships.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let path = String(fields[2])
            if fields[0] == "0" && fields[1].isEmpty {
                parents += ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].map { mounts.directory(of: path, under: $0) }
            }
            if fields[1].split(separator: ",").contains("pids") {
                parents.append(mounts.directory(of: path, under: "/sys/fs/cgroup/pids"))
            }
        }
        let prefix = owner.map { "hermetic-step-\($0)-" } ?? "hermetic-step-"
        var result: [String] = []
        for parent in parents {
            guard let directory = opendir(parent) else { continue }
            defer { closedir(directory) }
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name.hasPrefix(prefix) { result.append(parent + "/" + name) }
            }
        }
        return result
    }
}

/// Where a cgroup of /proc/self/cgroup is in the mounted hierarchy. /proc/self/cgroup names it from the
/// hierarchy's root, while a container's /sys/fs/cgroup may be mounted from deeper down (its mountinfo
/// root, e.g. `/libpod_parent/libpod-…` when the container shares the host's cgroup namespace).
struct CgroupMounts {
    /// Mountpoint → the hierarchy path mounted there.
    var roots: [String: String] = [:]

    init(mountinfo: String) {
        for line in mountinfo.split(separator: "\n") {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT … (octal escapes such as \040 never occur in these paths)
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { continue }
            roots[String(fields[4])] = String(fields[3])
        }
    }

    func directory(of path: String, under mountPoint: String) -> String {
        var relative = Substring(path)
        if let root = roots[mountPoint], root != "/", path == root || path.hasPrefix(root + "/") {
            relative = relative.dropFirst(root.count)
        }
        return mountPoint + (relative == "/" ? "" : relative)
    }
}

func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 65536)
    var filled = 0
    while filled < buffer.count {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        filled += count
    }
    return String(decoding: buffer[0..<filled], as: UTF8.self)
}

func writeFile(_ path: String, _ text: String, mode: mode_t = 0o644, create: Bool = false) throws(SandboxError) {
    let flags = O_WRONLY | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT | O_TRUNC : 0)
    let fd = open(path, flags, mode)
    guard fd >= 0 else { throw SandboxError.system(call: "open", path: path, errno: errno) }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    var written = 0
    while written < bytes.count {
        let count = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { throw SandboxError.system(call: "write", path: path, errno: errno) }
        written += count
    }
}
