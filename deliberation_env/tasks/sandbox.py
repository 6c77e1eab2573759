"""Run untrusted candidate code against a task's unit tests in a separate, sandboxed process.

`run_candidate(program, tests, entry_point)` answers one question: does `program` pass
`tests` (HumanEval's ``check(candidate)``)? The code never runs in the calling process.
Each candidate gets a fresh temporary directory (removed afterwards), a scrubbed
environment, a wall-clock timeout and CPU, memory, file-size, open-file and process-count
limits. With bubblewrap (``bwrap``) it also gets its own mount, PID, network, IPC and UTS
namespaces: a read-only view of the Python installation and ``/usr``, no network, no view
of the host's files, and no process outliving it. Without bubblewrap it falls back to a
plain subprocess with the resource limits only, and says so once (`SandboxWarning`).
``DELIBERATION_SANDBOX=bubblewrap`` refuses to run code without bubblewrap. docs/sandbox.md
has the details and the limits of each mode.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "DEFAULT_MAX_PROCESSES",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "REASONS",
    "SANDBOX_ENV",
    "SandboxKind",
    "SandboxResult",
    "SandboxUnavailable",
    "SandboxWarning",
    "run_candidate",
    "run_candidates",
    "sandbox_kind",
]

SandboxKind = Literal["bubblewrap", "subprocess"]

SANDBOX_ENV = "DELIBERATION_SANDBOX"
"""Environment variable choosing the sandbox: ``auto`` (default: bubblewrap when it works,
else the subprocess fallback with a warning), ``bubblewrap`` (refuse to run code without
it: `SandboxUnavailable`), ``subprocess`` (always the weaker fallback)."""

DEFAULT_TIMEOUT_S = 5.0
"""Wall-clock seconds per candidate, start-up included. HumanEval's own harness uses 3 s;
the slowest HumanEval canonical solution takes about 1.7 s on 2 heavily loaded cores
(0.15 s is typical)."""
DEFAULT_MEMORY_MB = 1024
"""Address-space limit (``RLIMIT_AS``) per process of the candidate."""
DEFAULT_MAX_PROCESSES = 16
"""Processes (threads included) the candidate may add: enough for a thread pool, not for
a fork bomb."""
DEFAULT_MAX_FILE_MB = 16
"""Largest file the candidate may write (``RLIMIT_FSIZE``); also the size of its /tmp."""

SANDBOX_UID = 65534
"""``nobody``: the user a candidate runs as when the caller is root (bubblewrap mode)."""

REASONS = (
    "passed",
    "failed",
    "syntax_error",
    "missing_entry_point",
    "memory",
    "timeout",
    "no_verdict",
    "killed",
    "sandbox_error",
)
"""The values of `SandboxResult.reason`."""

# Exit codes of the harness (>= 10, so they cannot be mistaken for Python's own 1 and 2).
_FAILED, _SYNTAX, _MISSING, _MEMORY, _EXITED = 10, 11, 12, 13, 14
_EXIT_REASONS = {
    _FAILED: "failed",
    _SYNTAX: "syntax_error",
    _MISSING: "missing_entry_point",
    _MEMORY: "memory",
    _EXITED: "no_verdict",
}
_TAIL_BYTES = 4096
_DETAIL_CHARS = 500
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_INSIDE = "/sandbox"

# The trusted part that runs inside: it reads the nonce from stdin, sets the limits, drops
# to `SANDBOX_UID` when told to, runs the program and the tests, and prints the nonce only
# when `check` returned. An exit(0) before the tests therefore cannot pass. It imports
# nothing beyond os, resource and sys: `json` or `traceback` (through `re`) would double
# the start-up time.
_HARNESS = r"""
import os, resource, sys


