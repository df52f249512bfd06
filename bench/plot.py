"""bench/results/bench.png from the JSON results (missing parts are skipped).

    .venv/bin/python bench/plot.py
"""
from __future__ import annotations

import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from summary import RES, load, pb_medians  # noqa: E402  (bench/ is on sys.path)


def medians(doc):
    return {k: median for k, (median, _) in pb_medians(doc).items()}


def main():
    e, p, r = load("vm_e2e.json"), medians(load("host_parse.json")), medians(load("host_render.json"))
    fig, axes = plt.subplots(1, 4, figsize=(24, 6))

    ax = axes[0]
    if e:
        sizes = sorted(e["sizes"], key=int)
        keys = [("floor", "C floor (dump only)"), ("dump_native", "our dump stage (native)"),
                ("ours_native", "our /metrics (native)"), ("ours_native_gzip", "our /metrics gzip"),
                ("static_get", "transfer floor (static body)"),
                ("ipvsadm", "ipvsadm -Ln --stats"), ("ours_python", "our /metrics (python)"),
                ("node_exporter", "node_exporter ipvs"), ("node_exporter_gzip", "node_exporter ipvs, gzip"),
                ("pyroute2", "pyroute2 dump")]
        w = 0.8 / len(sizes)
        for j, s in enumerate(sizes):
            vals = [statistics.median(e["sizes"][s]["runs"].get(k) or [float("nan")]) for k, _ in keys]
            bars = ax.barh([i + j * w for i in range(len(keys))], vals, height=w,
                           label=f"{int(s):,} services x 10")
            for b, v in zip(bars, vals):
                if v == v:
                    ax.text(v, b.get_y() + w / 2, f" {v:.2f}s", va="center", fontsize=7)
        ax.set_yticks([i + w * (len(sizes) - 1) / 2 for i in range(len(keys))])
        ax.set_yticklabels([lbl for _, lbl in keys])
        ax.set_xscale("log")
        ax.set_xlabel("seconds, EMULATED kernel (TCG): compare ratios only")
        ax.set_title(f"End to end in the VM (kernel {e['meta'].get('kernel')})")
        ax.legend(fontsize=8)
        ax.invert_yaxis()

    ax = axes[1]
    if p:
        sizes = ["1000x10", "10000x10", "50000x10"]
        nat = [p.get(("test_parse_native", s), float("nan")) for s in sizes]
        py = [p.get(("test_parse_python", s), float("nan")) for s in sizes]
        x = range(len(sizes))
        ax.bar([i - 0.2 for i in x], py, 0.4, label="pure Python")
        ax.bar([i + 0.2 for i in x], nat, 0.4, label="native (C)")
        for i, (a, b) in enumerate(zip(py, nat)):
            ax.text(i, max(a, b) * 1.3, f"{a / b:.0f}x", ha="center")
        ax.set_xticks(list(x))
        ax.set_xticklabels(sizes)
        ax.set_yscale("log")
        ax.set_ylabel("seconds (host)")
        ax.set_title("Parse only, host")
        ax.legend(fontsize=8)

    ax = axes[2]
    if r:
        sizes = ["100k", "1M"]
        keys = [("test_render_generate_latest", "generate_latest"),
                ("test_render_ours_cold", "ours, first render"),
                ("test_render_ours_warm", "ours, steady state"),
                ("test_render_ours_streamed", "ours, streamed (as served)"),
                ("test_gzip_zlib_l1", "gzip zlib l1"), ("test_gzip_isal_l1", "gzip ISA-L l1")]
        x = range(len(sizes))
        w = 0.8 / len(keys)
        for j, (k, lbl) in enumerate(keys):
            ax.bar([i + (j - len(keys) / 2 + 0.5) * w for i in x],
                   [r.get((k, s), float("nan")) for s in sizes], w, label=lbl)
        ax.set_xticks(list(x))
        ax.set_xticklabels([f"~{s} samples" for s in sizes])
        ax.set_yscale("log")
        ax.set_ylabel("seconds (host)")
        ax.set_title("Render + gzip, host")
        ax.legend(fontsize=8)

    ax = axes[3]
    if e and any("ours_node" in e["sizes"][s]["runs"] for s in e["sizes"]):
        big = max(e["sizes"], key=int)
        runs = e["sizes"][big]["runs"]
        groups = [("ingress", "ours_native"), ("node", "ours_node"), ("ipvs", "ours_ipvs"),
                  ("node_exporter", "node_exporter")]
        parts = [("", "scrape"), ("_gzip", "scrape, gzip"), ("cpu", "exporter CPU"),
                 ("render", "render (streamed)")]
        w = 0.8 / len(parts)
        for j, (suffix, lbl) in enumerate(parts):
            vals = []
            for fmt, k in groups:
                key = {"cpu": "cpu_" + k, "render": "render_" + fmt}.get(suffix, k + suffix)
                vals.append(statistics.median(runs.get(key) or [float("nan")]))
            ax.bar([i + (j - len(parts) / 2 + 0.5) * w for i in range(len(groups))], vals, w,
                   label=lbl)
        ipvsadm = statistics.median(runs.get("ipvsadm") or [float("nan")])
        ax.axhline(ipvsadm, color="k", ls="--", lw=1, label="ipvsadm -Ln --stats")
        ax.set_xticks(list(range(len(groups))))
        ax.set_xticklabels([f"--format {g}" if g != "node_exporter" else g for g, _ in groups])
        ax.set_yscale("log")
        ax.set_ylabel("seconds, EMULATED (compare ratios only)")
        ax.set_title(f"Every format, VM, {int(big):,} services x 10")
        ax.legend(fontsize=8)

    fig.tight_layout()
    out = os.path.join(RES, "bench.png")
    fig.savefig(out, dpi=90)
    print("wrote", out)


if __name__ == "__main__":
    main()
