"""A host process that starts a sandbox running `sleep MARKER` and prints its pid:
the battery SIGKILLs this process and looks for what is left.

argv[1]: JSON with method, bwrap, uid_range, marker and workdir.
"""

import json
import sys

from janus_policy.execution.sandbox import Limits, SandboxRunner, SandboxSettings

c = json.loads(sys.argv[1])
uid_range = tuple(c["uid_range"]) if c["uid_range"] else None
r = SandboxRunner(SandboxSettings(method=c["method"], bwrap_path=c["bwrap"], uid_range=uid_range))
sb = r.spawn(["sleep", c["marker"]], r.profile(c["workdir"]), Limits(timeout_s=60))
print(sb.pid, flush=True)
sb.wait()
