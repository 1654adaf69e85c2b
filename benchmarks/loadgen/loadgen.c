/*
 * loadgen: the WebSocket load generator of `make bench` (benchmarks/).
 *
 * One thread, one epoll loop, N client connections to 127.0.0.1:PORT. It
 * speaks just enough RFC 6455 to load a server: the opening handshake
 * (§4.1), masked client frames (§5.3), answers to Ping (§5.5.2) and the
 * closing handshake (§5.5.1). It is written in C so that the client side
 * costs little next to any server measured: the harness pins it to its own
 * core and reports the CPU share it used.
 *
 * Modes (one per run; every loop is bounded in count and time):
 *   echo        N connections, one message of S bytes in flight on each;
 *               round trips/s, p50/p99 latency (also the throughput runs)
 *   fanout      N receivers join a beej-chat-protocol v1 room, one more
 *               connection sends M chat messages carrying their send time,
 *               at most W unfinished at once; deliveries/s, p50/p99 delay
 *   handshakes  K connections at a time: open, handshake, Close, EOF, again
 *   idle        open N WebSockets, print a "ready" line, hold them until a
 *               line (or EOF) arrives on stdin, then close them all
 *
 * --tls (every mode): TLS first, with OpenSSL, as a browser would before a
 * wss:// handshake: full handshakes (no session resumption), the server's
 * certificate not checked (the load is the point, not PKI), SSL_write with
 * partial writes, a write that would block retried with the same bytes.
 *
 * Output: one JSON object on a line of stdout (idle: two, "ready" first).
 * Build: gcc -O2 -Wall -o loadgen loadgen.c
 *   with TLS: gcc -O2 -Wall -DWITH_TLS -o loadgen loadgen.c -lssl -lcrypto
 * `loadgen features` prints {"tls":true|false}: what this build can do.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#else
typedef struct ssl_st SSL;   /* never made without TLS: the pointers stay NULL */
#endif

#define READ_CHUNK (1 << 20)
#define MAX_EVENTS 256
#define MAX_SAMPLES 20000000      /* latency samples kept (floats, 80 MB at most) */
#define HEAD_LIMIT 4096           /* the server's handshake response must fit */
#define TEXT_KEEP 512             /* fanout: the first bytes of each text message */
#define POOL_BYTES (64u << 20)    /* echo: pre-masked frames of one size, in all */
#define STDIN_TAG UINT32_MAX

/* RFC 6455 §1.3's sample key and its accept value: every connection sends this
 * key, so the accept value is checked without a SHA-1 here. */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };
enum { S_FREE, S_CONNECTING, S_TLS, S_UPGRADING, S_OPEN, S_CLOSING, S_DONE };
enum { M_ECHO, M_FANOUT, M_HANDSHAKES, M_IDLE };
enum { P_SETUP, P_WARMUP, P_MEASURE, P_DRAIN, P_CLOSE, P_END };

typedef struct {
    int fd, id, state, events;
    /* TLS: the OpenSSL connection; a write to repeat (0 owned bytes, 1 segment, -1 none) */
    SSL *ssl;
    int tls_retry, tls_want_write, tls_eof;   /* tls_eof: the end came after the last data */
    /* output: owned bytes (handshake, control, chat frames) and a shared segment */
    uint8_t *obuf;
    size_t olen, ooff, ocap;
    const uint8_t *seg;
    size_t seg_len, seg_off;
    /* handshake response */
    char head[HEAD_LIMIT];
    size_t head_len;
    /* frame parser */
    uint8_t hdr[14];
    int hdr_have, hdr_need, in_payload, f_opcode, f_fin;
    uint64_t pay_left;
    uint8_t ctrl[128];
    int ctrl_len;
    int msg_opcode, msg_bad;
    uint64_t msg_len;
    uint8_t text[TEXT_KEEP];
    size_t text_len;
    /* mode state */
    double sent_at, started_at, close_received_at;
    int inflight, joined, close_received;
} conn_t;

static struct {
    int mode, port, conns, concurrency, binary, window, messages, tls;
    size_t size;
    double duration, warmup, hold, timeout, close_timeout;
    long max_count;
    const char *subprotocol;
    int busy_poll;              /* never sleep in epoll_wait: a 1-connection echo then
                                   measures the server's latency, not the wake-ups */
} opt = {M_ECHO, 0, 1, 64, 0, 10, 1000, 0, 32, 2.0, 0.5, 600.0, 120.0, 5.0, 0, NULL, 0};
#ifdef WITH_TLS
static SSL_CTX *ssl_ctx;
#endif

static int epfd;
static conn_t *conns;
static int nconns;              /* slots in use */
static uint8_t *rbuf;
static char request[1024];
static size_t request_len;
static double t_start;
static int phase = P_SETUP;
static double phase_at, t0, t1;
static double cpu0, cpu1;
static long completed, errors, opened, upgrade_failures, unclean;
static long next_to_open, pending_opens;
static float *samples;
static long nsamples;
static uint64_t rng_state;
static char error_text[256];

