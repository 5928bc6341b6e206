/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_NVS

/* The NVS storage engine (esp-formats.md §3.1, §3.2), written after the
 * behaviour ESP-IDF's nvs_flash relies on:
 *  - an item is written as its entries first, then its bitmap bits; an
 *    update writes the new item before erasing the old one;
 *  - when the active page is full the next free page is activated; when only
 *    the reserved free page is left, the FULL page with the most reclaimable
 *    entries is marked FREEING, its live items are copied to the reserved
 *    page, and it is erased (it becomes the new reserved page);
 *  - loading repairs what a power cut leaves: entries written but not yet
 *    marked (erased), items whose span is incomplete or whose CRC is wrong
 *    (erased), a page left in FREEING (the copy is redone), corrupt pages
 *    (erased), two copies of a key (the newer wins), blob chunks without a
 *    complete index and indexes without all their chunks (erased).
 *
 * Every page is mirrored in memory, decrypted; reads never touch the flash.
 * After a failed flash write the in-memory state may be ahead of the flash,
 * so the Nvs refuses further work (-ESP_ERR_NVS_INVALID_STATE): reopen it,
 * as a device reboots after losing power. */

#include <assert.h>
#include <inttypes.h>
#include <stddef.h>

#include "basic/esp-err.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/crc.h"
#include "basic/parse-util.h"
#include "nvs/nvs-internal.h"

typedef struct NvsPage {
        unsigned index;                 /* position in the partition */
        NvsPageState state;
        uint32_t state_raw;
        uint32_t seq;
        uint8_t version;
        uint8_t bitmap[NVS_BITMAP_SIZE];
        bool item_start[NVS_ENTRIES_PER_PAGE];                  /* a live item begins here */
        uint8_t entries[NVS_ENTRIES_PER_PAGE][NVS_ENTRY_SIZE];  /* plaintext */
        unsigned next_free;             /* first entry never used */
        unsigned n_written, n_erased;
        unsigned pos;                   /* position in Nvs.order while in use */
} NvsPage;

struct Nvs {
        NvsIo io;
        uint32_t size;
        bool read_only;
        bool broken;
        NvsXts *xts;

        unsigned n_pages;
        NvsPage *pages;
        NvsPage **order;                /* pages in use (ACTIVE, FULL, FREEING), oldest first */
        unsigned n_order;
        NvsPage *active;                /* NULL: the next write activates a page */

        unsigned repairs;
        unsigned n_handles;
};

struct NvsHandle {
        Nvs *nvs;                       /* not owned */
        uint8_t ns;
        NvsMode mode;
};

typedef struct ItemRef {
        NvsPage *page;
        unsigned i;
} ItemRef;

static uint8_t *item_bytes(ItemRef r) {
        return r.page->entries[r.i];
}

static bool item_key_eq(const uint8_t *item, const char *key) {
        return strncmp((const char *) item + NVS_ITEM_KEY, key, 16) == 0;
}

/* ---- flash access ---- */

static int io_check(Nvs *n) {
        if (n->broken)
                return -ESP_ERR_NVS_INVALID_STATE;
        if (n->read_only)
                return -ESP_ERR_NVS_READ_ONLY;
        return 0;
}

static int io_write(Nvs *n, uint32_t off, const void *buf, size_t len) {
        int r = n->io.write(n->io.userdata, off, buf, len);
        if (r < 0)
                n->broken = true;
        return r;
}

static int io_erase(Nvs *n, uint32_t off, size_t len) {
        int r = n->io.erase(n->io.userdata, off, len);
        if (r < 0)
                n->broken = true;
        return r;
}

/* ---- pages ---- */

static void page_recount(NvsPage *p) {
        p->n_written = p->n_erased = 0;
        for (unsigned i = 0; i < NVS_ENTRIES_PER_PAGE; i++) {
                NvsEntryState s = nvs_bitmap_get(p->bitmap, i);
                if (s == NVS_ENTRY_WRITTEN)
                        p->n_written++;
                else if (s == NVS_ENTRY_ERASED || s == NVS_ENTRY_ILLEGAL)
                        p->n_erased++;
        }
}

static void page_reset(NvsPage *p) {
        unsigned index = p->index;

        memset(p, 0, sizeof *p);
        p->index = index;
        p->state = NVS_PAGE_UNINITIALIZED;
        p->state_raw = NVS_STATE_UNINITIALIZED;
        memset(p->bitmap, 0xFF, sizeof p->bitmap);
        memset(p->entries, 0xFF, sizeof p->entries);
}

/* Sets the state of entries [first, first+count) and writes the bitmap bytes
 * that changed. In read-only mode (repairs at load) only memory changes. */
static int page_set_entries(Nvs *n, NvsPage *p, unsigned first, unsigned count, NvsEntryState s) {
        unsigned b0, b1;
        int r;

        if (count == 0)
                return 0;
        for (unsigned i = first; i < first + count; i++) {
                nvs_bitmap_set(p->bitmap, i, s);
                if (s != NVS_ENTRY_WRITTEN)
                        p->item_start[i] = false;
        }
        page_recount(p);
        if (n->read_only)
                return 0;

        b0 = first / 4;
        b1 = (first + count - 1) / 4;
        r = io_write(n, p->index * NVS_PAGE_SIZE + NVS_BITMAP_OFFSET + b0, p->bitmap + b0, b1 - b0 + 1);
        return r;
}

static int page_set_state(Nvs *n, NvsPage *p, NvsPageState state, uint32_t raw) {
        uint8_t b[4];

        p->state = state;
        p->state_raw = raw;
        if (n->read_only)
                return 0;
        le32_write(b, raw);
        return io_write(n, p->index * NVS_PAGE_SIZE, b, sizeof b);
}

static void order_reindex(Nvs *n) {
        for (unsigned k = 0; k < n->n_order; k++)
                n->order[k]->pos = k;
}

static void order_remove(Nvs *n, NvsPage *p) {
        for (unsigned k = 0; k < n->n_order; k++)
                if (n->order[k] == p) {
                        memmove(n->order + k, n->order + k + 1, (n->n_order - k - 1) * sizeof(NvsPage *));
                        n->n_order--;
                        order_reindex(n);
                        return;
                }
}

static int page_erase(Nvs *n, NvsPage *p) {
        int r;

        order_remove(n, p);
        if (n->active == p)
                n->active = NULL;
        page_reset(p);
        if (n->read_only)
                return 0;
        r = io_erase(n, p->index * NVS_PAGE_SIZE, NVS_PAGE_SIZE);
        return r;
}

static unsigned free_page_count(const Nvs *n) {
        unsigned c = 0;
        for (unsigned k = 0; k < n->n_pages; k++)
                if (n->pages[k].state == NVS_PAGE_UNINITIALIZED)
                        c++;
        return c;
}

/* Turns a free page into the new ACTIVE page, with the next sequence number.
 * Pages are taken round-robin after the newest one, to spread the wear. */
static int page_activate(Nvs *n) {
        uint8_t header[NVS_HEADER_SIZE];
        uint32_t seq = 0;
        unsigned start = 0;
        NvsPage *p = NULL;
        int r;

        if (n->n_order > 0) {
                NvsPage *newest = n->order[n->n_order - 1];
                seq = newest->seq + 1;
                start = newest->index + 1;
                for (unsigned k = 0; k < n->n_order; k++)
                        seq = MAX(seq, n->order[k]->seq + 1);
        }
        for (unsigned k = 0; k < n->n_pages; k++) {
                NvsPage *c = &n->pages[(start + k) % n->n_pages];
                if (c->state == NVS_PAGE_UNINITIALIZED) {
                        p = c;
                        break;
                }
        }
        if (!p)
                return -ESP_ERR_NVS_NOT_ENOUGH_SPACE;

        nvs_header_init(header, NVS_STATE_ACTIVE, seq, NVS_FORMAT_V2);
        r = io_write(n, p->index * NVS_PAGE_SIZE, header, sizeof header);
        if (r < 0)
                return r;
        p->state = NVS_PAGE_ACTIVE;
        p->state_raw = NVS_STATE_ACTIVE;
        p->seq = seq;
        p->version = NVS_FORMAT_V2;
        p->next_free = 0;
        p->pos = n->n_order;
        n->order[n->n_order++] = p;
        n->active = p;
        return 0;
}

