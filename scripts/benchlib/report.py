"""The benchmark's rows, their results, the targets qrscp must meet, and the printed table and JSON."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """What qrscp must achieve on a row.

    Either ``factor`` x the peer's median (``peer``): qrscp's median at least that (higher is better) or
    strictly below it (lower is better); or ``factor`` x qrscp's own median on another row (``baseline``,
    its key; ``baseline_label`` names it): at least that, or at most that; or an absolute ``limit``
    (lower-is-better rows) that qrscp's highest repetition must stay below (0: must be exactly 0)."""

    factor: float | None = None
    peer: str = "dcmtk"
    limit: float | None = None
    aim: float | None = None
    baseline: str | None = None
    baseline_label: str = ""

    def describe(self, higher_is_better: bool) -> str:
        if self.limit is not None:
            return "= 0" if self.limit == 0 else f"< {self.limit:g}"
        if self.baseline is not None:
            return f"{'>=' if higher_is_better else '<='} {self.factor:g}x {self.baseline_label}"
        text = f">= {self.factor:g}x {self.peer}" if higher_is_better else f"< {self.factor:g}x {self.peer}"
        if self.factor == 1 and not higher_is_better:
            text = f"faster than {self.peer}"
        return text + (f" (aim {self.aim:g}x)" if self.aim else "")

    def verdict(self, row: "Row", rows: dict[str, "Row"]) -> str:
        """PASS or MISS for qrscp on ``row`` (MISS when qrscp failed); n/a without the peer's figure."""
        values = row.values.get("qrscp")
        if not values:
            return "MISS" if row.errors.get("qrscp") else "n/a"
        if self.limit is not None:
            worst = max(values)
            return "PASS" if (worst == 0 if self.limit == 0 else worst < self.limit) else "MISS"
        ours = row.median("qrscp")
        if self.baseline is not None:
            base = rows[self.baseline].median("qrscp") if self.baseline in rows else None
            if base is None:
                return "n/a"
            return "PASS" if (ours >= self.factor * base if row.higher_is_better else ours <= self.factor * base) \
                else "MISS"
        theirs = row.median(self.peer)
        if theirs is None:
            return "n/a"
        if row.higher_is_better:
            return "PASS" if ours >= self.factor * theirs else "MISS"
        return "PASS" if ours < self.factor * theirs else "MISS"


@dataclass
class Row:
    """One figure of the table, measured once per repetition and server."""

    key: str
    label: str
    higher_is_better: bool = True
    target: Target | tuple[Target, ...] | None = None
    decimals: int = 0
    values: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def record(self, server: str, value: float) -> None:
        self.values.setdefault(server, []).append(value)

    def fail(self, server: str, message: str) -> None:
        self.errors.setdefault(server, []).append(message)

    def note(self, server: str, message: str) -> None:
        self.notes.setdefault(server, []).append(message)

    def median(self, server: str) -> float | None:
        values = self.values.get(server)
        return statistics.median(values) if values else None

    def medians(self) -> dict[str, float]:
        return {server: m for server in self.values if (m := self.median(server)) is not None}

    def cell(self, server: str) -> str:
        values = self.values.get(server)
        if not values:
            return "ERROR" if self.errors.get(server) else "-"
        text = self._format(statistics.median(values))
        if len(values) > 1:
            text += f" ({self._format(min(values))}-{self._format(max(values))})"
        return text + ("!" if self.errors.get(server) or self.notes.get(server) else "")

    def _format(self, value: float) -> str:
        return f"{value:,.{self.decimals}f}"

    def ratio(self, peer: str) -> str:
        ours, theirs = self.median("qrscp"), self.median(peer)
        if ours is None or theirs is None or theirs == 0:
            return "-"
        return f"{ours / theirs:.2f}x"

    @property
    def targets(self) -> tuple[Target, ...]:
        return () if self.target is None else self.target if isinstance(self.target, tuple) else (self.target,)

    def describe_target(self) -> str:
        return "; ".join(target.describe(self.higher_is_better) for target in self.targets)

    def verdict(self, rows: dict[str, "Row"]) -> str:
        """MISS if qrscp misses a target, PASS if it meets one and misses none, n/a if no target applies."""
        verdicts = [target.verdict(self, rows) for target in self.targets]
        return "MISS" if "MISS" in verdicts else "PASS" if "PASS" in verdicts else "n/a" if verdicts else ""

    def to_json(self, rows: dict[str, "Row"]) -> dict:
        return {
            "key": self.key, "label": self.label, "higher_is_better": self.higher_is_better,
            "values": self.values, "medians": self.medians(),
            "min": {s: min(v) for s, v in self.values.items() if v},
            "max": {s: max(v) for s, v in self.values.items() if v},
            "errors": self.errors, "notes": self.notes,
            "target": self.describe_target() or None,
            "verdict": self.verdict(rows) or None,
        }


def table(rows: list[Row], servers: list[str], title: str) -> str:
    """The rows as a fixed-width table: medians (min-max) per server, ratios of qrscp to each peer,
    the target and qrscp's PASS/MISS; then the errors and notes behind cells marked ``!``/``ERROR``."""
    peers = [server for server in servers if server != "qrscp"] if "qrscp" in servers else []
    targets = any(row.target for row in rows)
    by_key = {row.key: row for row in rows}
    header = ["figure", *servers, *(f"qrscp/{peer}" for peer in peers)]
    lines = [[row.label, *(row.cell(s) for s in servers), *(row.ratio(peer) for peer in peers)] for row in rows]
    if targets:
        header += ["target", "verdict"]
        for line, row in zip(lines, rows):
            line += [row.describe_target(), row.verdict(by_key)]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    out = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    if remarks := _remarks(rows, servers):
        out += ["", "errors and notes (cells marked ERROR or !):", *remarks]
    return "\n".join(out)


def _remarks(rows: list[Row], servers: list[str], width: int = 400) -> list[str]:
    """One line per server and distinct error or note, naming the rows it concerns."""
    where: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        for server in servers:
            for prefix, messages in (("ERROR: ", row.errors.get(server, [])), ("", row.notes.get(server, []))):
                for message in dict.fromkeys(messages):
                    where.setdefault((server, prefix + message), []).append(row.label)
    lines = []
    for (server, message), labels in where.items():
        scope = "every row" if len(labels) == len(rows) > 1 else \
            "; ".join(labels) if len(labels) <= 2 else f"{len(labels)} rows, {labels[0]} ... {labels[-1]}"
        text = f"{message[:width]}..." if len(message) > width else message
        lines.append(f"  [{server}] {scope}: {text}")
    return lines
