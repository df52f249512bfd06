/*
 * ipvs_core: a small generic-netlink client for the Linux IPVS family.
 *
 * Contract (shared with ipvs_fast/records.py, which mirrors these layouts
 * with struct formats, and with the pure-Python backend, which must produce
 * byte-identical records):
 *
 *  - All integers in records are host byte order (x86_64: little endian),
 *    except `addr` (raw network-order bytes, IPv4 in the first 4 bytes, rest 0)
 *    and `netmask` (the attribute's 4 raw bytes memcpy'd into a u32: for IPv4
 *    services that is the mask in network order, for IPv6 the prefix length).
 *  - Services appear in kernel dump order. The destinations of service i are
 *    dests[svc.first_dest .. svc.first_dest + svc.ndests), each with
 *    svc_index == i.
 *  - A service deleted between the two dumps: current kernels (6.1, mainline)
 *    answer its GET_DEST dump with an empty dump, so it appears with ndests 0
 *    (gone at the next scrape); where a kernel answers ENOENT/ESRCH instead,
 *    the service is dropped from the result and later indexes shift down.
 *  - stats[] order: conns, inpkts, outpkts, inbytes, outbytes,
 *                   cps, inpps, outpps, inbps, outbps.
 *    From IPVS_*_ATTR_STATS64 when present, else from 32-bit IPVS_*_ATTR_STATS.
 *  - Errors are values: functions return 0 / a positive count on success and
 *    -errno on failure, with a human-readable message in errbuf.
 *    Nothing here calls exit() or abort().
 */
#ifndef IPVS_CORE_H
#define IPVS_CORE_H

#include <stdint.h>
#include <stddef.h>

#define IPVS_NSTATS 10

/* ipvs_svc_rec.attrs / ipvs_dest_rec.attrs bits */
#define IPVS_REC_STATS64   0x0001  /* stats came from the 64-bit nest */
#define IPVS_REC_STATS32   0x0002  /* stats came from the 32-bit nest */
#define IPVS_REC_PE_NAME   0x0004  /* svc: IPVS_SVC_ATTR_PE_NAME present */
#define IPVS_REC_DEST_AF   0x0008  /* dest: IPVS_DEST_ATTR_ADDR_FAMILY present */
#define IPVS_REC_TUN       0x0010  /* dest: tunnel attributes present */

/* 176 bytes; Python: "<HHHHIIII16s16s32s10QII" */
struct ipvs_svc_rec {
    uint16_t af;            /* AF_INET / AF_INET6 */
    uint16_t protocol;      /* IPPROTO_TCP/UDP/SCTP; 0 for fwmark services */
    uint16_t port;          /* 0 for fwmark services */
    uint16_t attrs;         /* IPVS_REC_* */
    uint32_t fwmark;        /* 0 for non-fwmark services */
    uint32_t flags;         /* ip_vs_flags.flags (IP_VS_SVC_F_*) */
    uint32_t timeout;       /* persistence timeout, seconds */
    uint32_t netmask;       /* raw, see above */
    uint8_t  addr[16];
    char     sched_name[16];/* NUL padded */
    char     pe_name[32];   /* NUL padded, empty when absent */
    uint64_t stats[IPVS_NSTATS];
    uint32_t first_dest;
    uint32_t ndests;
};

/* 144 bytes; Python: "<IHH16sIiIIIIIHHBxHxxxx10Q" */
struct ipvs_dest_rec {
    uint32_t svc_index;
    uint16_t af;            /* ADDR_FAMILY attr, or the service's af on < 3.18 */
    uint16_t port;
    uint8_t  addr[16];
    uint32_t fwd_method;    /* IP_VS_CONN_F_MASQ/LOCALNODE/TUNNEL/DROUTE/BYPASS */
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
    uint16_t attrs;         /* IPVS_REC_* */
    uint32_t _pad1;
    uint64_t stats[IPVS_NSTATS];
};

/* Growable record arrays, owned by C, reused across dumps. */
typedef struct ipvs_result {
    struct ipvs_svc_rec  *svcs;
    size_t nsvcs, svc_cap;
    struct ipvs_dest_rec *dests;
    size_t ndests, dest_cap;
} ipvs_result;

