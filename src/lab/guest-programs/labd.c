/*
 * labd: long-running workload processes for the vmi lab guest (statically linked,
 * started once by /init, never respawned, so their PIDs stay stable during a test).
 *
 *   labd worker NAME...          sleep forever (distinctive argv and environment)
 *   labd tcp-server PORT         TCP listener on 127.0.0.1:PORT, keeps accepted peers open
 *   labd tcp-client PORT         connects to 127.0.0.1:PORT and holds the connection
 *   labd udp PORT                UDP socket bound on 127.0.0.1:PORT
 *   labd unix-server PATH        stream unix-socket listener at PATH
 *   labd unix-client PATH        connects to PATH and holds the connection
 *   labd hold FILE...            opens every FILE read/write (created 0600, one line
 *                                written) and keeps them open; the first one is also
 *                                mmap'ed; a FILE prefixed with '!' is unlinked after open
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_PEERS 64

static void die(const char *what) {
  fprintf(stderr, "labd: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void sleep_forever(void) {
  for (;;) pause();
}

static void nap_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static struct sockaddr_un unix_addr(const char *path) {
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof a.sun_path) {
    fprintf(stderr, "labd: unix path too long\n");
    exit(2);
  }
  strcpy(a.sun_path, path);
  return a;
}

/* Accepts peers and keeps them open until they close; sends a one-line banner. */
static void serve(int lfd, const char *banner) {
  struct pollfd fds[MAX_PEERS + 1];
  int n = 1;
  fds[0].fd = lfd;
  fds[0].events = POLLIN;
  for (;;) {
    if (poll(fds, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    for (int i = n - 1; i >= 1; i--) {
      if (!fds[i].revents) continue;
      char buf[512];
      ssize_t r = read(fds[i].fd, buf, sizeof buf);
      if (r <= 0) {
        close(fds[i].fd);
        fds[i] = fds[--n];
      }
    }
    if (fds[0].revents & POLLIN) {
      int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (c < 0) continue;
      if (n > MAX_PEERS) {
        close(c);
        continue;
      }
      if (write(c, banner, strlen(banner)) < 0) {
        close(c);
        continue;
      }
      fds[n].fd = c;
      fds[n].events = POLLIN;
      fds[n].revents = 0;
      n++;
    }
  }
}

/* Connects (retrying while the server starts), then holds the connection forever. */
static void hold_connection(int family, const struct sockaddr *addr, socklen_t len) {
  for (int attempt = 0;; attempt++) {
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, addr, len) == 0) {
      char buf[512];
      while (read(fd, buf, sizeof buf) > 0) {
      }
      /* Peer gone: keep the process (and its PID) alive anyway. */
      sleep_forever();
    }
    close(fd);
    if (attempt > 600) die("connect");
    nap_ms(100);
  }
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  if (argc < 2) {
    fprintf(stderr, "usage: labd worker|tcp-server|tcp-client|udp|unix-server|unix-client|monitor|hold ARGS\n");
    return 2;
  }
  const char *mode = argv[1];
  if (!strcmp(mode, "worker")) {
    sleep_forever();
  }
  if (argc < 3) {
    fprintf(stderr, "labd %s: missing argument\n", mode);
    return 2;
  }
  if (!strcmp(mode, "tcp-server")) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = loopback(atoi(argv[2]));
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(fd, 16) < 0) die("listen");
    serve(fd, "labd tcp ready\n");
  } else if (!strcmp(mode, "tcp-client")) {
    struct sockaddr_in a = loopback(atoi(argv[2]));
    hold_connection(AF_INET, (struct sockaddr *)&a, sizeof a);
  } else if (!strcmp(mode, "udp")) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in a = loopback(atoi(argv[2]));
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    for (;;) {
      char buf[2048];
      struct sockaddr_in from;
      socklen_t flen = sizeof from;
      ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
      if (r > 0) sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&from, flen);
    }
  } else if (!strcmp(mode, "unix-server")) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_un a = unix_addr(argv[2]);
    unlink(argv[2]);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(fd, 16) < 0) die("listen");
    serve(fd, "labd unix ready\n");
  } else if (!strcmp(mode, "unix-client")) {
    struct sockaddr_un a = unix_addr(argv[2]);
    hold_connection(AF_UNIX, (struct sockaddr *)&a, sizeof a);
  } else if (!strcmp(mode, "monitor")) {
    /* A health agent: rewrites a status file every 100 ms, as real guests' agents and
       timers do. It keeps the guest from being perfectly idle. */
    for (unsigned long n = 0;; n++) {
      int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        dprintf(fd, "beat %lu\n", n);
        close(fd);
      }
      nap_ms(100);
    }
  } else if (!strcmp(mode, "hold")) {
    for (int i = 2; i < argc; i++) {
      const char *path = argv[i];
      int unlink_after = path[0] == '!';
      if (unlink_after) path++;
      int fd = open(path, O_RDWR | O_CREAT | O_APPEND, 0600);
      if (fd < 0) die(path);
      dprintf(fd, "labd pid %d holds %s\n", (int)getpid(), path);
      if (i == 2) {
        /* A shared file mapping shows up in /proc/PID/maps with its path. */
        if (mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED) die("mmap");
      }
      if (unlink_after) unlink(path);
    }
    sleep_forever();
  } else {
    fprintf(stderr, "labd: unknown mode %s\n", mode);
    return 2;
  }
  return 0;
}
