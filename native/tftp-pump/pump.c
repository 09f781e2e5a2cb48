/*
 * The data phase of TFTP read transfers, off the JavaScript thread and out of Node's UDP path.
 *
 * Why native: in lockstep (window 1, U-Boot's default) every block waits for the server's turnaround,
 * and Node's UDP path (libuv poll, a JS callback, a Buffer per datagram, its send path) costs 30-38 us
 * of it against tftp-hpa's 13-15 us (README, Benchmarks). No maintained npm package serves UDP from
 * its own thread, so this file does only that: one thread, one epoll set, every transfer's socket.
 *
 * JavaScript keeps every decision: it parses the request, asks who the client is and what the path
 * means, opens the file below its root, negotiates the options and encodes the OACK. It hands over
 * an authorised, fixed source (a buffer it keeps alive, or a descriptor read with pread) and the
 * peer's address and port; this file only moves those bytes to that peer, with RFC 1350/2347/7440's
 * rules (ACK from the transfer's own peer only, go-back-N driven by the timer alone, block numbers
 * wrapping at 2^16), and reports how it ended.
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OP_DATA 3
#define OP_ACK 4
#define OP_ERROR 5
/* The thread sleeps until the earliest transfer deadline it knows of (`engine.wake`), not on a short
 * tick: a lockstep block waits on a timer that is armed and cancelled once per packet, and one that is
 * often the CPU's earliest makes the kernel reprogram the timer device each time, which in a VM is an
 * exit per block (measured: U-Boot's window-1 turnaround 17-21 us with a 2 ms tick, against in.tftpd's
 * 13-16 us with its 1 s timeout). Timeouts are >= 1 s in service and >= 20 ms in tests. */

typedef struct xfer {
  uint32_t id;
  int sock;  /* connected to the peer: the kernel caches its route both ways (no lookup per packet) */
  int stray; /* unconnected, same port: only strangers land here (the connected socket wins for the peer) */
  struct sockaddr_storage peer;
  socklen_t peerlen;
  const uint8_t *buf; /* in-memory source (JS holds a reference until the end), or NULL */
  int fd;             /* file source read with pread, or -1 */
  uint64_t size;
  uint8_t *oack; /* NULL: no options, the transfer starts with DATA 1 */
  size_t oacklen;
  uint32_t blksize, windowsize, maxRetries;
  uint64_t timeoutNs;
  /* state */
  int waitingOack;
  uint64_t base;     /* first unacknowledged block (absolute, from 1) */
  uint64_t next;     /* next block to send */
  uint64_t sentTo;   /* highest block sent */
  uint64_t last;     /* the final block: size / blksize + 1 (empty when size divides evenly) */
  uint32_t retries;
  uint64_t deadline;
  uint64_t bytes;    /* payload the client acknowledged */
  uint32_t retransmits, malformed, strangers;
  struct engine *e;
  uint8_t *ahead; /* lockstep from a file: the next block, read while the client answers */
  uint64_t aheadBlock;
  size_t aheadLen;
  struct xfer *prev, *nextX;
} xfer;

typedef struct cmd {
  int kind; /* 1 start, 2 cancel (closing is the engine's `closed` flag) */
  xfer *x;
  uint32_t id;
  uint16_t code;
  char msg[128];
  struct cmd *next;
} cmd;

typedef struct result {
  uint32_t id;
  int ok;
  uint64_t bytes;
  uint32_t retransmits, malformed, strangers;
  char error[192];
} result;

/* One engine per TftpServer: its own thread, epoll set and callback into that server's JS thread. */
typedef struct engine {
  pthread_t thread;
  int epfd, evfd;
  pthread_mutex_t mu;
  cmd *head, *tail;
  xfer *list; /* owned by the engine thread */
  xfer *dead; /* ended this round, freed at its end */
  uint32_t active;
  uint8_t pkt[4 + 65464]; /* DATA scratch: one thread builds one packet at a time */
  napi_threadsafe_function done;
  int closed;
  /* No deadline of a running transfer is earlier than this: arm() only moves deadlines later, and
   * begin() lowers it for a new transfer. At `wake` the loop finds expired transfers and the next one. */
  uint64_t wake;
} engine;