ipvs_result *ipvs_result_new(void);
void ipvs_result_clear(ipvs_result *res);   /* counts to 0, keeps memory */
void ipvs_result_free(ipvs_result *res);

/*
 * Pure parsers, used by the socket code and directly by tests on captured
 * kernel replies. `buf` is a concatenation of netlink messages (one or more
 * recv() datagrams). family_id 0 = do not check nlmsg_type.
 * Return: 1 if NLMSG_DONE was seen, 0 if more messages are expected,
 * -errno on NLMSG_ERROR (the kernel's error) or malformed input (-EBADMSG).
 * Service records are appended with first_dest/ndests = 0; dest records are
 * appended with svc_index as given and the service's af used when the dest
 * lacks IPVS_DEST_ATTR_ADDR_FAMILY (svc_af argument).
 */
int ipvs_parse_service_msgs(const uint8_t *buf, size_t len, uint16_t family_id,
                            ipvs_result *res, char *errbuf, size_t errlen);
int ipvs_parse_dest_msgs(const uint8_t *buf, size_t len, uint16_t family_id,
                         uint32_t svc_index, uint16_t svc_af,
                         ipvs_result *res, char *errbuf, size_t errlen);

typedef struct ipvs_handle ipvs_handle;

/*
 * Open a handle bound to the network namespace at ns_path ("" = the caller's
 * own). Within this one call: save /proc/thread-self/ns/net, setns into the
 * target, check /proc/thread-self/net/ip_vs exists (else -EPROTONOSUPPORT,
 * "ip_vs not loaded"; resolving the family would auto-load the module), open
 * the generic netlink socket (SO_RCVBUF raised, SO_RCVTIMEO = timeout_ms),
 * resolve the "IPVS" family, open /proc/thread-self/net/ip_vs_stats, setns
 * back. The thread's namespace is restored on every path.
 * ns_path is checked before anything else, without blocking: it must be an
 * nsfs file of a network namespace; anything else (a FIFO, a device, a
 * regular file, a directory, another kind of namespace) is -EINVAL with
 * "not a network namespace (...)".
 * On failure returns NULL and stores -errno in *err.
 */
ipvs_handle *ipvs_open(const char *ns_path, int timeout_ms, int *err,
                       char *errbuf, size_t errlen);
void ipvs_close(ipvs_handle *h);

/* st_dev/st_ino of the namespace fd held by the handle (for "was the path
 * recreated?" checks). Returns 0 or -errno. */
int ipvs_ns_ident(ipvs_handle *h, uint64_t *dev, uint64_t *ino);

/* Full dump: GET_SERVICE dump, then one GET_DEST dump per service, into res
 * (cleared first). Returns number of services or -errno. */
int ipvs_dump(ipvs_handle *h, ipvs_result *res, char *errbuf, size_t errlen);

/* pread() the namespace's ip_vs_stats text into buf; returns bytes or -errno. */
long ipvs_read_totals(ipvs_handle *h, char *buf, size_t len);

/*
 * The namespace's /proc/net/ip_vs (the table node_exporter reads). The pure
 * parser: services and destinations without counters, in the table's order,
 * as records.
 * Fields the text carries: service af (AF_INET for fwmark services: the text
 * does not say), protocol, addr, port, fwmark, scheduler, the ONEPACKET and
 * PERSISTENT flags, timeout and netmask; destination af, addr, port,
 * fwd_method, weight, active_conns, inact_conns. Everything else is 0
 * (attrs has no IPVS_REC_STATS* bit). The pure parser takes the whole text
 * (every line ends in '\n'; the three header lines first) and returns the
 * number of services or -EBADMSG.
 *
 * ipvs_dump_table is the destinations of the table with the kernel's
 * service list: it reads the file the handle opened in its namespace, then
 * makes the GET_SERVICE dump (one request), and gives each service of that
 * dump (records as ipvs_dump makes them, counters included) the table's
 * destinations, or, for a service the table lacks, its GET_DEST dump. The
 * table can lack services: its seq_file restarts every read (about a page)
 * at a position counted over the services of every namespace but applied to
 * this namespace's only, so when other namespaces have services, some of
 * this one's are skipped (seen on 6.1; node_exporter reads the same file).
 * Destinations from the table have no counters (attrs 0). Returns the
 * number of services or -errno.
 */
