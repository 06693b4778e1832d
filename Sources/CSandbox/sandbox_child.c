/* The child side of a sandboxed RUN step. Everything between clone() and execve() is here.
 *
 * Rules this file keeps, because the caller is a multi-threaded Swift process and the child is a copy
 * of one of its threads made by a raw clone():
 *  - no malloc, no stdio, no locks: other threads' locks may be held forever in the copy;
 *  - credentials change through raw system calls, never glibc's setgroups/setresuid, which would try
 *    to signal the (absent) sibling threads and wait for them;
 *  - the first failure is written to the report pipe as a struct hermetic_failure, then _exit(127).
 */
#define _GNU_SOURCE
#include "hermetic_sandbox.h"
#include <sys/resource.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* mount_setattr(2) (Linux 5.12): the attributes of a whole mount tree at once. */
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
struct hermetic_mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};
#define HERMETIC_MOUNT_ATTR_RDONLY 0x00000001
#define HERMETIC_MOUNT_ATTR_NOSUID 0x00000002
#define HERMETIC_MOUNT_ATTR_NODEV 0x00000004
#define HERMETIC_MOUNT_ATTR_NOEXEC 0x00000008
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

int hermetic_sandbox_abi_version(void) { return 2; }

int hermetic_memfd_create(const char *name) { return (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC); }

int hermetic_unshare_uts(const char *hostname) {
    if (unshare(CLONE_NEWUTS) != 0) return -errno;
    if (sethostname(hostname, strlen(hostname)) != 0) return -errno;
    return 0;
}

/* ---- helpers usable in the child (async-signal-safe, no allocation) ---- */

static size_t child_strlen(const char *s) {
    size_t n = 0;
    while (s[n] != '\0') n++;
    return n;
}

/* Copies `src` into `dst` (capacity `cap`), always NUL-terminating; returns the length copied. */
static size_t child_copy(char *dst, size_t cap, const char *src) {
    size_t n = 0;
    if (cap == 0) return 0;
    while (src != NULL && src[n] != '\0' && n + 1 < cap) {
        dst[n] = src[n];
        n++;
    }
    dst[n] = '\0';
    return n;
}

__attribute__((noreturn)) static void child_fail(int report, int32_t stage, int error, int32_t op_index,
                                                 const char *path) {
    struct hermetic_failure failure;
    memset(&failure, 0, sizeof failure);
    failure.stage = stage;
    failure.error = error;
    failure.op_index = op_index;
    child_copy(failure.path, sizeof failure.path, path);
    ssize_t ignored = write(report, &failure, sizeof failure);
    (void)ignored;
    _exit(127);
}

/* "/proc/self/fd/<fd>" into buf (>= 32 bytes). The mount syscalls take paths, not fds; going through
   the magic link pins the exact object resolved (symlink-free) by openat2. */
static const char *fd_path(char *buf, int fd) {
    static const char prefix[] = "/proc/self/fd/";
    char digits[12];
    int n = 0;
    size_t at = child_copy(buf, 32, prefix);
    unsigned value = (unsigned)fd;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0 && n < 11);
    while (n > 0) buf[at++] = digits[--n];
    buf[at] = '\0';
    return buf;
}

/* Opens `path` (relative to the root) beneath `rootfd`, refusing symlinks, magic links and `..` escapes
   in every component. */
static int open_beneath(int rootfd, const char *path, uint64_t flags) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = flags | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}

/* Splits `path` into its parent (written to `parent`) and returns a pointer to the last component. */
static const char *split_parent(const char *path, char *parent, size_t cap) {
    size_t len = child_copy(parent, cap, path);
    while (len > 0 && parent[len - 1] == '/') parent[--len] = '\0';
    size_t slash = len;
    while (slash > 0 && parent[slash - 1] != '/') slash--;
    const char *name = path + slash;
    if (slash == 0) {
        child_copy(parent, cap, ".");
    } else {
        parent[slash] = '\0';
    }
    return name;
}

static int same_kind(int dirfd, const char *name, mode_t kind) {
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
    return (st.st_mode & S_IFMT) == kind;
}

