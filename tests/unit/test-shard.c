/* SPDX-License-Identifier: MIT */
/* Shard arithmetic (fleet/shard.h) and derived identities
 * (fleet/fleet-identity.h): issue #13 "Provisioning is deterministic per
 * shard". */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>

#include "basic/macro.h"
#include "fleet/fleet-identity.h"
#include "fleet/shard.h"

typedef struct ParseCase {
        char text[16];          /* inline: Criterion copies parameters into each test process */
        int r;
        unsigned index, count;
} ParseCase;

static const ParseCase parse_cases[] = {
        { "0/1", 0, 0, 1 },
        { "0/2", 0, 0, 2 },
        { "1/2", 0, 1, 2 },
        { "7/8", 0, 7, 8 },
        { "00/3", 0, 0, 3 },              /* leading zeros are decimal, not octal */
        { "65535/65536", 0, 65535, 65536 },
        { "0/65537", -EINVAL, 0, 0 },     /* more than SHARD_COUNT_MAX */
        { "2/2", -EINVAL, 0, 0 },         /* index out of range */
        { "0/0", -EINVAL, 0, 0 },
        { "", -EINVAL, 0, 0 },
        { "1", -EINVAL, 0, 0 },
        { "/2", -EINVAL, 0, 0 },
        { "1/", -EINVAL, 0, 0 },
        { "-1/2", -EINVAL, 0, 0 },
        { "+1/2", -EINVAL, 0, 0 },
        { " 0/2", -EINVAL, 0, 0 },
        { "0/2 ", -EINVAL, 0, 0 },
        { "0/2x", -EINVAL, 0, 0 },
        { "0x1/2", -EINVAL, 0, 0 },
        { "1/2/3", -EINVAL, 0, 0 },
        { "99999999999/2", -EINVAL, 0, 0 }, /* would overflow */
};

ParameterizedTestParameters(shard, parse) {
        return cr_make_param_array(ParseCase, parse_cases, ELEMENTSOF(parse_cases));
}

ParameterizedTest(const ParseCase *c, shard, parse) {
        Shard s = { 12345, 54321 };
        int r = shard_from_string(c->text, &s);

        cr_assert_eq(r, c->r, "'%s': %d, expected %d", c->text, r, c->r);
        if (r == 0) {
                cr_assert_eq(s.index, c->index);
                cr_assert_eq(s.count, c->count);
        } else {
                cr_assert_eq(s.index, 12345, "'%s': a refused string changed the result", c->text);
        }
}

Test(shard, unset_is_whole_fleet) {
        Shard s = {};
        unsigned first = 1, n = 1;

        cr_assert_not(shard_is_set(&s));
        shard_range(&s, 1234, &first, &n);
        cr_assert_eq(first, 0);
        cr_assert_eq(n, 1234);
}

/* Known slices: floor(TOTAL*I/N) .. floor(TOTAL*(I+1)/N)-1. */
Test(shard, known_slices) {
        static const struct {
                unsigned total, index, count, first, n;
        } v[] = {
                { 10, 0, 3, 0, 3 },  { 10, 1, 3, 3, 3 },  { 10, 2, 3, 6, 4 },
                { 20000, 0, 4, 0, 5000 }, { 20000, 3, 4, 15000, 5000 },
                { 2, 0, 4, 0, 0 },   { 2, 1, 4, 0, 1 },   { 2, 2, 4, 1, 0 }, { 2, 3, 4, 1, 1 },
                { 0, 0, 2, 0, 0 },
                /* 64-bit products: TOTAL*I overflows 32 bits */
                { 0x7fffffffu, 65535, 65536, 0x7fff7fffu, 0x8000 },
        };
        for (size_t i = 0; i < ELEMENTSOF(v); i++) {
                Shard s = { v[i].index, v[i].count };
                unsigned first, n;
                shard_range(&s, v[i].total, &first, &n);
                cr_assert_eq(first, v[i].first, "%u of %u/%u: first %u, expected %u", v[i].total, v[i].index,
                             v[i].count, first, v[i].first);
                cr_assert_eq(n, v[i].n, "%u of %u/%u: %u devices, expected %u", v[i].total, v[i].index, v[i].count,
                             n, v[i].n);
        }
}

/* Every (TOTAL, N) up to a size: the slices are contiguous, disjoint,
 * cover 0..TOTAL-1 in order, differ by at most one device, and
 * shard_of_index() names the slice holding each index. */
Test(shard, slices_partition_the_fleet) {
        for (unsigned total = 0; total <= 150; total++)
                for (unsigned count = 1; count <= 40; count++) {
                        unsigned next = 0, smallest = UINT_MAX, largest = 0;
                        for (unsigned i = 0; i < count; i++) {
                                Shard s = { i, count };
                                unsigned first, n;
                                shard_range(&s, total, &first, &n);
                                cr_assert_eq(first, next, "%u/%u of %u starts at %u, not %u", i, count, total, first,
                                             next);
                                for (unsigned x = first; x < first + n; x++)
                                        cr_assert_eq(shard_of_index(count, total, x), i,
                                                     "index %u of %u in %u shards: shard %u, expected %u", x, total,
                                                     count, shard_of_index(count, total, x), i);
                                next = first + n;
                                smallest = MIN(smallest, n);
                                largest = MAX(largest, n);
                        }
                        cr_assert_eq(next, total, "%u shards of %u cover %u devices", count, total, next);
                        cr_assert_leq(largest - smallest, 1, "%u shards of %u: sizes %u..%u", count, total, smallest,
                                      largest);
                }
}

