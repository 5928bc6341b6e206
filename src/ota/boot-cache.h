/* SPDX-License-Identifier: MIT */
#pragma once

/* A cache of boot verification results per image (issue #16 §5, issue #10
 * "Boot"): a restart wave of devices that run the same image hashes it and
 * checks its Secure Boot V2 signature once per process, not once per device.
 *
 * An entry holds the exact bytes the bootloader's image verifier read from an
 * app partition (header through the signature sector), the size of the
 * partition it read them from, and what the verifier concluded. A lookup
 * compares all of those bytes with the flash, so only an identical image in a
 * partition of the same size reuses an entry: the verifier is deterministic,
 * and on the same bytes it would conclude the same.
 *
 * When the slot lives in the fleet's sector store (flash.h), an entry also
 * remembers the slot's flash_range_fingerprint() once a byte comparison
 * matched; a later slot with the same fingerprint holds the same bytes and
 * matches without being read (issue #10).
 *
 * What depends on the device is never cached. The caller (boot.c) checks the
 * chip id, the eFuse SECURE_VERSION and the trusted key digests on every boot,
 * against the cached facts. For the signature an entry only remembers which
 * of its blocks verified over the image digest, independent of trust;
 * boot_cache_entry_verify_sector() answers from that when a trusted digest
 * names such a block, and otherwise runs sbv2_verify_sector() for real.
 *
 * Bounded: at most max_entries entries and max_bytes of stored image bytes;
 * the least recently used entry goes first, and an image larger than
 * max_bytes is not stored. Not thread-safe: keep one per worker process. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "basic/macro.h"
#include "flash/flash.h"
#include "image/app-image.h"
#include "image/sbv2.h"

#define BOOT_CACHE_DEFAULT_ENTRIES 4u
#define BOOT_CACHE_DEFAULT_BYTES (8u * 1024u * 1024u)

typedef struct BootCache BootCache;
typedef struct BootCacheEntry BootCacheEntry;

/* What the verifier concluded about an image: only facts of its bytes. */
typedef struct BootImageFacts {
        AppImageInfo info;               /* app_image_verifier_finish() */
        bool has_key_digest;             /* the first signature block's key digest (§6.2) */
        uint8_t key_digest[SBV2_KEY_DIGEST_LEN];
        uint64_t read_ms;                /* how far reading the image advanced the boot log clock */
} BootImageFacts;

/* max_entries, max_bytes: 0 = the defaults above. */
int boot_cache_new(size_t max_entries, size_t max_bytes, BootCache **ret);
BootCache *boot_cache_free(BootCache *c);   /* accepts NULL, returns NULL */
DEFINE_TRIVIAL_CLEANUP_FUNC(BootCache *, boot_cache_free);

/* Looks up the image in `r`: reads its first APP_IMAGE_PEEK_LEN bytes and,
 * for each entry of the same partition size whose bytes start alike, the
 * rest of that entry's length, and compares. Returns 1 with *ret on an exact
 * match (a hit), 0 on a miss, negative errno when the flash cannot be read
 * (counted as a miss). A partition that does not start with the image magic
 * (blank) returns 0 and is not counted. The entry stays valid until the next
 * boot_cache_add(). */
int boot_cache_lookup(BootCache *c, const FlashRegion *r, BootCacheEntry **ret);

/* Stores an image that verified: `*data` (len bytes, malloc()ed) are the bytes
 * the verifier read from a partition of `region_size` bytes, `facts` what it
 * concluded. Takes *data (sets it to NULL) and returns 1 with *ret (optional)
 * when stored; returns 0 and leaves *data alone when the image is larger than
 * the byte cap. Evicts least recently used entries to make room. */
int boot_cache_add(BootCache *c, uint32_t region_size, uint8_t **data, size_t len, const BootImageFacts *facts,
                   BootCacheEntry **ret);

const BootImageFacts *boot_cache_entry_facts(const BootCacheEntry *e);
/* The 4 KiB signature sector of the stored bytes; NULL when the image has none. */
const uint8_t *boot_cache_entry_sector(const BootCacheEntry *e);

/* sbv2_verify_sector() over the entry's sector and signed digest, with the
 * same result and message: 0 at once when a block whose key digest is in
 * trusted[0..n) already verified, else the real check (whose success is
 * remembered). */
int boot_cache_entry_verify_sector(BootCacheEntry *e, const uint8_t (*trusted)[SBV2_KEY_DIGEST_LEN], size_t n,
                                   char *err, size_t errlen);

/* Remembers that signature block `block` verified over the entry's signed
 * digest (the caller ran sbv2_verify_sector() before boot_cache_add()). */
void boot_cache_entry_note_verified(BootCacheEntry *e, unsigned block);

/* Lookups that matched / did not, entries held and their stored bytes. */
uint64_t boot_cache_hits(const BootCache *c);
uint64_t boot_cache_misses(const BootCache *c);
size_t boot_cache_n_entries(const BootCache *c);
size_t boot_cache_bytes(const BootCache *c);