/* echo */
static uint8_t **pool;
static int pool_count, pool_next;
static size_t frame_len;
static uint8_t *expected;

/* fanout */
static int joined_receivers, sender_joined;
static long fan_sent, fan_complete, deliveries;
static int *delivered;
static double *fan_sent_at;
static double last_delivery;

/* ---- small helpers ---------------------------------------------------- */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_time(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static void note_error(const char *fmt, ...) {
    errors++;
    if (error_text[0]) return;  /* keep the first one */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_text, sizeof error_text, fmt, ap);
    va_end(ap);
}

static uint64_t rng(void) {    /* xorshift64*: mask keys need not be strong here */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) fail("out of memory (%zu bytes)", n);
    return p;
}

/* RFC 6455 §5.3: XOR with the 4-byte key, by words where possible. */
static void apply_mask(uint8_t *data, size_t len, const uint8_t key[4]) {
    uint64_t k64;
    uint8_t k8[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
    memcpy(&k64, k8, 8);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, data + i, 8);
        w ^= k64;
        memcpy(data + i, &w, 8);
    }
    for (; i < len; i++) data[i] ^= key[i & 3];
}

/* A masked client frame header (§5.2) for a FIN frame; returns its length. */
static size_t frame_header(uint8_t *out, int opcode, uint64_t len, const uint8_t key[4]) {
    size_t n = 0;
    out[n++] = 0x80 | opcode;
    if (len < 126) {
        out[n++] = 0x80 | (uint8_t)len;
    } else if (len < 65536) {
        out[n++] = 0x80 | 126;
        out[n++] = len >> 8;
        out[n++] = len & 0xff;
    } else {
        out[n++] = 0x80 | 127;
        for (int shift = 56; shift >= 0; shift -= 8) out[n++] = (len >> shift) & 0xff;
    }
    memcpy(out + n, key, 4);
    return n + 4;
}

static void random_key(uint8_t key[4]) {
    uint32_t k = (uint32_t)rng();
    memcpy(key, &k, 4);
}

static void obuf_reserve(conn_t *c, size_t extra) {
    if (c->ooff && c->ooff == c->olen) c->ooff = c->olen = 0;
    if (c->olen + extra <= c->ocap) return;
    if (c->ooff) {
        memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
        c->olen -= c->ooff;
        c->ooff = 0;
        if (c->olen + extra <= c->ocap) return;
    }
    size_t cap = c->ocap ? c->ocap : 256;
    while (cap < c->olen + extra) cap *= 2;
    c->obuf = realloc(c->obuf, cap);
    if (!c->obuf) fail("out of memory");
    c->ocap = cap;
}

static void queue_bytes(conn_t *c, const void *data, size_t len) {
    obuf_reserve(c, len);
    memcpy(c->obuf + c->olen, data, len);
    c->olen += len;
}

/* Queue a masked frame built from `payload` (small frames: control, chat). */
static void queue_frame(conn_t *c, int opcode, const void *payload, size_t len) {
    uint8_t key[4];
    random_key(key);
    obuf_reserve(c, len + 14);
    size_t h = frame_header(c->obuf + c->olen, opcode, len, key);
    memcpy(c->obuf + c->olen + h, payload, len);
    apply_mask(c->obuf + c->olen + h, len, key);
    c->olen += h + len;
}

static void update_events(conn_t *c) {
    int want = EPOLLIN;
    if (c->state == S_CONNECTING || c->olen > c->ooff || c->seg) want |= EPOLLOUT;
    if (c->state == S_TLS && c->tls_want_write) want |= EPOLLOUT;
    if (want == c->events) return;
    struct epoll_event ev = {.events = want, .data.u32 = c->id};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
    c->events = want;
}

