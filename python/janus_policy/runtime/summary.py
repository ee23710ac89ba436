"""The daily summary (DESIGN.md §7): what was proposed on one day, how it was
decided and how it ended, what the executions cost, which rules took part,
and which escalations still wait for a human.

The day is a calendar day in local time, and a proposal belongs to the day it
was created. Escalations waiting are those in state `escalated` now, whatever
their day. Everything taken from proposals (commands, reasons, names) is
attacker-controlled text: the renderers replace control characters and the
HTML form escapes it; the JSON-ready dict keeps the data as recorded.
"""

from __future__ import annotations

import html
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock
from typing import Any

from janus_policy.policy.load import DECISIONS
from janus_policy.proposals.states import FINISHED, STATES
from janus_policy.proposals.store import Record, Store
from janus_policy.text import clean, what

#: A proposal rejected before the policy saw it (a duplicate, the relief
#: valve) or not decided yet.
UNDECIDED = "undecided"
TOP_RULES = 10
#: Upper edges (seconds) of the wall-time histogram's bins; the last bin is open.
WALL_BINS = ((0.01, "<10 ms"), (0.1, "10-100 ms"), (1.0, "0.1-1 s"), (10.0, "1-10 s"))
WALL_OVER = "≥10 s"


@dataclass(frozen=True)
class RuleUse:
    id: str
    decision: str
    where: str  # path:line of the rule
    decisions: int  # how many decisions it took part in


@dataclass(frozen=True)
class Waiting:
    id: str
    what: str
    approvers: str | None
    created_at: float
    expires_at: float | None
    reason: str | None


@dataclass(frozen=True)
class Resources:
    """Summed over the Outcomes of the day's executions."""

    outcomes: int
    cpu_s: float  # user + sys
    wall_s: float
    wall_p50_s: float | None
    wall_max_s: float | None
    max_rss_kb: int | None
    output_bytes: int  # stdout + stderr as written, kept or not
    limits: dict[str, int]  # limit that ended an execution → how many
    wall_histogram: list[tuple[str, int]]


@dataclass(frozen=True)
class ToolUse:
    executions: int
    finished: int
    succeeded: int
    cpu_s: float
    wall_s: float


@dataclass(frozen=True)
class Summary:
    day: date
    timezone: str
    start: float  # the day's bounds, epoch seconds: [start, end)
    end: float
    generated_at: float
    proposals: int
    by_decision: dict[str, int]
    by_state: dict[str, int]
    succeeded: int
    finished: int  # executions that ended (succeeded, failed, timed out, killed)
    resources: Resources
    top_rules: list[RuleUse]
    rules_fired: int  # distinct rules, of which top_rules are the most used
    waiting: list[Waiting]
    by_tool: dict[str, ToolUse]

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.finished if self.finished else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "timezone": self.timezone,
            "from": _iso(self.start),
            "to": _iso(self.end),
            "generated_at": _iso(self.generated_at),
            "proposals": self.proposals,
            "by_decision": self.by_decision,
            "by_state": self.by_state,
            "success": {
                "succeeded": self.succeeded,
                "finished": self.finished,
                "rate": self.success_rate,
            },
            "resources": {
                **asdict(self.resources),
                "wall_histogram": [
                    {"bin": b, "count": n} for b, n in self.resources.wall_histogram
                ],
            },
            "top_rules": [asdict(r) for r in self.top_rules],
            "rules_fired": self.rules_fired,
            "escalations_waiting": [
                {**asdict(w), "created_at": _iso(w.created_at), "expires_at": _iso(w.expires_at)}
                for w in self.waiting
            ],
            "by_tool": {tool: asdict(use) for tool, use in self.by_tool.items()},
        }


# ---- building ----


def day_bounds(day: date) -> tuple[float, float, str]:
    """The local day's [start, end) in epoch seconds (23 or 25 hours long on a
    daylight-saving change) and its time zone as text."""
    start = datetime.combine(day, clock()).astimezone()
    end = datetime.combine(day + timedelta(days=1), clock()).astimezone()
    return start.timestamp(), end.timestamp(), _zone(start)


