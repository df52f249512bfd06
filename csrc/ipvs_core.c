/*
 * ipvs_core.c: generic netlink client for the Linux IPVS family.
 * See ipvs_core.h for the contract.
 *
 * Parsing style is libmnl-like: tiny bounds-checked attribute iterators, every
 * nla_len checked against the remaining length, every fixed-size payload
 * length checked exactly, nesting bounded (message -> CMD_ATTR_{SERVICE,DEST}
 * -> STATS/STATS64, no recursion). Multi-byte payloads are read with memcpy,
 * so nothing assumes the input buffer is aligned.
 */
#define _GNU_SOURCE
#include "ipvs_core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/genetlink.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#ifndef CLONE_NEWNET
#define CLONE_NEWNET 0x40000000
#endif
#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif
#ifndef NS_GET_NSTYPE
#define NS_GET_NSTYPE _IO(0xb7, 0x3)    /* Linux 4.11 */
#endif

_Static_assert(sizeof(struct ipvs_svc_rec) == 176, "ipvs_svc_rec layout");
_Static_assert(sizeof(struct ipvs_dest_rec) == 144, "ipvs_dest_rec layout");

/*
 * IPVS generic netlink ABI (include/uapi/linux/ip_vs.h). Numbered here rather
 * than taken from <linux/ip_vs.h> so that building does not depend on how
 * recent the installed kernel headers are (TUN_* appeared in 5.2).
 */
#define K_IPVS_GENL_NAME        "IPVS"
#define K_IPVS_GENL_VERSION     0x1

#define K_CMD_GET_SERVICE       4
#define K_CMD_GET_DEST          8

#define K_CMD_ATTR_SERVICE      1
#define K_CMD_ATTR_DEST         2

#define K_SVC_ATTR_AF           1
#define K_SVC_ATTR_PROTOCOL     2
#define K_SVC_ATTR_ADDR         3
#define K_SVC_ATTR_PORT         4
#define K_SVC_ATTR_FWMARK       5
#define K_SVC_ATTR_SCHED_NAME   6
#define K_SVC_ATTR_FLAGS        7
#define K_SVC_ATTR_TIMEOUT      8
#define K_SVC_ATTR_NETMASK      9
#define K_SVC_ATTR_STATS        10
#define K_SVC_ATTR_PE_NAME      11
#define K_SVC_ATTR_STATS64      12

#define K_DEST_ATTR_ADDR        1
#define K_DEST_ATTR_PORT        2
#define K_DEST_ATTR_FWD_METHOD  3
#define K_DEST_ATTR_WEIGHT      4
#define K_DEST_ATTR_U_THRESH    5
#define K_DEST_ATTR_L_THRESH    6
#define K_DEST_ATTR_ACTIVE_CONNS 7
#define K_DEST_ATTR_INACT_CONNS 8
#define K_DEST_ATTR_PERSIST_CONNS 9
#define K_DEST_ATTR_STATS       10
#define K_DEST_ATTR_ADDR_FAMILY 11
#define K_DEST_ATTR_STATS64     12
#define K_DEST_ATTR_TUN_TYPE    13
#define K_DEST_ATTR_TUN_PORT    14
#define K_DEST_ATTR_TUN_FLAGS   15

/* IPVS_STATS_ATTR_CONNS(1) .. IPVS_STATS_ATTR_OUTBPS(10); PAD = 11 */
#define K_STATS_ATTR_FIRST      1
#define K_STATS_ATTR_INBYTES    4
#define K_STATS_ATTR_OUTBYTES   5


#define RECV_BUF_SIZE           (64 * 1024)
/* Datagrams read per recvmmsg() in a dump. The kernel makes a dump's next
 * datagram (for a GET_DEST dump of a few destinations: its NLMSG_DONE) while
 * the previous one is being received, so one call returns it too: two
 * syscalls per service (send, receive) instead of three, which is most of
 * the cost of a 10,000-service scrape. */
#define DUMP_BATCH              4
#define RCVBUF_WANT             (1024 * 1024)
#define DRAIN_MAX_DATAGRAMS     100000
#define TABLE_READ              (64 * 1024)
#define TABLE_MAX               (1024 * 1024 * 1024)
#define TABLE_LOOKAHEAD         8

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!errbuf || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint16_t be16_to_host(uint16_t v) { return (uint16_t)((v >> 8) | (v << 8)); }

/* Copy a (possibly NUL-terminated) string payload into a NUL-padded field. */
static void copy_str(char *dst, size_t dstlen, const uint8_t *p, size_t plen)
{
    size_t n = 0;

    while (n < plen && n < dstlen - 1 && p[n] != 0)
        n++;
    memset(dst, 0, dstlen);
    memcpy(dst, p, n);
}

/*
 * Bytes from one netlink message or attribute (length n, already checked to
 * be <= left) to the next: n rounded up to 4, or all that is left when the
 * padding would run past the end. In size_t throughout: NLMSG_ALIGN's mask is
 * 32 bits wide, so NLMSG_ALIGN((size_t)0xFFFFFFFD) is 0 and a walk using it
 * would never advance.
 */
static size_t advance4(size_t n, size_t left)
{
    size_t pad = (4 - (n & 3)) & 3;

    return pad > left - n ? left : n + pad;
}

/* ------------------------------------------------------------------------ */
/* attribute iterator                                                       */

struct attr_iter {
    const uint8_t *p;
    size_t left;
};

struct attr {
    uint16_t type;          /* NLA_TYPE_MASK applied */
    const uint8_t *data;
    size_t len;             /* payload length */
};

static void attr_iter_init(struct attr_iter *it, const uint8_t *p, size_t len)
{
    it->p = p;
    it->left = len;
}

