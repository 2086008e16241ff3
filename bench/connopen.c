/*
 * connopen: the connections benchmark's clients, in C.
 *
 * It opens N authenticated WebSockets to topichub, at most <concurrency> handshakes in
 * flight, and keeps them open and idle until told to close them. In Python (picows on
 * uvloop, a coroutine per connection) a connect cost the load generator's core ~400 us
 * on session 10's machine, as much as it cost the server: at 100 handshakes in flight both
 * cores were 75-85 % busy, and at 1,000 the load generator was the busier of the two, so
 * the time to accept all of them measured the client as much as the server. Here a
 * connection is a socket, a request, and a search for `connected` in what comes back.
 *
 * Usage: connopen <host> <port> <targets file> <concurrency> <source ips> <server pid>
 *   targets file: one request target per line (/<token>), one connection each.
 *   source ips: connection i binds to 127.0.0.(1 + i % source ips), since one source
 *   address has only ~28,000 ephemeral ports towards one server port.
 *
 * A connection counts once its `connected` event has been read. A connect that fails or
 * a socket closed before `connected` is retried (up to 5 attempts, as the Python clients
 * do); a refused handshake (anything but 101) stops the program. When all are open it
 * prints one JSON line: CLOCK_MONOTONIC ns at the first connect and at the last
 * `connected`, this process's CPU seconds and the server's (user, system) at both, and
 * the retries. Then it keeps them open, answering pings, and reads commands on stdin:
 *   alive   -> {"alive": <connections not closed by the server>, "events": <other frames>}
 *   (end of stdin) -> a close frame (1000) on every connection, then exit.
 * Anything it does not understand stops it with a message on stderr and exit status 2.
 */
#define _GNU_SOURCE
#define PROGRAM "connopen"
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wsframe.h"

#define BUF 4096 /* per connection: the handshake's response, then pings and a close */
#define ATTEMPTS 5
#define EVENTS 256
#define STDIN_TAG UINT32_MAX

enum { IDLE, CONNECTING, HANDSHAKE, OPEN, CLOSED };

typedef struct {
    int fd;
    int state;
    int attempts;
    int head_read; /* the handshake response's head has been read and cut off */
    size_t have;
    unsigned char *buf;
} Conn;

static Conn *conns;
static char **targets;
static int n_conns, n_open, n_alive, concurrency, source_ips;
static int *queue; /* connections waiting to (re)connect, a ring of n_conns */
static int q_head, q_len, in_flight;
static int64_t retries, events;
static int epoll;
static struct sockaddr_in server;
static const char *host, *port, *server_pid;

static void watch(Conn *c, uint32_t events_mask, int op) {
    struct epoll_event ev = {.events = events_mask, .data.u32 = (uint32_t)(c - conns)};
    if (epoll_ctl(epoll, op, c->fd, &ev) < 0) die_errno("epoll_ctl");
}

static void start(int index) {
    Conn *c = &conns[index];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die_errno("socket (raise the open files limit?)");
    if (source_ips > 1) {
        struct sockaddr_in local = {.sin_family = AF_INET};
        local.sin_addr.s_addr = htonl(0x7f000001 + (uint32_t)(index % source_ips));
        if (bind(c->fd, (struct sockaddr *)&local, sizeof local) < 0) die_errno("bind");
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS)
        die_errno("connect");
    c->state = CONNECTING;
    c->have = 0;
    c->head_read = 0;
    c->attempts++;
    in_flight++;
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void start_more(void) {
    while (in_flight < concurrency && q_len > 0) {
        int index = queue[q_head];
        q_head = (q_head + 1) % n_conns;
        q_len--;
        start(index);
    }
}

/* A connect that failed or a socket closed before `connected`: try again, a few times. */
static void retry(Conn *c, const char *why) {
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = IDLE;
    in_flight--;
    if (c->attempts >= ATTEMPTS) {
        fprintf(stderr, PROGRAM ": connection %d: %s, %d times\n", (int)(c - conns), why,
                c->attempts);
        exit(2);
    }
    retries++;
    queue[(q_head + q_len++) % n_conns] = (int)(c - conns);
}

static void send_request(Conn *c) {
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
    if (error) {
        retry(c, strerror(error));
        return;
    }
    char request[8192];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     targets[c - conns], host, port);
    if (n <= 0 || (size_t)n >= sizeof request) die("a request target too long");
    /* A fresh socket's send buffer takes a few hundred bytes at once. */
    if (send(c->fd, request, (size_t)n, MSG_NOSIGNAL) != n) {
        retry(c, "the request was not sent whole");
        return;
    }
    c->state = HANDSHAKE;
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
}

