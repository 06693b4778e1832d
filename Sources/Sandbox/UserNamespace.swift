internal import CSandbox

#if canImport(Glibc)
    import Glibc
#endif

/// Rootless mode: a builder that is not root runs again, as uid 0 of a new user namespace (with its own
/// mount namespace), where it may mount, chown to mapped ids and make the steps' namespaces. Uid 0 there
/// is the invoking user on the host; ids 1… map to the user's subordinate range from /etc/subuid and
/// /etc/subgid (written by the setuid helpers newuidmap/newgidmap, as podman and BuildKit do). Without a
/// range, only uid/gid 0 is mapped (written by the builder itself, setgroups denied), which is enough
/// for steps that run as root.
public enum UserNamespace {
    /// One line of a uid_map or gid_map: `count` ids from `inside` map to host ids from `outside`.
    public struct IDRange: Sendable, Equatable {
        public var inside: UInt32
        public var outside: UInt32
        public var count: UInt32

        public init(inside: UInt32, outside: UInt32, count: UInt32) {
            self.inside = inside
            self.outside = outside
            self.count = count
        }

        public func contains(_ id: UInt32) -> Bool { id >= inside && UInt64(id) < UInt64(inside) + UInt64(count) }
    }

    /// Whether this process runs in a user namespace other than the host's: its uid_map is not the
    /// identity over every id. Read once: a process never changes its user namespace here, and the upper
    /// directory's walk asks for every directory.
    public static let isNested: Bool = mappedIDs("uid_map") != [IDRange(inside: 0, outside: 0, count: UInt32.max)]

    /// The xattr prefix of overlayfs's markers. `trusted.*` needs CAP_SYS_ADMIN in the host's namespace,
    /// so in a user namespace the overlay is mounted with `userxattr` and uses `user.overlay.*`.
    public static let overlayXattrPrefix: String = isNested ? "user.overlay." : "trusted.overlay."

    /// Whether setgroups(2) is allowed here ("deny" is written before an unprivileged gid_map).
    static let allowsSetgroups: Bool = readSmallFile("/proc/self/setgroups")?.hasPrefix("deny") != true

    /// The ranges of this namespace's ids that map to host ids (`uid_map` or `gid_map`).
    public static func mappedIDs(_ file: String) -> [IDRange] {
        parseMap(readSmallFile("/proc/self/" + file) ?? "")
    }

