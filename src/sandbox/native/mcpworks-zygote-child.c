/*
 * mcpworks-zygote-child.so: a zygote's forks, in C (runtime/zygote.py loads it with ctypes.PyDLL).
 *
 * Each run's first process ("P1") did its set-up in Python: every object that code touched was a
 * copy-on-write page fault, and a short-lived intermediate process was forked only to enter the
 * PID namespace; the zygote's own request loop, in Python, faulted its pages back after every fork.
 * Here neither runs Python: the zygote's loop reads fork requests, enters a new PID namespace for
 * its next child, forks P1 (PID 1 there) and goes back to its own with setns; P1 does the set-up
 * below and forks the worker ("P2"), the only process that returns into the zygote's Python, to run
 * the function. What P1 does, and in what order, is what zygote.py documents; README "How a run is
 * isolated".
 *
 *   mcpw_configure(masks, tmpfs_size, seccomp, seccomp_len, limits, limit_count)  once, in the zygote
 *   mcpw_serve(control_fd, &clock_fd)  returns 0 in each worker; in the zygote, 1 once it should end
 *
 * P1 never returns into Python and never allocates: the zygote may have had threads (BLAS), whose
 * locks a forked process cannot take.
 *
 * A step of a child's set-up that fails ends the child (status SETUP_FAILED, its run then taking
 * the ordinary path) after one line that names the step and its errno, nothing else: on the
 * zygote's control socket (with the request's id) until P1 has the run's channel, then on that
 * channel, before the ready line (so before any of the run exists). The host logs it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SETUP_FAILED 111
/* P1's status when the run's wall clock ran out: as if killed (SIGKILL), which it then is. */
#define WALL_CLOCK_STATUS (128 + 9)
#define TOKEN_CHARS 32
#define HOST_SOCKET "/sandbox/zygote/sock/host.sock"
/* What P1 becomes once its worker is forked (native/mcpworks-zygote-init.c). */
#define INIT_PROGRAM "/sandbox/zygote-init"
#define INIT_CLOCK_FD 4
#define MAX_MASKS 128
#define MASK_CHARS 64

static const char *const host_mounts[] = {"/sandbox/zygote/cg-memory", "/sandbox/zygote/cg-pids", "/sandbox/zygote/sock"};

/* Set once by mcpw_configure, before any fork: read-only afterwards. */
static char mask_files[MAX_MASKS][MASK_CHARS + 8];
static char mask_dirs[MAX_MASKS][MASK_CHARS + 8];
static int mask_file_count, mask_dir_count;
static char tmp_options[64];
static struct sock_filter *seccomp_program;
static unsigned short seccomp_length;
/* The worker's rlimits (the cold path's helper sets the same ones before exec). */
#define MAX_LIMITS 16
static int limit_resources[MAX_LIMITS];
static struct rlimit limit_values[MAX_LIMITS];
static size_t limit_count;
/* The zygote's own PID namespace: it goes back to it after each child's fork. */
static int own_pid_ns = -1;
/* Whether INIT_PROGRAM can be run: P1 is then vforked and becomes it (see spawn); else forked. */
static int init_program;
/* Where a failed set-up step is reported (see setup_failed): the control socket, then the run's
 * channel (fd 3); and the request's id while it is the control socket. Set per child, after its fork. */
static int report_fd = -1;
static char report_id[24];

static int write_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t wrote = write(fd, data, length);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) return -1;
    data += wrote;
    length -= (size_t)wrote;
  }
  return 0;
}

/* A set-up step failed: one line naming it (a fixed word) and errno, then the child ends. */
static void setup_failed(const char *step) {
  int error = errno;
  char line[128];
  int length = report_id[0] ? snprintf(line, sizeof line, "{\"setupFailed\": \"%s\", \"errno\": %d, \"child\": \"%s\"}\n", step, error, report_id)
                            : snprintf(line, sizeof line, "{\"setupFailed\": \"%s\", \"errno\": %d}\n", step, error);
  if (report_fd >= 0 && length > 0 && (size_t)length < sizeof line) (void)write_all(report_fd, line, (size_t)length);
  _exit(SETUP_FAILED);
}

/* This process's parent, numbered as the zygote's /proc numbers it (getppid() reads 0 in a PID
 * namespace of its own, whoever the parent is); -1 with errno set if unreadable. Read before P1
 * mounts its own /proc. */
