/*
 * vmi-client: the native client of a vmi server (docs/serve.md, "The native client").
 *
 * Why: a `vmi plugins run pslist` served by `vmi serve` costs the server ~60 ms, but any
 * Node process costs 100-125 ms just to start on the hosts vmi is measured on (`node -e 0`),
 * and the Node fast path (dist/server/fast-cli.js) ~300 ms in all. This client, exec'd by
 * the `vmi` sh wrapper (bin/vmi), starts in about a millisecond: it sends the command line
 * to the guest's server (op 'cli' with `render`), and writes the stdout and stderr bytes
 * the server rendered (the command's own renderers, src/server/render-cli.ts), in order,
 * then exits with the command's exit code. The nailgun model: a native client for a
 * long-lived server.
 *
 * It handles only what it can handle exactly, and execs Node (`node bin/run.js ARGS`, with
 * VMI_CLIENT_FALLBACK=1 so that bin/run.js does not ask the server again) for everything
 * else: another command; a command line that names no lab guest or several
 * (src/server/fast-cli.ts servedTarget's scan), --help/-h/--list/--capture/--all-guests/
 * --version/--qmp; VMI_SERVER=off, VMI_TRUST_PACKS or VMI_DEBUG set; no socket or nobody
 * accepting on it; a `fallback` reply; a protocol or version problem; a server that goes
 * away before its reply when nothing was printed yet. A server that goes away after
 * something was printed: one line on stderr, exit 1.
 *
 * Protocol v1 (src/serve/protocol.ts): 4-byte big-endian length + MessagePack. The minimal
 * MessagePack codec below knows the types the protocol's `cli`/`rendered` messages use:
 * map, array, str, bin, int, bool, nil; anything else in a reply is a protocol problem.
 * Every length read from the socket is bounded: a frame by MAX_REPLY_BYTES, each element
 * count and string by the bytes left in its frame, nesting by MAX_DEPTH.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PROTOCOL_VERSION 1
#define MAX_REPLY_BYTES (512u << 20) /* protocol.ts MAX_REPLY_BYTES */
#define MAX_ARGS 256                 /* protocol.ts MAX_ARGS */
#define MAX_ARG_BYTES 4096           /* MAX_ARG_CHARS: UTF-16 units <= UTF-8 bytes */
#define MAX_DEPTH 16
#define STATUS_TIMEOUT_MS 2000 /* protocol.ts STATUS_TIMEOUT_MS */

static char **g_argv;
static int g_argc;
static const char *g_sock = "";
static int g_printed; /* something went to stdout or stderr: Node can no longer take over */

/* ---- Node: the command the ordinary way ------------------------------------------------ */

/*
 * Execs `node ROOT/bin/run.js ARGS` (ROOT: this binary's dist/..), as `#!/usr/bin/env node` does.
 * asked: this client asked the server, or knows there is none, so Node's own fast path
 * (fast-cli.ts) must not ask again; 0 for command lines this client does not serve (--qmp,
 * whose socket path needs a sha256; several guests …), which Node may still send to a server.
 */
static void exec_node_after(int asked) {
  char exe[PATH_MAX], runjs[PATH_MAX + 32];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    fprintf(stderr, "vmi: error: cannot find bin/run.js: /proc/self/exe: %s\n", strerror(errno));
    exit(127);
  }
  exe[n] = 0;
  for (int up = 0; up < 2; up++) { /* ROOT/dist/vmi-client -> ROOT */
    char *slash = strrchr(exe, '/');
    if (!slash) break;
    *slash = 0;
  }
  snprintf(runjs, sizeof runjs, "%s/bin/run.js", exe);
  char **args = calloc((size_t)g_argc + 2, sizeof *args);
  if (!args) exit(127);
  args[0] = "node";
  args[1] = runjs;
  for (int i = 1; i < g_argc; i++) args[i + 1] = g_argv[i];
  signal(SIGPIPE, SIG_DFL);
  if (asked) setenv("VMI_CLIENT_FALLBACK", "1", 1);
  execvp("node", args);
  /* Any Node from 20 will do: bin/run.js re-runs itself under vmi's private LTS Node. */
  fprintf(stderr, "vmi: error: cannot start node: %s (vmi needs Node.js on PATH)\n", strerror(errno));
  exit(127);
}

