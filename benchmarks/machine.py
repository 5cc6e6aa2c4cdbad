"""Where and when a benchmark ran: the header line of a results file."""
from __future__ import annotations

import os
import platform
import shlex
import sys
import time


def describe(device: str = "no GPU") -> str:
    """Date, machine, load average and the command line, as one Markdown paragraph."""
    load = os.getloadavg()
    command = shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    return (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {device}; "
            f"load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the end.  \n"
            f"Command: `python {command}`")
