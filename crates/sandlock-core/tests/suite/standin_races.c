/* Races against the supervisor's stand-ins for Landlock features. Each mode has a second thread
 * change what the main thread's syscall refers to, as fast as it can, while the main thread keeps
 * making the call. A supervisor that looked at the arguments and then let the kernel run the call
 * would lose within milliseconds. Each mode prints "escaped ..." and exits 0 if the forbidden
 * effect ever happened, "held ..." and exits 1 otherwise.
 *
 *   truncate RO RW N   the path buffer flips between RO (read-only) and RW (writable); the main
 *                      thread calls truncate(buf, 0) N times; escaped if RO is ever emptied.
 *   bind PORT_OK PORT_NO N
 *                      the port in a sockaddr_in flips between an allowed and a forbidden one; the
 *                      main thread binds a fresh TCP socket N times; escaped if one ends up bound
 *                      to PORT_NO.
 *   pidfd HOSTPID N    descriptor 40 flips between a pidfd of our own child (which ignores SIGTERM)
 *                      and /proc/HOSTPID; the main thread sends SIGTERM through descriptor 40 N
 *                      times. The caller checks whether HOSTPID survived; this mode always prints
 *                      "sent".
 *   nested DIR OUTSIDE N
 *                      DIR/inner (a writable root nested in the writable root DIR) keeps trading
 *                      places (RENAME_EXCHANGE) with DIR/link, a symlink to the directory OUTSIDE;
 *                      the main thread truncates DIR/inner/f; escaped if OUTSIDE/f is emptied.
 *   chmod DIR OUTSIDE N
 *                      with umask 0, the main thread binds a UNIX socket at DIR/s and removes it,
 *                      while the second thread keeps putting a symlink to the file OUTSIDE there;
 *                      escaped if OUTSIDE's mode changes.
 *   overwrite OK TARGET N
 *                      the path buffer flips between OK (a file the kernel may write) and TARGET (a
 *                      file the policy grants read-only, which a copy-on-write view shows as
 *                      writable); the main thread opens the buffer with O_WRONLY | O_TRUNC and
 *                      writes "overwritten" N times. Always prints "done"; the caller checks
 *                      TARGET on the host.
 *   view OK SECRET MARKER N
 *                      the path buffer flips between OK (a path the kernel may open) and SECRET (a
 *                      host file a filesystem view hides behind a mount); the main thread opens
 *                      and reads the buffer N times; escaped if it ever reads MARKER.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;
/* Cycles the flipping thread has completed: the main thread starts once it is racing. */
static volatile long cycles;

/* Whether to go on: at least `n` tries, and at least 300 ms, so that the flipping thread gets CPU
 * time beside the main one even on a loaded machine. */
static int more(int i, int n) {
    static struct timespec t0;
    if (i == 0) clock_gettime(CLOCK_MONOTONIC, &t0);
    if (i < n) return 1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 < 300;
}

static void start_flipping(pthread_t *t, void *(*flip)(void *)) {
    pthread_create(t, NULL, flip, NULL);
    while (cycles < 2) {
    }
}

static void dwell(void) {
    for (volatile int i = 0; i < 500; i++) {
    }
}

/* truncate */
static char path_buf[4096];
static char ro_path[4096], rw_path[4096];

static void *flip_path(void *unused) {
    (void)unused;
    while (!stop) {
        strcpy(path_buf, rw_path);
        dwell();
        strcpy(path_buf, ro_path);
        dwell();
        cycles++;
    }
    return NULL;
}

