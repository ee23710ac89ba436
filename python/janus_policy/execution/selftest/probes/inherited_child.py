"""A host process with fds 3 and 4 open starts a sandbox whose shell lists its own
fds; prints {"exit": ..., "fds": the `ls -l` listing} as JSON.

argv[1]: JSON with method, bwrap, uid_range, secret (a file to open as fd 4) and workdir.
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
uid_range = tuple(c["uid_range"]) if c["uid_range"] else None
r = SandboxRunner(SandboxSettings(method=c["method"], bwrap_path=c["bwrap"], uid_range=uid_range))
probe = "ls -l /proc/$$/fd/"  # the shell's own fds, listed by a child
o = r.spawn(["sh", "-c", probe], r.profile(c["workdir"]), Limits(timeout_s=20)).wait()
print(json.dumps({"exit": o.exit_code, "fds": o.stdout.decode(errors="replace")}))
