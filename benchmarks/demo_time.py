"""`labtf demo` end to end under /usr/bin/time -v: test accuracy, wall time, CPU time, peak RSS.

Usage: python benchmarks/demo_time.py [--out runs/demo-time]

Appends a row to ``benchmarks/results/demo_time.md`` (with date, commit, machine and load
average, recorded by benchmarks/record.py). The wall time depends on what else runs on the
machine; the CPU time (user + system) much less.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "demo_time.md"


def main() -> None:
    from record import Recorder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo-time")
    args = ap.parse_args()
    rec = Recorder()
    shutil.rmtree(args.out, ignore_errors=True)
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, str(HERE.parent / "cli.py"),
                           "demo", "--out", args.out], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit("demo failed")
    err = proc.stderr
    acc = re.search(r"demo: test accuracy ([\d.]+)% on (\d+) images", proc.stdout)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", err).group(1)
    secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
    cpu = sum(float(v) for v in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", err))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) / 1e6
    kept = re.search(r"kept the weights of epoch (\d+) \(stage (\d)\)", err)
    row = (f"| {acc.group(1)}% ({acc.group(2)} test images) | {secs:.0f} s | {cpu:.0f} s | "
           f"{rss:.2f} GB | epoch {kept.group(1)} (stage {kept.group(2)}) |")
    text = ("| test accuracy | wall | CPU (user + system) | peak RSS | kept |\n|---|---|---|---|---|\n"
            + row)
    print(text)
    rec.write(RESULTS, text, append=True)


if __name__ == "__main__":
    main()
