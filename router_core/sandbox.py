"""Run untrusted Python (a model's code and its tests) in a sandbox; report how it ended.

`run(code, limits, tmp_root)` writes `code` to a throw-away directory, runs it in a separate
interpreter and deletes the directory afterwards. The layers, each a defense should another
fail, and who applies them:

- process (parent): `python -I -S -B` (isolated: no PYTHON* variables, no user or site
  packages, so only the standard library imports; no bytecode written), a new session and
  process group, stdin a pipe carrying the run's token (below) and then its end, stdout
  discarded, a near-empty environment, the throw-away directory as working directory, TMPDIR
  and HOME.
- namespaces (child, unshare(2) through ctypes, before any untrusted code): a new network
  namespace, where only a down loopback exists, so no address is reachable (Redis on
  127.0.0.1 included), a new PID namespace: the code runs as a grandchild of process 1
  there, and when process 1 ends the kernel kills every process left in the namespace, even
  one that left the process group; and a new mount namespace, where a tmpfs of
  `disk_bytes` covers the working directory: what the code writes is bounded as a whole (a
  loop of files within RLIMIT_FSIZE each would fill the disk) and goes with the run.
- unprivileged user (child, when the parent is root): after entering the namespaces it
  becomes a user of its own, drawn at random for the run from SANDBOX_UIDS (`nobody` where
  that uid cannot exist, e.g. a container mapping fewer uids), keeping only
  CAP_DAC_READ_SEARCH (the interpreter may live where only root can read, e.g.
  /root/.pyenv). So it cannot write the machine's files, and RLIMIT_NPROC, which root
  ignores, applies and counts this run's processes alone, not those of runs beside it. The
  throw-away directory is handed to that user. That capability reads any file: the files layer
  below keeps it to the interpreter's.
- files (child, Landlock, Linux 5.13+): the code may read only the interpreter's modules, the
  system's libraries (/usr, /lib*) and its own /proc entry, and change files only under its
  working directory, whatever its user and capabilities: neither the gateway's files (the
  registry, a config holding keys) nor /tmp and /dev/shm. The kernel's newer Landlock versions
  also refuse it TCP (6.7+) and signals to processes outside the run (6.12+). Without Landlock
  (an older kernel) it says so on stderr and the other layers go on.
- resource limits (child, on itself): CPU seconds (RLIMIT_CPU: SIGXCPU, then SIGKILL a second
  later), address space (RLIMIT_AS: a larger allocation raises MemoryError), processes and
  threads (RLIMIT_NPROC), file size (RLIMIT_FSIZE, which also bounds its stderr), open files,
  no core dumps.
- wall time (parent): at the deadline it kills the whole process group (SIGKILL); it kills the
  group again once the child ended and waits until its processes are gone, so that nothing
  the code started outlives the run.
- audit hook (PEP 578, child, installed just before the untrusted code runs): any socket
  operation (a socket file's too, which no network namespace covers), process creation (fork,
  exec, spawn, system, subprocess), signal to a process, use of ctypes or import of
  ctypes/_posixsubprocess, a trace or profile function, gc's object lookups, a code object
  made by hand, and without Landlock opening for writing (or removing, renaming, linking,
  chmod...) a path outside the working directory, or opening a directory there (its
  descriptor would serve as dir_fd), ends the process at once with os._exit (reason
  'forbidden'): the code cannot catch the refusal. The hook and what it reads are bound in a
  closure before the code runs: rebinding the bootstrap's globals, os's functions or the
  builtins does not change it.

The code runs as module `solution` (not `__main__`: a model's demo block stays off) and
passes only if it runs to its end: the tests come after the model's code, so an
AssertionError is 'failed', MemoryError 'memory', another exception or an early exit (even
sys.exit(0)) 'error', the CPU limit or the deadline 'timeout'. The end is a line the
bootstrap appends: reached in the program's own frame, it has the hook write the run's
random token to a file the parent handed it, and only with that token is the run
'passed': an exit code alone (`os._exit(17)`, the pass's) is 'error'.

Not root: the child tries the namespaces inside a new user namespace (if the kernel allows
unprivileged ones), where its user is mapped to itself, and does not change user; without namespaces, the audit hook alone keeps
it off the network and from forking, and RLIMIT_NPROC then counts every process of the
calling user (so a low limit may also stop the code's threads). The audit hook is no barrier
against code written to defeat it; the namespaces, the user change, Landlock and the limits
are. Without Landlock, places any user may write (/tmp, /dev/shm) are guarded by the audit hook
alone.
Measured as root with the audit hook left out on purpose: a fork loop stopped at 29 children
(RLIMIT_NPROC 32), a connect to 127.0.0.1:6379 failed ("Network is unreachable"), nothing was
left running afterwards; a file written to /tmp or /dev/shm and a root-only file read were
refused by Landlock (Permission denied).
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

Reason = Literal["passed", "failed", "timeout", "memory", "forbidden", "error"]

# exit codes the child's bootstrap reports with (an untrusted os._exit(0) must not pass)
PASSED_EXIT = 17
FAILED_EXIT = 18  # an AssertionError: a test failed
MEMORY_EXIT = 19
ERROR_EXIT = 20  # any other exception, or the code exited before its tests finished
FORBIDDEN_EXIT = 86  # the audit hook refused an operation
SIGNALLED_EXIT = 100  # + the signal number that ended the code (inside the PID namespace)

# users no account has: each run gets one, so that RLIMIT_NPROC counts its processes alone
SANDBOX_UIDS = range(2_000_000, 3_000_000)
STDERR_TAIL_CHARS = 2000
_POLL_S = 0.01
_KILL_WAIT_S = 2.0


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use."""

    cpu_s: int = 10
    wall_s: float = 20.0
    memory_bytes: int = 1 << 30
    processes: int = 32
    file_bytes: int = 16 << 20
    disk_bytes: int = 64 << 20  # every file the code writes, together
    open_files: int = 64


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class SandboxResult:
    """How a run ended: `passed` only if the code ran to its end (every test passed)."""

    passed: bool
    reason: Reason
    stderr: str  # the tail of what the code wrote to stderr (at most STDERR_TAIL_CHARS)


