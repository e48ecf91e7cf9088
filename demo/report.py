"""What each flow did (a pass/fail line as it ends) and the closing summary of what happened where."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DemoReport", "FlowResult"]


@dataclass
class FlowResult:
    """One flow's outcome: ``headline`` says what happened, ``where`` lists the locations of its results."""

    name: str
    ok: bool
    headline: str
    where: list[str] = field(default_factory=list)
    seconds: float = 0.0  # when it ended, from the start of the flows
    facts: dict[str, object] = field(default_factory=dict)  # for flows that build on this one

    def line(self) -> str:
        """The pass/fail line printed when the flow ends."""
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name} ({self.seconds:.1f} s): {self.headline}"


@dataclass
class DemoReport:
    stamp: str
    flows: list[FlowResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.flows) and all(flow.ok for flow in self.flows)

    def summary(self) -> str:
        passed = sum(1 for flow in self.flows if flow.ok)
        verdict = "every flow passed" if self.ok else f"{len(self.flows) - passed} flow(s) FAILED"
        lines = [
            "",
            f"Demo summary (run {self.stamp}, {self.seconds:.0f} s): {passed} of {len(self.flows)} flows "
            f"passed, {verdict}",
        ]
        for flow in self.flows:
            lines.append(f"  {'PASS' if flow.ok else 'FAIL'}  {flow.name}: {flow.headline}")
            lines.extend(f"          {place}" for place in flow.where)
        return "\n".join(lines)
