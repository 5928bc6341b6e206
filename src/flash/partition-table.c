/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>

#include <openssl/evp.h>

#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/parse-util.h"
#include "basic/macro.h"
#define LOG_TOPIC LOG_TOPIC_FLASH
#include "basic/log.h"
#include "flash/partition-table.h"

struct PartitionTable {
        size_t n;
        Partition entries[];    /* room for PARTITION_TABLE_MAX_ENTRIES while building, then n */
};

static PartitionTable *table_alloc(void) {
        return calloc(1, sizeof(PartitionTable) + PARTITION_TABLE_MAX_ENTRIES * sizeof(Partition));
}

/* A finished table keeps only its entries: a fleet holds one per device. */
static PartitionTable *table_trim(PartitionTable *t) {
        PartitionTable *n = realloc(t, sizeof(PartitionTable) + MAX(t->n, (size_t) 1) * sizeof(Partition));
        return n ?: t;
}

/* The first address after the table sector: where auto offsets start and
 * below which no partition may lie (gen_esp32part.py, --offset 0x8000). */
#define PARTITION_FIRST_FREE (PARTITION_TABLE_OFFSET + PARTITION_TABLE_SECTOR_SIZE)

#define CSV_MAX_SIZE (1024u * 1024u)

typedef struct Keyword {
        const char *name;
        uint8_t value;
} Keyword;

/* Keyword tables in gen_esp32part.py's order: bin->csv prints the first
 * name that matches a value. */
static const Keyword type_keywords[] = {
        { "bootloader", PARTITION_TYPE_BOOTLOADER },
        { "partition_table", PARTITION_TYPE_PARTITION_TABLE },
        { "app", PARTITION_TYPE_APP },
        { "data", PARTITION_TYPE_DATA },
};

static const Keyword bootloader_subtypes[] = {
        { "primary", 0x00 },
        { "ota", 0x01 },
        { "recovery", 0x02 },
};

static const Keyword partition_table_subtypes[] = {
        { "primary", 0x00 },
        { "ota", 0x01 },
};

static const Keyword app_subtypes[] = {
        { "factory", 0x00 },
        { "test", 0x20 },
        { "ota_0", 0x10 }, { "ota_1", 0x11 }, { "ota_2", 0x12 }, { "ota_3", 0x13 },
        { "ota_4", 0x14 }, { "ota_5", 0x15 }, { "ota_6", 0x16 }, { "ota_7", 0x17 },
        { "ota_8", 0x18 }, { "ota_9", 0x19 }, { "ota_10", 0x1A }, { "ota_11", 0x1B },
        { "ota_12", 0x1C }, { "ota_13", 0x1D }, { "ota_14", 0x1E }, { "ota_15", 0x1F },
        { "tee_0", 0x30 },
        { "tee_1", 0x31 },
};

static const Keyword data_subtypes[] = {
        { "ota", 0x00 },
        { "phy", 0x01 },
        { "nvs", 0x02 },
        { "coredump", 0x03 },
        { "nvs_keys", 0x04 },
        { "efuse", 0x05 },
        { "undefined", 0x06 },
        { "esphttpd", 0x80 },
        { "fat", 0x81 },
        { "spiffs", 0x82 },
        { "littlefs", 0x83 },
        { "tee_ota", 0x90 },
        { "tee_sec_stg", 0x91 },
};

#define DATA_SUBTYPE_TEE_OTA 0x90u

static const Keyword *subtype_keywords(uint8_t type, size_t *n) {
        switch (type) {
        case PARTITION_TYPE_APP:
                *n = ELEMENTSOF(app_subtypes);
                return app_subtypes;
        case PARTITION_TYPE_DATA:
                *n = ELEMENTSOF(data_subtypes);
                return data_subtypes;
        case PARTITION_TYPE_BOOTLOADER:
                *n = ELEMENTSOF(bootloader_subtypes);
                return bootloader_subtypes;
        case PARTITION_TYPE_PARTITION_TABLE:
                *n = ELEMENTSOF(partition_table_subtypes);
                return partition_table_subtypes;
        }
        *n = 0;
        return NULL;
}

static const char *keyword_name(const Keyword *k, size_t n, uint8_t value) {
        for (size_t i = 0; i < n; i++)
                if (k[i].value == value)
                        return k[i].name;
        return NULL;
}

const char *partition_type_to_string(uint8_t type) {
        return keyword_name(type_keywords, ELEMENTSOF(type_keywords), type);
}

const char *partition_subtype_to_string(uint8_t type, uint8_t subtype) {
        size_t n;
        const Keyword *k = subtype_keywords(type, &n);
        return keyword_name(k, n, subtype);
}

