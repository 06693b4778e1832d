#ifndef HERMETIC_SANDBOX_H
#define HERMETIC_SANDBOX_H
/* The sandbox's child side is written here, in C: it runs between clone() and execve(), where a
   multi-threaded Swift process must run no Swift code. The Swift side (module Sandbox) prepares a
   complete plan; the child only applies it, in order, with plain system calls (no malloc, no stdio),
   and reports the first failure over a close-on-exec pipe. */
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/xattr.h> /* lgetxattr for reading overlayfs opaque markers from Swift */

int hermetic_sandbox_abi_version(void);

enum hermetic_op_kind {
    /* mount overlayfs (`data` = options) on the root mountpoint; `target` must be "." */
    HERMETIC_OP_OVERLAY = 1,
    HERMETIC_OP_BIND = 2,          /* bind host `source` onto `target` (inside the root) */
    HERMETIC_OP_BIND_READONLY = 3, /* same, then remount read-only */
    HERMETIC_OP_PROC = 4,          /* fresh procfs on `target` */
    HERMETIC_OP_TMPFS = 5,         /* tmpfs on `target`, `data` = options */
    HERMETIC_OP_DEVPTS = 6,        /* new devpts instance on `target`, `data` = options */
    HERMETIC_OP_MKDIR = 7,         /* mkdir `target` (mode), fine if it is already a directory */
    HERMETIC_OP_FILE = 8,          /* create empty regular file `target` (mode) as a mountpoint */
    HERMETIC_OP_SYMLINK = 9,       /* symlink `target` -> `source` (source is link text) */
    HERMETIC_OP_REMOUNT_READONLY = 10, /* bind `target` onto itself and make it read-only */
    /* bind host directory `source` (a copy of the root, where overlayfs cannot be mounted) on the root
       mountpoint, then set `mount_flags` on it; `target` must be "." */
    HERMETIC_OP_BIND_ROOT = 11,
};

/* op flags */
#define HERMETIC_OP_OPTIONAL 1u /* skip the op when its target does not exist */

struct hermetic_mount_op {
    uint32_t kind;
    uint32_t flags;
    uint64_t mount_flags; /* MS_NOSUID | MS_NODEV | ... for mounting kinds */
    uint32_t mode;
    const char *source;
    const char *target; /* relative to the root; never through a symlink */
    const char *data;
};

/* Where a child-side failure happened; reported with errno and the op index / path. */
enum hermetic_stage {
    HERMETIC_STAGE_STDIO = 1,
    HERMETIC_STAGE_CGROUP = 2,
    HERMETIC_STAGE_PROPAGATION = 3,
    HERMETIC_STAGE_MOUNT_OP = 4,
    HERMETIC_STAGE_PIVOT_ROOT = 5,
    HERMETIC_STAGE_HOSTNAME = 6,
    HERMETIC_STAGE_LOOPBACK = 7,
    HERMETIC_STAGE_CAPABILITIES = 8,
    HERMETIC_STAGE_GROUPS = 9,
    HERMETIC_STAGE_GID = 10,
    HERMETIC_STAGE_UID = 11,
    HERMETIC_STAGE_NO_NEW_PRIVS = 12,
    HERMETIC_STAGE_WORKDIR = 13,
    HERMETIC_STAGE_SECCOMP = 14,
    HERMETIC_STAGE_EXEC = 15,
    HERMETIC_STAGE_SESSION = 16,
};

struct hermetic_failure {
    int32_t stage;
    int32_t error;    /* errno */
    int32_t op_index; /* index into ops for HERMETIC_STAGE_MOUNT_OP, else -1 */
    char path[512];   /* the path involved, NUL-terminated, possibly truncated */
};

struct hermetic_plan {
    const char *root_path; /* host directory the root is assembled on (overlay mountpoint) */
    const struct hermetic_mount_op *ops;
    size_t op_count;
    const char *const *argv; /* NULL-terminated */
    const char *const *envp; /* NULL-terminated */
    uint32_t uid;
    uint32_t gid;
    const uint32_t *groups;
    size_t group_count;
    const char *working_directory; /* absolute, resolved inside the root */
    const char *hostname;
    int host_network;         /* 0: new network namespace with only loopback */
    uint64_t capabilities;    /* bit mask of capabilities kept (bounding, permitted, effective) */
    const void *seccomp_filter; /* struct sock_filter[] as exported by seccomp_export_bpf */
    size_t seccomp_filter_length; /* in bytes, a multiple of 8 */
    const char *cgroup_procs; /* cgroup.procs file to join before anything else, or NULL */
    int stdin_fd;
    int stdout_fd;
    int stderr_fd;
    /* RLIMIT_NPROC for the step when no pids cgroup could be had (0: none). The step keeps neither
       CAP_SYS_RESOURCE nor CAP_SYS_ADMIN, so the kernel enforces it even for uid 0. */
    uint64_t nproc_limit;
    /* 1 where setgroups(2) is denied (a user namespace whose gid_map the builder wrote itself, after
       writing "deny" to /proc/PID/setgroups): the step keeps the builder's (single) group instead. */
    int skip_setgroups;
};

/* Clones the child in new namespaces and returns its pid (> 0) or -errno. `*report_fd` receives the
   read end of the failure pipe (EOF once execve succeeded; a struct hermetic_failure otherwise);
   `*pidfd` a pidfd for the child. Both are close-on-exec and owned by the caller. */
/* 1 when `path` is on overlayfs (which overlayfs refuses as an upper layer), 0 when not, -1 on error. */
int hermetic_path_is_on_overlayfs(const char *path);

pid_t hermetic_sandbox_spawn(const struct hermetic_plan *plan, int *report_fd, int *pidfd);

/* unshare(CLONE_NEWUTS) + sethostname for the calling thread only (what it spawns inherits it); -errno. */
int hermetic_unshare_uts(const char *hostname);

/* Rootless mode: clones a child in a new user and mount namespace that waits until one byte arrives on
   `*release_fd` (written by the caller once the child's uid_map and gid_map are set), then execs `path`.
   Returns the child's pid or -errno; `*release_fd` is close-on-exec and owned by the caller. */
pid_t hermetic_userns_spawn(const char *path, const char *const *argv, const char *const *envp, int *release_fd);

/* Forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to `child` until it ends; returns its wait status or -errno. */
int hermetic_forward_signals_and_wait(pid_t child);

/* openat2(dirfd, path, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) with `flags` and
   O_CLOEXEC: a path inside a tree a step had, followed through no symlink. Returns an fd or -1 (errno). */
int hermetic_open_beneath(int dirfd, const char *path, int flags);

/* memfd_create is missing from Swift's Glibc overlay. */
int hermetic_memfd_create(const char *name);

/* renameat2 is missing from Swift's Glibc overlay; `flags` as the system call takes them
   (RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2). Returns 0 or -1 (errno). */
int hermetic_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);

/* Stops every other thread of this process where it is, for good: each gets `signal_number`, whose
   handler (installed here) waits forever with all signals blocked. For a signal handler that must clean
   up with nothing else of the process moving; the caller then ends the process. Waits up to
   `timeout_ms` for the threads to arrive; returns how many did, or -errno. No malloc, no stdio. */
int hermetic_park_other_threads(int signal_number, int timeout_ms);

#endif