static void tls_free(conn_t *c) {
#ifdef WITH_TLS
    if (c->ssl) {
        /* close_notify after a clean WebSocket close; best effort, never waited for */
        if (c->state == S_CLOSING && c->close_received) SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
#else
    (void)c;
#endif
}

static void finish(conn_t *c) {
    tls_free(c);
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    if (c->state == S_CONNECTING || c->state == S_TLS || c->state == S_UPGRADING) pending_opens--;
    c->state = S_DONE;
    c->inflight = 0;
    c->seg = NULL;
    c->olen = c->ooff = 0;
}

static void on_done(conn_t *c);

static void drop(conn_t *c, const char *why) {
    if (c->state != S_DONE) {
        if (phase < P_CLOSE || c->state != S_CLOSING) note_error("connection %d: %s", c->id, why);
        else unclean++;
        finish(c);
        on_done(c);
    }
}

/* send(), or SSL_write: -1 with errno EAGAIN when it would block. */
static ssize_t io_send(conn_t *c, const uint8_t *p, size_t len) {
#ifdef WITH_TLS
    if (c->ssl) {
        size_t written = 0;
        ERR_clear_error();
        if (SSL_write_ex(c->ssl, p, len, &written) > 0) return (ssize_t)written;
        int e = SSL_get_error(c->ssl, 0);
        errno = (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) ? EAGAIN : EPIPE;
        return -1;
    }
#endif
    return send(c->fd, p, len, MSG_NOSIGNAL);
}

/* recv(), or as many whole TLS records as there are and fit: 0 at the end. */
static ssize_t io_recv(conn_t *c, uint8_t *buf, size_t len) {
#ifdef WITH_TLS
    if (c->ssl) {
        size_t got = 0;
        if (c->tls_eof) return 0;
        while (len - got >= 16384) {   /* room for a record's plaintext (RFC 8446 §5.1) */
            size_t n = 0;
            ERR_clear_error();
            if (SSL_read_ex(c->ssl, buf + got, len - got, &n) > 0) { got += n; continue; }
            int e = SSL_get_error(c->ssl, 0);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
            if (e == SSL_ERROR_ZERO_RETURN) {
                /* close_notify (or TCP's EOF): now, or after the data read so far, since
                 * no readiness event may come for it again */
                if (!got) return 0;
                c->tls_eof = 1;
                break;
            }
            if (got) break;          /* the error again at the next call */
            errno = ECONNRESET;
            return -1;
        }
        if (!got) { errno = EAGAIN; return -1; }
        return (ssize_t)got;
    }
#endif
    return recv(c->fd, buf, len, 0);
}

/* Write what is queued: first anything already begun, the owned bytes before a segment.
 * TLS: a write that would block is repeated from the same place (SSL_write(3)). */
static void flush(conn_t *c) {
    for (;;) {
        const uint8_t *p;
        size_t left;
        int use_seg;
        if (c->ssl && c->tls_retry >= 0) use_seg = c->tls_retry;
        else if (c->seg && c->seg_off > 0) use_seg = 1;
        else if (c->olen > c->ooff) use_seg = 0;
        else if (c->seg) use_seg = 1;
        else break;
        if (use_seg) { p = c->seg + c->seg_off; left = c->seg_len - c->seg_off; }
        else { p = c->obuf + c->ooff; left = c->olen - c->ooff; }
        ssize_t n = io_send(c, p, left);
        c->tls_retry = -1;
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (c->ssl) c->tls_retry = use_seg;
                break;
            }
            if (errno == EINTR) continue;
            drop(c, strerror(errno));
            return;
        }
        if (use_seg) {
            c->seg_off += n;
            if (c->seg_off == c->seg_len) c->seg = NULL;
        } else {
            c->ooff += n;
        }
    }
    if (c->fd >= 0) update_events(c);
}

static void send_close(conn_t *c) {
    if (c->state != S_OPEN) return;
    uint8_t body[2] = {1000 >> 8, 1000 & 0xff};   /* §7.4.1: 1000, normal closure */
    queue_frame(c, OP_CLOSE, body, 2);
    c->state = S_CLOSING;
    flush(c);
}

/* ---- samples ------------------------------------------------------------ */

static void record(double seconds) {
    if (nsamples < MAX_SAMPLES) samples[nsamples++] = (float)(seconds * 1e6);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double percentile(double fraction) {   /* nearest rank, on sorted samples */
    if (nsamples == 0) return -1;
    long index = (long)(fraction * nsamples + 0.5) - 1;
    if (index < 0) index = 0;
    if (index >= nsamples) index = nsamples - 1;
    return samples[index];
}

/* ---- connections ---------------------------------------------------------- */

static void open_slot(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(opt.port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    uint8_t *obuf = c->obuf;   /* a slot is reused (handshakes): keep its buffer */
    size_t ocap = c->ocap;
    int id = c->id;
    memset(c, 0, sizeof *c);
    c->obuf = obuf;
    c->ocap = ocap;
    c->id = id;
    c->fd = fd;
    c->tls_retry = -1;
    c->state = S_CONNECTING;
    c->started_at = now();
    pending_opens++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = c->id};
    c->events = ev.events;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS)
        drop(c, strerror(errno));
}

static void open_more(void) {   /* keep at most `concurrency` handshakes under way */
    while (next_to_open < nconns && pending_opens < opt.concurrency)
        open_slot(&conns[next_to_open++]);
}

static void on_open(conn_t *c);
static void on_message(conn_t *c);
static void sender_join(void);

static const char *find_ci(const char *hay, size_t n, const char *needle) {
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (strncasecmp(hay + i, needle, m) == 0) return hay + i;
    return NULL;
}

static void feed_frames(conn_t *c, const uint8_t *data, size_t n);