static pid_t parent_in_proc(void) {
  char stat[128];
  int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t got = read(fd, stat, sizeof stat - 1);
  /* A failure's errno: the read's own, or EINVAL for a line not as the kernel writes it. */
  int error = got < 0 ? errno : EINVAL;
  close(fd);
  errno = error;
  if (got <= 0) return -1;
  stat[got] = '\0';
  /* "PID (COMM) STATE PPID ...": COMM may hold anything; only numbers follow it. */
  char *end = strrchr(stat, ')');
  if (!end || end[1] != ' ' || end[2] == '\0' || end[3] != ' ') return -1;
  char *after;
  long parent = strtol(end + 4, &after, 10);
  return after == end + 4 ? -1 : (pid_t)parent;
}

/*
 * Each child's network namespace gets a TCP hash table of its own, of CHILD_TCP_HASH buckets,
 * rather than sharing the host's: when the namespace goes, the kernel then looks for its TIME_WAIT
 * sockets in that small table, not in the host's whole one (a quarter of the kernel's teardown of
 * a run's network namespace, in its own threads). /proc/sys is read-only here (bubblewrap), so a
 * short-lived process writes the zygote's setting through a /proc of its own. Kernels before 6.1
 * have no such setting: children then share the host's table, as they did before.
 */
#define CHILD_TCP_HASH "128"
static void size_own_tcp_hash(void) {
  pid_t pid = fork();
  if (pid < 0) return;
  if (pid == 0) {
    int fd = -1;
    if (unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0)
      fd = open("/proc/sys/net/ipv4/tcp_child_ehash_entries", O_WRONLY | O_CLOEXEC);
    _exit(fd >= 0 && write_all(fd, CHILD_TCP_HASH, strlen(CHILD_TCP_HASH)) == 0 ? 0 : 1);
  }
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
}

/* Whether the kernel leaves a process dumpable after it execs a program it may not read: with
 * fs.suid_dumpable at 1 ("debug") it does, and P1 running INIT_PROGRAM would then be open to its
 * run (same user); so the init program is used only at 0 and 2, where P1 is undumpable from the
 * exec on, and P1 is forked and waits itself (its prctl) at 1, or where the setting is unreadable. */
