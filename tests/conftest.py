import os

import pytest

IN_VM = os.environ.get("IPVS_FAST_IN_VM") == "1"


def pytest_collection_modifyitems(config, items):
    if IN_VM:
        return
    skip = pytest.mark.skip(reason="needs a kernel with IPVS: run tests/kernel/run-in-vm.sh")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # Inside the VM a skip means a missing module, binary or capability that
    # would otherwise turn the suite green without testing anything.
    if IN_VM and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped inside the VM, which counts as a failure: {report.longrepr}"


@pytest.fixture
def prometheus():
    """start(config, files=None, args=()) -> a running tests.prometheus.Prometheus;
    all are stopped (and their directories removed) after the test."""
    from .prometheus import Prometheus
    started = []

    def start(config, files=None, args=()):
        p = Prometheus(config, files, args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