static void send_frame(Conn *c, int opcode, const unsigned char *payload, size_t len) {
    unsigned char frame[2 + 4 + 125];
    size_t size = control_frame(frame, opcode, payload, len);
    if (send(c->fd, frame, size, MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET)
        die_errno("send");
}

/* The server closed an open connection (or one being opened: it failed). */
static void closed(Conn *c) {
    if (c->state == HANDSHAKE) die("the server closed a connection before connected");
    if (c->state == OPEN) n_alive--;
    c->state = CLOSED;
    epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL); /* its end of stream would wake us forever */
}

/* Frames at the start of c->buf; a cut-off one stays. */
static void on_frames(Conn *c) {
    size_t pos = 0;
    Frame f;
    while (c->state != CLOSED && frame_at(c->buf + pos, c->have - pos, &f)) {
        switch (f.opcode) {
        case 1:
            if (c->state == HANDSHAKE &&
                memmem(f.payload, f.len, "\"event\":\"connected\"", 19) != NULL) {
                c->state = OPEN;
                in_flight--;
                n_open++;
                n_alive++;
            } else {
                events++;
            }
            break;
        case 8:
            closed(c);
            break;
        case 9:
            send_frame(c, 10, f.payload, f.len);
            break;
        case 10:
            break;
        default:
            die("a binary or unknown frame");
        }
        pos += f.size;
    }
    memmove(c->buf, c->buf + pos, c->have - pos);
    c->have -= pos;
}

static void on_readable(Conn *c) {
    ssize_t n = recv(c->fd, c->buf + c->have, BUF - c->have, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (c->state == HANDSHAKE)
            retry(c, n == 0 ? "closed before connected" : strerror(errno));
        else
            closed(c);
        return;
    }
    c->have += (size_t)n;
    if (!c->head_read) {
        unsigned char *head_end = memmem(c->buf, c->have, "\r\n\r\n", 4);
        if (head_end == NULL) {
            if (c->have == BUF) die("a handshake response over 4 KiB");
            return;
        }
        if (c->have < 13 || memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
            *head_end = 0;
            fprintf(stderr, PROGRAM ": the handshake was refused: %s\n", (char *)c->buf);
            exit(2);
        }
        size_t head = (size_t)(head_end + 4 - c->buf);
        memmove(c->buf, c->buf + head, c->have - head);
        c->have -= head;
        c->head_read = 1;
    }
    on_frames(c);
    /* A full buffer left unparsed is a frame that cannot fit: the next recv() of 0 bytes
       would look like the end of the stream. */
    if (c->have == BUF) die("a frame over this client's 4 KiB buffer");
}

static char **read_targets(const char *path, int *count) {
    FILE *f = fopen(path, "r");
    if (f == NULL) die_errno("opening the targets file");
    int cap = 1024, n = 0;
    char **lines = malloc(sizeof(char *) * (size_t)cap);
    char *line = NULL;
    size_t size = 0;
    ssize_t len;
    while ((len = getline(&line, &size, f)) > 0) {
        if (line[len - 1] == '\n') line[--len] = 0;
        if (len == 0) continue;
        if (n == cap) lines = realloc(lines, sizeof(char *) * (size_t)(cap *= 2));
        lines[n++] = strdup(line);
    }
    free(line);
    fclose(f);
    *count = n;
    return lines;
}

