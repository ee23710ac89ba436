"""The thinking cycle on the tiny model, in one run: proposals per second from
prompt to recorded decision, and where the time goes.

Each cycle: build the prompt (constitution, mission, recent outcomes, counted
with the model's tokenizer), generate one grammar-bound proposal with
llama.cpp, record it in the store (SQLite, fsync), evaluate it with the
bundled policies and record the decision. The shares are of the whole cycle:
  prompt      building and counting the prompt
  generation  llama.cpp's completion, grammar-constrained
  policy      PolicyEngine.evaluate (the Decision's own timing)
  store       submit + the decision's transaction and audit records

    python bench/thinking_cycle.py [--cycles N] [--format text|json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from janus_policy.agent.backends import LlamaCppBackend
from janus_policy.agent.missions import MissionBook
from janus_policy.agent.thinking_cycle import ThinkingCycle
from janus_policy.audit import AuditLogs
from janus_policy.config import LlamaCppConfig
from janus_policy.policy.evaluate import PolicyEngine
from janus_policy.policy.load import BUNDLED_POLICIES, load_policy
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.store import Store

# The test suite's tiny GGUF writer (tests/tiny_model.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tiny_model import write_tiny_model

MISSION = """\
id: bench
objective: Look around the work dir and report what is there.
allowed_action_types: [analysis]
proposal_budget: 100000
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--format", choices=("text", "json"), default="text")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="janus-bench-") as d:
        root = Path(d)
        model = write_tiny_model(root / "tiny.gguf")
        (root / "missions").mkdir()
        (root / "missions" / "bench.yaml").write_text(MISSION)
        state = root / "state"
        audit = AuditLogs(state, fsync=True)
        lc = Lifecycle(Store(state), audit, novelty_window_s=0.001)
        missions = MissionBook(state, root / "missions", audit)
        missions.activate("bench", actor="bench")
        backend = LlamaCppBackend(LlamaCppConfig(model_path=model, n_ctx=2048, max_tokens=1280))
        engine = PolicyEngine(load_policy(BUNDLED_POLICIES))
        cycle = ThinkingCycle(
            lc,
            missions,
            backend,
            interval=lambda: 0.0,
            log=lambda *a, **k: None,
            on_proposal=lambda r: None,
            tools=("shell",),
        )
        active = missions.active()
        assert active is not None
        mission, mstate = active
        backend.count_tokens("warm up")  # load the model outside the timing
        spent = {"prompt": 0.0, "generation": 0.0, "policy": 0.0, "store": 0.0}
        began = time.perf_counter()
        for _ in range(args.cycles):
            t0 = time.perf_counter()
            prompt = cycle.prompt(mission, missions.describe(mission, mstate))
            t1 = time.perf_counter()
            proposal = backend.propose(
                prompt, tools=cycle.tools, action_types=mission.allowed_action_types
            )
            assert proposal is not None
            t2 = time.perf_counter()
            record = lc.submit({**proposal, "mission": mission.id}, source="bench")
            decided = lc.decide(record.id, engine)
            t3 = time.perf_counter()
            policy = (decided.decision or {}).get("eval_us", 0.0) / 1e6
            spent["prompt"] += t1 - t0
            spent["generation"] += t2 - t1
            spent["policy"] += policy
            spent["store"] += t3 - t2 - policy
        total = time.perf_counter() - began
        backend.close()
        engine.close()
    rate = args.cycles / total
    shares = {k: v / total for k, v in spent.items()}
    if args.format == "json":
        print(json.dumps({"cycles": args.cycles, "per_s": rate, "shares": shares}, indent=2))
        return 0
    print(f"thinking cycle: {args.cycles} cycles on the tiny model (2 layers, 64 dims), one run")
    print(f"  {rate:.2f} proposals/s from prompt to recorded decision ({1000 / rate:.0f} ms each)")
    for k, v in shares.items():
        print(f"  {k:<11} {v:6.1%}   ({spent[k] / args.cycles * 1000:8.2f} ms per cycle)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
