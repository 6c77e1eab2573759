"""The code sandbox (`deliberation_env.tasks.sandbox`): verdicts, limits, and hostile
candidates, under bubblewrap and in the subprocess fallback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest

from deliberation_env.tasks import sandbox
from deliberation_env.tasks.sandbox import (
    SANDBOX_ENV,
    SandboxKind,
    SandboxUnavailable,
    SandboxWarning,
    run_candidate,
    sandbox_kind,
)

HAVE_BWRAP = sandbox._bubblewrap_problem() is None
needs_bwrap = pytest.mark.skipif(
    not HAVE_BWRAP, reason=f"bubblewrap cannot run here: {sandbox._bubblewrap_problem()}"
)
KINDS = [pytest.param("bubblewrap", marks=needs_bwrap), "subprocess"]

# `f()` must return what the check expects; hostile code runs at import or inside f.
EXPECT_TRUE = "def check(candidate):\n    assert candidate() is True\n"
TIMEOUT_S = 2.0


def run(program: str, kind: SandboxKind, tests: str = EXPECT_TRUE, **limits):
    limits.setdefault("timeout_s", TIMEOUT_S)
    return run_candidate(program, tests, "f", kind=kind, **limits)


@pytest.fixture
def fresh_choice(monkeypatch):
    """Forget the cached bwrap probe and the one-time warning, before and after."""
    monkeypatch.setattr(sandbox, "_warned", False)
    sandbox._bubblewrap_problem.cache_clear()
    yield
    sandbox._bubblewrap_problem.cache_clear()


def _run_watching(program: str, kind: SandboxKind, marker: str, timeout_s: float):
    """Run `program` while watching for a process whose command line holds `marker`;
    returns the result and whether such a process was seen while it ran."""
    seen = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if _processes_with(marker):
                seen.set()
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run(program, kind, timeout_s=timeout_s)
    finally:
        done.set()
        watcher.join()
    return result, seen.is_set()


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


# ---------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("kind", KINDS)
def test_verdicts_name_what_happened(kind):
    tests = "def check(candidate):\n    assert candidate(2) == 4\n"
    cases = {
        "def f(x):\n    return 2 * x\n": "passed",
        "def f(x):\n    return x\n": "failed",
        "def f(x) return": "syntax_error",
        "def g(x):\n    return 4\n": "missing_entry_point",
        "def f(x):\n    raise ValueError('no')\n": "failed",
    }
    for program, reason in cases.items():
        result = run(program, kind, tests)
        assert result.reason == reason, (program, result)
        assert result.passed == (reason == "passed")
        assert result.wall_s > 0
    assert run("def f(x):\n    return x\n", kind, tests).detail == "AssertionError"


@pytest.mark.parametrize("kind", KINDS)
def test_exiting_before_the_tests_is_no_pass(kind):
    for program in (
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "def f():\n    raise SystemExit(0)\n",
        "import atexit, os\natexit.register(lambda: os._exit(0))\ndef f():\n    return False\n",
        "print('passed')\nimport os\nos._exit(0)\n",
    ):
        result = run(program, kind)
        assert not result.passed and result.reason in ("no_verdict", "failed"), result
    # Closing every descriptor takes the verdict channel too: no pass, safely.
    close_all = "import os\nos.closerange(0, 1000)\ndef f():\n    return True\n"
    assert run(close_all, kind).reason == "no_verdict"
    # Closing or replacing stdout alone does not hide a real pass.
    assert run(
        "import os, sys\nos.close(1)\nsys.stdout = None\ndef f():\n    return True\n", kind
    ).passed


def test_limits_are_checked():
    with pytest.raises(ValueError, match="limits must be positive"):
        run_candidate("", "", "f", timeout_s=0, kind="subprocess")
    with pytest.raises(ValueError, match="memory_mb >= 64"):
        run_candidate("", "", "f", memory_mb=8, kind="subprocess")
    with pytest.raises(ValueError, match="kind must be"):
        run_candidate("", "", "f", kind="docker")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_the_working_directory_is_private_and_removed(kind, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    program = (
        "import os\n"
        "def f():\n"
        "    open('scratch.txt', 'w').write('x')\n"
        "    return os.path.exists('scratch.txt') and os.listdir('.') == ['scratch.txt']\n"
    )
    assert run(program, kind).passed
    assert list(tmp_path.iterdir()) == []
    # A folder the candidate locks (no permissions) is removed too.
    locked = "import os\nos.makedirs('a/b')\nos.chmod('a', 0)\ndef f():\n    return True\n"
    assert run(locked, kind).passed
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- hostile candidates
@pytest.mark.parametrize("kind", KINDS)
def test_infinite_loop_times_out(kind):
    start = time.perf_counter()
    result = run("def f():\n    while True:\n        pass\n", kind, timeout_s=1.0)
    assert result.reason == "timeout" and not result.passed
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("kind", KINDS)
def test_ignoring_signals_does_not_escape_the_timeout(kind):
    program = (
        "import signal\n"
        "for s in (signal.SIGALRM, signal.SIGXCPU, signal.SIGTERM, signal.SIGINT):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "signal.alarm(0)\n"
        "def f():\n"
        "    while True:\n"
        "        pass\n"
    )
    result = run(program, kind, timeout_s=1.0)
    assert result.reason == "timeout"


@pytest.mark.parametrize("kind", KINDS)
def test_huge_allocation_hits_the_memory_limit(kind):
    program = "def f():\n    block = bytearray(8 << 30)\n    return True\n"
    result = run(program, kind, memory_mb=256)
    assert result.reason == "memory" and not result.passed
    # Growing step by step stops too.
    growing = "def f():\n    xs = []\n    while True:\n        xs.append(bytearray(1 << 24))\n"
    assert run(growing, kind, memory_mb=256).reason == "memory"


@pytest.mark.parametrize("kind", KINDS)
def test_parent_secrets_are_not_visible(kind, monkeypatch):
    monkeypatch.setenv("DELIBERATION_TEST_SECRET", "hunter2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    program = (
        "import os\n"
        "def f():\n"
        "    env = dict(os.environ)\n"
        "    return not any('hunter2' in v or 'sk-test' in v for v in env.values())"
        " and set(env) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'PWD'}\n"
    )
    assert run(program, kind).passed


@pytest.mark.parametrize("kind", KINDS)
def test_crash_and_huge_files_are_stopped(kind):
    segfault = "import ctypes\nctypes.string_at(0)\n"
    assert run(segfault, kind).reason == "killed"
    big = "def f():\n    open('big', 'wb').write(b'x' * (8 << 20))\n    return True\n"
    assert run(big, kind, max_file_mb=1).reason in ("failed", "killed")
    flood = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    assert run(flood, kind, max_file_mb=1).reason in ("failed", "killed", "timeout")


@needs_bwrap
def test_fork_bomb_is_contained_and_leaves_no_process():
    marker = f"{time.time_ns() % 10**9}.{uuid.uuid4().int % 10**6}"
    bomb = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"  # a daemon, detached twice
        f"        os.execv('/usr/bin/sleep', ['sleep', '{marker}'])\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result, seen = _run_watching(bomb, "bubblewrap", marker, timeout_s=2.0)
    assert result.reason == "timeout" and not result.passed
    assert seen  # the detached daemon did start...
    time.sleep(0.2)
    assert _processes_with(marker) == []  # ...and died with the sandbox


@needs_bwrap
def test_process_count_is_limited():
    program = (
        "import os, time\n"
        "def f():\n"
        "    n = 0\n"
        "    for _ in range(200):\n"
        "        try:\n"
        "            pid = os.fork()\n"
        "        except OSError:\n"
        "            break\n"
        "        if pid == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "    return n\n"
    )
    tests = "def check(candidate):\n    assert candidate() <= 20\n"
    result = run(program, "bubblewrap", tests, max_processes=8, timeout_s=10.0)
    assert result.passed, result
    # The sleeping children died with the sandbox.


@needs_bwrap
def test_writes_outside_the_folder_do_not_appear(tmp_path):
    targets = [tmp_path / "outside.txt", Path(__file__).with_name(f"evil-{uuid.uuid4().hex}")]
    program = "def f():\n    return True\n" + "".join(
        f"try:\n    open({str(t)!r}, 'w').write('x')\nexcept OSError:\n    pass\n" for t in targets
    )
    program += (
        "import os\n"
        "for d in ('/usr', '/tmp/..', '/sandbox/in', os.path.dirname(os.__file__)):\n"
        "    try:\n"
        "        open(os.path.join(d, 'evil.txt'), 'w').write('x')\n"
        "    except OSError:\n"
        "        pass\n"
    )
    assert run(program, "bubblewrap").passed
    for target in targets:
        assert not target.exists()
    assert not Path(os.path.dirname(os.__file__), "evil.txt").exists()


@needs_bwrap
def test_only_tmp_and_the_working_directory_are_writable():
    program = (
        "import os\n"
        "def f():\n"
        "    wrote = []\n"
        "    for d in ('/', '/dev', '/dev/shm', '/tmp', '/sandbox', '/sandbox/work', '/sandbox/in',\n"
        "              '/usr', os.path.dirname(os.__file__)):\n"
        "        try:\n"
        "            open(os.path.join(d, 'probe'), 'w').write('x')\n"
        "            wrote.append(d)\n"
        "        except OSError:\n"
        "            pass\n"
        "    open('/dev/null', 'w').write('x')  # devices still work\n"
        "    return wrote == ['/tmp', '/sandbox/work']\n"
    )
    assert run(program, "bubblewrap").passed
    assert not Path(os.path.dirname(os.__file__), "probe").exists()


@needs_bwrap
def test_host_files_are_not_readable():
    program = (
        "def f():\n"
        f"    for path in ({__file__!r}, '/etc/shadow', '/root/.bashrc'):\n"
        "        try:\n"
        "            open(path).read()\n"
        "            return path\n"
        "        except OSError:\n"
        "            pass\n"
        "    return True\n"
    )
    assert run(program, "bubblewrap").passed


@needs_bwrap
def test_os_system_cannot_touch_the_host(tmp_path):
    target = tmp_path / "from-shell.txt"
    program = f"import os\nos.system('echo x > {target}')\ndef f():\n    return True\n"
    run(program, "bubblewrap")
    assert not target.exists()


@needs_bwrap
def test_no_network_to_a_local_listener():
    received: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                received.append(conn.recv(100) or b"(connected)")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    program = (
        "import socket\n"
        "def f():\n"
        "    try:\n"
        f"        s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "        s.sendall(b'leak')\n"
        "        return False\n"
        "    except OSError:\n"
        "        return True\n"
    )
    try:
        assert run(program, "bubblewrap").passed
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert received == []
    # Sanity: the same connection from outside the sandbox does reach a listener.
    check = socket.socket()
    check.bind(("127.0.0.1", 0))
    check.listen()
    with socket.create_connection(check.getsockname(), timeout=1):
        pass
    check.close()


@needs_bwrap
def test_raising_limits_and_killing_the_parent_fail_safely():
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        raise_limits = (
            "import resource\n"
            "def f():\n"
            "    for name in ('RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_CPU', 'RLIMIT_FSIZE'):\n"
            "        r = getattr(resource, name)\n"
            "        try:\n"
            "            resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
            "            return name\n"
            "        except (ValueError, OSError):\n"
            "            pass\n"
            "    return True\n"
        )
        assert run(raise_limits, "bubblewrap").passed
        for program in (
            "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
            f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\n",
            f"import os, signal\nos.kill({sentinel.pid}, signal.SIGKILL)\n",
            "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
            "import os, signal\nos.killpg(0, signal.SIGKILL)\n",
        ):
            result = run(program + "def f():\n    return False\n", "bubblewrap")
            assert not result.passed
        assert sentinel.poll() is None  # neither it nor this test process was reached
    finally:
        sentinel.kill()
        sentinel.wait()


@needs_bwrap
def test_ctypes_cannot_regain_privileges():
    program = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def f():\n"
        "    return os.geteuid() != 0 and libc.setuid(0) != 0 and libc.setresuid(0, 0, 0) != 0\n"
    )
    assert run(program, "bubblewrap").passed


# ---------------------------------------------------------------------- choosing the sandbox
def test_fallback_warns_once_and_still_isolates_the_basics(monkeypatch, fresh_choice):
    monkeypatch.setenv(SANDBOX_ENV, "subprocess")
    monkeypatch.setenv("DELIBERATION_TEST_SECRET", "hunter2")
    with pytest.warns(SandboxWarning, match="WITHOUT network or filesystem isolation"):
        assert sandbox_kind() == "subprocess"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sandbox_kind() == "subprocess"  # no second warning
        tests = "def check(candidate):\n    assert candidate() == 3\n"
        assert run_candidate("def f():\n    return 3\n", tests, "f").passed
        secret = "import os\ndef f():\n    return 3 if 'hunter2' not in str(os.environ) else 0\n"
        assert run_candidate(secret, tests, "f").passed
        loop = "def f():\n    while True:\n        pass\n"
        assert run_candidate(loop, tests, "f", timeout_s=1.0).reason == "timeout"


def test_without_bwrap_auto_falls_back_and_strict_mode_refuses(monkeypatch, fresh_choice):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    monkeypatch.setenv(SANDBOX_ENV, "bubblewrap")
    with pytest.raises(SandboxUnavailable, match="bwrap is not installed.*apt-get install"):
        sandbox_kind()
    with pytest.raises(SandboxUnavailable):
        run_candidate("def f():\n    return True\n", EXPECT_TRUE, "f")
    monkeypatch.setenv(SANDBOX_ENV, "auto")
    with pytest.warns(SandboxWarning, match="bwrap is not installed"):
        assert sandbox_kind() == "subprocess"
    assert run_candidate("def f():\n    return True\n", EXPECT_TRUE, "f").passed
    monkeypatch.setenv(SANDBOX_ENV, "docker")
    with pytest.raises(ValueError, match="DELIBERATION_SANDBOX='docker'"):
        sandbox_kind()


@needs_bwrap
def test_auto_mode_uses_bubblewrap_without_warning(monkeypatch, fresh_choice):
    monkeypatch.delenv(SANDBOX_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sandbox_kind() == "bubblewrap"


def test_batch_keeps_job_order():
    tests = "def check(candidate):\n    assert candidate() == 1\n"
    jobs = [(f"def f():\n    return {i % 2}\n", tests, "f") for i in range(6)]
    results = sandbox.run_candidates(jobs, workers=2, kind="subprocess")
    assert [r.passed for r in results] == [i % 2 == 1 for i in range(6)]


def test_no_candidate_process_survives_a_timeout_in_the_fallback():
    marker = f"{time.time_ns() % 10**9}.{uuid.uuid4().int % 10**6}"
    program = (
        "import os\n"
        "if os.fork() == 0:\n"
        f"    os.execv('/usr/bin/sleep', ['sleep', '{marker}'])\n"
        "def f():\n"
        "    while True:\n"
        "        pass\n"
    )
    result, seen = _run_watching(program, "subprocess", marker, timeout_s=1.0)
    assert result.reason == "timeout" and seen
    time.sleep(0.2)
    assert _processes_with(marker) == []  # same process group: killed with it