static int dumpable_after_exec(void) {
  char value[8] = {0};
  int fd = open("/proc/sys/fs/suid_dumpable", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 1;
  ssize_t got = read(fd, value, sizeof value - 1);
  close(fd);
  return got <= 0 || !(value[0] == '0' || value[0] == '2') || (value[1] != '\n' && value[1] != '\0');
}

/* masks: "f NAME\n" and "d NAME\n" lines, NAME relative to /proc. limits: `count` triples
 * (RLIMIT_ resource, soft, hard) every worker gets. */
int mcpw_configure(const char *masks, unsigned long tmpfs_bytes, const unsigned char *seccomp, size_t seccomp_len,
                   const unsigned long long *limits, size_t count) {
  if (seccomp_len == 0 || seccomp_len % sizeof(struct sock_filter) != 0 || seccomp_len / sizeof(struct sock_filter) > 0xffff ||
      count > MAX_LIMITS) {
    errno = EINVAL;
    return -1;
  }
  for (size_t i = 0; i < count; i++) {
    if (limits[3 * i] >= RLIM_NLIMITS) {
      errno = EINVAL;
      return -1;
    }
    limit_resources[i] = (int)limits[3 * i];
    limit_values[i].rlim_cur = (rlim_t)limits[3 * i + 1];
    limit_values[i].rlim_max = (rlim_t)limits[3 * i + 2];
  }
  limit_count = count;
  for (const char *line = masks; *line;) {
    const char *end = strchr(line, '\n');
    size_t length = end ? (size_t)(end - line) : strlen(line);
    if (length < 3 || length - 2 > MASK_CHARS || line[1] != ' ' || (line[0] != 'f' && line[0] != 'd') ||
        mask_file_count >= MAX_MASKS || mask_dir_count >= MAX_MASKS) {
      errno = EINVAL;
      return -1;
    }
    char *into = line[0] == 'f' ? mask_files[mask_file_count++] : mask_dirs[mask_dir_count++];
    memcpy(into, "/proc/", 6);
    memcpy(into + 6, line + 2, length - 2);
    into[6 + length - 2] = '\0';
    line += length + (end ? 1 : 0);
  }
  snprintf(tmp_options, sizeof tmp_options, "size=%lu,mode=1777", tmpfs_bytes);
  seccomp_program = malloc(seccomp_len);
  if (!seccomp_program) return -1;
  memcpy(seccomp_program, seccomp, seccomp_len);
  seccomp_length = (unsigned short)(seccomp_len / sizeof(struct sock_filter));
  own_pid_ns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
  if (own_pid_ns < 0) return -1;
  init_program = access(INIT_PROGRAM, X_OK) == 0 && !dumpable_after_exec();
  size_own_tcp_hash();
  return 0;
}

/* Into the run's cgroup: fails (and so does the run's set-up) if the group is missing. */
static int join_cgroup(const char *controller, const char *cgroup) {
  char path[128];
  if ((size_t)snprintf(path, sizeof path, "/sandbox/zygote/cg-%s/%s/cgroup.procs", controller, cgroup) >= sizeof path) return -1;
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = write_all(fd, "0\n", 2);
  return close(fd) == 0 ? rc : -1;
}

/* A new network namespace has only `lo`, and down. */
static int loopback_up(void) {
  int probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return -1;
  struct ifreq request;
  memset(&request, 0, sizeof request);
  strcpy(request.ifr_name, "lo");
  request.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
  int rc = ioctl(probe, SIOCSIFFLAGS, &request);
  close(probe);
  return rc;
}

/* As bubblewrap.ts does for a cold run: what /proc tells about the host reads empty. */
static int mask_proc(void) {
  const unsigned long sealed = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  for (int i = 0; i < mask_file_count; i++) {
    if (mount("/sandbox/empty", mask_files[i], NULL, MS_BIND, NULL) != 0) return -1;
    if (mount(NULL, mask_files[i], NULL, MS_BIND | MS_REMOUNT | sealed, NULL) != 0) return -1;
  }
  for (int i = 0; i < mask_dir_count; i++)
    if (mount("tmpfs", mask_dirs[i], "tmpfs", sealed, "size=4k,mode=555") != 0) return -1;
  return 0;
}

/* One of the run's streams, named to the server by the child's token. */
static int connect_stream(const char *token, const char *stream) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_un address;
  memset(&address, 0, sizeof address);
  address.sun_family = AF_UNIX;
  strcpy(address.sun_path, HOST_SOCKET);
  char line[TOKEN_CHARS + 8];
  memcpy(line, token, TOKEN_CHARS);
  size_t length = TOKEN_CHARS;
  line[length++] = ' ';
  for (const char *c = stream; *c; c++) line[length++] = *c;
  line[length++] = '\n';
  if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0 || write_all(fd, line, length) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int drop_capabilities(void) {
  for (int cap = 0; cap <= 63; cap++) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0); /* EINVAL past the kernel's last */
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  return (int)syscall(SYS_capset, &header, data);
}

static int load_seccomp(void) {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  struct sock_fprog program = {seccomp_length, seccomp_program};
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0);
}

static void wake(int signum) { (void)signum; }

/* After a ppoll that failed for want of kernel memory (not EINTR): a millisecond's pause, so the
 * loop that calls it again waits for the kernel instead of spinning on a CPU. */
static void back_off(void) {
  if (errno == EINTR) return;
  struct timespec pause = {0, 1000000};
  nanosleep(&pause, NULL);
}

static long long now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* P1's wait: reaps every process of the run until the worker ends (its status, 128+N for signal
 * N) or the run's wall clock, which the worker writes on `clock` before any of the run's code, runs
 * out. SIGCHLD is blocked except inside ppoll, so no exit is missed between a reap and the wait. */
static int wait_worker(pid_t worker, int clock, const sigset_t *waiting) {
  long long deadline = -1;
  char said[32];
  size_t said_length = 0;
  for (;;) {
    for (;;) {
      int status;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid < 0) return SETUP_FAILED;
      if (pid == 0) break;
      if (pid == worker) return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    }
    struct timespec timeout, *bound = NULL;
    if (deadline >= 0) {
      long long left = deadline - now_ms();
      if (left <= 0) return WALL_CLOCK_STATUS;
      timeout.tv_sec = left / 1000;
      timeout.tv_nsec = (left % 1000) * 1000000;
      bound = &timeout;
    }
    struct pollfd watched = {clock, POLLIN, 0};
    int ready = ppoll(&watched, clock >= 0 ? 1 : 0, bound, waiting);
    if (ready < 0) back_off();
    if (ready > 0 && clock >= 0) {
      ssize_t got = read(clock, said + said_length, sizeof said - 1 - said_length);
      if (got < 0 && errno == EINTR) continue;
      if (got > 0 && said_length + (size_t)got < sizeof said - 1) {
        said_length += (size_t)got;
        continue;
      }
      /* The worker closed it: the limit it wrote, if it wrote one, starts now. */
      close(clock);
      clock = -1;
      said[said_length] = '\0';
      char *end;
      long long limit = strtoll(said, &end, 10);
      if (said_length > 0 && end == said + said_length && limit >= 0) deadline = now_ms() + limit;
    }
  }
}

