/* Process-wide controls the builder's signal handling needs and Swift's Glibc overlay lacks: renameat2,
 * and stopping every other thread before a cleanup that nothing may race with.
 */
#define _GNU_SOURCE
#include "hermetic_sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int hermetic_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

/* How many threads reached park(). A signal handler can reach nothing else: this is the one piece of
   process-wide state, written only with atomics. */
static int parked_threads;

static void park(int signal_number) {
    (void)signal_number;
    __atomic_add_fetch(&parked_threads, 1, __ATOMIC_SEQ_CST);
    for (;;) pause();
}

enum { MAX_THREADS = 4096 };

/* Signals each thread in /proc/self/task that is not the caller and not in `done`; returns how many new
   ones were signalled, or -errno. */
static int signal_new_threads(int signal_number, pid_t self, pid_t *done, int *done_count) {
    int directory = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory < 0) return -errno;
    int signalled = 0;
    char buffer[4096] __attribute__((aligned(8)));
    for (;;) {
        long count = syscall(SYS_getdents64, directory, buffer, sizeof buffer);
        if (count <= 0) break;
        for (long offset = 0; offset < count;) {
            struct dirent64 *entry = (struct dirent64 *)(buffer + offset);
            offset += entry->d_reclen;
            pid_t tid = 0;
            const char *c = entry->d_name;
            if (*c < '0' || *c > '9') continue;
            for (; *c >= '0' && *c <= '9'; c++) tid = tid * 10 + (*c - '0');
            if (tid == self) continue;
            int seen = 0;
            for (int index = 0; index < *done_count; index++) seen |= done[index] == tid;
            if (seen || *done_count == MAX_THREADS) continue;
            if (syscall(SYS_tgkill, getpid(), tid, signal_number) == 0) {
                done[(*done_count)++] = tid;
                signalled++;
            }
        }
    }
    close(directory);
    return signalled;
}

int hermetic_park_other_threads(int signal_number, int timeout_ms) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = park;
    sigfillset(&action.sa_mask);
    if (sigaction(signal_number, &action, NULL) != 0) return -errno;
    pid_t self = (pid_t)syscall(SYS_gettid);
    pid_t done[MAX_THREADS];
    int done_count = 0;
    int sent = 0;
    for (int waited = 0; waited <= timeout_ms; waited++) {
        /* Again each round: a thread may have been started meanwhile by one not yet parked. */
        int more = signal_new_threads(signal_number, self, done, &done_count);
        if (more < 0) return more;
        sent += more;
        if (more == 0 && __atomic_load_n(&parked_threads, __ATOMIC_SEQ_CST) >= sent) break;
        struct timespec millisecond = {0, 1000000};
        nanosleep(&millisecond, NULL);
    }
    return __atomic_load_n(&parked_threads, __ATOMIC_SEQ_CST);
}