static void on_head(conn_t *c, const uint8_t *data, size_t n) {
    size_t room = sizeof c->head - 1 - c->head_len;
    size_t take = n < room ? n : room;
    memcpy(c->head + c->head_len, data, take);
    size_t before = c->head_len;
    c->head_len += take;
    c->head[c->head_len] = 0;
    char *end = strstr(c->head, "\r\n\r\n");
    if (!end) {
        if (c->head_len == sizeof c->head - 1) {
            upgrade_failures++;
            drop(c, "handshake response too long");
        }
        return;
    }
    size_t head_bytes = (size_t)(end + 4 - c->head);
    if (strncmp(c->head, "HTTP/1.1 101", 12) != 0) {
        upgrade_failures++;
        char line[80];
        snprintf(line, sizeof line, "%.*s", (int)strcspn(c->head, "\r\n"), c->head);
        drop(c, line);
        return;
    }
    if (!find_ci(c->head, head_bytes, WS_ACCEPT)) {
        upgrade_failures++;
        drop(c, "wrong Sec-WebSocket-Accept");
        return;
    }
    if (find_ci(c->head, head_bytes, "sec-websocket-extensions")) {
        upgrade_failures++;   /* none offered, so none may be chosen (§4.1) */
        drop(c, "an extension not offered");
        return;
    }
    if (opt.subprotocol && !find_ci(c->head, head_bytes, opt.subprotocol)) {
        upgrade_failures++;
        drop(c, "subprotocol not chosen");
        return;
    }
    c->state = S_OPEN;
    pending_opens--;
    opened++;
    on_open(c);
    size_t used = head_bytes - before;   /* bytes of `data` that were the head */
    if (c->state != S_DONE && used < n) feed_frames(c, data + used, n - used);
    if (phase == P_SETUP || opt.mode == M_HANDSHAKES) open_more();
}

static void on_control(conn_t *c) {
    if (c->f_opcode == OP_PING) {
        queue_frame(c, OP_PONG, c->ctrl, c->ctrl_len);   /* §5.5.2 */
        flush(c);
    } else if (c->f_opcode == OP_CLOSE) {
        c->close_received = 1;
        c->close_received_at = now();
        if (c->state == S_OPEN) {   /* the server closed first: answer (§5.5.1) */
            if (phase < P_CLOSE && opt.mode != M_HANDSHAKES)
                note_error("connection %d: server sent Close", c->id);
            queue_frame(c, OP_CLOSE, c->ctrl, c->ctrl_len >= 2 ? 2 : 0);
            c->state = S_CLOSING;
            flush(c);
        }
    }
}

static void on_payload(conn_t *c, const uint8_t *p, size_t n) {
    if (c->f_opcode >= OP_CLOSE) {
        size_t room = sizeof c->ctrl - c->ctrl_len;
        size_t take = n < room ? n : room;
        memcpy(c->ctrl + c->ctrl_len, p, take);
        c->ctrl_len += take;
        return;
    }
    if (opt.mode == M_ECHO && !c->msg_bad) {
        if (c->msg_len + n > opt.size || memcmp(expected + c->msg_len, p, n) != 0) c->msg_bad = 1;
    } else if (opt.mode == M_FANOUT && c->text_len < TEXT_KEEP - 1) {
        size_t room = TEXT_KEEP - 1 - c->text_len;
        size_t take = n < room ? n : room;
        memcpy(c->text + c->text_len, p, take);
        c->text_len += take;
        c->text[c->text_len] = 0;
    }
    c->msg_len += n;
}

static void frame_start(conn_t *c) {
    uint8_t b0 = c->hdr[0], b1 = c->hdr[1];
    c->f_fin = b0 >> 7;
    c->f_opcode = b0 & 0x0f;
    uint64_t len = b1 & 0x7f;
    if (len == 126) len = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
    else if (len == 127) {
        len = 0;
        for (int i = 2; i < 10; i++) len = (len << 8) | c->hdr[i];
    }
    c->pay_left = len;
    c->in_payload = 1;
    if (c->f_opcode >= OP_CLOSE) {
        c->ctrl_len = 0;
    } else if (c->f_opcode != OP_CONT) {
        c->msg_opcode = c->f_opcode;
        c->msg_len = 0;
        c->msg_bad = 0;
        c->text_len = 0;
        c->text[0] = 0;
    }
}

static void frame_end(conn_t *c) {
    c->in_payload = 0;
    c->hdr_have = 0;
    if (c->f_opcode >= OP_CLOSE) on_control(c);
    else if (c->f_fin) on_message(c);
}

/* The server's frames, fed as they arrive: headers gathered, payloads streamed. */
static void feed_frames(conn_t *c, const uint8_t *data, size_t n) {
    while (n > 0 && c->state != S_DONE) {
        if (!c->in_payload) {
            if (c->hdr_have < 2) {
                c->hdr[c->hdr_have++] = *data++;
                n--;
                if (c->hdr_have == 2) {
                    if (c->hdr[1] & 0x80) { drop(c, "masked frame from the server"); return; }
                    int l7 = c->hdr[1] & 0x7f;
                    c->hdr_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
                }
            } else {
                size_t want = c->hdr_need - c->hdr_have;
                size_t take = n < want ? n : want;
                memcpy(c->hdr + c->hdr_have, data, take);
                c->hdr_have += take;
                data += take;
                n -= take;
            }
            if (c->hdr_have >= 2 && c->hdr_have == c->hdr_need) {
                frame_start(c);
                if (c->pay_left == 0) frame_end(c);
            }
        } else {
            size_t take = n < c->pay_left ? n : (size_t)c->pay_left;
            on_payload(c, data, take);
            c->pay_left -= take;
            data += take;
            n -= take;
            if (c->pay_left == 0) frame_end(c);
        }
    }
}

static void tls_handshake(conn_t *c);