/*
 * The worker of a vforked P1: glibc's restartable sequence (rseq) area, which it registered with
 * the kernel for the zygote's thread at start, is registered again, for this process. The kernel
 * gives a CLONE_VM child (P1, vforked) no registration, and a fork inherits its parent's, so without
 * this the worker's area keeps the CPU number it had at the zygote's fork: glibc's sched_getcpu
 * returns it whatever CPU the run is on, and a library's rseq critical sections (which trust glibc's
 * registration) are never aborted on preemption. Registered as glibc does (its area, its size, at
 * least 32, its signature); failing that, the area says so as glibc's does when its own fails.
 */
static void register_rseq(void) {
#ifdef RSEQ_SIG
  if (__rseq_size == 0) return; /* glibc registered none (rseq disabled or unsupported) */
  struct rseq *area = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
  area->cpu_id_start = 0;
  area->cpu_id = (uint32_t)RSEQ_CPU_ID_UNINITIALIZED;
  area->rseq_cs = 0;
  area->flags = 0;
  if (syscall(SYS_rseq, area, __rseq_size < 32 ? 32 : __rseq_size, 0, RSEQ_SIG) != 0)
    area->cpu_id = (uint32_t)RSEQ_CPU_ID_REGISTRATION_FAILED;
#endif
}

