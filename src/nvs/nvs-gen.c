/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_NVS

/* The CSV generator. It reproduces nvs_partition_gen.py (`generate`, and
 * `encrypt` with an input key) byte for byte (esp-formats.md §3.3): the same
 * page filling rules, including the tool's quirks:
 *   - a string (or v1 blob) that would reach the last entry of a page moves to
 *     the next page (">= 126"), while primitives may use entry 125;
 *   - v2 blobs are cut into chunks that fill the current page's tailroom, a
 *     page with no tailroom left still gets a 0-byte chunk;
 *   - data rows go into the most recently *created* namespace, even after a
 *     row re-selected an older one;
 *   - partitions < 0x3000 are "read-only": no reserved page, and only the
 *     pages in use are emitted. */

#include <assert.h>
#include <ctype.h>
#include <stdarg.h>
#include <libgen.h>

#include "basic/crc.h"
#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "nvs/nvs-internal.h"

#define GEN_FILE_MAX (16u * 1024u * 1024u)

typedef struct Gen {
        uint8_t *image;
        unsigned n_pages;          /* pages in the image buffer */
        int64_t size_left;         /* the tool's running "size" budget */
        bool read_only;
        uint8_t version;
        NvsXts *xts;               /* NULL = plaintext */

        unsigned page;             /* current page */
        unsigned entry;            /* next entry of the current page */

        unsigned ns_count;
        char ns_names[NVS_NAMESPACE_MAX][NVS_KEY_MAX + 1];

        const char *name;          /* for messages */
        unsigned line;
        char *err;
        size_t errlen;
} Gen;

_printf_(3, 4)
static int gen_error(Gen *g, int r, const char *fmt, ...) {
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (g->line > 0)
                snprintf(g->err, g->errlen, "%s:%u: %s", g->name, g->line, msg);
        else
                snprintf(g->err, g->errlen, "%s: %s", g->name, msg);
        return r;
}

static uint8_t *gen_page(Gen *g) {
        return g->image + (size_t) g->page * NVS_PAGE_SIZE;
}

/* create_new_page(): the current page becomes FULL, a new one gets a header. */
static int gen_new_page(Gen *g) {
        uint8_t *p = gen_page(g);

        if (le32_read(p) == NVS_STATE_ACTIVE)
                le32_write(p, NVS_STATE_FULL);
        if (g->size_left <= 0 || g->page + 1 >= g->n_pages)
                return gen_error(g, -ESP_ERR_NVS_NOT_ENOUGH_SPACE,
                                 "partition size is too small for the data in the CSV, increase the size");
        g->size_left -= NVS_PAGE_SIZE;
        g->page++;
        g->entry = 0;
        nvs_header_init(gen_page(g), NVS_STATE_ACTIVE, g->page, g->version);
        return 0;
}

/* write_entry_to_buf(): n entries at the current position, payload padded
 * with 0xFF, encrypted per entry when asked, bitmap marked WRITTEN. */
static int gen_put(Gen *g, const uint8_t *data, size_t len, unsigned n) {
        uint8_t *p = gen_page(g);
        _cleanup_free_ uint8_t *buf = NULL;
        int r;

        if (n == 0)
                return 0;
        assert(g->entry + n <= NVS_ENTRIES_PER_PAGE);
        buf = malloc((size_t) n * NVS_ENTRY_SIZE);
        if (!buf)
                return -ENOMEM;
        memset(buf, 0xFF, (size_t) n * NVS_ENTRY_SIZE);
        memcpy(buf, data, MIN(len, (size_t) n * NVS_ENTRY_SIZE));
        if (g->xts) {
                r = nvs_xts_crypt(g->xts, true, nvs_entry_address(g->page, g->entry), buf,
                                  p + NVS_FIRST_ENTRY_OFFSET + g->entry * NVS_ENTRY_SIZE, n);
                if (r < 0)
                        return gen_error(g, r, "XTS encryption failed");
        } else
                memcpy(p + NVS_FIRST_ENTRY_OFFSET + g->entry * NVS_ENTRY_SIZE, buf, (size_t) n * NVS_ENTRY_SIZE);
        for (unsigned k = 0; k < n; k++)
                nvs_bitmap_set(p + NVS_BITMAP_OFFSET, g->entry++, NVS_ENTRY_WRITTEN);
        return 0;
}

