/*
 * loadgen.c - WebSocket load generator for the wstrio benchmarks.
 *
 * One thread, epoll, non-blocking sockets, IPv4 loopback only.  RFC 6455
 * client framing: every frame is masked with a fresh random key, 7/16/64-bit
 * lengths, server frames are parsed incrementally (any split, continuation
 * frames, PING answered with PONG, CLOSE answered).  The handshake's
 * Sec-WebSocket-Accept is checked (SHA-1 + base64).
 *
 * The servers relay to a byte-stream echo backend, so message boundaries are
 * not preserved on the way back (lighttpd turns each backend read into one
 * frame).  The generator therefore treats the echo as a byte stream: the
 * echo of message k is "the next S payload bytes", whatever frames they come
 * in, and every received payload byte is compared (memcmp) with what was
 * sent.  Payloads are printable ASCII (valid UTF-8), so --text works too.  A
 * single wrong byte counts as "corrupt" and makes the exit status 3.
 *
 * Modes (every mode stops by itself):
 *   rtt         N connections, each sends one message and waits for its echo,
 *               repeatedly (closed loop).  msgs/s, MB/s, latency percentiles.
 *   throughput  N connections, W messages outstanding on each.  msgs/s, MB/s.
 *   storm       C connections in total, at most K at a time: connect,
 *               handshake, one echo, CLOSE 1000, wait for the server's CLOSE
 *               and TCP EOF.  handshakes/s (+ handshake latency).
 *   idle        open N connections (handshake + one echo each), print
 *               "READY <n>" on stdout, hold them for T seconds, exit.
 *
 * Output: human summary on stderr, one JSON object on the last stdout line.
 * Own CPU time (getrusage) over the measured interval is part of the JSON.
 *
 * Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ------------------------------------------------------------------ utils */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) { /* xorshift64* */
    uint64_t x = rng_state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static double cpu_seconds(struct rusage *ru, double *user, double *sys) {
    *user = ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6;
    *sys = ru->ru_stime.tv_sec + ru->ru_stime.tv_usec / 1e6;
    return *user + *sys;
}

/* ------------------------------------------------------------------ SHA-1 */

typedef struct { uint32_t h[5]; uint64_t len; uint8_t buf[64]; size_t n; } sha1_ctx;
#define ROL(x, c) (((x) << (c)) | ((x) >> (32 - (c))))
static void sha1_block(sha1_ctx *s, const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4*i] << 24 | (uint32_t)p[4*i+1] << 16 | (uint32_t)p[4*i+2] << 8 | p[4*i+3];
    for (int i = 16; i < 80; i++) w[i] = ROL(w[i-3] ^ w[i-8] ^ w[i-14] ^ w[i-16], 1);
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6; }
        uint32_t t = ROL(a, 5) + f + e + k + w[i];
        e = d; d = c; c = ROL(b, 30); b = a; a = t;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d; s->h[4] += e;
}
static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    sha1_ctx s = {{0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0}, 0, {0}, 0};
    uint64_t bits = (uint64_t)len * 8;
    while (len >= 64) { sha1_block(&s, data); data += 64; len -= 64; }
    uint8_t tail[128] = {0};
    memcpy(tail, data, len);
    tail[len] = 0x80;
    size_t tl = len + 9 <= 64 ? 64 : 128;
    for (int i = 0; i < 8; i++) tail[tl - 1 - i] = (uint8_t)(bits >> (8 * i));
    sha1_block(&s, tail);
    if (tl == 128) sha1_block(&s, tail + 64);
    for (int i = 0; i < 5; i++) {
        out[4*i] = s.h[i] >> 24; out[4*i+1] = s.h[i] >> 16; out[4*i+2] = s.h[i] >> 8; out[4*i+3] = s.h[i];
    }
}
static void base64(const uint8_t *in, size_t n, char *out) {
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i+1] << 8 : 0) | (i + 2 < n ? in[i+2] : 0);
        out[o++] = T[(v >> 18) & 63];
        out[o++] = T[(v >> 12) & 63];
        out[o++] = i + 1 < n ? T[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? T[v & 63] : '=';
    }
    out[o] = 0;
}

/* -------------------------------------------------------------- histogram */
/* Log-linear histogram of nanoseconds: exact below 128 ns, then 128
 * sub-buckets per power of two (< 0.8 % relative error). */
