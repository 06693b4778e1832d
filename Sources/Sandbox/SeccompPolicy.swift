/// The system-call policy every RUN step executes under, kept as data in this one file so it can be read
/// and reviewed whole. Mechanism (compiling it with libseccomp) lives in `SeccompCompiler.swift`.
///
/// Shape: an allow-list; anything else fails with EPERM. Conditional rules narrow a few calls that are
/// needed but dangerous with some arguments. `refusedSyscalls` names what must never be allowed; it is
/// not used to build the filter (the default action refuses it) but tests check it is disjoint from the
/// allow-list, so a careless addition fails loudly.
public enum SeccompPolicy {
    /// Bumped whenever the meaning of the rendering changes.
    public static let formatVersion = 3

    /// errno returned for every call not allowed (EPERM).
    public static let defaultErrno: Int32 = 1

    /// libseccomp architecture names; x86_64 is native, x86 and x32 are added so a 32-bit or x32 binary
    /// cannot reach calls through another ABI's numbers. Any other architecture is killed.
    public static let architectures = ["x86_64", "x86", "x32"]

    /// Namespace flags refused in clone (CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
    /// NEWNET).
    public static let cloneNamespaceFlags: UInt64 =
        0x0000_0080 | 0x0002_0000 | 0x0200_0000 | 0x0400_0000
        | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000

    /// TIOCSTI: pushes bytes into a terminal's input queue.
    public static let tiocsti: UInt64 = 0x5412

    /// Socket families allowed: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET. Refused, among others:
    /// AF_ALG (38), AF_VSOCK (40).
    public static let socketFamilies: [UInt64] = [1, 2, 10, 16, 17]

