"""The build report: what was offloaded (kernels, their operators and ports) and what
stayed on the host CPU. Printed by the CLI; ``str(report)`` gives the same as text."""

from __future__ import annotations

import io
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from codegen_hls.design import Design

from .devices import get_device
from .project_api import design_of


@dataclass(frozen=True)
class BuildReport:
    design: Design

    @property
    def host_ops(self) -> tuple[str, ...]:
        return self.design.host_ops

    @property
    def offloaded_ops(self) -> int:
        return sum(len(k.ops) for k in self.design.kernels)

    def tables(self) -> list[Table]:
        device = get_device(self.design.device)
        kernels = Table(title=f"vitis_spatial design for {device.name} ({device.part})")
        for column in ("kernel", "operators", "ports (in -> out)", "HLS lines"):
            kernels.add_column(column)
        for k in self.design.kernels:
            # an inout port (a KV cache updated in place) is on both sides
            ins = ", ".join(f"{p.name}{list(p.shape)}" for p in k.ports if p.direction in ("in", "inout"))
            outs = ", ".join(f"{p.name}{list(p.shape)}" for p in k.ports if p.direction in ("out", "inout"))
            kernels.add_row(k.name, ", ".join(k.ops), f"{ins} -> {outs}", str(k.source.count("\n")))
        summary = Table(show_header=False)
        summary.add_row("operators offloaded", str(self.offloaded_ops))
        summary.add_row("operators left on host", str(len(self.host_ops)))
        for op in self.host_ops:
            summary.add_row("  host", op)
        return [kernels, summary]

    def print(self, console: Console | None = None) -> None:
        console = console or Console()
        for table in self.tables():
            console.print(table)

    def __str__(self) -> str:
        console = Console(width=120, record=True, file=io.StringIO())
        self.print(console)
        return console.export_text()


def build_report(built) -> BuildReport:
    """The report of a ``relax.build(..., "vitis_spatial")`` result (or exported library)."""
    return BuildReport(design_of(built))