def main():
    nonce = sys.stdin.readline().strip()
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    verdict = os.dup(1)  # the program may close or redirect stdout
    indir, entry, limits, uid = sys.argv[1:5]
    with open(os.path.join(indir, "program.py"), encoding="utf-8") as f:
        program = f.read()
    with open(os.path.join(indir, "tests.py"), encoding="utf-8") as f:
        tests = f.read()
    for item in filter(None, limits.split(",")):
        name, _, values = item.partition("=")
        soft, _, hard = values.partition(":")
        resource.setrlimit(getattr(resource, name), (int(soft), int(hard)))
    if uid != "-":
        os.setgroups([])
        os.setgid(int(uid))
        os.setuid(int(uid))

    def fail(code, text=None):
        try:
            if text is None:
                err = sys.exc_info()[1]
                text = "%s: %s" % (type(err).__name__, err) if str(err) else type(err).__name__
            os.write(2, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))
        finally:
            os._exit(code)

    try:
        code = compile(program, "candidate.py", "exec", dont_inherit=True)
    except MemoryError:
        fail(13)
    except BaseException:
        fail(11)
    namespace = {"__name__": "__candidate__"}
    try:
        exec(code, namespace)
        if entry not in namespace:
            fail(12, "the program does not define %r" % entry)
        exec(compile(tests, "tests.py", "exec", dont_inherit=True), namespace)
        namespace["check"](namespace[entry])
    except MemoryError:
        fail(13)
    except SystemExit:
        fail(14, "the program exited before the tests finished")
    except BaseException:
        fail(10)
    try:
        sys.stdout.flush()
    finally:
        try:
            os.write(verdict, ("\n" + nonce + "\n").encode())
        except BaseException:
            os._exit(14)
        os._exit(0)


main()
"""


class SandboxUnavailable(RuntimeError):
    """Bubblewrap was required (``DELIBERATION_SANDBOX=bubblewrap``) and cannot run here."""


class SandboxWarning(RuntimeWarning):
    """Candidate code runs in the weaker subprocess fallback (no namespaces)."""


@dataclass(frozen=True)
class SandboxResult:
    """The verdict on one candidate."""

    passed: bool
    """True only when every test ran and passed."""
    reason: str
    """One of `REASONS`: ``passed``; ``failed`` (a test or the program raised);
    ``syntax_error``; ``missing_entry_point``; ``memory`` (the memory limit);
    ``timeout`` (wall clock or CPU limit); ``no_verdict`` (exited before the tests
    finished); ``killed`` (by a signal: a crash, the file-size limit...);
    ``sandbox_error`` (the sandbox itself failed to start)."""
    wall_s: float
    """Seconds from start to verdict, sandbox start-up and clean-up included."""
    detail: str = ""
    """The last line of the error (``AssertionError``, ``NameError: ...``), or why."""


# ---------------------------------------------------------------------- choosing a sandbox
_warned = False
_warn_lock = threading.Lock()


def _warn_once(message: str) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(message, SandboxWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def _bubblewrap_problem() -> str | None:
    """None when bubblewrap runs a trivial candidate here, else why not."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed"
    program, tests = "def f():\n    return 1\n", "def check(c):\n    assert c() == 1\n"
    probe = run_candidate(program, tests, "f", timeout_s=30.0, kind="bubblewrap")
    if probe.passed:
        return None
    return f"bwrap is installed but cannot build a sandbox here ({probe.reason}: {probe.detail})"


def sandbox_kind() -> SandboxKind:
    """The sandbox `run_candidate` uses now: ``"bubblewrap"`` or ``"subprocess"``.

    Follows `SANDBOX_ENV`. In ``auto`` mode, falling back to ``"subprocess"`` warns once
    (`SandboxWarning`); in ``bubblewrap`` mode a missing or broken bwrap raises
    `SandboxUnavailable`.
    """
    mode = os.environ.get(SANDBOX_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "bubblewrap", "subprocess"):
        raise ValueError(f"{SANDBOX_ENV}={mode!r} is not one of 'auto', 'bubblewrap', 'subprocess'")
    if mode == "subprocess":
        _warn_once(_fallback_message(f"{SANDBOX_ENV}=subprocess", forced=True))
        return "subprocess"
    problem = _bubblewrap_problem()
    if problem is None:
        return "bubblewrap"
    if mode == "bubblewrap":
        raise SandboxUnavailable(
            f"{SANDBOX_ENV}=bubblewrap, but {problem}; install it (Debian/Ubuntu: "
            f"apt-get install bubblewrap) or unset {SANDBOX_ENV} to accept the weaker "
            "subprocess fallback"
        )
    _warn_once(_fallback_message(problem))
    return "subprocess"


