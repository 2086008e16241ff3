/*
 * What the benchmark's C clients (bench/fanrecv.c, bench/replayrecv.c, bench/connopen.c)
 * share: finding a server's WebSocket frames in what was read, building a client's control
 * frames, reading CPU times, and stopping loudly. Define PROGRAM (the client's name, for its messages) before
 * including.
 *
 * The helpers are static inline: a reader that does not use one gets no warning for it.
 *
 * Only what a server may send is accepted: unmasked, unfragmented frames of at most 1 MiB.
 * Anything else stops the program with a message on stderr and exit status 2: the
 * benchmark then fails instead of reporting numbers it did not measure.
 */
#ifndef WSFRAME_H
#define WSFRAME_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_FRAME (1 << 20)

#include <sys/resource.h>
#include <unistd.h>

static inline void die(const char *what) {
    fprintf(stderr, PROGRAM ": %s\n", what);
    exit(2);
}

static inline void die_errno(const char *what) {
    fprintf(stderr, PROGRAM ": %s: %s\n", what, strerror(errno));
    exit(2);
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.monotonic_ns() in the load generator */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* This process's CPU seconds so far (user + system). */
static inline double own_cpu(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
           (double)usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

/* Another process's user and system CPU seconds, from /proc/<pid>/stat (fields 14, 15). */
static inline void process_cpu(const char *pid, double *user, double *sys) {
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) die_errno("reading the server's /proc stat");
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *p = strrchr(text, ')');
    unsigned long long utime, stime;
    /* After ") ": state is field 3, utime and stime are fields 14 and 15. */
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                            &utime, &stime) != 2)
        die("an unreadable /proc stat");
    double ticks = (double)sysconf(_SC_CLK_TCK);
    *user = (double)utime / ticks;
    *sys = (double)stime / ticks;
}

/* The decimal digits at p (none: 0). */
static inline int64_t parse_int(const unsigned char *p, const unsigned char *end) {
    int64_t value = 0;
    while (p < end && *p >= '0' && *p <= '9') value = value * 10 + (*p++ - '0');
    return value;
}

typedef struct {
    int opcode;
    const unsigned char *payload;
    size_t len;  /* of the payload */
    size_t size; /* of the whole frame, header included */
} Frame;

/* The server frame at p, of which avail bytes were read: 1 with *frame filled in when it
   is all there, 0 when it is cut short (read more, then look again from p). */
static inline int frame_at(const unsigned char *p, size_t avail, Frame *frame) {
    if (avail < 2) return 0;
    int fin = p[0] & 0x80, opcode = p[0] & 0x0f;
    if (p[1] & 0x80) die("a masked frame from the server");
    size_t header = 2, len = p[1] & 0x7f;
    if (len == 126) {
        if (avail < 4) return 0;
        header = 4;
        len = (size_t)p[2] << 8 | p[3];
    } else if (len == 127) {
        if (avail < 10) return 0;
        header = 10;
        len = 0;
        for (int i = 2; i < 10; i++) len = len << 8 | p[i];
    }
    if (len > MAX_FRAME) die("a frame over 1 MiB");
    if (avail < header + len) return 0;
    if (!fin || opcode == 0) die("a fragmented message");
    frame->opcode = opcode;
    frame->payload = p + header;
    frame->len = len;
    frame->size = header + len;
    return 1;
}

/* The close code a close frame's payload carries (1005: none). */
static inline int close_code_of(const Frame *frame) {
    return frame->len >= 2 ? (frame->payload[0] << 8 | frame->payload[1]) : 1005;
}

/* A client control frame into out (at least 131 bytes): masked with a zero key, so the
   payload goes as is, and at most 125 bytes of it. Returns the frame's size. */
static inline size_t control_frame(unsigned char *out, int opcode, const unsigned char *payload,
                            size_t len) {
    if (len > 125) die("control frame payload over 125 bytes");
    out[0] = (unsigned char)(0x80 | opcode);
    out[1] = (unsigned char)(0x80 | len);
    memset(out + 2, 0, 4);
    memcpy(out + 6, payload, len);
    return 6 + len;
}

#endif