static int race_truncate(const char *ro, const char *rw, int n) {
    snprintf(ro_path, sizeof ro_path, "%s", ro);
    snprintf(rw_path, sizeof rw_path, "%s", rw);
    strcpy(path_buf, rw_path);
    pthread_t t;
    start_flipping(&t, flip_path);
    int truncated = 0;
    int i;
    for (i = 0; more(i, n); i++) {
        if (truncate(path_buf, 0) == 0) truncated++;
        struct stat st;
        if (stat(ro, &st) == 0 && st.st_size == 0) {
            stop = 1;
            printf("escaped after %d tries\n", i);
            return 0;
        }
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("held for %d tries (%d truncations of the writable file)\n", i, truncated);
    return 1;
}

/* bind */
static struct sockaddr_in bind_addr;
static unsigned short port_ok, port_no;

static void *flip_port(void *unused) {
    (void)unused;
    /* Volatile, or the compiler drops the first store as dead. */
    volatile unsigned short *port = &bind_addr.sin_port;
    while (!stop) {
        *port = htons(port_ok);
        dwell();
        *port = htons(port_no);
        dwell();
        cycles++;
    }
    return NULL;
}

static int race_bind(int ok, int no, int n) {
    port_ok = (unsigned short)ok;
    port_no = (unsigned short)no;
    bind_addr.sin_family = AF_INET;
    bind_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind_addr.sin_port = htons(port_ok);
    pthread_t t;
    start_flipping(&t, flip_port);
    int bound = 0;
    int i;
    for (i = 0; more(i, n); i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) {
            perror("socket");
            return 2;
        }
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, (struct sockaddr *)&bind_addr, sizeof bind_addr) == 0) {
            struct sockaddr_in got;
            socklen_t len = sizeof got;
            getsockname(s, (struct sockaddr *)&got, &len);
            if (ntohs(got.sin_port) == port_no) {
                stop = 1;
                printf("escaped after %d tries\n", i);
                return 0;
            }
            bound++;
        }
        close(s);
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("held for %d tries (%d binds to the allowed port)\n", i, bound);
    return 1;
}

/* pidfd */
#define SLOT 40
static int own_fd, host_fd;

static void *flip_fd(void *unused) {
    (void)unused;
    while (!stop) {
        dup2(own_fd, SLOT);
        dwell();
        dup2(host_fd, SLOT);
        dwell();
        cycles++;
    }
    return NULL;
}

static int race_pidfd(const char *host_pid, int n) {
    pid_t child = fork();
    if (child == 0) {
        signal(SIGTERM, SIG_IGN);
        for (;;) pause();
    }
    own_fd = (int)syscall(SYS_pidfd_open, child, 0);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/%s", host_pid);
    host_fd = open(proc, O_DIRECTORY | O_RDONLY);
    if (own_fd < 0 || host_fd < 0) {
        printf("setup failed: pidfd %d, %s %d (%s)\n", own_fd, proc, host_fd, strerror(errno));
        kill(child, SIGKILL);
        return 2;
    }
    pthread_t t;
    start_flipping(&t, flip_fd);
    int delivered = 0;
    int i;
    for (i = 0; more(i, n); i++) {
        if (syscall(SYS_pidfd_send_signal, SLOT, SIGTERM, NULL, 0) == 0) delivered++;
    }
    stop = 1;
    pthread_join(t, NULL);
    kill(child, SIGKILL);
    printf("sent %d of %d\n", delivered, i);
    return 0;
}

/* nested */
static char inner_path[4096], link_path[4096];

static void *flip_nested(void *unused) {
    (void)unused;
    while (!stop) {
        syscall(SYS_renameat2, AT_FDCWD, inner_path, AT_FDCWD, link_path, 2 /* RENAME_EXCHANGE */);
        dwell();
        cycles++;
    }
    return NULL;
}

