"""Markdown tables (and target verdicts) from bench/results/*.json.

    .venv/bin/python bench/summary.py > bench/results/summary.md
"""
from __future__ import annotations

import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
RES = os.path.join(HERE, "results")


def load(name):
    try:
        with open(os.path.join(RES, name)) as f:
            return json.load(f)
    except OSError:
        return None


def pb_medians(doc) -> dict:
    """pytest-benchmark JSON -> {(test name without param, param): median seconds}."""
    out = {}
    for b in (doc or {}).get("benchmarks", []):
        name = b["name"].split("[")[0]
        out[(name, b.get("param"))] = (b["stats"]["median"], b.get("extra_info", {}))
    return out


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_s(x):
    if x != x:
        return "-"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def verdict(ok):
    return "**met**" if ok else "**missed**"


def main():
    lines = []
    targets = []
    p = pb_medians(load("host_parse.json"))
    if p:
        lines += ["### Parse only, host (synthesised kernel replies, x 10 dests)", "",
                  "| services | native (C) | pure Python | Python / native |", "|---|---|---|---|"]
        for size in ("1000x10", "10000x10", "50000x10"):
            n = p.get(("test_parse_native", size))
            y = p.get(("test_parse_python", size))
            if n and y:
                r = y[0] / n[0]
                lines.append(f"| {size} | {fmt_s(n[0])} | {fmt_s(y[0])} | {r:.0f}x |")
                targets.append((f"parse-only native vs Python >= 30x (host, {size})", f"{r:.0f}x", r >= 30))
        lines.append("")
    r = pb_medians(load("host_render.json"))
    rss = load("host_rss.json") or {}
    if r:
        lines += ["### Render, host (same snapshot; 54 samples per service)", "",
                  "| samples | body | ours, first render | ours, steady state | ours, streamed "
                  "(as served) | generate_latest | speed-up first / steady / streamed | "
                  "gzip ISA-L l1 | gzip zlib l1 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for size in ("100k", "1M"):
            c = r.get(("test_render_ours_cold", size))
            w = r.get(("test_render_ours_warm", size))
            st = r.get(("test_render_ours_streamed", size))
            g = r.get(("test_render_generate_latest", size))
            gi = r.get(("test_gzip_isal_l1", size))
            gz = r.get(("test_gzip_zlib_l1", size))
            if not (c and w and g):
                continue
            body = c[1].get("body_bytes", 0)
            lines.append(
                f"| {c[1].get('samples', size)} | {body / 1e6:.0f} MB | {fmt_s(c[0])} | {fmt_s(w[0])} | "
                f"{fmt_s(st[0]) if st else '-'} | {fmt_s(g[0])} | {g[0] / c[0]:.0f}x / {g[0] / w[0]:.0f}x"
                f" / {(f'{g[0] / st[0]:.0f}x') if st else '-'} | "
                f"{fmt_s(gi[0]) if gi else '-'} ({gi[1].get('gz_bytes', 0) / 1e6:.1f} MB) | "
                f"{fmt_s(gz[0]) if gz else '-'} ({gz[1].get('gz_bytes', 0) / 1e6:.1f} MB) |")
            targets.append((f"render >= 15x generate_latest ({size} samples, first render)",
                            f"{g[0] / c[0]:.0f}x", g[0] / c[0] >= 15))
        lines.append("")
        if rss:
            lines += ["Peak-RSS growth of one render (fresh process, VmHWM delta), as a multiple of the body:", "",
                      "| samples | ours, first | ours, steady | ours, streamed | generate_latest |",
                      "|---|---|---|---|---|"]
            for size in ("100k", "1M"):
                row = [rss.get(f"{m}-{size}", {}).get("delta_over_body") for m in
                       ("ours", "ours_warm", "ours_streamed", "generate_latest")]
                lines.append(f"| {size} | " + " | ".join(f"{x:.2f}x" if x is not None else "-" for x in row) + " |")
            lines.append("")
    rf = pb_medians(load("host_formats.json")) or r
    if rf:
        fr = {}
        for (name, param), v in rf.items():
            if name.startswith("test_format_") and param:
                fr[(name, frozenset(param.split("-")))] = v
        if fr:
            lines += ["### Render per format, host (N services x 10 dests, namespace \"\")", "",
                      "| format | services | body | first render | steady state, streamed (as served) |",
                      "|---|---|---|---|---|"]
            for size in ("1000x10", "10000x10"):
                for fmt in ("ingress", "node", "ipvs"):
                    c = fr.get(("test_format_cold", frozenset((size, fmt))))
                    st = fr.get(("test_format_streamed", frozenset((size, fmt))))
                    if c and st:
                        lines.append(f"| {fmt} | {size} | {st[1].get('body_bytes', 0) / 1e6:.1f} MB | "
                                     f"{fmt_s(c[0])} | {fmt_s(st[0])} |")
                g = fr.get(("test_format_node_generate_latest", frozenset((size,))))
                if g:
                    lines.append(f"| node via generate_latest (reference collector) | {size} | "
                                 f"{g[1].get('body_bytes', 0) / 1e6:.1f} MB | {fmt_s(g[0])} | - |")
            lines.append("")
    e = load("vm_e2e.json")
    if e:
        meta = e.get("meta", {})
        lines += [f"### End to end, in the VM (kernel {meta.get('kernel')}, {meta.get('cpus')} vCPUs, "
                  f"TCG emulation: absolute times are EMULATED, 10-30x slower than bare metal; "
                  f"medians of {meta.get('rounds')} alternating rounds)", ""]
        cols = [("ours_native", "our scrape (native)"), ("ours_native_gzip", "our scrape, gzip"),
                ("ours_python", "our scrape (python backend)"),
                ("dump_native", "our dump stage (native)"), ("dump_python", "dump+parse (python backend)"),
                ("floor", "C floor (dump, no parse)"), ("ipvsadm", "ipvsadm -Ln --stats --exact"),
                ("node_exporter", "node_exporter ipvs scrape"),
                ("node_exporter_gzip", "node_exporter ipvs scrape, gzip"), ("pyroute2", "pyroute2 dump"),
                ("conc1_native", "1 scrape"), ("conc10_native", "10 concurrent scrapes"),
                ("conc1_native_gzip", "1 scrape, gzip"),
                ("conc10_native_gzip", "10 concurrent scrapes, gzip"),
                ("static_get", "transfer floor: 1 GET of a static body of the same size"),
                ("conc1_static", "transfer floor: 1 raw GET"),
                ("conc10_static", "transfer floor: 10 concurrent raw GETs")]
        sizes = sorted(e["sizes"], key=int)
        lines += ["| | " + " | ".join(f"{int(s):,} x 10" for s in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for k, label in cols:
            row = []
            for s in sizes:
                xs = e["sizes"][s]["runs"].get(k, [])
                row.append(fmt_s(med(xs)) + (f" (n={len(xs)})" if len(xs) == 1 else ""))
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        lines.append("| body (identity / gzip) | " + " | ".join(
            f"{e['sizes'][s]['body'].get('native', 0) / 1e6:.1f} MB / "
            f"{e['sizes'][s]['body'].get('native_gzip', 0) / 1e6:.2f} MB" for s in sizes) + " |")
        lines += ["", "Ratios (same run; median of the per-round ratios):", "", "| ratio | " + " | ".join(
            f"{int(s):,} x 10" for s in sizes) + " | target |", "|---|" + "---|" * (len(sizes) + 1)]

        def m(s, k):
            return med(e["sizes"][s]["runs"].get(k, []))

        def ratio(s, a, b):
            """Median of per-round ratios (both measured in the same round, so
            a slow patch of the shared host hits both); ratio of medians when
            one side ran once."""
            xa, xb = e["sizes"][s]["runs"].get(a, []), e["sizes"][s]["runs"].get(b, [])
            if xa and len(xa) == len(xb):
                return med([x / y for x, y in zip(xa, xb)])
            return m(s, a) / m(s, b)
        ratios = [
            ("our scrape / ipvsadm -Ln --stats", "ours_native", "ipvsadm", "<= 0.5", lambda x: x <= 0.5),
            ("our scrape / node_exporter", "ours_native", "node_exporter", "<= 0.1", lambda x: x <= 0.1),
            ("our gzip scrape / ipvsadm -Ln --stats", "ours_native_gzip", "ipvsadm", "(<= 0.5)", None),
            ("our gzip scrape / node_exporter", "ours_native_gzip", "node_exporter", "(<= 0.1)", None),
            ("our scrape / node_exporter, both gzip (as Prometheus scrapes)", "ours_native_gzip",
             "node_exporter_gzip", "<= 0.1", lambda x: x <= 0.1),
            ("our scrape / pyroute2 dump", "ours_native", "pyroute2", "", None),
            ("our dump stage / C floor", "dump_native", "floor", "<= 1.3", lambda x: x <= 1.3),
            ("python / native dump+parse", "dump_python", "dump_native", ">= 10", lambda x: x >= 10),
            ("python / native scrape", "ours_python", "ours_native", "", None),
            ("10 concurrent / 1 scrape (identity)", "conc10_native", "conc1_native", "<= 1.5", lambda x: x <= 1.5),
            ("10 concurrent / 1 scrape (gzip)", "conc10_native_gzip", "conc1_native_gzip", "<= 1.5", lambda x: x <= 1.5),
            ("transfer floor: 10 concurrent / 1 (static body)", "conc10_static", "conc1_static", "", None),
            ("our scrape - transfer floor, / node_exporter", None, None, "", None),
        ]
        big = sizes[-1]
        for label, a, b, tgt, ok in ratios:
            if a is None:       # what the scrape costs beyond moving its bytes
                vals = []
                for s in sizes:
                    r = e["sizes"][s]["runs"]
                    xa, xf, xn = r.get("ours_native", []), r.get("static_get", []), r.get("node_exporter", [])
                    vals.append(med([(x - f) / n for x, f, n in zip(xa, xf, xn)])
                                if xa and len(xa) == len(xf) == len(xn) else float("nan"))
            else:
                vals = [ratio(s, a, b) for s in sizes]
            lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" if v == v else "-" for v in vals) + f" | {tgt} |")
            if ok is not None and vals[-1] == vals[-1]:
                targets.append((f"{label} at {int(big):,} x 10 ({tgt})", f"{vals[-1]:.2f}", ok(vals[-1])))
        lines.append("")
        # every format (issue 15)
        if any("ours_node" in e["sizes"][s]["runs"] for s in sizes):
            lines += ["Every format, end to end (same run; scrape = http.client GET; CPU = the "
                      "exporter's utime+stime during that scrape; render = the format's renderer "
                      "in the driver process on the same snapshot, steady state, streamed):", "",
                      "| | " + " | ".join(f"{int(s):,} x 10" for s in sizes) + " |",
                      "|---|" + "---|" * len(sizes)]
            rows = []
            for fmt, k in (("ingress", "ours_native"), ("node", "ours_node"), ("ipvs", "ours_ipvs")):
                rows += [(f"`--format {fmt}` scrape / gzip", k, k + "_gzip"),
                         (f"`--format {fmt}` exporter CPU per scrape / gzip", "cpu_" + k,
                          "cpu_" + k + "_gzip"),
                         (f"`--format {fmt}` render (streamed, steady)", "render_" + fmt, None),
                         (f"`--format {fmt}` collection (ipvs_scrape_duration_seconds)",
                          k + "_dump_in_exporter", None)]
            rows += [("netlink dump in the driver (`dump()`: what ingress and ipvs read)",
                      "dump_native", None),
                     ("C floor of the netlink dump", "floor", None),
                     ("`dump_table()` in the driver (GET_SERVICE + /proc/net/ip_vs: what node reads)",
                      "table_native", None),
                     ("transfer floor of the ipvs body (static server, same stack)",
                      "static_get_ipvs", None),
                     ("node_exporter ipvs scrape / gzip", "node_exporter", "node_exporter_gzip"),
                     ("node_exporter CPU per scrape / gzip", "cpu_node_exporter",
                      "cpu_node_exporter_gzip"),
                     ("ipvsadm -Ln --stats --exact", "ipvsadm", None)]
            for label, a, b in rows:
                lines.append(f"| {label} | " + " | ".join(
                    fmt_s(m(s, a)) + (f" / {fmt_s(m(s, b))}" if b else "") for s in sizes) + " |")
            bodies = [("native", "ingress"), ("node_fmt", "node"), ("ipvs_fmt", "ipvs")]
            for k, fmt in bodies:
                lines.append(f"| `--format {fmt}` body (identity / gzip) | " + " | ".join(
                    f"{e['sizes'][s]['body'].get(k, 0) / 1e6:.1f} MB / "
                    f"{e['sizes'][s]['body'].get(k + '_gzip', 0) / 1e6:.2f} MB" for s in sizes) + " |")
            lines.append("| node_exporter body | " + " | ".join(
                f"{e['sizes'][s]['body'].get('node_exporter', 0) / 1e6:.1f} MB" for s in sizes) + " |")
            lines += ["", "| ratio (median of per-round ratios) | " + " | ".join(
                f"{int(s):,} x 10" for s in sizes) + " | target |", "|---|" + "---|" * (len(sizes) + 1)]
            fratios = [
                ("`--format node` scrape / node_exporter", "ours_node", "node_exporter", 0.15),
                ("`--format node` gzip scrape / node_exporter gzip", "ours_node_gzip",
                 "node_exporter_gzip", 0.15),
                ("`--format ipvs` scrape / ipvsadm -Ln --stats", "ours_ipvs", "ipvsadm", 0.6),
                ("`--format ipvs` gzip scrape / ipvsadm -Ln --stats", "ours_ipvs_gzip", "ipvsadm", None),
                ("`--format ingress` scrape / ipvsadm -Ln --stats", "ours_native", "ipvsadm", None),
            ]
            for fmt, k in (("ingress", "ours_native"), ("node", "ours_node"), ("ipvs", "ours_ipvs")):
                fratios.append((f"`--format {fmt}` render / scrape", "render_" + fmt, k, 0.15))
                fratios.append((f"`--format {fmt}` render / gzip scrape", "render_" + fmt,
                                k + "_gzip", 0.15))
                fratios.append((f"`--format {fmt}` exporter CPU per scrape / node_exporter's",
                                "cpu_" + k, "cpu_node_exporter", 0.2))
                fratios.append((f"`--format {fmt}` exporter CPU per gzip scrape / node_exporter's "
                                "(gzip)", "cpu_" + k + "_gzip", "cpu_node_exporter_gzip", 0.2))
            for label, a, b, tgt in fratios:
                vals = [ratio(s, a, b) for s in sizes]
                lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" if v == v else "-" for v in vals)
                             + f" | {'<= %g' % tgt if tgt else ''} |")
                if tgt is not None and vals[-1] == vals[-1]:
                    targets.append((f"{label} at {int(big):,} x 10 (<= {tgt:g})", f"{vals[-1]:.2f}",
                                    vals[-1] <= tgt))
            lines.append("")
        cs = e.get("curl_sizes", {})
        for s, c in sorted(cs.items(), key=lambda kv: int(kv[0])):
            runs = c["runs"]

            def cr(a, b):
                xa, xb = runs.get(a, []), runs.get(b, [])
                return med([x / y for x, y in zip(xa, xb)]) if xa and len(xa) == len(xb) else float("nan")
            lines += [f"Default format vs ipvsadm at {int(s):,} x 10, curl as the client "
                      f"(body {c['body'].get('native', 0) / 1e6:.1f} MB):", "",
                      "| | time | / ipvsadm |", "|---|---|---|"]
            for k, label in (("curl_ours_native", "ours, curl"), ("curl_ours_native_gzip", "ours, curl, gzip"),
                             ("ours_native", "ours, http.client"), ("ipvsadm", "ipvsadm -Ln --stats --exact"),
                             ("curl_node_exporter", "node_exporter, curl")):
                lines.append(f"| {label} | {fmt_s(med(runs.get(k, [])))} | {cr(k, 'ipvsadm'):.2f} |")
            lines.append("")
        rs = e["sizes"][big].get("rss", {})
        if rs:
            lines += [f"Exporter memory during one {int(big):,} x 10 scrape (VmHWM reset before it):", "",
                      "| backend | RSS before | VmHWM | growth | body | VmHWM / body | growth / body |",
                      "|---|---|---|---|---|---|---|"]
            for k, v in rs.items():
                g = v["hwm_after_scrape"] - v["rss_before"]
                lines.append(f"| {k} | {v['rss_before'] / 1e6:.0f} MB | {v['hwm_after_scrape'] / 1e6:.0f} MB | "
                             f"{g / 1e6:.0f} MB | {v['body'] / 1e6:.1f} MB | "
                             f"{v['hwm_after_scrape'] / v['body']:.2f}x | {g / v['body']:.2f}x |")
            v = rs.get("native")
            if v:
                x = v["hwm_after_scrape"] / v["body"]
                targets.append((f"exporter peak RSS <= 2x body ({int(big):,} x 10, VmHWM, native)",
                                f"{x:.2f}x", x <= 2))
            lines.append("")
    if targets:
        lines += ["### Targets", "", "| target | measured | |", "|---|---|---|"]
        for t, v, ok in targets:
            lines.append(f"| {t} | {v} | {verdict(ok)} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
