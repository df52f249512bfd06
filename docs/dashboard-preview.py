"""Draw docs/dashboard-preview.png: the main panels of
deploy/grafana/ipvs-fast-ipvs.json, from the range data a real Prometheus
returned for the dashboard's own queries in the VM test
(tests/kernel/test_prometheus_rules_vm.py writes dashboard-preview.json to
$IPVS_FAST_VM_OUT).

    IPVS_FAST_VM_OUT=/tmp/vm tests/kernel/run-in-vm.sh -k shipped_rules
    cp /tmp/vm/dashboard-preview.json docs/
    .venv/bin/python docs/dashboard-preview.py      # needs matplotlib

Grafana's look is imitated, not reproduced: same queries, legends and units.
The shaded span is the blackhole scenario (every destination of
tcp 10.77.100.1:80 at weight 0).
"""
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PANELS = [  # (title in the dashboard, unit)
    ("Connections/s per service (top 10)", "conn/s"),
    ("Bytes/s per service (top 10)", "B/s"),
    ("Weight per destination", ""),
    ("Destinations per service: all and at weight 0", ""),
    ("Active connections per destination", ""),
    ("Scrape duration vs timeout", "s"),
]
BG, FG, GRID = "#181b1f", "#ccccdc", "#2c3235"


def legend(fmt: str, labels: dict) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def main(src: str, dst: str) -> None:
    with open(src) as f:
        data = json.load(f)
    t0 = data["start"]
    fig, axes = plt.subplots(3, 2, figsize=(16, 13), facecolor=BG)
    for ax, (title, unit) in zip(axes.flat, PANELS):
        targets = [p for p in data["panels"] if p["title"] == title]
        assert targets, f"no data for panel {title!r}"
        ax.set_facecolor(BG)
        n = 0
        for t in targets:
            for series in t["result"]:
                xs = [(float(ts) - t0) / 60 for ts, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, linewidth=1.4, label=legend(t["legendFormat"], series["metric"]))
                n += 1
        assert n, f"panel {title!r} has no series"
        if "blackholed_at" in data:
            end = data.get("restored_at", data["end"])
            ax.axvspan((data["blackholed_at"] - t0) / 60, (end - t0) / 60, color="#f2495c", alpha=0.12,
                       label="blackhole (weights 0)")
        ax.set_title(title, color=FG, loc="left", fontsize=11)
        ax.set_xlabel("minutes", color=FG, fontsize=8)
        if unit:
            ax.set_ylabel(unit, color=FG, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.tick_params(colors=FG, labelsize=8)
        ax.grid(color=GRID, linewidth=0.6)
        for spine in ax.spines.values():
            spine.set_color(GRID)
        leg = ax.legend(fontsize=7, loc="upper left", facecolor=BG, edgecolor=GRID, ncol=1)
        for text in leg.get_texts():
            text.set_color(FG)
    fig.suptitle("IPVS (ipvs_fast --format ipvs) -- real queries against Prometheus scraping "
                 "IPVS under traffic (VM test)", color=FG, fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(dst, dpi=80, facecolor=BG)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "dashboard-preview.json"),
         sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "dashboard-preview.png"))
