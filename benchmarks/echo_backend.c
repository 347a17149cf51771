/*
 * echo_backend.c - the byte-stream echo server behind both servers in the
 * wstrio benchmarks.
 *
 * One thread, epoll (level-triggered), non-blocking sockets, a unix stream
 * socket.  Every byte read from a connection is written back to it.  A write
 * that does not complete keeps the rest in a per-connection buffer and stops
 * reading that connection until the buffer drains (so memory stays bounded
 * and a slow reader gets backpressure, like a real backend).
 *
 *   echo_backend PATH [--backlog N]
 *
 * Prints "READY PATH" on stdout once listening; exits on SIGTERM/SIGINT.
 * Build: gcc -O2 -o echo_backend echo_backend.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define MAX_EVENTS 512

struct conn {
    int fd;
    char *pending;      /* unsent bytes (malloc'd) or NULL */
    size_t pending_len; /* bytes in pending */
    size_t pending_off; /* bytes of pending already sent */
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static char buf[BUF_SIZE];
static int listen_fd = -1;
static struct conn listen_tag;

static void close_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

static int set_events(int ep, struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Try to send what is pending; 1 = all sent, 0 = still pending, -1 = error. */
static int flush_pending(struct conn *c) {
    while (c->pending_off < c->pending_len) {
        ssize_t n = send(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -1;
        }
        c->pending_off += (size_t)n;
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    return 1;
}

static void on_readable(int ep, struct conn *c) {
    /* A few reads per wake-up, so one busy connection cannot starve others. */
    for (int i = 0; i < 4; i++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0) { close_conn(ep, c); return; }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            close_conn(ep, c);
            return;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            ssize_t w = send(c->fd, buf + off, (size_t)n - off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                close_conn(ep, c);
                return;
            }
            off += (size_t)w;
        }
        if (off < (size_t)n) {
            c->pending_len = (size_t)n - off;
            c->pending_off = 0;
            c->pending = malloc(c->pending_len);
            if (!c->pending) { close_conn(ep, c); return; }
            memcpy(c->pending, buf + off, c->pending_len);
            set_events(ep, c, EPOLLOUT);   /* stop reading until drained */
            return;
        }
        if ((size_t)n < sizeof buf) return;  /* drained the socket */
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH [--backlog N]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int backlog = 4096;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--backlog") && i + 1 < argc) backlog = atoi(argv[++i]);
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0) { perror("socket"); return 1; }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) { fprintf(stderr, "path too long\n"); return 1; }
    strcpy(addr.sun_path, path);
    unlink(path);
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
    if (listen(listen_fd, backlog) < 0) { perror("listen"); return 1; }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_tag};
    epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);

    printf("READY %s\n", path);
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    while (!stop) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 500);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == &listen_tag) {
                for (;;) {
                    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    struct conn *c = calloc(1, sizeof *c);
                    if (!c) { close(fd); continue; }
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0) { close(fd); free(c); }
                }
                continue;
            }
            struct conn *c = events[i].data.ptr;
            uint32_t e = events[i].events;
            if (c->pending) {
                if (e & (EPOLLERR | EPOLLHUP) && !(e & EPOLLOUT)) { close_conn(ep, c); continue; }
                int r = flush_pending(c);
                if (r < 0) { close_conn(ep, c); continue; }
                if (r == 1) set_events(ep, c, EPOLLIN);
                continue;
            }
            if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(ep, c);
        }
    }
    close(listen_fd);
    unlink(path);
    return 0;
}
