"""Namespace settings: GET_INFO / GET_CONFIG parsed by both backends
(byte-identical, from encoded and from captured kernel replies), the IPVS
sysctls, and their families in --format ipvs."""
import dataclasses
import errno
import json
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipvs_fast.backends import genl as g
from ipvs_fast.backends import python as pybackend
from ipvs_fast.backends.errors import IPVSError
from ipvs_fast.backends.records import Settings
from ipvs_fast.backends.snapshot import parse_sysctl, sysctl_values
from ipvs_fast.formats.ipvs import IPVSCollector, IPVSRenderer
from ipvs_fast.formats.policy import FamilyFilter
from tests import nlencode as E
from tests.test_ingress import result, samples, small_snapshot
from tests.test_kernel_fixtures import FIXTURES, NAMES, parsers

U32 = st.integers(0, 2 ** 32 - 1)


def parse_all(info, config, family_id=0):
    """Every parser's answer: the record bytes, or the IPVSError errno."""
    out = []
    for p in parsers():
        try:
            out.append(p.parse_settings(info, config, family_id))
        except IPVSError as e:
            out.append(("error", e.errno))
    return out


def _msg(cmd, attrs, o=E.Opts()):
    return g.encode_genl(o.family_id, 0, o.seq, cmd, g.IPVS_GENL_VERSION, attrs, pid=o.pid)


# -- encoded replies -------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(U32, U32, U32, U32, U32, st.booleans(), st.booleans(), st.randoms(use_true_random=False))
def test_parsers_agree_and_decode(version, size, tcp, fin, udp, ack, unknown, rnd):
    info_attrs = [g.attr_u32(g.IPVS_INFO_ATTR_VERSION, version),
                  g.attr_u32(g.IPVS_INFO_ATTR_CONN_TAB_SIZE, size)]
    cfg_attrs = [g.attr_u32(g.IPVS_CMD_ATTR_TIMEOUT_TCP, tcp),
                 g.attr_u32(g.IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, fin),
                 g.attr_u32(g.IPVS_CMD_ATTR_TIMEOUT_UDP, udp)]
    if unknown:         # a newer kernel's attributes are ignored
        info_attrs.append(g.attr_u64(9, 7))
        cfg_attrs.append(g.encode_attr(1, b"xyz"))
    rnd.shuffle(info_attrs)
    rnd.shuffle(cfg_attrs)
    pre = g.encode_error(0) + g.encode_msg(g.NLMSG_NOOP, 0, 1, b"") if ack else b""
    info = pre + _msg(g.IPVS_CMD_SET_INFO, b"".join(info_attrs))
    config = pre + _msg(g.IPVS_CMD_SET_CONFIG, b"".join(cfg_attrs))
    got = parse_all(info, config, E.FAMILY_ID)
    assert all(x == got[0] for x in got)
    assert Settings.unpack(got[0]) == (0x1F, version, size, tcp, fin, udp)


def test_what_follows_the_reply_is_ignored():
    got = parse_all(E.info_reply() + b"\0\0", E.config_reply() + E.done())
    assert all(x == got[0] for x in got) and isinstance(got[0], bytes)


def test_missing_attributes_leave_their_bit_clear():
    info = _msg(g.IPVS_CMD_SET_INFO, g.attr_u32(g.IPVS_INFO_ATTR_VERSION, 0x010201))
    config = _msg(g.IPVS_CMD_SET_CONFIG, g.attr_u32(g.IPVS_CMD_ATTR_TIMEOUT_UDP, 5))
    got = parse_all(info, config)
    assert all(x == got[0] for x in got)
    s = Settings.unpack(got[0])
    assert s == (0x1 | 0x10, 0x010201, 0, 0, 0, 5) and s.version_text == "1.2.1"


