"""``python -m vlbench``: the command line (and how torchrun starts each process)."""

import sys

from vlbench.cli import main

try:
    main()
except SystemExit as done:
    # A command that joined a process group leaves it on success; after a failure a peer may
    # be gone, so the group is left to the process's exit.
    group = sys.modules.get("vlbench.engine.distributed")
    if group is not None and not done.code:
        group.teardown()
    raise
