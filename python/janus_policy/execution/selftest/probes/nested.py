"""Run inside the sandbox, where no namespace can be created: every runner and the
battery itself must refuse. Prints, as JSON, what each attempt gave.

argv[1]: a bwrap that always fails; argv[2]: the work dir, where a command that
ran would leave a `ran-*` file.
"""

import json
import subprocess
import sys
from pathlib import Path

from janus_policy.execution.sandbox import (
    Limits,
    SandboxRunner,
    SandboxSettings,
    SandboxUnavailable,
)
from janus_policy.execution.selftest import run_selftest

fake, work = sys.argv[1], Path(sys.argv[2])
unshare = subprocess.run(["unshare", "-U", "true"], capture_output=True, check=False)
out: dict[str, object] = {"unshare -U": unshare.returncode}
out["allow_unsandboxed default"] = SandboxSettings().allow_unsandboxed
cases = {
    "auto": SandboxSettings(uid_range=None),
    "bwrap": SandboxSettings(method="bwrap", uid_range=None),
    "native": SandboxSettings(method="native", uid_range=None),
    "auto, broken bwrap": SandboxSettings(bwrap_path=fake, uid_range=None),
}
for label, settings in cases.items():
    runner = SandboxRunner(settings)
    mark = work / ("ran-" + label.replace(" ", "_").replace(",", ""))
    try:
        runner.run(["sh", "-c", 'echo ran > "$1"', "sh", str(mark)], runner.profile(work), Limits())
        out[label] = "RAN with " + runner.method
    except SandboxUnavailable as e:
        out[label] = "refused: " + str(e)
try:
    anything = SandboxRunner(SandboxSettings(uid_range=None, allow_unsandboxed=True))
    run_selftest(anything, only=["exit-code"])
    out["battery, unsandboxed allowed"] = "RAN"
except SandboxUnavailable as e:
    out["battery, unsandboxed allowed"] = "refused: " + str(e)
print(json.dumps(out))