static void gen_item_init(uint8_t item[NVS_ENTRY_SIZE], uint8_t ns, uint8_t type, uint8_t span, uint8_t chunk,
                          const char *key) {
        memset(item, 0xFF, NVS_ENTRY_SIZE);
        item[NVS_ITEM_NS] = ns;
        item[NVS_ITEM_TYPE] = type;
        item[NVS_ITEM_SPAN] = span;
        item[NVS_ITEM_CHUNK] = chunk;
        memset(item + NVS_ITEM_KEY, 0, 16);
        memcpy(item + NVS_ITEM_KEY, key, strlen(key));
}

static int gen_primitive(Gen *g, uint8_t ns, const char *key, uint8_t type, uint64_t raw) {
        uint8_t item[NVS_ENTRY_SIZE];
        unsigned size = nvs_type_primitive_size(type);
        int r;

        if (g->entry >= NVS_ENTRIES_PER_PAGE) {
                r = gen_new_page(g);
                if (r < 0)
                        return r;
        }
        gen_item_init(item, ns, type, 1, NVS_CHUNK_ANY, key);
        for (unsigned i = 0; i < size; i++)
                item[NVS_ITEM_DATA + i] = (uint8_t) (raw >> (8 * i));
        nvs_item_set_crc(item);
        return gen_put(g, item, sizeof item, 1);
}

static int gen_single_page_varlen(Gen *g, uint8_t ns, const char *key, uint8_t type, const uint8_t *data,
                                  size_t len) {
        uint8_t item[NVS_ENTRY_SIZE];
        unsigned span = nvs_span_for_size(len);
        int r;

        gen_item_init(item, ns, type, (uint8_t) span, NVS_CHUNK_ANY, key);
        le16_write(item + NVS_ITEM_DATA, (uint16_t) len);
        le32_write(item + NVS_ITEM_DATA + 4, esp_crc(data, len));
        nvs_item_set_crc(item);
        r = gen_put(g, item, sizeof item, 1);
        if (r < 0)
                return r;
        return gen_put(g, data, len, span - 1);
}

static int gen_blob_v2(Gen *g, uint8_t ns, const char *key, const uint8_t *data, size_t len) {
        uint8_t item[NVS_ENTRY_SIZE];
        size_t offset = 0, remaining = len;
        unsigned chunk_count = 0;
        const uint8_t chunk_start = 0;
        int r;

        for (;;) {
                size_t tailroom = (size_t) (NVS_ENTRIES_PER_PAGE - g->entry - 1) * NVS_ENTRY_SIZE;
                size_t chunk = MIN(tailroom, remaining);
                unsigned span = nvs_span_for_size(chunk);

                if (chunk_count >= NVS_MAX_CHUNKS_PER_BLOB)
                        return gen_error(g, -ESP_ERR_NVS_VALUE_TOO_LONG, "blob '%s' needs too many chunks", key);

                remaining -= chunk;
                gen_item_init(item, ns, NVS_TYPE_BLOB_DATA, (uint8_t) span, (uint8_t) (chunk_start + chunk_count), key);
                le16_write(item + NVS_ITEM_DATA, (uint16_t) chunk);
                le32_write(item + NVS_ITEM_DATA + 4, esp_crc(data + offset, chunk));
                nvs_item_set_crc(item);
                r = gen_put(g, item, sizeof item, 1);
                if (r < 0)
                        return r;
                r = gen_put(g, data + offset, chunk, span - 1);
                if (r < 0)
                        return r;
                chunk_count++;

                if (remaining > 0 || tailroom - chunk < NVS_ENTRY_SIZE) {
                        r = gen_new_page(g);
                        if (r < 0)
                                return r;
                }
                offset += chunk;

                if (remaining == 0) {
                        gen_item_init(item, ns, NVS_TYPE_BLOB_IDX, 1, NVS_CHUNK_ANY, key);
                        le32_write(item + NVS_ITEM_DATA, (uint32_t) len);
                        item[NVS_ITEM_DATA + 4] = (uint8_t) chunk_count;
                        item[NVS_ITEM_DATA + 5] = chunk_start;
                        nvs_item_set_crc(item);
                        return gen_put(g, item, sizeof item, 1);
                }
        }
}

