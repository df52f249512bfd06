/*
 * floor: the least work a full IPVS dump can take from user space.
 * One generic-netlink socket; GET_SERVICE dump, then one GET_DEST dump per
 * service, every datagram appended to one buffer. The only decoding is
 * what the dest requests need (each service's key attributes); no records,
 * no stats parsing. Prints JSON: per-iteration wall seconds, bytes, counts.
 *
 *   gcc -O2 -o floor bench/floor.c && ./floor [iterations]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IPVS_CMD_GET_SERVICE 4
#define IPVS_CMD_GET_DEST 8
#define IPVS_CMD_ATTR_SERVICE 1
#define SVC_AF 1
#define SVC_PROTOCOL 2
#define SVC_ADDR 3
#define SVC_PORT 4
#define SVC_FWMARK 5

static int fd;
static uint32_t seq = 1, portid;
static uint16_t family;
static uint8_t rbuf[1 << 16];
static uint8_t *store;
static size_t store_len, store_cap;

struct key { uint8_t attrs[64]; uint16_t len; };   /* the service's key attrs, raw */
static struct key *keys;
static size_t nkeys, keys_cap;

static void die(const char *what) { perror(what); exit(1); }

static void send_req(uint16_t type, uint16_t flags, uint8_t cmd, uint8_t ver,
                     const void *attrs, size_t alen)
{
    uint8_t msg[256];
    struct nlmsghdr *n = (struct nlmsghdr *)msg;
    struct genlmsghdr *g = (struct genlmsghdr *)NLMSG_DATA(n);
    struct sockaddr_nl sa = { .nl_family = AF_NETLINK };

    memset(msg, 0, sizeof(msg));
    n->nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN) + alen;
    n->nlmsg_type = type;
    n->nlmsg_flags = flags;
    n->nlmsg_seq = ++seq;
    g->cmd = cmd;
    g->version = ver;
    memcpy(msg + NLMSG_LENGTH(GENL_HDRLEN), attrs, alen);
    if (sendto(fd, msg, n->nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("sendto");
}

static void append(const uint8_t *p, size_t n)
{
    if (store_len + n > store_cap) {
        store_cap = (store_len + n) * 2;
        store = realloc(store, store_cap);
        if (!store)
            die("realloc");
    }
    memcpy(store + store_len, p, n);
    store_len += n;
}

/* Receive one dump into the store; if keep_keys, remember each service's key. */
static void recv_dump(int keep_keys)
{
    for (;;) {
        ssize_t len = recv(fd, rbuf, sizeof(rbuf), 0);
        struct nlmsghdr *n;

        if (len < 0) {
            if (errno == EINTR)
                continue;
            die("recv");
        }
        append(rbuf, (size_t)len);
        for (n = (struct nlmsghdr *)rbuf; NLMSG_OK(n, (size_t)len); n = NLMSG_NEXT(n, len)) {
            if (n->nlmsg_type == NLMSG_DONE)
                return;
            if (n->nlmsg_type == NLMSG_ERROR) {
                fprintf(stderr, "netlink error %d\n", *(int *)NLMSG_DATA(n));
                exit(1);
            }
            if (keep_keys) {
                uint8_t *a = (uint8_t *)NLMSG_DATA(n) + GENL_HDRLEN;
                struct nlattr *nest = (struct nlattr *)a;
                struct nlattr *x = (struct nlattr *)(a + NLA_HDRLEN);
                size_t left = nest->nla_len - NLA_HDRLEN;
                struct key *k;

                if (nkeys == keys_cap) {
                    keys_cap = keys_cap ? keys_cap * 2 : 1024;
                    keys = realloc(keys, keys_cap * sizeof(*keys));
                }
                k = &keys[nkeys++];
                k->len = NLA_HDRLEN;
                while (left >= NLA_HDRLEN && x->nla_len >= NLA_HDRLEN && x->nla_len <= left) {
                    int t = x->nla_type & NLA_TYPE_MASK;
                    size_t al = NLA_ALIGN(x->nla_len);

                    if (t == SVC_AF || t == SVC_PROTOCOL || t == SVC_ADDR || t == SVC_PORT ||
                        t == SVC_FWMARK) {
                        memcpy(k->attrs + k->len, x, al);
                        k->len += al;
                    }
                    if (al >= left)
                        break;
                    left -= al;
                    x = (struct nlattr *)((uint8_t *)x + al);
                }
                ((struct nlattr *)k->attrs)->nla_len = k->len;
                ((struct nlattr *)k->attrs)->nla_type = IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED;
            }
        }
    }
}

static void resolve(void)
{
    uint8_t attrs[16] = {0};
    struct nlattr *a = (struct nlattr *)attrs;
    ssize_t len;
    struct nlmsghdr *n;

    a->nla_len = NLA_HDRLEN + 5;
    a->nla_type = CTRL_ATTR_FAMILY_NAME;
    memcpy(attrs + NLA_HDRLEN, "IPVS", 5);
    send_req(GENL_ID_CTRL, NLM_F_REQUEST, CTRL_CMD_GETFAMILY, 1, attrs, 12);
    len = recv(fd, rbuf, sizeof(rbuf), 0);
    if (len < 0)
        die("recv family");
    n = (struct nlmsghdr *)rbuf;
    if (n->nlmsg_type != GENL_ID_CTRL) {
        fprintf(stderr, "IPVS family not found\n");
        exit(1);
    }
    {
        uint8_t *p = (uint8_t *)NLMSG_DATA(n) + GENL_HDRLEN;
        size_t left = n->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);

        while (left >= NLA_HDRLEN) {
            struct nlattr *x = (struct nlattr *)p;

            if (x->nla_type == CTRL_ATTR_FAMILY_ID) {
                memcpy(&family, p + NLA_HDRLEN, 2);
                return;
            }
            if (NLA_ALIGN(x->nla_len) >= left || x->nla_len < NLA_HDRLEN)
                break;
            left -= NLA_ALIGN(x->nla_len);
            p += NLA_ALIGN(x->nla_len);
        }
    }
    fprintf(stderr, "no family id\n");
    exit(1);
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 1, it, rcv = 1 << 20;
    struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
    socklen_t sl = sizeof(sa);

    fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
    if (fd < 0)
        die("socket");
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
        die("bind");
    portid = sa.nl_pid;
    resolve();
    printf("{\"runs\": [");
    for (it = 0; it < iters; it++) {
        double t0 = now(), t1;
        size_t i;

        store_len = 0;
        nkeys = 0;
        send_req(family, NLM_F_REQUEST | NLM_F_DUMP, IPVS_CMD_GET_SERVICE, 1, NULL, 0);
        recv_dump(1);
        for (i = 0; i < nkeys; i++) {
            send_req(family, NLM_F_REQUEST | NLM_F_DUMP, IPVS_CMD_GET_DEST, 1,
                     keys[i].attrs, keys[i].len);
            recv_dump(0);
        }
        t1 = now();
        printf("%s{\"seconds\": %.6f, \"services\": %zu, \"bytes\": %zu}", it ? ", " : "",
               t1 - t0, nkeys, store_len);
    }
    printf("]}\n");
    return 0;
}