static const char default_csv[] =
        "# espfleet default partition table: 4 MiB flash, two OTA slots, no factory app\n"
        "# Name,   Type, SubType, Offset,   Size, Flags\n"
        "nvs,      data, nvs,     0x9000,   0x6000,\n"
        "otadata,  data, ota,     0xf000,   0x2000,\n"
        "phy_init, data, phy,     0x11000,  0x1000,\n"
        "esp_secure_cert, 0x3F, , 0x12000, 0x2000, encrypted\n"
        "nvs_key,  data, nvs_keys, 0x14000, 0x1000, encrypted\n"
        "ota_0,    app,  ota_0,   0x20000,  0x180000,\n"
        "ota_1,    app,  ota_1,   0x1A0000, 0x180000,\n";

const char *partition_table_default_csv(void) {
        return default_csv;
}

PartitionTable *partition_table_free(PartitionTable *t) {
        free(t);
        return NULL;
}

_printf_(5, 6)
static int report(char *err, size_t errlen, const char *filename, unsigned line, const char *fmt, ...) {
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        if (err && errlen > 0) {
                if (filename && line > 0)
                        snprintf(err, errlen, "%s:%u: %s", filename, line, msg);
                else if (filename)
                        snprintf(err, errlen, "%s: %s", filename, msg);
                else
                        snprintf(err, errlen, "%s", msg);
        }
        log_debug("%s:%u: %s", strna(filename), line, msg);
        return -EINVAL;
}

/* Python's int(v, 0): optional sign, 0x/0o/0b prefixes, decimal without
 * leading zeros, underscores between digits. */
static int parse_python_int(const char *s, int64_t *ret) {
        bool neg = false, any = false, last_us = false;
        unsigned base = 10;
        uint64_t v = 0;

        if (*s == '+' || *s == '-')
                neg = *s++ == '-';
        if (s[0] == '0' && s[1] && strchr("xXoObB", s[1])) {
                base = strchr("xX", s[1]) ? 16 : strchr("oO", s[1]) ? 8 : 2;
                s += 2;
                if (*s == '_')  /* "0x_10" is allowed */
                        s++;
        } else if (s[0] == '0') {
                /* "0", "00", "0_0" only */
                for (const char *p = s; *p; p++)
                        if (*p != '0' && *p != '_')
                                return -EINVAL;
        }

        for (; *s; s++) {
                unsigned d;

                if (*s == '_') {
                        if (!any || last_us)
                                return -EINVAL;
                        last_us = true;
                        continue;
                }
                if (*s >= '0' && *s <= '9')
                        d = *s - '0';
                else if (*s >= 'a' && *s <= 'f')
                        d = *s - 'a' + 10;
                else if (*s >= 'A' && *s <= 'F')
                        d = *s - 'A' + 10;
                else
                        return -EINVAL;
                if (d >= base)
                        return -EINVAL;
                if (v > (UINT64_C(1) << 40))
                        return -ERANGE;
                v = v * base + d;
                any = true;
                last_us = false;
        }
        if (!any || last_us)
                return -EINVAL;
        *ret = neg ? -(int64_t) v : (int64_t) v;
        return 0;
}

/* gen_esp32part.py's parse_int(): a number with optional k/m suffixes
 * (KiB/MiB, applied recursively as the tool does), else a keyword. */
static int parse_number(const char *s, int64_t *ret) {
        size_t n = strlen(s);
        char buf[64];

        if (n == 0 || n >= sizeof(buf))
                return -EINVAL;
        char last = (char) tolower((unsigned char) s[n - 1]);
        if (last == 'k' || last == 'm') {
                int64_t v, mult = last == 'k' ? 1024 : 1024 * 1024;
                int r;

                memcpy(buf, s, n - 1);
                buf[n - 1] = 0;
                r = parse_number(buf, &v);
                if (r < 0)
                        return r;
                if (v > INT64_MAX / mult || v < -INT64_MAX / mult)
                        return -ERANGE;
                *ret = v * mult;
                return 0;
        }
        return parse_python_int(s, ret);
}

static void keyword_list(const Keyword *k, size_t n, char *buf, size_t size) {
        size_t used = 0;

        buf[0] = 0;
        for (size_t i = 0; i < n && used < size; i++) {
                int w = snprintf(buf + used, size - used, "%s%s", i > 0 ? ", " : "", k[i].name);
                if (w < 0)
                        break;
                used += (size_t) w;
        }
}