    static func parseMap(_ text: String) -> [IDRange] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count == 3, let inside = UInt32(fields[0]), let outside = UInt32(fields[1]),
                let count = UInt32(fields[2])
            else { return nil }
            return IDRange(inside: inside, outside: outside, count: count)
        }
    }

    /// The subordinate range of /etc/subuid or /etc/subgid (`NAME-or-ID:START:COUNT` lines) for the user
    /// named `name` or numbered `id`: the first line that names it.
    public static func subordinateRange(in text: String, name: String?, id: UInt32) -> (start: UInt32, count: UInt32)? {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count == 3,
                fields[0] == Substring(String(id)) || (name.map { fields[0] == Substring($0) } ?? false),
                let start = UInt32(fields[1]), let count = UInt32(fields[2]), count > 0,
                UInt64(start) + UInt64(count) <= UInt64(UInt32.max)
            else { continue }
            return (start, count)
        }
        return nil
    }

    /// Why the builder could not be run in a user namespace. One line.
    public struct LaunchError: Error, Sendable, CustomStringConvertible {
        public var reason: String
        public var description: String { "rootless mode: \(reason)" }
    }

    /// Runs `executable` with `arguments` and `environment` as uid 0 of a new user and mount namespace and
    /// waits for it, forwarding SIGINT, SIGTERM, SIGHUP and SIGQUIT. Returns its wait status.
    /// - Parameter helpers: where newuidmap and newgidmap are looked for.
    public static func run(
        executable: String, arguments: [String], environment: [String],
        helpers: [String] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
    ) throws(LaunchError) -> Int32 {
        let uid = getuid()
        let gid = getgid()
        let name = userName(uid)
        let subuids = readSmallFile("/etc/subuid").flatMap { subordinateRange(in: $0, name: name, id: uid) }
        let subgids = readSmallFile("/etc/subgid").flatMap { subordinateRange(in: $0, name: name, id: uid) }
        func helper(_ tool: String) -> String? {
            helpers.map { $0 + "/" + tool }.first { access($0, X_OK) == 0 }
        }

        var releaseFD: Int32 = -1
        let arena = CArena()
        // The arena owns the strings until the child has them (no earlier release at the last use).
        let pid = withExtendedLifetime(arena) {
            hermetic_userns_spawn(
                arena.string(executable), arena.stringArray([executable] + arguments.dropFirst()),
                arena.stringArray(environment), &releaseFD)
        }
        guard pid > 0 else {
            throw LaunchError(
                reason:
                    "cannot create a user namespace (\(errnoText(-pid))): run as root, or allow unprivileged user namespaces (sysctl user.max_user_namespaces)"
            )
        }
        do {
            if let (start, count) = subuids, let tool = helper("newuidmap") {
                try runHelper(tool, ["\(pid)", "0", "\(uid)", "1", "1", "\(start)", "\(count)"])
            } else {
                try writeMap(pid, "uid_map", "0 \(uid) 1\n")
            }
            if let (start, count) = subgids, let tool = helper("newgidmap") {
                try runHelper(tool, ["\(pid)", "0", "\(gid)", "1", "1", "\(start)", "\(count)"])
            } else {
                try writeMap(pid, "setgroups", "deny")
                try writeMap(pid, "gid_map", "0 \(gid) 1\n")
            }
        } catch {
            close(releaseFD)
            kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            throw error
        }
        var byte: UInt8 = 1
        _ = write(releaseFD, &byte, 1)
        close(releaseFD)
        let status = hermetic_forward_signals_and_wait(pid)
        guard status >= 0 else { throw LaunchError(reason: "waitpid: \(errnoText(-status))") }
        return status
    }

    private static func writeMap(_ pid: pid_t, _ file: String, _ text: String) throws(LaunchError) {
        let path = "/proc/\(pid)/\(file)"
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LaunchError(reason: "open \(path): \(errnoText(errno))") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else {
            throw LaunchError(reason: "writing \(path): \(errnoText(errno))")
        }
    }

    /// Runs newuidmap or newgidmap; its own messages become the error's one line.
    private static func runHelper(_ tool: String, _ arguments: [String]) throws(LaunchError) {
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else { throw LaunchError(reason: "pipe: \(errnoText(errno))") }
        for fd in pipeFDs { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 2)
        var child: pid_t = 0
        let arena = CArena()
        // posix_spawn's prototype takes `char *const[]`; it writes nothing through them.
        func mutable(_ array: UnsafePointer<UnsafePointer<CChar>?>) -> UnsafePointer<UnsafeMutablePointer<CChar>?> {
            UnsafeRawPointer(array).assumingMemoryBound(to: UnsafeMutablePointer<CChar>?.self)
        }
        let spawned = withExtendedLifetime(arena) {
            posix_spawn(
                &child, tool, &actions, nil, mutable(arena.stringArray([tool] + arguments)),
                mutable(arena.stringArray(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])))
        }
        close(pipeFDs[1])
        defer { close(pipeFDs[0]) }
        guard spawned == 0 else { throw LaunchError(reason: "cannot run \(tool): \(errnoText(spawned))") }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while output.count < 65536 {
            let count = read(pipeFDs[0], &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            output += buffer[0..<count]
        }
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 {
            guard errno == EINTR else { throw LaunchError(reason: "waitpid \(tool): \(errnoText(errno))") }
        }
        guard status == 0 else {
            let said = String(decoding: output, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
            throw LaunchError(
                reason:
                    "\(tool) failed\(said.isEmpty ? "" : ": " + said) (it needs the user's ranges in /etc/subuid and /etc/subgid, "
                    + "and CAP_SYS_ADMIN where it runs: inside a container, run it --privileged)"
            )
        }
    }

    private static func userName(_ uid: uid_t) -> String? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil, let name = entry.pw_name
        else { return nil }
        return String(cString: name)
    }
}