static int gen_varlen(Gen *g, uint8_t ns, const char *key, bool is_string, const uint8_t *data, size_t len) {
        bool v2_blob = g->version == NVS_FORMAT_V2 && !is_string;
        size_t max = g->version == NVS_FORMAT_V1 ? 1984 : NVS_STR_MAX;
        unsigned total = nvs_span_for_size(len);

        if (!v2_blob && len > max)
                return gen_error(g, -ESP_ERR_NVS_VALUE_TOO_LONG,
                                 "size %zu of '%s' exceeds the maximum of %zu bytes", len, key, max);

        for (unsigned attempt = 0;; attempt++) {
                bool full = g->entry >= NVS_ENTRIES_PER_PAGE ||
                            (!v2_blob && g->entry + total >= NVS_ENTRIES_PER_PAGE);
                int r;

                if (!full)
                        break;
                if (attempt > 0)
                        return gen_error(g, -ESP_ERR_NVS_VALUE_TOO_LONG,
                                         "'%s' (%zu bytes) does not fit in one page", key, len);
                r = gen_new_page(g);
                if (r < 0)
                        return r;
        }

        if (v2_blob)
                return gen_blob_v2(g, ns, key, data, len);
        return gen_single_page_varlen(g, ns, key, is_string ? NVS_TYPE_STR : NVS_TYPE_BLOB, data, len);
}

static int gen_namespace(Gen *g, const char *name) {
        for (unsigned i = 0; i < g->ns_count; i++)
                if (streq(g->ns_names[i], name))
                        return 0;   /* re-selected: the tool writes nothing (and keeps using the newest index) */
        if (g->ns_count >= NVS_NAMESPACE_MAX)
                return gen_error(g, -ESP_ERR_NVS_NOT_ENOUGH_SPACE, "too many namespaces (at most %u)",
                                 NVS_NAMESPACE_MAX);
        strncpy(g->ns_names[g->ns_count], name, NVS_KEY_MAX);
        g->ns_count++;
        return gen_primitive(g, 0, name, NVS_TYPE_U8, g->ns_count);
}

static char *strip(char *s) {
        char *e;
        while (isspace((unsigned char) *s))
                s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char) e[-1]))
                *--e = 0;
        return s;
}

static int gen_int(Gen *g, const char *key, const char *enc, const char *text, uint8_t *ret_type, uint64_t *ret_raw) {
        _cleanup_free_ char *copy = strdup(text);
        int r;

        if (!copy)
                return -ENOMEM;
        r = nvs_parse_int_text(enc, strip(copy), 10, ret_type, ret_raw);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return gen_error(g, -EINVAL, "value '%s' of key '%s' is not a valid %s", text, key, enc);
        return 1;
}