static uint64_t nowNs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sendTo(xfer *x, const void *b, size_t n, const struct sockaddr *to, socklen_t tolen) {
  /* A full socket buffer or a vanished route is a lost packet: the timer covers it. To the peer, no
   * address: naming one (even the connected one) makes the kernel look the route up again. */
  if (to == (const struct sockaddr *)&x->peer) (void)!send(x->sock, b, n, MSG_DONTWAIT);
  else (void)!sendto(x->stray >= 0 ? x->stray : x->sock, b, n, MSG_DONTWAIT, to, tolen);
}

static void sendError(xfer *x, const struct sockaddr *to, socklen_t tolen, uint16_t code, const char *msg) {
  uint8_t b[4 + 128 + 1];
  size_t m = strnlen(msg, 128);
  b[0] = 0, b[1] = OP_ERROR, b[2] = code >> 8, b[3] = code & 0xff;
  memcpy(b + 4, msg, m);
  b[4 + m] = 0;
  sendTo(x, b, 5 + m, to, tolen);
}

/* The payload length of `block` (the final block is short, possibly empty). */
static size_t payload(xfer *x, uint64_t block) {
  uint64_t off = (block - 1) * (uint64_t)x->blksize;
  return off >= x->size ? 0 : (size_t)(x->size - off < x->blksize ? x->size - off : x->blksize);
}