static void on_readable(conn_t *c) {
    if (c->state == S_TLS) { tls_handshake(c); return; }
    ssize_t n = io_recv(c, rbuf, READ_CHUNK);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        drop(c, strerror(errno));
        return;
    }
    if (n == 0) {   /* EOF: after a closing handshake, the normal end (§7.1.1) */
        if (c->state == S_CLOSING && c->close_received) {
            finish(c);
            on_done(c);
        } else {
            drop(c, c->state == S_UPGRADING ? "EOF during the handshake" : "EOF without Close");
        }
        return;
    }
    if (c->state == S_UPGRADING) on_head(c, rbuf, n);
    else feed_frames(c, rbuf, n);
    if (c->tls_eof && c->fd >= 0 && c->state != S_DONE) on_readable(c);   /* its end, now */
}

/* TLS: drive the client handshake; once done, send the WebSocket upgrade. */
static void tls_handshake(conn_t *c) {
#ifdef WITH_TLS
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->state = S_UPGRADING;
        c->tls_want_write = 0;
        queue_bytes(c, request, request_len);
        flush(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->tls_want_write = e == SSL_ERROR_WANT_WRITE;
        update_events(c);
        return;
    }
    char reason[160];
    ERR_error_string_n(ERR_peek_last_error(), reason, sizeof reason);
    upgrade_failures++;
    drop(c, reason[0] ? reason : "TLS handshake failed");
#else
    drop(c, "built without TLS");
#endif
}

static void on_writable(conn_t *c) {
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { drop(c, strerror(err)); return; }
#ifdef WITH_TLS
        if (opt.tls) {
            c->ssl = SSL_new(ssl_ctx);
            if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) fail("SSL_new failed");
            SSL_set_connect_state(c->ssl);
            c->state = S_TLS;
            tls_handshake(c);
            return;
        }
#endif
        c->state = S_UPGRADING;
        queue_bytes(c, request, request_len);
    }
    if (c->state == S_TLS) { tls_handshake(c); return; }
    flush(c);
}

/* ---- modes -------------------------------------------------------------- */

static void echo_send(conn_t *c) {
    const uint8_t *frame = pool[pool_next];
    pool_next = (pool_next + 1) % pool_count;
    c->seg = frame;
    c->seg_len = frame_len;
    c->seg_off = 0;
    c->inflight = 1;
    c->sent_at = now();
    flush(c);
}

static void fan_send(void) {
    conn_t *s = &conns[opt.conns];
    while (fan_sent < opt.messages && fan_sent < fan_complete + opt.window) {
        char text[160];
        double t = now();
        fan_sent_at[fan_sent] = t;
        int n = snprintf(text, sizeof text,
                         "{\"type\":\"chat-message\",\"payload\":{\"username\":\"sender\","
                         "\"message\":\"fan-out #%ld:%.0f#\"}}",
                         fan_sent, (t - t_start) * 1e9);
        queue_frame(s, OP_TEXT, text, n);
        fan_sent++;
    }
    flush(s);
}

static void on_open(conn_t *c) {
    if (opt.mode == M_HANDSHAKES) {
        send_close(c);
    } else if (opt.mode == M_FANOUT && c->id == opt.conns) {
        sender_join();
    } else if (opt.mode == M_FANOUT) {
        char text[96];
        int n = snprintf(text, sizeof text,
                         "{\"type\":\"chat-join\",\"payload\":{\"username\":\"r%d\"}}", c->id);
        queue_frame(c, OP_TEXT, text, n);
        flush(c);
    }
}

static void fanout_message(conn_t *c) {
    const char *t = (const char *)c->text;
    if (c->id == opt.conns) {   /* the sender */
        if (!sender_joined && strstr(t, "chat-join") && strstr(t, "\"sender\"")) {
            sender_joined = 1;
            phase = P_MEASURE;
            t0 = phase_at = now();
            cpu0 = cpu_time();
            fan_send();
        }
        return;
    }
    if (!c->joined) {
        char name[32];
        snprintf(name, sizeof name, "\"r%d\"", c->id);
        if (strstr(t, "chat-join") && strstr(t, name)) {
            c->joined = 1;
            joined_receivers++;
            sender_join();
        }
        return;
    }
    const char *mark = strstr(t, "fan-out #");
    if (!mark) return;
    char *end;
    long seq = strtol(mark + 9, &end, 10);
    if (*end != ':' || seq < 0 || seq >= fan_sent) return;
    double t_now = now();
    record(t_now - fan_sent_at[seq]);
    deliveries++;
    last_delivery = t_now;
    if (++delivered[seq] == opt.conns) {
        while (fan_complete < fan_sent && delivered[fan_complete] == opt.conns) fan_complete++;
        if (phase == P_MEASURE) fan_send();
    }
}

