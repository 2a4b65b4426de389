/*
 * Attacks a guest's own processes can try against `vsctl exec`, run from
 * inside a guest by tests/runtime_security.rs. Static, no dependencies
 * (busybox guests have no libc). Prints one line per finding; the tests
 * decide what is a failure.
 *
 *   attack tiocsti
 *       Push a marker line into the controlling terminal (/dev/tty) and into
 *       any of fds 0-2 that is a terminal (TIOCSTI), as a guest would to
 *       make the operator's shell run a command after vsctl returns.
 *   attack fds
 *       Print what fds 0-2 are (readlink of /proc/self/fd/N).
 *   attack race SECONDS OUTFILE
 *       For SECONDS, watch /proc for new processes and try to ptrace-attach
 *       to each and to open its /proc/PID/exe. Every success on a process
 *       that is not plainly the guest's own (its uid unmapped in the guest's
 *       user namespace, or its executable not on the guest's filesystems)
 *       is written to OUTFILE as "attach PID ..." or "exe PID ...", and
 *       "done tried=N hits=M" at the end (SIGINT or SIGTERM end it early).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MARKER "echo vsctl-tiocsti-marker\n"

static int sti(int fd) {
    const char *p;
    for (p = MARKER; *p; p++)
        if (ioctl(fd, TIOCSTI, p) < 0)
            return -errno;
    return 0;
}

static int do_tiocsti(void) {
    int tty = open("/dev/tty", O_RDWR | O_NOCTTY);
    if (tty < 0) {
        printf("dev-tty: open failed: %s\n", strerror(errno));
    } else {
        int r = sti(tty);
        printf("dev-tty: %s\n", r ? strerror(-r) : "INJECTED");
    }
    for (int fd = 0; fd < 3; fd++) {
        int r = sti(fd);
        printf("fd%d: %s\n", fd, r ? strerror(-r) : "INJECTED");
    }
    fflush(stdout);
    return 0;
}

static int do_fds(void) {
    for (int fd = 0; fd < 3; fd++) {
        char path[64], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = 0;
        printf("fd%d %s\n", fd, n < 0 ? strerror(errno) : target);
    }
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* The uid a process runs as, as this guest sees it (-1 if unknown). */
static long uid_of(int pid) {
    char path[64], line[256];
    long uid = -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Uid:\t%ld", &uid) == 1)
            break;
    fclose(f);
    return uid;
}

static dev_t guest_dev;

/* Whether an open /proc/PID/exe is a file of the guest's own filesystem. */
static int foreign_exe(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev != guest_dev;
}

static volatile sig_atomic_t stop;
static void on_stop(int sig) { (void)sig; stop = 1; }

#define MAX_SEEN 65536
static unsigned char seen[MAX_SEEN / 8];

static int do_race(double seconds, const char *outfile) {
    struct stat root;
    FILE *out = fopen(outfile, "w");
    int self = getpid(), hits = 0, tried = 0;
    if (!out || stat("/bin/busybox", &root) < 0) {
        perror("race setup");
        return 2;
    }
    guest_dev = root.st_dev;
    setvbuf(out, NULL, _IOLBF, 0);
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    double end = now() + seconds;
    while (!stop && now() < end) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        if (!d)
            return 2;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == self || pid >= MAX_SEEN)
                continue;
            if (seen[pid / 8] & (1 << (pid % 8)))
                continue;
            seen[pid / 8] |= 1 << (pid % 8);
            tried++;
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            int exe = open(path, O_PATH | O_CLOEXEC);
            if (exe >= 0) {
                if (foreign_exe(exe)) {
                    fprintf(out, "exe %d uid=%ld\n", pid, uid_of(pid));
                    hits++;
                }
                close(exe);
            }
            /* SEIZE + INTERRUPT rather than ATTACH: no SIGSTOP is left
             * pending to stop the victim for good after the detach. */
            if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
                int status;
                ptrace(PTRACE_INTERRUPT, pid, 0, 0);
                waitpid(pid, &status, __WALL);
                long uid = uid_of(pid);
                int foreign = 0;
                exe = open(path, O_PATH | O_CLOEXEC);
                if (exe >= 0) {
                    foreign = foreign_exe(exe);
                    close(exe);
                }
                if (uid == 65534 || foreign) {
                    fprintf(out, "attach %d uid=%ld foreign-exe=%d\n", pid, uid, foreign);
                    hits++;
                }
                ptrace(PTRACE_DETACH, pid, 0, 0);
            }
        }
        closedir(d);
    }
    fprintf(out, "done tried=%d hits=%d\n", tried, hits);
    fclose(out);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "tiocsti"))
        return do_tiocsti();
    if (argc >= 2 && !strcmp(argv[1], "fds"))
        return do_fds();
    if (argc >= 4 && !strcmp(argv[1], "race"))
        return do_race(atof(argv[2]), argv[3]);
    fprintf(stderr, "usage: attack tiocsti|fds|race SECONDS OUTFILE\n");
    return 2;
}