@pytest.mark.parametrize("info, why", [
    (b"", "no message"),
    (E.done(), "NLMSG_DONE is not a reply to a request"),
    (g.encode_msg(g.NLMSG_OVERRUN, 0, 1, b"\0" * 4), "control message"),
    (_msg(g.IPVS_CMD_SET_INFO, g.encode_attr(g.IPVS_INFO_ATTR_VERSION, b"\1\2")), "short u32"),
    (_msg(g.IPVS_CMD_SET_INFO, g.attr_u64(g.IPVS_INFO_ATTR_CONN_TAB_SIZE, 1)), "long u32"),
    (_msg(g.IPVS_CMD_SET_INFO, b"\x08\x00\x01\x00\x01\x00"), "truncated attribute"),
    (g.encode_msg(E.FAMILY_ID, 0, 1, b"\1\1"), "no genl header"),
    (b"\0\0\0\0", "shorter than a header"),
    (g.encode_msg(g.NLMSG_ERROR, 0, 1, b"\0\0"), "truncated NLMSG_ERROR"),
    (g.encode_error(5), "positive error"),
])
def test_malformed_is_ebadmsg_in_both(info, why):
    got = parse_all(info, E.config_reply(), E.FAMILY_ID)
    assert got == [("error", errno.EBADMSG)] * len(got), why


def test_kernel_errors_and_family_checked():
    got = parse_all(E.error_reply(errno.EPERM), E.config_reply())
    assert got == [("error", errno.EPERM)] * len(got)
    other = E.info_reply(o=E.Opts(family_id=0x99))
    assert parse_all(other, E.config_reply(), E.FAMILY_ID) == [("error", errno.EBADMSG)] * len(got)
    assert all(isinstance(x, bytes) for x in parse_all(other, E.config_reply(), 0))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=80))
def test_garbage_only_ipvserror_and_parsers_agree(a, b):
    got = parse_all(E.info_reply() + a, b)
    assert all(x == got[0] for x in got)


# -- sysctl values ---------------------------------------------------------------------

@pytest.mark.parametrize("raw, value", [
    (b"1\n", 1), (b"0\n", 0), (b"-3\n", -3), (b"86400\n", 86400), (b"3\t50\n", None),
    (b"0-1\n", None), (b"\n", None), (b"", None), (b"abc\n", None), (b"1 2\n", None),
    (b"-\n", None), (b"9" * 30 + b"\n", None), (b"\xff\n", None),
])
def test_parse_sysctl(raw, value):
    assert parse_sysctl(raw) == value


# -- captured kernel replies -----------------------------------------------------------

SETTINGS_NAMES = [n for n in NAMES if os.path.exists(os.path.join(FIXTURES, n, "info.bin"))]


def load(name):
    d = os.path.join(FIXTURES, name)

    def read(fn, mode="r"):
        with open(os.path.join(d, fn), mode) as f:
            return f.read()
    return (read("info.bin", "rb"), read("config.bin", "rb"), read("ipvsadm-timeout.txt"),
            read("ipvsadm-plain.txt"), read("sysctl.txt"), json.loads(read("sysctl-raw.json")))


def test_settings_fixtures_present():
    assert {"empty", "standard", "many"} <= set(SETTINGS_NAMES)


@pytest.mark.parametrize("name", SETTINGS_NAMES)
def test_kernel_settings_replies_match_ipvsadm(name):
    info, config, timeout_txt, plain_txt, _, _ = load(name)
    got = parse_all(info, config)
    assert all(x == got[0] for x in got) and isinstance(got[0], bytes)
    s = Settings.unpack(got[0])
    assert s.attrs == 0x1F
    # "IP Virtual Server version 1.2.1 (size=4096)"
    m = re.search(r"IP Virtual Server version (\S+) \(size=(\d+)\)", plain_txt)
    assert (s.version_text, s.conn_tab_size) == (m.group(1), int(m.group(2)))
    # "Timeout (tcp tcpfin udp): 900 120 300"
    m = re.search(r"Timeout \(tcp tcpfin udp\): (\d+) (\d+) (\d+)", timeout_txt)
    assert (s.timeout_tcp, s.timeout_tcp_fin, s.timeout_udp) == tuple(map(int, m.groups()))


def test_standard_fixture_has_non_default_settings():
    """The recorder tuned the standard namespace: defaults cannot pass for it."""
    info, config, *_ = load("standard")
    s = Settings.unpack(pybackend.parse_settings(info, config))
    assert (s.timeout_tcp, s.timeout_tcp_fin, s.timeout_udp) == (1000, 100, 200)
    raw = load("standard")[5]
    assert raw["expire_nodest_conn"].strip() == "1" and raw["conn_reuse_mode"].strip() == "0"
    empty = load("empty")[5]
    assert empty["expire_nodest_conn"].strip() == "0" and empty["conn_reuse_mode"].strip() == "1"


