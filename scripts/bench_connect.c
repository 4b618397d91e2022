/*
 * What one TCP connect costs, bare and in a sandbox, and what the kernel's seccomp user
 * notification costs on this machine by itself. Built and run by scripts/bench_net.py; each mode
 * prints one number, microseconds per operation (mean over N).
 *
 *   bench_connect connect N PORT [nb]   connect to 127.0.0.2:PORT N times (non-blocking with nb:
 *                                       connect, wait until writable, then close), the time
 *                                       spent in connect() itself
 *   bench_connect denied N PORT         N connects to 127.0.0.2:PORT on one socket, each refused
 *                                       (by the sandbox's policy, or by the kernel outside one)
 *   bench_connect notify N ADDFD SYNC   a child makes N getppid() calls under a filter that
 *                                       notifies them; this process answers each (ADDFD=1:
 *                                       after installing a descriptor in the child first, as a
 *                                       connect is answered) with SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
 *                                       set (SYNC=1) or not; the child's time per call
 *
 * Not a test: it only measures.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP 1
#endif

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static struct sockaddr_in target(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.2", &a.sin_addr);
    return a;
}

static int connect_loop(int n, int port, int nonblocking) {
    struct sockaddr_in a = target(port);
    double in_connect = 0;
    for (int i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
        if (s < 0) {
            perror("socket");
            return 1;
        }
        double t = now_us();
        int r = connect(s, (struct sockaddr *)&a, sizeof a);
        in_connect += now_us() - t;
        if (r < 0 && !(nonblocking && errno == EINPROGRESS)) {
            perror("connect");
            return 1;
        }
        if (nonblocking) {
            struct pollfd p = {s, POLLOUT, 0};
            int err = 0;
            socklen_t len = sizeof err;
            if (poll(&p, 1, 5000) != 1 || getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
                fprintf(stderr, "connect did not complete: %s\n", strerror(err));
                return 1;
            }
        }
        close(s);
    }
    printf("%.2f\n", in_connect / n);
    return 0;
}

static int denied_loop(int n, int port) {
    struct sockaddr_in a = target(port);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    double t = now_us();
    for (int i = 0; i < n; i++) {
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
            fprintf(stderr, "connect to port %d succeeded; it must be refused\n", port);
            return 1;
        }
    }
    printf("%.2f\n", (now_us() - t) / n);
    return 0;
}

/* Sends or receives one descriptor over a UNIX socket. */
static void send_fd(int sock, int fd) {
    char c[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec io = {"x", 1};
    struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof c};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    if (sendmsg(sock, &m, 0) != 1)
        _exit(1);
}

static int recv_fd(int sock) {
    char c[CMSG_SPACE(sizeof(int))] = {0};
    char x;
    struct iovec io = {&x, 1};
    struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof c};
    if (recvmsg(sock, &m, 0) != 1 || !CMSG_FIRSTHDR(&m))
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
    return fd;
}

static int notify_loop(int n, int addfd, int sync) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {sizeof f / sizeof f[0], f};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
            _exit(1);
        int fd = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
        if (fd < 0)
            _exit(1);
        send_fd(sv[1], fd);
        close(fd);
        char go;
        if (read(sv[1], &go, 1) != 1)
            _exit(1);
        double t = now_us();
        for (int i = 0; i < n; i++)
            syscall(__NR_getppid);
        double per = (now_us() - t) / n;
        if (write(sv[1], &per, sizeof per) != sizeof per)
            _exit(1);
        _exit(0);
    }
    close(sv[1]);
    int fd = recv_fd(sv[0]);
    if (fd < 0)
        return 1;
    if (sync && ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, (__u64)SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)) {
        perror("SECCOMP_IOCTL_NOTIF_SET_FLAGS");
        return 1;
    }
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (write(sv[0], "g", 1) != 1)
        return 1;
    for (int i = 0; i < n; i++) {
        struct seccomp_notif req;
        memset(&req, 0, sizeof req);
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) != 1 || ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req))
            return 1;
        if (addfd) {
            struct seccomp_notif_addfd a = {
                .id = req.id, .flags = SECCOMP_ADDFD_FLAG_SETFD, .srcfd = null, .newfd = 100};
            if (ioctl(fd, SECCOMP_IOCTL_NOTIF_ADDFD, &a) < 0)
                return 1;
        }
        struct seccomp_notif_resp resp = {.id = req.id};
        if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp))
            return 1;
    }
    double per;
    if (read(sv[0], &per, sizeof per) != sizeof per)
        return 1;
    waitpid(pid, NULL, 0);
    printf("%.2f\n", per);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "connect"))
        return connect_loop(atoi(argv[2]), atoi(argv[3]), argc > 4 && !strcmp(argv[4], "nb"));
    if (argc == 4 && !strcmp(argv[1], "denied"))
        return denied_loop(atoi(argv[2]), atoi(argv[3]));
    if (argc == 5 && !strcmp(argv[1], "notify"))
        return notify_loop(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: bench_connect connect N PORT [nb] | denied N PORT | notify N ADDFD SYNC\n");
    return 2;
}
