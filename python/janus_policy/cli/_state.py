"""Options every verb that touches state shares: `--config` and `--state-dir`."""

from __future__ import annotations

import argparse
from pathlib import Path

from janus_policy.config import AgentConfig, load_config


def add_state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="agent.yaml (default: the built-in configuration)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="state dir (default: $JANUS_STATE_DIR, else harness.state_dir of the config)",
    )


def config_of(args: argparse.Namespace) -> AgentConfig:
    return load_config(
        args.config,
        state_dir=args.state_dir,
        policy_dir=getattr(args, "policy", None),
    )
