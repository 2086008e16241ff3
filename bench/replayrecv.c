/*
 * replayrecv: the pending-replay benchmark's reader, in C.
 *
 * One user with a backlog connects and reads its whole pending replay. In Python (picows
 * and a callback per frame) that reader cost ~7 us of the load generator's core per
 * message on session 9's machine and was 99-100 % busy: the instrument, not the server,
 * set the rate. Here it is the kernel's recv() and a few hundred instructions a message.
 *
 * It does its own WebSocket handshake, because the server starts the replay in the same
 * burst as the handshake's response and its `connected` event: a reader handed a socket
 * after a handshake made elsewhere would find part of the replay already read.
 *
 * Usage: replayrecv <host> <port> <request target> <expected messages> <server pid>
 *
 * It reads until it has <expected> message events, then 200 ms more (anything arriving
 * then is counted as extra: the replay must hold exactly what was pending), sends a close
 * and prints one JSON object on stdout:
 *   times (CLOCK_MONOTONIC ns, as Python's time.monotonic_ns): connect (before the TCP
 *   connect), connected (the `connected` event read), first and last message;
 *   this process's and the server's CPU seconds (user + system; the server's system time
 *   also alone) at `connected` and at the last message; the announced pending count, messages received, how many carried
 *   "pending":true, extra messages, other events, the close code received (0: none), and
 *   per topic [name, first seq, last seq, count, seqs out of order].
 * Anything it does not understand stops it with a message on stderr and exit status 2.
 */
#define _GNU_SOURCE
#define PROGRAM "replayrecv"
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "wsframe.h"

#define READ_SIZE (256 * 1024)
#define MAX_TOPICS 4096
#define MAX_NAME 128

typedef struct {
    char name[MAX_NAME];
    size_t len;
    int64_t first, next, count, errors;
} Topic;

static Topic topics[MAX_TOPICS];
static int n_topics;
static int last_topic = -1;
static int fd;
static unsigned char buf[MAX_FRAME + 16 + READ_SIZE];
static size_t have;

static int64_t expected, received, pending_flags, extra, others, announced = -1;
static int close_code;
static int64_t t_connect, t_connected, t_first, t_last;
static double cpu_connected, cpu_last, srv_connected, srv_last, srv_sys_connected, srv_sys_last;
static const char *server_pid;

/* utime + stime of the server; stime also in *sys. */
static double server_cpu(double *sys) {
    double user;
    process_cpu(server_pid, &user, sys);
    return user + *sys;
}

static void send_all(const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die_errno("send");
        }
        p += n;
        len -= (size_t)n;
    }
}

/* A client control frame (see control_frame). */
static void send_frame(int opcode, const unsigned char *payload, size_t len) {
    unsigned char frame[2 + 4 + 125];
    send_all(frame, control_frame(frame, opcode, payload, len));
}

static Topic *topic_of(const unsigned char *name, size_t len) {
    /* A replay sends one topic's pages in a row: the last topic is nearly always it. */
    if (last_topic >= 0 && topics[last_topic].len == len &&
        memcmp(topics[last_topic].name, name, len) == 0)
        return &topics[last_topic];
    for (int i = 0; i < n_topics; i++)
        if (topics[i].len == len && memcmp(topics[i].name, name, len) == 0) {
            last_topic = i;
            return &topics[i];
        }
    if (n_topics == MAX_TOPICS) die("more topics than this reader keeps");
    if (len >= MAX_NAME) die("a topic name over 127 bytes");
    Topic *t = &topics[n_topics];
    memcpy(t->name, name, len);
    t->len = len;
    last_topic = n_topics++;
    return t;
}

static void on_text(const unsigned char *data, size_t len) {
    const unsigned char *end = data + len;
    if (memmem(data, len, "\"event\":\"message\"", 17) == NULL) {
        if (memmem(data, len, "\"event\":\"connected\"", 19) != NULL && t_connected == 0) {
            t_connected = now_ns();
            cpu_connected = own_cpu();
            srv_connected = server_cpu(&srv_sys_connected);
            const unsigned char *at = memmem(data, len, "\"pending\":", 10);
            if (at != NULL) announced = parse_int(at + 10, end);
        } else {
            others++;
        }
        return;
    }
    if (received >= expected) {
        extra++;
        return;
    }
    const unsigned char *name = memmem(data, len, "\"topic_name\":\"", 14);
    const unsigned char *seq_at = memmem(data, len, "\"seq\":", 6);
    if (name == NULL || seq_at == NULL) die("a message event without topic_name or seq");
    name += 14;
    const unsigned char *name_end = memchr(name, '"', (size_t)(end - name));
    if (name_end == NULL) die("an unterminated topic_name");
    Topic *t = topic_of(name, (size_t)(name_end - name));
    int64_t seq = parse_int(seq_at + 6, end);
    if (t->count == 0)
        t->first = seq;
    else if (seq != t->next)
        t->errors++;
    t->next = seq + 1;
    t->count++;
    if (memmem(data, len, "\"pending\":true", 14) != NULL) pending_flags++;
    if (received++ == 0) t_first = now_ns();
    if (received == expected) {
        t_last = now_ns();
        cpu_last = own_cpu();
        srv_last = server_cpu(&srv_sys_last);
    }
}