#define HSUB 128
#define HBUCKETS (HSUB + 40 * HSUB)
typedef struct { uint64_t count[HBUCKETS]; uint64_t n, max, sum; } hist_t;
static void hist_add(hist_t *h, uint64_t v) {
    size_t idx;
    if (v < HSUB) idx = v;
    else {
        int e = 63 - __builtin_clzll(v);          /* >= 7 */
        int shift = e - 7;
        idx = HSUB + (size_t)shift * HSUB + ((v >> shift) - HSUB);
        if (idx >= HBUCKETS) idx = HBUCKETS - 1;
    }
    h->count[idx]++; h->n++; h->sum += v;
    if (v > h->max) h->max = v;
}
static double hist_value(size_t idx) {
    if (idx < HSUB) return (double)idx;
    size_t shift = (idx - HSUB) / HSUB, sub = (idx - HSUB) % HSUB;
    double lo = (double)((HSUB + sub) << shift);
    return lo + (double)(1ull << shift) / 2.0;    /* bucket midpoint */
}
static double hist_pct(const hist_t *h, double p) {
    if (!h->n) return 0;
    uint64_t want = (uint64_t)(p * (double)h->n + 0.5);
    if (want < 1) want = 1;
    uint64_t acc = 0;
    for (size_t i = 0; i < HBUCKETS; i++) {
        acc += h->count[i];
        if (acc >= want) {
            double v = hist_value(i);
            return v > (double)h->max ? (double)h->max : v;
        }
    }
    return (double)h->max;
}

/* ----------------------------------------------------------------- config */

enum mode { M_RTT, M_THROUGHPUT, M_STORM, M_IDLE };
static const char *mode_names[] = {"rtt", "throughput", "storm", "idle"};

static struct {
    enum mode mode;
    char host[64];
    int port;
    char path[256];
    int connections;     /* rtt/throughput/idle */
    size_t size;         /* payload bytes per message */
    int window;          /* throughput: outstanding messages per connection */
    double duration;     /* rtt/throughput: measured seconds; storm: time limit */
    double warmup;       /* rtt/throughput */
    int total;           /* storm: connections in total */
    int concurrency;     /* connections being opened at once */
    double hold;         /* idle: seconds to hold */
    double conn_timeout; /* per-connection progress timeout (storm/open) */
    int text;
    int verify;
    int src_ips;
    int quiet;
    double spin_us;      /* busy-poll this long before blocking in epoll_wait */
} cfg = {
    .mode = M_RTT, .host = "127.0.0.1", .port = 8080, .path = "/ws/",
    .connections = 1, .size = 32, .window = 1, .duration = 5, .warmup = 1,
    .total = 2000, .concurrency = 64, .hold = 5, .conn_timeout = 10,
    .text = 0, .verify = 1, .src_ips = 1, .quiet = 0, .spin_us = 200,
};

/* ------------------------------------------------------------ connections */

enum state { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSING, ST_WAIT_EOF, ST_DONE, ST_FAILED };

typedef struct conn {
    int fd, id;
    enum state state;
    uint64_t t_connect, t_progress;
    /* output */
    uint8_t *obuf; size_t olen, ooff, ocap; int epollout;
    /* handshake */
    char hs[4096]; size_t hslen; char accept[32];
    /* frame parser */
    uint8_t hdr[14]; int hdr_have, hdr_need, in_payload;
    uint64_t rem; int opcode;
    uint8_t ctl[125]; int ctl_len;
    int got_close;
    /* messages */
    uint64_t tx_msg, rx_msg; size_t rx_off;
    uint64_t *send_ts;
    int idle_ready;
} conn_t;

static struct {
    uint64_t msgs, bytes;            /* completed echoes in the measured interval */
    uint64_t msgs_all;               /* every completed echo */
    uint64_t handshakes, completed;  /* storm */
    uint64_t pings;                  /* server PINGs answered */
    uint64_t err_connect, err_handshake, err_corrupt, err_protocol, err_eof, err_timeout, err_closed;
    hist_t lat, hs_lat;
} st;

enum phase { PH_OPEN, PH_WARMUP, PH_MEASURE, PH_END };
static enum phase phase = PH_OPEN;

static int ep;
static uint8_t *pattern;      /* printable ASCII, size + 256 bytes */
static conn_t **conns;
static int nconns, started, finished, open_count, opening;
static struct sockaddr_in dst;
static char request[1024];
static uint8_t *rbuf;
#define RBUF_SIZE (256 * 1024)

static inline const uint8_t *msg_payload(const conn_t *c, uint64_t k) {
    return pattern + (((uint64_t)c->id * 7 + k * 13) & 255);
}

static void ensure_out(conn_t *c, size_t extra) {
    if (c->ooff && c->ooff == c->olen) c->ooff = c->olen = 0;
    if (c->olen + extra <= c->ocap) return;
    if (c->ooff) {
        memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
        c->olen -= c->ooff; c->ooff = 0;
        if (c->olen + extra <= c->ocap) return;
    }
    size_t cap = c->ocap ? c->ocap : 256;
    while (cap < c->olen + extra) cap *= 2;
    c->obuf = realloc(c->obuf, cap);
    if (!c->obuf) { perror("realloc"); exit(1); }
    c->ocap = cap;
}