Test(shard, of_index_large) {
        static const unsigned totals[] = { 19500, 20000, 1000003, 0x7fffffffu };
        static const unsigned counts[] = { 1, 3, 7, 64, 1000, 65536 };
        for (size_t t = 0; t < ELEMENTSOF(totals); t++)
                for (size_t c = 0; c < ELEMENTSOF(counts); c++)
                        for (unsigned i = 0; i < counts[c]; i += 1 + counts[c] / 50) {
                                Shard s = { i, counts[c] };
                                unsigned first, n;
                                shard_range(&s, totals[t], &first, &n);
                                if (n == 0)
                                        continue;
                                cr_assert_eq(shard_of_index(counts[c], totals[t], first), i);
                                cr_assert_eq(shard_of_index(counts[c], totals[t], first + n - 1), i);
                        }
}

/* ---- derived identities ------------------------------------------------ */

Test(identity, empty_seed_refused) {
        FleetIdentityKey k;
        cr_assert_eq(fleet_identity_key_from_seed("", &k), -EINVAL);
        cr_assert_eq(fleet_identity_key_from_seed(NULL, &k), -EINVAL);
}

/* Pinned: every host must derive these same MACs for seed "abc"; a change
 * here changes every sharded fleet's device ids. */
Test(identity, known_answer) {
        static const struct {
                unsigned index;
                uint8_t mac[FLEET_MAC_LEN];
                const char *id;
        } v[] = {
                { 0, { 0x1a, 0xa6, 0xb2, 0xda, 0xdb, 0x0c }, "esp-dadb0c" },
                { 1, { 0x1a, 0xa6, 0xb2, 0x7c, 0x14, 0x4c }, "esp-7c144c" },
                { 5, { 0x1a, 0xa6, 0xb2, 0x62, 0x45, 0x43 }, "esp-624543" },
        };
        FleetIdentityKey k;

        cr_assert_eq(fleet_identity_key_from_seed("abc", &k), 0);
        for (size_t i = 0; i < ELEMENTSOF(v); i++) {
                uint8_t mac[FLEET_MAC_LEN];
                char id[FLEET_ID_MAX];
                cr_assert_eq(fleet_identity_mac(&k, v[i].index, mac), 0);
                cr_assert_arr_eq(mac, v[i].mac, FLEET_MAC_LEN, "index %u", v[i].index);
                fleet_id_from_mac(mac, id);
                cr_assert_str_eq(id, v[i].id);
        }
}

Test(identity, deterministic_and_seed_dependent) {
        FleetIdentityKey a, a2, b;
        uint8_t m1[FLEET_MAC_LEN], m2[FLEET_MAC_LEN];
        unsigned same = 0;

        cr_assert_eq(fleet_identity_key_from_seed("fleet-a", &a), 0);
        cr_assert_eq(fleet_identity_key_from_seed("fleet-a", &a2), 0);
        cr_assert_eq(fleet_identity_key_from_seed("fleet-b", &b), 0);
        for (unsigned i = 0; i < 1000; i++) {
                cr_assert_eq(fleet_identity_mac(&a, i, m1), 0);
                cr_assert_eq(fleet_identity_mac(&a2, i, m2), 0);
                cr_assert_arr_eq(m1, m2, FLEET_MAC_LEN);
                cr_assert_eq(fleet_identity_mac(&b, i, m2), 0);
                same += memcmp(m1 + 3, m2 + 3, 3) == 0;
        }
        /* two seeds agree on an id by chance only (1000 × 2^-24) */
        cr_assert_leq(same, 1);
}

/* The id is a permutation of the index: no two devices of one seed share
 * an id (20,000 consecutive indexes, and a sample of the top of the
 * range), the prefix is locally administered unicast, and the inverse
 * gives the index back. */
Test(identity, permutation) {
        FleetIdentityKey k;
        uint8_t *seen = calloc(1u << 21, 1);
        uint8_t prefix[3];

        cr_assert_not_null(seen);
        cr_assert_eq(fleet_identity_key_from_seed("20000 devices", &k), 0);
        for (unsigned n = 0; n < 21000; n++) {
                unsigned i = n < 20000 ? n : FLEET_IDENTITY_INDEX_MAX - (n - 20000);
                uint8_t mac[FLEET_MAC_LEN];
                unsigned low, back;
                cr_assert_eq(fleet_identity_mac(&k, i, mac), 0);
                if (n == 0)
                        memcpy(prefix, mac, 3);
                cr_assert_arr_eq(mac, prefix, 3, "index %u: another prefix", i);
                cr_assert_eq(mac[0] & 0x03, 0x02, "index %u: %02x is not locally administered unicast", i, mac[0]);
                low = (unsigned) mac[3] << 16 | (unsigned) mac[4] << 8 | mac[5];
                cr_assert_not(seen[low >> 3] & (1u << (low & 7)), "index %u: id %06x taken twice", i, low);
                seen[low >> 3] |= (uint8_t) (1u << (low & 7));
                cr_assert_eq(fleet_identity_index(&k, mac, &back), 0);
                cr_assert_eq(back, i);
        }
        free(seen);
}

Test(identity, limits) {
        FleetIdentityKey k, other;
        uint8_t mac[FLEET_MAC_LEN];
        unsigned back;

        cr_assert_eq(fleet_identity_key_from_seed("x", &k), 0);
        cr_assert_eq(fleet_identity_key_from_seed("y", &other), 0);
        cr_assert_eq(fleet_identity_mac(&k, FLEET_IDENTITY_INDEX_MAX + 1, mac), -ERANGE);
        cr_assert_eq(fleet_identity_mac(&k, 7, mac), 0);
        /* a MAC of another seed has another prefix (with 2^-24 odds) */
        cr_assert_eq(fleet_identity_index(&other, mac, &back), -ENOENT);
}
