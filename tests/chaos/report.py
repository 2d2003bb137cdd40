"""The fault harness's report: one case's counts, the promises they must keep, and the table of cases.

An operation counts as a duplicate effect when its effect happened twice (a
payment turned ``processed`` twice, a periodic slot started twice, an email
accepted under two Message-IDs, a payment charged twice by the provider); a
success whose effect is missing (no processed row, no charge) counts as lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Report:
    """The counts of one case; ``problems()`` lists every broken promise."""

    case: str
    operations: int
    succeeded: int
    failed: int
    dead_lettered: int
    refused: int
    lost: int
    unexpected: int
    duplicate_effects: int
    duplicate_executions: int
    not_as_expected: int
    slowest_publish: float
    #: Operations whose email the SMTP server accepted more than once under one Message-ID.
    duplicate_deliveries: int = 0
    #: Charges the case's payment provider made (each payment must be charged exactly once).
    charges: int = 0
    #: The longest time without a completed task after each fault: (p50, max), where a case times it.
    recovery: tuple[float, float] | None = None

    @property
    def accounted(self) -> int:
        """Operations that ended as a success, a failure with a reason, or a DLQ entry."""
        return self.succeeded + self.failed + self.dead_lettered + self.refused

    def problems(self) -> list[str]:
        """Every count that breaks the fleet's promises (empty when the case passed)."""
        found = [
            f"{name} = {value}"
            for name, value in (
                ("lost", self.lost),
                ("unexpected", self.unexpected),
                ("duplicate effects", self.duplicate_effects),
                ("not as expected", self.not_as_expected),
            )
            if value
        ]
        if self.accounted != self.operations:
            found.append(f"accounted {self.accounted} of {self.operations}")
        return found


COLUMNS = (
    ("case", "case"), ("ops", "operations"), ("ok", "succeeded"), ("failed", "failed"),
    ("dlq", "dead_lettered"), ("refused", "refused"), ("lost", "lost"), ("unexpected", "unexpected"),
    ("dup effects", "duplicate_effects"), ("dup execs", "duplicate_executions"),
    ("dup deliveries", "duplicate_deliveries"), ("charges", "charges"),
    ("accounted", "accounted"), ("slowest publish", "slowest_publish"),
    ("stall p50/max", "recovery"),
)  # fmt: skip


def render(reports: Iterable[Report]) -> str:
    """The table of cases, one row each."""
    rows = [[title for title, _ in COLUMNS]]
    for report in reports:
        row = []
        for _, attribute in COLUMNS:
            value = getattr(report, attribute)
            if attribute == "accounted":
                value = f"{100 * value / max(report.operations, 1):.0f} %"
            elif attribute == "slowest_publish":
                value = f"{value:.1f} s"
            elif attribute == "recovery":
                value = "-" if value is None else f"{value[0]:.1f} / {value[1]:.1f} s"
            row.append(str(value))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in rows
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])