def sysctl_tool(text):
    """`sysctl net.ipv4.vs` output -> {name: value text}."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(" = ")
        if sep and k.startswith("net.ipv4.vs."):
            out[k[len("net.ipv4.vs."):]] = v.strip()
    return out


@pytest.mark.parametrize("name", SETTINGS_NAMES)
def test_kernel_sysctls_match_sysctl_tool(name):
    *_, sysctl_txt, raw = load(name)
    tool = sysctl_tool(sysctl_txt)
    assert len(raw) >= 20 and set(raw) <= set(tool)
    values = dict(sysctl_values(sorted((k, v.encode()) for k, v in raw.items())))
    numeric = {k: int(v) for k, v in tool.items() if re.fullmatch(r"-?\d+", v)}
    assert values == {k: v for k, v in numeric.items() if k in raw}
    assert "sync_threshold" in raw and "sync_threshold" not in values   # "3\t50": skipped
    assert {"conn_reuse_mode", "expire_nodest_conn", "expire_quiescent_template"} <= set(values)


# -- --format ipvs ---------------------------------------------------------------------

def settings_snapshot(name="standard"):
    info, config, *_, raw = load(name)
    return dataclasses.replace(
        small_snapshot(), settings=pybackend.parse_settings(info, config),
        sysctls=sysctl_values(sorted((k, v.encode()) for k, v in raw.items())))


def ipvs_reference(results):
    from prometheus_client import CollectorRegistry, generate_latest
    reg = CollectorRegistry(auto_describe=False)
    reg.register(IPVSCollector(lambda: results))
    return generate_latest(reg)


def test_ipvs_format_settings_families():
    res = [result(settings_snapshot("standard"), ns="/a"), result(settings_snapshot("empty"), ns="/b"),
           result(ns="/down", up=False)]
    out = IPVSRenderer().render(res)
    got = {(n, lab): v for n, lab, v in samples(out)}
    assert samples(out) == samples(ipvs_reference(res))
    a, b = (("namespace", "/a"),), (("namespace", "/b"),)
    assert got[("ipvs_timeout_seconds", a + (("protocol", "tcp"),))] == 1000
    assert got[("ipvs_timeout_seconds", a + (("protocol", "tcp_fin"),))] == 100
    assert got[("ipvs_timeout_seconds", (("namespace", "/b"), ("protocol", "udp")))] == 300
    assert got[("ipvs_sysctl_expire_nodest_conn", a)] == 1
    assert got[("ipvs_sysctl_expire_nodest_conn", b)] == 0
    assert got[("ipvs_sysctl_conn_reuse_mode", a)] == 0
    assert got[("ipvs_version_info", (("namespace", "/a"), ("version", "1.2.1")))] == 1
    assert got[("ipvs_connection_table_size", a)] > 0
    assert not any(n == "ipvs_sysctl_sync_threshold" for n, _, _ in samples(out))
    assert not any(dict(lab).get("namespace") == "/down" and n.startswith("ipvs_sysctl")
                   for n, lab, _ in samples(out))
    text = out.decode()
    assert text.count("# TYPE ipvs_sysctl_expire_nodest_conn gauge") == 1
    assert "# HELP ipvs_sysctl_expire_nodest_conn 1 = expire" in text
    # families like any other for --metrics.*
    r = IPVSRenderer(metric_filter=FamilyFilter([], ["ipvs_sysctl_*", "ipvs_timeout_seconds"]))
    names = {n for n, _, _ in samples(r.render(res))}
    assert "ipvs_connection_table_size" in names and not any(
        n.startswith("ipvs_sysctl_") or n == "ipvs_timeout_seconds" for n in names)


def test_ipvs_format_without_settings_has_none():
    names = {n for n, _, _ in samples(IPVSRenderer().render([result(small_snapshot())]))}
    assert not names & {"ipvs_connection_table_size", "ipvs_version_info", "ipvs_timeout_seconds"}
