"""Child processes that do not outlive the command that started them (Linux).

`ringback demo` starts a broker and five `ringback` processes, each in a session of its
own (so a Ctrl-C in the terminal reaches the demo only, which then stops them in order).
When the demo itself is killed (SIGKILL, an OOM kill) nothing would stop them: the
kernel's parent-death signal does. Elsewhere than Linux this is a no-op.
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1
# Looked up once in the parent: between fork and exec the child must not load libraries
# or take locks another thread of the parent may have held at the fork.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """`preexec_fn` for subprocess.Popen: SIGTERM this child when its parent dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