/* Parses a type or subtype field. */
static int parse_byte_field(const char *field, const char *what, const Keyword *k, size_t n,
                            const char *filename, unsigned line, uint8_t *ret, char *err, size_t errlen) {
        int64_t v;
        int r;

        r = parse_number(field, &v);
        if (r == -ERANGE)
                return report(err, errlen, filename, line, "%s '%s' is out of range", what, field);
        if (r < 0) {
                char known[512];

                for (size_t i = 0; i < n; i++)
                        if (strcasecmp(k[i].name, field) == 0) {
                                *ret = k[i].value;
                                return 0;
                        }
                if (n == 0)
                        return report(err, errlen, filename, line, "Invalid %s '%s': not a number", what, field);
                keyword_list(k, n, known, sizeof(known));
                return report(err, errlen, filename, line, "Value '%s' is not valid for %s. Known keywords: %s",
                              field, what, known);
        }
        if (v < 0 || v > 0xFE)
                return report(err, errlen, filename, line, "%s '%s' is out of range (0x00-0xfe)", what, field);
        *ret = (uint8_t) v;
        return 0;
}

static bool isempty(const char *s) {
        return !s || *s == 0;
}

static char *strip(char *s) {
        char *e;

        while (isspace((unsigned char) *s))
                s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char) e[-1]))
                e--;
        *e = 0;
        return s;
}

typedef struct ParseState {
        bool offset_set;
        int64_t size;    /* may be negative: "up to that address" */
} ParseState;

static int parse_csv_line(char *line, const char *filename, unsigned line_no, Partition *p, ParseState *st,
                          char *err, size_t errlen) {
        char *fields[6] = { NULL };
        char *s = line;
        size_t n = 0;
        int64_t v;
        int r;

        /* Split on ',', keeping empty fields; fields after the sixth are
         * ignored and missing ones are empty, as gen_esp32part.py does. */
        while (n < ELEMENTSOF(fields)) {
                char *comma = strchr(s, ',');
                fields[n++] = s;
                if (!comma) {
                        s = NULL;
                        break;
                }
                *comma = 0;
                s = comma + 1;
        }
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                fields[i] = fields[i] ? strip(fields[i]) : (char *) "";

        *p = (Partition) { .line = line_no };
        *st = (ParseState) {};

        if (isempty(fields[0]))
                return report(err, errlen, filename, line_no, "Partition name is empty");
        if (strlen(fields[0]) > PARTITION_NAME_MAX)
                return report(err, errlen, filename, line_no,
                              "Partition name '%s' is longer than %u characters", fields[0], PARTITION_NAME_MAX);
        for (const char *c = fields[0]; *c; c++)
                if ((unsigned char) *c < 0x20 || *c == 0x7F)
                        return report(err, errlen, filename, line_no, "Partition name contains a control character");
        memcpy(p->name, fields[0], strlen(fields[0]) + 1);

        if (isempty(fields[1]))
                return report(err, errlen, filename, line_no, "Field 'type' can't be left empty.");
        r = parse_byte_field(fields[1], "type", type_keywords, ELEMENTSOF(type_keywords), filename, line_no, &p->type,
                             err, errlen);
        if (r < 0)
                return r;
        if (p->type == PARTITION_TYPE_BOOTLOADER)
                return report(err, errlen, filename, line_no,
                              "Bootloader partitions are not supported (the primary bootloader offset is not defined)");

        if (isempty(fields[2])) {
                if (p->type == PARTITION_TYPE_APP)
                        return report(err, errlen, filename, line_no, "App partition cannot have an empty subtype");
                p->subtype = PARTITION_SUBTYPE_DATA_UNDEFINED;
        } else {
                size_t nk;
                const Keyword *k = subtype_keywords(p->type, &nk);
                r = parse_byte_field(fields[2], "subtype", k, nk, filename, line_no, &p->subtype, err, errlen);
                if (r < 0)
                        return r;
        }

        if (p->type == PARTITION_TYPE_PARTITION_TABLE && p->subtype == 0x00) {
                /* The primary table sits where it sits, whatever the CSV says. */
                p->offset = PARTITION_TABLE_OFFSET;
                st->offset_set = true;
        } else if (!isempty(fields[3])) {
                r = parse_number(fields[3], &v);
                if (r < 0)
                        return report(err, errlen, filename, line_no, "Invalid offset '%s'", fields[3]);
                if (v < 0 || v > UINT32_MAX)
                        return report(err, errlen, filename, line_no, "Offset '%s' is out of range", fields[3]);
                p->offset = (uint32_t) v;
                st->offset_set = true;
        }

        if (p->type == PARTITION_TYPE_PARTITION_TABLE)
                st->size = PARTITION_TABLE_SECTOR_SIZE;
        else {
                if (isempty(fields[4]))
                        return report(err, errlen, filename, line_no, "Size field can't be empty");
                r = parse_number(fields[4], &v);
                if (r < 0)
                        return report(err, errlen, filename, line_no, "Invalid size '%s'", fields[4]);
                if (v > UINT32_MAX || v < -(int64_t) UINT32_MAX)
                        return report(err, errlen, filename, line_no, "Size '%s' is out of range", fields[4]);
                if (v == 0)
                        return report(err, errlen, filename, line_no, "Size must not be zero");
                st->size = v;
        }

        /* Flags: ':'-separated, not trimmed around the colons (as the tool). */
        for (char *f = fields[5]; f;) {
                char *colon = strchr(f, ':');
                if (colon)
                        *colon = 0;
                if (streq(f, "encrypted"))
                        p->flags |= PARTITION_FLAG_ENCRYPTED;
                else if (streq(f, "readonly"))
                        p->flags |= PARTITION_FLAG_READONLY;
                else if (!isempty(f))
                        return report(err, errlen, filename, line_no, "CSV flag column contains unknown flag '%s'", f);
                f = colon ? colon + 1 : NULL;
        }

        return 0;
}