int ipvs_parse_table(const char *text, size_t len, ipvs_result *res,
                     char *errbuf, size_t errlen);
int ipvs_dump_table(ipvs_handle *h, ipvs_result *res, char *errbuf, size_t errlen);

/* ------------------------------------------------------------------------ */
/* Namespace settings: GET_INFO + GET_CONFIG, and the IPVS sysctls          */

/* ipvs_settings_rec.attrs bits: which values the kernel sent */
#define IPVS_SET_VERSION         0x0001
#define IPVS_SET_CONN_TAB_SIZE   0x0002
#define IPVS_SET_TIMEOUT_TCP     0x0004
#define IPVS_SET_TIMEOUT_TCP_FIN 0x0008
#define IPVS_SET_TIMEOUT_UDP     0x0010

/* 24 bytes; Python: "<IIIIII" */
struct ipvs_settings_rec {
    uint32_t attrs;             /* IPVS_SET_* */
    uint32_t version;           /* IP_VS_VERSION_CODE: 0x010201 = 1.2.1 */
    uint32_t conn_tab_size;     /* connection hash table buckets */
    uint32_t timeout_tcp;       /* seconds */
    uint32_t timeout_tcp_fin;
    uint32_t timeout_udp;
};

/*
 * Pure parsers of a GET_INFO / GET_CONFIG reply (not a dump: one message).
 * They set only their own fields (and attrs bits) of rec, so the two replies
 * parse into one record. Return 1 when the reply message was seen, 0 if more
 * is expected, -errno on NLMSG_ERROR or malformed input (-EBADMSG).
 * Rules: NLMSG_ERROR 0 (ACK) and NLMSG_NOOP are skipped; any other control
 * message (NLMSG_DONE included) is malformed; family_id != 0 is checked;
 * the first data message is the reply (a genl header, then top-level
 * attributes: known ones must be u32, unknown ones are ignored, the last of
 * duplicates wins); whatever follows it is ignored.
 */
int ipvs_parse_info_msgs(const uint8_t *buf, size_t len, uint16_t family_id,
                         struct ipvs_settings_rec *rec, char *errbuf, size_t errlen);
int ipvs_parse_config_msgs(const uint8_t *buf, size_t len, uint16_t family_id,
                           struct ipvs_settings_rec *rec, char *errbuf, size_t errlen);

/* GET_INFO then GET_CONFIG on the handle's socket into rec (zeroed first).
 * Returns 0 or -errno. */
int ipvs_get_settings(ipvs_handle *h, struct ipvs_settings_rec *rec,
                      char *errbuf, size_t errlen);

/*
 * The IPVS sysctls of the handle's namespace. /proc/sys/net shows the
 * namespace of whoever opens a file, so ipvs_sysctls_open enters the
 * handle's namespace (setns, restored on every path; no setns when the thread
 * is already there), opens every file of /proc/sys/net/ipv4/vs there and
 * keeps the fds; reads are pread()s from any thread. Files are sorted by
 * name; a file that cannot be opened is left out; no directory = no files.
 * On failure returns NULL and stores -errno in *err.
 */
typedef struct ipvs_sysctls ipvs_sysctls;

ipvs_sysctls *ipvs_sysctls_open(ipvs_handle *h, int *err, char *errbuf, size_t errlen);
void ipvs_sysctls_close(ipvs_sysctls *s);
int ipvs_sysctls_count(const ipvs_sysctls *s);
const char *ipvs_sysctls_name(const ipvs_sysctls *s, int i);
/* pread() file i into buf; returns bytes or -errno. */
long ipvs_sysctls_read(ipvs_sysctls *s, int i, char *buf, size_t len);

#endif
