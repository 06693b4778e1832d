/// A static C program run inside the sandbox: tries each refused system call and prints `name errno`
/// (0 when the call succeeded).
let probeSource = #"""
    #define _GNU_SOURCE
    #include <errno.h>
    #include <fcntl.h>
    #include <sched.h>
    #include <signal.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/ioctl.h>
    #include <sys/socket.h>
    #include <sys/syscall.h>
    #include <sys/wait.h>
    #include <time.h>
    #include <unistd.h>

    #ifndef AF_ALG
    #define AF_ALG 38
    #endif
    #ifndef AF_VSOCK
    #define AF_VSOCK 40
    #endif

    static void report(const char *name, long result) {
        printf("%s %d\n", name, result < 0 ? errno : 0);
        fflush(stdout);
    }

    static long raw_clone(unsigned long flags) {
        long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid((pid_t)pid, NULL, 0);
        return pid < 0 ? -1 : 0;
    }

    /* Low memory (a static, non-PIE binary's data) so 32-bit system calls can take its address. */
    static unsigned int socketcall_args[3];

    static long i386_call(long number, long a, long b, long c) {
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(number), "b"(a), "c"(b), "d"(c) : "memory");
        errno = r < 0 ? (int)-r : 0;
        return r < 0 ? -1 : 0;
    }

    int main(void) {
        char buffer[256];
        memset(buffer, 0, sizeof buffer);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        char c = 'x';

        report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0));
        report("umount2", syscall(SYS_umount2, "/proc", 2));
        report("pivot_root", syscall(SYS_pivot_root, ".", "."));
        report("fsopen", syscall(430, "tmpfs", 0));
        report("fsmount", syscall(432, -1, 0, 0));
        report("move_mount", syscall(429, -1, "", -1, "", 0));
        report("open_tree", syscall(428, AT_FDCWD, "/", 0));
        report("fspick", syscall(433, AT_FDCWD, "/", 0));
        report("mount_setattr", syscall(442, AT_FDCWD, "/", 0, NULL, 0));
        report("unshare", syscall(SYS_unshare, CLONE_NEWNS));
        int ns = open("/proc/self/ns/net", O_RDONLY);
        report("setns", syscall(SYS_setns, ns, 0));
        report("clone_newuser", raw_clone(CLONE_NEWUSER));
        report("clone_newns", raw_clone(CLONE_NEWNS));
        report("clone3", syscall(435, NULL, 0));
        report("ptrace", syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0));
        report("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0));
        report("add_key", syscall(SYS_add_key, "user", "probe", "v", 1, -3));
        report("request_key", syscall(SYS_request_key, "user", "probe", NULL, 0));
        report("bpf", syscall(SYS_bpf, 0, buffer, 64));
        report("perf_event_open", syscall(SYS_perf_event_open, buffer, 0, -1, -1, 0));
        report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
        report("init_module", syscall(SYS_init_module, NULL, 0, ""));
        report("delete_module", syscall(SYS_delete_module, "probe", 0));
        report("reboot", syscall(SYS_reboot, 0xfee1dead, 672274793, 0 /* CAD_OFF */, NULL));
        report("swapon", syscall(SYS_swapon, "/nonexistent", 0));
        report("clock_settime", syscall(SYS_clock_settime, CLOCK_REALTIME, &now));
        report("settimeofday", syscall(SYS_settimeofday, NULL, NULL));
        report("adjtimex", syscall(SYS_adjtimex, buffer)); /* modes 0: a read, allowed by the kernel */
        report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, buffer, 0));
        report("userfaultfd", syscall(SYS_userfaultfd, 0));
        report("io_uring_setup", syscall(425, 1, buffer));
        report("socket_alg", socket(AF_ALG, SOCK_SEQPACKET, 0));
        report("socket_vsock", socket(AF_VSOCK, SOCK_STREAM, 0));
        report("tiocsti", ioctl(0, TIOCSTI, &c));
        report("tiocsti_high_bits", syscall(SYS_ioctl, 0, 0x100005412UL, &c));
        report("tioclinux", ioctl(0, 0x541C, &c));
        report("tiocgwinsz_allowed", syscall(SYS_ioctl, 0, 0x5413, buffer) < 0 && errno == EPERM ? -1 : 0);
        socketcall_args[0] = AF_VSOCK; socketcall_args[1] = SOCK_STREAM; socketcall_args[2] = 0;
        report("i386_socketcall_vsock", i386_call(102, 1 /* SYS_SOCKET */, (long)socketcall_args, 0));
        socketcall_args[0] = AF_INET;
        report("i386_socketcall_inet", i386_call(102, 1, (long)socketcall_args, 0));
        report("i386_socket_vsock", i386_call(359, AF_VSOCK, SOCK_STREAM, 0));
        report("i386_socket_inet", i386_call(359, AF_INET, SOCK_STREAM, 0));
        report("i386_socket_unix", i386_call(359, AF_UNIX, SOCK_STREAM, 0));
        report("i386_socket_alg", i386_call(359, AF_ALG, SOCK_SEQPACKET, 0));
        report("socket_inet", socket(AF_INET, SOCK_STREAM, 0));
        report("fork", raw_clone(0));
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(21L), "b"(0L), "c"(0L), "d"(0L) : "memory");
        errno = r < 0 ? (int)-r : 0;
        report("i386_mount", r < 0 ? -1 : 0);
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
        errno = r < 0 ? (int)-r : 0;
        report("i386_getpid", r < 0 ? -1 : 0);
        __asm__ volatile("syscall" : "=a"(r) : "a"(0x40000000L | 165L), "D"(0L), "S"(0L), "d"(0L) : "rcx", "r11", "memory");
        errno = r < 0 ? (int)-r : 0;
        report("x32_mount", r < 0 ? -1 : 0);
        return 0;
    }
    """#