/* DATA `block` from a descriptor into `pkt`; its length, or -1 when the file cannot be read. */
static ssize_t readBlock(xfer *x, uint64_t block, uint8_t *pkt) {
  uint64_t off = (block - 1) * (uint64_t)x->blksize;
  size_t n = payload(x, block), got = 0;
  pkt[0] = 0, pkt[1] = OP_DATA, pkt[2] = (block >> 8) & 0xff, pkt[3] = block & 0xff;
  while (got < n) {
    ssize_t r = pread(x->fd, pkt + 4 + got, n - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1; /* error, or the file shrank under us */
    got += (size_t)r;
  }
  return (ssize_t)(4 + n);
}

/* Sends DATA `block`; -1 when the source cannot be read. Bytes go straight from the buffer (no copy);
 * from a file, a lockstep transfer reads the next block while the client answers (see pump). */
static int sendBlock(xfer *x, uint64_t block) {
  if (x->buf) {
    uint8_t hdr[4] = {0, OP_DATA, (block >> 8) & 0xff, block & 0xff};
    struct iovec iov[2] = {{hdr, 4}, {(void *)(x->buf + (block - 1) * (uint64_t)x->blksize), payload(x, block)}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = iov[1].iov_len ? 2 : 1}; /* connected: no address */
    (void)!sendmsg(x->sock, &m, MSG_DONTWAIT);
    return 0;
  }
  ssize_t n;
  uint8_t *pkt = x->ahead && x->aheadBlock == block ? x->ahead : x->e->pkt;
  if (pkt == x->ahead) n = x->aheadLen;
  else if ((n = readBlock(x, block, pkt)) < 0) return -1;
  sendTo(x, pkt, (size_t)n, (struct sockaddr *)&x->peer, x->peerlen);
  return 0;
}

/* Lockstep from a file: the block after `block`, read now, sent the moment its ACK comes. */
static void readAhead(xfer *x, uint64_t block) {
  if (!x->ahead || block > x->last || x->aheadBlock == block) return;
  ssize_t n = readBlock(x, block, x->ahead);
  x->aheadBlock = n < 0 ? 0 : block; /* a failed read is retried, and reported, when the block is due */
  x->aheadLen = n < 0 ? 0 : (size_t)n;
}

static void finish(xfer *x, int ok, const char *error);

static void arm(xfer *x) {
  x->deadline = nowNs() + x->timeoutNs;
  if (x->deadline < x->e->wake) x->e->wake = x->deadline; /* in effect, only a new transfer's first arm */
}

/* Sends the window from `next`. */
static void pump(xfer *x) {
  int sent = 0;
  while (x->next < x->base + x->windowsize && x->next <= x->last) {
    if (x->next <= x->sentTo) x->retransmits++;
    if (sendBlock(x, x->next) < 0) {
      sendError(x, (struct sockaddr *)&x->peer, x->peerlen, 0, "Read error");
      return finish(x, 0, "Read error");
    }
    if (x->next > x->sentTo) x->sentTo = x->next;
    x->next++;
    sent = 1;
  }
  if (sent) {
    arm(x);
    readAhead(x, x->next);
  }
}

static void onAck(xfer *x, uint16_t n) {
  if (x->waitingOack) {
    if (n != 0) return;
    x->waitingOack = 0;
    x->retries = 0;
    return pump(x);
  }
  /* Distance from the last acknowledged block, modulo 2^16; 0 is a repeated ACK (only the timer
   * resends, so duplicated ACKs never double the traffic), beyond sentTo is stale. */
  uint64_t d = (uint16_t)(n - (uint16_t)x->base + 1);
  if (d == 0 || d > x->sentTo - x->base + 1) return;
  for (uint64_t b = x->base; b < x->base + d; b++) {
    uint64_t off = (b - 1) * (uint64_t)x->blksize;
    x->bytes += off >= x->size ? 0 : (x->size - off < x->blksize ? x->size - off : x->blksize);
  }
  x->base += d;
  x->retries = 0;
  if (x->base > x->last) return finish(x, 1, NULL);
  x->next = x->base; /* an ACK inside the window: the blocks after it were lost */
  pump(x);
}

static int samePeer(xfer *x, const struct sockaddr_storage *from, socklen_t fromlen) {
  if (fromlen != x->peerlen) return 0;
  if (from->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)from, *b = (const void *)&x->peer;
    return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
  }
  if (from->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)from, *b = (const void *)&x->peer;
    return a->sin6_port == b->sin6_port && !memcmp(&a->sin6_addr, &b->sin6_addr, 16);
  }
  return 0;
}

/* What arrived on one packet; returns 0 once the transfer has ended. */
static int onPacket(xfer *x, const uint8_t *b, ssize_t n, struct sockaddr_storage *from, socklen_t fromlen) {
  if (!samePeer(x, from, fromlen)) {
    /* RFC 1350: a stranger gets ERROR 5; the transfer carries on undisturbed */
    x->strangers++;
    sendError(x, (struct sockaddr *)from, fromlen, 5, "Unknown transfer ID");
    return 1;
  }
  if (n == 4 && b[0] == 0 && b[1] == OP_ACK) {
    onAck(x, (uint16_t)(b[2] << 8 | b[3]));
    return x->sock >= 0;
  }
  if (n >= 5 && b[0] == 0 && b[1] == OP_ERROR && b[n - 1] == 0) {
    char e[192];
    snprintf(e, sizeof e, "client error %u: %.150s", (unsigned)(b[2] << 8 | b[3]), (const char *)b + 4);
    finish(x, 0, e);
    return 0;
  }
  /* Anything else is ignored: undecodable counts as malformed; DATA/RRQ/WRQ/OACK from the client make
   * no sense on a read transfer. */
  if (n < 4 || b[0] != 0 || b[1] < 1 || b[1] > 6 || b[1] == OP_ERROR) x->malformed++;
  return 1;
}