/* Parse the whole frames at the start of buf; keep a cut-off one. 0 once closed. */
static int on_frames(void) {
    size_t pos = 0;
    Frame f;
    while (frame_at(buf + pos, have - pos, &f)) {
        switch (f.opcode) {
        case 1:
            on_text(f.payload, f.len);
            break;
        case 8:
            close_code = close_code_of(&f);
            return 0;
        case 9:
            send_frame(10, f.payload, f.len);
            break;
        case 10:
            break;
        default:
            die("a binary or unknown frame");
        }
        pos += f.size;
    }
    memmove(buf, buf + pos, have - pos);
    have -= pos;
    return 1;
}

/* recv() into buf; 0 on a timeout (SO_RCVTIMEO) or end of stream. */
static int read_more(void) {
    for (;;) {
        ssize_t n = recv(fd, buf + have, READ_SIZE, 0);
        if (n > 0) {
            have += (size_t)n;
            return 1;
        }
        if (n == 0) return 0;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        die_errno("recv");
    }
}

static void set_timeout(int ms) {
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) die_errno("SO_RCVTIMEO");
}

static void handshake(const char *host, const char *port, const char *target) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *addr;
    if (getaddrinfo(host, port, &hints, &addr) != 0) die("cannot resolve the server");
    t_connect = now_ns();
    fd = socket(addr->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die_errno("socket");
    if (connect(fd, addr->ai_addr, addr->ai_addrlen) < 0) die_errno("connect");
    freeaddrinfo(addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char request[8192];
    int len = snprintf(request, sizeof request,
                       "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n",
                       target, host, port);
    if (len <= 0 || (size_t)len >= sizeof request) die("a request target too long");
    send_all(request, (size_t)len);
    set_timeout(60000);
    unsigned char *head_end;
    while ((head_end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
        if (have > 16384) die("a handshake response over 16 KiB");
        if (!read_more()) die("no handshake response");
    }
    if (have < 13 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
        *head_end = 0;
        fprintf(stderr, "replayrecv: the handshake was refused: %s\n", (char *)buf);
        exit(2);
    }
    size_t head = (size_t)(head_end + 4 - buf);
    memmove(buf, buf + head, have - head);
    have -= head;
}

static void report(void) {
    printf("{\"connect_ns\":%lld,\"connected_ns\":%lld,\"first_ns\":%lld,\"last_ns\":%lld,",
           (long long)t_connect, (long long)t_connected, (long long)t_first, (long long)t_last);
    printf("\"cpu_connected\":%.3f,\"cpu_last\":%.3f,\"srv_connected\":%.3f,\"srv_last\":%.3f,"
           "\"srv_sys_connected\":%.3f,\"srv_sys_last\":%.3f,",
           cpu_connected, cpu_last, srv_connected, srv_last, srv_sys_connected, srv_sys_last);
    printf("\"pending_announced\":%lld,\"received\":%lld,\"pending_flags\":%lld,"
           "\"extra\":%lld,\"other_events\":%lld,\"close_code\":%d,\"topics\":[",
           (long long)announced, (long long)received, (long long)pending_flags,
           (long long)extra, (long long)others, close_code);
    for (int i = 0; i < n_topics; i++) {
        Topic *t = &topics[i];
        printf("%s[\"%.*s\",%lld,%lld,%lld,%lld]", i ? "," : "", (int)t->len, t->name,
               (long long)t->first, (long long)(t->next - 1), (long long)t->count,
               (long long)t->errors);
    }
    printf("]}\n");
}

int main(int argc, char **argv) {
    if (argc != 6) die("usage: replayrecv <host> <port> <target> <expected> <server pid>");
    expected = atoll(argv[4]);
    server_pid = argv[5];
    handshake(argv[1], argv[2], argv[3]);
    int open = on_frames();
    while (open && received < expected) {
        if (!read_more()) die("the replay stopped before every pending message came");
        open = on_frames();
    }
    /* Nothing more should come: anything that does within 200 ms is extra. */
    set_timeout(200);
    while (open && read_more()) open = on_frames();
    if (open) {
        const unsigned char normal[2] = {0x03, 0xe8}; /* 1000 */
        send_frame(8, normal, 2);
    }
    close(fd);
    report();
    return 0;
}
