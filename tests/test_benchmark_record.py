"""benchmarks/record.py: results files carry date, command, commit, machine and load, appended."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_record_writes_provenance_and_appends(tmp_path):
    script = tmp_path / "bench.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
                      "from record import run_recorded\n"
                      "def main():\n    print('| figure |', ' '.join(sys.argv[1:]))\n"
                      "run_recorded(main)\n")
    out = tmp_path / "results" / "r.md"
    for extra in ([], ["--append"]):
        proc = subprocess.run([sys.executable, str(script), "--x", "1", "--record", str(out), *extra],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "| figure | --x 1" in proc.stdout  # printed as usual, options taken out
    text = out.read_text()
    heads = re.findall(r"^_Recorded (\d{4}-\d\d-\d\d \d\d:\d\d UTC) by `python bench\.py --x 1 "
                       r"--record \S+r\.md( --append)?` at commit (\S+); machine: (.+), (\d+) "
                       r"cores; load average \(1/5/15 min\) ([\d./]+) at start, ([\d./]+) at the end; "
                       r"\d+ s wall\._$", text, re.M)
    assert len(heads) == 2, text
    assert heads[0][1] == "" and heads[1][1] == " --append"
    assert int(heads[0][4]) == os.cpu_count() and heads[0][3]
    assert re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?|unknown", heads[0][2])
    assert text.count("| figure | --x 1") == 2
    proc = subprocess.run([sys.executable, str(script), "--record"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 1 and "--record needs a FILE" in proc.stderr
