"""A service's compactions, run in a child process at a lower CPU priority than its commits.

In the service's own process a compaction held back the commits beside it for as long as it ran
(a commit's write waited 3.9 s behind a 5.3 s compaction, traced at 10k events/s on 2 cores):
delta-rs runs both on one pool of worker threads, which the compaction's encoding fills. A child
has its own pool, and the kernel serves the commits first. The table's maintenance lease keeps
the child to one compaction at a time among all writers, as in the service itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from secureml.audit.exceptions import LakeError
from secureml.lake.table import Lake

NICENESS = 10  # below the service's commits, above nothing else of the host's that needs the cores


def compact_in_child(lake: Lake, timeout: float = 3600.0) -> int:
    """Compact ``lake`` until nothing is due, in a child process; returns the files it replaced."""
    # The lake's settings go through stdin: storage options may hold credentials, which argv would show.
    settings = json.dumps({"log_dir": str(lake.log_dir), "uri": lake.uri, "storage_options": lake.storage_options})
    done = subprocess.run([sys.executable, "-c", f"from {__name__} import main; main()"], input=settings,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]  # the exception, after its traceback
        raise LakeError(f"compaction in a child process failed (exit {done.returncode}): {reason}")
    return int(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Compact the lake named on stdin (see compact_in_child) and print the files replaced."""
    os.nice(NICENESS)
    settings = json.loads(sys.stdin.read())
    lake = Lake(settings["log_dir"], uri=settings["uri"], storage_options=settings["storage_options"])
    print(lake.compact_all())