def _fallback_message(why: str, forced: bool = False) -> str:
    root = (
        " It runs as root here, so the process-count limit does not apply either."
        if os.geteuid() == 0
        else ""
    )
    advice = (
        f"Unset {SANDBOX_ENV} to use bubblewrap where it works."
        if forced
        else "Install bubblewrap (apt-get install bubblewrap), or set "
        f"{SANDBOX_ENV}=bubblewrap to refuse running code without it."
    )
    return (
        f"Code tasks: {why}; candidate code runs in a plain subprocess with resource "
        "limits only (time, CPU, memory, file size), WITHOUT network or filesystem "
        f"isolation: it can read your files, write where you can, and open connections.{root} "
        + advice
    )


# ---------------------------------------------------------------------- running one candidate
def run_candidate(
    program: str,
    tests: str,
    entry_point: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    max_file_mb: int = DEFAULT_MAX_FILE_MB,
    kind: SandboxKind | None = None,
) -> SandboxResult:
    """Run `program`, then `tests`, then ``check(<entry_point>)``, in a sandbox.

    `kind` None follows `sandbox_kind()`; passing it skips the environment variable.
    Never raises for anything the candidate does: every outcome is a `SandboxResult`.
    """
    if kind is None:
        kind = sandbox_kind()
    if kind not in ("bubblewrap", "subprocess"):
        raise ValueError(f"kind must be 'bubblewrap' or 'subprocess', got {kind!r}")
    if not timeout_s > 0 or memory_mb < 64 or max_processes < 1 or max_file_mb < 1:
        raise ValueError(
            "limits must be positive: timeout_s > 0, memory_mb >= 64 (Python needs room to "
            f"start), max_processes >= 1, max_file_mb >= 1; got {timeout_s=}, {memory_mb=}, "
            f"{max_processes=}, {max_file_mb=}"
        )
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="deliberation-sandbox-"))
    try:
        indir, workdir = tmp / "in", tmp / "work"
        indir.mkdir(mode=0o755)
        workdir.mkdir(mode=0o755)
        for name, text in (("program.py", program), ("tests.py", tests)):
            (indir / name).write_text(text, encoding="utf-8", errors="surrogatepass")
            (indir / name).chmod(0o644)
        drop = kind == "bubblewrap" and os.geteuid() == 0
        if drop:
            os.chown(workdir, SANDBOX_UID, SANDBOX_UID)
        limits = _limits(kind, drop, timeout_s, memory_mb, max_processes, max_file_mb)
        # The harness's arguments: limits as "NAME=soft:hard,...", and the user to become.
        harness_args = [
            entry_point,
            ",".join(f"{name}={soft}:{hard}" for name, soft, hard in limits),
            str(SANDBOX_UID) if drop else "-",
        ]
        if kind == "bubblewrap":
            argv = _bubblewrap_argv(tmp, harness_args, max_file_mb, drop)
            cwd, env = "/", {}
        else:
            argv = [_interpreter(), "-I", "-B", "-S", "-c", _HARNESS, str(indir), *harness_args]
            cwd, env = str(workdir), _clean_env(str(workdir))
        return _run(argv, cwd, env, tmp, timeout_s, start)
    finally:
        _remove(tmp)


