"""Results files written by the benchmark that measured them, with their provenance.

Every benchmark writes (or appends to) its ``benchmarks/results/*.md`` file through
:func:`write` or :func:`tee`; each block starts with a line recorded here, not typed:
UTC date, the exact command, git commit (``+dirty`` with uncommitted changes), CPU
model, core count and the load average when the benchmark started and when it wrote.

    from record import Recorder          # benchmarks/ is on sys.path for a script there
    rec = Recorder()                     # at the start: load average, clock, command
    ...
    rec.write("benchmarks/results/x.md", text, append=True)

or, for a script that prints its figures, ``run_recorded(main)`` in place of ``main()``:
``--record FILE`` (and ``--append``) on its command line then records what it printed.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import io
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's machine string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def git_commit() -> str:
    """Short commit of the checkout, ``+dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def command() -> str:
    """The command line that started this process, as it could be typed again."""
    argv = list(sys.argv)
    try:
        argv[0] = os.path.relpath(argv[0], Path.cwd())
    except ValueError:
        pass
    return "python " + shlex.join(argv)


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


class Recorder:
    """Provenance of one benchmark run; create it when the benchmark starts."""

    def __init__(self, cmd: str | None = None) -> None:
        self.started = time.time()
        self.load_start = _load()
        self.command = cmd or command()

    def header(self) -> str:
        """One Markdown paragraph: date, command, commit, machine, load averages, wall time."""
        now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return (f"_Recorded {now} by `{self.command}` at commit {git_commit()}; machine: "
                f"{cpu_model()}, {os.cpu_count()} cores; load average (1/5/15 min) "
                f"{self.load_start} at start, {_load()} at the end; "
                f"{time.time() - self.started:.0f} s wall._\n")

    def write(self, path: str | os.PathLike, text: str, append: bool = False) -> Path:
        """Write (or append) ``text`` under the provenance header; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        block = self.header() + "\n" + text.rstrip("\n") + "\n"
        if append and path.is_file() and path.stat().st_size:
            block = path.read_text().rstrip("\n") + "\n\n" + block
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(block)
        os.replace(tmp, path)
        return path


class _Tee(io.TextIOBase):
    def __init__(self, stream) -> None:
        self.stream, self.buf = stream, io.StringIO()

    def write(self, s: str) -> int:
        self.buf.write(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def tee(path: str | os.PathLike | None, append: bool = False, recorder: Recorder | None = None):
    """Print as usual; on success also record everything printed to ``path`` (None: no file)."""
    if path is None:
        yield None
        return
    rec, out = recorder or Recorder(), _Tee(sys.stdout)
    sys.stdout = out
    try:
        yield rec
    except BaseException:
        sys.stdout = out.stream
        raise
    sys.stdout = out.stream
    rec.write(path, out.buf.getvalue(), append=append)
    print(f"recorded to {path}")


def run_recorded(main) -> None:
    """Call ``main()``; ``--record FILE [--append]`` in ``sys.argv`` records what it printed.

    The two options are taken out of ``sys.argv`` before ``main`` parses it; the recorded
    command keeps them.
    """
    rec = Recorder()
    path, append = None, "--append" in sys.argv
    if append:
        sys.argv.remove("--append")
    if "--record" in sys.argv:
        i = sys.argv.index("--record")
        if i + 1 >= len(sys.argv):
            sys.exit("error: --record needs a FILE (e.g. benchmarks/results/NAME.md)")
        path = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    with tee(path, append, rec):
        main()


def write(path: str | os.PathLike, text: str, append: bool = False,
          recorder: Recorder | None = None) -> Path:
    """:meth:`Recorder.write` with a recorder made now when none is given."""
    return (recorder or Recorder()).write(path, text, append)
