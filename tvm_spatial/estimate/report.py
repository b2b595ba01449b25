"""The estimate for people: rich tables in the terminal, an HTML page with plots.

Plots are inline SVG written here (bars need no plotting library): per-process latency,
resource use per SLR against the budget, and the dataflow chain coloured by bound.
"""

from __future__ import annotations

import html
import io

from rich.console import Console
from rich.table import Table

from ..devices import RESOURCES
from .model import Estimate

RESOURCE_LABELS = {"dsp": "DSP", "bram18k": "BRAM18K", "uram": "URAM", "lut": "LUT", "ff": "FF"}


def _fmt(cycles: float, est: Estimate) -> str:
    us = est.seconds(cycles) * 1e6
    return f"{us / 1e3:.3f} ms" if us >= 1000 else f"{us:.2f} us"


def summary_table(est: Estimate) -> Table:
    t = Table(title=f"estimate on {est.device.name} at {est.clock_mhz:g} MHz", show_header=False)
    blk = "whole tensors" if est.block is None else f"{est.block} (row-wise processes; the others whole tensors)"
    t.add_row("tokens / block", f"{est.tokens} / {blk}")
    t.add_row("prefill latency", f"{_fmt(est.prefill_cycles, est)} (fill {_fmt(est.prefill_fill_cycles, est)}); "
              f"bottleneck {est.bottleneck}")
    beside = len(est.processes) - len(set(est.decode_chain)) if est.decode_chain else 0
    t.add_row("decode latency / token", f"{_fmt(est.decode_cycles, est)}; slowest {est.decode_bottleneck}"
              + (f"; {beside} process(es) beside the longest chain (marked 'beside')" if beside else ""))
    pr, dr = est.prefill_roofline, est.decode_roofline
    if pr.dsp_cycles or pr.memory_cycles:
        t.add_row("prefill roofline", f"DSP-bound {_fmt(pr.dsp_cycles, est)}, HBM-bound {_fmt(pr.memory_cycles, est)}"
                  f" -> {est.prefill_dsp_ratio:.1%} of the DSP roofline")
        t.add_row("decode roofline", f"DSP-bound {_fmt(dr.dsp_cycles, est)}, HBM-bound {_fmt(dr.memory_cycles, est)}"
                  f" -> {est.decode_memory_ratio:.1%} of the memory roofline")
        t.add_row("off-chip bytes", f"prefill {est.prefill_bytes / 1e6:.1f} MB, decode {est.decode_bytes / 1e6:.2f} MB/token")
    util = est.utilization()
    t.add_row("device use", ", ".join(f"{RESOURCE_LABELS[r]} {est.total.get(r):,.0f} ({util[r]:.1%})" for r in RESOURCES))
    frac, slr, res = est.max_slr_utilization
    t.add_row("fullest SLR resource", f"SLR{slr} {RESOURCE_LABELS[res]} {frac:.1%}")
    if est.kv_cache:
        t.add_row("KV cache", kv_summary(est))
    if est.host_ops:
        t.add_row("on the host", ", ".join(est.host_ops))
    return t


def kv_summary(est: Estimate) -> str:
    """One line: how many layers' caches are where, and their bytes."""
    where: dict[str, list] = {}
    for k in est.kv_cache:
        where.setdefault(k.where, []).append(k)
    parts = [f"{len(ks)} layer(s) in {w.upper()} ({sum(k.bytes for k in ks) / 1e6:.3g} MB)" for w, ks in where.items()]
    return "; ".join(parts) + " (K and V at the compiled context)"


def kv_table(est: Estimate) -> Table:
    t = Table(title="KV cache per layer (K and V at the compiled context)")
    for col in ("layer", "SLR", "bytes", "where", "URAM", "BRAM18"):
        t.add_column(col, justify="left" if col == "where" else "right")
    for k in est.kv_cache:
        t.add_row(str(k.layer), str(k.slr), f"{k.bytes:,}", k.where.upper(), str(k.uram), str(k.bram18k))
    return t


def slr_table(est: Estimate) -> Table:
    t = Table(title="resources per SLR (used / available)")
    t.add_column("SLR")
    for r in RESOURCES:
        t.add_column(RESOURCE_LABELS[r], justify="right")
    for i, use in enumerate(est.slr_use):
        avail = est.device.slr(i)
        t.add_row(str(i), *(f"{use.get(r):,.0f} / {avail.get(r):,} ({use.get(r) / avail.get(r):.0%})" for r in RESOURCES))
    return t


def process_table(est: Estimate, limit: int | None = 40) -> Table:
    t = Table(title="processes (slowest first; times and traffic per call)" + (f", top {limit}" if limit else ""))
    for col in ("process", "op", "calls", "SLR", "parallel", "trip counts", "II", "block", "bound", "decode", "DSP",
                "BRAM18", "URAM", "LUT", "off-chip MB"):
        t.add_column(col, justify="left" if col in ("process", "op", "bound") else "right")
    procs = sorted(est.processes, key=lambda p: -p.block_cycles)
    chain = set(est.decode_chain)  # the others run beside it in decode: their time is hidden
    for p in procs[:limit] if limit else procs:
        r = p.resources
        t.add_row(p.name.split("_p", 1)[-1] if "_p" in p.name else p.name, p.op, str(p.calls), str(p.slr),
                  str(p.parallelism),
                  "x".join(map(str, p.trip_counts)), str(p.ii), _fmt(p.block_cycles, est), p.block_bound,
                  _fmt(p.decode_cycles, est) + ("" if not chain or p.name in chain else " beside"),
                  f"{r.dsp:,.0f}", f"{r.bram18k:,.0f}", f"{r.uram:,.0f}",
                  f"{r.lut:,.0f}", f"{p.prefill_bytes / 1e6:.2f}")
    return t