static bool is_primary_table(const Partition *p) {
        return p->type == PARTITION_TYPE_PARTITION_TABLE && p->subtype == 0x00;
}

static int cmp_offset(const void *a, const void *b) {
        const Partition *x = *(const Partition *const *) a, *y = *(const Partition *const *) b;
        if (x->offset != y->offset)
                return x->offset < y->offset ? -1 : 1;
        /* stable, like Python's sort */
        return x < y ? -1 : x > y;
}

/* PartitionTable.verify() and PartitionDefinition.verify() of gen_esp32part.py. */
static int partition_table_verify(const PartitionTable *t, const char *filename, char *err, size_t errlen) {
        const Partition *sorted[PARTITION_TABLE_MAX_ENTRIES];
        const Partition *otadata = NULL, *tee_otadata = NULL;

        for (size_t i = 0; i < t->n; i++) {
                const Partition *p = t->entries + i;
                uint32_t align = p->type == PARTITION_TYPE_APP ? 0x10000 : 0x1000;

                if (p->offset % align)
                        return report(err, errlen, filename, p->line,
                                      "Partition %s invalid: Offset 0x%" PRIx32 " is not aligned to 0x%" PRIx32,
                                      p->name, p->offset, align);
                if (p->type == PARTITION_TYPE_APP && p->size % 0x1000)
                        return report(err, errlen, filename, p->line,
                                      "Partition %s invalid: Size 0x%" PRIx32 " is not aligned to 0x1000", p->name, p->size);
                if (p->type == PARTITION_TYPE_DATA && (p->flags & PARTITION_FLAG_READONLY) &&
                    (p->subtype == PARTITION_SUBTYPE_DATA_OTA || p->subtype == PARTITION_SUBTYPE_DATA_COREDUMP))
                        return report(err, errlen, filename, p->line,
                                      "Partition %s invalid: '%s' partition of type %u and subtype %u is always read-write and cannot be read-only",
                                      p->name, p->name, p->type, p->subtype);
                /* gen_esp32part.py: NVS_RW_MIN_PARTITION_SIZE */
                if (p->type == PARTITION_TYPE_DATA && p->subtype == PARTITION_SUBTYPE_DATA_NVS &&
                    p->size < PARTITION_NVS_RW_MIN_SIZE && !(p->flags & PARTITION_FLAG_READONLY))
                        return report(err, errlen, filename, p->line,
                                      "Partition %s invalid: '%s' partition of type %u and subtype %u of this size (0x%" PRIx32
                                      ") must be flagged as 'readonly' (the size of read/write NVS has to be at least 0x%x)",
                                      p->name, p->name, p->type, p->subtype, p->size, PARTITION_NVS_RW_MIN_SIZE);
                if ((uint64_t) p->offset + p->size > UINT32_MAX + UINT64_C(1))
                        return report(err, errlen, filename, p->line,
                                      "Partition %s invalid: it ends beyond the 4 GiB address space", p->name);
        }

        for (size_t i = 0; i < t->n; i++)
                for (size_t j = i + 1; j < t->n; j++)
                        if (streq(t->entries[i].name, t->entries[j].name)) {
                                if (t->entries[j].line > 0)
                                        return report(err, errlen, filename, t->entries[j].line,
                                                      "Partition names must be unique: '%s' is already used at line %u",
                                                      t->entries[j].name, t->entries[i].line);
                                return report(err, errlen, filename, 0,
                                              "Partition names must be unique: '%s' is used by entries %zu and %zu",
                                              t->entries[j].name, i, j);
                        }

        for (size_t i = 0; i < t->n; i++)
                sorted[i] = t->entries + i;
        qsort(sorted, t->n, sizeof(sorted[0]), cmp_offset);
        for (size_t i = 0; i < t->n; i++) {
                const Partition *p = sorted[i];

                if (p->offset < PARTITION_FIRST_FREE && !is_primary_table(p))
                        return report(err, errlen, filename, p->line,
                                      "Partition %s: offset 0x%" PRIx32 " is below 0x%x", p->name, p->offset,
                                      PARTITION_FIRST_FREE);
                if (i > 0) {
                        const Partition *last = sorted[i - 1];
                        if (p->offset < (uint64_t) last->offset + last->size)
                                return report(err, errlen, filename, p->line,
                                              "Partition %s at 0x%" PRIx32 " overlaps %s 0x%" PRIx32 "-0x%" PRIx32,
                                              p->name, p->offset, last->name, last->offset,
                                              (uint32_t) (last->offset + last->size - 1));
                }
        }

        for (size_t i = 0; i < t->n; i++) {
                const Partition *p = t->entries + i;

                if (p->type != PARTITION_TYPE_DATA)
                        continue;
                if (p->subtype == PARTITION_SUBTYPE_DATA_OTA) {
                        if (otadata)
                                return report(err, errlen, filename, p->line,
                                              "Found multiple otadata partitions ('%s' and '%s'). Only one partition can be defined with type=\"data\"(1) and subtype=\"ota\"(0).",
                                              otadata->name, p->name);
                        otadata = p;
                } else if (p->subtype == DATA_SUBTYPE_TEE_OTA) {
                        if (tee_otadata)
                                return report(err, errlen, filename, p->line,
                                              "Found multiple TEE otadata partitions ('%s' and '%s'). Only one partition can be defined with type=\"data\"(1) and subtype=\"tee_ota\"(0x90).",
                                              tee_otadata->name, p->name);
                        tee_otadata = p;
                }
        }
        if (otadata && otadata->size != OTADATA_PARTITION_SIZE)
                return report(err, errlen, filename, otadata->line,
                              "otadata partition '%s' must have size = 0x2000 (not 0x%" PRIx32 ")", otadata->name,
                              otadata->size);
        if (tee_otadata && tee_otadata->size != OTADATA_PARTITION_SIZE)
                return report(err, errlen, filename, tee_otadata->line,
                              "TEE otadata partition '%s' must have size = 0x2000 (not 0x%" PRIx32 ")",
                              tee_otadata->name, tee_otadata->size);
        return 0;
}