# The child's side: confine itself, then run the code file named in argv[1]. Kept as source
# text because it runs in the bare isolated interpreter, before any untrusted code.
_BOOTSTRAP = r"""
import os, resource, sys, traceback
code_path, uid, verdict_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[5])
cpu, mem, nproc, fsize, disk, nofile = (int(v) for v in sys.argv[3].split(","))
PASSED, FAILED, MEMORY, ERROR, FORBIDDEN, SIGNALLED = (int(v) for v in sys.argv[4].split(","))
# the tests' end, appended as the program's last line: only there is the run's token written
source = open(code_path, encoding="utf-8").read() + "\n__import__('sys').audit('sandbox.end')\n"

def own_user(libc, namespaces):
    # the namespaces inside a user namespace, for a process that may not make them alone; there
    # its user is mapped to itself, so that it owns the files it makes on its tmpfs
    me, group = os.getuid(), os.getgid()
    if libc.unshare(0x10000000 | namespaces) != 0:  # CLONE_NEWUSER
        return False
    try:
        for name, mapping in (("setgroups", "deny"), ("uid_map", f"{me} {me} 1"), ("gid_map", f"{group} {group} 1")):
            with open("/proc/self/" + name, "w") as fh:
                fh.write(mapping)
    except OSError:  # a kernel or security module refusing it
        os.write(2, b"sandbox: its user is not mapped in its namespace; the files the code writes are bounded one by one only\n")
    else:
        own_disk(libc, me, group)
    return True

def own_disk(libc, owner, group):
    # a tmpfs of `disk` bytes over the working directory, in this mount namespace alone: the
    # files the code writes are bounded as a whole, not only one by one (RLIMIT_FSIZE)
    MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 0x4000, 0x40000
    home = os.getcwd().encode()
    options = f"size={disk},nr_inodes=4096,mode=0700,uid={owner},gid={group}".encode()
    if (libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0  # nothing mounted here reaches the machine
            or libc.mount(b"tmpfs", home, b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0):
        os.write(2, b"sandbox: no tmpfs of its own; the files the code writes are bounded one by one only\n")
        return
    os.chdir(home)  # into the tmpfs

def confine():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWNS = 0x40000000, 0x20000000, 0x00020000
    namespaces = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS
    if libc.unshare(namespaces) == 0:
        isolated = True
        own_disk(libc, *((uid, uid) if uid >= 0 else (os.getuid(), os.getgid())))
    else:
        isolated = own_user(libc, namespaces)
    if not isolated:
        os.write(2, b"sandbox: no namespaces (not permitted); the audit hook still refuses sockets and forks\n")
    if uid >= 0 and os.getuid() == 0:
        # become `uid`, keeping only CAP_DAC_READ_SEARCH: the interpreter's own files may sit
        # in a directory only root can read (e.g. /root/.pyenv); no other capability is kept
        libc.prctl(8, 1, 0, 0, 0)  # PR_SET_KEEPCAPS
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        caps = (Data * 2)()
        caps[0].effective = caps[0].permitted = 1 << 2  # CAP_DAC_READ_SEARCH
        if libc.capset(ctypes.byref(Header(0x20080522, 0)), caps) != 0:  # _LINUX_CAPABILITY_VERSION_3
            os.write(2, b"sandbox: could not keep CAP_DAC_READ_SEARCH; some imports may fail\n")
        libc.prctl(8, 0, 0, 0, 0)
    return isolated

isolated = confine()
for res, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, mem), (resource.RLIMIT_NPROC, nproc),
                   (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_CORE, 0)):
    # CPU: SIGXCPU at the soft limit, SIGKILL one second later
    resource.setrlimit(res, (value, value + 1) if res == resource.RLIMIT_CPU else (value, value))

def relay(child):
    # end as `child` ended; a signal becomes exit code SIGNALLED + its number
    status = os.waitpid(child, 0)[1]
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else SIGNALLED + os.WTERMSIG(status))

if isolated:
    # The first child is process 1 of the new PID namespace: when it ends, the kernel kills
    # every process left in it. It only waits: process 1 ignores signals it has no handler
    # for, the CPU limit's included, so the code runs in its child.
    child = os.fork()
    if child:
        relay(child)
    child = os.fork()
    if child:
        relay(child)

HOME = os.path.realpath(os.getcwd())
# what the code may read besides its directory: the interpreter's modules, the system's shared
# libraries (extension modules load them), a few devices and its network's state (not the rest
# of /proc/self: its mem holds the run's token)
READABLE = (*sys.path, "/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", "/etc/localtime", "/dev/zero",
            "/dev/urandom", "/dev/random", "/proc/self/net")

def confine_files():
    # Landlock (Linux 5.13+) binds this process and its children whatever their user and
    # capabilities (CAP_DAC_READ_SEARCH reads any file): reading only READABLE, changing files
    # only under HOME; from ABI 4 no TCP either, from ABI 6 no signal to a process outside
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1:
        os.write(2, b"sandbox: no Landlock (kernel); the code reads what its user may, the audit hook alone guards /tmp\n")
        return False
    EXECUTE, WRITE, READ, READ_DIR, TRUNCATE, IOCTL_DEV = 1, 2, 4, 8, 1 << 14, 1 << 15
    handled = (1 << 13) - 1 | (abi >= 2) << 13 | (abi >= 3) * TRUNCATE | (abi >= 5) * IOCTL_DEV
    attr = (ctypes.c_uint64 * 3)(handled, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)  # fs, net (TCP), scope
    ruleset = libc.syscall(444, attr, ctypes.sizeof(attr), 0)

    class Beneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    rules = [(path, EXECUTE | READ | READ_DIR) for path in READABLE]
    rules += [("/dev/null", READ | WRITE | TRUNCATE | IOCTL_DEV), (HOME, handled)]
    for path, allowed in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # not on this system
        if not os.path.isdir(path):
            allowed &= EXECUTE | WRITE | READ | TRUNCATE | IOCTL_DEV  # a file's rule takes only these
        libc.syscall(445, ruleset, 1, ctypes.byref(Beneath(allowed & handled, fd)), 0)  # LANDLOCK_RULE_PATH_BENEATH
        os.close(fd)
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS, which Landlock asks of a process without CAP_SYS_ADMIN
    confined = ruleset >= 0 and libc.syscall(446, ruleset, 0) == 0  # landlock_restrict_self
    if not confined:
        os.write(2, b"sandbox: Landlock refused the rules; the code reads what its user may, the audit hook alone guards /tmp\n")
    if ruleset >= 0:
        os.close(ruleset)
    return confined

landlocked = confine_files()
for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
    del sys.modules[name]  # importing it again meets the audit hook
def audit_hook(program, token, check_paths):
    # Everything the hook uses is bound here, before the code runs: the code can rebind
    # __main__'s names, os's functions and the builtins, but not this closure, which it cannot
    # reach (gc's lookups are refused, and nothing of the code runs inside the hook unless
    # `check_paths`, whose realpath calls os's functions: without Landlock the hook stays a
    # best effort)
    write, exit_now, getframe, realpath, fsdecode, isdir = os.write, os._exit, sys._getframe, os.path.realpath, os.fsdecode, os.path.isdir
    home, sep, str_, bytes_, int_ = HOME, os.sep, str, bytes, int
    last_line = max(line for _start, _end, line in program.co_lines() if line)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    refused = frozenset({
        "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn", "os.system", "os.kill", "os.killpg",
        "signal.pthread_kill", "subprocess.Popen",
        # what reaches this closure, jumps past the tests (a trace function sets f_lineno) or
        # forges bytecode (which reads any memory)
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.settrace", "sys.setprofile",
        "sys.monitoring.register_callback", "code.__new__"})
    refused_prefixes = ("socket.", "ctypes.")
    refused_imports = frozenset({"ctypes", "_ctypes", "_posixsubprocess"})
    # the arguments of these events that are paths the call changes (a symlink's target is not)
    path_args = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.link": (1,),
                 "os.symlink": (1,), "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
                 "shutil.rmtree": (0,), "shutil.move": (0, 1), "shutil.copyfile": (1,)}

    def inside(path):
        if type(path) is int_:
            return True  # an already open descriptor
        full = realpath(fsdecode(path))
        return full == home or full.startswith(home + sep)

    def refuse(what):
        try:
            write(2, ("\nsandbox: refused " + what + "\n").encode())
        finally:
            exit_now(FORBIDDEN)

    def hook(event, args):
        if event == "sandbox.end":
            # a pass: the program's own frame reached its last line, after every test
            frame = getframe(1)
            if frame.f_code is program and frame.f_lineno == last_line:
                write(verdict_fd, token)
                exit_now(PASSED)
        elif event in refused or event.startswith(refused_prefixes):
            refuse(event)
        elif event == "import":
            if type(args[0]) is not str_:
                refuse("import of a name that is no str")  # a str subclass would run its code in here
            elif args[0] in refused_imports:
                refuse("import " + args[0])
        elif not check_paths:
            return  # Landlock keeps the files outside the working directory
        elif event == "open":
            path, flags = args[0], args[2] if type(args[2]) is int_ else 0
            # a directory opened outside would let os.open(name, dir_fd=...) write there
            if path is not None and not inside(path) and (flags & write_flags or isdir(path)):
                refuse("opening " + fsdecode(path))
        elif event in path_args:
            for i in path_args[event]:
                if type(args[i]) in (str_, bytes_) and not inside(args[i]):
                    refuse(event + " outside the working directory")

    return hook

def read_token():
    # the run's token, from the parent on stdin (argv and the environment are the code's to read)
    chunks = []
    while chunk := os.read(0, 64):
        chunks.append(chunk)
    return b"".join(chunks)

try:
    program = compile(source, "solution.py", "exec")
    sys.addaudithook(audit_hook(program, read_token(), not landlocked))
    # not "__main__": a model's `if __name__ == "__main__":` demo (input(), unittest.main())
    # must not run before the tests, as HumanEval's own harness does not run it either
    exec(program, {"__name__": "solution", "__builtins__": __builtins__})
    status = ERROR  # the tests' end was never reached: the code turned it off
except AssertionError:
    traceback.print_exc()
    status = FAILED
except MemoryError:
    os.write(2, b"\nMemoryError\n")
    status = MEMORY
except BaseException:  # SystemExit too: the tests did not run to their end
    traceback.print_exc()
    status = ERROR
sys.stderr.flush()
os._exit(status)
"""


