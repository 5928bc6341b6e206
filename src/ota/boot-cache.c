/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_OTA

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic/log.h"
#include "ota/boot-cache.h"

#define BOOT_CACHE_COMPARE_CHUNK (128u * 1024u)

struct BootCacheEntry {
        uint8_t *data;                  /* NULL: a free slot */
        size_t len;
        uint32_t region_size;
        BootImageFacts facts;
        uint64_t last_use;

        /* flash_range_fingerprint() of the sectors holding the image, once a
         * device whose slot is in the fleet's sector store matched: the next
         * such device matches on it without reading its image (issue #10). */
        bool has_fingerprint;
        uint8_t fingerprint[32];

        /* the blocks of the signature sector up to the first without the magic */
        unsigned n_blocks;
        bool block_parsed[SBV2_MAX_BLOCKS];
        bool block_verified[SBV2_MAX_BLOCKS];   /* sbv2_block_verify() over facts.info.signed_digest passed */
        uint8_t block_key[SBV2_MAX_BLOCKS][SBV2_KEY_DIGEST_LEN];
};

struct BootCache {
        BootCacheEntry *entries;        /* max_entries slots */
        size_t max_entries, n_entries;
        size_t max_bytes, bytes;
        uint64_t tick, hits, misses;
        uint8_t *buf;                   /* BOOT_CACHE_COMPARE_CHUNK, for reading flash to compare */
};

int boot_cache_new(size_t max_entries, size_t max_bytes, BootCache **ret) {
        _cleanup_(boot_cache_freep) BootCache *c = NULL;

        if (!ret)
                return -EINVAL;
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->max_entries = max_entries ?: BOOT_CACHE_DEFAULT_ENTRIES;
        c->max_bytes = max_bytes ?: BOOT_CACHE_DEFAULT_BYTES;
        c->entries = calloc(c->max_entries, sizeof *c->entries);
        c->buf = malloc(BOOT_CACHE_COMPARE_CHUNK);
        if (!c->entries || !c->buf)
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

static void entry_clear(BootCache *c, BootCacheEntry *e) {
        if (!e->data)
                return;
        c->bytes -= e->len;
        c->n_entries--;
        free(e->data);
        *e = (BootCacheEntry) {};
}

BootCache *boot_cache_free(BootCache *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; c->entries && i < c->max_entries; i++)
                entry_clear(c, &c->entries[i]);
        free(c->entries);
        free(c->buf);
        free(c);
        return NULL;
}

/* Whether the flash holds e's bytes, given that its first `peek` bytes are
 * already in `head`. */
static int entry_matches(BootCache *c, BootCacheEntry *e, const FlashRegion *r, const uint8_t *head,
                         size_t peek) {
        size_t first = MIN(peek, e->len);
        uint8_t fp[32];
        bool have_fp;
        int k;

        if (e->region_size != r->size || memcmp(e->data, head, first) != 0)
                return 0;
        /* Equal fingerprints are equal sector digests, so equal bytes. A
         * different one may differ only past the image's end: compare. */
        have_fp = e->len > 0 && flash_range_fingerprint(r->flash, r->offset, e->len, fp) >= 0;
        if (have_fp && e->has_fingerprint && memcmp(fp, e->fingerprint, sizeof fp) == 0)
                return 1;
        for (size_t off = first; off < e->len;) {
                size_t n = MIN((size_t) BOOT_CACHE_COMPARE_CHUNK, e->len - off);

                k = flash_region_read(r, (uint32_t) off, c->buf, n);
                if (k < 0)
                        return k;
                if (memcmp(e->data + off, c->buf, n) != 0)
                        return 0;
                off += n;
        }
        if (have_fp && !e->has_fingerprint) {
                memcpy(e->fingerprint, fp, sizeof fp);
                e->has_fingerprint = true;
        }
        return 1;
}

int boot_cache_lookup(BootCache *c, const FlashRegion *r, BootCacheEntry **ret) {
        uint8_t head[APP_IMAGE_PEEK_LEN];
        size_t peek;
        int k;

        if (!c || !r || !ret)
                return -EINVAL;
        *ret = NULL;
        peek = MIN((size_t) APP_IMAGE_PEEK_LEN, (size_t) r->size);
        k = flash_region_read(r, 0, head, peek);
        if (k < 0) {
                c->misses++;
                return k;
        }
        if (peek == 0 || head[0] != APP_IMAGE_MAGIC)
                return 0;   /* a blank slot is no image: neither hit nor miss */
        for (size_t i = 0; i < c->max_entries; i++) {
                BootCacheEntry *e = &c->entries[i];

                if (!e->data)
                        continue;
                k = entry_matches(c, e, r, head, peek);
                if (k < 0) {
                        c->misses++;
                        return k;
                }
                if (k > 0) {
                        e->last_use = ++c->tick;
                        c->hits++;
                        *ret = e;
                        return 1;
                }
        }
        c->misses++;
        return 0;
}