int partition_table_from_csv(const char *text, const char *filename, PartitionTable **ret, char *err, size_t errlen) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL;
        _cleanup_free_ char *copy = NULL;
        ParseState st[PARTITION_TABLE_MAX_ENTRIES];
        unsigned line_no = 0;
        uint64_t last_end;
        char *next;
        int r;

        if (!text || !ret)
                return -EINVAL;
        if (!filename)
                filename = "<csv>";

        t = table_alloc();
        copy = strdup(text);
        if (!t || !copy)
                return -ENOMEM;

        for (char *line = copy; line; line = next) {
                /* Line breaks as Python's splitlines(): \n, \r\n or a lone \r. */
                char *nl = strpbrk(line, "\r\n");
                char *s;

                next = NULL;
                if (nl) {
                        next = nl + (nl[0] == '\r' && nl[1] == '\n' ? 2 : 1);
                        *nl = 0;
                }
                line_no++;

                s = strip(line);
                if (*s == 0 || *s == '#')
                        continue;
                if (strchr(s, '$'))
                        return report(err, errlen, filename, line_no, "Environment variables are not supported: %s", s);

                /* An uncommented header row "Name, Type, SubType, …". */
                if (t->n == 0 && strncasecmp(s, "name", 4) == 0) {
                        const char *c = s + 4;
                        while (isspace((unsigned char) *c))
                                c++;
                        if (*c == ',') {
                                c++;
                                while (isspace((unsigned char) *c))
                                        c++;
                                if (strncasecmp(c, "type", 4) == 0)
                                        continue;
                        }
                }

                if (t->n >= PARTITION_TABLE_MAX_ENTRIES)
                        return report(err, errlen, filename, line_no, "Too many partitions (at most %u fit in the table)",
                                      PARTITION_TABLE_MAX_ENTRIES);
                r = parse_csv_line(s, filename, line_no, t->entries + t->n, st + t->n, err, errlen);
                if (r < 0)
                        return r;
                t->n++;
        }

        /* Fill in missing offsets and negative sizes. */
        last_end = PARTITION_FIRST_FREE;
        for (size_t i = 0; i < t->n; i++) {
                Partition *p = t->entries + i;

                if (is_primary_table(p)) {
                        p->size = PARTITION_TABLE_SECTOR_SIZE;
                        continue;
                }
                if (st[i].offset_set && p->offset < last_end) {
                        if (i == 0)
                                return report(err, errlen, filename, p->line,
                                              "Partitions overlap. Partition sets offset 0x%" PRIx32 ". But partition table occupies the whole sector 0x%x. Use a free offset 0x%x or higher.",
                                              p->offset, PARTITION_TABLE_OFFSET, PARTITION_FIRST_FREE);
                        return report(err, errlen, filename, p->line,
                                      "Partitions overlap. Partition sets offset 0x%" PRIx32 ". Previous partition ends 0x%" PRIx64,
                                      p->offset, last_end);
                }
                if (!st[i].offset_set) {
                        uint64_t pad = p->type == PARTITION_TYPE_APP ? 0x10000 : 0x1000;
                        last_end = ALIGN_TO(last_end, pad);
                        if (last_end > UINT32_MAX)
                                return report(err, errlen, filename, p->line, "Partition %s does not fit below 4 GiB",
                                              p->name);
                        p->offset = (uint32_t) last_end;
                }
                if (st[i].size < 0) {
                        int64_t size = -st[i].size - (int64_t) p->offset;
                        if (size <= 0)
                                return report(err, errlen, filename, p->line,
                                              "Partition %s: end address 0x%" PRIx64 " is not after its offset 0x%" PRIx32,
                                              p->name, (uint64_t) -st[i].size, p->offset);
                        st[i].size = size;
                }
                p->size = (uint32_t) st[i].size;
                last_end = (uint64_t) p->offset + p->size;
                if (last_end > UINT32_MAX + UINT64_C(1))
                        return report(err, errlen, filename, p->line, "Partition %s does not fit below 4 GiB", p->name);
        }

        r = partition_table_verify(t, filename, err, errlen);
        if (r < 0)
                return r;

        *ret = table_trim(TAKE_PTR(t));
        return 0;
}

