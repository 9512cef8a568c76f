/*
 * mcpworks-zygote-init: what a zygote child's P1 becomes once its worker is forked (README "How a
 * run is isolated"). P1 is vforked from the zygote, so it shares the zygote's memory while it sets
 * the run up; it then replaces that memory with this program's, which only waits: the kernel copies
 * and tears down the zygote's page tables once per run (for the worker) instead of twice (issue 18).
 *
 *   /sandbox/zygote-init WORKER_PID   with fd 4 the read end of the worker's wall-clock pipe,
 *                                     SIGCHLD blocked, fds 0-3 /dev/null
 *
 * As PID 1 of the run's PID namespace it reaps every process of the run until the worker ends, then
 * exits with the worker's status (128+N for signal N); or with 137 once the wall clock the worker
 * wrote on fd 4 (in ms, before any of the run's code) has run out. Its end ends the namespace.
 *
 * No C library: a static program of a few pages, whose exec costs the run a fraction of a fork of
 * the zygote. It is installed executable but not readable by the sandbox user (runtime-dir.ts), so
 * the kernel makes it undumpable at its exec, before it runs, as P1 was before it: the run's
 * processes cannot open its /proc files or trace it (seccomp also denies ptrace).
 */
#include <linux/time.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>

#define SETUP_FAILED 111
#define WALL_CLOCK_STATUS (128 + 9)
#define CLOCK_FD 4

static long sys6(long n, long a, long b, long c, long d, long e, long f) {
  long result;
#if defined(__x86_64__)
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall" : "=a"(result) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
#elif defined(__aarch64__)
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  register long x4 __asm__("x4") = e;
  register long x5 __asm__("x5") = f;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
  result = x0;
#else
#error "mcpworks-zygote-init: x86_64 and aarch64 only"
#endif
  return result;
}

static void leave(int status) {
  for (;;) sys6(SYS_exit_group, status, 0, 0, 0, 0, 0);
}

static long long now_ms(void) {
  struct timespec now;
  sys6(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&now, 0, 0, 0, 0);
  return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Digits only, or -1. */
static long long number(const char *text, long length) {
  long long value = 0;
  if (length <= 0) return -1;
  for (long i = 0; i < length; i++) {
    if (text[i] < '0' || text[i] > '9' || value > 1000000000000LL) return -1;
    value = value * 10 + (text[i] - '0');
  }
  return value;
}

static long length_of(const char *text) {
  long length = 0;
  while (text[length]) length++;
  return length;
}

/* Reaps what has ended; the worker's status as bubblewrap reports one, or -1 while it runs. */
static int reap(long worker) {
  for (;;) {
    int status = 0;
    long pid = sys6(SYS_wait4, -1, (long)&status, 1 /* WNOHANG */, 0, 0, 0);
    if (pid < 0) return SETUP_FAILED; /* no child left: the worker is gone unseen */
    if (pid == 0) return -1;
    if (pid != worker) continue;
    int signal = status & 0x7f;
    return signal == 0 ? (status >> 8) & 0xff : 128 + signal;
  }
}

__attribute__((used)) void init_main(long *stack) {
  long argc = stack[0];
  char **argv = (char **)(stack + 1);
  long long worker = argc == 2 ? number(argv[1], length_of(argv[1])) : -1;
  if (worker <= 0) leave(SETUP_FAILED);
  /* SIGCHLD blocked (P1 left it so; a blocked signal is kept even while its action is to ignore
   * it): its arrivals are read from a descriptor, with no handler. */
  unsigned long chld = 1UL << (SIGCHLD - 1);
  sys6(SYS_rt_sigprocmask, SIG_BLOCK, (long)&chld, 0, sizeof chld, 0, 0);
  int signals = (int)sys6(SYS_signalfd4, -1, (long)&chld, sizeof chld, 02000000 /* SFD_CLOEXEC */ | 04000 /* SFD_NONBLOCK */, 0, 0);
  if (signals < 0) leave(SETUP_FAILED);
  int clock = CLOCK_FD;
  long long deadline = -1;
  char said[32];
  long said_length = 0;
  for (;;) {
    int status = reap((long)worker);
    if (status >= 0) leave(status);
    struct timespec timeout, *bound = 0;
    if (deadline >= 0) {
      long long left = deadline - now_ms();
      if (left <= 0) leave(WALL_CLOCK_STATUS);
      timeout.tv_sec = left / 1000;
      timeout.tv_nsec = (left % 1000) * 1000000;
      bound = &timeout;
    }
    struct pollfd watched[2] = {{signals, POLLIN, 0}, {clock, POLLIN, 0}};
    long ready = sys6(SYS_ppoll, (long)watched, clock >= 0 ? 2 : 1, (long)bound, 0, 8, 0);
    if (ready < 0) continue; /* EINTR, or no memory for the moment: reap and wait again */
    if (watched[0].revents) {
      char drained[128 * 8];
      sys6(SYS_read, signals, (long)drained, sizeof drained, 0, 0, 0);
    }
    if (clock >= 0 && watched[1].revents) {
      long got = sys6(SYS_read, clock, (long)(said + said_length), (long)sizeof said - 1 - said_length, 0, 0, 0);
      if (got == -4 /* EINTR */) continue;
      if (got > 0 && said_length + got < (long)sizeof said - 1) {
        said_length += got;
        continue;
      }
      /* The worker closed it: the limit it wrote, if it wrote one, starts now. */
      sys6(SYS_close, clock, 0, 0, 0, 0, 0);
      clock = -1;
      long long limit = number(said, said_length);
      if (limit >= 0) deadline = now_ms() + limit;
    }
  }
}

/* The kernel starts here with the stack pointer on argc; init_main never returns. */
#if defined(__x86_64__)
__asm__(".globl _start\n_start:\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call init_main\n  hlt\n");
#elif defined(__aarch64__)
__asm__(".globl _start\n_start:\n  mov x0, sp\n  bl init_main\n  brk #0\n");
#endif