/* P1, in its fresh PID namespace. Returns 0 in the worker (with *clock_fd set); never in P1. */
static int child(const char *token, const char *cgroup, pid_t zygote, int *clock_fd) {
  /* Killed the moment its zygote ends (killed, crashed): P1 is PID 1 of the run's namespace, so
   * every process of the run goes with it, not when bubblewrap's init or the host notices. The
   * parent read after the prctl catches a zygote that ended before it (P1 already reparented). */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) setup_failed("pdeathsig");
  pid_t parent = parent_in_proc();
  if (parent != zygote) {
    /* Its report's errno is the check's own (no call failed when the parent is another): never
     * whatever an earlier call of the zygote's left. */
    if (parent >= 0) errno = ESRCH;
    setup_failed("zygote_gone");
  }
  if (join_cgroup("memory", cgroup) != 0 || join_cgroup("pids", cgroup) != 0) setup_failed("cgroup");
  /* Its cgroup namespace is rooted at the run's group it has just joined (see zygoteBubblewrapArgs). */
  if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWCGROUP) != 0) setup_failed("unshare");
  if (loopback_up() != 0) setup_failed("loopback");
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) setup_failed("mount_private");
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) setup_failed("mount_proc");
  if (mask_proc() != 0) setup_failed("mask_proc");
  if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmp_options) != 0) setup_failed("mount_tmp");
  if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=67108864,mode=1777") != 0) setup_failed("mount_shm");
  int out = connect_stream(token, "out"), err = connect_stream(token, "err"), chan = connect_stream(token, "chan");
  if (out < 0 || err < 0 || chan < 0) setup_failed("connect");
  for (size_t i = 0; i < sizeof host_mounts / sizeof host_mounts[0]; i++)
    if (umount2(host_mounts[i], MNT_DETACH) != 0) setup_failed("umount");
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) setup_failed("open_null");
  if (dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0 || dup2(chan, 3) < 0) setup_failed("dup2");
  /* From here fd 3 is the run's channel, not the control socket: reports go there, without an id. */
  report_fd = 3;
  report_id[0] = '\0';
  if (syscall(SYS_close_range, 4U, ~0U, 0U) != 0)
    for (int fd = 4; fd < 65536; fd++) close(fd);
  if (chdir("/tmp") != 0) setup_failed("chdir");
  if (drop_capabilities() != 0 || load_seccomp() != 0) setup_failed("capabilities_seccomp");
  /* Undumpable: the worker (same user) cannot open this process's /proc files or memory. */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) setup_failed("undumpable");
  /* Default dispositions (the zygote's Python handlers would write to descriptors now closed): as
   * PID 1 of its namespace, P1 then ignores every signal its run sends it, but SIGCHLD, which at
   * most makes it reap. */
  struct sigaction action, inherited[NSIG];
  memset(&action, 0, sizeof action);
  action.sa_handler = SIG_DFL;
  for (int signum = 1; signum < NSIG; signum++)
    if (signum != SIGKILL && signum != SIGSTOP) sigaction(signum, &action, &inherited[signum]);
  sigset_t blocked, waiting;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGCHLD);
  sigprocmask(SIG_BLOCK, &blocked, &waiting);
  sigdelset(&waiting, SIGCHLD);
  action.sa_handler = wake;
  sigaction(SIGCHLD, &action, NULL);
  int clock[2];
  if (pipe2(clock, O_CLOEXEC) != 0) setup_failed("pipe");
  pid_t worker = fork();
  if (worker < 0) setup_failed("fork");
  if (worker == 0) {
    if (init_program) register_rseq();
    /* The zygote's dispositions, as os.fork would leave them (Python ignores SIGPIPE and SIGXFSZ,
     * and its handlers match its own table), but SIGCHLD's: the default, as in a fresh process
     * (the zygote's loop caught it, and so does P1). */
    for (int signum = 1; signum < NSIG; signum++)
      if (signum != SIGKILL && signum != SIGSTOP && signum != SIGCHLD) sigaction(signum, &inherited[signum], NULL);
    action.sa_handler = SIG_DFL;
    if (sigaction(SIGCHLD, &action, NULL) != 0) setup_failed("sigchld");
    sigprocmask(SIG_SETMASK, &waiting, NULL);
    /* The worker's own process state, as a cold run's helper leaves it before exec: here in C, as
     * the same calls from Python cost each run copy-on-write faults of the objects they touch. Its
     * own /proc/self stays its own to read (dumpable: P1 above is not), a session of its own. */
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 || setsid() < 0) setup_failed("dumpable_session");
    for (size_t i = 0; i < limit_count; i++)
      if (setrlimit(limit_resources[i], &limit_values[i]) != 0) setup_failed("setrlimit");
    close(clock[0]);
    *clock_fd = clock[1];
    return 0;
  }
  close(clock[1]);
  /* Only the worker's tree holds the run's streams now: they close when it is done. */
  for (int fd = 1; fd <= 3; fd++) dup2(0, fd);
  if (init_program) {
    /* P1 shares the zygote's memory (vforked, the zygote waiting): it becomes a small program of
     * its own, which does what wait_worker does, with the clock's read end on INIT_CLOCK_FD. */
    int moved = clock[0] == INIT_CLOCK_FD ? INIT_CLOCK_FD : dup2(clock[0], INIT_CLOCK_FD);
    if (moved == INIT_CLOCK_FD && fcntl(INIT_CLOCK_FD, F_SETFD, 0) == 0) {
      char worker_text[24];
      snprintf(worker_text, sizeof worker_text, "%d", (int)worker);
      char *const argv[] = {"mcpworks-zygote-init", worker_text, NULL};
      char *const envp[] = {NULL};
      execve(INIT_PROGRAM, argv, envp);
    }
    /* Not run (the program gone since the zygote started): P1 waits itself, and its zygote with
     * it until the run ends, rather than leave the run without its init. That once: this write is
     * the zygote's own variable (P1 runs on its memory), so its later children are forked and wait
     * themselves, each without suspending it (else it forks no child while any such run lasts). */
    init_program = 0;
    if (moved == INIT_CLOCK_FD) clock[0] = INIT_CLOCK_FD;
  }
  _exit(wait_worker(worker, clock[0], &waiting));
}

/* A fork request: "F " TOKEN(32) " " ID(16) " run-" CGROUP(16) "\n". */
#define RECORD 73
#define TOKEN_AT 2
#define ID_AT 35
#define ID_CHARS 16
#define CGROUP_AT 52
#define CGROUP_CHARS 20
#define MAX_CHILDREN 1024

/* The one buffer a request's token is ever in: read straight from the socket, a request at a time
 * (the rest wait in the kernel), and zeroed once its child is forked, so no child's memory (a copy
 * of the zygote's) holds another child's token. */
static char record[RECORD];
/* Children in progress, by P1's pid, with the request id their exit is reported under (far more
 * than a server keeps in flight per zygote: a request beyond it fails its set-up, status 111). */
static pid_t child_pids[MAX_CHILDREN];
static char child_ids[MAX_CHILDREN][ID_CHARS + 1];

static int hex_field(const char *at, size_t length) {
  for (size_t i = 0; i < length; i++)
    if (!((at[i] >= '0' && at[i] <= '9') || (at[i] >= 'a' && at[i] <= 'f'))) return 0;
  return 1;
}