int partition_table_load_csv(const char *path, PartitionTable **ret, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t size;
        int r;

        r = read_full_file(path, CSV_MAX_SIZE, &data, &size);
        if (r < 0) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-r));
                return r;
        }
        if (memchr(data, 0, size)) {
                report(err, errlen, path, 0, "not a text file (contains NUL bytes)");
                return -EINVAL;
        }
        return partition_table_from_csv((const char *) data, path, ret, err, errlen);
}

static int md5(const void *data, size_t len, uint8_t out[16]) {
        unsigned n = 0;
        if (EVP_Digest(data, len, out, &n, EVP_md5(), NULL) != 1 || n != 16)
                return -EIO;
        return 0;
}

int partition_table_from_binary(const void *data, size_t len, PartitionTable **ret, char *err, size_t errlen) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL;
        const uint8_t *b = data;
        size_t entries_end = 0;
        int r;

        if (!data || !ret)
                return -EINVAL;

        t = table_alloc();
        if (!t)
                return -ENOMEM;

        for (size_t o = 0; o < len; o += PARTITION_ENTRY_SIZE) {
                const uint8_t *e = b + o;
                Partition *p;
                bool blank = true;

                if (len - o < PARTITION_ENTRY_SIZE) {
                        report(err, errlen, NULL, 0, "Partition table length must be a multiple of 32 bytes");
                        return -EBADMSG;
                }
                for (size_t i = 0; i < PARTITION_ENTRY_SIZE; i++)
                        if (e[i] != 0xFF) {
                                blank = false;
                                break;
                        }
                if (blank) {
                        r = partition_table_verify(t, NULL, err, errlen);
                        if (r < 0)
                                return -EBADMSG;
                        *ret = table_trim(TAKE_PTR(t));
                        return 0;
                }

                if (le16_read(e) == PARTITION_MD5_MAGIC) {
                        uint8_t digest[16];
                        char computed[33], parsed[33];

                        r = md5(b, entries_end, digest);
                        if (r < 0)
                                return r;
                        if (memcmp(digest, e + 16, 16) == 0)
                                continue;
                        hex_encode(digest, 16, computed);
                        hex_encode(e + 16, 16, parsed);
                        report(err, errlen, NULL, 0, "MD5 checksums don't match! (computed: 0x%s, parsed: 0x%s)",
                               computed, parsed);
                        return -EBADMSG;
                }

                if (le16_read(e) != PARTITION_MAGIC) {
                        report(err, errlen, NULL, 0, "Invalid magic bytes (%02x %02x) for partition definition %zu at 0x%zx",
                               e[0], e[1], t->n, o);
                        return -EBADMSG;
                }
                if (t->n >= PARTITION_TABLE_MAX_ENTRIES) {
                        report(err, errlen, NULL, 0, "Too many partition definitions (more than %u)",
                               PARTITION_TABLE_MAX_ENTRIES);
                        return -EBADMSG;
                }

                p = t->entries + t->n;
                *p = (Partition) {
                        .type = e[2],
                        .subtype = e[3],
                        .offset = le32_read(e + 4),
                        .size = le32_read(e + 8),
                        .flags = le32_read(e + 28),
                };
                memcpy(p->name, e + 12, PARTITION_NAME_MAX);
                p->name[PARTITION_NAME_MAX] = 0;
                for (const char *c = p->name; *c; c++)
                        if ((unsigned char) *c < 0x20 || *c == 0x7F) {
                                report(err, errlen, NULL, 0, "Partition definition %zu at 0x%zx has a name with control characters",
                                       t->n, o);
                                return -EBADMSG;
                        }
                t->n++;
                entries_end = o + PARTITION_ENTRY_SIZE;
        }

        report(err, errlen, NULL, 0, "Partition table is missing an end-of-table marker");
        return -EBADMSG;
}

