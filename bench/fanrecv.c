/*
 * fanrecv: the fan-out benchmark's subscribers, read in C.
 *
 * The load generator (bench/loadgen.py) opens the subscribers' WebSockets and subscribes
 * them in Python, then hands their sockets to this process over a Unix socket
 * (SCM_RIGHTS) and stops reading them itself. From then on this process reads them: it
 * checks that every subscriber gets every seq once and in order, counts receipts per seq,
 * tells the load generator how far every subscriber has got, and records each receipt's
 * publish-to-receive time. In Python that path cost ~8 us of the load generator's core
 * per receipt (two thirds of it the interpreter and the event loop), enough to make the
 * instrument the bottleneck at 1,000 subscribers; here it is the kernel's recv() and a
 * few hundred instructions.
 *
 * Only what the fan-out needs is understood: unmasked server frames, text messages that
 * carry "seq" and "content" (topichub's message event; Socket.IO's event wraps the same
 * JSON), pings (answered with pongs, Engine.IO's "2" with "3") and close frames.
 * Anything else stops the process with a message on stderr: the benchmark then fails
 * instead of reporting numbers it did not measure.
 *
 * Control (one line each way, on the Unix socket given as argv[1]):
 *   A + fds      add counted subscribers        -> "a <subscribers>"
 *   L 1          start recording latencies      -> "l 0"
 *   L 0 <path>   stop; write them to <path> as native int64 nanoseconds -> "l <count>"
 *   E            end: per subscriber "s <first> <last> <count> <errors> <close code>
 *                <anomalies...>", then "e", and exit
 * and, unasked, "c <watermark> <total>" whenever every subscriber has got a higher seq
 * (watermark: every subscriber has every seq up to it; total: receipts so far).
 */
#define _GNU_SOURCE
#define PROGRAM "fanrecv"
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "wsframe.h"

#define RING (1 << 16) /* receipts per seq, by seq % RING; far more than in flight */
#define READ_SIZE (256 * 1024)
#define FDS_PER_MESSAGE 253 /* the kernel's SCM_MAX_FD */
#define MAX_ANOMALIES 5
#define EVENTS 256

typedef struct {
    int fd;
    int gone;
    int close_code;
    int64_t first, next, count, errors;
    int64_t anomalies[MAX_ANOMALIES][2];
    int n_anomalies;
    unsigned char *partial; /* the start of a frame cut short by the last read */
    size_t partial_len;
} Sub;

static Sub *subs;
static int n_subs, cap_subs;
static int32_t ring[RING];
static int64_t total;
static int64_t watermark = -1; /* -1 until the first receipt */
static int64_t sent_watermark = -1;
static int lat_on;
static int64_t *lat;
static size_t n_lat, cap_lat;
static int ctl;
static char ctl_buf[8192];
static size_t ctl_len;
static unsigned char read_buf[MAX_FRAME + 16 + READ_SIZE]; /* a partial frame, then a read */

static void reply(const char *text, size_t len) {
    while (len) {
        ssize_t n = send(ctl, text, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            die_errno("control write");
        }
        text += n;
        len -= (size_t)n;
    }
}

static void replyf(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void replyf(const char *format, ...) {
    char line[512];
    va_list args;
    va_start(args, format);
    int len = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    reply(line, (size_t)len);
}

/* A client control frame (see control_frame), written without waiting. */
static void send_frame(Sub *s, int opcode, const unsigned char *payload, size_t len) {
    unsigned char frame[2 + 4 + 125];
    size_t size = control_frame(frame, opcode, payload, len);
    if (send(s->fd, frame, size, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)size)
        fprintf(stderr, "fanrecv: could not answer a control frame: %s\n", strerror(errno));
}

static void drop(Sub *s, int epoll) {
    s->gone = 1;
    epoll_ctl(epoll, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd); /* our copy: the load generator still holds the connection */
}

static void on_text(Sub *s, const unsigned char *data, size_t len, int64_t received) {
    const unsigned char *end = data + len;
    const unsigned char *at = memmem(data, len, "\"seq\":", 6);
    if (at == NULL || memmem(data, len, "\"result\":", 9) != NULL) {
        if (len == 1 && data[0] == '2') send_frame(s, 1, (const unsigned char *)"3", 1);
        return; /* a reply or an event the fan-out does not count */
    }
    int64_t seq = parse_int(at + 6, end);
    if (seq != s->next) {
        if (s->next == 0) {
            s->first = seq;
        } else {
            s->errors++;
            if (s->n_anomalies < MAX_ANOMALIES) {
                s->anomalies[s->n_anomalies][0] = s->next;
                s->anomalies[s->n_anomalies][1] = seq;
                s->n_anomalies++;
            }
        }
    }
    s->next = seq + 1;
    s->count++;
    if (lat_on) {
        const unsigned char *content = memmem(data, len, "\"content\":\"", 11);
        if (content == NULL) die("a message without content");
        if (n_lat == cap_lat) {
            cap_lat = cap_lat ? cap_lat * 2 : 1 << 20;
            lat = realloc(lat, cap_lat * sizeof *lat);
            if (lat == NULL) die("out of memory");
        }
        lat[n_lat++] = received - parse_int(content + 11, end);
    }
    total++;
    if (watermark < 0) watermark = seq - 1;
    ring[seq % RING]++;
}

static void on_readable(Sub *s, int epoll) {
    size_t have = s->partial_len;
    if (have) memcpy(read_buf, s->partial, have);
    ssize_t n = recv(s->fd, read_buf + have, READ_SIZE, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        drop(s, epoll);
        return;
    }
    if (n == 0) {
        drop(s, epoll);
        return;
    }
    int64_t received = now_ns();
    size_t end = have + (size_t)n, pos = 0;
    Frame f;
    while (frame_at(read_buf + pos, end - pos, &f)) {
        switch (f.opcode) {
        case 1:
            on_text(s, f.payload, f.len, received);
            break;
        case 8:
            s->close_code = close_code_of(&f);
            send_frame(s, 8, f.payload, f.len >= 2 ? 2 : 0);
            drop(s, epoll);
            return;
        case 9:
            send_frame(s, 10, f.payload, f.len);
            break;
        case 10:
            break;
        default:
            die("a binary or unknown frame");
        }
        pos += f.size;
    }
    s->partial_len = end - pos;
    if (s->partial_len) {
        s->partial = realloc(s->partial, s->partial_len);
        if (s->partial == NULL) die("out of memory");
        memcpy(s->partial, read_buf + pos, s->partial_len);
    }
}

static void add_subs(const int *fds, int n, int epoll) {
    for (int i = 0; i < n; i++) {
        if (n_subs == cap_subs) {
            cap_subs = cap_subs ? cap_subs * 2 : 1024;
            subs = realloc(subs, (size_t)cap_subs * sizeof *subs);
            if (subs == NULL) die("out of memory");
        }
        Sub *s = &subs[n_subs];
        memset(s, 0, sizeof *s);
        s->fd = fds[i];
        struct epoll_event event = {.events = EPOLLIN, .data.u64 = (uint64_t)n_subs};
        if (epoll_ctl(epoll, EPOLL_CTL_ADD, fds[i], &event) < 0) die_errno("epoll_ctl");
        n_subs++;
    }
}

static void write_latencies(const char *path) {
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(lat, sizeof *lat, n_lat, f) != n_lat || fclose(f) != 0)
        die_errno("writing the latencies");
}