/* blob_fill(N;0xPP) / blob_sz_fill(N;0xPP) */
static int gen_fill(Gen *g, const char *key, const char *enc, const uint8_t *value, size_t vlen,
                    uint8_t **ret, size_t *ret_len) {
        bool sz = strneq(enc, "blob_sz_fill(", 13);
        const char *p = enc + (sz ? 13 : 10), *semi;
        _cleanup_free_ char *num = NULL;
        _cleanup_free_ uint8_t *out = NULL;
        uint64_t length;
        uint8_t pad;
        size_t n;

        semi = strchr(p, ';');
        if (!semi || strlen(semi) != 6 || !strneq(semi + 1, "0x", 2) || semi[5] != ')' ||
            !isxdigit((unsigned char) semi[3]) || !isxdigit((unsigned char) semi[4]))
                return gen_error(g, -EINVAL, "%s: invalid encoding format", enc);
        num = strndup(p, semi - p);
        if (!num)
                return -ENOMEM;
        if (num[0] < '0' || num[0] > '9' || safe_atou64(num, 10, &length) < 0 || length > GEN_FILE_MAX)
                return gen_error(g, -EINVAL, "%s: invalid encoding format", enc);
        char pad_hex[3] = { semi[3], semi[4], 0 };
        if (hex_decode_fixed(pad_hex, &pad, 1) < 0)
                return gen_error(g, -EINVAL, "%s: invalid encoding format", enc);
        if (vlen > length)
                return gen_error(g, -EINVAL, "%s: value length exceeds specified length", key);

        n = (sz ? 4 : 0) + (size_t) length;
        out = malloc(n ? n : 1);
        if (!out)
                return -ENOMEM;
        memset(out, pad, n);
        if (sz) {
                le32_write(out, (uint32_t) vlen);
                memcpy(out + 4, value, vlen);
        } else
                memcpy(out, value, vlen);
        *ret = TAKE_PTR(out);
        *ret_len = n;
        return 0;
}

static int gen_data(Gen *g, const char *key, const char *enc_in, const uint8_t *value, size_t vlen) {
        _cleanup_free_ uint8_t *bin = NULL;
        _cleanup_free_ char *enc = strdup(enc_in);
        _cleanup_free_ char *text = NULL;
        uint8_t ns = (uint8_t) g->ns_count;
        size_t bin_len = 0;
        int r;

        if (!enc)
                return -ENOMEM;
        for (char *c = enc; *c; c++)
                *c = (char) tolower((unsigned char) *c);
        if (ns == 0)
                return gen_error(g, -EINVAL, "key '%s' comes before any namespace row", key);

        text = strndup((const char *) value, vlen);
        if (!text)
                return -ENOMEM;

        if (strneq(enc, "blob_fill(", 10) || strneq(enc, "blob_sz_fill(", 13)) {
                r = gen_fill(g, key, enc, value, vlen, &bin, &bin_len);
                if (r < 0)
                        return r;
                return gen_varlen(g, ns, key, false, bin, bin_len);
        }

        if (streq(enc, "hex2bin")) {
                char *s = strip(text);
                if (strlen(s) % 2 != 0)
                        return gen_error(g, -EINVAL, "%s: invalid data length, hex2bin needs an even number of digits",
                                         key);
                r = hex_decode(s, &bin, &bin_len);
                if (r < 0)
                        return gen_error(g, -EINVAL, "%s: '%s' is not valid hex", key, s);
                return gen_varlen(g, ns, key, false, bin, bin_len);
        }
        if (streq(enc, "base64")) {
                r = nvs_base64_decode((const char *) value, vlen, &bin, &bin_len);
                if (r < 0)
                        return gen_error(g, -EINVAL, "%s: value is not valid base64", key);
                return gen_varlen(g, ns, key, false, bin, bin_len);
        }
        if (streq(enc, "binary"))
                return gen_varlen(g, ns, key, false, value, vlen);
        if (streq(enc, "string")) {
                if (memchr(value, 0, vlen))
                        return gen_error(g, -EINVAL, "%s: string contains a NUL byte", key);
                /* the stored size includes the terminating NUL: text has it */
                return gen_varlen(g, ns, key, true, (const uint8_t *) text, vlen + 1);
        }

        uint8_t type;
        uint64_t raw = 0;
        r = gen_int(g, key, enc, text, &type, &raw);
        if (r < 0)
                return r;
        if (r == 0)
                return gen_error(g, -EINVAL, "%s: unsupported encoding (u8…i64, string, hex2bin, base64, binary, "
                                 "blob_fill(N;0xPP), blob_sz_fill(N;0xPP))", enc_in);
        return gen_primitive(g, ns, key, type, raw);
}

/* One CSV record: fields separated by ',', optionally double-quoted with ""
 * for a quote, as Python's csv module reads them (a quoted field may not span
 * lines here). */