static void exec_node(void) { exec_node_after(1); }

/* A problem after output started: one line, exit 1. Before: Node runs the command. */
static void fail_or_node(const char *what) {
  if (!g_printed) exec_node();
  fprintf(stderr, "vmi: error: vmi server at %s: %s\n", g_sock, what);
  exit(1);
}

/* ---- output ------------------------------------------------------------------------------ */

static int g_stdout_closed; /* the reader of stdout went away (EPIPE): drop the rest, quietly */

static void write_fd(int fd, const uint8_t *p, size_t len) {
  if (fd == 1 && g_stdout_closed) return;
  g_printed = 1;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE && fd == 1) {
        g_stdout_closed = 1;
        return;
      }
      if (fd == 1) {
        fprintf(stderr, "vmi: error: stdout: %s\n", strerror(errno));
        exit(1);
      }
      return; /* stderr is gone: nothing to say it on */
    }
    p += w;
    len -= (size_t)w;
  }
}

static void write_str(int fd, const char *s) { write_fd(fd, (const uint8_t *)s, strlen(s)); }

/* ---- MessagePack encoding (requests) ---------------------------------------------------- */

typedef struct {
  uint8_t *p;
  size_t len, cap;
} buf_t;

static void put(buf_t *b, const void *src, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    uint8_t *np = realloc(b->p, cap);
    if (!np) exit(127);
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->len, src, n);
  b->len += n;
}

static void put_u8(buf_t *b, uint8_t v) { put(b, &v, 1); }

/* Writes the frame's 4-byte big-endian body length, for a frame begun at `at` with a
 * placeholder and ending at the buffer's end. */
static void seal_frame(buf_t *b, size_t at) {
  size_t body = b->len - at - 4;
  for (int i = 0; i < 4; i++) b->p[at + i] = (uint8_t)(body >> (8 * (3 - i)));
}

static void put_be(buf_t *b, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; i--) put_u8(b, (uint8_t)(v >> (8 * i)));
}

static void put_head(buf_t *b, uint8_t fix, uint8_t fixmax, uint8_t c8, uint8_t c16, uint8_t c32, size_t n) {
  if (n <= fixmax) put_u8(b, (uint8_t)(fix | n));
  else if (c8 && n <= 0xff) put_u8(b, c8), put_u8(b, (uint8_t)n);
  else if (n <= 0xffff) put_u8(b, c16), put_be(b, n, 2);
  else put_u8(b, c32), put_be(b, n, 4);
}

static void put_str(buf_t *b, const char *s) {
  size_t n = strlen(s);
  put_head(b, 0xa0, 31, 0xd9, 0xda, 0xdb, n);
  put(b, s, n);
}

static void put_map(buf_t *b, size_t n) { put_head(b, 0x80, 15, 0, 0xde, 0xdf, n); }
static void put_array(buf_t *b, size_t n) { put_head(b, 0x90, 15, 0, 0xdc, 0xdd, n); }

/* Strict UTF-8 (no overlong forms, no surrogates, <= U+10FFFF): what a msgpack str must hold. */
static int valid_utf8(const uint8_t *s, size_t n) {
  for (size_t i = 0; i < n;) {
    uint8_t c = s[i];
    size_t k;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) k = 1, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) k = 2, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) k = 3, cp = c & 0x07;
    else return 0;
    if (i + k >= n) return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + j] & 0x3f);
    }
    if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000)) return 0;
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += k + 1;
  }
  return 1;
}

/* ---- MessagePack decoding (replies) ----------------------------------------------------- */

enum { T_NIL, T_BOOL, T_INT, T_STR, T_BIN, T_ARRAY, T_MAP };

