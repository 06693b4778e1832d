/* Running the builder itself in a new user namespace when it is not root (rootless mode).
 *
 * The child is a copy of one thread of the multi-threaded Swift process (see sandbox_child.c for the
 * rules): it only waits until the parent has written its uid and gid maps, then execs the builder again.
 * Its new mount namespace is owned by the new user namespace, so the builder may mount there.
 */
#define _GNU_SOURCE
#include "hermetic_sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

pid_t hermetic_userns_spawn(const char *path, const char *const *argv, const char *const *envp, int *release_fd) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -errno;
    long pid = syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD, NULL, NULL, NULL, 0);
    if (pid == 0) {
        close(fds[1]);
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        char byte = 0;
        long count;
        do {
            count = read(fds[0], &byte, 1);
        } while (count < 0 && errno == EINTR);
        if (count != 1) _exit(127); /* the parent gave up (maps not written) */
        for (int sig = 1; sig < 65; sig++) {
            if (sig == SIGKILL || sig == SIGSTOP) continue;
            signal(sig, SIG_DFL);
        }
        sigset_t empty;
        sigemptyset(&empty);
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, sizeof(uint64_t));
        execve(path, (char *const *)argv, (char *const *)envp);
        static const char message[] = "error: rootless mode: cannot execute the builder again in its user namespace\n";
        (void)!write(2, message, sizeof message - 1);
        _exit(127);
    }
    int saved = errno;
    close(fds[0]);
    if (pid < 0) {
        close(fds[1]);
        return -saved;
    }
    *release_fd = fds[1];
    return (pid_t)pid;
}

/* The forwarding handler needs the child's pid; a signal handler can only reach it through a static. */
static volatile pid_t forwarded_child = 0;

static void forward_signal(int sig) {
    if (forwarded_child > 0) kill(forwarded_child, sig);
}

int hermetic_forward_signals_and_wait(pid_t child) {
    forwarded_child = child;
    const int signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = forward_signal;
        sigemptyset(&action.sa_mask);
        action.sa_flags = SA_RESTART;
        sigaction(signals[i], &action, NULL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, signals[i]);
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) return -errno;
    }
    return status;
}