/* Append one masked client frame. */
static void append_frame(conn_t *c, int opcode, const uint8_t *payload, size_t n) {
    ensure_out(c, n + 14);
    uint8_t *p = c->obuf + c->olen;
    size_t h = 0;
    p[h++] = 0x80 | (uint8_t)opcode;
    if (n < 126) p[h++] = 0x80 | (uint8_t)n;
    else if (n < 65536) { p[h++] = 0x80 | 126; p[h++] = n >> 8; p[h++] = n & 255; }
    else { p[h++] = 0x80 | 127; for (int i = 7; i >= 0; i--) p[h++] = (uint8_t)((uint64_t)n >> (8 * i)); }
    uint32_t key;
    do key = (uint32_t)rng(); while (!key);
    memcpy(p + h, &key, 4);
    h += 4;
    uint8_t *q = p + h;
    memcpy(q, payload, n);
    uint64_t k64 = (uint64_t)key | ((uint64_t)key << 32);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { uint64_t v; memcpy(&v, q + i, 8); v ^= k64; memcpy(q + i, &v, 8); }
    const uint8_t *kb = (const uint8_t *)&key;
    for (; i < n; i++) q[i] ^= kb[i & 3];
    c->olen += h + n;
}

static void send_message(conn_t *c) {
    if (c->send_ts) c->send_ts[c->tx_msg % (uint64_t)cfg.window] = now_ns();
    append_frame(c, cfg.text ? 1 : 2, msg_payload(c, c->tx_msg), cfg.size);
    c->tx_msg++;
}

static void set_out_interest(conn_t *c, int want) {
    if (want == c->epollout) return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->epollout = want;
}

static void fail(conn_t *c, uint64_t *counter, const char *why);

static int flush_out(conn_t *c) {
    while (c->ooff < c->olen) {
        ssize_t n = send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { set_out_interest(c, 1); return 0; }
            fail(c, &st.err_eof, "send failed");
            return -1;
        }
        c->ooff += (size_t)n;
    }
    c->ooff = c->olen = 0;
    set_out_interest(c, 0);
    return 0;
}

static void release(conn_t *c) {
    if (c->fd >= 0) { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); c->fd = -1; }
    if (c->state == ST_OPEN || c->state == ST_CLOSING || c->state == ST_WAIT_EOF) open_count--;
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE) opening--;
    free(c->obuf); c->obuf = NULL; c->olen = c->ooff = c->ocap = 0;
    finished++;
}

static int errors_reported;
static void fail(conn_t *c, uint64_t *counter, const char *why) {
    if (c->state == ST_DONE || c->state == ST_FAILED) return;
    (*counter)++;
    if (!cfg.quiet && errors_reported < 10) {
        fprintf(stderr, "loadgen: connection %d: %s%s%s\n", c->id, why,
                errno && counter != &st.err_corrupt && counter != &st.err_protocol ? ": " : "",
                errno && counter != &st.err_corrupt && counter != &st.err_protocol ? strerror(errno) : "");
        if (++errors_reported == 10) fprintf(stderr, "loadgen: (further errors not shown)\n");
    }
    release(c);
    c->state = ST_FAILED;
}

static void finish_ok(conn_t *c) {
    release(c);
    c->state = ST_DONE;
}

static void start_connection(conn_t *c) {
    c->t_connect = c->t_progress = now_ns();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    opening++;
    started++;
    c->state = ST_CONNECTING;
    if (c->fd < 0) { fail(c, &st.err_connect, "socket"); return; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (cfg.src_ips > 1) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7F000001u + (uint32_t)(c->id % cfg.src_ips));
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        bind(c->fd, (struct sockaddr *)&src, sizeof src);
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    c->epollout = 1;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) { fail(c, &st.err_connect, "epoll_ctl"); return; }
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        fail(c, &st.err_connect, "connect");
        return;
    }
}

static void send_handshake(conn_t *c) {
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 8) { uint64_t r = rng(); memcpy(raw + i, &r, 8); }
    char key[32];
    base64(raw, 16, key);
    char cat[128];
    int n = snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t digest[20];
    sha1((uint8_t *)cat, (size_t)n, digest);
    base64(digest, 20, c->accept);
    ensure_out(c, 1200);
    int len = snprintf((char *)c->obuf + c->olen, 1200,
                       "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                       cfg.path, cfg.host, cfg.port, key);
    c->olen += (size_t)len;
    c->state = ST_HANDSHAKE;
    c->hslen = 0;
    flush_out(c);
}