static int csv_split(Gen *g, char *line, char **fields, unsigned max, unsigned *ret_n) {
        unsigned n = 0;
        char *r = line, *w = line;

        for (;;) {
                char *start = w;
                if (n >= max)
                        return gen_error(g, -EINVAL, "too many fields (at most %u)", max);
                if (*r == '"') {
                        r++;
                        for (;;) {
                                if (*r == 0)
                                        return gen_error(g, -EINVAL, "unterminated quoted field");
                                if (*r == '"') {
                                        if (r[1] == '"') {
                                                *w++ = '"';
                                                r += 2;
                                                continue;
                                        }
                                        r++;
                                        break;
                                }
                                *w++ = *r++;
                        }
                        /* text after the closing quote belongs to the field, as in Python */
                        while (*r && *r != ',')
                                *w++ = *r++;
                } else
                        while (*r && *r != ',')
                                *w++ = *r++;
                char sep = *r;
                *w++ = 0;
                fields[n++] = start;
                if (sep == 0)
                        break;
                r++;
        }
        *ret_n = n;
        return 0;
}

static int gen_read_file(Gen *g, const char *base_dir, const char *key, const char *path, uint8_t **ret, size_t *ret_len) {
        _cleanup_free_ char *full = NULL;
        int r;

        if (path[0] == '/' || !base_dir || !*base_dir)
                full = strdup(path);
        else if (asprintf(&full, "%s/%s", base_dir, path) < 0)
                full = NULL;
        if (!full)
                return -ENOMEM;
        r = read_full_file(full, GEN_FILE_MAX, ret, ret_len);
        if (r < 0)
                return gen_error(g, r, "key '%s': cannot read file '%s': %s", key, full, strerror(-r));
        return 0;
}