typedef struct val {
  int type;
  int64_t i;       /* T_BOOL, T_INT (unsigned values above INT64_MAX are refused) */
  const uint8_t *s; /* T_STR, T_BIN */
  size_t n;         /* T_STR, T_BIN: bytes; T_ARRAY: items; T_MAP: pairs */
  struct val *items; /* T_ARRAY: n; T_MAP: 2n (key, value, ...) */
} val_t;

typedef struct {
  const uint8_t *p, *end;
  const char *err;
} dec_t;

static int need(dec_t *d, size_t n) {
  if ((size_t)(d->end - d->p) < n) {
    d->err = "a truncated MessagePack value";
    return 0;
  }
  return 1;
}

static uint64_t be(dec_t *d, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v = (v << 8) | d->p[i];
  d->p += bytes;
  return v;
}

static int decode(dec_t *d, val_t *v, int depth);

static int decode_items(dec_t *d, val_t *v, size_t count, int depth) {
  /* Each item takes at least one byte: a count beyond the bytes left is garbage, not a
   * reason to allocate. */
  if (count > (size_t)(d->end - d->p)) {
    d->err = "a MessagePack container longer than its frame";
    return 0;
  }
  v->items = count ? calloc(count, sizeof *v->items) : NULL;
  if (count && !v->items) {
    d->err = "out of memory";
    return 0;
  }
  for (size_t k = 0; k < count; k++)
    if (!decode(d, &v->items[k], depth + 1)) return 0;
  return 1;
}

static int decode_bytes(dec_t *d, val_t *v, int type, size_t n) {
  if (!need(d, n)) return 0;
  v->type = type;
  v->s = d->p;
  v->n = n;
  d->p += n;
  if (type == T_STR && !valid_utf8(v->s, n)) {
    d->err = "a MessagePack str that is not UTF-8";
    return 0;
  }
  return 1;
}

static int decode(dec_t *d, val_t *v, int depth) {
  memset(v, 0, sizeof *v);
  if (depth > MAX_DEPTH) {
    d->err = "MessagePack nested too deep";
    return 0;
  }
  if (!need(d, 1)) return 0;
  uint8_t c = *d->p++;
  if (c <= 0x7f) return v->type = T_INT, v->i = c, 1;
  if (c >= 0xe0) return v->type = T_INT, v->i = (int8_t)c, 1;
  if ((c & 0xf0) == 0x80) return v->type = T_MAP, v->n = c & 0x0f, decode_items(d, v, v->n * 2, depth);
  if ((c & 0xf0) == 0x90) return v->type = T_ARRAY, v->n = c & 0x0f, decode_items(d, v, v->n, depth);
  if ((c & 0xe0) == 0xa0) return decode_bytes(d, v, T_STR, c & 0x1f);
  switch (c) {
  case 0xc0: v->type = T_NIL; return 1;
  case 0xc2: case 0xc3: v->type = T_BOOL; v->i = c == 0xc3; return 1;
  case 0xc4: case 0xc5: case 0xc6: case 0xd9: case 0xda: case 0xdb: {
    int w = (c == 0xc4 || c == 0xd9) ? 1 : (c == 0xc5 || c == 0xda) ? 2 : 4;
    if (!need(d, (size_t)w)) return 0;
    size_t n = (size_t)be(d, w);
    return decode_bytes(d, v, c <= 0xc6 ? T_BIN : T_STR, n);
  }
  case 0xcc: case 0xcd: case 0xce: case 0xcf: {
    int w = 1 << (c - 0xcc);
    if (!need(d, (size_t)w)) return 0;
    uint64_t u = be(d, w);
    if (u > INT64_MAX) {
      d->err = "an integer out of range";
      return 0;
    }
    v->type = T_INT;
    v->i = (int64_t)u;
    return 1;
  }
  case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
    int w = 1 << (c - 0xd0);
    if (!need(d, (size_t)w)) return 0;
    uint64_t u = be(d, w);
    v->type = T_INT;
    v->i = w == 1 ? (int8_t)u : w == 2 ? (int16_t)u : w == 4 ? (int32_t)u : (int64_t)u;
    return 1;
  }
  case 0xdc: case 0xdd: case 0xde: case 0xdf: {
    int w = (c == 0xdc || c == 0xde) ? 2 : 4;
    if (!need(d, (size_t)w)) return 0;
    size_t n = (size_t)be(d, w);
    int map = c >= 0xde;
    v->type = map ? T_MAP : T_ARRAY;
    v->n = n;
    if (map && n > (size_t)(d->end - d->p)) {
      d->err = "a MessagePack container longer than its frame";
      return 0;
    }
    return decode_items(d, v, map ? n * 2 : n, depth);
  }
  }
  d->err = "a MessagePack type this client does not read (float, ext or reserved)";
  return 0;
}