def run_candidates(
    jobs: Sequence[tuple[str, str, str]],
    *,
    workers: int = 2,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    kind: SandboxKind | None = None,
) -> list[SandboxResult]:
    """`run_candidate` over ``(program, tests, entry_point)`` jobs, `workers` at a time,
    results in job order."""
    if kind is None:
        kind = sandbox_kind()  # once, in this thread, so a fallback warning is seen

    def one(job: tuple[str, str, str]) -> SandboxResult:
        return run_candidate(*job, timeout_s=timeout_s, memory_mb=memory_mb, kind=kind)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, jobs))


def _run(
    argv: list[str], cwd: str, env: dict[str, str], tmp: Path, timeout_s: float, start: float
) -> SandboxResult:
    nonce = secrets.token_hex(16)
    with open(tmp / "stdout", "wb") as out, open(tmp / "stderr", "wb") as err:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as error:
            return SandboxResult(False, "sandbox_error", time.perf_counter() - start, str(error))
        timed_out = True
        try:
            try:
                assert proc.stdin is not None
                proc.stdin.write(f"{nonce}\n".encode())
                proc.stdin.close()
            except OSError:
                pass  # it died before reading: the exit status says why
            timed_out = not _wait_unreaped(proc.pid, start + timeout_s)
        finally:
            # Kill the whole process group while its leader is still unreaped, so the
            # group id cannot have been reused: stragglers of the fallback die with it.
            # (Under bubblewrap, killing bwrap takes the sandbox's PID namespace with it.)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
    wall = time.perf_counter() - start
    if timed_out:
        return SandboxResult(False, "timeout", wall, f"no verdict within {timeout_s:g} s")
    stdout, stderr = _tail(tmp / "stdout"), _tail(tmp / "stderr")
    lines = stdout.rstrip("\n").splitlines()
    if returncode == 0 and lines and lines[-1] == nonce:
        return SandboxResult(True, "passed", wall)
    detail = _last_line(stderr)
    if returncode in _EXIT_REASONS:
        return SandboxResult(False, _EXIT_REASONS[returncode], wall, detail)
    if returncode == 0:
        return SandboxResult(False, "no_verdict", wall, "exited before the tests finished")
    # A signal shows as -N from a plain subprocess and as 128 + N through bwrap.
    signum = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if signum == signal.SIGXCPU:
        return SandboxResult(False, "timeout", wall, "CPU time limit")
    if signum > 0:
        name = signal.Signals(signum).name if signum in signal.valid_signals() else signum
        return SandboxResult(False, "killed", wall, f"killed by {name}")
    return SandboxResult(False, "sandbox_error", wall, detail or f"exit status {returncode}")


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait until `pid` exits (leaving it unreaped) or `deadline`; True when it exited."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # before Linux 5.3: poll
        pause = 0.001
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            now = time.perf_counter()
            if now >= deadline:
                return False
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, 0.02)
        return True
    try:
        # A pidfd turns readable when the process exits, without reaping it.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            if poller.poll(max(1, math.ceil(left * 1000))):
                return True
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- limits and mounts
def _limits(
    kind: SandboxKind,
    drop: bool,
    timeout_s: float,
    memory_mb: int,
    max_processes: int,
    max_file_mb: int,
) -> list[tuple[str, int, int]]:
    cpu = math.ceil(timeout_s) + 1
    limits = [
        ("RLIMIT_AS", memory_mb << 20, memory_mb << 20),
        # Soft: SIGXCPU; the hard limit a second later is a SIGKILL nothing can ignore.
        ("RLIMIT_CPU", cpu, cpu + 1),
        ("RLIMIT_FSIZE", max_file_mb << 20, max_file_mb << 20),
        ("RLIMIT_NOFILE", 256, 256),
        ("RLIMIT_CORE", 0, 0),
    ]
    nproc = _process_limit(kind, drop, max_processes)
    if nproc is not None:
        limits.append(("RLIMIT_NPROC", nproc, nproc))
    return limits


