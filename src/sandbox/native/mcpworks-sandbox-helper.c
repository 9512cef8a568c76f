/*
 * mcpworks-sandbox-helper: the two privileged-side steps of a sandbox run that Node cannot do.
 *
 *   mcpworks-sandbox-helper seccomp OUTFILE
 *       Writes the seccomp-bpf program that bubblewrap loads with --seccomp (and zygote children load).
 *   mcpworks-sandbox-helper exec [--cgroup PROCS_FILE]... [--rlimit NAME=SOFT:HARD]...
 *                                [--user UID:GID] [--keep-fds N] -- PROGRAM [ARG]...
 *   mcpworks-sandbox-helper exec [--cgroup PROCS_FILE]... --wait-command
 *       The same, pre-started: joins the cgroups now and reads the other options, "--" and the
 *       program from stdin when the run begins (see read_command).
 *       Joins the per-run cgroups, sets resource limits, drops to the sandbox user and runs
 *       PROGRAM (bubblewrap) as a child, exiting with its status once every descendant is gone.
 *       Joining before exec means no user code ever runs outside the cgroup.
 *       --watch-pid PID: the server; when it ends (however: kill -9 too) the sandbox is killed.
 *       --deadline-ms N: the wall clock of the run, enforced here whatever the server does; it
 *       starts when the command is read, or with --clock-on-signal (a pooled sandbox, started
 *       ahead of its run) when SIGUSR2 says the run began. At either end: SIGKILL to bubblewrap
 *       and to every process left in the run's cgroups.
 *
 * Built by scripts/setup.d/sandbox.sh with libseccomp.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/signalfd.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#define MAX_CGROUPS 4
static const char *cgroup_files[MAX_CGROUPS];
static int cgroup_count = 0;

static int fail(const char *what) {
  fprintf(stderr, "mcpworks-sandbox-helper: %s: %s\n", what, strerror(errno));
  return 111;
}

/* Denied outright: debugging other processes, namespaces and mounts (the escape toolbox),
 * kernel keyrings, eBPF, perf, module and kexec loading, and host-wide administration. */
static const char *const denied[] = {
  "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
  "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns",
  "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
  "open_by_handle_at", "name_to_handle_at",
  "keyctl", "add_key", "request_key",
  "bpf", "perf_event_open", "userfaultfd",
  "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
  "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup",
  "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
  "lookup_dcookie", "uselib", "nfsservctl",
};

/* Address families a run may open sockets of: local sockets, IPv4, IPv6 and routing netlink.
 * Everything else (AF_VSOCK, AF_PACKET, AF_ALG, AF_BLUETOOTH, AF_XDP, ...) gets EAFNOSUPPORT. */
#define FAMILY_LIMIT 64
static int family_allowed(unsigned int family) {
  return family == AF_UNIX || family == AF_INET || family == AF_INET6 || family == AF_NETLINK;
}

