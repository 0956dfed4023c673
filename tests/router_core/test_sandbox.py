"""The sandbox stops harmful code and grades it wrong, leaving nothing behind; good code passes.

Every harmful program here is bounded even if a layer failed (a fork loop of 200 children
that sleep 30 s, a file name no one else uses), and each test checks that nothing remains."""
from __future__ import annotations

import ctypes
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from router_core.sandbox import STDERR_TAIL_CHARS, Limits, run

LIMITS = Limits(cpu_s=2, wall_s=10.0)


def landlock_abi() -> int:
    """The kernel's Landlock version (landlock_create_ruleset's version query); 0 without it."""
    return max(ctypes.CDLL(None).syscall(444, None, 0, 1), 0)


def processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is under `directory` (the sandboxes' dirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(str(directory)):
                    found.append(int(entry.name))
            except OSError:
                continue  # ended meanwhile, or not ours to inspect
    return found


@pytest.fixture
def sandbox(tmp_path):
    """run() with its throw-away directories under tmp_path; afterwards no process may be
    left running there and the directories must be gone."""
    def go(code: str, limits: Limits = LIMITS):
        return run(code, limits, tmp_root=tmp_path)

    yield go
    assert processes_in(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_correct_code_passes_and_a_failing_assert_fails(sandbox):
    assert sandbox("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n").reason == "passed"
    result = sandbox("assert sum([1, 2]) == 4, 'sum is off'\n")
    assert (result.passed, result.reason) == (False, "failed")
    assert "AssertionError: sum is off" in result.stderr


@pytest.mark.parametrize("code", [
    "raise ValueError('boom')\n",
    "def f(:\n",
    "import sys\nsys.exit(0)\nassert False\n",  # exiting before the tests ran is no pass
    "import os\nos._exit(0)\n",
])
def test_code_that_errors_or_exits_early_does_not_pass(sandbox, code):
    result = sandbox(code)
    assert (result.passed, result.reason) == (False, "error")


def test_a_socket_connect_to_local_redis_is_refused(sandbox):
    code = "import socket\ns = socket.create_connection(('127.0.0.1', 6379), timeout=2)\ns.sendall(b'PING\\r\\n')\n"
    result = sandbox(code)
    assert (result.passed, result.reason) == (False, "forbidden")
    assert "sandbox: refused socket" in result.stderr


@pytest.mark.parametrize("forgery", [
    "import os\nos._exit(17)\n",  # the exit code that said 'passed'
    "import os, sys\nos._exit(int(sys.argv[4].split(',')[0]))\n",
    "import sys\nbootstrap = sys.modules['__main__']\nbootstrap.FAILED = bootstrap.ERROR = bootstrap.PASSED\n",
    "import sys\nsys.audit('sandbox.end')\n",  # the tests' end, announced before them
], ids=["exit-17", "exit-code-from-argv", "failure-codes-rebound", "early-end"])
def test_the_code_cannot_forge_a_pass(sandbox, forgery):
    result = sandbox(forgery + "assert 1 == 2, 'the tests fail'\n")
    assert not result.passed


# what an answer would do to turn the audit hook off, were its settings the bootstrap's globals
TURN_HOOK_OFF = ("import sys\nbootstrap = sys.modules['__main__']\n"
                 "bootstrap.REFUSED, bootstrap.REFUSED_PREFIXES, bootstrap.REFUSED_IMPORTS = set(), ('-',), set()\n")


def test_the_audit_hook_cannot_be_turned_off(sandbox):
    result = sandbox(TURN_HOOK_OFF + "import os\nif os.fork() == 0:\n    os._exit(0)\n")
    assert (result.passed, result.reason) == (False, "forbidden")
    assert "sandbox: refused os.fork" in result.stderr


def test_a_unix_socket_of_the_machine_stays_out_of_reach(sandbox, tmp_path_factory):
    """The network namespace does not cover sockets in the file system (a local database's)."""
    path = tmp_path_factory.mktemp("service") / "service.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        path.chmod(0o777)
        server.listen()
        server.setblocking(False)
        result = sandbox(TURN_HOOK_OFF + f"import socket\nsocket.socket(socket.AF_UNIX).connect({str(path)!r})\n")
        assert (result.passed, result.reason) == (False, "forbidden")
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected


@pytest.mark.parametrize("code", [
    # each would start up to 200 sleeping processes were it not stopped
    "import os, time\nfor _ in range(200):\n    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)\n",
    "import subprocess\nfor _ in range(200):\n    subprocess.Popen(['sleep', '30'])\n",
    "import os\nfor _ in range(200):\n    os.system('sleep 30 &')\n",
    "import multiprocessing, time\nfor _ in range(200):\n    multiprocessing.Process(target=time.sleep, args=(30,)).start()\n",
    "import ctypes\nlibc = ctypes.CDLL(None)\nfor _ in range(200):\n    if libc.fork() == 0:\n        libc.sleep(30)\n",
])
def test_a_fork_loop_is_stopped_and_leaves_no_process(sandbox, code):
    result = sandbox(code)
    assert (result.passed, result.reason) == (False, "forbidden")


@pytest.mark.parametrize("code", ["while True:\n    pass\n", "import time\ntime.sleep(3600)\n"])
def test_code_that_never_ends_is_killed(sandbox, code):
    result = sandbox(code, Limits(cpu_s=1, wall_s=3.0))
    assert (result.passed, result.reason) == (False, "timeout")


def test_allocating_10_gb_is_stopped(sandbox):
    result = sandbox("block = bytearray(10 * 1024 ** 3)\nassert len(block) > 0\n")
    assert (result.passed, result.reason) == (False, "memory")


@pytest.mark.parametrize("how", [
    "open(TARGET, 'w').write('escaped')",
    "import os\nos.close(os.open(TARGET, os.O_WRONLY | os.O_CREAT))",
    "import os\nos.symlink(TARGET, 'link')\nopen('link', 'w').write('escaped')",
    "import os\nfd = os.open('/tmp', os.O_RDONLY)\nos.close(os.open(os.path.basename(TARGET), os.O_WRONLY | os.O_CREAT, dir_fd=fd))",
])
def test_writing_outside_the_working_directory_is_refused(sandbox, how):
    target = Path(f"/tmp/uniroute-sandbox-escape-{uuid.uuid4().hex}")
    try:
        result = sandbox(f"TARGET = {str(target)!r}\n{how}\n")
        # refused by Landlock (PermissionError) or, on a kernel without it, by the audit hook
        assert not result.passed
        assert "PermissionError" in result.stderr or "sandbox: refused" in result.stderr
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


@pytest.mark.skipif(landlock_abi() < 1, reason="the kernel has no Landlock")
@pytest.mark.parametrize("mode", [0o644, 0o600], ids=["as-sqlite-makes-it", "owner-only"])
def test_files_outside_the_working_directory_cannot_be_read(sandbox, tmp_path_factory, mode):
    secret = tmp_path_factory.mktemp("gateway") / "registry.db"
    secret.write_text("sk-upstream-key")
    secret.chmod(mode)
    result = sandbox(f"print(open({str(secret)!r}).read())\n")
    assert (result.passed, result.reason) == (False, "error")
    assert "PermissionError" in result.stderr


def test_the_files_the_code_writes_are_bounded_as_a_whole(sandbox):
    """Not only each file (RLIMIT_FSIZE): a loop of files must not fill the machine's disk."""
    code = "for i in range(24):\n    with open(f'part-{i}', 'wb') as fh:\n        fh.write(bytes(1 << 20))\n"
    result = sandbox(code, Limits(cpu_s=5, wall_s=10.0, file_bytes=1 << 20, disk_bytes=8 << 20))
    assert (result.passed, result.reason) == (False, "error")
    assert "No space left on device" in result.stderr


def test_the_code_may_write_inside_its_own_directory(sandbox):
    code = ("import os\nos.mkdir('data')\nwith open('data/x.txt', 'w') as fh:\n    fh.write('kept')\n"
            "assert open('data/x.txt').read() == 'kept'\nos.remove('data/x.txt')\n")
    assert sandbox(code).reason == "passed"


def test_temporary_files_go_to_the_working_directory(sandbox):
    code = "import tempfile\nwith tempfile.NamedTemporaryFile('w') as fh:\n    fh.write('x')\n"
    assert sandbox(code).reason == "passed"


def test_runs_side_by_side_do_not_disturb_each_other(sandbox):
    """Each run has its own user: their process limits count their own processes only."""
    code = "import threading\nts = [threading.Thread(target=sum, args=([1],)) for _ in range(20)]\n" \
           "[t.start() for t in ts]\n[t.join() for t in ts]\n"
    with ThreadPoolExecutor(6) as pool:
        reasons = list(pool.map(lambda _: sandbox(code).reason, range(12)))
    assert reasons == ["passed"] * 12


def test_flooding_stderr_is_bounded_by_the_file_size_limit(sandbox):
    result = sandbox("import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n", Limits(cpu_s=5, wall_s=10.0, file_bytes=1 << 20))
    assert (result.passed, result.reason) == (False, "error")
    assert len(result.stderr) <= STDERR_TAIL_CHARS


@pytest.mark.skipif(os.geteuid() != 0, reason="the user change and the namespace need root here")
def test_as_root_the_code_runs_as_a_user_of_its_own_in_an_empty_network_namespace(sandbox):
    code = ("import os, resource\n"
            "assert os.getuid() in range(2_000_000, 3_000_000) and os.geteuid() == os.getuid()\n"
            "interfaces = [line.split(':')[0].strip() for line in open('/proc/self/net/dev').read().splitlines()[2:]]\n"
            "assert interfaces == ['lo'], interfaces\n"
            "assert resource.getrlimit(resource.RLIMIT_NPROC)[0] == 32\n"
            "assert resource.getrlimit(resource.RLIMIT_AS)[0] == 1 << 30\n"
            "import json, math, collections  # the interpreter's own modules still load\n")
    result = sandbox(code, Limits(cpu_s=2, wall_s=10.0, processes=32, memory_bytes=1 << 30))
    assert result.reason == "passed", result.stderr