static void on_message(conn_t *c) {
    if (opt.mode == M_ECHO) {
        int wanted = opt.binary ? OP_BINARY : OP_TEXT;
        if (c->msg_bad || c->msg_len != opt.size || c->msg_opcode != wanted)
            note_error("connection %d: echo differs from what was sent", c->id);
        c->inflight = 0;
        double t = now();
        /* --count N counts N: echoes that land in the same batch as the Nth are not counted. */
        if (phase == P_MEASURE && !(opt.max_count && completed >= opt.max_count)) {
            completed++;
            record(t - c->sent_at);
        }
        if (phase == P_WARMUP || phase == P_MEASURE) echo_send(c);
    } else if (opt.mode == M_FANOUT && c->msg_opcode == OP_TEXT) {
        fanout_message(c);
    }
}

static void on_done(conn_t *c) {
    if (opt.mode != M_HANDSHAKES || phase != P_MEASURE) return;
    if (c->close_received && !(opt.max_count && completed >= opt.max_count)) completed++;
    if (errors < 100) open_slot(c);   /* a server that refuses everything ends the run */
}

/* §7.1.1: the client waits for the server to close TCP, but not forever. */
static void reap_lingering(double t) {
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->state == S_CLOSING && c->close_received && t - c->close_received_at > 1.0) {
            unclean++;
            finish(c);
            on_done(c);
        }
    }
}

static void sender_join(void) {   /* fanout: once every receiver has joined */
    conn_t *s = &conns[opt.conns];
    if (joined_receivers < opt.conns || s->state != S_OPEN || s->joined) return;
    s->joined = 1;
    char join[] = "{\"type\":\"chat-join\",\"payload\":{\"username\":\"sender\"}}";
    queue_frame(s, OP_TEXT, join, sizeof join - 1);
    flush(s);
}

/* ---- the loop ----------------------------------------------------------- */

static int all_open_or_failed(void) {
    return next_to_open == nconns && pending_opens == 0;
}

static int all_done(void) {
    for (int i = 0; i < nconns; i++)
        if (conns[i].state != S_DONE && conns[i].state != S_FREE) return 0;
    return 1;
}

static void start_close(void) {
    phase = P_CLOSE;
    phase_at = now();
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->state == S_OPEN) send_close(c);
        else if (c->state == S_CONNECTING || c->state == S_TLS || c->state == S_UPGRADING)
            finish(c);
    }
}

static void print_ready(void) {
    printf("{\"event\":\"ready\",\"open\":%ld,\"errors\":%ld}\n", opened, errors);
    fflush(stdout);
}

/* Advance the phases on the clock; returns 0 when the run is over. */
static int tick(void) {
    double t = now();
    if (t - t_start > opt.timeout && phase < P_CLOSE) {
        note_error("timed out after %.0f s", opt.timeout);
        if (phase == P_MEASURE || phase == P_WARMUP) { t1 = t; cpu1 = cpu_time(); }
        start_close();
    }
    if (opt.mode == M_HANDSHAKES && phase < P_END) reap_lingering(t);
    if (opt.mode == M_HANDSHAKES && phase == P_MEASURE && errors >= 100) {
        t1 = t;
        cpu1 = cpu_time();
        start_close();
    }
    switch (phase) {
    case P_SETUP:
        if (opt.mode == M_HANDSHAKES) {
            phase = P_MEASURE;
            t0 = phase_at = t;
            cpu0 = cpu_time();
            for (int i = 0; i < nconns; i++) open_slot(&conns[i]);
            next_to_open = nconns;
        } else if (all_open_or_failed()) {
            if (opened < nconns) {
                note_error("only %ld of %d connections opened", opened, nconns);
                start_close();
            } else if (opt.mode == M_ECHO) {
                phase = P_WARMUP;
                phase_at = t;
                for (int i = 0; i < nconns; i++) echo_send(&conns[i]);
            } else if (opt.mode == M_IDLE) {
                phase = P_MEASURE;
                phase_at = t;
                print_ready();
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = STDIN_TAG};
                epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
            }
            /* fanout: the phase moves on when the sender's join comes back */
        }
        break;
    case P_WARMUP:
        if (t - phase_at >= opt.warmup) {
            phase = P_MEASURE;
            t0 = phase_at = t;
            cpu0 = cpu_time();
        }
        break;
    case P_MEASURE:
        if (opt.mode == M_IDLE) {
            if (t - phase_at >= opt.hold) start_close();
        } else if (t - t0 >= opt.duration || (opt.max_count && completed >= opt.max_count) ||
                   (opt.mode == M_FANOUT && fan_complete >= opt.messages)) {
            t1 = t;
            cpu1 = cpu_time();
            phase = P_DRAIN;
            phase_at = t;
        }
        break;
    case P_DRAIN: {
        int busy = 0;
        for (int i = 0; i < nconns && !busy; i++) {
            conn_t *c = &conns[i];
            if (c->state == S_DONE) continue;
            if (opt.mode == M_ECHO) busy = c->inflight;
            else if (opt.mode == M_HANDSHAKES) busy = c->state != S_DONE;
            else if (opt.mode == M_FANOUT) busy = fan_complete < fan_sent;
        }
        if (!busy || t - phase_at > 5.0) start_close();
        break;
    }
    case P_CLOSE:
        if (all_done()) phase = P_END;
        else if (t - phase_at > opt.close_timeout) {
            for (int i = 0; i < nconns; i++)
                if (conns[i].state != S_DONE && conns[i].state != S_FREE) {
                    unclean++;
                    finish(&conns[i]);
                }
            phase = P_END;
        }
        break;
    }
    return phase != P_END;
}