/* Writes span entries (header + payload, plaintext) at the page's next free
 * entry: the entries first, then their bitmap bits. */
static int page_write_entries(Nvs *n, NvsPage *p, const uint8_t *plain, unsigned span, ItemRef *ret) {
        _cleanup_free_ uint8_t *enc = NULL;
        unsigned i = p->next_free;
        const uint8_t *out = plain;
        int r;

        assert(i + span <= NVS_ENTRIES_PER_PAGE);
        if (n->xts) {
                enc = malloc((size_t) span * NVS_ENTRY_SIZE);
                if (!enc)
                        return -ENOMEM;
                r = nvs_xts_crypt(n->xts, true, nvs_entry_address(p->index, i), plain, enc, span);
                if (r < 0)
                        return r;
                out = enc;
        }
        /* The entries are now "used" whatever happens: a retry goes after them. */
        p->next_free = i + span;
        r = io_write(n, nvs_entry_address(p->index, i), out, (size_t) span * NVS_ENTRY_SIZE);
        if (r < 0)
                return r;
        memcpy(p->entries[i], plain, (size_t) span * NVS_ENTRY_SIZE);
        r = page_set_entries(n, p, i, span, NVS_ENTRY_WRITTEN);
        if (r < 0)
                return r;
        p->item_start[i] = true;
        if (ret)
                *ret = (ItemRef) { p, i };
        return 0;
}