def _zone(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta()
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    utc = f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    name = moment.tzname()
    return utc if not name or name == "UTC" else f"{name}, {utc}"


def build_summary(store: Store, day: date) -> Summary:
    start, end, zone = day_bounds(day)
    records = [r for r in store.proposals(since=start, newest_first=False) if r.created_at < end]
    waiting = store.proposals(states=("escalated",), newest_first=False)
    by_state = Counter(r.state for r in records)
    rules, rules_fired = _top_rules(records)
    return Summary(
        day=day,
        timezone=zone,
        start=start,
        end=end,
        generated_at=time.time(),
        proposals=len(records),
        by_decision=_by_decision(records),
        by_state={s: by_state[s] for s in STATES},
        succeeded=by_state["succeeded"],
        finished=sum(by_state[s] for s in FINISHED),
        resources=_resources([r.outcome for r in records if r.outcome]),
        top_rules=rules,
        rules_fired=rules_fired,
        waiting=[
            Waiting(w.id, what(w.proposal), w.approvers, w.created_at, w.expires_at, w.reason)
            for w in waiting
        ],
        by_tool=_by_tool(records),
    )


def _by_decision(records: list[Record]) -> dict[str, int]:
    counts = Counter((r.decision or {}).get("decision", UNDECIDED) for r in records)
    return {d: counts[d] for d in (*DECISIONS, UNDECIDED)}


def _top_rules(records: list[Record]) -> tuple[list[RuleUse], int]:
    uses: Counter[tuple[str, str, str]] = Counter()
    for r in records:
        matched = (r.decision or {}).get("matched") or []
        # A rule counts once per decision, however many of its parts matched.
        uses.update(
            {(m["id"], m.get("decision", "?"), f"{m.get('path')}:{m.get('line')}") for m in matched}
        )
    ranked = sorted(uses.items(), key=lambda kv: (-kv[1], kv[0]))
    return [RuleUse(i, d, w, n) for (i, d, w), n in ranked[:TOP_RULES]], len(uses)


def _output_bytes(o: dict[str, Any]) -> int:
    return sum(int(o.get(f"{s}_bytes", len(o.get(s) or ""))) for s in ("stdout", "stderr"))


def _resources(outcomes: list[dict[str, Any]]) -> Resources:
    walls = [float(o.get("wall_s", 0.0)) for o in outcomes]
    rss = [int(o["max_rss_kb"]) for o in outcomes if o.get("max_rss_kb") is not None]
    limits = Counter(str(o["limit"]) for o in outcomes if o.get("limit") not in (None, "none"))
    return Resources(
        outcomes=len(outcomes),
        cpu_s=sum(_cpu(o) for o in outcomes),
        wall_s=sum(walls),
        wall_p50_s=statistics.median(walls) if walls else None,
        wall_max_s=max(walls, default=None),
        max_rss_kb=max(rss, default=None),
        output_bytes=sum(_output_bytes(o) for o in outcomes),
        limits=dict(sorted(limits.items())),
        wall_histogram=_histogram(walls),
    )


def _cpu(o: dict[str, Any]) -> float:
    return float(o.get("user_s", 0.0)) + float(o.get("sys_s", 0.0))


def _histogram(walls: Iterable[float]) -> list[tuple[str, int]]:
    counts = Counter(
        next((label for edge, label in WALL_BINS if w < edge), WALL_OVER) for w in walls
    )
    return [(label, counts[label]) for label in (*(lb for _, lb in WALL_BINS), WALL_OVER)]


def _by_tool(records: list[Record]) -> dict[str, ToolUse]:
    ran: dict[str, list[Record]] = {}
    for r in records:
        if r.executions:
            ran.setdefault(r.tool, []).append(r)
    return {
        tool: ToolUse(
            executions=sum(r.executions for r in rs),
            finished=sum(r.state in FINISHED for r in rs),
            succeeded=sum(r.state == "succeeded" for r in rs),
            cpu_s=sum(_cpu(r.outcome) for r in rs if r.outcome),
            wall_s=sum(float(r.outcome.get("wall_s", 0.0)) for r in rs if r.outcome),
        )
        for tool, rs in sorted(ran.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    }


# ---- what the renderers share ----


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t).astimezone().isoformat()


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M")


def _rate(s: Summary) -> str:
    if s.success_rate is None:
        return "n/a (no execution finished)"
    return f"{s.success_rate:.1%} ({s.succeeded} succeeded of {s.finished} executions finished)"


def _seconds(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _decisions_shown(s: Summary) -> list[tuple[str, int]]:
    """approve, escalate and deny always; undecided when there are any."""
    return [(d, n) for d, n in s.by_decision.items() if n or d != UNDECIDED]


def _states_shown(s: Summary) -> list[tuple[str, int]]:
    return [(st, n) for st, n in s.by_state.items() if n]


def _limits(s: Summary) -> str:
    return ", ".join(f"{k} {n}" for k, n in s.resources.limits.items()) or "none"


def _expiry(w: Waiting, now: float) -> str:
    if w.expires_at is None:
        return "no expiry"
    late = " (overdue)" if w.expires_at < now else ""
    return f"expires {_when(w.expires_at)}{late}"


# ---- text ----


def render_text(s: Summary) -> str:
    r = s.resources
    lines = [
        f"Janus Policy daily summary: {s.day.isoformat()} (local time, {s.timezone})",
        "",
        f"Proposals: {s.proposals}",
        "  by decision: " + ", ".join(f"{d} {n}" for d, n in _decisions_shown(s)),
        "  by state:    " + (", ".join(f"{st} {n}" for st, n in _states_shown(s)) or "-"),
        f"Success rate: {_rate(s)}",
        "",
        f"Resources ({_count(r.outcomes, 'sandboxed execution')}):",
        f"  CPU (user+sys) {_seconds(r.cpu_s)}; wall {_seconds(r.wall_s)} total, "
        f"p50 {_seconds(r.wall_p50_s)}, max {_seconds(r.wall_max_s)}",
        f"  max RSS {_bytes(None if r.max_rss_kb is None else r.max_rss_kb * 1024)}; "
        f"output {_bytes(r.output_bytes)}",
        f"  limits that fired: {_limits(s)}",
        "",
        f"Top rules fired ({len(s.top_rules)} of {s.rules_fired}; decisions each took part in):",
    ]
    lines += [
        f"  {u.decisions:>4}  {clean(u.id)}  {clean(u.decision)}  {clean(u.where)}"
        for u in s.top_rules
    ] or ["  none"]
    lines += ["", "Executions by tool:"]
    lines += [
        f"  {clean(tool)}: {_count(u.executions, 'execution')}, {u.succeeded} of "
        f"{u.finished} finished succeeded; CPU {_seconds(u.cpu_s)}, wall {_seconds(u.wall_s)}"
        for tool, u in s.by_tool.items()
    ] or ["  none"]
    lines += ["", f"Escalations waiting now (any day): {len(s.waiting)}"]
    for w in s.waiting:
        lines.append(f"  {w.id}  {clean(w.what, 70)}")
        lines.append(
            f"  {'':<{len(w.id)}}  approvers {clean(w.approvers) or '-'}; "
            f"{_expiry(w, s.generated_at)}; {clean(w.reason, 90)}"
        )
    return "\n".join(lines) + "\n"


# ---- HTML ----

PALETTE = {
    "approve": "#2e7d32",
    "escalate": "#b26a00",
    "deny": "#c62828",
    UNDECIDED: "#757575",
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "timed_out": "#ad1457",
    "killed": "#8e24aa",
    "escalated": "#b26a00",
    "rejected": "#6d4c41",
}
DEFAULT_COLOUR = "#1565c0"

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d1d1f; background: #fafafa;
       max-width: 62rem; margin: 1.5rem auto; padding: 0 1rem; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } h2 { font-size: 1.1rem; margin-top: 1.8rem; }
.sub { color: #555; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: .7rem; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .5rem .8rem;
        min-width: 9rem; }
.card b { display: block; font-size: 1.3rem; } .card span { color: #555; font-size: .85rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5rem; }
figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: .3rem; }
table { border-collapse: collapse; background: #fff; }
th, td { border-bottom: 1px solid #e3e3e3; padding: .25rem .6rem; text-align: left;
         vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 13px/1.3 ui-monospace, monospace; overflow-wrap: anywhere; }
code.id { white-space: nowrap; }
svg text { font: 12px system-ui, sans-serif; fill: #1d1d1f; }
"""


def _e(text: str | None, width: int | None = None) -> str:
    return html.escape(clean(text, width))


def _figure(caption: str, width: int, height: int, parts: list[str]) -> str:
    return (
        f"<figure><figcaption>{_e(caption)}</figcaption>"
        f'<svg role="img" aria-label="{_e(caption)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(parts)}</svg></figure>'
    )


def _bar_chart(caption: str, items: list[tuple[str, int]]) -> str:
    """Horizontal bars, each labelled and with its count written beside it."""
    row, label_w, bar_w = 22, 110, 220
    top = max((n for _, n in items), default=0) or 1
    parts = []
    for i, (label, n) in enumerate(items):
        y = i * row + 2
        w = round(bar_w * n / top)
        colour = PALETTE.get(label, DEFAULT_COLOUR)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{row - 6}" fill="{colour}"/>'
            f'<text x="{label_w + w + 5}" y="{y + 15}">{n}</text>'
        )
    return _figure(caption, label_w + bar_w + 50, row * len(items) + 4, parts)


def _histogram_chart(bins: list[tuple[str, int]]) -> str:
    """Columns with their counts above and their bins below."""
    col, bar_w, base = 64, 48, 90
    top = max((n for _, n in bins), default=0) or 1
    parts = []
    for i, (label, n) in enumerate(bins):
        x = i * col + 8
        h = round(70 * n / top)
        mid = x + bar_w / 2
        parts.append(
            f'<rect x="{x}" y="{base - h}" width="{bar_w}" height="{h}" fill="{DEFAULT_COLOUR}"/>'
            f'<text x="{mid}" y="{base - h - 4}" text-anchor="middle">{n}</text>'
            f'<text x="{mid}" y="{base + 15}" text-anchor="middle">{_e(label)}</text>'
        )
    return _figure("Wall time of executions", col * len(bins) + 8, base + 20, parts)


def _meter(n: int, top: int) -> str:
    w = round(120 * n / (top or 1))
    return (
        f'<svg width="124" height="12" aria-hidden="true">'
        f'<rect width="{w}" height="12" fill="{DEFAULT_COLOUR}"/></svg>'
    )


def _where(where: str) -> str:
    """A rule's file name and line, its full path on hover."""
    return f'<code title="{_e(where)}">{_e(where.rsplit("/", 1)[-1])}</code>'


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{html.escape(value)}</b><span>{html.escape(label)}</span></div>'


def _table(header: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    """Rows of HTML that is already escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(s: Summary) -> str:
    """One self-contained page: inline CSS and SVG, no script, nothing fetched
    (its Content-Security-Policy forbids both, should escaping ever fail)."""
    r = s.resources
    rss = None if r.max_rss_kb is None else r.max_rss_kb * 1024
    cards = "".join(
        [
            _card(str(s.proposals), "proposals"),
            _card(
                "n/a" if s.success_rate is None else f"{s.success_rate:.1%}",
                f"success rate: {s.succeeded} of {s.finished} finished",
            ),
            _card(str(r.outcomes), "sandboxed executions"),
            _card(_seconds(r.cpu_s), "CPU (user+sys)"),
            _card(_seconds(r.wall_s), "wall time, total"),
            _card(_bytes(rss), "max RSS"),
            _card(_bytes(r.output_bytes), "output"),
        ]
    )
    top = max((u.decisions for u in s.top_rules), default=0)
    rules = _table(
        ["decisions", "", "rule", "decides", "where"],
        [
            [
                str(u.decisions),
                _meter(u.decisions, top),
                f"<code>{_e(u.id)}</code>",
                _e(u.decision),
                _where(u.where),
            ]
            for u in s.top_rules
        ],
        {0},
    )
    tools = _table(
        ["tool", "executions", "finished", "succeeded", "CPU", "wall"],
        [
            [
                f"<code>{_e(t)}</code>",
                str(u.executions),
                str(u.finished),
                str(u.succeeded),
                _seconds(u.cpu_s),
                _seconds(u.wall_s),
            ]
            for t, u in s.by_tool.items()
        ],
        {1, 2, 3, 4, 5},
    )
    waiting = _table(
        ["id", "what", "approvers", "created", "expiry", "why"],
        [
            [
                f'<code class="id">{_e(w.id)}</code>',
                f"<code>{_e(w.what, 160)}</code>",
                _e(w.approvers),
                _when(w.created_at),
                html.escape(_expiry(w, s.generated_at)),
                _e(w.reason, 200),
            ]
            for w in s.waiting
        ],
        set(),
    )
    title = f"Janus Policy daily summary: {s.day.isoformat()}"
    limits = html.escape(_limits(s))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="sub">The day in local time, {html.escape(s.timezone)}; generated
{_when(s.generated_at)}.</p>
<div class="cards">{cards}</div>
<h2>Proposals by decision and by final state</h2>
<div class="charts">{_bar_chart("By decision", _decisions_shown(s))}
{_bar_chart("By state", _states_shown(s) or [("none", 0)])}</div>
<p>Success rate: {html.escape(_rate(s))}.</p>
<h2>Resource use</h2>
<p>CPU (user+sys) {_seconds(r.cpu_s)}; wall {_seconds(r.wall_s)} total,
p50 {_seconds(r.wall_p50_s)}, max {_seconds(r.wall_max_s)}; max RSS {_bytes(rss)};
output {_bytes(r.output_bytes)}. Limits that fired: {limits}.</p>
{_histogram_chart(r.wall_histogram)}
<h2>Top rules fired ({len(s.top_rules)} of {s.rules_fired})</h2>
{rules if s.top_rules else "<p>No rule fired.</p>"}
<h2>Executions by tool</h2>
{tools if s.by_tool else "<p>No executions.</p>"}
<h2>Escalations waiting now ({len(s.waiting)}, any day)</h2>
{waiting if s.waiting else "<p>None.</p>"}
</body></html>
"""