def _process_limit(kind: SandboxKind, drop: bool, max_processes: int) -> int | None:
    """``RLIMIT_NPROC`` counts the tasks of a user (in its user namespace), not of a
    process tree; the limit is therefore the user's current count plus the allowance."""
    if drop:
        # `nobody` in the host's user namespace: count its tasks there.
        return _count_tasks(SANDBOX_UID) + max_processes + 1
    if kind == "bubblewrap":
        # A fresh user namespace: only the sandbox's own tasks count (bwrap's init and
        # the harness).
        return max_processes + 2
    if os.geteuid() == 0:
        return None  # the kernel never applies RLIMIT_NPROC to root
    return _count_tasks(os.getuid()) + max_processes + 1


def _count_tasks(uid: int) -> int:
    """Tasks (threads) of processes owned by `uid`; a process's /proc folder is owned by
    its user, so only that user's processes are opened."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"{entry.path}/status", encoding="ascii", errors="replace") as f:
                threads = [ln for ln in f if ln.startswith("Threads:")]
        except OSError:
            continue
        total += int(threads[0].split(":")[1]) if threads else 1
    return total


def _interpreter() -> str:
    """The base interpreter (not a venv's): the sandbox mounts only the base installation."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base)


def _clean_env(home: str) -> dict[str, str]:
    """No inherited variables (tokens, keys, proxies): only what Python needs."""
    return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}


def _python_roots(interpreter: str) -> list[str]:
    roots = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    roots.add(os.path.dirname(os.path.dirname(interpreter)))
    system = tuple(d + "/" for d in _SYSTEM_DIRS)
    return sorted(r for r in roots if r != "/" and not (r + "/").startswith(system))


def _bubblewrap_argv(tmp: Path, harness_args: list[str], max_file_mb: int, drop: bool) -> list[str]:
    bwrap = shutil.which("bwrap") or "bwrap"
    interpreter = _interpreter()
    argv = [bwrap, "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in _clean_env(f"{_INSIDE}/work").items():
        argv += ["--setenv", key, value]
    if drop:
        # Root: no user namespace (it would map the candidate to the host's root, whom
        # RLIMIT_NPROC never limits); the harness drops to `nobody` instead, keeping only
        # the two capabilities it needs for that.
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        argv += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-all"]
    argv += ["--hostname", "sandbox"]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for root in _python_roots(interpreter):
        # The folders above a root may be private (/root is 0700): make them passable.
        parents = Path(root).parents
        for parent in reversed([p for p in parents if str(p) != "/"]):
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", root, root]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(max_file_mb << 20), "--tmpfs", "/tmp"]
    argv += ["--perms", "0755", "--dir", _INSIDE]
    argv += ["--ro-bind", str(tmp / "in"), f"{_INSIDE}/in"]
    argv += ["--bind", str(tmp / "work"), f"{_INSIDE}/work", "--chdir", f"{_INSIDE}/work"]
    # Without these the root and /dev tmpfs (half the RAM each) would be writable in a
    # user namespace; device files stay usable on a read-only /dev.
    argv += ["--remount-ro", "/", "--remount-ro", "/dev"]
    argv += [interpreter, "-I", "-B", "-S", "-c", _HARNESS, f"{_INSIDE}/in", *harness_args]
    return argv


# ---------------------------------------------------------------------- small helpers
def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _TAIL_BYTES))
        return f.read().decode("utf-8", errors="replace")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:_DETAIL_CHARS] if lines else ""


def _remove(path: Path) -> None:
    def make_writable(func: object, name: str, exc: object) -> None:
        # A candidate may leave a folder without write or search permission.
        try:
            os.chmod(os.path.dirname(name), 0o700)
            os.chmod(name, 0o700)
            if os.path.isdir(name):
                shutil.rmtree(name, ignore_errors=True)
            else:
                os.unlink(name)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable)
