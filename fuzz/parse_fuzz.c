/*
 * libFuzzer harness for ipvs_parse_service_msgs / ipvs_parse_dest_msgs.
 * Built twice (fuzz/build.sh): -DFUZZ_DESTS for the dest parser.
 *
 * Input: an 8-byte header, then the netlink bytes.
 *   [0]    errlen: size of the error buffer (0 = NULL buffer), malloc'ed
 *          exactly so that ASan sees a write past it
 *   [1]    bit 0: check nlmsg_type against family_id
 *   [2..3] family_id (little endian)
 *   [4..7] dests: svc_af in [4..5] (2 = AF_INET, 10 = AF_INET6, or anything)
 *          and svc_index in [6..7]; services: unused
 *
 * Each input is parsed three ways and the answers must agree:
 *   fresh  - a new result, a 512-byte error buffer;
 *   tiny   - a new result, the error buffer of [0] bytes;
 *   reused - one result kept across inputs (holding earlier records and
 *            capacity), appended to.
 * Checked: the return value is 1, 0 or -errno; the three return values and
 * the appended records are equal; the tiny message is a NUL-terminated
 * prefix of the fresh one; records carry what the contract says
 * (services: first_dest = ndests = 0; dests: the given svc_index).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipvs_core.h"

#ifdef FUZZ_DESTS
typedef struct ipvs_dest_rec rec_t;
#define RECS(r) ((r)->dests)
#define NRECS(r) ((r)->ndests)
#else
typedef struct ipvs_svc_rec rec_t;
#define RECS(r) ((r)->svcs)
#define NRECS(r) ((r)->nsvcs)
#endif

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)
#define BIG_ERRLEN 512
#define REUSED_MAX 4096     /* records kept in the reused result before clearing */

static ipvs_result *reused;

static int parse(const uint8_t *buf, size_t len, uint16_t family_id, uint32_t svc_index,
                 uint16_t svc_af, ipvs_result *res, char *errbuf, size_t errlen)
{
#ifdef FUZZ_DESTS
    return ipvs_parse_dest_msgs(buf, len, family_id, svc_index, svc_af, res, errbuf, errlen);
#else
    (void)svc_index;
    (void)svc_af;
    return ipvs_parse_service_msgs(buf, len, family_id, res, errbuf, errlen);
#endif
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t errlen, n, before;
    uint16_t family_id, svc_af;
    uint32_t svc_index;
    const uint8_t *buf;
    char big[BIG_ERRLEN], *tiny;
    ipvs_result *fresh, *small;
    int rc, rc_tiny, rc_reused;

    if (size < 8)
        return 0;
    errlen = data[0];
    family_id = (data[1] & 1) ? (uint16_t)(data[2] | data[3] << 8) : 0;
    svc_af = (uint16_t)(data[4] | data[5] << 8);
    svc_index = (uint32_t)(data[6] | data[7] << 8);
    /* A copy of exactly the netlink bytes, so that a read past them is seen. */
    n = size - 8;
    buf = n ? memcpy(malloc(n), data + 8, n) : NULL;

    fresh = ipvs_result_new();
    small = ipvs_result_new();
    if (!reused)
        reused = ipvs_result_new();
    CHECK(fresh && small && reused);
    tiny = errlen ? malloc(errlen) : NULL;

    memset(big, 'x', sizeof(big));
    rc = parse(buf, n, family_id, svc_index, svc_af, fresh, big, sizeof(big));
    CHECK(rc == 0 || rc == 1 || (rc < 0 && rc >= -4095));
    if (rc < 0) {
        CHECK(memchr(big, 0, sizeof(big)) != NULL);
        CHECK(big[0] != 0);         /* every error says something */
    }

    if (tiny)
        memset(tiny, 'x', errlen);
    rc_tiny = parse(buf, n, family_id, svc_index, svc_af, small, tiny, errlen);
    CHECK(rc_tiny == rc);
    CHECK(NRECS(small) == NRECS(fresh));
    if (NRECS(fresh))
        CHECK(memcmp(RECS(small), RECS(fresh), NRECS(fresh) * sizeof(rec_t)) == 0);
    if (tiny && rc < 0) {
        size_t m = strnlen(tiny, errlen);

        CHECK(m < errlen);
        CHECK(strncmp(tiny, big, m) == 0);
    }

    if (NRECS(reused) > REUSED_MAX)
        ipvs_result_clear(reused);
    before = NRECS(reused);
    rc_reused = parse(buf, n, family_id, svc_index, svc_af, reused, NULL, 0);
    CHECK(rc_reused == rc);
    CHECK(NRECS(reused) == before + NRECS(fresh));
    if (NRECS(fresh))
        CHECK(memcmp(RECS(reused) + before, RECS(fresh), NRECS(fresh) * sizeof(rec_t)) == 0);

    for (size_t i = 0; i < NRECS(fresh); i++) {
#ifdef FUZZ_DESTS
        CHECK(RECS(fresh)[i].svc_index == svc_index);
        CHECK(RECS(fresh)[i]._pad0 == 0 && RECS(fresh)[i]._pad1 == 0);
#else
        CHECK(RECS(fresh)[i].first_dest == 0 && RECS(fresh)[i].ndests == 0);
        CHECK(RECS(fresh)[i].sched_name[sizeof(RECS(fresh)[i].sched_name) - 1] == 0);
        CHECK(RECS(fresh)[i].pe_name[sizeof(RECS(fresh)[i].pe_name) - 1] == 0);
#endif
    }

    free(tiny);
    ipvs_result_free(small);
    ipvs_result_free(fresh);
    free((void *)buf);
    return 0;
}
