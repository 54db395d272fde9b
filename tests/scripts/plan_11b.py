"""Run by tests/test_plan.py: `mesh-t5 plan` for T5-11B on a 512-device mesh, timed from a cold start.

Usage: python tests/scripts/plan_11b.py; prints "SECONDS <wall time>" and exits with the command's code.
"""

import sys
import time

start = time.time()
from mesh_t5 import cli  # noqa: E402 (the import is part of what is timed)

code = cli.main(["plan", "--model=t5-11b", "--mesh_shape=data:16,model:32"])
print("SECONDS", time.time() - start)
sys.exit(code)