#define BATCH 8
/* Reads what is queued in one recvmmsg (in lockstep that is one ACK: no second call to find EAGAIN). */
static void onReadable(xfer *x) {
  static __thread uint8_t bufs[BATCH][600];
  struct mmsghdr m[BATCH];
  struct iovec iov[BATCH];
  struct sockaddr_storage from[BATCH];
  for (int round = 0; round < 8 && x->sock >= 0; round++) {
    for (int i = 0; i < BATCH; i++) {
      iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = sizeof bufs[i]};
      m[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = sizeof from[i], .msg_iov = &iov[i], .msg_iovlen = 1};
    }
    int n = recvmmsg(x->sock, m, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) return; /* EAGAIN, or an ICMP error queued on the socket: the timer covers it */
    for (int i = 0; i < n; i++)
      if (!onPacket(x, bufs[i], (ssize_t)m[i].msg_len, &from[i], m[i].msg_hdr.msg_namelen)) return;
    if (n < BATCH) return;
  }
}

/* Strangers on the transfer's port: each gets ERROR 5 (RFC 1350); the transfer carries on undisturbed. */
static void onStray(xfer *x) {
  uint8_t b[600];
  struct sockaddr_storage from;
  for (int i = 0; i < BATCH * 8 && x->stray >= 0; i++) {
    socklen_t fromlen = sizeof from;
    if (recvfrom(x->stray, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen) < 0) return;
    x->strangers++;
    sendError(x, (struct sockaddr *)&from, fromlen, 5, "Unknown transfer ID");
  }
}

static void onTimeout(xfer *x) {
  if (++x->retries > x->maxRetries) {
    sendError(x, (struct sockaddr *)&x->peer, x->peerlen, 0, "Transfer timed out");
    return finish(x, 0, "Transfer timed out");
  }
  if (x->waitingOack) {
    x->retransmits++;
    sendTo(x, x->oack, x->oacklen, (struct sockaddr *)&x->peer, x->peerlen);
    arm(x);
    return;
  }
  x->next = x->base; /* go back N: resend the whole unacknowledged window */
  pump(x);
  if (x->sock >= 0) arm(x);
}

static void freeX(xfer *x) {
  free(x->oack);
  free(x->ahead);
  free(x);
}

/* Ends a transfer: unlinks it, closes its socket, reports to JavaScript. Called once per transfer. */
static void finish(xfer *x, int ok, const char *error) {
  if (x->sock < 0) return;
  epoll_ctl(x->e->epfd, EPOLL_CTL_DEL, x->sock, NULL);
  close(x->sock);
  x->sock = -1;
  if (x->stray >= 0) {
    epoll_ctl(x->e->epfd, EPOLL_CTL_DEL, x->stray, NULL);
    close(x->stray);
    x->stray = -1;
  }
  if (x->prev) x->prev->nextX = x->nextX;
  else x->e->list = x->nextX;
  if (x->nextX) x->nextX->prev = x->prev;
  x->e->active--;
  result *r = calloc(1, sizeof *r);
  if (r) {
    r->id = x->id, r->ok = ok, r->bytes = x->bytes;
    r->retransmits = x->retransmits, r->malformed = x->malformed, r->strangers = x->strangers;
    if (error) snprintf(r->error, sizeof r->error, "%s", error);
    if (napi_call_threadsafe_function(x->e->done, r, napi_tsfn_blocking) != napi_ok) free(r);
  }
  /* Freed by the loop once this round of events is handled: callers up the stack still hold x. */
  x->nextX = x->e->dead;
  x->e->dead = x;
}

