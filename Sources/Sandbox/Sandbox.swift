internal import CSandbox

#if canImport(Glibc)
    import Glibc
#endif

/// Runs one RUN step in fresh mount, PID, network, UTS, IPC and cgroup namespaces, rooted (pivot_root,
/// old root detached) on an overlay of the parent layers with a fresh upper directory.
///
/// What it protects against, and how, is in `Sources/Sandbox/Sandbox.docc/ThreatModel.md`.
public enum Sandbox {
    /// Moves the calling thread into a new UTS namespace named `hostname`; processes it spawns afterwards
    /// (posix_spawn runs on the calling thread) see that name. For `hermetic rebuild`'s other environment.
    public static func enterPrivateHostname(_ hostname: String) throws(SandboxError) {
        let result = hermetic_unshare_uts(hostname)
        guard result == 0 else {
            throw SandboxError.system(call: "unshare(CLONE_NEWUTS)", path: hostname, errno: -result)
        }
    }

    /// Whether `path` is on overlayfs, which overlayfs cannot use as an upper layer (a workspace under /tmp
    /// inside most containers): the caller then gives the step another filesystem for its upper directory.
    public static func isOnOverlayfs(_ path: String) -> Bool {
        hermetic_path_is_on_overlayfs(path) == 1
    }

    /// overlayfs splits its mount options on these, so an overlay cannot name a path holding one (a copied
    /// root can).
    public static func canNameInOverlayOptions(_ path: String) -> Bool {
        !path.contains(where: { $0 == ":" || $0 == "," || $0 == "\\" || $0 == "\n" })
    }

    /// Processes whose real uid is `uid`, host-wide (what RLIMIT_NPROC counts).
    static func processCount(uid: UInt32) -> Int {
        var count = 0
        for name in directoryNames("/proc") where name.allSatisfy(\.isNumber) {
            guard let status = readSmallFile("/proc/\(name)/status") else { continue }
            for line in status.split(separator: "\n") where line.hasPrefix("Uid:") {
                if line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first == Substring(String(uid)) {
                    count += 1
                }
                break
            }
        }
        return count
    }