/* The connection finished its handshake: what happens next depends on mode. */
static void on_open(conn_t *c) {
    c->state = ST_OPEN;
    opening--;
    open_count++;
    uint64_t t = now_ns();
    hist_add(&st.hs_lat, t - c->t_connect);
    st.handshakes++;
    c->hdr_have = 0; c->hdr_need = 2; c->in_payload = 0;
    if (cfg.mode == M_STORM || cfg.mode == M_IDLE) {
        send_message(c);          /* one echo proves the tunnel works */
    } else if (phase == PH_WARMUP || phase == PH_MEASURE) {
        for (int i = 0; i < cfg.window; i++) send_message(c);
    }
}

static void on_message_done(conn_t *c, uint64_t t) {
    uint64_t k = c->rx_msg;
    c->rx_msg++;
    c->rx_off = 0;
    st.msgs_all++;
    if (cfg.mode == M_RTT || cfg.mode == M_THROUGHPUT) {
        if (phase == PH_MEASURE) {
            st.msgs++;
            st.bytes += cfg.size;
            hist_add(&st.lat, t - c->send_ts[k % (uint64_t)cfg.window]);
        }
        if (phase == PH_WARMUP || phase == PH_MEASURE) send_message(c);
    } else if (cfg.mode == M_STORM) {
        append_frame(c, 8, (const uint8_t *)"\x03\xe8", 2);   /* CLOSE 1000 */
        c->state = ST_CLOSING;
    } else { /* idle */
        c->idle_ready = 1;
    }
}

/* Payload bytes of a server data frame: compare with what was sent. */
static int on_data(conn_t *c, const uint8_t *p, size_t n) {
    while (n) {
        if (c->rx_msg >= c->tx_msg) { fail(c, &st.err_protocol, "echo bytes nobody sent"); return -1; }
        size_t chunk = cfg.size - c->rx_off;
        if (chunk > n) chunk = n;
        if (cfg.verify && memcmp(p, msg_payload(c, c->rx_msg) + c->rx_off, chunk) != 0) {
            errno = 0;
            fail(c, &st.err_corrupt, "echo payload differs from what was sent");
            return -1;
        }
        c->rx_off += chunk;
        p += chunk; n -= chunk;
        if (c->rx_off == cfg.size) on_message_done(c, now_ns());
    }
    return 0;
}

static int on_control(conn_t *c) {
    if (c->opcode == 9) { st.pings++; append_frame(c, 10, c->ctl, (size_t)c->ctl_len); return 0; }   /* PING -> PONG */
    if (c->opcode == 10) return 0;
    /* CLOSE */
    if (c->state == ST_CLOSING) { c->got_close = 1; c->state = ST_WAIT_EOF; return 0; }
    int code = c->ctl_len >= 2 ? (c->ctl[0] << 8 | c->ctl[1]) : 1005;
    errno = 0;
    char why[64];
    snprintf(why, sizeof why, "server sent CLOSE %d", code);
    fail(c, &st.err_closed, why);
    return -1;
}

/* Feed bytes from the server to the frame parser. */
static int feed_frames(conn_t *c, const uint8_t *p, size_t n) {
    while (n) {
        if (!c->in_payload) {
            while (n && c->hdr_have < c->hdr_need) {
                c->hdr[c->hdr_have++] = *p++; n--;
                if (c->hdr_have == 2) {
                    if (c->hdr[1] & 0x80) { errno = 0; fail(c, &st.err_protocol, "masked server frame"); return -1; }
                    int l7 = c->hdr[1] & 0x7F;
                    c->hdr_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
                }
            }
            if (c->hdr_have < c->hdr_need) return 0;
            int op = c->hdr[0] & 0x0F;
            if (c->hdr[0] & 0x70) { errno = 0; fail(c, &st.err_protocol, "RSV bits set"); return -1; }
            uint64_t len = c->hdr[1] & 0x7F;
            if (len == 126) len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
            else if (len == 127) { len = 0; for (int i = 0; i < 8; i++) len = len << 8 | c->hdr[2 + i]; }
            if (op >= 8) {
                if (len > 125 || !(c->hdr[0] & 0x80) || (op != 8 && op != 9 && op != 10)) {
                    errno = 0; fail(c, &st.err_protocol, "bad control frame"); return -1;
                }
            } else if (op > 2) { errno = 0; fail(c, &st.err_protocol, "unknown opcode"); return -1; }
            c->opcode = op; c->rem = len; c->ctl_len = 0;
            c->in_payload = 1;
            c->hdr_have = 0; c->hdr_need = 2;
        }
        size_t take = c->rem < n ? (size_t)c->rem : n;
        if (take) {
            if (c->opcode >= 8) { memcpy(c->ctl + c->ctl_len, p, take); c->ctl_len += (int)take; }
            else if (on_data(c, p, take) < 0) return -1;
            p += take; n -= take; c->rem -= take;
        }
        if (c->rem == 0) {
            c->in_payload = 0;
            if (c->opcode >= 8 && on_control(c) < 0) return -1;
        }
    }
    return 0;
}