static int gen_csv(Gen *g, char *csv, const char *base_dir) {
        int col_key = -1, col_type = -1, col_enc = -1, col_value = -1;
        unsigned n_cols = 0;
        bool have_header = false;
        char *line = csv, *next;
        int r;

        for (g->line = 1; line; line = next, g->line++) {
                char *fields[64];
                unsigned n = 0;

                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                size_t l = strlen(line);
                if (l > 0 && line[l - 1] == '\r')
                        line[--l] = 0;
                /* the tool drops lines that start with '#', and empty rows */
                if (line[0] == '#' || line[0] == 0)
                        continue;

                r = csv_split(g, line, fields, ELEMENTSOF(fields), &n);
                if (r < 0)
                        return r;

                if (!have_header) {
                        for (unsigned i = 0; i < n; i++) {
                                if (streq(fields[i], "key"))
                                        col_key = (int) i;
                                else if (streq(fields[i], "type"))
                                        col_type = (int) i;
                                else if (streq(fields[i], "encoding"))
                                        col_enc = (int) i;
                                else if (streq(fields[i], "value"))
                                        col_value = (int) i;
                        }
                        if (col_key < 0 || col_type < 0 || col_enc < 0 || col_value < 0)
                                return gen_error(g, -EINVAL, "header row must name the columns key,type,encoding,value");
                        n_cols = n;
                        have_header = true;
                        continue;
                }

                const char *key = (unsigned) col_key < n ? fields[col_key] : NULL;
                const char *type = (unsigned) col_type < n ? fields[col_type] : NULL;
                const char *enc = (unsigned) col_enc < n ? fields[col_enc] : NULL;
                const char *value = (unsigned) col_value < n ? fields[col_value] : NULL;

                if (!key || !type)
                        return gen_error(g, -EINVAL, "expected %u fields (key,type,encoding,value), got %u", n_cols, n);
                if (strlen(key) > NVS_KEY_MAX)
                        return gen_error(g, -ESP_ERR_NVS_KEY_TOO_LONG, "length of key '%s' should be <= %u characters",
                                         key, NVS_KEY_MAX);
                if (key[0] == 0)
                        return gen_error(g, -ESP_ERR_NVS_INVALID_NAME, "empty key");

                if (streq(type, "namespace")) {
                        r = gen_namespace(g, key);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (!enc || !value)
                        return gen_error(g, -EINVAL, "expected %u fields (key,type,encoding,value), got %u", n_cols, n);
                if (streq(type, "data"))
                        r = gen_data(g, key, enc, (const uint8_t *) value, strlen(value));
                else if (streq(type, "file")) {
                        _cleanup_free_ uint8_t *content = NULL;
                        size_t len = 0;

                        if (!*value)
                                return gen_error(g, -EINVAL, "key '%s': file row needs a path in the value column", key);
                        r = gen_read_file(g, base_dir, key, value, &content, &len);
                        if (r < 0)
                                return r;
                        r = gen_data(g, key, enc, content, len);
                } else
                        return gen_error(g, -EINVAL, "unknown type '%s' (namespace, data or file)", type);
                if (r < 0)
                        return r;
        }
        g->line = 0;
        if (!have_header)
                return gen_error(g, -EINVAL, "no header row (key,type,encoding,value)");
        return 0;
}

int nvs_generate_csv_text(const char *csv, size_t csv_len, const char *name, const char *base_dir,
                          uint32_t size, unsigned version, const NvsXtsKeys *keys,
                          uint8_t **ret_image, size_t *ret_size, char *err, size_t errlen) {
        _cleanup_free_ char *text = NULL;
        _cleanup_free_ uint8_t *image = NULL;
        char dummy[1];
        Gen g = {
                .name = name ?: "<csv>",
                .err = err ?: dummy,
                .errlen = err ? errlen : sizeof dummy,
        };
        int r;

        if (!csv || !ret_image || !ret_size)
                return -EINVAL;
        if (version != 1 && version != 2)
                return gen_error(&g, -EINVAL, "format version must be 1 or 2, not %u", version);
        if (size == 0 || size % NVS_PAGE_SIZE != 0)
                return gen_error(&g, -ESP_ERR_NVS_INVALID_LENGTH,
                                 "partition size 0x%x must be a non-zero multiple of 4096", size);
        if (memchr(csv, 0, csv_len))
                return gen_error(&g, -EINVAL, "CSV contains a NUL byte");

        text = strndup(csv, csv_len);
        image = malloc(size);
        if (!text || !image)
                return -ENOMEM;
        memset(image, 0xFF, size);

        g.image = image;
        g.n_pages = size / NVS_PAGE_SIZE;
        g.version = version == 1 ? NVS_FORMAT_V1 : NVS_FORMAT_V2;
        /* check_size(): one page is reserved; below 3 pages the image is read-only */
        g.size_left = (int64_t) size - NVS_PAGE_SIZE;
        if (g.size_left < 2 * (int64_t) NVS_PAGE_SIZE) {
                g.size_left = size;
                g.read_only = true;
        }
        if (keys) {
                r = nvs_xts_new(keys, &g.xts);
                if (r < 0)
                        return gen_error(&g, r, "cannot set up XTS-AES-256 with these keys");
        }

        /* the first page exists before any row is read */
        g.size_left -= NVS_PAGE_SIZE;
        g.page = 0;
        nvs_header_init(image, NVS_STATE_ACTIVE, 0, g.version);

        r = gen_csv(&g, text, base_dir);
        g.xts = nvs_xts_free(g.xts);
        if (r < 0)
                return r;

        *ret_size = g.read_only ? (size_t) (g.page + 1) * NVS_PAGE_SIZE : size;
        *ret_image = TAKE_PTR(image);
        return 0;
}

int nvs_generate_csv_file(const char *csv_path, uint32_t size, unsigned version, const NvsXtsKeys *keys,
                          uint8_t **ret_image, size_t *ret_size, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *csv = NULL;
        _cleanup_free_ char *dir_copy = NULL;
        size_t len = 0;
        int r;

        r = read_full_file(csv_path, GEN_FILE_MAX, &csv, &len);
        if (r < 0) {
                if (err)
                        snprintf(err, errlen, "%s: cannot read CSV: %s", csv_path, strerror(-r));
                return r;
        }
        dir_copy = strdup(csv_path);
        if (!dir_copy)
                return -ENOMEM;
        return nvs_generate_csv_text((const char *) csv, len, csv_path, dirname(dir_copy), size, version, keys,
                                     ret_image, ret_size, err, errlen);
}