static void free_val(val_t *v) {
  if (v->type == T_ARRAY || v->type == T_MAP) {
    size_t count = v->type == T_MAP ? v->n * 2 : v->n;
    if (v->items)
      for (size_t k = 0; k < count; k++) free_val(&v->items[k]);
    free(v->items);
  }
}

static int is_str(const val_t *v, const char *s) {
  return v && v->type == T_STR && v->n == strlen(s) && memcmp(v->s, s, v->n) == 0;
}

/* A map's value for a key, or NULL. */
static const val_t *get(const val_t *m, const char *key) {
  if (!m || m->type != T_MAP) return NULL;
  for (size_t k = 0; k < m->n; k++)
    if (is_str(&m->items[2 * k], key)) return &m->items[2 * k + 1];
  return NULL;
}

/* A str value as a C string (NUL bytes become '?'); the caller frees. */
static char *cstr(const val_t *v) {
  char *s = malloc(v->n + 1);
  if (!s) exit(1);
  for (size_t k = 0; k < v->n; k++) s[k] = v->s[k] ? (char)v->s[k] : '?';
  s[v->n] = 0;
  return s;
}

/* ---- the socket ------------------------------------------------------------------------- */

static int read_full(int fd, uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    p += r;
    n -= (size_t)r;
  }
  return 1;
}

static int send_full(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return 0;
    p += w;
    n -= (size_t)w;
  }
  return 1;
}

/* A guest name that maps to one directory exactly as Node's path.join would place it. */
static int plain_name(const char *s) {
  if (!*s || !strcmp(s, ".") || !strcmp(s, "..") || strlen(s) > 64) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '.' || *s == '_' || *s == '-'))
      return 0;
  return 1;
}

static const char *const NOT_SERVED[] = {"--help", "-h", "--list", "--capture", "--all-guests",
                                         "--version", "--qmp", NULL};

/*
 * The lab guest a `plugins run` command line names (fast-cli.ts servedTarget's scan), or
 * NULL when this client does not serve it.
 */
static const char *served_guest(char **args, int n) {
  const char *guest = NULL;
  int guests = 0;
  for (int i = 0; i < n; i++) {
    const char *a = args[i];
    const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
    size_t flen = eq ? (size_t)(eq - a) : strlen(a);
    for (const char *const *f = NOT_SERVED; *f; f++)
      if (strlen(*f) == flen && strncmp(a, *f, flen) == 0) return NULL;
    if ((flen == 7 && strncmp(a, "--guest", 7) == 0) || strcmp(a, "-g") == 0) {
      const char *v = eq ? eq + 1 : (i + 1 < n ? args[++i] : NULL);
      if (!v) return NULL;
      guest = v;
      guests++;
    } else if (strncmp(a, "-g", 2) == 0 && a[2]) {
      guest = a + 2;
      guests++;
    }
  }
  if (guests > 1) return NULL;
  return guest ? guest : "lab";
}