static int on_handshake_bytes(conn_t *c, const uint8_t *p, size_t n) {
    size_t room = sizeof c->hs - 1 - c->hslen;
    size_t take = n < room ? n : room;
    memcpy(c->hs + c->hslen, p, take);
    c->hslen += take;
    c->hs[c->hslen] = 0;
    char *end = strstr(c->hs, "\r\n\r\n");
    if (!end) {
        if (c->hslen >= sizeof c->hs - 1) { errno = 0; fail(c, &st.err_handshake, "response headers too long"); return -1; }
        return 0;
    }
    size_t head = (size_t)(end + 4 - c->hs);
    if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
        errno = 0;
        char why[80];
        snprintf(why, sizeof why, "handshake refused: %.40s", c->hs);
        for (char *q = why; *q; q++) if (*q == '\r' || *q == '\n') *q = ' ';
        fail(c, &st.err_handshake, why);
        return -1;
    }
    int ok = 0;
    for (char *line = strstr(c->hs, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (!strncasecmp(h, "Sec-WebSocket-Accept:", 21)) {
            h += 21;
            while (*h == ' ' || *h == '\t') h++;
            ok = !strncmp(h, c->accept, strlen(c->accept));
        }
    }
    if (!ok) { errno = 0; fail(c, &st.err_handshake, "bad or missing Sec-WebSocket-Accept"); return -1; }
    /* Bytes after the headers are already WebSocket frames. */
    size_t consumed_before = c->hslen - take;        /* bytes of hs from earlier reads */
    size_t used_now = head - consumed_before;          /* bytes of p that belong to the head */
    on_open(c);
    if (c->state != ST_OPEN) return -1;
    if (used_now < n) return feed_frames(c, p + used_now, n - used_now);
    return 0;
}

static void on_readable(conn_t *c) {
    for (int iter = 0; iter < 8; iter++) {
        ssize_t n = recv(c->fd, rbuf, RBUF_SIZE, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            fail(c, &st.err_eof, "recv failed");
            return;
        }
        if (n == 0) {
            if (c->state == ST_WAIT_EOF) {
                st.completed++;
                finish_ok(c);
            } else {
                errno = 0;
                fail(c, c->state == ST_HANDSHAKE ? &st.err_handshake : &st.err_eof,
                     c->state == ST_HANDSHAKE ? "EOF during handshake" : "unexpected EOF");
            }
            return;
        }
        c->t_progress = now_ns();
        int r = c->state == ST_HANDSHAKE ? on_handshake_bytes(c, rbuf, (size_t)n) : feed_frames(c, rbuf, (size_t)n);
        if (r < 0 || c->fd < 0) return;
        if ((size_t)n < RBUF_SIZE) break;
    }
    if (c->fd >= 0 && c->olen > c->ooff) flush_out(c);
}

static void on_event(conn_t *c, uint32_t events) {
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) { errno = err; fail(c, &st.err_connect, "connect"); return; }
        if (!(events & EPOLLOUT)) return;
        send_handshake(c);
        return;
    }
    if (events & EPOLLOUT && c->olen > c->ooff) {
        if (flush_out(c) < 0) return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
}