static void run(void) {
    struct epoll_event events[MAX_EVENTS];
    if (opt.mode != M_HANDSHAKES) open_more();   /* handshakes: every slot at once, in tick() */
    while (tick()) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, opt.busy_poll ? 0 : 5);
        if (n < 0 && errno != EINTR) fail("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            if (events[i].data.u32 == STDIN_TAG) {
                char line[256];
                ssize_t r = read(0, line, sizeof line);
                (void)r;   /* a line or EOF: either way, time to close */
                epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
                if (phase == P_MEASURE) start_close();
                continue;
            }
            conn_t *c = &conns[events[i].data.u32];
            if (c->fd < 0) continue;
            uint32_t e = events[i].events;
            if (e & EPOLLOUT) on_writable(c);
            if (c->fd >= 0 && (e & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                if (c->state == S_CONNECTING) on_writable(c);   /* reports the error */
                else on_readable(c);
            }
        }
        if (phase == P_SETUP && opt.mode != M_HANDSHAKES) open_more();
    }
}

/* ---- setup and report --------------------------------------------------- */

static void build_echo_pool(void) {
    expected = xmalloc(opt.size);
    for (size_t i = 0; i < opt.size; i++)
        expected[i] = opt.binary ? (uint8_t)rng() : (uint8_t)('a' + i % 26);
    pool_count = (int)(POOL_BYTES / (opt.size + 14));
    if (pool_count > 16) pool_count = 16;
    if (pool_count < 1) pool_count = 1;
    pool = xmalloc(sizeof *pool * pool_count);
    for (int i = 0; i < pool_count; i++) {
        uint8_t key[4];
        random_key(key);
        pool[i] = xmalloc(opt.size + 14);
        size_t h = frame_header(pool[i], opt.binary ? OP_BINARY : OP_TEXT, opt.size, key);
        memcpy(pool[i] + h, expected, opt.size);
        apply_mask(pool[i] + h, opt.size, key);
        frame_len = h + opt.size;
    }
}

static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 32)
        fail("need %d file descriptors, the limit is %ld", nconns + 32, (long)rl.rlim_cur);
}