int main(int argc, char **argv) {
  g_argc = argc;
  g_argv = argv;

  int first;
  if (argc >= 2 && strcmp(argv[1], "plugins:run") == 0) first = 2;
  else if (argc >= 3 && strcmp(argv[1], "plugins") == 0 && strcmp(argv[2], "run") == 0) first = 3;
  else exec_node();
  const char *e;
  if ((e = getenv("VMI_SERVER")) && strcmp(e, "off") == 0) exec_node();
  if (((e = getenv("VMI_TRUST_PACKS")) && *e) || ((e = getenv("VMI_DEBUG")) && *e)) exec_node();
  if ((e = getenv("VMI_CLIENT_FALLBACK")) && *e) exec_node();

  char **args = argv + first;
  int nargs = argc - first;
  if (nargs > MAX_ARGS) exec_node();
  const char *guest = served_guest(args, nargs);
  if (!guest || !plain_name(guest)) exec_node_after(0);
  int timing = 0;
  for (int i = 0; i < nargs; i++) {
    size_t len = strlen(args[i]);
    if (len > MAX_ARG_BYTES || !valid_utf8((const uint8_t *)args[i], len)) exec_node();
    if (strcmp(args[i], "--timing") == 0) timing = 1;
  }
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd) || cwd[0] != '/' || strlen(cwd) > MAX_ARG_BYTES ||
      !valid_utf8((const uint8_t *)cwd, strlen(cwd)))
    exec_node();

  /* serverSocketPath({ lab }): $VMI_RUNTIME_ROOT (default /tmp)/vmi-UID/guests/NAME/serve.sock */
  const char *root = getenv("VMI_RUNTIME_ROOT");
  if (!root) root = "/tmp";
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  int pl = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/vmi-%u/guests/%s/serve.sock", root,
                    (unsigned)getuid(), guest);
  if (pl <= 0 || (size_t)pl >= sizeof sa.sun_path || !*root) exec_node();
  g_sock = sa.sun_path;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) exec_node();
  signal(SIGPIPE, SIG_IGN); /* a closed stdout is EPIPE, handled (restored before exec) */

  /* { v, id, op: 'cli', argv, cwd, render: { stdoutIsTTY } } */
  buf_t req = {0};
  put(&req, "\0\0\0\0", 4);
  put_map(&req, 6);
  put_str(&req, "v"), put_u8(&req, PROTOCOL_VERSION);
  put_str(&req, "id"), put_u8(&req, 1);
  put_str(&req, "op"), put_str(&req, "cli");
  put_str(&req, "argv"), put_array(&req, (size_t)nargs);
  for (int i = 0; i < nargs; i++) put_str(&req, args[i]);
  put_str(&req, "cwd"), put_str(&req, cwd);
  put_str(&req, "render"), put_map(&req, 1);
  put_str(&req, "stdoutIsTTY"), put_u8(&req, isatty(1) ? 0xc3 : 0xc2);
  seal_frame(&req, 0);
  /* A status request (id 2) rides along: the server answers it at once, so a server that
   * accepts but stays silent for STATUS_TIMEOUT_MS (stopped, stuck) is left to Node. */
  size_t st = req.len;
  put(&req, "\0\0\0\0", 4);
  put_map(&req, 3);
  put_str(&req, "v"), put_u8(&req, PROTOCOL_VERSION);
  put_str(&req, "id"), put_u8(&req, 2);
  put_str(&req, "op"), put_str(&req, "status");
  seal_frame(&req, st);
  if (!send_full(fd, req.p, req.len)) exec_node();
  free(req.p);
  struct pollfd pfd = {fd, POLLIN, 0};
  int ready;
  do ready = poll(&pfd, 1, STATUS_TIMEOUT_MS);
  while (ready < 0 && errno == EINTR);
  if (ready == 0) {
    if (timing) fprintf(stderr, "vmi: not through the vmi server at %s: no answer in %d ms\n", g_sock, STATUS_TIMEOUT_MS);
    exec_node();
  }

  for (;;) {
    uint8_t head[4];
    if (!read_full(fd, head, 4)) fail_or_node("the server went away before its reply");
    uint32_t len = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 | (uint32_t)head[2] << 8 | head[3];
    if (len == 0 || len > MAX_REPLY_BYTES) fail_or_node("a reply frame of a size out of bounds");
    uint8_t *frame = malloc(len);
    if (!frame) fail_or_node("out of memory for its reply");
    if (!read_full(fd, frame, len)) fail_or_node("the server went away before its reply");
    dec_t d = {frame, frame + len, NULL};
    val_t m;
    if (!decode(&d, &m, 0)) fail_or_node(d.err);
    if (d.p != d.end) fail_or_node("bytes after the MessagePack value in a frame");
    if (m.type != T_MAP) fail_or_node("a reply that is not a map");
    const val_t *v = get(&m, "v"), *id = get(&m, "id");
    if (!v || v->type != T_INT || v->i != PROTOCOL_VERSION) fail_or_node("another protocol version");
    if (!id || id->type != T_INT || (id->i != 1 && id->i != 0 && id->i != 2))
      fail_or_node("a reply to another request");
    if (id->i == 2) { /* the status reply: the server is alive; the run's reply follows */
      free_val(&m);
      free(frame);
      continue;
    }

    const val_t *progress = get(&m, "progress");
    if (progress && progress->type == T_STR && !get(&m, "ok")) {
      /* As the Node client prints it: `vmi: LINE` */
      write_str(2, "vmi: ");
      write_fd(2, progress->s, progress->n);
      write_str(2, "\n");
      free_val(&m);
      free(frame);
      continue;
    }
    const val_t *ok = get(&m, "ok");
    if (!ok || ok->type != T_BOOL) fail_or_node("a reply without ok");
    if (!ok->i) {
      const val_t *err = get(&m, "error");
      const val_t *name = get(err, "name"), *msg = get(err, "message");
      if (!msg || msg->type != T_STR) fail_or_node("an error reply without a message");
      /* The server did not understand the request (another protocol version): Node's turn. */
      if (is_str(name, "ProtocolError") && !g_printed) exec_node();
      /* commandErrorLine: `vmi: error: MESSAGE`, a run of (ASCII) whitespace that holds a
       * newline as one space. */
      char *s = cstr(msg), *o = s;
      for (char *p = s; *p;) {
        size_t run = strspn(p, " \t\r\v\f\n");
        if (run > strspn(p, " \t\r\v\f")) {
          *o++ = ' ';
          p += run;
        } else *o++ = *p++;
      }
      *o = 0;
      write_str(2, "vmi: error: ");
      write_str(2, s);
      write_str(2, "\n");
      exit(1);
    }
    const val_t *fallback = get(&m, "fallback");
    if (fallback && fallback->type == T_STR) {
      if (timing) {
        char *r = cstr(fallback);
        fprintf(stderr, "vmi: not through the vmi server at %s: %s\n", g_sock, r);
        fflush(stderr);
      }
      close(fd);
      exec_node();
    }
    const val_t *rendered = get(&m, "rendered");
    const val_t *writes = get(rendered, "writes"), *code = get(rendered, "exitCode");
    if (!writes || writes->type != T_ARRAY || !code || code->type != T_INT || code->i < 0 || code->i > 255)
      fail_or_node("a reply without its rendered output");
    for (size_t k = 0; k < writes->n; k++) {
      const val_t *w = &writes->items[k];
      if (w->type != T_ARRAY || w->n != 2 || w->items[0].type != T_INT ||
          (w->items[0].i != 1 && w->items[0].i != 2) || w->items[1].type != T_BIN)
        fail_or_node("a malformed rendered write");
    }
    if (timing) {
      const val_t *pid = get(&m, "serverPid");
      char line[PATH_MAX + 128];
      if (pid && pid->type == T_INT)
        snprintf(line, sizeof line, "vmi: through the vmi server pid %lld at %s\n", (long long)pid->i, g_sock);
      else snprintf(line, sizeof line, "vmi: through the vmi server at %s\n", g_sock);
      write_str(2, line);
    }
    for (size_t k = 0; k < writes->n; k++) {
      const val_t *w = &writes->items[k];
      write_fd((int)w->items[0].i, w->items[1].s, w->items[1].n);
    }
    close(fd);
    return (int)code->i;
  }
}