/* ------------------------------------------------------------------- main */

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s MODE [options]     MODE = rtt | throughput | storm | idle\n"
            "  --port P            server port on 127.0.0.1 (default 8080)\n"
            "  --host ADDR         IPv4 loopback address (default 127.0.0.1)\n"
            "  --path PATH         request path (default /ws/)\n"
            "  -c, --connections N connections (rtt/throughput/idle; default 1)\n"
            "  -s, --size BYTES    payload per message (default 32)\n"
            "  -w, --window W      throughput: messages outstanding per connection (default 1)\n"
            "  -d, --duration SEC  rtt/throughput: measured time; storm: time limit (default 5)\n"
            "  --warmup SEC        rtt/throughput: unmeasured time first (default 1)\n"
            "  -n, --total C       storm: connections in total (default 2000)\n"
            "  --concurrency K     connections being opened at once (default 64)\n"
            "  --hold SEC          idle: seconds to keep the connections open (default 5)\n"
            "  --timeout SEC       per-connection progress timeout (default 10)\n"
            "  --text              send text frames (default binary)\n"
            "  --no-verify         do not compare echoed bytes (to measure the checker's cost)\n"
            "  --src-ips K         spread connections over 127.0.0.1..127.0.0.K (more ports)\n"
            "  --spin-us US        busy-poll this long before blocking (default 200; 0 = never)\n"
            "  --quiet             no summary on stderr\n",
            argv0);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(argv[0]); return 2; }
    int mi = -1;
    for (int i = 0; i < 4; i++) if (!strcmp(argv[1], mode_names[i])) mi = i;
    if (mi < 0) { usage(argv[0]); return 2; }
    cfg.mode = (enum mode)mi;
    static struct option opts[] = {
        {"port", 1, 0, 'p'}, {"host", 1, 0, 'H'}, {"path", 1, 0, 'P'}, {"connections", 1, 0, 'c'},
        {"size", 1, 0, 's'}, {"window", 1, 0, 'w'}, {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'W'},
        {"total", 1, 0, 'n'}, {"concurrency", 1, 0, 'k'}, {"hold", 1, 0, 'h'}, {"timeout", 1, 0, 't'},
        {"text", 0, 0, 'T'}, {"no-verify", 0, 0, 'V'}, {"src-ips", 1, 0, 'S'}, {"quiet", 0, 0, 'q'},
        {"spin-us", 1, 0, 'B'},
        {0, 0, 0, 0}};
    int o;
    optind = 2;
    while ((o = getopt_long(argc, argv, "c:s:w:d:n:", opts, NULL)) != -1) {
        switch (o) {
        case 'p': cfg.port = atoi(optarg); break;
        case 'H': snprintf(cfg.host, sizeof cfg.host, "%s", optarg); break;
        case 'P': snprintf(cfg.path, sizeof cfg.path, "%s", optarg); break;
        case 'c': cfg.connections = atoi(optarg); break;
        case 's': cfg.size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'w': cfg.window = atoi(optarg); break;
        case 'd': cfg.duration = atof(optarg); break;
        case 'W': cfg.warmup = atof(optarg); break;
        case 'n': cfg.total = atoi(optarg); break;
        case 'k': cfg.concurrency = atoi(optarg); break;
        case 'h': cfg.hold = atof(optarg); break;
        case 't': cfg.conn_timeout = atof(optarg); break;
        case 'T': cfg.text = 1; break;
        case 'V': cfg.verify = 0; break;
        case 'S': cfg.src_ips = atoi(optarg); break;
        case 'q': cfg.quiet = 1; break;
        case 'B': cfg.spin_us = atof(optarg); break;
        default: usage(argv[0]); return 2;
        }
    }
    if (cfg.size < 1 || cfg.window < 1 || cfg.connections < 1 || cfg.concurrency < 1 || cfg.total < 1 ||
        cfg.src_ips < 1 || cfg.src_ips > 254) {
        fprintf(stderr, "loadgen: sizes, counts and windows must be >= 1\n");
        return 2;
    }
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)cfg.port);
    if (inet_pton(AF_INET, cfg.host, &dst.sin_addr) != 1 || (ntohl(dst.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "loadgen: --host must be an IPv4 loopback address (127.x.x.x)\n");
        return 2;
    }
    if (cfg.mode != M_THROUGHPUT) cfg.window = 1;
    rng_state ^= now_ns() ^ ((uint64_t)getpid() << 32);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }

    /* Printable ASCII pattern (valid UTF-8 for text mode). */
    pattern = malloc(cfg.size + 256);
    rbuf = malloc(RBUF_SIZE);
    if (!pattern || !rbuf) { perror("malloc"); return 1; }
    for (size_t i = 0; i < cfg.size + 256; i++) pattern[i] = (uint8_t)(33 + rng() % 94);

    nconns = cfg.mode == M_STORM ? cfg.total : cfg.connections;
    conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        conns[i] = calloc(1, sizeof(conn_t));
        conns[i]->id = i;
        conns[i]->fd = -1;
        conns[i]->state = ST_FAILED;   /* not started yet; see `started` */
        if (cfg.mode == M_RTT || cfg.mode == M_THROUGHPUT)
            conns[i]->send_ts = calloc((size_t)cfg.window, sizeof(uint64_t));
    }
    (void)request;

    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event events[1024];
    struct rusage ru0, ru1;
    uint64_t t_begin = now_ns(), t_measure = 0, t_end = 0, t_phase = t_begin;
    uint64_t t_open_done = 0, t_hold_end = 0;
    uint64_t conn_timeout_ns = (uint64_t)(cfg.conn_timeout * 1e9);
    uint64_t last_scan = t_begin;
    int ready_printed = 0;
    getrusage(RUSAGE_SELF, &ru0);
    if (cfg.mode == M_STORM) { puts("PHASE measure"); fflush(stdout); }
    /* Hard bound on the whole run, whatever happens. */
    double hard_limit = cfg.conn_timeout + 30 +
                        (cfg.mode == M_STORM ? cfg.duration : cfg.mode == M_IDLE ? cfg.hold + 60 : cfg.warmup + cfg.duration);
    uint64_t t_hard = t_begin + (uint64_t)(hard_limit * 1e9);
    int timed_out = 0;
    uint64_t spin_ns = cfg.mode == M_IDLE ? 0 : (uint64_t)(cfg.spin_us * 1e3), spin_total_ns = 0;

    for (;;) {
        uint64_t t = now_ns();
        /* Start connections, at most `concurrency` being opened at once. */
        while (started < nconns && opening < cfg.concurrency) start_connection(conns[started]);

        if (t > t_hard) { timed_out = 1; break; }
        if (cfg.mode == M_RTT || cfg.mode == M_THROUGHPUT) {
            if (phase == PH_OPEN && started == nconns && opening == 0) {
                if (open_count == 0) break;
                phase = PH_WARMUP; t_phase = t;
                for (int i = 0; i < nconns; i++) {
                    conn_t *c = conns[i];
                    if (c->state != ST_OPEN) continue;
                    for (int k = 0; k < cfg.window; k++) send_message(c);
                    flush_out(c);
                }
            } else if (phase == PH_WARMUP && t - t_phase >= (uint64_t)(cfg.warmup * 1e9)) {
                phase = PH_MEASURE; t_measure = t_phase = t;
                getrusage(RUSAGE_SELF, &ru0);
                puts("PHASE measure");   /* lets the harness sample the server's CPU */
                fflush(stdout);
            } else if (phase == PH_MEASURE && t - t_phase >= (uint64_t)(cfg.duration * 1e9)) {
                phase = PH_END; t_end = t;
                getrusage(RUSAGE_SELF, &ru1);
                puts("PHASE end");
                fflush(stdout);
                break;
            }
            if (phase != PH_OPEN && open_count == 0) { t_end = t; getrusage(RUSAGE_SELF, &ru1); break; }
        } else if (cfg.mode == M_STORM) {
            if (finished == nconns) { t_end = t; break; }
            if (t - t_begin > (uint64_t)(cfg.duration * 1e9)) { t_end = t; timed_out = 1; break; }
        } else { /* idle */
            int ready = 0;
            for (int i = 0; i < started && !ready_printed; i++) ready += conns[i]->idle_ready && conns[i]->fd >= 0;
            if (!ready_printed && started == nconns && opening == 0 && ready + (finished) >= nconns) {
                /* every connection is open + echoed, or failed */
                int pending = 0;
                for (int i = 0; i < nconns; i++) if (conns[i]->fd >= 0 && !conns[i]->idle_ready) pending++;
                if (!pending) {
                    t_open_done = t;
                    t_hold_end = t + (uint64_t)(cfg.hold * 1e9);
                    printf("READY %d\n", ready);
                    fflush(stdout);
                    ready_printed = 1;
                }
            }
            if (ready_printed && t >= t_hold_end) { t_end = t; break; }
        }

        /* Per-connection progress timeouts (opening, storm closes, idle echo). */
        if (t - last_scan > 100000000ull && phase != PH_MEASURE && phase != PH_WARMUP) {
            last_scan = t = now_ns();
            for (int i = 0; i < started; i++) {
                conn_t *c = conns[i];
                if (c->fd < 0 || c->idle_ready) continue;
                if (t > c->t_progress && t - c->t_progress > conn_timeout_ns) {
                    errno = 0;
                    fail(c, &st.err_timeout, "timed out");
                }
            }
        }

        /* Busy-poll briefly before sleeping: waking an idle (virtual) core
         * costs tens of microseconds, which would otherwise be added to
         * every round trip.  Time spent spinning is reported separately. */
        int n = epoll_wait(ep, events, 1024, 0);
        if (n == 0 && spin_ns) {
            uint64_t s0 = now_ns(), s1 = s0;
            while (n == 0 && s1 - s0 < spin_ns) {
                n = epoll_wait(ep, events, 1024, 0);
                s1 = now_ns();
            }
            if (phase == PH_MEASURE || cfg.mode == M_STORM) spin_total_ns += s1 - s0;
        }
        if (n == 0) n = epoll_wait(ep, events, 1024, 20);
        if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (c->fd < 0) continue;
            on_event(c, events[i].events);
        }
    }
    if (!t_end) t_end = now_ns();
    if (cfg.mode != M_RTT && cfg.mode != M_THROUGHPUT) { puts("PHASE end"); fflush(stdout); }
    if (cfg.mode == M_STORM || cfg.mode == M_IDLE || !t_measure) {
        getrusage(RUSAGE_SELF, &ru1);
        t_measure = t_begin;
    }
    if (cfg.mode == M_IDLE) t_measure = t_begin;

    double wall = (double)(t_end - t_measure) / 1e9;
    double u0, s0, u1, s1;
    cpu_seconds(&ru0, &u0, &s0);
    cpu_seconds(&ru1, &u1, &s1);
    double cpu_user = u1 - u0, cpu_sys = s1 - s0;
    double cpu_pct = wall > 0 ? 100.0 * (cpu_user + cpu_sys) / wall : 0;
    double spin_s = (double)spin_total_ns / 1e9;
    double busy_pct = wall > 0 ? 100.0 * (cpu_user + cpu_sys - spin_s) / wall : 0;
    if (busy_pct < 0) busy_pct = 0;
    uint64_t errors = st.err_connect + st.err_handshake + st.err_corrupt + st.err_protocol + st.err_eof +
                      st.err_timeout + st.err_closed;

    double msgs_per_s = wall > 0 ? (double)st.msgs / wall : 0;
    double mb_per_s = wall > 0 ? (double)st.bytes / wall / 1e6 : 0;
    double hs_per_s = 0;
    if (cfg.mode == M_STORM && wall > 0) hs_per_s = (double)st.completed / wall;
    const hist_t *h = cfg.mode == M_STORM || cfg.mode == M_IDLE ? &st.hs_lat : &st.lat;

    if (!cfg.quiet) {
        fprintf(stderr, "loadgen %s: %.2f s", mode_names[cfg.mode], wall);
        if (cfg.mode == M_RTT || cfg.mode == M_THROUGHPUT)
            fprintf(stderr, ", %llu msgs, %.0f msgs/s, %.1f MB/s, latency p50 %.1f us p90 %.1f us p99 %.1f us max %.1f us",
                    (unsigned long long)st.msgs, msgs_per_s, mb_per_s, hist_pct(h, .5) / 1e3, hist_pct(h, .9) / 1e3,
                    hist_pct(h, .99) / 1e3, (double)h->max / 1e3);
        else if (cfg.mode == M_STORM)
            fprintf(stderr, ", %llu/%d complete, %.0f handshakes/s, handshake p50 %.1f us p99 %.1f us",
                    (unsigned long long)st.completed, nconns, hs_per_s, hist_pct(h, .5) / 1e3, hist_pct(h, .99) / 1e3);
        else
            fprintf(stderr, ", %llu open, opened in %.2f s", (unsigned long long)st.handshakes,
                    t_open_done ? (double)(t_open_done - t_begin) / 1e9 : 0.0);
        fprintf(stderr, "; loadgen CPU %.2f s (%.0f%% of one core, %.0f%% excluding %.2f s of idle spinning)%s\n",
                cpu_user + cpu_sys, cpu_pct, busy_pct, spin_s, errors ? " -- ERRORS" : "");
    }
    printf("{\"mode\":\"%s\",\"connections\":%d,\"size\":%zu,\"window\":%d,\"wall_s\":%.4f,"
           "\"msgs\":%llu,\"msgs_per_s\":%.1f,\"mb_per_s\":%.3f,"
           "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"max_us\":%.2f,\"mean_us\":%.2f,"
           "\"handshakes\":%llu,\"completed\":%llu,\"handshakes_per_s\":%.1f,\"open_s\":%.3f,"
           "\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"cpu_pct\":%.1f,\"spin_s\":%.3f,\"busy_pct\":%.1f,"
           "\"errors\":%llu,\"err_connect\":%llu,\"err_handshake\":%llu,\"err_corrupt\":%llu,"
           "\"err_protocol\":%llu,\"err_eof\":%llu,\"err_timeout\":%llu,\"err_closed\":%llu,"
           "\"pings\":%llu,\"timed_out\":%s,\"verify\":%s}\n",
           mode_names[cfg.mode], nconns, cfg.size, cfg.window, wall,
           (unsigned long long)st.msgs, msgs_per_s, mb_per_s,
           hist_pct(h, .5) / 1e3, hist_pct(h, .9) / 1e3, hist_pct(h, .99) / 1e3, (double)h->max / 1e3,
           h->n ? (double)h->sum / (double)h->n / 1e3 : 0.0,
           (unsigned long long)st.handshakes, (unsigned long long)st.completed, hs_per_s,
           t_open_done ? (double)(t_open_done - t_begin) / 1e9 : 0.0,
           cpu_user, cpu_sys, cpu_pct, spin_s, busy_pct,
           (unsigned long long)errors, (unsigned long long)st.err_connect, (unsigned long long)st.err_handshake,
           (unsigned long long)st.err_corrupt, (unsigned long long)st.err_protocol, (unsigned long long)st.err_eof,
           (unsigned long long)st.err_timeout, (unsigned long long)st.err_closed,
           (unsigned long long)st.pings, timed_out ? "true" : "false", cfg.verify ? "true" : "false");
    fflush(stdout);
    if (st.err_corrupt) return 3;
    if (errors || timed_out) return 1;
    return 0;
}
