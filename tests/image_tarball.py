"""Host step before the VM stage: make sure the exporter image saved for the
VM's Swarm test (tests/kernel/test_swarm_vm.py) was built from this tree.

    python tests/image_tarball.py

If the saved tarball's source key (tests/docker_engine.source_key) matches,
nothing is done. Otherwise the image is built on the tests' own dockerd
(tests/docker_engine.py, as tests/test_image.py does) with
deploy/docker/build.sh and saved with `docker save`. Exit status 0 when the
tarball is current; 1 (with the reason) when it could not be made -- the VM
test then fails saying so.
"""
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.docker_engine import CACHE, IMAGE_TARBALL, ROOT, DockerEngine, source_key  # noqa: E402

KEY = CACHE / "ipvs-fast-exporter.key"


def current() -> bool:
    return IMAGE_TARBALL.exists() and KEY.exists() and KEY.read_text().strip() == source_key()


def main() -> int:
    if current():
        print(f"image tarball current: {IMAGE_TARBALL}")
        return 0
    start = time.monotonic()
    engine = DockerEngine(CACHE / "docker-host", exec_root=Path("/run/ipvs-fast-dockerd"))
    try:
        engine.start()
        r = subprocess.run([str(ROOT / "deploy/docker/build.sh"), "--save", str(IMAGE_TARBALL)],
                           env=engine.env, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            print(f"build.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}", file=sys.stderr)
            return 1
        KEY.write_text(source_key() + "\n")
        engine.docker("image", "prune", "--force")
    except Exception as e:        # no engine here: say why; the VM test fails on it
        print(f"could not build the image: {e}", file=sys.stderr)
        return 1
    finally:
        engine.stop()
    print(f"image built and saved to {IMAGE_TARBALL} in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