static int write_seccomp(const char *path) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return fail("seccomp_init");
  /* Only the native ABI: a 32-bit (int 0x80) or x32 system call would bypass the rules below. */
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  if (rc < 0) { fprintf(stderr, "mcpworks-sandbox-helper: badarch: %s\n", strerror(-rc)); return 111; }
  for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) {
    int nr = seccomp_syscall_resolve_name(denied[i]);
    if (nr == __NR_SCMP_ERROR) continue; /* not a syscall on this architecture */
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    if (rc < 0) { fprintf(stderr, "mcpworks-sandbox-helper: rule %s: %s\n", denied[i], strerror(-rc)); return 111; }
  }
  /* clone is needed for threads and fork, so only its namespace-creating flags are refused. */
  const unsigned long ns_flags[] = { CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
                                     CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWCGROUP };
  for (size_t i = 0; i < sizeof ns_flags / sizeof ns_flags[0]; i++) {
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]));
    if (rc < 0) { fprintf(stderr, "mcpworks-sandbox-helper: clone rule: %s\n", strerror(-rc)); return 111; }
  }
  /* clone3 passes its flags in memory, which seccomp cannot inspect: ENOSYS makes libc fall back to clone. */
  rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc < 0) { fprintf(stderr, "mcpworks-sandbox-helper: clone3 rule: %s\n", strerror(-rc)); return 111; }
  /* io_uring: a second system-call interface whose operations seccomp cannot see, and a large
   * kernel attack surface. ENOSYS, as on a kernel without it: libuv and others fall back. */
  const char *const io_uring[] = { "io_uring_setup", "io_uring_enter", "io_uring_register" };
  for (size_t i = 0; i < sizeof io_uring / sizeof io_uring[0]; i++) {
    int nr = seccomp_syscall_resolve_name(io_uring[i]);
    if (nr == __NR_SCMP_ERROR) continue;
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
    if (rc < 0) { fprintf(stderr, "mcpworks-sandbox-helper: rule %s: %s\n", io_uring[i], strerror(-rc)); return 111; }
  }
  /* Sockets: an allow-list of address families. The network namespace covers only some of them
   * (AF_VSOCK, for one, reaches host-wide ports). The kernel reads the family as an int, so the
   * rule compares the low 32 bits only (a plain compare would miss 40 | 1 << 32); families at or above FAMILY_LIMIT it refuses itself. */
  for (unsigned int family = 0; family < FAMILY_LIMIT; family++) {
    if (family_allowed(family)) continue;
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, family));
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socketpair), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, family));
    if (rc < 0) { fprintf(stderr, "mcpworks-sandbox-helper: socket rule: %s\n", strerror(-rc)); return 111; }
  }
  /* Netlink only for routing (interfaces and addresses of the run's own network namespace, which
   * getifaddrs and getaddrinfo's AI_ADDRCONFIG read); its other protocols reach kernel subsystems. */
  rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPROTONOSUPPORT), SCMP_SYS(socket), 2,
                        SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, AF_NETLINK),
                        SCMP_A2(SCMP_CMP_NE, NETLINK_ROUTE) /* 64-bit: stray high bits refuse, never allow */);
  if (rc < 0) { fprintf(stderr, "mcpworks-sandbox-helper: netlink rule: %s\n", strerror(-rc)); return 111; }
  /* Typing into another terminal's input queue. */
  rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
  if (rc < 0) { fprintf(stderr, "mcpworks-sandbox-helper: ioctl rule: %s\n", strerror(-rc)); return 111; }

  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail(path);
  rc = seccomp_export_bpf(ctx, fd);
  if (rc < 0) { fprintf(stderr, "mcpworks-sandbox-helper: export: %s\n", strerror(-rc)); return 111; }
  close(fd);
  seccomp_release(ctx);
  return 0;
}

static int resource_named(const char *name) {
  if (!strcmp(name, "cpu")) return RLIMIT_CPU;
  if (!strcmp(name, "fsize")) return RLIMIT_FSIZE;
  if (!strcmp(name, "nofile")) return RLIMIT_NOFILE;
  if (!strcmp(name, "nproc")) return RLIMIT_NPROC;
  if (!strcmp(name, "as")) return RLIMIT_AS;
  if (!strcmp(name, "core")) return RLIMIT_CORE;
  if (!strcmp(name, "stack")) return RLIMIT_STACK;
  return -1;
}

struct exec_options {
  uid_t uid;
  gid_t gid;
  int drop;
  unsigned int keep_fds;
  int wait_command;
  long watch_pid;
  long deadline_ms;
  int clock_on_signal;
};

/* Applies options from args[0..count) up to "--" (sets *program to the index after it) or up to
 * --wait-command (sets options->wait_command). Returns 0 or an exit status. */
static int apply_options(char **args, int count, int *program, struct exec_options *options) {
  int i = 0;
  *program = -1;
  for (; i < count; i++) {
    if (!strcmp(args[i], "--")) { *program = i + 1; return 0; }
    if (!strcmp(args[i], "--wait-command")) { options->wait_command = 1; return 0; }
    if (!strcmp(args[i], "--clock-on-signal")) { options->clock_on_signal = 1; continue; }
    if (i + 1 >= count) { fprintf(stderr, "mcpworks-sandbox-helper: %s needs a value\n", args[i]); return 111; }
    const char *value = args[++i];
    if (!strcmp(args[i - 1], "--cgroup")) {
      int fd = open(value, O_WRONLY | O_CLOEXEC);
      if (fd < 0) return fail("open cgroup.procs");
      /* "0" means the writing process itself. */
      if (write(fd, "0\n", 2) != 2) return fail("join cgroup");
      close(fd);
      if (cgroup_count < MAX_CGROUPS) cgroup_files[cgroup_count++] = value;
    } else if (!strcmp(args[i - 1], "--rlimit")) {
      char name[16]; unsigned long long soft, hard;
      if (sscanf(value, "%15[a-z]=%llu:%llu", name, &soft, &hard) != 3 || resource_named(name) < 0) {
        fprintf(stderr, "mcpworks-sandbox-helper: bad --rlimit %s\n", value); return 111;
      }
      struct rlimit limit = { (rlim_t)soft, (rlim_t)hard };
      if (setrlimit(resource_named(name), &limit) != 0) return fail("setrlimit");
    } else if (!strcmp(args[i - 1], "--watch-pid")) {
      options->watch_pid = strtol(value, NULL, 10);
    } else if (!strcmp(args[i - 1], "--deadline-ms")) {
      options->deadline_ms = strtol(value, NULL, 10);
    } else if (!strcmp(args[i - 1], "--keep-fds")) {
      options->keep_fds = (unsigned int)strtoul(value, NULL, 10);
    } else if (!strcmp(args[i - 1], "--user")) {
      unsigned long u, g;
      if (sscanf(value, "%lu:%lu", &u, &g) != 2) { fprintf(stderr, "mcpworks-sandbox-helper: bad --user\n"); return 111; }
      options->uid = (uid_t)u; options->gid = (gid_t)g; options->drop = 1;
    } else {
      fprintf(stderr, "mcpworks-sandbox-helper: unknown option %s\n", args[i - 1]); return 111;
    }
  }
  return 0;
}