/* 1: got an attribute, 0: end, -EBADMSG: malformed. */
static int attr_next(struct attr_iter *it, struct attr *a)
{
    uint16_t nla_len, nla_type;
    size_t adv;

    if (it->left < NLA_HDRLEN) {
        /* Fewer bytes than a header left: only alignment padding is OK. */
        return it->left == 0 ? 0 : -EBADMSG;
    }
    nla_len = rd16(it->p);
    nla_type = rd16(it->p + 2);
    if (nla_len < NLA_HDRLEN || nla_len > it->left)
        return -EBADMSG;
    a->type = nla_type & NLA_TYPE_MASK;
    a->data = it->p + NLA_HDRLEN;
    a->len = (size_t)nla_len - NLA_HDRLEN;
    adv = advance4(nla_len, it->left);
    it->p += adv;
    it->left -= adv;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* result arrays                                                            */

ipvs_result *ipvs_result_new(void)
{
    return calloc(1, sizeof(ipvs_result));
}

void ipvs_result_clear(ipvs_result *res)
{
    if (!res)
        return;
    res->nsvcs = 0;
    res->ndests = 0;
}

void ipvs_result_free(ipvs_result *res)
{
    if (!res)
        return;
    free(res->svcs);
    free(res->dests);
    free(res);
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *p;

    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > ((size_t)-1) / 2 / elem)
            return -ENOMEM;
        ncap *= 2;
    }
    if (ncap > ((size_t)-1) / elem)
        return -ENOMEM;
    p = realloc(*arr, ncap * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static int push_svc(ipvs_result *res, const struct ipvs_svc_rec *r)
{
    void *arr = res->svcs;
    int rc = grow(&arr, &res->svc_cap, res->nsvcs + 1, sizeof(*r));

    res->svcs = arr;
    if (rc < 0)
        return rc;
    res->svcs[res->nsvcs++] = *r;
    return 0;
}

static int push_dest(ipvs_result *res, const struct ipvs_dest_rec *r)
{
    void *arr = res->dests;
    int rc = grow(&arr, &res->dest_cap, res->ndests + 1, sizeof(*r));

    res->dests = arr;
    if (rc < 0)
        return rc;
    res->dests[res->ndests++] = *r;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* attribute decoding                                                       */

/* Parse a STATS (is64 = 0) or STATS64 (is64 = 1) nest into out[10]. */
static int parse_stats(const uint8_t *p, size_t len, int is64, uint64_t *out,
                       const char *what, char *errbuf, size_t errlen)
{
    struct attr_iter it;
    struct attr a;
    int r;

    memset(out, 0, IPVS_NSTATS * sizeof(uint64_t));
    attr_iter_init(&it, p, len);
    while ((r = attr_next(&it, &a)) > 0) {
        size_t want;

        if (a.type < K_STATS_ATTR_FIRST || a.type >= K_STATS_ATTR_FIRST + IPVS_NSTATS)
            continue;       /* IPVS_STATS_ATTR_PAD and anything newer */
        want = (is64 || a.type == K_STATS_ATTR_INBYTES ||
                a.type == K_STATS_ATTR_OUTBYTES) ? 8 : 4;
        if (a.len != want) {
            seterr(errbuf, errlen, "%s: stats attribute %u has length %zu, expected %zu",
                   what, a.type, a.len, want);
            return -EBADMSG;
        }
        out[a.type - K_STATS_ATTR_FIRST] = want == 8 ? rd64(a.data) : rd32(a.data);
    }
    if (r < 0) {
        seterr(errbuf, errlen, "%s: malformed stats nest", what);
        return r;
    }
    return 0;
}

/* STATS64 preferred over STATS; both were validated when present. */
static void set_stats(uint64_t *dst, uint16_t *attrs, const uint64_t *st32, const uint64_t *st64)
{
    if (st64) {
        memcpy(dst, st64, IPVS_NSTATS * sizeof(uint64_t));
        *attrs |= IPVS_REC_STATS64;
    } else if (st32) {
        memcpy(dst, st32, IPVS_NSTATS * sizeof(uint64_t));
        *attrs |= IPVS_REC_STATS32;
    }
}

#define NEED_LEN(a, n, what) do {                                           \
        if ((a).len != (n)) {                                               \
            seterr(errbuf, errlen, "%s attribute has length %zu, expected %d", \
                   (what), (a).len, (int)(n));                              \
            return -EBADMSG;                                                \
        }                                                                   \
    } while (0)

static int parse_service_nest(const uint8_t *p, size_t len, struct ipvs_svc_rec *rec,
                              char *errbuf, size_t errlen)
{
    struct attr_iter it;
    struct attr a;
    uint64_t st32[IPVS_NSTATS], st64[IPVS_NSTATS];
    int have32 = 0, have64 = 0, have_af = 0;
    int r;

    memset(rec, 0, sizeof(*rec));
    attr_iter_init(&it, p, len);
    while ((r = attr_next(&it, &a)) > 0) {
        switch (a.type) {
        case K_SVC_ATTR_AF:
            NEED_LEN(a, 2, "service AF");
            rec->af = rd16(a.data);
            have_af = 1;
            break;
        case K_SVC_ATTR_PROTOCOL:
            NEED_LEN(a, 2, "service PROTOCOL");
            rec->protocol = rd16(a.data);
            break;
        case K_SVC_ATTR_ADDR:
            if (a.len < 4 || a.len > 16) {
                seterr(errbuf, errlen, "service ADDR attribute has length %zu, expected 4..16",
                       a.len);
                return -EBADMSG;
            }
            memset(rec->addr, 0, sizeof(rec->addr));
            memcpy(rec->addr, a.data, a.len);
            break;
        case K_SVC_ATTR_PORT:
            NEED_LEN(a, 2, "service PORT");
            rec->port = be16_to_host(rd16(a.data));
            break;
        case K_SVC_ATTR_FWMARK:
            NEED_LEN(a, 4, "service FWMARK");
            rec->fwmark = rd32(a.data);
            break;
        case K_SVC_ATTR_SCHED_NAME:
            copy_str(rec->sched_name, sizeof(rec->sched_name), a.data, a.len);
            break;
        case K_SVC_ATTR_FLAGS:
            NEED_LEN(a, 8, "service FLAGS");
            rec->flags = rd32(a.data);          /* struct ip_vs_flags.flags */
            break;
        case K_SVC_ATTR_TIMEOUT:
            NEED_LEN(a, 4, "service TIMEOUT");
            rec->timeout = rd32(a.data);
            break;
        case K_SVC_ATTR_NETMASK:
            NEED_LEN(a, 4, "service NETMASK");
            memcpy(&rec->netmask, a.data, 4);   /* raw, see header */
            break;
        case K_SVC_ATTR_PE_NAME:
            copy_str(rec->pe_name, sizeof(rec->pe_name), a.data, a.len);
            rec->attrs |= IPVS_REC_PE_NAME;
            break;
        case K_SVC_ATTR_STATS:
            r = parse_stats(a.data, a.len, 0, st32, "service STATS", errbuf, errlen);
            if (r < 0)
                return r;
            have32 = 1;
            break;
        case K_SVC_ATTR_STATS64:
            r = parse_stats(a.data, a.len, 1, st64, "service STATS64", errbuf, errlen);
            if (r < 0)
                return r;
            have64 = 1;
            break;
        default:
            break;
        }
    }
    if (r < 0) {
        seterr(errbuf, errlen, "malformed attribute in IPVS_CMD_ATTR_SERVICE");
        return r;
    }
    if (!have_af) {
        seterr(errbuf, errlen, "service without IPVS_SVC_ATTR_AF");
        return -EBADMSG;
    }
    set_stats(rec->stats, &rec->attrs, have32 ? st32 : NULL, have64 ? st64 : NULL);
    return 0;
}

static int parse_dest_nest(const uint8_t *p, size_t len, uint16_t svc_af,
                           struct ipvs_dest_rec *rec, char *errbuf, size_t errlen)
{
    struct attr_iter it;
    struct attr a;
    uint64_t st32[IPVS_NSTATS], st64[IPVS_NSTATS];
    int have32 = 0, have64 = 0, have_af = 0;
    int r;

    memset(rec, 0, sizeof(*rec));
    attr_iter_init(&it, p, len);
    while ((r = attr_next(&it, &a)) > 0) {
        switch (a.type) {
        case K_DEST_ATTR_ADDR:
            if (a.len < 4 || a.len > 16) {
                seterr(errbuf, errlen, "dest ADDR attribute has length %zu, expected 4..16",
                       a.len);
                return -EBADMSG;
            }
            memset(rec->addr, 0, sizeof(rec->addr));
            memcpy(rec->addr, a.data, a.len);
            break;
        case K_DEST_ATTR_PORT:
            NEED_LEN(a, 2, "dest PORT");
            rec->port = be16_to_host(rd16(a.data));
            break;
        case K_DEST_ATTR_FWD_METHOD:
            NEED_LEN(a, 4, "dest FWD_METHOD");
            rec->fwd_method = rd32(a.data);
            break;
        case K_DEST_ATTR_WEIGHT:
            NEED_LEN(a, 4, "dest WEIGHT");
            memcpy(&rec->weight, a.data, 4);
            break;
        case K_DEST_ATTR_U_THRESH:
            NEED_LEN(a, 4, "dest U_THRESH");
            rec->u_thresh = rd32(a.data);
            break;
        case K_DEST_ATTR_L_THRESH:
            NEED_LEN(a, 4, "dest L_THRESH");
            rec->l_thresh = rd32(a.data);
            break;
        case K_DEST_ATTR_ACTIVE_CONNS:
            NEED_LEN(a, 4, "dest ACTIVE_CONNS");
            rec->active_conns = rd32(a.data);
            break;
        case K_DEST_ATTR_INACT_CONNS:
            NEED_LEN(a, 4, "dest INACT_CONNS");
            rec->inact_conns = rd32(a.data);
            break;
        case K_DEST_ATTR_PERSIST_CONNS:
            NEED_LEN(a, 4, "dest PERSIST_CONNS");
            rec->persist_conns = rd32(a.data);
            break;
        case K_DEST_ATTR_ADDR_FAMILY:
            NEED_LEN(a, 2, "dest ADDR_FAMILY");
            rec->af = rd16(a.data);
            rec->attrs |= IPVS_REC_DEST_AF;
            have_af = 1;
            break;
        case K_DEST_ATTR_TUN_TYPE:
            NEED_LEN(a, 1, "dest TUN_TYPE");
            rec->tun_type = a.data[0];
            rec->attrs |= IPVS_REC_TUN;
            break;
        case K_DEST_ATTR_TUN_PORT:
            NEED_LEN(a, 2, "dest TUN_PORT");
            rec->tun_port = be16_to_host(rd16(a.data));
            rec->attrs |= IPVS_REC_TUN;
            break;
        case K_DEST_ATTR_TUN_FLAGS:
            NEED_LEN(a, 2, "dest TUN_FLAGS");
            rec->tun_flags = rd16(a.data);
            rec->attrs |= IPVS_REC_TUN;
            break;
        case K_DEST_ATTR_STATS:
            r = parse_stats(a.data, a.len, 0, st32, "dest STATS", errbuf, errlen);
            if (r < 0)
                return r;
            have32 = 1;
            break;
        case K_DEST_ATTR_STATS64:
            r = parse_stats(a.data, a.len, 1, st64, "dest STATS64", errbuf, errlen);
            if (r < 0)
                return r;
            have64 = 1;
            break;
        default:
            break;
        }
    }
    if (r < 0) {
        seterr(errbuf, errlen, "malformed attribute in IPVS_CMD_ATTR_DEST");
        return r;
    }
    if (!have_af)
        rec->af = svc_af;       /* kernels < 3.18 */
    set_stats(rec->stats, &rec->attrs, have32 ? st32 : NULL, have64 ? st64 : NULL);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* message walking                                                          */

enum dump_kind { KIND_SERVICE, KIND_DEST };

struct parse_ctx {
    enum dump_kind kind;
    uint16_t family_id;     /* 0 = do not check nlmsg_type */
    int check_seq;          /* socket mode: skip messages not for us */
    uint32_t seq;
    uint32_t portid;
    uint32_t svc_index;
    uint16_t svc_af;
    ipvs_result *res;
    char *errbuf;
    size_t errlen;
};

static const char *kind_name(enum dump_kind k)
{
    return k == KIND_SERVICE ? "GET_SERVICE" : "GET_DEST";
}

/*
 * Walk one buffer of netlink messages. 1: NLMSG_DONE seen,
 * 0: more expected, -errno: kernel error or malformed input.
 */
static int parse_msgs(struct parse_ctx *c, const uint8_t *buf, size_t len)
{
    char *errbuf = c->errbuf;
    size_t errlen = c->errlen;

    if (!buf && len) {
        seterr(errbuf, errlen, "NULL buffer");
        return -EINVAL;
    }
    while (len > 0) {
        struct nlmsghdr nlh;
        const uint8_t *payload;
        size_t plen, adv;

        if (len < NLMSG_HDRLEN) {
            seterr(errbuf, errlen, "%s reply: %zu trailing bytes, shorter than a netlink header",
                   kind_name(c->kind), len);
            return -EBADMSG;
        }
        memcpy(&nlh, buf, sizeof(nlh));
        if (nlh.nlmsg_len < NLMSG_HDRLEN || nlh.nlmsg_len > len) {
            seterr(errbuf, errlen, "%s reply: nlmsg_len %u out of range (%zu bytes left)",
                   kind_name(c->kind), nlh.nlmsg_len, len);
            return -EBADMSG;
        }
        payload = buf + NLMSG_HDRLEN;
        plen = nlh.nlmsg_len - NLMSG_HDRLEN;
        adv = advance4(nlh.nlmsg_len, len);
        buf += adv;
        len -= adv;

        if (c->check_seq && (nlh.nlmsg_seq != c->seq || nlh.nlmsg_pid != c->portid))
            continue;       /* stale or foreign message */

        if (nlh.nlmsg_type == NLMSG_ERROR) {
            int32_t e;

            if (plen < sizeof(int32_t)) {
                seterr(errbuf, errlen, "%s reply: truncated NLMSG_ERROR", kind_name(c->kind));
                return -EBADMSG;
            }
            memcpy(&e, payload, sizeof(e));
            if (e == 0)
                continue;   /* ACK (not requested for dumps): nothing to take */
            if (e > 0 || e < -4095) {
                seterr(errbuf, errlen, "%s reply: NLMSG_ERROR with invalid error %d",
                       kind_name(c->kind), (int)e);
                return -EBADMSG;
            }
            seterr(errbuf, errlen, "kernel rejected %s: %s", kind_name(c->kind), strerror(-e));
            return e;
        }
        if (nlh.nlmsg_type == NLMSG_DONE) {
            if (plen >= sizeof(int32_t)) {
                int32_t e;

                memcpy(&e, payload, sizeof(e));
                if (e < -4095) {
                    seterr(errbuf, errlen, "%s reply: NLMSG_DONE with invalid error %d",
                           kind_name(c->kind), (int)e);
                    return -EBADMSG;
                }
                if (e < 0) {
                    seterr(errbuf, errlen, "kernel aborted %s dump: %s",
                           kind_name(c->kind), strerror(-e));
                    return e;
                }
            }
            return 1;
        }
        if (nlh.nlmsg_type == NLMSG_NOOP)
            continue;
        if (nlh.nlmsg_type < NLMSG_MIN_TYPE) {
            seterr(errbuf, errlen, "%s reply: unexpected control message type %u",
                   kind_name(c->kind), nlh.nlmsg_type);
            return -EBADMSG;
        }
        if (c->family_id && nlh.nlmsg_type != c->family_id) {
            seterr(errbuf, errlen, "%s reply: unexpected message type %u (IPVS family is %u)",
                   kind_name(c->kind), nlh.nlmsg_type, c->family_id);
            return -EBADMSG;
        }
        if (plen < GENL_HDRLEN) {
            seterr(errbuf, errlen, "%s reply: message too short for a genl header",
                   kind_name(c->kind));
            return -EBADMSG;
        }
        {
            /* genlmsghdr.cmd (NEW_SERVICE / NEW_DEST) is not checked:
             * the nest type says what the message carries. */
            uint16_t nest_type = c->kind == KIND_SERVICE ? K_CMD_ATTR_SERVICE : K_CMD_ATTR_DEST;
            struct attr_iter it;
            struct attr a, nest = { 0, NULL, 0 };
            int r;

            attr_iter_init(&it, payload + GENL_HDRLEN, plen - GENL_HDRLEN);
            while ((r = attr_next(&it, &a)) > 0) {
                if (a.type == nest_type)
                    nest = a;
            }
            if (r < 0) {
                seterr(errbuf, errlen, "%s reply: malformed top-level attribute",
                       kind_name(c->kind));
                return r;
            }
            if (!nest.data) {
                seterr(errbuf, errlen, "%s reply: message without %s nest", kind_name(c->kind),
                       c->kind == KIND_SERVICE ? "IPVS_CMD_ATTR_SERVICE" : "IPVS_CMD_ATTR_DEST");
                return -EBADMSG;
            }
            if (c->kind == KIND_SERVICE) {
                struct ipvs_svc_rec rec;

                r = parse_service_nest(nest.data, nest.len, &rec, errbuf, errlen);
                if (r < 0)
                    return r;
                r = push_svc(c->res, &rec);
            } else {
                struct ipvs_dest_rec rec;

                r = parse_dest_nest(nest.data, nest.len, c->svc_af, &rec, errbuf, errlen);
                if (r < 0)
                    return r;
                rec.svc_index = c->svc_index;
                r = push_dest(c->res, &rec);
            }
            if (r < 0) {
                seterr(errbuf, errlen, "out of memory growing the result arrays");
                return r;
            }
        }
    }
    return 0;
}

int ipvs_parse_service_msgs(const uint8_t *buf, size_t len, uint16_t family_id,
                            ipvs_result *res, char *errbuf, size_t errlen)
{
    struct parse_ctx c;

    if (!res) {
        seterr(errbuf, errlen, "NULL result");
        return -EINVAL;
    }
    memset(&c, 0, sizeof(c));
    c.kind = KIND_SERVICE;
    c.family_id = family_id;
    c.res = res;
    c.errbuf = errbuf;
    c.errlen = errlen;
    return parse_msgs(&c, buf, len);
}

int ipvs_parse_dest_msgs(const uint8_t *buf, size_t len, uint16_t family_id,
                         uint32_t svc_index, uint16_t svc_af,
                         ipvs_result *res, char *errbuf, size_t errlen)
{
    struct parse_ctx c;

    if (!res) {
        seterr(errbuf, errlen, "NULL result");
        return -EINVAL;
    }
    memset(&c, 0, sizeof(c));
    c.kind = KIND_DEST;
    c.family_id = family_id;
    c.svc_index = svc_index;
    c.svc_af = svc_af;
    c.res = res;
    c.errbuf = errbuf;
    c.errlen = errlen;
    return parse_msgs(&c, buf, len);
}

/* ------------------------------------------------------------------------ */
/* /proc/net/ip_vs: the service table as text (what node_exporter reads)    */

#define TBL_SVC_F_PERSISTENT 0x0001     /* IP_VS_SVC_F_PERSISTENT */
#define TBL_SVC_F_ONEPACKET  0x0004     /* IP_VS_SVC_F_ONEPACKET */

struct cursor {
    const char *p, *end;    /* the current line, without its '\n' */
};

static int hexdigit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void skip_blanks(struct cursor *c)
{
    while (c->p < c->end && *c->p == ' ')
        c->p++;
}

/* Exactly n hex digits (the kernel prints them zero padded). */
static int take_hex(struct cursor *c, int n, uint32_t *out)
{
    uint32_t v = 0;
    int i, d;

    if (c->end - c->p < n)
        return -1;
    for (i = 0; i < n; i++) {
        d = hexdigit(c->p[i]);
        if (d < 0)
            return -1;
        v = v << 4 | (uint32_t)d;
    }
    c->p += n;
    *out = v;
    return 0;
}

static int take_char(struct cursor *c, char ch)
{
    if (c->p >= c->end || *c->p != ch)
        return -1;
    c->p++;
    return 0;
}

/* A run of non-blank characters, after blanks. */
static int take_word(struct cursor *c, const char **w, size_t *n)
{
    skip_blanks(c);
    *w = c->p;
    while (c->p < c->end && *c->p != ' ')
        c->p++;
    *n = (size_t)(c->p - *w);
    return *n ? 0 : -1;
}

/* At least one blank, then a word. */
static int take_next_word(struct cursor *c, const char **w, size_t *n)
{
    if (c->p >= c->end || *c->p != ' ')
        return -1;
    return take_word(c, w, n);
}

static int word_is(const char *w, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(w, lit, n) == 0;
}

/* A decimal int32 as "%d" prints it, after blanks. */
static int take_int(struct cursor *c, int32_t *out)
{
    const char *w;
    size_t n, i = 0;
    int64_t v = 0;
    int neg = 0;

    if (take_word(c, &w, &n) < 0)
        return -1;
    if (w[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 10)
        return -1;
    for (; i < n; i++) {
        if (w[i] < '0' || w[i] > '9')
            return -1;
        v = v * 10 + (w[i] - '0');
    }
    if (neg)
        v = -v;
    if (v < INT32_MIN || v > INT32_MAX)
        return -1;
    *out = (int32_t)v;
    return 0;
}

/* "HHHHHHHH:PPPP" or "[hhhh:hhhh:hhhh:hhhh:hhhh:hhhh:hhhh:hhhh]:PPPP" (%pI6). */
static int take_addr_port(struct cursor *c, uint16_t *af, uint8_t addr[16], uint16_t *port)
{
    uint32_t v;
    int i;

    memset(addr, 0, 16);
    if (c->p < c->end && *c->p == '[') {
        c->p++;
        for (i = 0; i < 8; i++) {
            if ((i && take_char(c, ':') < 0) || take_hex(c, 4, &v) < 0)
                return -1;
            addr[2 * i] = (uint8_t)(v >> 8);
            addr[2 * i + 1] = (uint8_t)v;
        }
        if (take_char(c, ']') < 0)
            return -1;
        *af = AF_INET6;
    } else {
        if (take_hex(c, 8, &v) < 0)
            return -1;
        addr[0] = (uint8_t)(v >> 24);
        addr[1] = (uint8_t)(v >> 16);
        addr[2] = (uint8_t)(v >> 8);
        addr[3] = (uint8_t)v;
        *af = AF_INET;
    }
    if (take_char(c, ':') < 0 || take_hex(c, 4, &v) < 0)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* ip_vs_proto_name() */
static int proto_number(const char *w, size_t n, uint16_t *proto)
{
    size_t i;
    uint32_t v = 0;

    if (word_is(w, n, "TCP"))
        *proto = IPPROTO_TCP;
    else if (word_is(w, n, "UDP"))
        *proto = IPPROTO_UDP;
    else if (word_is(w, n, "SCTP"))
        *proto = IPPROTO_SCTP;
    else if (word_is(w, n, "ICMP"))
        *proto = IPPROTO_ICMP;
    else if (word_is(w, n, "ICMPv6"))
        *proto = IPPROTO_ICMPV6;
    else if (word_is(w, n, "IP"))
        *proto = 0;
    else if (n > 3 && n <= 6 && memcmp(w, "IP_", 3) == 0) {
        for (i = 3; i < n; i++) {
            if (w[i] < '0' || w[i] > '9')
                return -1;
            v = v * 10 + (uint32_t)(w[i] - '0');
        }
        if (v > 255)
            return -1;
        *proto = (uint16_t)v;
    } else
        return -1;
    return 0;
}

/* "TCP  0A000001:0050 wlc [ops ][persistent 300 FFFFFFFF]" / "FWM  00000100 rr ..." */
static int table_service(struct cursor *c, struct ipvs_svc_rec *s)
{
    const char *w;
    size_t n;
    int32_t timeout;
    uint32_t v;

    memset(s, 0, sizeof(*s));
    if (take_word(c, &w, &n) < 0 || c->p >= c->end || *c->p != ' ')
        return -1;
    skip_blanks(c);
    if (word_is(w, n, "FWM")) {
        if (take_hex(c, 8, &s->fwmark) < 0)
            return -1;
        s->af = AF_INET;        /* the table does not say */
    } else if (proto_number(w, n, &s->protocol) < 0 ||
               take_addr_port(c, &s->af, s->addr, &s->port) < 0) {
        return -1;
    }
    if (take_next_word(c, &w, &n) < 0 || n >= sizeof(s->sched_name))
        return -1;
    for (size_t i = 0; i < n; i++)      /* a registered name, printable ASCII */
        if (w[i] < '!' || w[i] > '~')
            return -1;
    memcpy(s->sched_name, w, n);
    while (take_word(c, &w, &n) == 0) {
        if (word_is(w, n, "ops")) {
            s->flags |= TBL_SVC_F_ONEPACKET;
        } else if (word_is(w, n, "persistent")) {
            skip_blanks(c);
            if (take_int(c, &timeout) < 0 || timeout < 0)
                return -1;
            skip_blanks(c);
            if (take_hex(c, 8, &v) < 0)
                return -1;
            s->flags |= TBL_SVC_F_PERSISTENT;
            s->timeout = (uint32_t)timeout;
            {   /* printed as ntohl(netmask); the record holds the raw bytes */
                uint8_t raw[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
                                   (uint8_t)(v >> 8), (uint8_t)v };

                memcpy(&s->netmask, raw, 4);
            }
        } else {
            return -1;
        }
    }
    return 0;
}

/* "  -> AC100001:1F90      Masq    1      0          0" */
static int table_dest(struct cursor *c, struct ipvs_dest_rec *d)
{
    const char *w;
    size_t n;
    int32_t active, inactive;

    memset(d, 0, sizeof(*d));
    if (take_addr_port(c, &d->af, d->addr, &d->port) < 0 || take_next_word(c, &w, &n) < 0)
        return -1;
    if (word_is(w, n, "Masq"))
        d->fwd_method = 0;
    else if (word_is(w, n, "Local"))
        d->fwd_method = 1;
    else if (word_is(w, n, "Tunnel"))
        d->fwd_method = 2;
    else if (word_is(w, n, "Route"))
        d->fwd_method = 3;
    else
        return -1;
    if (take_int(c, &d->weight) < 0 || take_int(c, &active) < 0 || take_int(c, &inactive) < 0)
        return -1;
    skip_blanks(c);
    if (c->p != c->end)
        return -1;
    d->active_conns = (uint32_t)active;
    d->inact_conns = (uint32_t)inactive;
    return 0;
}

int ipvs_parse_table(const char *text, size_t len, ipvs_result *res,
                     char *errbuf, size_t errlen)
{
    static const char *const head[3] = {
        "IP Virtual Server version ",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn",
    };
    const char *p = text, *end = text, *nl;
    struct ipvs_svc_rec s;
    struct ipvs_dest_rec d;
    struct ipvs_svc_rec *cur;
    size_t line = 0;
    int rc;

    if (errbuf && errlen)
        errbuf[0] = 0;
    if (!res || (!text && len))
        return -EINVAL;
    if (len)
        end = text + len;       /* no arithmetic on a NULL text of length 0 */
    ipvs_result_clear(res);
    while (p < end) {
        struct cursor c;

        nl = memchr(p, '\n', (size_t)(end - p));
        line++;
        if (!nl) {
            seterr(errbuf, errlen, "ip_vs table: line %zu has no end (truncated)", line);
            return -EBADMSG;
        }
        c.p = p;
        c.end = nl;
        p = nl + 1;
        if (line <= 3) {
            size_t hl = strlen(head[line - 1]);

            if ((size_t)(c.end - c.p) < hl || memcmp(c.p, head[line - 1], hl) != 0)
                goto bad;
            continue;
        }
        if (c.end - c.p >= 5 && memcmp(c.p, "  -> ", 5) == 0) {
            if (!res->nsvcs)
                goto bad;
            c.p += 5;
            if (table_dest(&c, &d) < 0)
                goto bad;
            d.svc_index = (uint32_t)(res->nsvcs - 1);
            rc = push_dest(res, &d);
            if (rc < 0)
                goto nomem;
            cur = &res->svcs[res->nsvcs - 1];
            cur->ndests++;
            continue;
        }
        if (table_service(&c, &s) < 0)
            goto bad;
        s.first_dest = (uint32_t)res->ndests;
        rc = push_svc(res, &s);
        if (rc < 0)
            goto nomem;
    }
    if (line < 3) {
        seterr(errbuf, errlen, "ip_vs table: %zu of its 3 header lines", line);
        return -EBADMSG;
    }
    return (int)res->nsvcs;
bad:
    seterr(errbuf, errlen, "ip_vs table: line %zu is not in the kernel's format", line);
    return -EBADMSG;
nomem:
    seterr(errbuf, errlen, "out of memory");
    return rc;
}

/* ------------------------------------------------------------------------ */
/* socket layer                                                             */

struct ipvs_handle {
    int nl_fd;
    int ns_fd;              /* the namespace this handle is bound to */
    int stats_fd;           /* /proc/<tid>/net/ip_vs_stats of that namespace */
    int stats_err;          /* errno when stats_fd could not be opened */
    int table_fd;           /* /proc/<tid>/net/ip_vs of that namespace */
    int table_err;          /* errno when table_fd could not be opened */
    char *tbuf;             /* its text, grown to the largest read so far */
    size_t tcap;
    ipvs_result *table;     /* that text parsed */
    uint16_t family_id;
    uint32_t portid;
    uint32_t seq;
    int timeout_ms;
    uint8_t *buf;           /* DUMP_BATCH datagrams of buflen bytes */
    size_t buflen;
    char label[256];        /* namespace path for messages */
};

static void put_attr(uint8_t *msg, size_t *off, uint16_t type, const void *data, uint16_t dlen)
{
    uint16_t nla_len = (uint16_t)(NLA_HDRLEN + dlen);

    memcpy(msg + *off, &nla_len, 2);
    memcpy(msg + *off + 2, &type, 2);
    if (dlen)
        memcpy(msg + *off + NLA_HDRLEN, data, dlen);
    memset(msg + *off + NLA_HDRLEN + dlen, 0, NLA_ALIGN(nla_len) - nla_len);
    *off += NLA_ALIGN(nla_len);
}

/* Fills nlmsghdr + genlmsghdr; returns header length. */
static size_t put_genl_hdr(uint8_t *msg, uint16_t type, uint16_t flags, uint8_t cmd,
                           uint8_t version)
{
    struct nlmsghdr nlh;
    struct genlmsghdr g;

    memset(&nlh, 0, sizeof(nlh));
    nlh.nlmsg_type = type;
    nlh.nlmsg_flags = flags;
    memcpy(msg, &nlh, sizeof(nlh));
    memset(&g, 0, sizeof(g));
    g.cmd = cmd;
    g.version = version;
    memcpy(msg + NLMSG_HDRLEN, &g, sizeof(g));
    return NLMSG_HDRLEN + GENL_HDRLEN;
}

static void finish_msg(uint8_t *msg, size_t len, uint32_t seq)
{
    uint32_t l = (uint32_t)len;

    memcpy(msg + offsetof(struct nlmsghdr, nlmsg_len), &l, 4);
    memcpy(msg + offsetof(struct nlmsghdr, nlmsg_seq), &seq, 4);
}

static int nl_send(ipvs_handle *h, const uint8_t *msg, size_t len, char *errbuf, size_t errlen)
{
    struct sockaddr_nl sa;
    ssize_t n;

    memset(&sa, 0, sizeof(sa));
    sa.nl_family = AF_NETLINK;
    do {
        n = sendto(h->nl_fd, msg, len, 0, (struct sockaddr *)&sa, sizeof(sa));
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        int e = errno;

        seterr(errbuf, errlen, "netlink send: %s", strerror(e));
        return -e;
    }
    if ((size_t)n != len) {
        seterr(errbuf, errlen, "netlink send: short write");
        return -EIO;
    }
    return 0;
}

/* A failed recvmsg/recvmmsg: 0 to retry (EINTR), else -errno with errbuf set. */
static int recv_error(const ipvs_handle *h, int e, int flags, char *errbuf, size_t errlen)
{
    if (e == EINTR)
        return 0;
    if (e == EAGAIN || e == EWOULDBLOCK) {
        if (flags & MSG_DONTWAIT)
            return -EAGAIN;
        seterr(errbuf, errlen, "kernel did not answer within %d ms (namespace %s)",
               h->timeout_ms, h->label);
        return -ETIMEDOUT;
    }
    if (e == ENOBUFS)
        seterr(errbuf, errlen, "netlink receive buffer overrun (ENOBUFS)");
    else
        seterr(errbuf, errlen, "netlink recvmsg: %s", strerror(e));
    return -e;
}

static int truncated(const ipvs_handle *h, char *errbuf, size_t errlen)
{
    seterr(errbuf, errlen, "netlink datagram larger than the %zu byte receive buffer",
           h->buflen);
    return -EMSGSIZE;
}

/* One datagram from the kernel into h->buf. Returns length or -errno. */
static int nl_recv(ipvs_handle *h, int flags, char *errbuf, size_t errlen)
{
    for (;;) {
        struct sockaddr_nl sa;
        struct iovec iov = { h->buf, h->buflen };
        struct msghdr mh;
        ssize_t n;

        memset(&mh, 0, sizeof(mh));
        memset(&sa, 0, sizeof(sa));
        mh.msg_name = &sa;
        mh.msg_namelen = sizeof(sa);
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        n = recvmsg(h->nl_fd, &mh, flags);
        if (n < 0) {
            int r = recv_error(h, errno, flags, errbuf, errlen);

            if (r < 0)
                return r;
            continue;
        }
        if (mh.msg_flags & MSG_TRUNC)
            return truncated(h, errbuf, errlen);
        if (mh.msg_namelen >= sizeof(sa) && sa.nl_pid != 0)
            continue;       /* not from the kernel */
        return (int)n;
    }
}

/* Up to DUMP_BATCH datagrams from the kernel, the i-th at h->buf + i *
 * h->buflen with its length in len[i]; waits for the first only. Returns
 * how many, or -errno. */
static int nl_recv_batch(ipvs_handle *h, size_t len[DUMP_BATCH], char *errbuf, size_t errlen)
{
    for (;;) {
        struct mmsghdr mm[DUMP_BATCH];
        struct iovec iov[DUMP_BATCH];
        struct sockaddr_nl sa[DUMP_BATCH];
        int n, k = 0;

        memset(mm, 0, sizeof(mm));
        memset(sa, 0, sizeof(sa));
        for (int i = 0; i < DUMP_BATCH; i++) {
            iov[i].iov_base = h->buf + (size_t)i * h->buflen;
            iov[i].iov_len = h->buflen;
            mm[i].msg_hdr.msg_name = &sa[i];
            mm[i].msg_hdr.msg_namelen = sizeof(sa[i]);
            mm[i].msg_hdr.msg_iov = &iov[i];
            mm[i].msg_hdr.msg_iovlen = 1;
        }
        n = recvmmsg(h->nl_fd, mm, DUMP_BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            int r = recv_error(h, errno, 0, errbuf, errlen);

            if (r < 0)
                return r;
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (mm[i].msg_hdr.msg_flags & MSG_TRUNC)
                return truncated(h, errbuf, errlen);
            if (mm[i].msg_hdr.msg_namelen >= sizeof(sa[i]) && sa[i].nl_pid != 0)
                continue;   /* not from the kernel */
            if (k != i)
                memmove(h->buf + (size_t)k * h->buflen, h->buf + (size_t)i * h->buflen,
                        mm[i].msg_len);
            len[k++] = mm[i].msg_len;
        }
        if (k)
            return k;
    }
}

/* After an aborted exchange: read whatever is queued (finishing any dump the
 * kernel still has in progress on this socket, which would otherwise make the
 * next dump request fail with EBUSY). */
static void nl_drain(ipvs_handle *h)
{
    int i;

    for (i = 0; i < DRAIN_MAX_DATAGRAMS; i++) {
        if (nl_recv(h, MSG_DONTWAIT, NULL, 0) < 0)
            break;
    }
}

static int nl_dump(ipvs_handle *h, uint8_t *msg, size_t msglen, struct parse_ctx *c)
{
    int r;

    c->seq = ++h->seq;
    c->check_seq = 1;
    c->portid = h->portid;
    c->family_id = h->family_id;
    finish_msg(msg, msglen, c->seq);
    r = nl_send(h, msg, msglen, c->errbuf, c->errlen);
    if (r < 0)
        return r;
    for (;;) {
        size_t len[DUMP_BATCH];
        int n = nl_recv_batch(h, len, c->errbuf, c->errlen);

        if (n < 0) {
            r = n;
            break;
        }
        /* anything after NLMSG_DONE in the batch is stale (an aborted exchange) */
        r = 0;
        for (int i = 0; i < n && r == 0; i++)
            r = parse_msgs(c, h->buf + (size_t)i * h->buflen, len[i]);
        if (r != 0)
            break;
    }
    if (r < 0) {
        nl_drain(h);
        return r;
    }
    return 0;
}

static int resolve_family(ipvs_handle *h, char *errbuf, size_t errlen)
{
    uint8_t msg[64];
    size_t off;
    uint32_t seq = ++h->seq;
    int r;

    off = put_genl_hdr(msg, GENL_ID_CTRL, NLM_F_REQUEST, CTRL_CMD_GETFAMILY, 1);
    put_attr(msg, &off, CTRL_ATTR_FAMILY_NAME, K_IPVS_GENL_NAME, sizeof(K_IPVS_GENL_NAME));
    finish_msg(msg, off, seq);
    r = nl_send(h, msg, off, errbuf, errlen);
    if (r < 0)
        return r;
    for (;;) {
        const uint8_t *buf;
        size_t len;
        int n = nl_recv(h, 0, errbuf, errlen);

        if (n < 0)
            return n;
        buf = h->buf;
        len = (size_t)n;
        while (len >= NLMSG_HDRLEN) {
            struct nlmsghdr nlh;
            const uint8_t *payload;
            size_t plen, adv;

            memcpy(&nlh, buf, sizeof(nlh));
            if (nlh.nlmsg_len < NLMSG_HDRLEN || nlh.nlmsg_len > len) {
                seterr(errbuf, errlen, "CTRL_CMD_GETFAMILY reply: malformed netlink header");
                return -EBADMSG;
            }
            payload = buf + NLMSG_HDRLEN;
            plen = nlh.nlmsg_len - NLMSG_HDRLEN;
            adv = advance4(nlh.nlmsg_len, len);
            buf += adv;
            len -= adv;
            if (nlh.nlmsg_seq != seq || nlh.nlmsg_pid != h->portid)
                continue;
            if (nlh.nlmsg_type == NLMSG_ERROR) {
                int32_t e;

                if (plen < sizeof(e)) {
                    seterr(errbuf, errlen, "CTRL_CMD_GETFAMILY reply: truncated NLMSG_ERROR");
                    return -EBADMSG;
                }
                memcpy(&e, payload, sizeof(e));
                if (e == 0)
                    continue;
                if (e == -ENOENT) {
                    seterr(errbuf, errlen,
                           "generic netlink family IPVS not registered in namespace %s",
                           h->label);
                    return -EPROTONOSUPPORT;
                }
                seterr(errbuf, errlen, "CTRL_CMD_GETFAMILY(IPVS): %s", strerror(e < 0 ? -e : e));
                return e < 0 ? e : -EBADMSG;
            }
            if (nlh.nlmsg_type == GENL_ID_CTRL && plen >= GENL_HDRLEN) {
                struct attr_iter it;
                struct attr a;

                attr_iter_init(&it, payload + GENL_HDRLEN, plen - GENL_HDRLEN);
                while ((r = attr_next(&it, &a)) > 0) {
                    if (a.type == CTRL_ATTR_FAMILY_ID && a.len == 2) {
                        h->family_id = rd16(a.data);
                        if (h->family_id == 0)
                            break;
                        return 0;
                    }
                }
                seterr(errbuf, errlen, "CTRL_CMD_GETFAMILY reply without a family id");
                return -EBADMSG;
            }
        }
    }
}

static const char *thread_proc(char *out, size_t outlen, const char *suffix)
{
    /* /proc/thread-self appeared in 3.17; fall back to /proc/self/task/<tid>. */
    static int have_thread_self = -1;

    if (have_thread_self < 0)
        have_thread_self = access("/proc/thread-self", F_OK) == 0;
    if (have_thread_self)
        snprintf(out, outlen, "/proc/thread-self/%s", suffix);
    else
        snprintf(out, outlen, "/proc/self/task/%ld/%s", (long)syscall(SYS_gettid), suffix);
    return out;
}

static const char *file_kind(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFDIR: return "a directory";
    case S_IFSOCK: return "a socket";
    case S_IFREG: return "a regular file";
    default: return "not a namespace file";
    }
}

static const char *ns_type_name(int type)
{
    switch (type) {
    case 0x00020000: return "a mount namespace";
    case 0x02000000: return "a cgroup namespace";
    case 0x04000000: return "a UTS namespace";
    case 0x08000000: return "an IPC namespace";
    case 0x10000000: return "a user namespace";
    case 0x20000000: return "a PID namespace";
    case 0x00000080: return "a time namespace";
    default: return "another kind of namespace";
    }
}

/*
 * Open ns_path for setns() without ever blocking and without opening anything
 * but a namespace: an O_PATH descriptor first (which opens no FIFO or
 * device), checked to be on nsfs, then the same inode reopened through
 * /proc/self/fd (setns needs a real descriptor) and, where the kernel can
 * say, checked to be a network namespace. Returns the fd or -errno.
 */
static int open_netns(const char *ns_path, char *errbuf, size_t errlen)
{
    char path[64];
    struct statfs sfs;
    struct stat st;
    int pfd, fd, type, e;

    pfd = open(ns_path, O_PATH | O_CLOEXEC);
    if (pfd < 0) {
        e = errno;
        seterr(errbuf, errlen, "namespace path %s: %s", ns_path, strerror(e));
        return -e;
    }
    if (fstatfs(pfd, &sfs) < 0 || fstat(pfd, &st) < 0) {
        e = errno;
        seterr(errbuf, errlen, "namespace path %s: %s", ns_path, strerror(e));
        close(pfd);
        return -e;
    }
    if ((unsigned long)sfs.f_type != NSFS_MAGIC) {
        seterr(errbuf, errlen, "namespace path %s: not a network namespace (%s)", ns_path,
               file_kind(st.st_mode));
        close(pfd);
        return -EINVAL;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", pfd);
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        e = errno;
        seterr(errbuf, errlen, "namespace path %s: reopen: %s", ns_path, strerror(e));
        close(pfd);
        return -e;
    }
    close(pfd);
    type = ioctl(fd, NS_GET_NSTYPE);
    if (type >= 0 && type != CLONE_NEWNET) {
        seterr(errbuf, errlen, "namespace path %s: not a network namespace (%s)", ns_path,
               ns_type_name(type));
        close(fd);
        return -EINVAL;
    }
    return fd;  /* type < 0: kernel < 4.11, setns() will say EINVAL */
}

static const char *setns_hint(int e)
{
    if (e == EPERM)
        return " (need CAP_SYS_ADMIN)";
    if (e == EINVAL)
        return " (not a network namespace)";
    return "";
}

ipvs_handle *ipvs_open(const char *ns_path, int timeout_ms, int *err, char *errbuf, size_t errlen)
{
    ipvs_handle *h;
    int saved = -1, switched = 0, rc = 0, e;
    char path[128];
    struct sockaddr_nl sa;
    socklen_t salen;
    int use_path = ns_path && ns_path[0];

    if (errbuf && errlen)
        errbuf[0] = 0;
    h = calloc(1, sizeof(*h));
    if (!h) {
        if (err)
            *err = -ENOMEM;
        seterr(errbuf, errlen, "out of memory");
        return NULL;
    }
    h->nl_fd = h->ns_fd = h->stats_fd = h->table_fd = -1;
    h->timeout_ms = timeout_ms;
    h->seq = (uint32_t)time(NULL);
    snprintf(h->label, sizeof(h->label), "%s", use_path ? ns_path : "(current)");
    h->buflen = RECV_BUF_SIZE;
    h->buf = malloc(h->buflen * DUMP_BATCH);
    if (!h->buf) {
        rc = -ENOMEM;
        seterr(errbuf, errlen, "out of memory");
        goto out;
    }

    thread_proc(path, sizeof(path), "ns/net");
    saved = open(path, O_RDONLY | O_CLOEXEC);
    if (saved < 0) {
        rc = -errno;
        seterr(errbuf, errlen, "open(%s): %s", path, strerror(-rc));
        goto out;
    }
    if (use_path) {
        struct stat st_t, st_s;

        rc = open_netns(ns_path, errbuf, errlen);
        if (rc < 0)
            goto out;
        h->ns_fd = rc;
        rc = 0;
        /* Already there (e.g. the path names our own namespace)? Then no
         * setns, which also spares the CAP_SYS_ADMIN requirement. */
        if (fstat(h->ns_fd, &st_t) == 0 && fstat(saved, &st_s) == 0 &&
            st_t.st_dev == st_s.st_dev && st_t.st_ino == st_s.st_ino) {
            /* nothing to do */
        } else {
            if (setns(h->ns_fd, CLONE_NEWNET) < 0) {
                rc = -errno;
                seterr(errbuf, errlen, "setns(%s): %s%s", ns_path, strerror(-rc),
                       setns_hint(-rc));
                goto out;
            }
            switched = 1;
        }
    } else {
        h->ns_fd = saved;
        saved = -1;
    }

    thread_proc(path, sizeof(path), "net/ip_vs");
    if (access(path, F_OK) < 0) {
        e = errno;
        if (e == ENOENT) {
            rc = -EPROTONOSUPPORT;
            seterr(errbuf, errlen, "ip_vs not loaded in namespace %s (%s absent)",
                   h->label, path);
        } else {
            rc = -e;
            seterr(errbuf, errlen, "namespace %s: access(%s): %s", h->label, path, strerror(e));
        }
        goto out;
    }

    h->nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
    if (h->nl_fd < 0) {
        rc = -errno;
        seterr(errbuf, errlen, "socket(AF_NETLINK, NETLINK_GENERIC): %s", strerror(-rc));
        goto out;
    }
    {
        int v = RCVBUF_WANT;

        if (setsockopt(h->nl_fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) < 0)
            (void)setsockopt(h->nl_fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
    }
    if (timeout_ms > 0) {
        struct timeval tv;

        tv.tv_sec = timeout_ms / 1000;
        tv.tv_usec = (timeout_ms % 1000) * 1000;
        if (setsockopt(h->nl_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
            rc = -errno;
            seterr(errbuf, errlen, "setsockopt(SO_RCVTIMEO): %s", strerror(-rc));
            goto out;
        }
    }
    memset(&sa, 0, sizeof(sa));
    sa.nl_family = AF_NETLINK;
    if (bind(h->nl_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        seterr(errbuf, errlen, "bind(AF_NETLINK): %s", strerror(-rc));
        goto out;
    }
    salen = sizeof(sa);
    if (getsockname(h->nl_fd, (struct sockaddr *)&sa, &salen) < 0) {
        rc = -errno;
        seterr(errbuf, errlen, "getsockname(AF_NETLINK): %s", strerror(-rc));
        goto out;
    }
    h->portid = sa.nl_pid;

    rc = resolve_family(h, errbuf, errlen);
    if (rc < 0)
        goto out;

    thread_proc(path, sizeof(path), "net/ip_vs_stats");
    h->stats_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (h->stats_fd < 0)
        h->stats_err = errno;   /* not fatal: totals are optional */
    thread_proc(path, sizeof(path), "net/ip_vs");
    h->table_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (h->table_fd < 0)
        h->table_err = errno;   /* reported by ipvs_dump_table, the one user */

out:
    if (switched) {
        if (setns(saved, CLONE_NEWNET) < 0) {
            e = errno;
            seterr(errbuf, errlen,
                   "FATAL: could not restore this thread's network namespace after entering %s: "
                   "setns: %s; the thread is now in the wrong namespace",
                   h->label, strerror(e));
            rc = -e;
        }
    }
    if (saved >= 0)
        close(saved);
    if (rc < 0) {
        ipvs_close(h);
        if (err)
            *err = rc;
        return NULL;
    }
    if (err)
        *err = 0;
    return h;
}

void ipvs_close(ipvs_handle *h)
{
    if (!h)
        return;
    if (h->nl_fd >= 0)
        close(h->nl_fd);
    if (h->ns_fd >= 0)
        close(h->ns_fd);
    if (h->stats_fd >= 0)
        close(h->stats_fd);
    if (h->table_fd >= 0)
        close(h->table_fd);
    free(h->tbuf);
    ipvs_result_free(h->table);
    free(h->buf);
    free(h);
}

int ipvs_ns_ident(ipvs_handle *h, uint64_t *dev, uint64_t *ino)
{
    struct stat st;

    if (!h || h->ns_fd < 0)
        return -EBADF;
    if (fstat(h->ns_fd, &st) < 0)
        return -errno;
    if (dev)
        *dev = (uint64_t)st.st_dev;
    if (ino)
        *ino = (uint64_t)st.st_ino;
    return 0;
}

static int dump_dests(ipvs_handle *h, const struct ipvs_svc_rec *s, uint32_t svc_index,
                      ipvs_result *res, char *errbuf, size_t errlen)
{
    uint8_t msg[128];
    size_t off, nest_off;
    uint16_t nest_len, nest_type = K_CMD_ATTR_SERVICE | NLA_F_NESTED;
    struct parse_ctx c;

    off = put_genl_hdr(msg, h->family_id, NLM_F_REQUEST | NLM_F_DUMP, K_CMD_GET_DEST,
                       K_IPVS_GENL_VERSION);
    nest_off = off;
    off += NLA_HDRLEN;
    put_attr(msg, &off, K_SVC_ATTR_AF, &s->af, 2);
    if (s->fwmark) {
        put_attr(msg, &off, K_SVC_ATTR_FWMARK, &s->fwmark, 4);
    } else {
        uint16_t port_be = be16_to_host(s->port);

        put_attr(msg, &off, K_SVC_ATTR_PROTOCOL, &s->protocol, 2);
        put_attr(msg, &off, K_SVC_ATTR_ADDR, s->addr, 16);
        put_attr(msg, &off, K_SVC_ATTR_PORT, &port_be, 2);
    }
    nest_len = (uint16_t)(off - nest_off);
    memcpy(msg + nest_off, &nest_len, 2);
    memcpy(msg + nest_off + 2, &nest_type, 2);

    memset(&c, 0, sizeof(c));
    c.kind = KIND_DEST;
    c.svc_index = svc_index;
    c.svc_af = s->af;
    c.res = res;
    c.errbuf = errbuf;
    c.errlen = errlen;
    return nl_dump(h, msg, off, &c);
}

/* The GET_SERVICE dump into res (cleared first). */
static int dump_services(ipvs_handle *h, ipvs_result *res, char *errbuf, size_t errlen)
{
    uint8_t msg[32];
    size_t off;
    struct parse_ctx c;
    int r;

    ipvs_result_clear(res);
    off = put_genl_hdr(msg, h->family_id, NLM_F_REQUEST | NLM_F_DUMP, K_CMD_GET_SERVICE,
                       K_IPVS_GENL_VERSION);
    memset(&c, 0, sizeof(c));
    c.kind = KIND_SERVICE;
    c.res = res;
    c.errbuf = errbuf;
    c.errlen = errlen;
    r = nl_dump(h, msg, off, &c);
    if (r < 0)
        return r;
    if (res->nsvcs > (size_t)INT32_MAX) {
        seterr(errbuf, errlen, "too many services");
        return -EOVERFLOW;
    }
    return 0;
}

int ipvs_dump(ipvs_handle *h, ipvs_result *res, char *errbuf, size_t errlen)
{
    size_t i, w;
    int r;

    if (!h || !res) {
        seterr(errbuf, errlen, "ipvs_dump: NULL handle or result");
        return -EINVAL;
    }
    r = dump_services(h, res, errbuf, errlen);
    if (r < 0)
        goto fail;

    /* Dest dumps; services deleted meanwhile are dropped, compacting in place. */
    for (i = 0, w = 0; i < res->nsvcs; i++) {
        size_t first = res->ndests;
        struct ipvs_svc_rec s = res->svcs[i];

        r = dump_dests(h, &s, (uint32_t)w, res, errbuf, errlen);
        if (r == -ENOENT || r == -ESRCH) {
            res->ndests = first;
            continue;
        }
        if (r < 0)
            goto fail;
        s.first_dest = (uint32_t)first;
        s.ndests = (uint32_t)(res->ndests - first);
        res->svcs[w++] = s;
    }
    res->nsvcs = w;
    if (errbuf && errlen)
        errbuf[0] = 0;
    return (int)w;

fail:
    ipvs_result_clear(res);
    return r;
}

long ipvs_read_totals(ipvs_handle *h, char *buf, size_t len)
{
    size_t off = 0;

    if (!h || !buf)
        return -EINVAL;
    if (h->stats_fd < 0)
        return -(h->stats_err ? h->stats_err : EBADF);
    while (off < len) {
        ssize_t n = pread(h->stats_fd, buf + off, len - off, (off_t)off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        off += (size_t)n;
    }
    return (long)off;
}

/* Whether table record t (no af for fwmark services) is netlink service s. */
static int same_service(const struct ipvs_svc_rec *s, const struct ipvs_svc_rec *t)
{
    if (s->fwmark || t->fwmark)
        return s->fwmark == t->fwmark;
    return s->af == t->af && s->protocol == t->protocol && s->port == t->port &&
           memcmp(s->addr, t->addr, sizeof(s->addr)) == 0;
}

/*
 * res holds the GET_SERVICE dump; give each service its destinations from
 * the table t (same kernel order), or from a GET_DEST dump when t lacks it.
 * A service t has beyond the next TABLE_LOOKAHEAD is taken as missing.
 */
static int merge_table(ipvs_handle *h, ipvs_result *res, const ipvs_result *t,
                       char *errbuf, size_t errlen)
{
    size_t i, w, j = 0, k, d, end;
    int r;

    for (i = 0, w = 0; i < res->nsvcs; i++) {
        struct ipvs_svc_rec s = res->svcs[i];
        size_t first = res->ndests;

        end = t->nsvcs - j < TABLE_LOOKAHEAD ? t->nsvcs : j + TABLE_LOOKAHEAD;
        for (k = j; k < end && !same_service(&s, &t->svcs[k]); k++)
            ;
        if (k < end) {
            const struct ipvs_svc_rec *ts = &t->svcs[k];

            for (d = ts->first_dest; d < (size_t)ts->first_dest + ts->ndests; d++) {
                struct ipvs_dest_rec dr = t->dests[d];

                dr.svc_index = (uint32_t)w;
                r = push_dest(res, &dr);
                if (r < 0) {
                    seterr(errbuf, errlen, "out of memory");
                    return r;
                }
            }
            j = k + 1;
        } else {
            r = dump_dests(h, &s, (uint32_t)w, res, errbuf, errlen);
            if (r == -ENOENT || r == -ESRCH) {
                res->ndests = first;
                continue;
            }
            if (r < 0)
                return r;
        }
        s.first_dest = (uint32_t)first;
        s.ndests = (uint32_t)(res->ndests - first);
        res->svcs[w++] = s;
    }
    res->nsvcs = w;
    return (int)w;
}

int ipvs_dump_table(ipvs_handle *h, ipvs_result *res, char *errbuf, size_t errlen)
{
    size_t off = 0;
    int r;

    if (errbuf && errlen)
        errbuf[0] = 0;
    if (!h || !res)
        return -EINVAL;
    if (h->table_fd < 0) {
        int e = h->table_err ? h->table_err : EBADF;

        seterr(errbuf, errlen, "namespace %s: open(/proc/net/ip_vs): %s", h->label, strerror(e));
        return -e;
    }
    for (;;) {
        ssize_t n;

        if (h->tcap - off < TABLE_READ) {
            size_t ncap = h->tcap ? h->tcap * 2 : 4 * TABLE_READ;
            char *p;

            if (ncap > TABLE_MAX) {
                seterr(errbuf, errlen, "namespace %s: /proc/net/ip_vs is larger than %d MiB",
                       h->label, TABLE_MAX >> 20);
                return -EFBIG;
            }
            p = realloc(h->tbuf, ncap);
            if (!p) {
                seterr(errbuf, errlen, "out of memory");
                return -ENOMEM;
            }
            h->tbuf = p;
            h->tcap = ncap;
        }
        /* a seq_file read returns at most one page whatever is asked */
        n = pread(h->table_fd, h->tbuf + off, h->tcap - off, (off_t)off);
        if (n < 0) {
            int e = errno;

            if (e == EINTR)
                continue;
            seterr(errbuf, errlen, "namespace %s: read(/proc/net/ip_vs): %s", h->label,
                   strerror(e));
            return -e;
        }
        if (n == 0)
            break;
        off += (size_t)n;
    }
    if (!h->table && !(h->table = ipvs_result_new())) {
        seterr(errbuf, errlen, "out of memory");
        return -ENOMEM;
    }
    r = ipvs_parse_table(h->tbuf, off, h->table, errbuf, errlen);
    if (r < 0)
        return r;
    r = dump_services(h, res, errbuf, errlen);
    if (r < 0)
        goto fail;
    r = merge_table(h, res, h->table, errbuf, errlen);
    if (r < 0)
        goto fail;
    if (errbuf && errlen)
        errbuf[0] = 0;
    return r;
fail:
    ipvs_result_clear(res);
    return r;
}

/* ------------------------------------------------------------------------ */
/* namespace settings: GET_INFO / GET_CONFIG                                */

#define K_CMD_GET_CONFIG        13
#define K_CMD_GET_INFO          15

#define K_INFO_ATTR_VERSION     1
#define K_INFO_ATTR_CONN_TAB_SIZE 2
#define K_CMD_ATTR_TIMEOUT_TCP  4
#define K_CMD_ATTR_TIMEOUT_TCP_FIN 5
#define K_CMD_ATTR_TIMEOUT_UDP  6

enum reply_kind { REPLY_INFO, REPLY_CONFIG };

struct reply_ctx {
    enum reply_kind kind;
    uint16_t family_id;     /* 0 = do not check nlmsg_type */
    int check_seq;          /* socket mode: skip messages not for us */
    uint32_t seq;
    uint32_t portid;
    struct ipvs_settings_rec *rec;
    char *errbuf;
    size_t errlen;
};

static const char *reply_name(enum reply_kind k)
{
    return k == REPLY_INFO ? "GET_INFO" : "GET_CONFIG";
}

/* The top-level attributes of a GET_INFO / GET_CONFIG reply into c->rec. */
static int parse_settings_attrs(struct reply_ctx *c, const uint8_t *p, size_t len)
{
    struct attr_iter it;
    struct attr a;
    int r;

    attr_iter_init(&it, p, len);
    while ((r = attr_next(&it, &a)) > 0) {
        uint32_t *field = NULL, bit = 0;

        if (c->kind == REPLY_INFO) {
            if (a.type == K_INFO_ATTR_VERSION) {
                field = &c->rec->version;
                bit = IPVS_SET_VERSION;
            } else if (a.type == K_INFO_ATTR_CONN_TAB_SIZE) {
                field = &c->rec->conn_tab_size;
                bit = IPVS_SET_CONN_TAB_SIZE;
            }
        } else {
            if (a.type == K_CMD_ATTR_TIMEOUT_TCP) {
                field = &c->rec->timeout_tcp;
                bit = IPVS_SET_TIMEOUT_TCP;
            } else if (a.type == K_CMD_ATTR_TIMEOUT_TCP_FIN) {
                field = &c->rec->timeout_tcp_fin;
                bit = IPVS_SET_TIMEOUT_TCP_FIN;
            } else if (a.type == K_CMD_ATTR_TIMEOUT_UDP) {
                field = &c->rec->timeout_udp;
                bit = IPVS_SET_TIMEOUT_UDP;
            }
        }
        if (!field)
            continue;       /* unknown or newer attribute */
        if (a.len != 4) {
            seterr(c->errbuf, c->errlen, "%s reply: attribute %u has length %zu, expected 4",
                   reply_name(c->kind), a.type, a.len);
            return -EBADMSG;
        }
        *field = rd32(a.data);
        c->rec->attrs |= bit;
    }
    if (r < 0) {
        seterr(c->errbuf, c->errlen, "%s reply: malformed attribute", reply_name(c->kind));
        return r;
    }
    return 0;
}

/* Walk one buffer of a non-dump reply. 1: the reply message was parsed,
 * 0: more expected, -errno: kernel error or malformed input. */
static int parse_reply(struct reply_ctx *c, const uint8_t *buf, size_t len)
{
    const char *what = reply_name(c->kind);

    if (!c->rec || (!buf && len)) {
        seterr(c->errbuf, c->errlen, "NULL record or buffer");
        return -EINVAL;
    }
    while (len > 0) {
        struct nlmsghdr nlh;
        const uint8_t *payload;
        size_t plen, adv;
        int r;

        if (len < NLMSG_HDRLEN) {
            seterr(c->errbuf, c->errlen, "%s reply: %zu trailing bytes, shorter than a "
                   "netlink header", what, len);
            return -EBADMSG;
        }
        memcpy(&nlh, buf, sizeof(nlh));
        if (nlh.nlmsg_len < NLMSG_HDRLEN || nlh.nlmsg_len > len) {
            seterr(c->errbuf, c->errlen, "%s reply: nlmsg_len %u out of range (%zu bytes left)",
                   what, nlh.nlmsg_len, len);
            return -EBADMSG;
        }
        payload = buf + NLMSG_HDRLEN;
        plen = nlh.nlmsg_len - NLMSG_HDRLEN;
        adv = NLMSG_ALIGN((size_t)nlh.nlmsg_len);
        if (adv >= len) {
            buf += len;
            len = 0;
        } else {
            buf += adv;
            len -= adv;
        }
        if (c->check_seq && (nlh.nlmsg_seq != c->seq || nlh.nlmsg_pid != c->portid))
            continue;       /* stale or foreign message */
        if (nlh.nlmsg_type == NLMSG_ERROR) {
            int32_t e;

            if (plen < sizeof(e)) {
                seterr(c->errbuf, c->errlen, "%s reply: truncated NLMSG_ERROR", what);
                return -EBADMSG;
            }
            memcpy(&e, payload, sizeof(e));
            if (e == 0)
                continue;   /* ACK */
            if (e > 0 || e < -4095) {
                seterr(c->errbuf, c->errlen, "%s reply: NLMSG_ERROR with invalid error %d",
                       what, (int)e);
                return -EBADMSG;
            }
            seterr(c->errbuf, c->errlen, "kernel rejected %s: %s", what, strerror(-e));
            return e;
        }
        if (nlh.nlmsg_type == NLMSG_NOOP)
            continue;
        if (nlh.nlmsg_type < NLMSG_MIN_TYPE) {
            seterr(c->errbuf, c->errlen, "%s reply: unexpected control message type %u",
                   what, nlh.nlmsg_type);
            return -EBADMSG;
        }
        if (c->family_id && nlh.nlmsg_type != c->family_id) {
            seterr(c->errbuf, c->errlen, "%s reply: unexpected message type %u (IPVS family "
                   "is %u)", what, nlh.nlmsg_type, c->family_id);
            return -EBADMSG;
        }
        if (plen < GENL_HDRLEN) {
            seterr(c->errbuf, c->errlen, "%s reply: message too short for a genl header", what);
            return -EBADMSG;
        }
        r = parse_settings_attrs(c, payload + GENL_HDRLEN, plen - GENL_HDRLEN);
        return r < 0 ? r : 1;
    }
    return 0;
}

static int parse_settings_msgs(enum reply_kind kind, const uint8_t *buf, size_t len,
                               uint16_t family_id, struct ipvs_settings_rec *rec,
                               char *errbuf, size_t errlen)
{
    struct reply_ctx c;

    memset(&c, 0, sizeof(c));
    c.kind = kind;
    c.family_id = family_id;
    c.rec = rec;
    c.errbuf = errbuf;
    c.errlen = errlen;
    return parse_reply(&c, buf, len);
}

int ipvs_parse_info_msgs(const uint8_t *buf, size_t len, uint16_t family_id,
                         struct ipvs_settings_rec *rec, char *errbuf, size_t errlen)
{
    return parse_settings_msgs(REPLY_INFO, buf, len, family_id, rec, errbuf, errlen);
}

int ipvs_parse_config_msgs(const uint8_t *buf, size_t len, uint16_t family_id,
                           struct ipvs_settings_rec *rec, char *errbuf, size_t errlen)
{
    return parse_settings_msgs(REPLY_CONFIG, buf, len, family_id, rec, errbuf, errlen);
}

/* One request/reply exchange (not a dump) into rec. */
static int nl_get(ipvs_handle *h, enum reply_kind kind, struct ipvs_settings_rec *rec,
                  char *errbuf, size_t errlen)
{
    uint8_t msg[32];
    size_t off;
    struct reply_ctx c;
    int r;

    off = put_genl_hdr(msg, h->family_id, NLM_F_REQUEST,
                       kind == REPLY_INFO ? K_CMD_GET_INFO : K_CMD_GET_CONFIG,
                       K_IPVS_GENL_VERSION);
    memset(&c, 0, sizeof(c));
    c.kind = kind;
    c.family_id = h->family_id;
    c.check_seq = 1;
    c.seq = ++h->seq;
    c.portid = h->portid;
    c.rec = rec;
    c.errbuf = errbuf;
    c.errlen = errlen;
    finish_msg(msg, off, c.seq);
    r = nl_send(h, msg, off, errbuf, errlen);
    if (r < 0)
        return r;
    for (;;) {
        int n = nl_recv(h, 0, errbuf, errlen);

        if (n < 0) {
            r = n;
            break;
        }
        r = parse_reply(&c, h->buf, (size_t)n);
        if (r != 0)
            break;
    }
    if (r < 0) {
        nl_drain(h);
        return r;
    }
    return 0;
}

int ipvs_get_settings(ipvs_handle *h, struct ipvs_settings_rec *rec, char *errbuf, size_t errlen)
{
    int r;

    if (!h || !rec) {
        seterr(errbuf, errlen, "ipvs_get_settings: NULL handle or record");
        return -EINVAL;
    }
    memset(rec, 0, sizeof(*rec));
    r = nl_get(h, REPLY_INFO, rec, errbuf, errlen);
    if (r == 0)
        r = nl_get(h, REPLY_CONFIG, rec, errbuf, errlen);
    if (r < 0)
        memset(rec, 0, sizeof(*rec));
    return r;
}

/* ------------------------------------------------------------------------ */
/* namespace settings: the IPVS sysctls                                     */

#define SYSCTL_DIR              "/proc/sys/net/ipv4/vs"
#define SYSCTL_NAME_MAX         64
#define SYSCTL_MAX_FILES        256

struct sysctl_file {
    char name[SYSCTL_NAME_MAX];
    int fd;
};

struct ipvs_sysctls {
    struct sysctl_file *files;
    int n;
};

static int sysctl_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sysctl_file *)a)->name, ((const struct sysctl_file *)b)->name);
}

/* Open the files of SYSCTL_DIR (in the calling thread's namespace). */
static int sysctls_collect(ipvs_sysctls *s, char *errbuf, size_t errlen)
{
    DIR *d;
    struct dirent *e;
    int dfd;

    d = opendir(SYSCTL_DIR);
    if (!d)
        return (errno == ENOENT || errno == ENOTDIR) ? 0 : -errno;
    dfd = dirfd(d);
    s->files = calloc(SYSCTL_MAX_FILES, sizeof(*s->files));
    if (!s->files) {
        closedir(d);
        seterr(errbuf, errlen, "out of memory");
        return -ENOMEM;
    }
    while ((e = readdir(d)) != NULL && s->n < SYSCTL_MAX_FILES) {
        int fd;

        if (e->d_name[0] == '.' || strlen(e->d_name) >= SYSCTL_NAME_MAX)
            continue;
        if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN)
            continue;
        fd = openat(dfd, e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            continue;       /* e.g. write-only: nothing to export */
        snprintf(s->files[s->n].name, SYSCTL_NAME_MAX, "%s", e->d_name);
        s->files[s->n].fd = fd;
        s->n++;
    }
    closedir(d);
    qsort(s->files, (size_t)s->n, sizeof(*s->files), sysctl_cmp);
    return 0;
}

ipvs_sysctls *ipvs_sysctls_open(ipvs_handle *h, int *err, char *errbuf, size_t errlen)
{
    ipvs_sysctls *s;
    int saved = -1, switched = 0, rc = 0;
    char path[128];
    struct stat st_t, st_s;

    if (errbuf && errlen)
        errbuf[0] = 0;
    if (!h || h->ns_fd < 0) {
        if (err)
            *err = -EBADF;
        seterr(errbuf, errlen, "ipvs_sysctls_open: no namespace handle");
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        if (err)
            *err = -ENOMEM;
        seterr(errbuf, errlen, "out of memory");
        return NULL;
    }
    thread_proc(path, sizeof(path), "ns/net");
    saved = open(path, O_RDONLY | O_CLOEXEC);
    if (saved < 0) {
        rc = -errno;
        seterr(errbuf, errlen, "open(%s): %s", path, strerror(-rc));
        goto out;
    }
    if (!(fstat(h->ns_fd, &st_t) == 0 && fstat(saved, &st_s) == 0 &&
          st_t.st_dev == st_s.st_dev && st_t.st_ino == st_s.st_ino)) {
        if (setns(h->ns_fd, CLONE_NEWNET) < 0) {
            rc = -errno;
            seterr(errbuf, errlen, "setns(%s): %s%s", h->label, strerror(-rc),
                   setns_hint(-rc));
            goto out;
        }
        switched = 1;
    }
    rc = sysctls_collect(s, errbuf, errlen);
    if (rc < 0 && !(errbuf && errbuf[0]))
        seterr(errbuf, errlen, "namespace %s: opendir(%s): %s", h->label, SYSCTL_DIR,
               strerror(-rc));

out:
    if (switched && setns(saved, CLONE_NEWNET) < 0) {
        int e = errno;

        seterr(errbuf, errlen,
               "FATAL: could not restore this thread's network namespace after entering %s: "
               "setns: %s; the thread is now in the wrong namespace", h->label, strerror(e));
        rc = -e;
    }
    if (saved >= 0)
        close(saved);
    if (rc < 0) {
        ipvs_sysctls_close(s);
        if (err)
            *err = rc;
        return NULL;
    }
    if (err)
        *err = 0;
    return s;
}

void ipvs_sysctls_close(ipvs_sysctls *s)
{
    int i;

    if (!s)
        return;
    for (i = 0; i < s->n; i++)
        close(s->files[i].fd);
    free(s->files);
    free(s);
}

int ipvs_sysctls_count(const ipvs_sysctls *s)
{
    return s ? s->n : 0;
}

const char *ipvs_sysctls_name(const ipvs_sysctls *s, int i)
{
    if (!s || i < 0 || i >= s->n)
        return NULL;
    return s->files[i].name;
}

long ipvs_sysctls_read(ipvs_sysctls *s, int i, char *buf, size_t len)
{
    ssize_t n;

    if (!s || !buf || i < 0 || i >= s->n)
        return -EINVAL;
    do {
        n = pread(s->files[i].fd, buf, len, 0);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (long)n;
}