def print_estimate(est: Estimate, console: Console | None = None, limit: int | None = 40) -> None:
    console = console or Console()
    tables = [summary_table(est), slr_table(est)]
    if est.kv_cache:
        tables.append(kv_table(est))
    for table in (*tables, process_table(est, limit)):
        console.print(table)


def estimate_text(est: Estimate) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    print_estimate(est, console)
    return console.export_text()


# ---- HTML -----------------------------------------------------------------------------
def _bars_svg(items: list[tuple[str, float, str]], unit: str, width: int = 900) -> str:
    """Horizontal bars: (label, value, colour)."""
    if not items:
        return ""
    top = max(v for _, v, _ in items) or 1.0
    row, label_w = 16, 260
    h = row * len(items) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" font-size="11" font-family="monospace">']
    for i, (label, value, colour) in enumerate(items):
        y = 5 + i * row
        w = (width - label_w - 110) * value / top
        out.append(f'<text x="0" y="{y + 11}">{html.escape(label[:38])}</text>')
        out.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{row - 3}" fill="{colour}"/>')
        out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 11}">{value:,.3g} {unit}</text>')
    out.append("</svg>")
    return "".join(out)


def _slr_svg(est: Estimate, budget: float = 0.85) -> str:
    items = []
    for i, use in enumerate(est.slr_use):
        for r in RESOURCES:
            frac = use.get(r) / est.device.slr(i).get(r) * 100
            colour = "#c0392b" if frac > budget * 100 else "#2e86c1"
            items.append((f"SLR{i} {RESOURCE_LABELS[r]}", frac, colour))
    return _bars_svg(items, "%")


def _chain_svg(est: Estimate, width: int = 900) -> str:
    """The dataflow chain in program order: one box per process, width ~ its block time."""
    procs = est.processes
    if not procs:
        return ""
    total = sum(p.block_cycles for p in procs) or 1.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60">']
    x = 0.0
    for p in procs:
        w = max(0.5, width * p.block_cycles / total)
        colour = {"memory": "#e67e22", "compute": "#27ae60"}[p.block_bound]
        if p.name == est.bottleneck:
            colour = "#c0392b"
        out.append(f'<rect x="{x:.1f}" y="10" width="{w:.1f}" height="30" fill="{colour}" stroke="white" '
                   f'stroke-width="0.3"><title>{html.escape(p.name)} ({p.op}): {_fmt(p.block_cycles, est)} '
                   f'per block, {p.block_bound}-bound</title></rect>')
        x += w
    out.append('<text x="0" y="55" font-size="11">green: compute-bound, orange: memory-bound, red: bottleneck '
               '(hover for names); box width = time per block</text></svg>')
    return "".join(out)


def _kv_html(est: Estimate) -> str:
    if not est.kv_cache:
        return ""
    rows = "".join(
        f"<tr><td>{k.layer}</td><td>{k.slr}</td><td>{k.bytes:,}</td><td>{k.where.upper()}</td>"
        f"<td>{k.uram}</td><td>{k.bram18k}</td></tr>" for k in est.kv_cache
    )
    return (f'<h2>KV cache per layer</h2><p>{html.escape(kv_summary(est))}</p>'
            '<table border="1" cellpadding="3"><tr><th>layer</th><th>SLR</th><th>bytes</th><th>where</th>'
            f'<th>URAM</th><th>BRAM18</th></tr>{rows}</table>\n')


def estimate_html(est: Estimate, title: str = "tvm-spatial estimate") -> str:
    procs = sorted(est.processes, key=lambda p: -p.block_cycles)[:60]
    latency = [(p.name.split("_p", 1)[-1] if "_p" in p.name else p.name, est.seconds(p.block_cycles) * 1e6,
                "#c0392b" if p.name == est.bottleneck else ("#e67e22" if p.block_bound == "memory" else "#27ae60"))
               for p in procs]
    console = Console(width=170, record=True, file=io.StringIO())
    print_estimate(est, console, limit=None)
    tables = console.export_text()
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} pre{{font-size:11px;background:#f6f6f6;padding:1em;overflow:auto}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(est.device.name)} at {est.clock_mhz:g} MHz; prefill {est.prefill_ms:.3f} ms
({est.prefill_dsp_ratio:.1%} of the DSP roofline), decode {est.decode_ms:.3f} ms/token
({est.decode_memory_ratio:.1%} of the memory roofline); bottleneck {html.escape(est.bottleneck)}.</p>
<h2>Time per block, slowest processes</h2>{_bars_svg(latency, "us")}
<h2>Resources per SLR (% of the SLR; red: over 85 %)</h2>{_slr_svg(est)}
<h2>Dataflow chain</h2>{_chain_svg(est)}
{_kv_html(est)}<h2>Tables</h2><pre>{html.escape(tables)}</pre>
</body></html>
"""