/* Applies one op; returns 0 or an errno value. */
static int apply_op(const struct hermetic_plan *plan, const struct hermetic_mount_op *op, int *rootfd) {
    char path_buf[32];
    char parent[4096];
    int fd = -1;
    int result = 0;
    uint64_t extra = op->mount_flags;

    if (op->kind == HERMETIC_OP_OVERLAY) {
        /* Lower dirs are given relative to `source` so that many layers fit in one page of options. */
        if (op->source != NULL && chdir(op->source) != 0) return errno;
        if (mount("overlay", plan->root_path, "overlay", extra, op->data) != 0) result = errno;
        if (chdir("/") != 0 && result == 0) result = errno;
        if (result != 0) return result;
        close(*rootfd);
        *rootfd = open(plan->root_path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return *rootfd < 0 ? errno : 0;
    }

    if (op->kind == HERMETIC_OP_BIND_ROOT) {
        if (mount(op->source, plan->root_path, NULL, MS_BIND, NULL) != 0) return errno;
        close(*rootfd);
        *rootfd = open(plan->root_path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (*rootfd < 0) return errno;
        struct hermetic_mount_attr attr;
        memset(&attr, 0, sizeof attr);
        if (extra & MS_NOSUID) attr.attr_set |= HERMETIC_MOUNT_ATTR_NOSUID;
        if (extra & MS_NODEV) attr.attr_set |= HERMETIC_MOUNT_ATTR_NODEV;
        if (syscall(SYS_mount_setattr, *rootfd, "", AT_EMPTY_PATH, &attr, sizeof attr) == 0) return 0;
        if (errno != ENOSYS) return errno;
        if (mount(NULL, plan->root_path, NULL, MS_REMOUNT | MS_BIND | extra, NULL) != 0) return errno;
        return 0;
    }

    if (op->kind == HERMETIC_OP_MKDIR || op->kind == HERMETIC_OP_FILE || op->kind == HERMETIC_OP_SYMLINK) {
        const char *name = split_parent(op->target, parent, sizeof parent);
        if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return EINVAL;
        int dirfd = open_beneath(*rootfd, parent, O_PATH | O_DIRECTORY);
        if (dirfd < 0) return errno;
        if (op->kind == HERMETIC_OP_MKDIR) {
            if (mkdirat(dirfd, name, op->mode) != 0 && !(errno == EEXIST && same_kind(dirfd, name, S_IFDIR)))
                result = errno;
        } else if (op->kind == HERMETIC_OP_FILE) {
            int file = openat(dirfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, op->mode);
            if (file >= 0) {
                close(file);
            } else if (!(errno == EEXIST && same_kind(dirfd, name, S_IFREG))) {
                result = errno;
            }
        } else {
            if (symlinkat(op->source, dirfd, name) != 0) result = errno;
        }
        close(dirfd);
        return result;
    }

    fd = open_beneath(*rootfd, op->target, O_PATH);
    if (fd < 0) {
        if (errno == ENOENT && (op->flags & HERMETIC_OP_OPTIONAL) != 0) return 0;
        return errno;
    }
    fd_path(path_buf, fd);
    switch (op->kind) {
    case HERMETIC_OP_BIND:
    case HERMETIC_OP_BIND_READONLY:
    case HERMETIC_OP_REMOUNT_READONLY: {
        const char *source = op->kind == HERMETIC_OP_REMOUNT_READONLY ? path_buf : op->source;
        if (mount(source, path_buf, NULL, MS_BIND | MS_REC, NULL) != 0) {
            result = errno;
            break;
        }
        if (op->kind == HERMETIC_OP_BIND && extra == 0) break;
        /* The fd still names the covered mountpoint; reopen to reach the new mount on top. */
        close(fd);
        fd = open_beneath(*rootfd, op->target, O_PATH);
        if (fd < 0) {
            result = errno;
            break;
        }
        fd_path(path_buf, fd);
        if (op->kind != HERMETIC_OP_BIND) extra |= MS_RDONLY;
        /* Recursively: a plain remount would leave mounts below the bind's source (a host submount)
           writable and without nosuid/nodev. */
        struct hermetic_mount_attr attr;
        memset(&attr, 0, sizeof attr);
        if (extra & MS_RDONLY) attr.attr_set |= HERMETIC_MOUNT_ATTR_RDONLY;
        if (extra & MS_NOSUID) attr.attr_set |= HERMETIC_MOUNT_ATTR_NOSUID;
        if (extra & MS_NODEV) attr.attr_set |= HERMETIC_MOUNT_ATTR_NODEV;
        if (extra & MS_NOEXEC) attr.attr_set |= HERMETIC_MOUNT_ATTR_NOEXEC;
        if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) == 0) break;
        if (errno != ENOSYS) {
            result = errno;
            break;
        }
        if (mount(NULL, path_buf, NULL, MS_REMOUNT | MS_BIND | extra, NULL) != 0) result = errno;
        break;
    }
    case HERMETIC_OP_PROC:
        if (mount("proc", path_buf, "proc", extra, NULL) != 0) result = errno;
        break;
    case HERMETIC_OP_TMPFS:
        if (mount("tmpfs", path_buf, "tmpfs", extra, op->data) != 0) result = errno;
        break;
    case HERMETIC_OP_DEVPTS:
        if (mount("devpts", path_buf, "devpts", extra, op->data) != 0) result = errno;
        break;
    default:
        result = EINVAL;
    }
    if (fd >= 0) close(fd);
    return result;
}