static void report(void) {
    qsort(samples, nsamples, sizeof *samples, cmp_float);
    double seconds = t1 > t0 ? t1 - t0 : 0;
    const char *modes[] = {"echo", "fanout", "handshakes", "idle"};
    printf("{\"mode\":\"%s\",\"port\":%d,\"conns\":%d", modes[opt.mode], opt.port, opt.conns);
    if (opt.mode == M_ECHO) {
        double rate = seconds > 0 ? completed / seconds : 0;
        printf(",\"size\":%zu,\"binary\":%s,\"seconds\":%.4f,\"round_trips\":%ld"
               ",\"round_trips_per_s\":%.1f,\"mb_per_s\":%.3f",
               opt.size, opt.binary ? "true" : "false", seconds, completed, rate,
               rate * opt.size / 1e6);
    } else if (opt.mode == M_FANOUT) {
        double span = last_delivery > t0 ? last_delivery - t0 : 0;
        printf(",\"messages\":%ld,\"complete\":%ld,\"window\":%d,\"seconds\":%.4f"
               ",\"deliveries\":%ld,\"deliveries_per_s\":%.1f",
               fan_sent, fan_complete, opt.window, span, deliveries,
               span > 0 ? deliveries / span : 0);
    } else if (opt.mode == M_HANDSHAKES) {
        printf(",\"seconds\":%.4f,\"handshakes\":%ld,\"handshakes_per_s\":%.1f", seconds,
               completed, seconds > 0 ? completed / seconds : 0);
    }
    if (opt.mode == M_ECHO || opt.mode == M_FANOUT)
        printf(",\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f", percentile(0.5),
               percentile(0.99), nsamples ? samples[nsamples - 1] : -1.0);
    if (seconds > 0 && opt.mode != M_IDLE)
        printf(",\"loadgen_cpu\":%.3f", (cpu1 - cpu0) / seconds);
    printf(",\"opened\":%ld,\"upgrade_failures\":%ld,\"unclean_closes\":%ld,\"errors\":%ld",
           opened, upgrade_failures, unclean, errors);
    if (error_text[0]) {
        printf(",\"error\":\"");
        for (const char *p = error_text; *p; p++)
            if (*p == '"' || *p == '\\') printf("\\%c", *p);
            else if ((unsigned char)*p >= 0x20) putchar(*p);
        printf("\"");
    }
    printf("}\n");
    fflush(stdout);
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen echo|throughput|fanout|handshakes|idle --port P [options]\n"
            "  --conns N        connections (echo, idle), receivers (fanout), at once (handshakes)\n"
            "  --size BYTES     echo message size (default 32)\n"
            "  --binary         echo binary messages (default text; throughput: binary)\n"
            "  --busy-poll      poll without sleeping (a core spins): latency without wake-ups\n"
            "  --duration S     seconds measured (default 2)\n"
            "  --warmup S       echo: seconds before measuring (default 0.5)\n"
            "  --count N        echo, handshakes: stop after N\n"
            "  --messages M     fanout: messages sent (default 1000)\n"
            "  --window W       fanout: messages not yet at every receiver, at most (default 10)\n"
            "  --concurrency K  handshakes under way at once while connecting (default 64)\n"
            "  --hold S         idle: close after S seconds without a line on stdin (default 600)\n"
            "  --subprotocol P  offer this subprotocol (fanout: beej-chat-protocol)\n"
            "  --close-timeout S  seconds to wait for the Close handshakes at the end (default 5)\n"
            "  --tls            TLS first (wss://), when built with -DWITH_TLS\n"
            "  --timeout S      give up after S seconds in all (default 120)\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *mode = argv[1];
    if (!strcmp(mode, "features")) {
#ifdef WITH_TLS
        printf("{\"tls\":true}\n");
#else
        printf("{\"tls\":false}\n");
#endif
        return 0;
    }
    if (!strcmp(mode, "echo")) opt.mode = M_ECHO;
    else if (!strcmp(mode, "throughput")) { opt.mode = M_ECHO; opt.binary = 1; }
    else if (!strcmp(mode, "fanout")) { opt.mode = M_FANOUT; opt.subprotocol = "beej-chat-protocol"; }
    else if (!strcmp(mode, "handshakes")) opt.mode = M_HANDSHAKES;
    else if (!strcmp(mode, "idle")) opt.mode = M_IDLE;
    else usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--binary")) { opt.binary = 1; continue; }
        if (!strcmp(a, "--text")) { opt.binary = 0; continue; }
        if (!strcmp(a, "--busy-poll")) { opt.busy_poll = 1; continue; }
        if (!strcmp(a, "--tls")) { opt.tls = 1; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--port")) opt.port = atoi(v);
        else if (!strcmp(a, "--conns")) opt.conns = atoi(v);
        else if (!strcmp(a, "--size")) opt.size = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--duration")) opt.duration = atof(v);
        else if (!strcmp(a, "--warmup")) opt.warmup = atof(v);
        else if (!strcmp(a, "--count")) opt.max_count = atol(v);
        else if (!strcmp(a, "--messages")) opt.messages = atoi(v);
        else if (!strcmp(a, "--window")) opt.window = atoi(v);
        else if (!strcmp(a, "--concurrency")) opt.concurrency = atoi(v);
        else if (!strcmp(a, "--hold")) opt.hold = atof(v);
        else if (!strcmp(a, "--subprotocol")) opt.subprotocol = v;
        else if (!strcmp(a, "--timeout")) opt.timeout = atof(v);
        else if (!strcmp(a, "--close-timeout")) opt.close_timeout = atof(v);
        else usage();
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.conns < 1 || opt.conns > 100000 ||
        opt.concurrency < 1 || opt.window < 1 || opt.messages < 1 || opt.duration <= 0 ||
        opt.timeout <= 0 || opt.size > (64u << 20))
        usage();

    t_start = now();
    rng_state = ((uint64_t)getpid() << 32) ^ (uint64_t)(t_start * 1e9) ^ 0x9e3779b97f4a7c15ULL;
    if (!rng_state) rng_state = 1;
    nconns = opt.mode == M_FANOUT ? opt.conns + 1 : opt.conns;
    raise_fd_limit();
    conns = calloc(nconns, sizeof *conns);
    rbuf = xmalloc(READ_CHUNK);
    if (!conns) fail("out of memory");
    for (int i = 0; i < nconns; i++) {
        conns[i].id = i;
        conns[i].fd = -1;
        conns[i].state = S_FREE;
    }
    if (opt.mode == M_ECHO || opt.mode == M_FANOUT)
        samples = xmalloc(sizeof *samples * (size_t)MAX_SAMPLES);
    if (opt.mode == M_ECHO) build_echo_pool();
    if (opt.mode == M_FANOUT) {
        delivered = calloc(opt.messages, sizeof *delivered);
        fan_sent_at = calloc(opt.messages, sizeof *fan_sent_at);
        if (!delivered || !fan_sent_at) fail("out of memory");
    }
    request_len = snprintf(request, sizeof request,
                           "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                           "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                           opt.port, opt.subprotocol ? "Sec-WebSocket-Protocol: " : "",
                           opt.subprotocol ? opt.subprotocol : "", opt.subprotocol ? "\r\n" : "");
#ifdef WITH_TLS
    if (opt.tls) {
        ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (!ssl_ctx) fail("SSL_CTX_new failed");
        SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);   /* full handshakes */
        SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_options(ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);   /* TCP's EOF: an end */
    }
#else
    if (opt.tls) fail("this loadgen was built without TLS (-DWITH_TLS, -lssl -lcrypto)");
#endif
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) fail("epoll_create1: %s", strerror(errno));
    run();
    report();
    return errors ? 1 : 0;
}