def _hand_over(workdir: Path) -> int:
    """The user the code runs as, owner of `workdir` from now on: a random one of
    SANDBOX_UIDS, else `nobody` where that uid cannot exist; -1 when not root (no change)."""
    if os.geteuid() != 0:
        return -1
    uid = secrets.choice(SANDBOX_UIDS)
    try:
        os.chown(workdir, uid, uid)
    except OSError:  # not a valid uid here (a user namespace mapping fewer)
        try:
            uid = pwd.getpwnam("nobody").pw_uid
        except KeyError:
            uid = 65534
        os.chown(workdir, uid, uid)
    return uid


def _remove_tree(path: Path) -> None:
    """Delete the throw-away directory, even parts the code made read-only."""
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _live_members(pgid: int) -> list[int]:
    """Processes of process group `pgid` that have not ended yet (zombies excluded)."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
                    state, _ppid, pgrp = fh.read().rsplit(b")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue  # ended meanwhile
            if int(pgrp) == pgid and state != b"Z":
                members.append(int(entry.name))
    return members


def _kill_group(pgid: int) -> None:
    """SIGKILL process group `pgid` and wait (a moment at most) until its processes ended:
    the kill is asynchronous, and a run must not return while its processes still run."""
    deadline = time.monotonic() + _KILL_WAIT_S
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return  # the group is gone
        if not _live_members(pgid) or time.monotonic() >= deadline:
            return
        time.sleep(_POLL_S)


def _wait(proc: subprocess.Popen, wall_s: float) -> bool:
    """Wait for the child to end or the deadline; then kill its whole process group and reap
    it. True if the deadline came first."""
    deadline = time.monotonic() + wall_s
    while True:
        # WNOWAIT leaves an ended child unreaped: its process group id cannot be reused by
        # an unrelated process before the kill below
        try:
            ended = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped elsewhere (a process-wide SIGCHLD handler): it ended
            ended = True
        if ended:
            timed_out = False
            break
        if time.monotonic() >= deadline:
            timed_out = True
            break
        time.sleep(_POLL_S)
    _kill_group(proc.pid)
    proc.wait()
    return timed_out


def _send_token(proc: subprocess.Popen, token: bytes) -> None:
    """Give the child the run's token on its stdin, which it reads to the end before the code
    runs (the code can read its argv and environment)."""
    assert proc.stdin is not None
    try:
        os.write(proc.stdin.fileno(), token)
    except BrokenPipeError:
        pass  # it ended before reading: it did not pass
    finally:
        proc.stdin.close()


def _tail(file: IO[bytes]) -> str:
    file.seek(0, os.SEEK_END)
    file.seek(max(0, file.tell() - 4 * STDERR_TAIL_CHARS))
    return file.read().decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]


# CPU limit: SIGXCPU at the soft limit, SIGKILL at the hard one; either way the code ran too long
_TIMED_OUT = (signal.SIGXCPU, signal.SIGKILL)
_BY_EXIT: dict[int, Reason] = {
    PASSED_EXIT: "passed", FAILED_EXIT: "failed", MEMORY_EXIT: "memory", ERROR_EXIT: "error",
    FORBIDDEN_EXIT: "forbidden",
    # the signal comes as an exit code from inside the PID namespace, else as a negative code
    **{SIGNALLED_EXIT + sig: "timeout" for sig in _TIMED_OUT}, **{-sig: "timeout" for sig in _TIMED_OUT},
}


def run(code: str, limits: Limits = DEFAULT_LIMITS, tmp_root: str | Path | None = None) -> SandboxResult:
    """Run Python `code` in the sandbox (see the module docstring) and say how it ended.

    Blocking, up to `limits.wall_s` and a little more: call it from a worker thread in async
    code. The throw-away directory is made under `tmp_root` (default: the system's temporary
    directory) and always deleted. Anything else than running to the end without an
    exception is not `passed`."""
    workdir = Path(tempfile.mkdtemp(prefix="uniroute-sandbox-", dir=tmp_root))
    try:
        (workdir / "solution.py").write_text(code, encoding="utf-8")
        uid = _hand_over(workdir)
        token = secrets.token_hex(16).encode()
        with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as verdict:
            argv = [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP, "solution.py", str(uid),
                    f"{limits.cpu_s},{limits.memory_bytes},{limits.processes},{limits.file_bytes},{limits.disk_bytes},"
                    f"{limits.open_files}",
                    f"{PASSED_EXIT},{FAILED_EXIT},{MEMORY_EXIT},{ERROR_EXIT},{FORBIDDEN_EXIT},{SIGNALLED_EXIT}",
                    str(verdict.fileno())]
            try:
                proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=err, env={"PATH": os.defpath, "LC_ALL": "C.UTF-8",
                                                         # tempfile and ~ land in the working directory
                                                         "TMPDIR": str(workdir), "HOME": str(workdir)},
                                        start_new_session=True, close_fds=True, pass_fds=(verdict.fileno(),))
            except OSError as exc:
                return SandboxResult(False, "error", f"could not start the sandbox: {exc}")
            _send_token(proc, token)
            timed_out = _wait(proc, limits.wall_s)
            stderr = _tail(err)
            verdict.seek(0)
            vouched = verdict.read(len(token) + 1) == token
    finally:
        _remove_tree(workdir)
    reason: Reason = "timeout" if timed_out else _BY_EXIT.get(proc.returncode, "error")
    if reason == "passed" and not vouched:
        reason = "error"  # the code exited with the pass's code itself, before its tests' end
    return SandboxResult(reason == "passed", reason, stderr)