static int read_exactly(int fd, char *buffer, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t got = read(fd, buffer + done, size - done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    done += (size_t)got;
  }
  return 0;
}

/* The rest of the command line arrives on stdin as 8 hex digits of length, then NUL-terminated
 * arguments. Reading exactly that much leaves the rest of stdin (the request) for the sandbox.
 * Encoded by src/sandbox/wire/command-frame.ts (whose MAX_FRAME_BYTES is the limit below). */
static char **read_command(int *count) {
  char header[9] = { 0 };
  if (read_exactly(0, header, 8) != 0) return NULL;
  size_t size = strtoul(header, NULL, 16);
  if (size == 0 || size > (1u << 20)) return NULL;
  char *frame = malloc(size + 1);
  if (!frame || read_exactly(0, frame, size) != 0) return NULL;
  frame[size] = '\0';
  int n = 0;
  for (size_t k = 0; k < size; k++) if (frame[k] == '\0') n++;
  char **args = calloc((size_t)n + 1, sizeof *args);
  if (!args) return NULL;
  int index = 0;
  for (size_t k = 0; k < size && index < n; k += strlen(frame + k) + 1) args[index++] = frame + k;
  *count = index;
  return args;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* SIGKILL to every process of the run's cgroups but this one: what bubblewrap's teardown would
 * miss (a child it started but had not yet armed with --die-with-parent). */
static void kill_cgroups(void) {
  pid_t self = getpid();
  for (int g = 0; g < cgroup_count; g++) {
    FILE *procs = fopen(cgroup_files[g], "r");
    if (!procs) continue;
    long pid;
    while (fscanf(procs, "%ld", &pid) == 1) if (pid > 0 && pid != self) kill((pid_t)pid, SIGKILL);
    fclose(procs);
  }
}

/* The kernel's OOM killer picks the highest score: sandboxes first (1000), their helpers next
 * (500), the server last (see src/app/start-server.ts). Raising needs no privilege; best effort. */
static void set_oom_score_adj(const char *value) {
  int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  if (write(fd, value, strlen(value)) < 0) { /* kept as it is */ }
  close(fd);
}

static int drop_privileges(const struct exec_options *options) {
  if (!options->drop) return 0;
  if (setgroups(0, NULL) != 0) return fail("setgroups");
  if (setresgid(options->gid, options->gid, options->gid) != 0) return fail("setresgid");
  if (setresuid(options->uid, options->uid, options->uid) != 0) return fail("setresuid");
  return 0;
}

static int run_exec(int argc, char **argv) {
  struct exec_options options = { 0, 0, 0, 5, 0, 0, 0, 0 };
  int program = -1;
  char **args = argv + 2;
  int count = argc - 2;
  int rc = apply_options(args, count, &program, &options);
  if (rc != 0) return rc;
  if (options.wait_command) {
    /* Pre-started: the cgroups are joined (the slow part, an RCU grace period per migration);
     * everything else waits for the run. */
    args = read_command(&count);
    if (!args) { fprintf(stderr, "mcpworks-sandbox-helper: no command on stdin\n"); return 111; }
    rc = apply_options(args, count, &program, &options);
    if (rc != 0) return rc;
  }
  int i = program;
  argc = count;
  argv = args;
  if (i < 0 || i >= argc) { fprintf(stderr, "mcpworks-sandbox-helper: no program\n"); return 111; }
  set_oom_score_adj("500");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail("no_new_privs");
  /* Only fds below --keep-fds (stdio, the answer pipe, the seccomp program, bubblewrap's
   * info/block pipes) may reach bubblewrap, which passes on whatever it inherits. */
  syscall(SYS_close_range, options.keep_fds, ~0U, 0);
  /* The server, watched through a pidfd (close-on-exec, opened after the close above): its end,
   * whatever the cause, ends the run. Gone already: nothing is started. */
  int server = -1;
  if (options.watch_pid > 0) {
    server = (int)syscall(SYS_pidfd_open, (pid_t)options.watch_pid, 0);
    if (server < 0 && errno == ESRCH) { fprintf(stderr, "mcpworks-sandbox-helper: the server has ended\n"); return 111; }
    /* Kernels without pidfds (before 5.3): the parent's death signal is the fallback. */
    if (server < 0) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  }
  long long deadline = options.deadline_ms > 0 && !options.clock_on_signal ? now_ms() + options.deadline_ms : -1;
  /* bubblewrap's monitor returns as soon as the function's process ends, leaving the namespace's
   * init to tear the rest down as an orphan. As subreaper we adopt it and exit only when every
   * descendant is gone, so nothing outlives the answer and no zombie is left to the host's init. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) return fail("subreaper");
  sigset_t watched, previous;
  sigemptyset(&watched);
  sigaddset(&watched, SIGTERM);
  sigaddset(&watched, SIGCHLD);
  sigaddset(&watched, SIGUSR2);
  sigprocmask(SIG_BLOCK, &watched, &previous);
  int signals = signalfd(-1, &watched, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signals < 0) return fail("signalfd");
  pid_t child = fork();
  if (child < 0) return fail("fork");
  if (child == 0) {
    /* Before the drop: once another user, this process's /proc files are no longer its own. */
    set_oom_score_adj("1000");
    if (drop_privileges(&options) != 0) _exit(111);
    /* If we die (killed, or the server gone), bubblewrap and through --die-with-parent the sandbox follow. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    sigprocmask(SIG_SETMASK, &previous, NULL);
    execv(argv[i], &argv[i]);
    _exit(fail("exec"));
  }
  /* The helper itself runs no user code, but needs nothing of root's from here on either. */
  if (drop_privileges(&options) != 0) { kill(child, SIGKILL); return 111; }
  /* A change of user clears the parent-death signal: set again where it is the fallback. */
  if (server < 0 && options.watch_pid > 0) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  /* The pipes to the server (stdin, stdout, stderr, the answer channel) are the sandbox's alone
   * from here: held here too, they would end only once this helper has reaped everything, and the
   * server waits for their end before it answers. The helper's own word is its exit status. */
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    /* (Started without some of them, the helper may have put its own signalfd or pidfd there.) */
    for (int fd = 0; fd <= 3; fd++) if (fd != null_fd && fd != signals && fd != server) dup2(null_fd, fd);
    if (null_fd > 3) close(null_fd);
  }
  int status = 0, child_status = 0, child_running = 1, killing = 0;
  for (;;) {
    pid_t done;
    while ((done = waitpid(-1, &status, WNOHANG)) > 0) {
      if (done == child) { child_status = status; child_running = 0; }
    }
    if (done < 0 && errno == ECHILD) break; /* every descendant has been reaped */
    long long now = now_ms();
    if (!killing && deadline >= 0 && now >= deadline) killing = 1; /* the run's wall-clock limit passed */
    if (killing) {
      if (child_running) kill(child, SIGKILL);
      kill_cgroups();
    }
    int timeout = -1;
    if (killing) timeout = 50;
    else if (deadline >= 0) timeout = (int)(deadline - now < 0 ? 0 : deadline - now);
    struct pollfd fds[2] = { { signals, POLLIN, 0 }, { server, POLLIN, 0 } };
    int ready = poll(fds, server >= 0 ? 2 : 1, timeout);
    if (ready < 0 && errno != EINTR) break;
    if (server >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      /* The server ended: the run has no one to answer to. */
      killing = 1;
      close(server);
      server = -1;
    }
    struct signalfd_siginfo info;
    while (read(signals, &info, sizeof info) == (ssize_t)sizeof info) {
      /* SIGTERM from the server (timeout): kill bubblewrap, whose --die-with-parent takes the
       * sandbox down; we stay to reap it all. */
      if (info.ssi_signo == SIGTERM && child_running) kill(child, SIGKILL);
      if (info.ssi_signo == SIGUSR2 && options.deadline_ms > 0 && deadline < 0) deadline = now_ms() + options.deadline_ms;
    }
  }
  if (WIFEXITED(child_status)) return WEXITSTATUS(child_status);
  if (WIFSIGNALED(child_status)) return 128 + WTERMSIG(child_status);
  return 111;
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "seccomp")) return write_seccomp(argv[2]);
  if (argc >= 2 && !strcmp(argv[1], "exec")) return run_exec(argc, argv);
  fprintf(stderr, "usage: mcpworks-sandbox-helper seccomp OUTFILE | exec [options] -- PROGRAM [ARG]...\n");
  return 2;
}
