"""GPUs: a row per device with utilization and memory bars, history, temperature and power;
below them, the selected GPU's diagnosis line (engine.telemetry.diagnosis) and its processes. Without a GPU it says why and shows the host instead.

Memory is in binary units (MiB, GiB) as nvidia-smi and nvitop show it. Narrowing, the pane
keeps the GPU, its utilization and memory, then the history, and drops power, then temperature;
the bars and the history stretch to the room there is."""

from __future__ import annotations

from rich.text import Text

from console.data import GpuPanel, GpuRow, sparkline
from console.widgets.common import (SparkCell, TablePane, bar, bar_cell, fmt_memory, fmt_number)
from console.widgets.table import Column

UTIL_LABEL = 4  # "100%"


class GpuPane(TablePane):
    COLUMNS = (Column("GPU", flex=True), Column("Util", stretch=1, max_width=30),
               Column("Memory", 1, stretch=2, max_width=34),
               Column("History", 2, stretch=2, max_width=120), Column("Temp", 3),
               Column("Power", 4))
    PANE_TITLE = "GPUs"

    panel: GpuPanel | None

    def redraw(self) -> None:
        panel = self.panel
        if panel is None:
            return
        widths = (max((len(fmt_memory(gpu.memory_used_bytes)) for gpu in panel.gpus), default=0),
                  max((len(self.memory_label(gpu)) for gpu in panel.gpus), default=0))
        self.fill([(str(gpu.index), self.cells(gpu, widths)) for gpu in panel.gpus])
        self.show_message(self.below_table(panel))

    @staticmethod
    def memory_label(gpu: GpuRow) -> str:
        return f"{fmt_memory(gpu.memory_used_bytes)}/{fmt_memory(gpu.memory_total_bytes)}"

    def cells(self, gpu: GpuRow, label_widths: tuple[int, int]) -> tuple:
        memory = (gpu.memory_used_bytes / gpu.memory_total_bytes
                  if gpu.memory_used_bytes is not None and gpu.memory_total_bytes else None)
        utilization = gpu.utilization_pct / 100 if gpu.utilization_pct is not None else None
        return (f"{gpu.index} {gpu.name.removeprefix('NVIDIA ')}",
                bar_cell(self, utilization, fmt_number(gpu.utilization_pct, 0, "%"), UTIL_LABEL),
                bar_cell(self, memory, fmt_memory(gpu.memory_used_bytes), label_widths[0],
                         wide_label=self.memory_label(gpu), wide_label_width=label_widths[1]),
                SparkCell(gpu.utilization_history, 100.0),
                fmt_number(gpu.temperature_c, 0, "°C"), fmt_number(gpu.power_w, 0, "W"))

    def selected_gpu(self) -> GpuRow | None:
        return self.selected_item(self.panel.gpus, lambda gpu: str(gpu.index)) if self.panel else None

    def below_table(self, panel: GpuPanel) -> Text:
        if panel.gpus:
            gpu = self.selected_gpu() or panel.gpus[0]
            if gpu.diagnosis:  # one line cut to the width, then its processes
                lines = Text(f"GPU {gpu.index}: ", style="bold")
                lines.append(gpu.diagnosis)
                lines.truncate(max(8, self.size.width - 4), overflow="ellipsis")
                lines.append("\n  no processes" if not gpu.processes else "")
            else:
                lines = Text(f"processes on GPU {gpu.index}: ", style="bold")
            if not gpu.processes and not gpu.diagnosis:
                lines.append("none")
            for process in gpu.processes:
                lines.append(f"\n  {process.pid:>7} {process.name} {fmt_memory(process.memory_bytes)}")
            return lines
        return self.host_text(panel)

    def host_text(self, panel: GpuPanel) -> Text:
        """No GPU: say why in one line, then the host's CPU and memory (history last, so a
        short pane loses the sparkline first)."""
        headline = ("GPUs: waiting for the first reading" if panel.status == "pending"
                    else f"No NVIDIA GPU ({panel.status}): {panel.reason or 'none found'}")
        text = Text(headline, style="bold")
        host = panel.host
        if host is None:
            return text
        memory = host.memory_used_bytes / host.memory_total_bytes if host.memory_total_bytes else None
        text.append("\nCPU ")
        text.append_text(bar(self, host.cpu_pct / 100, f"{host.cpu_pct:.0f}% of {host.cpu_count} cores"))
        text.append("\nMem ")
        text.append_text(bar(self, memory, f"{fmt_memory(host.memory_used_bytes)} / "
                                          f"{fmt_memory(host.memory_total_bytes)}"))
        width = max(12, self.size.width - 16)
        text.append(f"\nCPU history {sparkline(host.cpu_history, width, 100.0)}")
        return text

    def on_resize(self) -> None:
        if self.panel is not None:
            self.redraw()  # the diagnosis line is cut to the pane's width

    def on_deck_table_row_highlighted(self) -> None:
        if self.panel is not None and self.panel.gpus:
            self.show_message(self.below_table(self.panel))