static void end(void) {
    for (int i = 0; i < n_subs; i++) {
        Sub *s = &subs[i];
        char line[512];
        int len = snprintf(line, sizeof line, "s %lld %lld %lld %lld %d", (long long)s->first,
                           (long long)(s->next - 1), (long long)s->count, (long long)s->errors,
                           s->close_code);
        for (int k = 0; k < s->n_anomalies; k++)
            len += snprintf(line + len, sizeof line - (size_t)len, " %lld %lld",
                            (long long)s->anomalies[k][0], (long long)s->anomalies[k][1]);
        line[len++] = '\n';
        reply(line, (size_t)len);
    }
    reply("e\n", 2);
    exit(0);
}

static void on_command(char *line, const int *fds, int n_fds, int epoll) {
    if (line[0] == 'A') {
        add_subs(fds, n_fds, epoll);
        replyf("a %d\n", n_subs);
    } else if (line[0] == 'L' && line[2] == '1') {
        n_lat = 0;
        lat_on = 1;
        replyf("l 0\n");
    } else if (line[0] == 'L' && line[2] == '0') {
        lat_on = 0;
        write_latencies(line + 4);
        replyf("l %zu\n", n_lat);
    } else if (line[0] == 'E') {
        end();
    } else {
        die("an unknown command");
    }
}

static void on_control(int epoll) {
    char space[CMSG_SPACE(FDS_PER_MESSAGE * sizeof(int))];
    struct iovec iov = {ctl_buf + ctl_len, sizeof ctl_buf - ctl_len - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = space,
                         .msg_controllen = sizeof space};
    ssize_t n = recvmsg(ctl, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        die_errno("control read");
    }
    if (n == 0) exit(1); /* the load generator is gone */
    const int *fds = NULL;
    int n_fds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            fds = (const int *)CMSG_DATA(c);
            n_fds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) die("file descriptors cut short");
    ctl_len += (size_t)n;
    ctl_buf[ctl_len] = 0;
    char *line = ctl_buf, *nl;
    /* The load generator waits for the answer to each "A" before the next, so the fds
       of one recvmsg belong to its one "A" line. */
    while ((nl = strchr(line, '\n')) != NULL) {
        *nl = 0;
        on_command(line, fds, n_fds, epoll);
        fds = NULL;
        n_fds = 0;
        line = nl + 1;
    }
    ctl_len = strlen(line);
    memmove(ctl_buf, line, ctl_len);
}

static void advance(void) {
    if (watermark < 0) return;
    while (ring[(watermark + 1) % RING] >= n_subs) {
        ring[(watermark + 1) % RING] = 0;
        watermark++;
    }
    if (watermark != sent_watermark) {
        sent_watermark = watermark;
        replyf("c %lld %lld\n", (long long)watermark, (long long)total);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: fanrecv <control socket fd>");
    ctl = atoi(argv[1]);
    int epoll = epoll_create1(EPOLL_CLOEXEC);
    if (epoll < 0) die_errno("epoll_create1");
    struct epoll_event event = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    if (epoll_ctl(epoll, EPOLL_CTL_ADD, ctl, &event) < 0) die_errno("epoll_ctl");
    struct epoll_event events[EVENTS];
    for (;;) {
        int n = epoll_wait(epoll, events, EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die_errno("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            uint64_t which = events[i].data.u64;
            if (which == UINT64_MAX)
                on_control(epoll);
            else if (!subs[which].gone)
                on_readable(&subs[which], epoll);
        }
        advance();
    }
}
