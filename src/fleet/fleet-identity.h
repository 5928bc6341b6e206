/* SPDX-License-Identifier: MIT */
#pragma once

/* Device identities derived from a seed (issue #13 "Provisioning is
 * deterministic per shard"): the same seed and index give the same MAC, and
 * so the same id, on any host, whichever shard or run makes the device.
 * Only the identity is derived; keys (HMAC, RSA, NVS) stay random.
 *
 *   key     = SHA-256("espfleet identity v1" || seed)
 *   mac[0..2] = the fleet's prefix, from the key: locally administered
 *             (bit 1 of the first octet set), unicast (bit 0 clear)
 *   mac[3..5] = a keyed permutation of the 24-bit index (a 4-round Feistel
 *             network on two 12-bit halves, rounds from SHA-256 of the key)
 *
 * The last three bytes name the device ("esp-" + hex), and a permutation
 * never maps two indexes to one value: ids of one seed never collide,
 * whatever the shards. Indexes go up to FLEET_IDENTITY_INDEX_MAX. */

#include <stdint.h>

#include "fleet/fleet-dir.h"

#define FLEET_IDENTITY_KEY_LEN 32
#define FLEET_IDENTITY_INDEX_MAX 0xffffffu

typedef struct FleetIdentityKey {
        uint8_t key[FLEET_IDENTITY_KEY_LEN];
} FleetIdentityKey;

/* Any non-empty string is a seed. -EINVAL for an empty one, -EIO if the
 * digest fails. */
int fleet_identity_key_from_seed(const char *seed, FleetIdentityKey *ret);

/* The MAC of device `index` (<= FLEET_IDENTITY_INDEX_MAX, else -ERANGE). */
int fleet_identity_mac(const FleetIdentityKey *k, unsigned index, uint8_t mac[FLEET_MAC_LEN]);

/* The inverse: which index a MAC of this key belongs to; -ENOENT when its
 * prefix is not the key's. */
int fleet_identity_index(const FleetIdentityKey *k, const uint8_t mac[FLEET_MAC_LEN], unsigned *ret);