static int report(int control, const char *id, int status) {
  char line[64];
  int length = snprintf(line, sizeof line, "{\"exited\": \"%s\", \"status\": %d}\n", id, status);
  return write_all(control, line, (size_t)length);
}

/* Forks P1 for the request in `record`: its pid, 0 in the worker, -1 if it could not, -2 if the
 * zygote could not go back to its own PID namespace (it then stops rather than fork elsewhere). */
static int spawn(int control, const char *id, const char *cgroup, int *clock_fd) {
  /* Entering a new PID namespace is for the caller's next child: it is PID 1 there. */
  if (own_pid_ns < 0 || unshare(CLONE_NEWPID) != 0) return -1;
  pid_t zygote = getpid();
  /* vforked when P1 will become INIT_PROGRAM: until then it runs on this process's memory, which
   * waits (this thread only: a library's threads run on), so the kernel copies the zygote's page
   * tables once per run (the worker's fork) instead of twice. P1 allocates nothing, never returns
   * from here, and the globals it sets (report_fd, report_id) are only ever read by children; but
   * init_program, which it clears for the zygote when its exec fails (see child). */
  pid_t pid = init_program ? vfork() : fork();
  if (pid == 0) {
    report_fd = control;
    snprintf(report_id, sizeof report_id, "%s", id);
    return child(record + TOKEN_AT, cgroup, zygote, clock_fd);
  }
  if (setns(own_pid_ns, CLONE_NEWPID) != 0) {
    if (pid > 0) kill(pid, SIGKILL);
    return -2;
  }
  return pid > 0 ? pid : -1;
}

static void reap(int control) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (int i = 0; i < MAX_CHILDREN; i++) {
      if (child_pids[i] != pid) continue;
      child_pids[i] = 0;
      report(control, child_ids[i], WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status));
      break;
    }
  }
}

int mcpw_serve(int control, int *clock_fd) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = wake;
  sigaction(SIGCHLD, &action, NULL);
  sigset_t blocked, waiting;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGCHLD);
  sigprocmask(SIG_BLOCK, &blocked, &waiting);
  sigdelset(&waiting, SIGCHLD);
  size_t have = 0;
  for (;;) {
    reap(control);
    struct pollfd watched = {control, POLLIN, 0};
    if (ppoll(&watched, 1, NULL, &waiting) < 0) { /* EINTR: a child ended */
      back_off();
      continue;
    }
    ssize_t got = recv(control, record + have, RECORD - have, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return 1; /* the host is gone: the sandbox ends, and every child with it */
    have += (size_t)got;
    if (have < RECORD) continue;
    have = 0;
    /* Not the host's framing: stop rather than guess. */
    if (record[0] != 'F' || record[1] != ' ' || record[ID_AT - 1] != ' ' || record[CGROUP_AT - 1] != ' ' ||
        record[RECORD - 1] != '\n' || !hex_field(record + ID_AT, ID_CHARS) || memcmp(record + CGROUP_AT, "run-", 4) != 0 ||
        !hex_field(record + CGROUP_AT + 4, CGROUP_CHARS - 4))
      return 1;
    char id[ID_CHARS + 1], cgroup[CGROUP_CHARS + 1];
    memcpy(id, record + ID_AT, ID_CHARS);
    id[ID_CHARS] = '\0';
    memcpy(cgroup, record + CGROUP_AT, CGROUP_CHARS);
    cgroup[CGROUP_CHARS] = '\0';
    int slot = -1;
    for (int i = 0; i < MAX_CHILDREN && slot < 0; i++)
      if (child_pids[i] == 0) slot = i;
    /* Not waited for: P1 sets up in parallel with the next forks (a vforked P1: from its exec on). */
    int pid = slot < 0 ? -1 : spawn(control, id, cgroup, clock_fd);
    if (pid == 0) {
      /* The worker: what the zygote's memory held of other runs is not the run's. */
      memset(record, 0, sizeof record);
      memset(child_pids, 0, sizeof child_pids);
      memset(child_ids, 0, sizeof child_ids);
      return 0;
    }
    memset(record, 0, sizeof record);
    if (pid == -2) return 1;
    if (pid < 0) {
      if (report(control, id, SETUP_FAILED) != 0) return 1;
      continue;
    }
    child_pids[slot] = pid;
    memcpy(child_ids[slot], id, sizeof id);
  }
}