int partition_table_to_binary(const PartitionTable *t, uint8_t out[static PARTITION_TABLE_MAX_LEN]) {
        size_t o = 0;
        int r;

        if (!t || !out)
                return -EINVAL;
        if ((t->n + 1) * PARTITION_ENTRY_SIZE >= PARTITION_TABLE_MAX_LEN)
                return -E2BIG;

        memset(out, 0xFF, PARTITION_TABLE_MAX_LEN);
        for (size_t i = 0; i < t->n; i++, o += PARTITION_ENTRY_SIZE) {
                const Partition *p = t->entries + i;
                uint8_t *e = out + o;

                le16_write(e, PARTITION_MAGIC);
                e[2] = p->type;
                e[3] = p->subtype;
                le32_write(e + 4, p->offset);
                le32_write(e + 8, p->size);
                memset(e + 12, 0, PARTITION_NAME_MAX);
                memcpy(e + 12, p->name, strnlen(p->name, PARTITION_NAME_MAX));
                le32_write(e + 28, p->flags);
        }

        /* MD5 record: EB EB, 14 × 0xFF, MD5 of all entries before it. */
        le16_write(out + o, PARTITION_MD5_MAGIC);
        r = md5(out, o, out + o + 16);
        if (r < 0)
                return r;
        return 0;
}

static int append(char **buf, size_t *len, size_t *alloc, const char *fmt, ...) _printf_(4, 5);
static int append(char **buf, size_t *len, size_t *alloc, const char *fmt, ...) {
        va_list ap;
        int n;

        for (;;) {
                va_start(ap, fmt);
                n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? *alloc - *len : 0, fmt, ap);
                va_end(ap);
                if (n < 0)
                        return -EINVAL;
                if (*buf && *len + (size_t) n < *alloc) {
                        *len += (size_t) n;
                        return 0;
                }
                size_t na = MAX(*alloc * 2, *len + (size_t) n + 256);
                char *nb = realloc(*buf, na);
                if (!nb)
                        return -ENOMEM;
                *buf = nb;
                *alloc = na;
        }
}

/* gen_esp32part.py's addr_format(): sizes as M or K when exact. */
static void format_size(uint32_t v, bool as_size, char *buf, size_t size) {
        if (as_size && v % 0x100000 == 0)
                snprintf(buf, size, "%" PRIu32 "M", v / 0x100000);
        else if (as_size && v % 0x400 == 0)
                snprintf(buf, size, "%" PRIu32 "K", v / 0x400);
        else
                snprintf(buf, size, "0x%" PRIx32, v);
}

int partition_table_to_csv(const PartitionTable *t, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, alloc = 0;
        int r;

        if (!t || !ret)
                return -EINVAL;

        r = append(&buf, &len, &alloc, "# ESP-IDF Partition Table\n# Name, Type, SubType, Offset, Size, Flags\n");
        if (r < 0)
                return r;
        for (size_t i = 0; i < t->n; i++) {
                const Partition *p = t->entries + i;
                const char *type = partition_type_to_string(p->type);
                const char *subtype = partition_subtype_to_string(p->type, p->subtype);
                char tbuf[8], sbuf[8], off[16], size[16];

                snprintf(tbuf, sizeof(tbuf), "%u", p->type);
                snprintf(sbuf, sizeof(sbuf), "%u", p->subtype);
                format_size(p->offset, false, off, sizeof(off));
                format_size(p->size, true, size, sizeof(size));
                r = append(&buf, &len, &alloc, "%s,%s,%s,%s,%s,%s%s%s\n", p->name, type ?: tbuf, subtype ?: sbuf, off,
                           size, p->flags & PARTITION_FLAG_ENCRYPTED ? "encrypted" : "",
                           (p->flags & PARTITION_FLAG_ENCRYPTED) && (p->flags & PARTITION_FLAG_READONLY) ? ":" : "",
                           p->flags & PARTITION_FLAG_READONLY ? "readonly" : "");
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(buf);
        return 0;
}

size_t partition_table_count(const PartitionTable *t) {
        return t ? t->n : 0;
}

const Partition *partition_table_get(const PartitionTable *t, size_t i) {
        if (!t || i >= t->n)
                return NULL;
        return t->entries + i;
}

const Partition *partition_table_find(const PartitionTable *t, uint8_t type, uint8_t subtype) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n; i++) {
                const Partition *p = t->entries + i;
                if ((type == PARTITION_TYPE_ANY || p->type == type) &&
                    (subtype == PARTITION_SUBTYPE_ANY || p->subtype == subtype))
                        return p;
        }
        return NULL;
}