static void begin(xfer *x) {
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = x};
  /* The stray socket's events carry x's address with the low bit set (xfer is malloc-aligned). */
  struct epoll_event sev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)x | 1};
  if (x->stray >= 0 && epoll_ctl(x->e->epfd, EPOLL_CTL_ADD, x->stray, &sev) < 0) {
    close(x->stray); /* strangers then get the kernel's ICMP instead of ERROR 5: the transfer still runs */
    x->stray = -1;
  }
  if (epoll_ctl(x->e->epfd, EPOLL_CTL_ADD, x->sock, &ev) < 0) {
    x->nextX = x->e->list, x->prev = NULL;
    if (x->e->list) x->e->list->prev = x;
    x->e->list = x;
    x->e->active++;
    return finish(x, 0, "epoll_ctl failed");
  }
  x->nextX = x->e->list, x->prev = NULL;
  if (x->e->list) x->e->list->prev = x;
  x->e->list = x;
  x->e->active++;
  if (x->oack) {
    x->waitingOack = 1;
    sendTo(x, x->oack, x->oacklen, (struct sockaddr *)&x->peer, x->peerlen);
    arm(x);
  } else pump(x);
}

static void drainCommands(engine *e, int *quit) {
  uint64_t v;
  (void)!read(e->evfd, &v, sizeof v);
  pthread_mutex_lock(&e->mu);
  cmd *c = e->head;
  e->head = e->tail = NULL;
  *quit = e->closed;
  pthread_mutex_unlock(&e->mu);
  while (c) {
    cmd *n = c->next;
    if (c->kind == 1) begin(c->x);
    else if (c->kind == 2) {
      for (xfer *x = e->list; x; x = x->nextX)
        if (x->id == c->id) {
          sendError(x, (struct sockaddr *)&x->peer, x->peerlen, c->code, c->msg);
          finish(x, 0, c->msg);
          break;
        }
    }
    free(c);
    c = n;
  }
}

static void reap(engine *e) {
  while (e->dead) {
    xfer *x = e->dead;
    e->dead = x->nextX;
    freeX(x);
  }
}

static void *loop(void *arg) {
  engine *e = arg;
  struct epoll_event evs[64];
  int quit = 0;
  e->wake = UINT64_MAX;
  while (!quit) {
    int timeout = -1; /* no transfer, no deadline */
    if (e->active) {
      uint64_t now = nowNs(), ms = e->wake <= now ? 0 : (e->wake - now + 999999) / 1000000; /* rounded up */
      timeout = ms > 60000 ? 60000 : (int)ms;
    }
    int n = epoll_wait(e->epfd, evs, 64, timeout);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) drainCommands(e, &quit);
      else if (evs[i].data.u64 & 1) {
        xfer *x = (xfer *)(uintptr_t)(evs[i].data.u64 & ~(uint64_t)1);
        if (x->sock >= 0) onStray(x);
      } else onReadable(evs[i].data.ptr);
    }
    uint64_t now = nowNs();
    if (now >= e->wake) {
      /* Expired transfers time out (re-arming, or ending); the others give the next wake. */
      uint64_t next = UINT64_MAX;
      for (xfer *x = e->list, *nx; x; x = nx) {
        nx = x->nextX;
        if (now >= x->deadline) onTimeout(x);
        if (x->sock >= 0 && x->deadline < next) next = x->deadline;
      }
      e->wake = next;
    }
    reap(e);
  }
  while (e->list) {
    xfer *x = e->list;
    sendError(x, (struct sockaddr *)&x->peer, x->peerlen, 0, "Server shutting down");
    finish(x, 0, "Server shutting down");
  }
  reap(e);
  return NULL;
}

static int post(engine *e, cmd *c) {
  pthread_mutex_lock(&e->mu);
  if (e->closed) {
    pthread_mutex_unlock(&e->mu);
    return -1;
  }
  if (e->tail) e->tail->next = c;
  else e->head = c;
  e->tail = c;
  pthread_mutex_unlock(&e->mu);
  uint64_t one = 1;
  (void)!write(e->evfd, &one, sizeof one);
  return 0;
}

/* ---- JavaScript side ---- */

