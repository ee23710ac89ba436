"""A host process that starts a sandbox running `sleep MARKER` and prints its pid:
the battery SIGKILLs this process and looks for what is left.

argv[1]: JSON with method, bwrap, run_as, marker and workdir.
"""

import json
import sys

from janus_policy.execution.sandbox import Limits, SandboxRunner, SandboxSettings

c = json.loads(sys.argv[1])
run_as = tuple(c["run_as"]) if c["run_as"] else None
r = SandboxRunner(SandboxSettings(method=c["method"], bwrap_path=c["bwrap"], run_as=run_as))
sb = r.spawn(["sleep", c["marker"]], r.profile(c["workdir"]), Limits(timeout_s=60))
print(sb.pid, flush=True)
sb.wait()