static int bring_loopback_up(void) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return errno;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    child_copy(request.ifr_name, sizeof request.ifr_name, "lo");
    int result = 0;
    if (ioctl(sock, SIOCGIFFLAGS, &request) != 0) {
        result = errno;
    } else {
        request.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(sock, SIOCSIFFLAGS, &request) != 0) result = errno;
    }
    close(sock);
    return result;
}

static int drop_bounding_and_ambient(uint64_t keep) {
    for (int cap = 0; cap < 64; cap++) {
        if ((keep >> cap) & 1) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return errno;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) return errno;
    return 0;
}

static int set_capabilities(uint64_t keep) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    data[0].effective = data[0].permitted = (uint32_t)keep;
    data[1].effective = data[1].permitted = (uint32_t)(keep >> 32);
    return syscall(SYS_capset, &header, data) == 0 ? 0 : errno;
}

static const char *env_value(const char *const *envp, const char *name) {
    size_t len = child_strlen(name);
    for (size_t i = 0; envp[i] != NULL; i++) {
        if (strncmp(envp[i], name, len) == 0 && envp[i][len] == '=') return envp[i] + len + 1;
    }
    return NULL;
}

/* execve, searching PATH from the plan's environment (never the builder's) when argv[0] has no '/'. */
static int exec_with_plan_path(const struct hermetic_plan *plan, char *failed_path, size_t cap) {
    const char *file = plan->argv[0];
    char *const *argv = (char *const *)plan->argv;
    char *const *envp = (char *const *)plan->envp;
    child_copy(failed_path, cap, file);
    if (strchr(file, '/') != NULL) {
        execve(file, argv, envp);
        return errno;
    }
    const char *search = env_value(plan->envp, "PATH");
    if (search == NULL) search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    int last = ENOENT;
    int saw_eacces = 0;
    char candidate[4096];
    const char *at = search;
    while (1) {
        const char *end = strchr(at, ':');
        size_t dir_len = end != NULL ? (size_t)(end - at) : child_strlen(at);
        size_t file_len = child_strlen(file);
        if (dir_len + file_len + 2 < sizeof candidate) {
            size_t n = 0;
            if (dir_len == 0) {
                candidate[n++] = '.';
            } else {
                memcpy(candidate, at, dir_len);
                n = dir_len;
            }
            candidate[n++] = '/';
            memcpy(candidate + n, file, file_len + 1);
            execve(candidate, argv, envp);
            last = errno;
            if (last == EACCES) saw_eacces = 1;
            if (last != ENOENT && last != ENOTDIR && last != EACCES) {
                child_copy(failed_path, cap, candidate);
                return last;
            }
        }
        if (end == NULL) break;
        at = end + 1;
    }
    return saw_eacces ? EACCES : last;
}