#define CHECK(call)                                               \
  do {                                                            \
    if ((call) != napi_ok) {                                      \
      napi_throw_error(env, NULL, "tftp-pump: " #call " failed"); \
      return NULL;                                                \
    }                                                             \
  } while (0)

static void callDone(napi_env env, napi_value js, void *ctx, void *data) {
  (void)ctx;
  result *r = data;
  if (env && js) {
    napi_value o, v, undef;
    napi_create_object(env, &o);
    napi_create_uint32(env, r->id, &v), napi_set_named_property(env, o, "id", v);
    napi_get_boolean(env, r->ok, &v), napi_set_named_property(env, o, "ok", v);
    napi_create_double(env, (double)r->bytes, &v), napi_set_named_property(env, o, "bytes", v);
    napi_create_uint32(env, r->retransmits, &v), napi_set_named_property(env, o, "retransmits", v);
    napi_create_uint32(env, r->malformed, &v), napi_set_named_property(env, o, "malformed", v);
    napi_create_uint32(env, r->strangers, &v), napi_set_named_property(env, o, "strangers", v);
    if (r->error[0]) napi_create_string_utf8(env, r->error, NAPI_AUTO_LENGTH, &v), napi_set_named_property(env, o, "error", v);
    napi_get_undefined(env, &undef);
    napi_call_function(env, undef, js, 1, &o, NULL);
  }
  free(r);
}

/* A call's `n` arguments into argv, the first being an open engine; NULL (a JS exception thrown) if not. */
static engine *engineCall(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  void *p = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n ||
      napi_get_value_external(env, argv[0], &p) != napi_ok || !p || ((engine *)p)->closed) {
    napi_throw_error(env, NULL, "tftp-pump: not an open engine");
    return NULL;
  }
  return p;
}

/* The external's finalizer: a closed engine's memory goes with its last JS reference (an open one,
 * dropped without close, keeps its thread and so its memory). */
static void freeEngine(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  engine *e = data;
  if (e->closed) {
    pthread_mutex_destroy(&e->mu);
    free(e);
  }
}

/* open(onDone): a new engine and its thread. onDone({id, ok, bytes, retransmits, malformed, strangers,
 * error?}) runs on this JS thread once per transfer. The engine holds the process open only while
 * transfers run (ref/unref from JS). */
static napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name, out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  engine *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  pthread_mutex_init(&e->mu, NULL);
  CHECK(napi_create_string_utf8(env, "tftp-pump", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, callDone, &e->done));
  CHECK(napi_unref_threadsafe_function(env, e->done));
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  e->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (e->epfd < 0 || e->evfd < 0 || epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->evfd, &ev) < 0 || pthread_create(&e->thread, NULL, loop, e)) {
    napi_throw_error(env, NULL, "tftp-pump: cannot start its thread");
    return NULL;
  }
  CHECK(napi_create_external(env, e, freeEngine, NULL, &out));
  return out;
}

static int getU32(napi_env env, napi_value o, const char *k, uint32_t *out) {
  napi_value v;
  return napi_get_named_property(env, o, k, &v) == napi_ok && napi_get_value_uint32(env, v, out) == napi_ok ? 0 : -1;
}

/*
 * start(engine, {id, bind, peer, port, buf | fd, sizeLo, sizeHi, oack?, blksize, windowsize, timeoutMs,
 * retries}): opens the transfer's own socket on `bind` (port 0: a new TID); the engine then sends the
 * OACK or DATA 1. Returns the socket's port; throws when the socket cannot be made.
 */
