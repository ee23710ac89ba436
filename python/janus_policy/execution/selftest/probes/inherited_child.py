"""A host process with fds 3 and 4 open starts a sandbox whose shell lists its own
fds; prints {"exit": ..., "fds": the `ls -l` listing} as JSON.

argv[1]: JSON with method, bwrap, run_as, secret (a file to open as fd 4) and workdir.
"""

import json
import os
import sys

from janus_policy.execution.sandbox import Limits, SandboxRunner, SandboxSettings

c = json.loads(sys.argv[1])
# As a shell that ran `exec 3</ 4<SECRET` would hand them on: fds 3 and 4, inheritable.
os.dup2(os.open("/", os.O_RDONLY | os.O_DIRECTORY), 3)
os.dup2(os.open(c["secret"], os.O_RDONLY), 4)
for fd in (3, 4):
    os.set_inheritable(fd, True)
run_as = tuple(c["run_as"]) if c["run_as"] else None
r = SandboxRunner(SandboxSettings(method=c["method"], bwrap_path=c["bwrap"], run_as=run_as))
probe = "ls -l /proc/$$/fd/"  # the shell's own fds, listed by a child
o = r.spawn(["sh", "-c", probe], r.profile(c["workdir"]), Limits(timeout_s=20)).wait()
print(json.dumps({"exit": o.exit_code, "fds": o.stdout.decode(errors="replace")}))