int main(int argc, char **argv) {
    if (argc != 7)
        die("usage: connopen <host> <port> <targets file> <concurrency> <source ips> "
            "<server pid>");
    host = argv[1];
    port = argv[2];
    targets = read_targets(argv[3], &n_conns);
    concurrency = atoi(argv[4]);
    source_ips = atoi(argv[5]);
    server_pid = argv[6];
    if (n_conns == 0 || concurrency < 1 || source_ips < 1) die("nothing to do");
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(port));
    if (inet_pton(AF_INET, host, &server.sin_addr) != 1) die("the host must be an IPv4 address");
    struct rlimit files = {.rlim_cur = (rlim_t)n_conns + 64, .rlim_max = (rlim_t)n_conns + 64};
    struct rlimit now;
    getrlimit(RLIMIT_NOFILE, &now);
    if (now.rlim_cur < files.rlim_cur && setrlimit(RLIMIT_NOFILE, &files) < 0)
        die_errno("raising the open files limit");

    conns = calloc((size_t)n_conns, sizeof(Conn));
    queue = malloc(sizeof(int) * (size_t)n_conns);
    for (int i = 0; i < n_conns; i++) {
        conns[i].fd = -1;
        conns[i].buf = malloc(BUF);
        queue[i] = i;
    }
    q_len = n_conns;
    epoll = epoll_create1(EPOLL_CLOEXEC);
    if (epoll < 0) die_errno("epoll_create1");

    double cpu_start = own_cpu(), srv_user_start, srv_sys_start;
    process_cpu(server_pid, &srv_user_start, &srv_sys_start);
    int64_t t_start = now_ns();
    struct epoll_event ready[EVENTS];
    start_more();
    while (n_open < n_conns) {
        int n = epoll_wait(epoll, ready, EVENTS, 60000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("no progress in 60 s");
        for (int i = 0; i < n; i++) {
            Conn *c = &conns[ready[i].data.u32];
            if (c->state == CONNECTING)
                send_request(c);
            else if (c->state != IDLE && c->fd >= 0)
                on_readable(c);
        }
        start_more();
    }
    int64_t t_done = now_ns();
    double cpu_done = own_cpu(), srv_user_done, srv_sys_done;
    process_cpu(server_pid, &srv_user_done, &srv_sys_done);
    printf("{\"start_ns\":%lld,\"done_ns\":%lld,\"cpu_start\":%.3f,\"cpu_done\":%.3f,"
           "\"srv_user_start\":%.3f,\"srv_sys_start\":%.3f,\"srv_user_done\":%.3f,"
           "\"srv_sys_done\":%.3f,\"retries\":%lld}\n",
           (long long)t_start, (long long)t_done, cpu_start, cpu_done, srv_user_start,
           srv_sys_start, srv_user_done, srv_sys_done, (long long)retries);
    fflush(stdout);

    /* Idle: answer pings, notice closes, until stdin ends. */
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = STDIN_TAG};
    if (epoll_ctl(epoll, EPOLL_CTL_ADD, 0, &ev) < 0) die_errno("epoll_ctl stdin");
    char command[64];
    size_t command_len = 0;
    for (;;) {
        int n = epoll_wait(epoll, ready, EVENTS, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die_errno("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (ready[i].data.u32 != STDIN_TAG) {
                Conn *c = &conns[ready[i].data.u32];
                if (c->state == OPEN) on_readable(c);
                continue;
            }
            ssize_t got = read(0, command + command_len, sizeof command - 1 - command_len);
            if (got <= 0) {
                const unsigned char normal[2] = {0x03, 0xe8}; /* 1000 */
                for (int j = 0; j < n_conns; j++) {
                    if (conns[j].state == OPEN) send_frame(&conns[j], 8, normal, 2);
                    close(conns[j].fd);
                }
                return 0;
            }
            command_len += (size_t)got;
            char *newline;
            while ((newline = memchr(command, '\n', command_len)) != NULL) {
                *newline = 0;
                if (strcmp(command, "alive") != 0) die("an unknown command");
                printf("{\"alive\":%d,\"events\":%lld}\n", n_alive, (long long)events);
                fflush(stdout);
                size_t used = (size_t)(newline + 1 - command);
                memmove(command, newline + 1, command_len - used);
                command_len -= used;
            }
            if (command_len == sizeof command - 1) die("a command line too long");
        }
    }
}