static BootCacheEntry *least_recently_used(BootCache *c) {
        BootCacheEntry *lru = NULL;

        for (size_t i = 0; i < c->max_entries; i++) {
                BootCacheEntry *e = &c->entries[i];
                if (e->data && (!lru || e->last_use < lru->last_use))
                        lru = e;
        }
        return lru;
}

static void entry_parse_blocks(BootCacheEntry *e) {
        const uint8_t *sector = boot_cache_entry_sector(e);

        if (!sector)
                return;
        /* the blocks sbv2_verify_sector() visits: up to the first without the magic */
        for (unsigned i = 0; i < SBV2_MAX_BLOCKS; i++) {
                const uint8_t *raw = sector + i * SBV2_BLOCK_SIZE;
                Sbv2Block b;

                if (raw[0] != SBV2_MAGIC)
                        break;
                e->n_blocks = i + 1;
                if (sbv2_parse_block(raw, SBV2_BLOCK_SIZE, &b, NULL, 0) < 0)
                        continue;
                e->block_parsed[i] = true;
                memcpy(e->block_key[i], b.key_digest, SBV2_KEY_DIGEST_LEN);
        }
}

int boot_cache_add(BootCache *c, uint32_t region_size, uint8_t **data, size_t len, const BootImageFacts *facts,
                   BootCacheEntry **ret) {
        BootCacheEntry *e = NULL;

        if (!c || !data || !*data || !facts)
                return -EINVAL;
        if (ret)
                *ret = NULL;
        /* the sector must lie in the stored bytes, or entry_parse_blocks() would read past them */
        if (facts->info.has_signature_sector &&
            (facts->info.signed_len > len || len - facts->info.signed_len < SBV2_SECTOR_SIZE))
                return -EINVAL;
        if (len > c->max_bytes)
                return 0;

        while (c->n_entries >= c->max_entries || c->bytes + len > c->max_bytes) {
                BootCacheEntry *lru = least_recently_used(c);
                log_debug("Boot cache: evicting a %zu byte image", lru->len);
                entry_clear(c, lru);
        }
        for (size_t i = 0; i < c->max_entries && !e; i++)
                if (!c->entries[i].data)
                        e = &c->entries[i];

        *e = (BootCacheEntry) {
                .data = TAKE_PTR(*data),
                .len = len,
                .region_size = region_size,
                .facts = *facts,
                .last_use = ++c->tick,
        };
        entry_parse_blocks(e);
        c->n_entries++;
        c->bytes += len;
        if (ret)
                *ret = e;
        return 1;
}

const BootImageFacts *boot_cache_entry_facts(const BootCacheEntry *e) {
        return e ? &e->facts : NULL;
}

const uint8_t *boot_cache_entry_sector(const BootCacheEntry *e) {
        if (!e || !e->facts.info.has_signature_sector)
                return NULL;
        return e->data + e->facts.info.signed_len;
}

int boot_cache_entry_verify_sector(BootCacheEntry *e, const uint8_t (*trusted)[SBV2_KEY_DIGEST_LEN], size_t n,
                                   char *err, size_t errlen) {
        const uint8_t *sector = boot_cache_entry_sector(e);
        unsigned block;
        int k;

        if (!sector)
                return -EINVAL;
        /* sbv2_verify_sector() accepts as soon as it reaches a block that is
         * trusted and verifies; a remembered block that is trusted now is
         * reached (the blocks before it are the same bytes), so the answer
         * is 0 without the exponentiation. */
        for (unsigned i = 0; i < e->n_blocks; i++) {
                if (!e->block_verified[i])
                        continue;
                for (size_t t = 0; t < n; t++)
                        if (memcmp(trusted[t], e->block_key[i], SBV2_KEY_DIGEST_LEN) == 0)
                                return 0;
        }
        k = sbv2_verify_sector(sector, SBV2_SECTOR_SIZE, e->facts.info.signed_digest, trusted, n, &block, err,
                               errlen);
        if (k < 0)
                return k;
        boot_cache_entry_note_verified(e, block);
        return 0;
}

void boot_cache_entry_note_verified(BootCacheEntry *e, unsigned block) {
        if (e && block < e->n_blocks && e->block_parsed[block])
                e->block_verified[block] = true;
}

uint64_t boot_cache_hits(const BootCache *c) {
        return c ? c->hits : 0;
}

uint64_t boot_cache_misses(const BootCache *c) {
        return c ? c->misses : 0;
}

size_t boot_cache_n_entries(const BootCache *c) {
        return c ? c->n_entries : 0;
}

size_t boot_cache_bytes(const BootCache *c) {
        return c ? c->bytes : 0;
}