    static func directoryNames(_ path: String) -> [String] {
        guard let handle = opendir(path) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Runs `plan` to completion. Throws only when the step could not be started or collected;
    /// the command's own failure, a timeout or a kill is a `SandboxResult`.
    /// - Parameters: stdin/stdout/stderr: host descriptors given to the step as 0, 1, 2 (stdin nil:
    ///   /dev/null). Nothing else is inherited.
    public static func run(
        _ plan: SandboxPlan, stdin: Int32? = nil, stdout: Int32, stderr: Int32
    ) throws(SandboxError) -> SandboxResult {
        try validate(plan)
        let program = try SeccompPolicy.compile()
        let layout = try StepLayout.prepare(plan)
        defer { layout.remove() }
        let stubs = plan.root == .copy ? try layout.installStubs(into: plan.rootLayers[0]) : nil
        // After the step's PID namespace is gone (run returns only then), before the caller reads the copy.
        defer { stubs?.undo() }
        // A pids cgroup where one can be had; otherwise (cgroup v2 without a delegated pids controller, as in
        // many containers) RLIMIT_NPROC set to the uid's current process count plus the limit.
        var cgroup: PidsCgroup?
        var processLimit: UInt64 = 0
        if let limit = plan.pidsLimit {
            if plan.pidsLimitMechanism == .processLimit {
                processLimit = UInt64(processCount(uid: plan.uid) + limit)
            } else {
                do {
                    cgroup = try PidsCgroup.create(limit: limit)
                } catch {
                    processLimit = UInt64(processCount(uid: plan.uid) + limit)
                }
            }
        }
        let operations = try mountOperations(plan, layout: layout)

        let arena = CArena()
        let ops = arena.array(
            operations.map { op in
                hermetic_mount_op(
                    kind: op.kind.rawValue, flags: op.optional ? UInt32(HERMETIC_OP_OPTIONAL) : 0,
                    mount_flags: op.mountFlags, mode: op.mode, source: op.source.map(arena.string),
                    target: arena.string(op.target), data: op.data.map(arena.string))
            })
        let filter = arena.array(program.bytes)
        var cPlan = hermetic_plan(
            root_path: arena.string(layout.root), ops: ops, op_count: operations.count,
            argv: arena.stringArray(plan.argv), envp: arena.stringArray(plan.environment), uid: plan.uid,
            gid: plan.gid, groups: arena.array(plan.groups), group_count: plan.groups.count,
            working_directory: arena.string(plan.workingDirectory), hostname: arena.string(plan.hostname),
            host_network: plan.network == .host ? 1 : 0,
            capabilities: BuilderCapabilities.current?.stepCapabilities ?? dockerDefaultCapabilities,
            seccomp_filter: UnsafeRawPointer(filter), seccomp_filter_length: program.bytes.count,
            cgroup_procs: cgroup.map { arena.string($0.procsFile) }, stdin_fd: stdin ?? -1, stdout_fd: stdout,
            stderr_fd: stderr, nproc_limit: processLimit, skip_setgroups: UserNamespace.allowsSetgroups ? 0 : 1)

        let clock = ContinuousClock()
        let start = clock.now
        let deadline = plan.timeoutSeconds.map { start + .seconds($0) }
        var reportFD: Int32 = -1
        var pidFD: Int32 = -1
        let pid = withExtendedLifetime(arena) { hermetic_sandbox_spawn(&cPlan, &reportFD, &pidFD) }
        guard pid > 0 else { throw SandboxError.system(call: "clone", path: plan.argv[0], errno: -pid) }
        defer {
            close(reportFD)
            close(pidFD)
        }

        // The report pipe closes on execve (success) or carries the first setup failure.
        var failure = hermetic_failure()
        var failed = false
        var timedOut = false
        var cancelled = false
        switch waitReadable(reportFD, until: deadline, clock: clock, cancel: plan.cancelDescriptor) {
        case .ready:
            let count = withUnsafeMutableBytes(of: &failure) { read(reportFD, $0.baseAddress, $0.count) }
            failed = count == MemoryLayout<hermetic_failure>.size
        case .timedOut: timedOut = true
        case .cancelled: cancelled = true
        }
        if !failed && !timedOut && !cancelled {
            switch waitReadable(pidFD, until: deadline, clock: clock, cancel: plan.cancelDescriptor) {
            case .ready: break
            case .timedOut: timedOut = true
            case .cancelled: cancelled = true
            }
        }
        // SIGKILL to PID 1 ends the namespace: the kernel kills every other process in it before PID 1
        // can be reaped, so after waitpid nothing of the step runs and its mounts are gone. The child is
        // not reaped before this, so `pid` cannot name another process.
        if timedOut || cancelled { kill(pid, SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw SandboxError.system(call: "waitpid", path: plan.argv[0], errno: errno) }
        }
        let duration = clock.now - start
        let refused = cgroup?.refusedForks() ?? 0
        let usedCgroup = cgroup != nil
        cgroup = nil

        if failed { throw childError(failure, operations: operations) }
        let termination: SandboxResult.Termination =
            status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
        var result = SandboxResult(
            termination: termination, timedOut: timedOut, pidsLimitReached: refused > 0, duration: duration)
        result.cancelled = cancelled
        result.pidsLimitEnforced =
            plan.pidsLimit == nil || usedCgroup || (processLimit > 0 && (plan.uid != 0 || UserNamespace.isNested))
        return result
    }

    /// Docker's default capability set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
    /// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP. None ambient, none inheritable.
    /// MKNOD is harmless here: every filesystem the step can write is mounted nodev.
    public static let dockerDefaultCapabilities: UInt64 = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31]
        .reduce(0) { $0 | (UInt64(1) << UInt64($1)) }