static int race_nested(const char *dir, const char *outside, int n) {
    snprintf(inner_path, sizeof inner_path, "%s/inner", dir);
    snprintf(link_path, sizeof link_path, "%s/link", dir);
    char target[4096], victim[4096];
    snprintf(target, sizeof target, "%s/inner/f", dir);
    snprintf(victim, sizeof victim, "%s/f", outside);
    pthread_t t;
    start_flipping(&t, flip_nested);
    int i;
    for (i = 0; more(i, n); i++) {
        truncate(target, 0);
        struct stat st;
        if (stat(victim, &st) == 0 && st.st_size == 0) {
            stop = 1;
            printf("escaped after %d tries\n", i);
            return 0;
        }
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("held for %d tries\n", i);
    return 1;
}

/* chmod */
static char sock_path[4096], victim_path[4096];

static void *flip_link(void *unused) {
    (void)unused;
    while (!stop) {
        symlink(victim_path, sock_path);
        dwell();
        unlink(sock_path);
        cycles++;
    }
    return NULL;
}

static int race_chmod(const char *dir, const char *outside, int n) {
    snprintf(sock_path, sizeof sock_path, "%s/s", dir);
    snprintf(victim_path, sizeof victim_path, "%s", outside);
    struct stat before;
    if (stat(outside, &before) != 0) return 2;
    umask(0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock_path);
    pthread_t t;
    start_flipping(&t, flip_link);
    int i, bound = 0;
    for (i = 0; more(i, n); i++) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(s, (struct sockaddr *)&addr, sizeof addr) == 0) {
            bound++;
            unlink(sock_path);
        }
        close(s);
        struct stat now;
        if (stat(outside, &now) == 0 && now.st_mode != before.st_mode) {
            stop = 1;
            printf("escaped after %d tries\n", i);
            return 0;
        }
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("held for %d tries (%d binds)\n", i, bound);
    return 1;
}

/* view */
static int race_view(const char *ok, const char *secret, const char *marker, int n) {
    snprintf(ro_path, sizeof ro_path, "%s", secret);
    snprintf(rw_path, sizeof rw_path, "%s", ok);
    strcpy(path_buf, rw_path);
    pthread_t t;
    start_flipping(&t, flip_path);
    int opened = 0;
    int i;
    for (i = 0; more(i, n); i++) {
        int fd = open(path_buf, O_RDONLY);
        if (fd < 0) continue;
        opened++;
        char buf[4096];
        ssize_t got = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (got > 0) {
            buf[got] = 0;
            if (strstr(buf, marker)) {
                stop = 1;
                printf("escaped after %d tries\n", i);
                return 0;
            }
        }
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("held for %d tries (%d opens)\n", i, opened);
    return 1;
}

/* overwrite */
static int race_overwrite(const char *ok, const char *target, int n) {
    snprintf(ro_path, sizeof ro_path, "%s", target);
    snprintf(rw_path, sizeof rw_path, "%s", ok);
    strcpy(path_buf, rw_path);
    pthread_t t;
    start_flipping(&t, flip_path);
    int written = 0;
    int i;
    for (i = 0; more(i, n); i++) {
        int fd = open(path_buf, O_WRONLY | O_TRUNC);
        if (fd < 0) continue;
        if (write(fd, "overwritten", 11) == 11) written++;
        close(fd);
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("done %d tries (%d writes)\n", i, written);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "truncate") == 0)
        return race_truncate(argv[2], argv[3], atoi(argv[4]));
    if (argc == 5 && strcmp(argv[1], "bind") == 0)
        return race_bind(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "pidfd") == 0) return race_pidfd(argv[2], atoi(argv[3]));
    if (argc == 5 && strcmp(argv[1], "nested") == 0)
        return race_nested(argv[2], argv[3], atoi(argv[4]));
    if (argc == 5 && strcmp(argv[1], "chmod") == 0)
        return race_chmod(argv[2], argv[3], atoi(argv[4]));
    if (argc == 5 && strcmp(argv[1], "overwrite") == 0)
        return race_overwrite(argv[2], argv[3], atoi(argv[4]));
    if (argc == 6 && strcmp(argv[1], "view") == 0)
        return race_view(argv[2], argv[3], argv[4], atoi(argv[5]));
    fprintf(stderr, "usage: %s truncate RO RW N | bind OK NO N | pidfd HOSTPID N\n", argv[0]);
    return 2;
}