const Partition *partition_table_find_by_name(const PartitionTable *t, const char *name) {
        if (!t || !name)
                return NULL;
        for (size_t i = 0; i < t->n; i++)
                if (streq(t->entries[i].name, name))
                        return t->entries + i;
        return NULL;
}

const Partition *partition_table_find_ota(const PartitionTable *t, unsigned slot) {
        if (slot > PARTITION_SUBTYPE_APP_OTA_MAX - PARTITION_SUBTYPE_APP_OTA_MIN)
                return NULL;
        return partition_table_find(t, PARTITION_TYPE_APP, (uint8_t) (PARTITION_SUBTYPE_APP_OTA_MIN + slot));
}

unsigned partition_table_ota_count(const PartitionTable *t) {
        unsigned n = 0;
        while (partition_table_find_ota(t, n))
                n++;
        return n;
}

int partition_table_verify_fits(const PartitionTable *t, uint32_t flash_bytes, char *err, size_t errlen) {
        uint32_t end = partition_table_end(t);
        const double mb = 1024.0 * 1024.0;

        if (end <= flash_bytes)
                return 0;
        /* gen_esp32part.py's verify_size_fits() */
        snprintf(err, errlen, "Partitions tables occupies %.1fMB of flash (%" PRIu32 " bytes) which does not fit in "
                 "available flash size %uMB.", end / mb, end, (unsigned) (flash_bytes / (1024 * 1024)));
        return -EFBIG;
}

uint32_t partition_table_end(const PartitionTable *t) {
        uint64_t end = 0;
        if (!t)
                return 0;
        for (size_t i = 0; i < t->n; i++)
                end = MAX(end, (uint64_t) t->entries[i].offset + t->entries[i].size);
        return (uint32_t) MIN(end, (uint64_t) UINT32_MAX);
}

FlashRegion partition_region(Flash *f, const Partition *p) {
        return (FlashRegion) {
                .flash = f,
                .offset = p ? p->offset : 0,
                .size = p ? p->size : 0,
        };
}

int partition_table_region(const PartitionTable *t, Flash *f, const char *name, FlashRegion *ret) {
        const Partition *p;

        if (!t || !f || !name || !ret)
                return -EINVAL;
        p = partition_table_find_by_name(t, name);
        if (!p)
                return -ESP_ERR_NOT_FOUND;
        if ((uint64_t) p->offset + p->size > flash_size(f))
                return -ERANGE;
        *ret = partition_region(f, p);
        return 0;
}

int partition_table_load(Flash *f, PartitionTable **ret, char *err, size_t errlen) {
        uint8_t buf[PARTITION_TABLE_MAX_LEN];
        char msg[384];
        bool blank = true;
        int r;

        if (!f || !ret)
                return -EINVAL;
        r = flash_read(f, PARTITION_TABLE_OFFSET, buf, sizeof(buf));
        if (r < 0) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "%s: cannot read the partition table at 0x%x: %s", flash_path(f),
                                 PARTITION_TABLE_OFFSET, strerror(-r));
                return r;
        }
        for (size_t i = 0; i < PARTITION_ENTRY_SIZE; i++)
                if (buf[i] != 0xFF)
                        blank = false;
        if (blank) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "%s: no partition table at 0x%x (the sector is erased)", flash_path(f),
                                 PARTITION_TABLE_OFFSET);
                return -ESP_ERR_NOT_FOUND;
        }
        r = partition_table_from_binary(buf, sizeof(buf), ret, msg, sizeof(msg));
        if (r < 0) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "%s: partition table at 0x%x: %s", flash_path(f), PARTITION_TABLE_OFFSET,
                                 msg);
                return r;
        }
        return 0;
}

int partition_table_write(Flash *f, const PartitionTable *t) {
        uint8_t buf[PARTITION_TABLE_MAX_LEN];
        int r;

        if (!f || !t)
                return -EINVAL;
        if (partition_table_end(t) > flash_size(f))
                return -ERANGE;
        r = partition_table_to_binary(t, buf);
        if (r < 0)
                return r;
        r = flash_erase(f, PARTITION_TABLE_OFFSET, PARTITION_TABLE_SECTOR_SIZE);
        if (r < 0)
                return r;
        return flash_write(f, PARTITION_TABLE_OFFSET, buf, sizeof(buf));
}
