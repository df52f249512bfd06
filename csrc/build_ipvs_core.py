"""cffi builder for ipvs_fast._ipvs_core (out-of-line API mode).

Used by setup.py via ``cffi_modules=["csrc/build_ipvs_core.py:ffibuilder"]``;
can also be run directly (``python3 csrc/build_ipvs_core.py``) to build the
extension into the current directory for ad-hoc testing.

API mode releases the GIL around every C call (cffi's default), so a dump in
one thread does not stall the event loop or other threads.
"""
import os

import cffi

_HERE = os.path.dirname(os.path.abspath(__file__))


def _rel(*parts):
    # setuptools wants source paths relative to the directory setup.py runs
    # in (the repo root); fall back to absolute if that is impossible.
    p = os.path.join(_HERE, *parts)
    try:
        return os.path.relpath(p)
    except ValueError:
        return p


CDEF = r"""
#define IPVS_NSTATS 10

#define IPVS_REC_STATS64 1
#define IPVS_REC_STATS32 2
#define IPVS_REC_PE_NAME 4
#define IPVS_REC_DEST_AF 8
#define IPVS_REC_TUN 16

struct ipvs_svc_rec {
    uint16_t af;
    uint16_t protocol;
    uint16_t port;
    uint16_t attrs;
    uint32_t fwmark;
    uint32_t flags;
    uint32_t timeout;
    uint32_t netmask;
    uint8_t  addr[16];
    char     sched_name[16];
    char     pe_name[32];
    uint64_t stats[10];
    uint32_t first_dest;
    uint32_t ndests;
};

struct ipvs_dest_rec {
    uint32_t svc_index;
    uint16_t af;
    uint16_t port;
    uint8_t  addr[16];
    uint32_t fwd_method;
    int32_t  weight;
    uint32_t u_thresh;
    uint32_t l_thresh;
    uint32_t active_conns;
    uint32_t inact_conns;
    uint32_t persist_conns;
    uint16_t tun_port;
    uint16_t tun_flags;
    uint8_t  tun_type;
    uint8_t  _pad0;
    uint16_t attrs;
    uint32_t _pad1;
    uint64_t stats[10];
};

typedef struct ipvs_result {
    struct ipvs_svc_rec  *svcs;
    size_t nsvcs, svc_cap;
    struct ipvs_dest_rec *dests;
    size_t ndests, dest_cap;
} ipvs_result;

ipvs_result *ipvs_result_new(void);
void ipvs_result_clear(ipvs_result *res);
void ipvs_result_free(ipvs_result *res);

int ipvs_parse_service_msgs(const uint8_t *buf, size_t len, uint16_t family_id,
                            ipvs_result *res, char *errbuf, size_t errlen);
int ipvs_parse_dest_msgs(const uint8_t *buf, size_t len, uint16_t family_id,
                         uint32_t svc_index, uint16_t svc_af,
                         ipvs_result *res, char *errbuf, size_t errlen);

typedef struct ipvs_handle ipvs_handle;

ipvs_handle *ipvs_open(const char *ns_path, int timeout_ms, int *err,
                       char *errbuf, size_t errlen);
void ipvs_close(ipvs_handle *h);
int ipvs_ns_ident(ipvs_handle *h, uint64_t *dev, uint64_t *ino);
int ipvs_dump(ipvs_handle *h, ipvs_result *res, char *errbuf, size_t errlen);
long ipvs_read_totals(ipvs_handle *h, char *buf, size_t len);

long ipvs_format_samples(const char *name, size_t name_len,
                         const char *blocks, const uint32_t *off,
                         const uint8_t *values, size_t stride, int width,
                         size_t n, char *out, size_t cap);
long ipvs_format_length(size_t name_len, const uint32_t *off,
                        const uint8_t *values, size_t stride, int width, size_t n);
"""

ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "ipvs_fast._ipvs_core",
    '#include "ipvs_core.h"\n#include "text_format.h"',
    sources=[_rel("ipvs_core.c"), _rel("text_format.c")],
    include_dirs=[_rel()],
    depends=[_rel("ipvs_core.h"), _rel("text_format.h")],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
