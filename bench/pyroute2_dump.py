"""pyroute2's IPVS full dump (services, then each service's dests), timed.
Prints JSON {"seconds", "services", "dests"}. pyroute2 >= 0.9 API:
IPVS().service("dump"), IPVSService.from_message, IPVS().dest("dump", service=...)."""
import json
import time

from pyroute2 import IPVS, IPVSService

t0 = time.monotonic()
ipvs = IPVS()
nsvc = ndest = 0
for s in ipvs.service("dump"):
    svc = IPVSService.from_message(s)
    nsvc += 1
    for d in ipvs.dest("dump", service=svc):
        d.get("IPVS_CMD_ATTR_DEST")       # decoded lazily? touch it
        ndest += 1
ipvs.close()
print(json.dumps({"seconds": time.monotonic() - t0, "services": nsvc, "dests": ndest}))