    private enum WaitOutcome {
        case ready, timedOut, cancelled
    }

    /// Waits until `fd` is readable, the deadline passes, or `cancel` (when given) becomes readable.
    private static func waitReadable(
        _ fd: Int32, until deadline: ContinuousClock.Instant?, clock: ContinuousClock, cancel: Int32?
    ) -> WaitOutcome {
        while true {
            var timeout: Int32 = -1
            if let deadline {
                let left = clock.now.duration(to: deadline)
                if left <= .zero { return .timedOut }
                let (seconds, attoseconds) = left.components
                timeout = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
            }
            var entries = [
                pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                pollfd(fd: cancel ?? -1, events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&entries, nfds_t(cancel == nil ? 1 : 2), timeout)
            if ready > 0 { return entries[0].revents != 0 ? .ready : .cancelled }
            if ready < 0 && errno != EINTR { return .ready }
        }
    }

    private static func childError(_ failure: hermetic_failure, operations: [MountOperation]) -> SandboxError {
        var copy = failure
        let path = withUnsafeBytes(of: &copy.path) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let index = failure.op_index >= 0 ? Int(failure.op_index) : nil
        let step: String
        switch hermetic_stage(rawValue: UInt32(bitPattern: failure.stage)) {
        case HERMETIC_STAGE_STDIO: step = "stdio"
        case HERMETIC_STAGE_CGROUP: step = "joining the pids cgroup"
        case HERMETIC_STAGE_PROPAGATION: step = "making mounts private"
        case HERMETIC_STAGE_MOUNT_OP:
            let kind = index.flatMap { $0 < operations.count ? operations[$0].kind.name : nil } ?? "mount"
            step = "mount \(kind)"
        case HERMETIC_STAGE_PIVOT_ROOT: step = "pivot_root"
        case HERMETIC_STAGE_HOSTNAME: step = "sethostname"
        case HERMETIC_STAGE_LOOPBACK: step = "bringing up loopback"
        case HERMETIC_STAGE_CAPABILITIES: step = "dropping capabilities"
        case HERMETIC_STAGE_GROUPS: step = "setgroups"
        case HERMETIC_STAGE_GID: step = "setresgid"
        case HERMETIC_STAGE_UID: step = "setresuid"
        case HERMETIC_STAGE_NO_NEW_PRIVS: step = "no_new_privs"
        case HERMETIC_STAGE_WORKDIR: step = "working directory"
        case HERMETIC_STAGE_SECCOMP: step = "loading seccomp"
        case HERMETIC_STAGE_EXEC: step = "execve"
        case HERMETIC_STAGE_SESSION: step = "setsid"
        default: step = "stage \(failure.stage)"
        }
        return .childSetup(step: step, opIndex: index, path: path, errno: failure.error)
    }

    static func validate(_ plan: SandboxPlan) throws(SandboxError) {
        func check(_ value: String, _ field: String) throws(SandboxError) {
            if value.utf8.contains(0) { throw .invalidPlan(field: field, reason: "contains a NUL byte") }
        }
        guard let command = plan.argv.first, !command.isEmpty else {
            throw .invalidPlan(field: "argv", reason: "empty command")
        }
        for argument in plan.argv { try check(argument, "argv") }
        for variable in plan.environment {
            try check(variable, "environment")
            guard let equals = variable.firstIndex(of: "="), equals != variable.startIndex else {
                throw .invalidPlan(field: "environment", reason: "\(variable.prefix(64)) is not NAME=value")
            }
        }
        for (field, path) in [
            ("upperDirectory", plan.upperDirectory), ("workDirectory", plan.workDirectory),
            ("workingDirectory", plan.workingDirectory),
        ] {
            try check(path, field)
            guard path.hasPrefix("/") else { throw .invalidPlan(field: field, reason: "\(path) is not absolute") }
        }
        for layer in plan.rootLayers + [plan.upperDirectory, plan.workDirectory] {
            try check(layer, "rootLayers")
            guard layer.hasPrefix("/") else {
                throw .invalidPlan(field: "rootLayers", reason: "\(layer) is not absolute")
            }
            if plan.root == .overlay && !canNameInOverlayOptions(layer) {
                throw .invalidPlan(field: "rootLayers", reason: "\(layer) contains ':', ',', '\\' or a newline")
            }
        }
        if plan.root == .copy && plan.rootLayers.count != 1 {
            throw .invalidPlan(field: "rootLayers", reason: "a copied root is exactly one directory")
        }
        if plan.rootLayers.count > 400 {
            throw .invalidPlan(field: "rootLayers", reason: "\(plan.rootLayers.count) layers (at most 400)")
        }
        try check(plan.hostname, "hostname")
        guard !plan.hostname.isEmpty, plan.hostname.utf8.count <= 64 else {
            throw .invalidPlan(field: "hostname", reason: "must be 1 to 64 bytes")
        }
        if plan.groups.count > 65536 { throw .invalidPlan(field: "groups", reason: "too many groups") }
        if let timeout = plan.timeoutSeconds, timeout <= 0 {
            throw .invalidPlan(field: "timeoutSeconds", reason: "must be positive")
        }
        for mount in plan.mounts where !mount.isDevShm {
            _ = try relativeTarget(mount.target)
            switch mount.kind {
            case .bind(let source), .bindReadOnly(let source):
                try check(source, "mounts")
                guard source.hasPrefix("/") else {
                    throw .invalidPlan(field: "mounts", reason: "\(source) is not absolute")
                }
            case .tmpfs(let size):
                guard size > 0 else { throw .invalidPlan(field: "mounts", reason: "tmpfs size must be positive") }
            }
        }
    }

    /// "/a/b" → "a/b", refusing "..", empty targets and the builder-owned paths.
    static func relativeTarget(_ target: String) throws(SandboxError) -> String {
        guard target.hasPrefix("/"), !target.utf8.contains(0) else {
            throw .invalidPlan(field: "mounts", reason: "target \(target) is not absolute")
        }
        let components = target.split(separator: "/").filter { $0 != "." }
        if components.contains("..") { throw .invalidPlan(field: "mounts", reason: "target \(target) contains ..") }
        let relative = components.joined(separator: "/")
        let reserved = ["proc", "dev", "etc/hosts", "etc/resolv.conf"]
        if relative.isEmpty || reserved.contains(where: { relative == $0 || relative.hasPrefix($0 + "/") }) {
            throw .invalidPlan(field: "mounts", reason: "target \(target) is reserved by the sandbox")
        }
        return relative
    }
}

/// Owns the C copies of every string and array the child reads; freed after the spawn.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    func string(_ value: String) -> UnsafePointer<CChar> {
        let bytes = Array(value.utf8)
        let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
        for (index, byte) in bytes.enumerated() { pointer[index] = CChar(bitPattern: byte) }
        pointer[bytes.count] = 0
        allocations.append(UnsafeMutableRawPointer(pointer))
        return UnsafePointer(pointer)
    }

    func stringArray(_ values: [String]) -> UnsafePointer<UnsafePointer<CChar>?> {
        let pointer = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: values.count + 1)
        for (index, value) in values.enumerated() { pointer[index] = string(value) }
        pointer[values.count] = nil
        allocations.append(UnsafeMutableRawPointer(pointer))
        return UnsafePointer(pointer)
    }

    func array<Element>(_ values: [Element]) -> UnsafePointer<Element> {
        let pointer = UnsafeMutablePointer<Element>.allocate(capacity: max(values.count, 1))
        pointer.initialize(from: values, count: values.count)
        allocations.append(UnsafeMutableRawPointer(pointer))
        return UnsafePointer(pointer)
    }

    deinit {
        for allocation in allocations { allocation.deallocate() }
    }
}
