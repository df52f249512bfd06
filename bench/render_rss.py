"""Peak-RSS probe, run as a subprocess by test_render.py (one measurement per
process, so earlier work cannot hide the peak):

    python bench/render_rss.py {ours|ours_warm|generate_latest} NSVC

Prints JSON: body bytes and the peak-RSS growth of the render. Measured with
/proc/self/status VmHWM after resetting it (clear_refs 5): ru_maxrss is
inherited across fork+exec from the parent (pytest, GBs), so it cannot be
used here; it is reported too, for reference.
'ours_warm' renders twice and measures the second (steady-state) render;
'ours_streamed' does the same but reads the second body piece by piece, as
the server sends it, without joining it.
"""
from __future__ import annotations

import gc
import json
import os
import resource
import sys

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]

import gen  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from ipvs_fast.collection.target import CollectResult  # noqa: E402
from ipvs_fast.formats.ingress import IngressCollector, IngressRenderer  # noqa: E402


def main():
    mode, nsvc = sys.argv[1], int(sys.argv[2])
    snap = gen.snapshot(nsvc, 10)
    result = CollectResult("/var/run/docker/netns/ingress_sbox", True, 0.01, snap, {})
    if mode == "generate_latest":
        reg = CollectorRegistry(auto_describe=False)
        reg.register(IngressCollector(lambda: [result]))
        fn = lambda: generate_latest(reg)  # noqa: E731
    else:
        r = IngressRenderer()
        fn = lambda: r.render([result])  # noqa: E731
        if mode in ("ours_warm", "ours_streamed"):
            body = fn()
            del body
        if mode == "ours_streamed":
            fn = lambda: _Sized(sum(map(len, r.render_pieces([result]))))  # noqa: E731
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")            # reset VmHWM to the current RSS
    except OSError:
        pass
    before, ru0 = _status("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    body = fn()
    after, ru1 = _status("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "nsvc": nsvc, "body_bytes": len(body),
                      "hwm_before_kib": before, "hwm_after_kib": after,
                      "ru_maxrss_before_kib": ru0, "ru_maxrss_after_kib": ru1,
                      "delta_bytes": (after - before) * 1024,
                      "delta_over_body": (after - before) * 1024 / len(body)}))


class _Sized:
    """len() of a body that was streamed, not kept."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