__attribute__((noreturn)) static void child_main(const struct hermetic_plan *plan, int report_in) {
    /* Die with the builder; start from default signal dispositions and an empty mask. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    for (int sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        signal(sig, SIG_DFL);
    }
    sigset_t empty;
    sigemptyset(&empty);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, sizeof(uint64_t));
    umask(0);

    /* stdio, then the report pipe on fd 3 (close-on-exec), then close every other inherited fd. */
    int report = fcntl(report_in, F_DUPFD_CLOEXEC, 3);
    if (report < 0) _exit(127);
    int in = plan->stdin_fd >= 0 ? fcntl(plan->stdin_fd, F_DUPFD, 3) : open("/dev/null", O_RDONLY);
    int out = fcntl(plan->stdout_fd, F_DUPFD, 3);
    int err = fcntl(plan->stderr_fd, F_DUPFD, 3);
    if (in < 0 || out < 0 || err < 0) child_fail(report, HERMETIC_STAGE_STDIO, errno, -1, "stdio");
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        child_fail(report, HERMETIC_STAGE_STDIO, errno, -1, "stdio");
    if (report != 3) {
        if (dup3(report, 3, O_CLOEXEC) < 0) _exit(127);
        report = 3;
    }
    if (syscall(SYS_close_range, 4U, ~0U, 0) != 0) {
        for (int fd = 4; fd < 65536; fd++) close(fd);
    }
    if (setsid() < 0) child_fail(report, HERMETIC_STAGE_SESSION, errno, -1, "setsid");

    if (plan->cgroup_procs != NULL) {
        int fd = open(plan->cgroup_procs, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) child_fail(report, HERMETIC_STAGE_CGROUP, errno, -1, plan->cgroup_procs);
        close(fd);
    }
    if (unshare(CLONE_NEWCGROUP) != 0) child_fail(report, HERMETIC_STAGE_CGROUP, errno, -1, "unshare(CLONE_NEWCGROUP)");
    if (plan->nproc_limit > 0) {
        struct rlimit limit = { (rlim_t)plan->nproc_limit, (rlim_t)plan->nproc_limit };
        if (syscall(SYS_prlimit64, 0, RLIMIT_NPROC, &limit, NULL) != 0)
            child_fail(report, HERMETIC_STAGE_CGROUP, errno, -1, "prlimit(RLIMIT_NPROC)");
    }

    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        child_fail(report, HERMETIC_STAGE_PROPAGATION, errno, -1, "/");

    int rootfd = open(plan->root_path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0) child_fail(report, HERMETIC_STAGE_MOUNT_OP, errno, -1, plan->root_path);
    for (size_t i = 0; i < plan->op_count; i++) {
        int error = apply_op(plan, &plan->ops[i], &rootfd);
        if (error != 0) child_fail(report, HERMETIC_STAGE_MOUNT_OP, error, (int32_t)i, plan->ops[i].target);
    }

    /* pivot_root(".", ".") stacks the old root on the new one; detaching it leaves no way back. */
    if (fchdir(rootfd) != 0 || syscall(SYS_pivot_root, ".", ".") != 0)
        child_fail(report, HERMETIC_STAGE_PIVOT_ROOT, errno, -1, plan->root_path);
    if (umount2(".", MNT_DETACH) != 0 || chdir("/") != 0)
        child_fail(report, HERMETIC_STAGE_PIVOT_ROOT, errno, -1, "old root");
    close(rootfd);

    if (sethostname(plan->hostname, child_strlen(plan->hostname)) != 0)
        child_fail(report, HERMETIC_STAGE_HOSTNAME, errno, -1, plan->hostname);
    if (!plan->host_network) {
        int error = bring_loopback_up();
        if (error != 0) child_fail(report, HERMETIC_STAGE_LOOPBACK, error, -1, "lo");
    }

    /* Hardening, in order: (fds closed above) capabilities, no_new_privs, working directory, seccomp. */
    int error = drop_bounding_and_ambient(plan->capabilities);
    if (error != 0) child_fail(report, HERMETIC_STAGE_CAPABILITIES, error, -1, "bounding set");
    if (!plan->skip_setgroups && syscall(SYS_setgroups, plan->group_count, plan->groups) != 0)
        child_fail(report, HERMETIC_STAGE_GROUPS, errno, -1, "setgroups");
    if (syscall(SYS_setresgid, plan->gid, plan->gid, plan->gid) != 0)
        child_fail(report, HERMETIC_STAGE_GID, errno, -1, "setresgid");
    if (syscall(SYS_setresuid, plan->uid, plan->uid, plan->uid) != 0)
        child_fail(report, HERMETIC_STAGE_UID, errno, -1, "setresuid");
    /* A non-root uid already lost every capability in setresuid; root keeps exactly the plan's set. */
    error = set_capabilities(plan->uid == 0 ? plan->capabilities : 0);
    if (error != 0) child_fail(report, HERMETIC_STAGE_CAPABILITIES, error, -1, "capset");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        child_fail(report, HERMETIC_STAGE_NO_NEW_PRIVS, errno, -1, "PR_SET_NO_NEW_PRIVS");
    /* The kernel clears the parent-death signal when the uid changes: set it again. (A builder that died
       in the instant before cannot be seen from here: our parent is outside the PID namespace.) */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);

    /* Working directory: resolved inside the root (symlinks scoped to it, magic links refused), then
       checked to be reachable from the root after the change (CVE-2024-21626). */
    int top = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    int wd = top < 0 ? -1 : (int)syscall(SYS_openat2, top, plan->working_directory, &how, sizeof how);
    if (wd < 0 || fchdir(wd) != 0) child_fail(report, HERMETIC_STAGE_WORKDIR, errno, -1, plan->working_directory);
    close(wd);
    close(top);
    char cwd[4096];
    long cwd_len = syscall(SYS_getcwd, cwd, sizeof cwd);
    if (cwd_len <= 0 || cwd[0] != '/') child_fail(report, HERMETIC_STAGE_WORKDIR, EPERM, -1, plan->working_directory);
    umask(022);

    if (plan->seccomp_filter != NULL && plan->seccomp_filter_length > 0) {
        struct sock_fprog program;
        program.len = (unsigned short)(plan->seccomp_filter_length / sizeof(struct sock_filter));
        program.filter = (struct sock_filter *)plan->seccomp_filter;
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) != 0)
            child_fail(report, HERMETIC_STAGE_SECCOMP, errno, -1, "seccomp");
    }
    char failed[512];
    error = exec_with_plan_path(plan, failed, sizeof failed);
    child_fail(report, HERMETIC_STAGE_EXEC, error, -1, failed);
}

pid_t hermetic_sandbox_spawn(const struct hermetic_plan *plan, int *report_fd, int *pidfd) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) return -errno;
    unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_PIDFD | SIGCHLD;
    if (!plan->host_network) flags |= CLONE_NEWNET;
    int child_pidfd = -1;
    long pid = syscall(SYS_clone, flags, NULL, &child_pidfd, NULL, 0);
    if (pid == 0) {
        close(pipe_fds[0]);
        child_main(plan, pipe_fds[1]);
    }
    int saved = errno;
    close(pipe_fds[1]);
    if (pid < 0) {
        close(pipe_fds[0]);
        return -saved;
    }
    *report_fd = pipe_fds[0];
    *pidfd = child_pidfd;
    return (pid_t)pid;
}

/* Parent-side helpers (not used between clone and exec). */
int hermetic_open_beneath(int dirfd, const char *path, int flags) {
    return open_beneath(dirfd, path, (uint64_t)flags);
}

#include <sys/vfs.h>
int hermetic_path_is_on_overlayfs(const char *path) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -1;
    return info.f_type == 0x794c7630 /* OVERLAYFS_SUPER_MAGIC */ ? 1 : 0;
}
