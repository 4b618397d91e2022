/* Races connect() against a descriptor swap: one thread keeps putting a UNIX stream socket, then
 * /dev/null, on descriptor 40; the main thread keeps connecting descriptor 40 to argv[1]. A
 * supervisor that looks at the descriptor and then lets the kernel run the connect loses this race
 * within milliseconds. Prints "escaped" and exits 0 if a connect ever succeeds. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdlib.h>
#include <unistd.h>

#define TARGET 40
static volatile int stop;
static int devnull;

/* Keeps each state for a moment, so that an unmediated connect lands on the socket often. */
static void dwell(void) {
    for (volatile int i = 0; i < 2000; i++) {
    }
}

static void *swap(void *unused) {
    (void)unused;
    while (!stop) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s >= 0) {
            dup2(s, TARGET);
            close(s);
        }
        dwell();
        dup2(devnull, TARGET);
        dwell();
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    int tries = atoi(argv[2]);
    devnull = open("/dev/null", O_RDONLY);
    pthread_t t;
    pthread_create(&t, NULL, swap, NULL);
    for (int i = 0; i < tries; i++) {
        if (connect(TARGET, (struct sockaddr *)&addr, sizeof addr) == 0) {
            stop = 1;
            printf("escaped after %d tries\n", i);
            return 0;
        }
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("held for %d tries\n", tries);
    return 1;
}