    /// personality(2) values allowed: PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26, and the query.
    public static let personalities: [UInt64] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff]

    /// Allowed without conditions. Names unknown to the installed libseccomp are skipped at compile time
    /// and reported by `SeccompProgram.unknownSyscalls`.
    public static let allowedSyscalls: [String] = [
        "_llseek", "_newselect", "accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk",
        "capget", "capset", "chdir", "chmod", "chown", "chown32", "chroot", "clock_getres",
        "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
        "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
        "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
        "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit",
        "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fchdir",
        "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
        "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat",
        "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
        "futex_time64", "futex_waitv", "futimesat", "get_mempolicy", "get_robust_list", "get_thread_area",
        "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32",
        "getgid", "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
        "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
        "getresuid32", "getrlimit", "getrusage", "getsid", "getsockname", "getsockopt", "gettid",
        "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init",
        "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents", "io_pgetevents",
        "io_pgetevents_time64", "io_setup", "io_submit", "ioprio_get", "ioprio_set", "ipc", "kill",
        "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
        "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "lremovexattr", "lseek",
        "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "mbind", "membarrier",
        "memfd_create", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall",
        "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
        "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl",
        "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "nanosleep",
        "newfstatat", "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe",
        "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
        "pread64", "preadv", "preadv2", "prlimit64", "pselect6", "pselect6_time64", "pwrite64", "pwritev",
        "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
        "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename", "renameat", "renameat2",
        "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
        "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo", "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
        "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
        "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
        "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop", "semtimedop",
        "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto",
        "set_mempolicy", "set_robust_list", "set_thread_area", "set_tid_address", "setdomainname",
        "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32",
        "sethostname", "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid",
        "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "setsid",
        "setsockopt", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
        "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketpair", "splice", "stat",
        "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range",
        "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
        "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
        "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill",
        "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime",
        "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid",
        "write", "writev",
    ]

    /// Calls allowed only with some arguments, or answered with a specific errno. Several rules for one
    /// call are alternatives (any may allow it); conditions inside one rule must all hold.
    public static let conditionalRules: [SeccompRule] =
        [
            // Threads and processes, but never new namespaces.
            SeccompRule(
                syscall: "clone", action: .allow,
                conditions: [.init(argument: 0, mask: cloneNamespaceFlags, value: 0)]),
            // clone3 passes flags in memory a filter cannot read: ENOSYS makes libc fall back to clone.
            SeccompRule(syscall: "clone3", action: .errno(38), conditions: []),
        ]
        + socketFamilies.map {
            SeccompRule(syscall: "socket", action: .allow, conditions: [.init(argument: 0, value: $0)])
        }
        + personalities.map {
            SeccompRule(syscall: "personality", action: .allow, conditions: [.init(argument: 0, value: $0)])
        }
        // ioctl with any request but the refused ones. The kernel reads the request as 32 bits, so the
        // test is on the low 32 bits. libseccomp has no "not equal", so the allowed set is spelled out as
        // alternatives: a bit on which every refused request agrees differs, or else the bits on which they
        // disagree form a pattern none of them has.
        + ioctlRules()

    /// TIOCSTI pushes bytes into a terminal's input queue; TIOCLINUX can do the same on a virtual console.
    public static let refusedIoctls: [UInt64] = [tiocsti, 0x541C]

    static func ioctlRules() -> [SeccompRule] {
        let low: UInt64 = 0xffff_ffff
        let first = refusedIoctls[0] & low
        let differing = refusedIoctls.reduce(UInt64(0)) { $0 | (($1 & low) ^ first) }
        var rules: [SeccompRule] = (0..<32).compactMap { bit in
            let mask = UInt64(1) << UInt64(bit)
            guard differing & mask == 0 else { return nil }
            return SeccompRule(
                syscall: "ioctl", action: .allow, conditions: [.init(argument: 1, mask: mask, value: ~first & mask)])
        }
        let bits = (0..<32).map { UInt64(1) << UInt64($0) }.filter { differing & $0 != 0 }
        let refusedPatterns = Set(refusedIoctls.map { $0 & differing })
        for combination in 0..<(1 << bits.count) {
            let pattern = bits.enumerated().reduce(UInt64(0)) {
                $0 | (combination & (1 << $1.offset) != 0 ? $1.element : 0)
            }
            if !refusedPatterns.contains(pattern) {
                rules.append(
                    SeccompRule(
                        syscall: "ioctl", action: .allow,
                        conditions: [.init(argument: 1, mask: differing, value: pattern)]))
            }
        }
        return rules
    }

    /// Left out of the 32-bit x86 ABI's libseccomp filter: there libseccomp knows `socket` only through the
    /// `socketcall` multiplexer, whose family argument no filter can read (see `SeccompCompiler`).
    /// `socketcall(SYS_SOCKET…)` is refused; the direct call, number `x86SocketSyscall`, is allowed for
    /// `socketFamilies` by a few instructions of our own before libseccomp's program.
    public static let x86ExcludedSyscalls: Set<String> = ["socket"]
    public static let x86SocketSyscall: UInt32 = 359

    /// Must never appear in `allowedSyscalls` (checked by tests): mounting and the new mount API,
    /// namespaces, keys, BPF, tracing, modules, kexec, reboot, swap, clock setting, handle-based opens,
    /// userfaultfd, io_uring, and a few other host-wide knobs.
    public static let refusedSyscalls: [String] = [
        "mount", "umount", "umount2", "pivot_root", "fsopen", "fsmount", "move_mount", "open_tree",
        "fsconfig", "fspick", "mount_setattr", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf",
        "perf_event_open", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
        "swapoff", "clock_settime", "clock_settime64", "settimeofday", "adjtimex", "clock_adjtime",
        "clock_adjtime64", "stime", "open_by_handle_at", "name_to_handle_at", "userfaultfd",
        "io_uring_setup", "io_uring_enter", "io_uring_register", "acct", "quotactl", "quotactl_fd",
        "lookup_dcookie", "iopl", "ioperm", "syslog", "vhangup", "uselib", "nfsservctl", "fanotify_init",
        "socketcall", "modify_ldt", "create_module", "get_kernel_syms", "query_module", "sysfs", "_sysctl",
    ]

    /// A stable, line-oriented rendering of the whole policy. Its digest (computed by the caller, which
    /// owns hashing) identifies the policy in provenance.
    public static var canonicalText: String {
        var lines = ["hermetic-seccomp-policy \(formatVersion)", "default errno \(defaultErrno)"]
        lines += architectures.map { "arch \($0)" }
        lines += allowedSyscalls.sorted().map { "allow \($0)" }
        lines += conditionalRules.map(\.canonicalText)
        lines += x86ExcludedSyscalls.sorted().map { "x86 exclude \($0)" }
        lines.append(
            "x86 direct socket \(x86SocketSyscall) allow families "
                + socketFamilies.map { String($0) }.joined(separator: ","))
        return lines.joined(separator: "\n") + "\n"
    }
}

public enum SeccompAction: Sendable, Hashable {
    case allow
    case errno(Int32)
}

/// `(argument & mask) == value`; a mask of all ones is a plain equality.
public struct SeccompCondition: Sendable, Hashable {
    public var argument: UInt32
    public var mask: UInt64
    public var value: UInt64

    public init(argument: UInt32, mask: UInt64 = .max, value: UInt64) {
        self.argument = argument
        self.mask = mask
        self.value = value
    }
}

public struct SeccompRule: Sendable, Hashable {
    public var syscall: String
    public var action: SeccompAction
    public var conditions: [SeccompCondition]

    public init(syscall: String, action: SeccompAction, conditions: [SeccompCondition]) {
        self.syscall = syscall
        self.action = action
        self.conditions = conditions
    }

    var canonicalText: String {
        let actionText: String
        switch action {
        case .allow: actionText = "allow"
        case .errno(let code): actionText = "errno \(code)"
        }
        let conditionText = conditions.map {
            "arg\($0.argument)&0x\(String($0.mask, radix: 16))==0x\(String($0.value, radix: 16))"
        }
        return (["rule", syscall, actionText] + conditionText).joined(separator: " ")
    }
}