static int page_copy_items(Nvs *n, NvsPage *src, NvsPage *dst) {
        for (unsigned i = 0; i < NVS_ENTRIES_PER_PAGE; i++) {
                unsigned span;
                int r;

                if (!src->item_start[i])
                        continue;
                span = src->entries[i][NVS_ITEM_SPAN];
                if (dst->next_free + span > NVS_ENTRIES_PER_PAGE)
                        return -ESP_ERR_NVS_NOT_ENOUGH_SPACE;
                r = page_write_entries(n, dst, src->entries[i], span, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A new ACTIVE page: a free one while two are left, else garbage collection
 * into the reserved page (nvs_pagemanager requestNewPage()). */
static int request_new_page(Nvs *n) {
        NvsPage *victim = NULL;
        unsigned best = 0, free_pages = free_page_count(n);
        int r;

        if (free_pages == 0)
                return -ESP_ERR_NVS_NOT_ENOUGH_SPACE;
        if (free_pages >= 2)
                return page_activate(n);

        for (unsigned k = 0; k < n->n_order; k++) {
                NvsPage *p = n->order[k];
                unsigned reclaimable = NVS_ENTRIES_PER_PAGE - p->n_written;
                if (p->state != NVS_PAGE_FULL)
                        continue;
                if (reclaimable > best) {
                        best = reclaimable;
                        victim = p;
                }
        }
        if (!victim)
                return -ESP_ERR_NVS_NOT_ENOUGH_SPACE;

        log_debug("GC: page %u (seq %" PRIu32 ", %u reclaimable entries) -> reserved page", victim->index,
                  victim->seq, best);
        r = page_set_state(n, victim, NVS_PAGE_FREEING, NVS_STATE_FREEING);
        if (r < 0)
                return r;
        r = page_activate(n);
        if (r < 0)
                return r;
        r = page_copy_items(n, victim, n->active);
        if (r < 0)
                return r;
        return page_erase(n, victim);
}

static int next_page(Nvs *n) {
        int r;

        if (n->active) {
                r = page_set_state(n, n->active, NVS_PAGE_FULL, NVS_STATE_FULL);
                if (r < 0)
                        return r;
                n->active = NULL;
        }
        return request_new_page(n);
}

/* Makes the active page able to take `span` entries. */
static int ensure_room(Nvs *n, unsigned span) {
        if (span > NVS_ENTRIES_PER_PAGE)
                return -ESP_ERR_NVS_VALUE_TOO_LONG;
        /* Each round either finds room or compacts one page; a partition
         * that still has no room after every page had its turn is full. */
        for (unsigned round = 0; round <= n->n_pages + 1; round++) {
                int r;

                if (n->active && n->active->next_free + span <= NVS_ENTRIES_PER_PAGE)
                        return 0;
                r = next_page(n);
                if (r < 0)
                        return r;
        }
        return -ESP_ERR_NVS_NOT_ENOUGH_SPACE;
}

/* ---- items ---- */

static void item_init(uint8_t item[NVS_ENTRY_SIZE], uint8_t ns, uint8_t type, uint8_t span, uint8_t chunk,
                      const char *key) {
        memset(item, 0xFF, NVS_ENTRY_SIZE);
        item[NVS_ITEM_NS] = ns;
        item[NVS_ITEM_TYPE] = type;
        item[NVS_ITEM_SPAN] = span;
        item[NVS_ITEM_CHUNK] = chunk;
        memset(item + NVS_ITEM_KEY, 0, 16);
        memcpy(item + NVS_ITEM_KEY, key, strnlen(key, NVS_KEY_MAX));
}

/* Builds header + payload and writes them where there is room. */
static int write_item(Nvs *n, const uint8_t header[NVS_ENTRY_SIZE], const uint8_t *payload, size_t len,
                      ItemRef *ret) {
        _cleanup_free_ uint8_t *buf = NULL;
        unsigned span = header[NVS_ITEM_SPAN];
        int r;

        r = ensure_room(n, span);
        if (r < 0)
                return r;
        buf = malloc((size_t) span * NVS_ENTRY_SIZE);
        if (!buf)
                return -ENOMEM;
        memset(buf, 0xFF, (size_t) span * NVS_ENTRY_SIZE);
        memcpy(buf, header, NVS_ENTRY_SIZE);
        if (len > 0)
                memcpy(buf + NVS_ENTRY_SIZE, payload, len);
        nvs_item_set_crc(buf);
        return page_write_entries(n, n->active, buf, span, ret);
}

static int erase_item(Nvs *n, ItemRef r) {
        return page_set_entries(n, r.page, r.i, item_bytes(r)[NVS_ITEM_SPAN], NVS_ENTRY_ERASED);
}

/* Iterates live items: for (it = ITER_START; item_next(n, &it);) */
#define ITER_START ((ItemRef) { NULL, 0 })
static bool item_next(const Nvs *n, ItemRef *it) {
        unsigned k = 0, i;

        if (it->page) {
                k = it->page->pos;
                i = it->i + 1;
        } else
                i = 0;
        for (; k < n->n_order; k++, i = 0) {
                NvsPage *p = n->order[k];
                for (; i < NVS_ENTRIES_PER_PAGE; i++)
                        if (p->item_start[i]) {
                                *it = (ItemRef) { p, i };
                                return true;
                        }
        }
        return false;
}

/* The value item (anything but a blob chunk) of (ns, key). */
static bool find_value(const Nvs *n, uint8_t ns, const char *key, ItemRef *ret) {
        bool found = false;

        /* Duplicates are resolved at load; should one exist anyway, the
         * newest copy (last in page order) is the value. */
        for (ItemRef it = ITER_START; item_next(n, &it);) {
                const uint8_t *e = item_bytes(it);
                if (e[NVS_ITEM_NS] == ns && e[NVS_ITEM_TYPE] != NVS_TYPE_BLOB_DATA && item_key_eq(e, key)) {
                        *ret = it;
                        found = true;
                }
        }
        return found;
}

static bool find_chunk(const Nvs *n, uint8_t ns, const char *key, uint8_t chunk, ItemRef *ret) {
        for (ItemRef it = ITER_START; item_next(n, &it);) {
                const uint8_t *e = item_bytes(it);
                if (e[NVS_ITEM_NS] == ns && e[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_DATA && e[NVS_ITEM_CHUNK] == chunk &&
                    item_key_eq(e, key)) {
                        *ret = it;
                        return true;
                }
        }
        return false;
}

static bool ref_eq(ItemRef a, ItemRef b) {
        return a.page == b.page && a.i == b.i;
}

/* Erases every item of (ns, key) except `keep`, and except the blob chunks of
 * version `keep_chunk_version` (0x00 or 0x80; -1 = erase all chunks). */
static int erase_key_items(Nvs *n, uint8_t ns, const char *key, const ItemRef *keep, int keep_chunk_version) {
        for (ItemRef it = ITER_START; item_next(n, &it);) {
                const uint8_t *e = item_bytes(it);
                int r;

                if (e[NVS_ITEM_NS] != ns || !item_key_eq(e, key))
                        continue;
                if (keep && ref_eq(*keep, it))
                        continue;
                if (e[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_DATA && keep_chunk_version >= 0 &&
                    (int) (e[NVS_ITEM_CHUNK] & NVS_CHUNK_VERSION_ALT) == keep_chunk_version)
                        continue;
                r = erase_item(n, it);
                if (r < 0)
                        return r;
        }
        return 0;
}

static size_t varlen_size(const uint8_t *e) {
        return le16_read(e + NVS_ITEM_DATA);
}

static const uint8_t *varlen_payload(ItemRef r) {
        return r.page->entries[r.i + 1];
}

/* ---- load and repair ---- */

static bool all_ff(const uint8_t *b, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (b[i] != 0xFF)
                        return false;
        return true;
}

static int repair_entries(Nvs *n, NvsPage *p, unsigned first, unsigned count, const char *why) {
        log_debug("page %u: erasing entries %u…%u (%s)", p->index, first, first + count - 1, why);
        n->repairs++;
        /* an item's span may cover entries that were still empty: they are
         * erased too, so the next item goes after them (ESP-IDF's
         * Page::eraseEntryAndSpan() moves mNextFreeEntry the same way;
         * found by fuzz-nvs: writing over them needs 0 -> 1 bits) */
        if (first + count > p->next_free)
                p->next_free = MIN(first + count, (unsigned) NVS_ENTRIES_PER_PAGE);
        return page_set_entries(n, p, first, count, NVS_ENTRY_ERASED);
}

static bool item_header_valid(const uint8_t *e, unsigned i, const char **why) {
        uint8_t type = e[NVS_ITEM_TYPE], span = e[NVS_ITEM_SPAN];

        if (nvs_item_crc(e) != le32_read(e + NVS_ITEM_CRC))
                return (*why = "bad item CRC"), false;
        if (!nvs_type_is_known(type))
                return (*why = "unknown item type"), false;
        if (e[NVS_ITEM_NS] == 0xFF)
                return (*why = "bad namespace index"), false;
        if (!memchr(e + NVS_ITEM_KEY, 0, 16) || e[NVS_ITEM_KEY] == 0)
                return (*why = "bad key"), false;
        if (span == 0 || i + span > NVS_ENTRIES_PER_PAGE)
                return (*why = "bad span"), false;
        if (nvs_type_is_varlen(type)) {
                size_t size = varlen_size(e);
                if (size > NVS_CHUNK_MAX || span != nvs_span_for_size(size))
                        return (*why = "size does not match span"), false;
                if ((type == NVS_TYPE_BLOB_DATA) != (e[NVS_ITEM_CHUNK] != NVS_CHUNK_ANY))
                        return (*why = "bad chunk index"), false;
        } else {
                if (span != 1)
                        return (*why = "bad span"), false;
                if (type == NVS_TYPE_BLOB_IDX) {
                        uint8_t count = e[NVS_ITEM_DATA + 4], start = e[NVS_ITEM_DATA + 5];
                        if (count == 0 || count > NVS_MAX_CHUNKS_PER_BLOB ||
                            (start != 0 && start != NVS_CHUNK_VERSION_ALT) ||
                            le32_read(e + NVS_ITEM_DATA) > (uint32_t) count * NVS_CHUNK_MAX)
                                return (*why = "bad blob index"), false;
                }
        }
        return true;
}

static int page_load(Nvs *n, NvsPage *p) {
        uint8_t raw[NVS_PAGE_SIZE];
        bool blank[NVS_ENTRIES_PER_PAGE];
        unsigned last_used = 0;
        int r;

        page_reset(p);
        r = n->io.read(n->io.userdata, p->index * NVS_PAGE_SIZE, raw, sizeof raw);
        if (r < 0)
                return r;

        p->state_raw = le32_read(raw);
        if (p->state_raw == NVS_STATE_UNINITIALIZED) {
                /* An erased page must be blank; anything else is an
                 * interrupted erase or a foreign write. */
                p->state = all_ff(raw, sizeof raw) ? NVS_PAGE_UNINITIALIZED : NVS_PAGE_CORRUPT;
                return 0;
        }
        p->seq = le32_read(raw + 4);
        p->version = raw[8];
        if (nvs_header_crc(raw) != le32_read(raw + 28)) {
                p->state = NVS_PAGE_CORRUPT;
                return 0;
        }
        switch (p->state_raw) {
        case NVS_STATE_ACTIVE:
                p->state = NVS_PAGE_ACTIVE;
                break;
        case NVS_STATE_FULL:
                p->state = NVS_PAGE_FULL;
                break;
        case NVS_STATE_FREEING:
                p->state = NVS_PAGE_FREEING;
                break;
        default:
                p->state = NVS_PAGE_CORRUPT;
                return 0;
        }
        if (p->version != NVS_FORMAT_V1 && p->version != NVS_FORMAT_V2)
                return -ESP_ERR_NVS_NEW_VERSION_FOUND;

        memcpy(p->bitmap, raw + NVS_BITMAP_OFFSET, NVS_BITMAP_SIZE);
        p->next_free = 0;
        for (unsigned i = 0; i < NVS_ENTRIES_PER_PAGE; i++) {
                const uint8_t *src = raw + NVS_FIRST_ENTRY_OFFSET + i * NVS_ENTRY_SIZE;
                blank[i] = all_ff(src, NVS_ENTRY_SIZE);
                if (blank[i] || !n->xts)
                        memcpy(p->entries[i], src, NVS_ENTRY_SIZE);
                else {
                        r = nvs_xts_crypt(n->xts, false, nvs_entry_address(p->index, i), src, p->entries[i], 1);
                        if (r < 0)
                                return r;
                }
        }
        page_recount(p);

        /* Entries written but never marked: an item write that lost power
         * before its bitmap bits. */
        for (unsigned i = 0; i < NVS_ENTRIES_PER_PAGE; i++) {
                NvsEntryState s = nvs_bitmap_get(p->bitmap, i);
                if (s == NVS_ENTRY_EMPTY && !blank[i]) {
                        r = repair_entries(n, p, i, 1, "written but not marked");
                        if (r < 0)
                                return r;
                        s = NVS_ENTRY_ERASED;
                }
                if (s == NVS_ENTRY_ILLEGAL) {
                        r = repair_entries(n, p, i, 1, "illegal entry state");
                        if (r < 0)
                                return r;
                        s = NVS_ENTRY_ERASED;
                }
                if (s != NVS_ENTRY_EMPTY)
                        last_used = i + 1;
        }
        p->next_free = MAX(p->next_free, last_used);

        for (unsigned i = 0; i < NVS_ENTRIES_PER_PAGE;) {
                const uint8_t *e = p->entries[i];
                const char *why = NULL;
                unsigned span;
                bool complete = true;

                if (nvs_bitmap_get(p->bitmap, i) != NVS_ENTRY_WRITTEN) {
                        i++;
                        continue;
                }
                if (!item_header_valid(e, i, &why)) {
                        r = repair_entries(n, p, i, 1, why);
                        if (r < 0)
                                return r;
                        i++;
                        continue;
                }
                span = e[NVS_ITEM_SPAN];
                for (unsigned k = 1; k < span; k++)
                        if (nvs_bitmap_get(p->bitmap, i + k) != NVS_ENTRY_WRITTEN)
                                complete = false;
                if (!complete) {
                        r = repair_entries(n, p, i, span, "item span incomplete");
                        if (r < 0)
                                return r;
                        i += span;
                        continue;
                }
                if (nvs_type_is_varlen(e[NVS_ITEM_TYPE]) &&
                    esp_crc(p->entries[i + 1], varlen_size(e)) != le32_read(e + NVS_ITEM_DATA + 4)) {
                        r = repair_entries(n, p, i, span, "bad data CRC");
                        if (r < 0)
                                return r;
                        i += span;
                        continue;
                }
                p->item_start[i] = true;
                i += span;
        }
        return 0;
}

static int cmp_page_seq(const void *a, const void *b) {
        const NvsPage *x = *(NvsPage *const *) a, *y = *(NvsPage *const *) b;
        if (x->seq != y->seq)
                return x->seq < y->seq ? -1 : 1;
        return x->index < y->index ? -1 : x->index > y->index;
}

typedef struct DedupRef {
        ItemRef ref;
        unsigned pos;        /* page position in order, for "newer" */
} DedupRef;

/* Identity of an item: (namespace, key, class), where all value items share
 * one class and each blob chunk index is a class of its own. */
static int cmp_identity(ItemRef a, ItemRef b) {
        const uint8_t *ea = item_bytes(a), *eb = item_bytes(b);
        int ca, cb, c;

        if (ea[NVS_ITEM_NS] != eb[NVS_ITEM_NS])
                return ea[NVS_ITEM_NS] < eb[NVS_ITEM_NS] ? -1 : 1;
        c = strncmp((const char *) ea + NVS_ITEM_KEY, (const char *) eb + NVS_ITEM_KEY, 16);
        if (c != 0)
                return c;
        ca = ea[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_DATA ? ea[NVS_ITEM_CHUNK] : 256;
        cb = eb[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_DATA ? eb[NVS_ITEM_CHUNK] : 256;
        return ca < cb ? -1 : ca > cb;
}

static int cmp_dedup(const void *a, const void *b) {
        const DedupRef *x = a, *y = b;
        int c = cmp_identity(x->ref, y->ref);

        if (c != 0)
                return c;
        if (x->pos != y->pos)
                return x->pos < y->pos ? -1 : 1;
        return x->ref.i < y->ref.i ? -1 : x->ref.i > y->ref.i;
}

/* Two copies of a key: an update lost power between writing the new item
 * and erasing the old one. The newer (later page, later entry) wins. */
static int repair_duplicates(Nvs *n) {
        _cleanup_free_ DedupRef *refs = NULL;
        size_t count = 0, cap = 0;

        for (unsigned k = 0; k < n->n_order; k++)
                cap += n->order[k]->n_written;
        refs = calloc(cap + 1, sizeof *refs);
        if (!refs)
                return -ENOMEM;
        for (unsigned k = 0; k < n->n_order; k++)
                for (unsigned i = 0; i < NVS_ENTRIES_PER_PAGE && count < cap; i++)
                        if (n->order[k]->item_start[i])
                                refs[count++] = (DedupRef) { { n->order[k], i }, k };
        qsort(refs, count, sizeof *refs, cmp_dedup);
        for (size_t j = 0; j + 1 < count; j++) {
                int r;
                if (cmp_identity(refs[j].ref, refs[j + 1].ref) != 0)
                        continue;
                /* same identity: j is the older copy */
                r = repair_entries(n, refs[j].ref.page, refs[j].ref.i, item_bytes(refs[j].ref)[NVS_ITEM_SPAN],
                                   "duplicate of a newer item");
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A blob index needs all its chunks, and a chunk needs its index: anything
 * else is a blob write or update cut short. */
static int repair_blobs(Nvs *n) {
        int r;

        for (ItemRef it = ITER_START; item_next(n, &it);) {
                const uint8_t *e = item_bytes(it);
                uint8_t count, start;
                uint64_t total = 0;
                bool ok = true;

                if (e[NVS_ITEM_TYPE] != NVS_TYPE_BLOB_IDX)
                        continue;
                count = e[NVS_ITEM_DATA + 4];
                start = e[NVS_ITEM_DATA + 5];
                for (unsigned c = 0; c < count && ok; c++) {
                        ItemRef chunk;
                        if (!find_chunk(n, e[NVS_ITEM_NS], (const char *) e + NVS_ITEM_KEY, (uint8_t) (start + c), &chunk))
                                ok = false;
                        else
                                total += varlen_size(item_bytes(chunk));
                }
                if (ok && total != le32_read(e + NVS_ITEM_DATA))
                        ok = false;
                if (!ok) {
                        r = repair_entries(n, it.page, it.i, 1, "blob index without all its chunks");
                        if (r < 0)
                                return r;
                }
        }

        for (ItemRef it = ITER_START; item_next(n, &it);) {
                const uint8_t *e = item_bytes(it);
                ItemRef idx;
                bool ok = false;

                if (e[NVS_ITEM_TYPE] != NVS_TYPE_BLOB_DATA)
                        continue;
                if (find_value(n, e[NVS_ITEM_NS], (const char *) e + NVS_ITEM_KEY, &idx) &&
                    item_bytes(idx)[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_IDX) {
                        const uint8_t *x = item_bytes(idx);
                        unsigned start = x[NVS_ITEM_DATA + 5], count = x[NVS_ITEM_DATA + 4];
                        ok = e[NVS_ITEM_CHUNK] >= start && e[NVS_ITEM_CHUNK] < start + count;
                }
                if (!ok) {
                        r = repair_entries(n, it.page, it.i, e[NVS_ITEM_SPAN], "blob chunk without index");
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* A page left in FREEING: garbage collection lost power. Its copy target, if
 * it was activated, holds nothing but a partial copy: erase it and copy
 * again (nvs_pagemanager load()). */
static int repair_freeing(Nvs *n) {
        for (unsigned k = 0; k < n->n_order; k++) {
                NvsPage *f = n->order[k], *newest;
                int r;

                if (f->state != NVS_PAGE_FREEING)
                        continue;
                log_debug("page %u was being freed: redoing the copy", f->index);
                n->repairs++;
                newest = n->order[n->n_order - 1];
                if (newest != f && newest->state == NVS_PAGE_ACTIVE && newest->seq > f->seq) {
                        r = page_erase(n, newest);
                        if (r < 0)
                                return r;
                }
                n->active = NULL;
                r = page_activate(n);
                if (r < 0)
                        return r;
                r = page_copy_items(n, f, n->active);
                if (r < 0)
                        return r;
                r = page_erase(n, f);
                if (r < 0)
                        return r;
                k = (unsigned) -1;   /* order changed: rescan */
        }
        return 0;
}

static int nvs_load(Nvs *n) {
        int r;

        n->n_order = 0;
        for (unsigned k = 0; k < n->n_pages; k++) {
                NvsPage *p = &n->pages[k];
                p->index = k;
                r = page_load(n, p);
                if (r < 0)
                        return r;
                if (p->state == NVS_PAGE_ACTIVE || p->state == NVS_PAGE_FULL || p->state == NVS_PAGE_FREEING)
                        n->order[n->n_order++] = p;
        }
        qsort(n->order, n->n_order, sizeof *n->order, cmp_page_seq);
        order_reindex(n);

        if (!n->read_only) {
                for (unsigned k = 0; k < n->n_pages; k++)
                        if (n->pages[k].state == NVS_PAGE_CORRUPT) {
                                log_debug("page %u is corrupt: erasing it", k);
                                n->repairs++;
                                r = page_erase(n, &n->pages[k]);
                                if (r < 0)
                                        return r;
                        }
                r = repair_freeing(n);
                if (r < 0)
                        return r;
        }

        r = repair_duplicates(n);
        if (r < 0)
                return r;
        r = repair_blobs(n);
        if (r < 0)
                return r;

        /* At most one ACTIVE page, the newest one. */
        n->active = NULL;
        for (unsigned k = 0; k < n->n_order; k++) {
                NvsPage *p = n->order[k];
                if (p->state != NVS_PAGE_ACTIVE)
                        continue;
                if (k + 1 == n->n_order)
                        n->active = p;
                else {
                        r = page_set_state(n, p, NVS_PAGE_FULL, NVS_STATE_FULL);
                        if (r < 0)
                                return r;
                }
        }

        if (!n->read_only && free_page_count(n) == 0)
                return -ESP_ERR_NVS_NO_FREE_PAGES;
        return 0;
}

/* ---- open / close ---- */

Nvs *nvs_close(Nvs *n) {
        if (!n)
                return NULL;
        assert(n->n_handles == 0);
        if (n->io.free)
                n->io.free(n->io.userdata);
        nvs_xts_free(n->xts);
        free(n->pages);
        free(n->order);
        free(n);
        return NULL;
}


int nvs_open_io(const NvsIo *io, uint32_t size, const NvsXtsKeys *keys, NvsOpenFlags flags, Nvs **ret) {
        _cleanup_(nvs_closep) Nvs *n = NULL;
        int r;

        n = calloc(1, sizeof *n);
        if (!n) {
                if (io->free)
                        io->free(io->userdata);
                return -ENOMEM;
        }
        n->io = *io;
        if (size == 0 || size % NVS_PAGE_SIZE != 0)
                return -ESP_ERR_NVS_INVALID_LENGTH;
        n->size = size;
        n->read_only = flags & NVS_OPEN_READ_ONLY;
        n->n_pages = size / NVS_PAGE_SIZE;
        n->pages = calloc(n->n_pages, sizeof *n->pages);
        n->order = calloc(n->n_pages, sizeof *n->order);
        if (!n->pages || !n->order)
                return -ENOMEM;
        if (keys) {
                r = nvs_xts_new(keys, &n->xts);
                if (r < 0)
                        return r;
        }

        r = nvs_load(n);
        if (r < 0)
                return r;
        if (n->broken)
                return -EIO;

        *ret = TAKE_PTR(n);
        return 0;
}

typedef struct BufferIo {
        uint8_t *buf;
        size_t size;
} BufferIo;

static int buffer_read(void *userdata, uint32_t off, void *buf, size_t len) {
        BufferIo *b = userdata;
        if (off > b->size || len > b->size - off)
                return -ERANGE;
        memcpy(buf, b->buf + off, len);
        return 0;
}

static int buffer_write(void *userdata, uint32_t off, const void *buf, size_t len) {
        BufferIo *b = userdata;
        const uint8_t *p = buf;
        if (off > b->size || len > b->size - off)
                return -ERANGE;
        /* NOR rules: programming only clears bits. */
        for (size_t i = 0; i < len; i++)
                if (p[i] & ~b->buf[off + i])
                        return -EPERM;
        memcpy(b->buf + off, buf, len);
        return 0;
}

static int buffer_erase(void *userdata, uint32_t off, size_t len) {
        BufferIo *b = userdata;
        if (off % NVS_PAGE_SIZE != 0 || len % NVS_PAGE_SIZE != 0)
                return -EINVAL;
        if (off > b->size || len > b->size - off)
                return -ERANGE;
        memset(b->buf + off, 0xFF, len);
        return 0;
}

int nvs_open_buffer(void *buf, size_t size, const NvsXtsKeys *keys, NvsOpenFlags flags, Nvs **ret) {
        BufferIo *b;
        NvsIo io = {
                .read = buffer_read,
                .write = buffer_write,
                .erase = buffer_erase,
                .free = free,
        };

        if (!buf || !ret)
                return -EINVAL;
        if (size == 0 || size % NVS_PAGE_SIZE != 0 || size > UINT32_MAX)
                return -ESP_ERR_NVS_INVALID_LENGTH;
        b = malloc(sizeof *b);
        if (!b)
                return -ENOMEM;
        *b = (BufferIo) { buf, size };
        io.userdata = b;
        return nvs_open_io(&io, (uint32_t) size, keys, flags, ret);
}

unsigned nvs_repair_count(const Nvs *n) {
        return n ? n->repairs : 0;
}

bool nvs_is_encrypted(const Nvs *n) {
        return n && n->xts;
}

/* ---- namespaces and handles ---- */

static int check_name(const char *name) {
        if (!name || !name[0])
                return -ESP_ERR_NVS_INVALID_NAME;
        if (strlen(name) > NVS_KEY_MAX)
                return -ESP_ERR_NVS_KEY_TOO_LONG;
        return 0;
}

static int namespace_find(const Nvs *n, const char *name) {
        ItemRef r;
        if (find_value(n, 0, name, &r) && item_bytes(r)[NVS_ITEM_TYPE] == NVS_TYPE_U8) {
                uint8_t v = item_bytes(r)[NVS_ITEM_DATA];
                if (v >= 1 && v <= NVS_NAMESPACE_MAX)
                        return v;
        }
        return -ESP_ERR_NVS_NOT_FOUND;
}

static bool namespace_lookup_name(const Nvs *n, uint8_t ns, char name[NVS_KEY_MAX + 1]) {
        for (ItemRef it = ITER_START; item_next(n, &it);) {
                const uint8_t *e = item_bytes(it);
                if (e[NVS_ITEM_NS] == 0 && e[NVS_ITEM_TYPE] == NVS_TYPE_U8 && e[NVS_ITEM_DATA] == ns) {
                        memcpy(name, e + NVS_ITEM_KEY, NVS_KEY_MAX);
                        name[NVS_KEY_MAX] = 0;
                        return true;
                }
        }
        return false;
}

static int namespace_create(Nvs *n, const char *name) {
        bool used[256] = {};
        uint8_t header[NVS_ENTRY_SIZE];
        int r;

        for (ItemRef it = ITER_START; item_next(n, &it);) {
                const uint8_t *e = item_bytes(it);
                if (e[NVS_ITEM_NS] == 0 && e[NVS_ITEM_TYPE] == NVS_TYPE_U8)
                        used[e[NVS_ITEM_DATA]] = true;
        }
        for (unsigned v = 1; v <= NVS_NAMESPACE_MAX; v++) {
                if (used[v])
                        continue;
                item_init(header, 0, NVS_TYPE_U8, 1, NVS_CHUNK_ANY, name);
                header[NVS_ITEM_DATA] = (uint8_t) v;
                r = write_item(n, header, NULL, 0, NULL);
                if (r < 0)
                        return r;
                return (int) v;
        }
        return -ESP_ERR_NVS_NOT_ENOUGH_SPACE;
}

int nvs_handle_open(Nvs *n, const char *namespace_name, NvsMode mode, NvsHandle **ret) {
        NvsHandle *h;
        int r;

        if (!n || !ret || (mode != NVS_READONLY && mode != NVS_READWRITE))
                return -EINVAL;
        if (n->broken)
                return -ESP_ERR_NVS_INVALID_STATE;
        r = check_name(namespace_name);
        if (r < 0)
                return r;
        if (mode == NVS_READWRITE && n->read_only)
                return -ESP_ERR_NVS_READ_ONLY;

        r = namespace_find(n, namespace_name);
        if (r == -ESP_ERR_NVS_NOT_FOUND && mode == NVS_READWRITE)
                r = namespace_create(n, namespace_name);
        if (r < 0)
                return r;

        h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        *h = (NvsHandle) { .nvs = n, .ns = (uint8_t) r, .mode = mode };
        n->n_handles++;
        *ret = h;
        return 0;
}

NvsHandle *nvs_handle_close(NvsHandle *h) {
        if (!h)
                return NULL;
        h->nvs->n_handles--;
        free(h);
        return NULL;
}

static int handle_check(NvsHandle *h, const char *key, bool write) {
        int r;

        if (!h)
                return -ESP_ERR_NVS_INVALID_HANDLE;
        if (h->nvs->broken)
                return -ESP_ERR_NVS_INVALID_STATE;
        if (write && h->mode != NVS_READWRITE)
                return -ESP_ERR_NVS_READ_ONLY;
        if (write) {
                r = io_check(h->nvs);
                if (r < 0)
                        return r;
        }
        if (key) {
                r = check_name(key);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- set ---- */

static int set_fixed(NvsHandle *h, const char *key, uint8_t type, uint64_t raw) {
        uint8_t header[NVS_ENTRY_SIZE];
        unsigned size = nvs_type_primitive_size(type);
        ItemRef old, new;
        Nvs *n;
        int r;

        r = handle_check(h, key, true);
        if (r < 0)
                return r;
        n = h->nvs;
        item_init(header, h->ns, type, 1, NVS_CHUNK_ANY, key);
        for (unsigned i = 0; i < size; i++)
                header[NVS_ITEM_DATA + i] = (uint8_t) (raw >> (8 * i));

        if (find_value(n, h->ns, key, &old) && item_bytes(old)[NVS_ITEM_TYPE] == type &&
            memcmp(item_bytes(old) + NVS_ITEM_DATA, header + NVS_ITEM_DATA, 8) == 0)
                return 0;   /* unchanged: no flash write */

        r = write_item(n, header, NULL, 0, &new);
        if (r < 0)
                return r;
        return erase_key_items(n, h->ns, key, &new, -1);
}

int nvs_set_u8(NvsHandle *h, const char *key, uint8_t v) { return set_fixed(h, key, NVS_TYPE_U8, v); }
int nvs_set_i8(NvsHandle *h, const char *key, int8_t v) { return set_fixed(h, key, NVS_TYPE_I8, (uint64_t) (int64_t) v); }
int nvs_set_u16(NvsHandle *h, const char *key, uint16_t v) { return set_fixed(h, key, NVS_TYPE_U16, v); }
int nvs_set_i16(NvsHandle *h, const char *key, int16_t v) { return set_fixed(h, key, NVS_TYPE_I16, (uint64_t) (int64_t) v); }
int nvs_set_u32(NvsHandle *h, const char *key, uint32_t v) { return set_fixed(h, key, NVS_TYPE_U32, v); }
int nvs_set_i32(NvsHandle *h, const char *key, int32_t v) { return set_fixed(h, key, NVS_TYPE_I32, (uint64_t) (int64_t) v); }
int nvs_set_u64(NvsHandle *h, const char *key, uint64_t v) { return set_fixed(h, key, NVS_TYPE_U64, v); }
int nvs_set_i64(NvsHandle *h, const char *key, int64_t v) { return set_fixed(h, key, NVS_TYPE_I64, (uint64_t) v); }

static void varlen_header(uint8_t header[NVS_ENTRY_SIZE], uint8_t ns, uint8_t type, uint8_t chunk, const char *key,
                          const void *data, size_t len) {
        item_init(header, ns, type, (uint8_t) nvs_span_for_size(len), chunk, key);
        le16_write(header + NVS_ITEM_DATA, (uint16_t) len);
        le32_write(header + NVS_ITEM_DATA + 4, esp_crc(data, len));
}

int nvs_set_str(NvsHandle *h, const char *key, const char *value) {
        uint8_t header[NVS_ENTRY_SIZE];
        ItemRef old, new;
        size_t len;
        Nvs *n;
        int r;

        r = handle_check(h, key, true);
        if (r < 0)
                return r;
        if (!value)
                return -EINVAL;
        n = h->nvs;
        len = strlen(value) + 1;
        if (len > NVS_STR_MAX)
                return -ESP_ERR_NVS_VALUE_TOO_LONG;

        if (find_value(n, h->ns, key, &old)) {
                const uint8_t *e = item_bytes(old);
                if (e[NVS_ITEM_TYPE] == NVS_TYPE_STR && varlen_size(e) == len &&
                    memcmp(varlen_payload(old), value, len) == 0)
                        return 0;
        }
        varlen_header(header, h->ns, NVS_TYPE_STR, NVS_CHUNK_ANY, key, value, len);
        r = write_item(n, header, (const uint8_t *) value, len, &new);
        if (r < 0)
                return r;
        return erase_key_items(n, h->ns, key, &new, -1);
}

/* Room left for a chunk's payload on the active page. */
static size_t active_tailroom(const Nvs *n) {
        if (!n->active || n->active->next_free + 1 >= NVS_ENTRIES_PER_PAGE)
                return 0;
        return (size_t) (NVS_ENTRIES_PER_PAGE - n->active->next_free - 1) * NVS_ENTRY_SIZE;
}

static int read_blob(const Nvs *n, ItemRef r, uint8_t **ret, size_t *ret_size);

int nvs_set_blob(NvsHandle *h, const char *key, const void *data, size_t size) {
        const uint8_t *d = data;
        uint8_t header[NVS_ENTRY_SIZE];
        uint8_t chunk_start = 0, count = 0;
        size_t offset = 0, remaining = size;
        ItemRef old, idx;
        Nvs *n;
        int r;

        r = handle_check(h, key, true);
        if (r < 0)
                return r;
        if (!data && size > 0)
                return -EINVAL;
        n = h->nvs;
        if (size > (size_t) (n->n_pages - 1) * NVS_CHUNK_MAX || size > UINT32_MAX)
                return -ESP_ERR_NVS_VALUE_TOO_LONG;

        if (find_value(n, h->ns, key, &old)) {
                const uint8_t *e = item_bytes(old);
                if (e[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_IDX) {
                        _cleanup_free_ uint8_t *cur = NULL;
                        size_t cur_size = 0;
                        if (read_blob(n, old, &cur, &cur_size) >= 0 && cur_size == size &&
                            (size == 0 || memcmp(cur, data, size) == 0))
                                return 0;
                        /* the new version goes to the other chunk range, so the
                         * old one stays readable until the new index exists */
                        chunk_start = e[NVS_ITEM_DATA + 5] == 0 ? NVS_CHUNK_VERSION_ALT : 0;
                }
        }

        for (unsigned turns = 0;;) {
                size_t tailroom = active_tailroom(n), chunk;

                /* A first chunk squeezed into < 10% of a page is not worth an
                 * item: start on a fresh page (as ESP-IDF does). Garbage
                 * collection can hand the same little room back again and
                 * again, so once every page had its turn without giving a
                 * chunk room (as in ensure_room()), the partition is full. */
                if (tailroom == 0 || (count == 0 && tailroom < remaining && tailroom < NVS_CHUNK_MAX / 10)) {
                        if (turns++ > n->n_pages) {
                                r = -ESP_ERR_NVS_NOT_ENOUGH_SPACE;
                                goto fail;
                        }
                        r = next_page(n);
                        if (r < 0)
                                goto fail;
                        continue;
                }
                turns = 0;
                if (count >= NVS_MAX_CHUNKS_PER_BLOB) {
                        r = -ESP_ERR_NVS_VALUE_TOO_LONG;
                        goto fail;
                }
                chunk = MIN(tailroom, remaining);
                varlen_header(header, h->ns, NVS_TYPE_BLOB_DATA, (uint8_t) (chunk_start + count), key, d + offset,
                              chunk);
                r = write_item(n, header, d + offset, chunk, NULL);
                if (r < 0)
                        goto fail;
                count++;
                offset += chunk;
                remaining -= chunk;
                if (remaining == 0)
                        break;
                r = next_page(n);
                if (r < 0)
                        goto fail;
        }

        item_init(header, h->ns, NVS_TYPE_BLOB_IDX, 1, NVS_CHUNK_ANY, key);
        le32_write(header + NVS_ITEM_DATA, (uint32_t) size);
        header[NVS_ITEM_DATA + 4] = count;
        header[NVS_ITEM_DATA + 5] = chunk_start;
        r = write_item(n, header, NULL, 0, &idx);
        if (r < 0)
                goto fail;
        return erase_key_items(n, h->ns, key, &idx, chunk_start);

fail:
        /* Drop the chunks of the new version; the old value stays intact. */
        if (!n->broken) {
                for (ItemRef it = ITER_START; item_next(n, &it);) {
                        const uint8_t *e = item_bytes(it);
                        if (e[NVS_ITEM_NS] == h->ns && e[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_DATA && item_key_eq(e, key) &&
                            (e[NVS_ITEM_CHUNK] & NVS_CHUNK_VERSION_ALT) == chunk_start &&
                            !(find_value(n, h->ns, key, &old) && item_bytes(old)[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_IDX &&
                              item_bytes(old)[NVS_ITEM_DATA + 5] == chunk_start))
                                (void) erase_item(n, it);
                }
        }
        return r;
}

/* ---- get ---- */

static int get_item(NvsHandle *h, const char *key, ItemRef *ret) {
        int r = handle_check(h, key, false);
        if (r < 0)
                return r;
        if (!find_value(h->nvs, h->ns, key, ret))
                return -ESP_ERR_NVS_NOT_FOUND;
        return 0;
}

static int get_fixed(NvsHandle *h, const char *key, uint8_t type, uint64_t *ret) {
        ItemRef it;
        int r;

        if (!ret)
                return -EINVAL;
        r = get_item(h, key, &it);
        if (r < 0)
                return r;
        if (item_bytes(it)[NVS_ITEM_TYPE] != type)
                return -ESP_ERR_NVS_TYPE_MISMATCH;
        *ret = le64_read(item_bytes(it) + NVS_ITEM_DATA);
        return 0;
}

#define DEFINE_GET(name, ctype, type)                                           \
        int nvs_get_##name(NvsHandle *h, const char *key, ctype *ret) {         \
                uint64_t v;                                                     \
                int r = get_fixed(h, key, type, ret ? &v : NULL);               \
                if (r < 0)                                                      \
                        return r;                                               \
                *ret = (ctype) v;                                               \
                return 0;                                                       \
        }

DEFINE_GET(u8, uint8_t, NVS_TYPE_U8)
DEFINE_GET(i8, int8_t, NVS_TYPE_I8)
DEFINE_GET(u16, uint16_t, NVS_TYPE_U16)
DEFINE_GET(i16, int16_t, NVS_TYPE_I16)
DEFINE_GET(u32, uint32_t, NVS_TYPE_U32)
DEFINE_GET(i32, int32_t, NVS_TYPE_I32)
DEFINE_GET(u64, uint64_t, NVS_TYPE_U64)
DEFINE_GET(i64, int64_t, NVS_TYPE_I64)

int nvs_get_str(NvsHandle *h, const char *key, char *buf, size_t *len) {
        ItemRef it;
        size_t size;
        int r;

        if (!len)
                return -EINVAL;
        r = get_item(h, key, &it);
        if (r < 0)
                return r;
        if (item_bytes(it)[NVS_ITEM_TYPE] != NVS_TYPE_STR)
                return -ESP_ERR_NVS_TYPE_MISMATCH;
        size = varlen_size(item_bytes(it));
        if (!buf) {
                *len = size;
                return 0;
        }
        if (*len < size) {
                *len = size;
                return -ESP_ERR_NVS_INVALID_LENGTH;
        }
        memcpy(buf, varlen_payload(it), size);
        /* a foreign image may lack the NUL: never hand out an unterminated string */
        if (size == 0 || buf[size - 1] != 0) {
                if (size >= *len)
                        return -ESP_ERR_NVS_INVALID_LENGTH;
                buf[size] = 0;
        }
        *len = size;
        return 0;
}

int nvs_get_str_alloc(NvsHandle *h, const char *key, char **ret) {
        _cleanup_free_ char *s = NULL;
        size_t len = 0;
        int r;

        r = nvs_get_str(h, key, NULL, &len);
        if (r < 0)
                return r;
        s = malloc(len + 1);
        if (!s)
                return -ENOMEM;
        len++;
        r = nvs_get_str(h, key, s, &len);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

static int read_blob(const Nvs *n, ItemRef r, uint8_t **ret, size_t *ret_size) {
        const uint8_t *e = item_bytes(r);
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size, off = 0;

        if (e[NVS_ITEM_TYPE] == NVS_TYPE_BLOB) {
                size = varlen_size(e);
                buf = malloc(size + 1);
                if (!buf)
                        return -ENOMEM;
                memcpy(buf, varlen_payload(r), size);
        } else if (e[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_IDX) {
                uint8_t count = e[NVS_ITEM_DATA + 4], start = e[NVS_ITEM_DATA + 5];
                size = le32_read(e + NVS_ITEM_DATA);
                buf = malloc(size + 1);
                if (!buf)
                        return -ENOMEM;
                for (unsigned c = 0; c < count; c++) {
                        ItemRef chunk;
                        size_t cs;
                        if (!find_chunk(n, e[NVS_ITEM_NS], (const char *) e + NVS_ITEM_KEY, (uint8_t) (start + c), &chunk))
                                return -ESP_ERR_NVS_NOT_FOUND;
                        cs = varlen_size(item_bytes(chunk));
                        if (cs > size - off)
                                return -ESP_ERR_NVS_INVALID_LENGTH;
                        memcpy(buf + off, varlen_payload(chunk), cs);
                        off += cs;
                }
                if (off != size)
                        return -ESP_ERR_NVS_INVALID_LENGTH;
        } else
                return -ESP_ERR_NVS_TYPE_MISMATCH;

        *ret = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

int nvs_get_blob_alloc(NvsHandle *h, const char *key, uint8_t **ret, size_t *ret_size) {
        ItemRef it;
        int r;

        if (!ret || !ret_size)
                return -EINVAL;
        r = get_item(h, key, &it);
        if (r < 0)
                return r;
        return read_blob(h->nvs, it, ret, ret_size);
}

int nvs_get_blob(NvsHandle *h, const char *key, void *buf, size_t *len) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t size = 0;
        int r;

        if (!len)
                return -EINVAL;
        r = nvs_get_blob_alloc(h, key, &data, &size);
        if (r < 0)
                return r;
        if (!buf) {
                *len = size;
                return 0;
        }
        if (*len < size) {
                *len = size;
                return -ESP_ERR_NVS_INVALID_LENGTH;
        }
        memcpy(buf, data, size);
        *len = size;
        return 0;
}

int nvs_find_key(NvsHandle *h, const char *key, NvsType *ret_type) {
        ItemRef it;
        int r = get_item(h, key, &it);
        if (r < 0)
                return r;
        if (ret_type)
                *ret_type = (NvsType) item_bytes(it)[NVS_ITEM_TYPE];
        return 0;
}

/* ---- erase ---- */

int nvs_erase_key(NvsHandle *h, const char *key) {
        ItemRef it;
        int r;

        r = handle_check(h, key, true);
        if (r < 0)
                return r;
        if (!find_value(h->nvs, h->ns, key, &it))
                return -ESP_ERR_NVS_NOT_FOUND;
        /* the index first: a cut then leaves orphan chunks, which load drops */
        r = erase_item(h->nvs, it);
        if (r < 0)
                return r;
        return erase_key_items(h->nvs, h->ns, key, NULL, -1);
}

int nvs_erase_all(NvsHandle *h) {
        int r;

        r = handle_check(h, NULL, true);
        if (r < 0)
                return r;
        for (ItemRef it = ITER_START; item_next(h->nvs, &it);) {
                if (item_bytes(it)[NVS_ITEM_NS] != h->ns)
                        continue;
                r = erase_item(h->nvs, it);
                if (r < 0)
                        return r;
        }
        return 0;
}

int nvs_commit(NvsHandle *h) {
        if (!h)
                return -ESP_ERR_NVS_INVALID_HANDLE;
        return h->nvs->broken ? -ESP_ERR_NVS_INVALID_STATE : 0;
}

/* ---- iteration and generic access ---- */

int nvs_iterate(Nvs *n, const char *namespace_name, NvsType type, NvsIterFunc f, void *userdata) {
        int ns_filter = -1;

        if (!n || !f)
                return -EINVAL;
        if (namespace_name) {
                ns_filter = namespace_find(n, namespace_name);
                if (ns_filter < 0)
                        return 0;   /* no such namespace: nothing to report */
        }
        for (ItemRef it = ITER_START; item_next(n, &it);) {
                const uint8_t *e = item_bytes(it);
                NvsEntryInfo info = {};
                int r;

                if (e[NVS_ITEM_NS] == 0 || e[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_DATA)
                        continue;
                if (ns_filter >= 0 && e[NVS_ITEM_NS] != ns_filter)
                        continue;
                if (type != NVS_TYPE_ANY && e[NVS_ITEM_TYPE] != type &&
                    !((type == NVS_TYPE_BLOB || type == NVS_TYPE_BLOB_IDX) &&
                      (e[NVS_ITEM_TYPE] == NVS_TYPE_BLOB || e[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_IDX)))
                        continue;
                if (!namespace_lookup_name(n, e[NVS_ITEM_NS], info.namespace_name))
                        snprintf(info.namespace_name, sizeof info.namespace_name, "#%u", e[NVS_ITEM_NS]);
                memcpy(info.key, e + NVS_ITEM_KEY, NVS_KEY_MAX);
                info.type = (NvsType) e[NVS_ITEM_TYPE];
                info.namespace_index = e[NVS_ITEM_NS];
                r = f(&info, userdata);
                if (r < 0)
                        return r;
                if (r > 0)
                        return 0;
        }
        return 0;
}

void nvs_value_done(NvsValue *v) {
        if (!v)
                return;
        free(v->data);
        *v = (NvsValue) {};
}

int nvs_get_value(Nvs *n, const char *ns_name, const char *key, NvsValue *ret) {
        ItemRef it;
        const uint8_t *e;
        NvsValue v = {};
        int ns, r;

        if (!n || !ret)
                return -EINVAL;
        r = check_name(ns_name);
        if (r < 0)
                return r;
        r = check_name(key);
        if (r < 0)
                return r;
        ns = namespace_find(n, ns_name);
        if (ns < 0)
                return ns;
        if (!find_value(n, (uint8_t) ns, key, &it))
                return -ESP_ERR_NVS_NOT_FOUND;
        e = item_bytes(it);
        v.type = (NvsType) e[NVS_ITEM_TYPE];
        switch (e[NVS_ITEM_TYPE]) {
        case NVS_TYPE_U8:
        case NVS_TYPE_U16:
        case NVS_TYPE_U32:
        case NVS_TYPE_U64: {
                unsigned size = nvs_type_primitive_size(e[NVS_ITEM_TYPE]);
                v.u = le64_read(e + NVS_ITEM_DATA);
                if (size < 8)
                        v.u &= (UINT64_C(1) << (8 * size)) - 1;
                v.i = (int64_t) v.u;
                break;
        }
        case NVS_TYPE_I8:
                v.i = (int8_t) e[NVS_ITEM_DATA];
                break;
        case NVS_TYPE_I16:
                v.i = (int16_t) le16_read(e + NVS_ITEM_DATA);
                break;
        case NVS_TYPE_I32:
                v.i = (int32_t) le32_read(e + NVS_ITEM_DATA);
                break;
        case NVS_TYPE_I64:
                v.i = (int64_t) le64_read(e + NVS_ITEM_DATA);
                break;
        case NVS_TYPE_FLOAT: {
                uint32_t bits = le32_read(e + NVS_ITEM_DATA);
                float fl;
                memcpy(&fl, &bits, sizeof fl);
                v.u = bits;
                v.d = fl;
                break;
        }
        case NVS_TYPE_DOUBLE: {
                uint64_t bits = le64_read(e + NVS_ITEM_DATA);
                memcpy(&v.d, &bits, sizeof v.d);
                v.u = bits;
                break;
        }
        case NVS_TYPE_STR:
                v.size = varlen_size(e);
                v.data = malloc(v.size + 1);
                if (!v.data)
                        return -ENOMEM;
                memcpy(v.data, varlen_payload(it), v.size);
                v.data[v.size] = 0;
                break;
        default:
                r = read_blob(n, it, &v.data, &v.size);
                if (r < 0)
                        return r;
                break;
        }
        if (v.type != NVS_TYPE_STR && v.type != NVS_TYPE_BLOB && v.type != NVS_TYPE_BLOB_IDX)
                v.i = nvs_type_is_signed(v.type) ? v.i : (int64_t) v.u;
        *ret = v;
        return 0;
}

int nvs_set_from_text(NvsHandle *h, const char *key, const char *type, const char *value, char *err, size_t errlen) {
        char dummy[1];

        if (!err) {
                err = dummy;
                errlen = sizeof dummy;
        }
        if (!type || !value)
                return -EINVAL;
        uint8_t itype;
        uint64_t raw;
        int r = nvs_parse_int_text(type, value, 0, &itype, &raw);
        if (r != -ENOENT) {
                if (r < 0) {
                        snprintf(err, errlen, "'%s' is not a valid %s", value, type);
                        return -EINVAL;
                }
                return set_fixed(h, key, itype, raw);
        }
        if (streq(type, "string") || streq(type, "str")) {
                if (strlen(value) + 1 > NVS_STR_MAX) {
                        snprintf(err, errlen, "string is %zu bytes, at most %u fit", strlen(value) + 1, NVS_STR_MAX);
                        return -ESP_ERR_NVS_VALUE_TOO_LONG;
                }
                return nvs_set_str(h, key, value);
        }
        if (streq(type, "hex2bin") || streq(type, "blob") || streq(type, "base64")) {
                _cleanup_free_ uint8_t *bin = NULL;
                size_t len = 0;

                if (streq(type, "base64"))
                        r = nvs_base64_decode(value, strlen(value), &bin, &len);
                else
                        r = hex_decode(value, &bin, &len);
                if (r < 0) {
                        snprintf(err, errlen, "value is not valid %s", streq(type, "base64") ? "base64" : "hex");
                        return -EINVAL;
                }
                return nvs_set_blob(h, key, bin, len);
        }
        snprintf(err, errlen, "unknown type '%s' (u8, i8, u16, i16, u32, i32, u64, i64, string, hex2bin, base64)", type);
        return -EINVAL;
}

/* ---- page info and stats ---- */

unsigned nvs_page_count(const Nvs *n) {
        return n ? n->n_pages : 0;
}

int nvs_page_info(const Nvs *n, unsigned index, NvsPageInfo *ret) {
        const NvsPage *p;

        if (!n || !ret)
                return -EINVAL;
        if (index >= n->n_pages)
                return -ERANGE;
        p = &n->pages[index];
        *ret = (NvsPageInfo) {
                .index = index,
                .state = p->state,
                .state_raw = p->state_raw,
                .seq = p->seq,
                .version = p->version,
                .written = p->n_written,
                .erased = p->n_erased,
                .empty = NVS_ENTRIES_PER_PAGE - p->n_written - p->n_erased,
        };
        if (p->state == NVS_PAGE_UNINITIALIZED || p->state == NVS_PAGE_CORRUPT)
                ret->written = ret->erased = 0, ret->empty = NVS_ENTRIES_PER_PAGE;
        return 0;
}

int nvs_get_stats(const Nvs *n, NvsStats *ret) {
        NvsStats s = {};

        if (!n || !ret)
                return -EINVAL;
        s.total_entries = (size_t) n->n_pages * NVS_ENTRIES_PER_PAGE;
        for (unsigned k = 0; k < n->n_order; k++)
                s.used_entries += n->order[k]->n_written;
        s.free_entries = s.total_entries - s.used_entries;
        s.available_entries = s.free_entries > NVS_ENTRIES_PER_PAGE ? s.free_entries - NVS_ENTRIES_PER_PAGE : 0;
        for (ItemRef it = ITER_START; item_next(n, &it);)
                if (item_bytes(it)[NVS_ITEM_NS] == 0)
                        s.namespace_count++;
        *ret = s;
        return 0;
}