static napi_value Start(napi_env env, napi_callback_info info) {
  napi_value argv[2], v;
  engine *e = engineCall(env, info, 2, argv);
  if (!e) return NULL;
  napi_value o = argv[1];
  xfer *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  x->e = e;
  x->fd = -1;
  x->sock = x->stray = -1;
  uint32_t port, timeoutMs, fd, sizeLo, sizeHi;
  char localAddr[64], peer[64];
  size_t len;
  bool has;
  if (getU32(env, o, "id", &x->id) || getU32(env, o, "port", &port) || getU32(env, o, "blksize", &x->blksize) ||
      getU32(env, o, "windowsize", &x->windowsize) || getU32(env, o, "timeoutMs", &timeoutMs) ||
      getU32(env, o, "retries", &x->maxRetries) || getU32(env, o, "sizeLo", &sizeLo) || getU32(env, o, "sizeHi", &sizeHi) ||
      napi_get_named_property(env, o, "bind", &v) != napi_ok || napi_get_value_string_utf8(env, v, localAddr, sizeof localAddr, &len) != napi_ok ||
      napi_get_named_property(env, o, "peer", &v) != napi_ok || napi_get_value_string_utf8(env, v, peer, sizeof peer, &len) != napi_ok ||
      x->blksize < 8 || x->blksize > 65464 || x->windowsize < 1 || x->windowsize > 32768 || port == 0 || port > 65535) {
    free(x);
    napi_throw_type_error(env, NULL, "tftp-pump: bad transfer options");
    return NULL;
  }
  x->size = (uint64_t)sizeHi << 32 | sizeLo;
  x->timeoutNs = (uint64_t)timeoutMs * 1000000ull;
  x->last = x->size / x->blksize + 1;
  x->base = x->next = 1;
  if (napi_has_named_property(env, o, "buf", &has) == napi_ok && has) {
    void *data;
    size_t n;
    napi_get_named_property(env, o, "buf", &v);
    if (napi_get_buffer_info(env, v, &data, &n) != napi_ok || n != x->size) {
      free(x);
      napi_throw_type_error(env, NULL, "tftp-pump: buf must be a Buffer of the transfer's size");
      return NULL;
    }
    static const uint8_t empty[1];
    x->buf = n ? data : empty; /* an empty Buffer may have no data pointer */
  } else if (getU32(env, o, "fd", &fd) == 0) {
    x->fd = (int)fd;
    if (x->windowsize == 1 && !(x->ahead = malloc(4 + x->blksize))) {
      free(x);
      return NULL;
    }
  }
  else {
    free(x);
    napi_throw_type_error(env, NULL, "tftp-pump: a transfer needs buf or fd");
    return NULL;
  }
  if (napi_has_named_property(env, o, "oack", &has) == napi_ok && has) {
    void *data;
    size_t n;
    napi_get_named_property(env, o, "oack", &v);
    if (napi_get_buffer_info(env, v, &data, &n) == napi_ok && n > 0 && (x->oack = malloc(n))) {
      memcpy(x->oack, data, n);
      x->oacklen = n;
    }
  }
  int v6 = strchr(localAddr, ':') != NULL;
  struct sockaddr_storage local = {0};
  socklen_t locallen;
  int okAddr;
  if (v6) {
    struct sockaddr_in6 *l = (void *)&local, *p = (void *)&x->peer;
    l->sin6_family = p->sin6_family = AF_INET6;
    p->sin6_port = htons(port);
    locallen = x->peerlen = sizeof(struct sockaddr_in6);
    okAddr = inet_pton(AF_INET6, localAddr, &l->sin6_addr) == 1 && inet_pton(AF_INET6, peer, &p->sin6_addr) == 1;
  } else {
    struct sockaddr_in *l = (void *)&local, *p = (void *)&x->peer;
    l->sin_family = p->sin_family = AF_INET;
    p->sin_port = htons(port);
    locallen = x->peerlen = sizeof(struct sockaddr_in);
    okAddr = inet_pton(AF_INET, localAddr, &l->sin_addr) == 1 && inet_pton(AF_INET, peer, &p->sin_addr) == 1;
  }
  if (!okAddr) {
    freeX(x);
    napi_throw_type_error(env, NULL, "tftp-pump: bad address");
    return NULL;
  }
  /* Two sockets on one new port, both SO_REUSEADDR: `sock` connected to the peer, so the kernel keeps
   * its route (early demux on receive, the cached dst on send) instead of a lookup per datagram, and
   * `stray`, unconnected, which the kernel picks only for packets from anyone else. If the kernel ever
   * gives two transfers the same port, each connected socket still gets only its own peer's packets. */
  int one = 1;
  x->sock = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (x->sock < 0 || setsockopt(x->sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(x->sock, (struct sockaddr *)&local, locallen) < 0 || getsockname(x->sock, (struct sockaddr *)&local, &locallen) < 0 ||
      connect(x->sock, (struct sockaddr *)&x->peer, x->peerlen) < 0) {
    char err[160];
    snprintf(err, sizeof err, "tftp-pump: socket on %s: %s", localAddr, strerror(errno));
    if (x->sock >= 0) close(x->sock);
    freeX(x);
    napi_throw_error(env, NULL, err);
    return NULL;
  }
  x->stray = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (x->stray >= 0 && (setsockopt(x->stray, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
                        bind(x->stray, (struct sockaddr *)&local, locallen) < 0)) {
    close(x->stray); /* strangers then get the kernel's ICMP instead of ERROR 5; the transfer is unaffected */
    x->stray = -1;
  }
  napi_value out;
  uint16_t lport = ntohs(v6 ? ((struct sockaddr_in6 *)&local)->sin6_port : ((struct sockaddr_in *)&local)->sin_port);
  cmd *c = calloc(1, sizeof *c);
  if (!c || post(e, (c->kind = 1, c->x = x, c)) < 0) {
    close(x->sock);
    if (x->stray >= 0) close(x->stray);
    freeX(x);
    free(c);
    napi_throw_error(env, NULL, "tftp-pump: engine closed");
    return NULL;
  }
  CHECK(napi_create_uint32(env, lport, &out));
  return out;
}

/* cancel(engine, id, code, message): sends the client ERROR code/message and ends the transfer as failed. */
static napi_value Cancel(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  engine *e = engineCall(env, info, 4, argv);
  if (!e) return NULL;
  cmd *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  uint32_t code = 0;
  size_t len;
  c->kind = 2;
  napi_get_value_uint32(env, argv[1], &c->id);
  napi_get_value_uint32(env, argv[2], &code);
  c->code = (uint16_t)code;
  napi_get_value_string_utf8(env, argv[3], c->msg, sizeof c->msg, &len);
  if (post(e, c) < 0) free(c);
  return NULL;
}

/* hold(engine, bool): whether the engine keeps the JS thread's event loop alive (while transfers run). */
static napi_value Hold(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  bool on = false;
  engine *e = engineCall(env, info, 2, argv);
  if (!e) return NULL;
  napi_get_value_bool(env, argv[1], &on);
  CHECK(on ? napi_ref_threadsafe_function(env, e->done) : napi_unref_threadsafe_function(env, e->done));
  return NULL;
}

/* close(engine): ends every transfer ("Server shutting down", reported through onDone) and the thread. */
static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  engine *e = engineCall(env, info, 1, argv);
  if (!e) return NULL;
  pthread_mutex_lock(&e->mu);
  e->closed = 1; /* post() takes nothing more; the thread ends once it has drained what it had */
  pthread_mutex_unlock(&e->mu);
  uint64_t one = 1;
  (void)!write(e->evfd, &one, sizeof one);
  pthread_join(e->thread, NULL);
  close(e->epfd);
  close(e->evfd);
  /* Queued results are still delivered before the function is finalized. */
  napi_release_threadsafe_function(e->done, napi_tsfn_release);
  return NULL;
}

static napi_value Register(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
      {"open", NULL, Open, NULL, NULL, NULL, napi_default, NULL},
      {"start", NULL, Start, NULL, NULL, NULL, napi_default, NULL},
      {"cancel", NULL, Cancel, NULL, NULL, NULL, napi_default, NULL},
      {"hold", NULL, Hold, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Register)
