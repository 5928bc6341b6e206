/* SPDX-License-Identifier: MIT */
#pragma once

/* What the two NVS harnesses (plain and XTS-encrypted) do with an opened
 * partition: read every entry back, and compare two views of the same data. */

#include "nvs/nvs.h"

/* One key as iteration reported it, with the value nvs_get_value() read. */
typedef struct FuzzNvsEntry {
        NvsEntryInfo info;
        bool have_value;
        NvsValue value;
} FuzzNvsEntry;

typedef struct FuzzNvsSnapshot {
        FuzzNvsEntry *entries;
        size_t n, allocated;
} FuzzNvsSnapshot;

/* Iterates every key of `nvs` and reads each one through nvs_get_value(),
 * checking that every key iteration lists can be read with the type it was
 * listed with. `thorough` also reads each key through a read-only handle
 * and the getter of its type, and checks that the filtered iterations agree
 * with the full one and that the page infos and stats add up. Fills *ret
 * (free with _done). */
void fuzz_nvs_snapshot(Nvs *nvs, bool thorough, FuzzNvsSnapshot *ret);
void fuzz_nvs_snapshot_done(FuzzNvsSnapshot *s);

/* Aborts unless both snapshots hold the same keys, types and values, in the
 * same order. Entries of namespace `skip_namespace` (may be NULL) are left
 * out on both sides. `what` names the comparison in the failure message. */
void fuzz_nvs_compare(const FuzzNvsSnapshot *a, const FuzzNvsSnapshot *b, const char *skip_namespace,
                      const char *what);

/* Opens a copy of the image read-write (which repairs it in place), writes
 * to it and checks what a device relies on after nvs_flash_init():
 *  - the read-write view equals the read-only view of the same image
 *    (`expected`, a snapshot of the read-only open);
 *  - a reopen of the repaired image needs no further repair and shows the
 *    same keys;
 *  - after a set of u32, string and blob keys in namespace "fuzz" and the
 *    erase of one existing key, a reopen reads back exactly what was set,
 *    the erased key is gone and every other key is unchanged.
 * `keys` NULL = plaintext. `seed` bytes become the values written. */
void fuzz_nvs_read_write(const uint8_t *image, size_t size, const NvsXtsKeys *keys,
                         const FuzzNvsSnapshot *expected, const uint8_t *seed, size_t seed_size);
