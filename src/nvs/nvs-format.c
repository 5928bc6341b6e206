/* SPDX-License-Identifier: MIT */
#include "basic/crc.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "basic/string-table.h"
#include "nvs/nvs-internal.h"

uint32_t nvs_item_crc(const uint8_t item[NVS_ENTRY_SIZE]) {
        /* §3.2: the CRC covers the whole item except the CRC field itself. */
        uint32_t crc = esp_crc32_le(0xFFFFFFFFu, item, 4);
        return esp_crc32_le(crc, item + 8, NVS_ENTRY_SIZE - 8);
}

void nvs_item_set_crc(uint8_t item[NVS_ENTRY_SIZE]) {
        le32_write(item + NVS_ITEM_CRC, nvs_item_crc(item));
}

uint32_t nvs_header_crc(const uint8_t header[NVS_HEADER_SIZE]) {
        return esp_crc(header + 4, 24);
}

void nvs_header_init(uint8_t header[NVS_HEADER_SIZE], uint32_t state, uint32_t seq, uint8_t version) {
        memset(header, 0xFF, NVS_HEADER_SIZE);
        le32_write(header, state);
        le32_write(header + 4, seq);
        header[8] = version;
        le32_write(header + 28, nvs_header_crc(header));
}

unsigned nvs_type_primitive_size(uint8_t type) {
        switch (type) {
        case NVS_TYPE_U8:
        case NVS_TYPE_I8:
                return 1;
        case NVS_TYPE_U16:
        case NVS_TYPE_I16:
                return 2;
        case NVS_TYPE_U32:
        case NVS_TYPE_I32:
        case NVS_TYPE_FLOAT:
                return 4;
        case NVS_TYPE_U64:
        case NVS_TYPE_I64:
        case NVS_TYPE_DOUBLE:
                return 8;
        default:
                return 0;
        }
}

bool nvs_type_is_signed(uint8_t type) {
        return type == NVS_TYPE_I8 || type == NVS_TYPE_I16 || type == NVS_TYPE_I32 || type == NVS_TYPE_I64;
}

bool nvs_type_is_varlen(uint8_t type) {
        return type == NVS_TYPE_STR || type == NVS_TYPE_BLOB || type == NVS_TYPE_BLOB_DATA;
}

bool nvs_type_is_known(uint8_t type) {
        return nvs_type_primitive_size(type) > 0 || nvs_type_is_varlen(type) || type == NVS_TYPE_BLOB_IDX;
}

const char *nvs_type_to_string(NvsType t) {
        switch (t) {
        case NVS_TYPE_U8: return "u8";
        case NVS_TYPE_I8: return "i8";
        case NVS_TYPE_U16: return "u16";
        case NVS_TYPE_I16: return "i16";
        case NVS_TYPE_U32: return "u32";
        case NVS_TYPE_I32: return "i32";
        case NVS_TYPE_U64: return "u64";
        case NVS_TYPE_I64: return "i64";
        case NVS_TYPE_STR: return "string";
        case NVS_TYPE_FLOAT: return "float";
        case NVS_TYPE_DOUBLE: return "double";
        case NVS_TYPE_BLOB: return "blob";
        case NVS_TYPE_BLOB_DATA: return "blob_data";
        case NVS_TYPE_BLOB_IDX: return "blob_index";
        case NVS_TYPE_ANY: return "any";
        case _NVS_TYPE_INVALID: return NULL;
        }
        return NULL;
}

NvsType nvs_type_from_string(const char *s) {
        static const NvsType all[] = {
                NVS_TYPE_U8, NVS_TYPE_I8, NVS_TYPE_U16, NVS_TYPE_I16, NVS_TYPE_U32, NVS_TYPE_I32,
                NVS_TYPE_U64, NVS_TYPE_I64, NVS_TYPE_STR, NVS_TYPE_FLOAT, NVS_TYPE_DOUBLE,
                NVS_TYPE_BLOB, NVS_TYPE_BLOB_DATA, NVS_TYPE_BLOB_IDX, NVS_TYPE_ANY,
        };
        if (!s)
                return _NVS_TYPE_INVALID;
        if (streq(s, "str"))
                return NVS_TYPE_STR;
        for (size_t i = 0; i < ELEMENTSOF(all); i++)
                if (streq(nvs_type_to_string(all[i]), s))
                        return all[i];
        return _NVS_TYPE_INVALID;
}

static const char *const nvs_page_state_table[_NVS_PAGE_STATE_MAX] = {
        [NVS_PAGE_UNINITIALIZED] = "UNINITIALIZED",
        [NVS_PAGE_ACTIVE] = "ACTIVE",
        [NVS_PAGE_FULL] = "FULL",
        [NVS_PAGE_FREEING] = "FREEING",
        [NVS_PAGE_CORRUPT] = "CORRUPT",
};

DEFINE_STRING_TABLE_LOOKUP(nvs_page_state, NvsPageState);

static int base64_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

int nvs_base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len) {
        _cleanup_free_ uint8_t *out = NULL;
        size_t n = 0, pad = 0;
        uint32_t acc = 0;
        unsigned bits = 0;

        out = malloc(len / 4 * 3 + 3);
        if (!out)
                return -ENOMEM;

        /* RFC 4648 with whitespace allowed between groups; '=' only at the end. */
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
                        continue;
                if (c == '=') {
                        pad++;
                        continue;
                }
                int v = base64_value(c);
                if (v < 0 || pad > 0)
                        return -EINVAL;
                acc = (acc << 6) | (uint32_t) v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[n++] = (uint8_t) (acc >> bits);
                }
        }
        if (pad > 2 || bits >= 6)
                return -EINVAL;

        *ret = TAKE_PTR(out);
        *ret_len = n;
        return 0;
}

int nvs_parse_int_text(const char *name, const char *text, int base, uint8_t *ret_type, uint64_t *ret_raw) {
        static const struct {
                const char *name;
                uint8_t type;
                int64_t min;
                uint64_t max;
        } ints[] = {
                { "u8", NVS_TYPE_U8, 0, UINT8_MAX },
                { "i8", NVS_TYPE_I8, INT8_MIN, INT8_MAX },
                { "u16", NVS_TYPE_U16, 0, UINT16_MAX },
                { "i16", NVS_TYPE_I16, INT16_MIN, INT16_MAX },
                { "u32", NVS_TYPE_U32, 0, UINT32_MAX },
                { "i32", NVS_TYPE_I32, INT32_MIN, INT32_MAX },
                { "u64", NVS_TYPE_U64, 0, UINT64_MAX },
                { "i64", NVS_TYPE_I64, INT64_MIN, INT64_MAX },
        };

        for (size_t i = 0; i < ELEMENTSOF(ints); i++) {
                if (!streq(ints[i].name, name))
                        continue;
                *ret_type = ints[i].type;
                if (ints[i].min < 0) {
                        int64_t v;
                        if (safe_atoi64(text, base, &v) < 0)
                                return -EINVAL;
                        if (v < ints[i].min || v > (int64_t) ints[i].max)
                                return -ERANGE;
                        *ret_raw = (uint64_t) v;
                } else {
                        uint64_t v;
                        if (safe_atou64(text, base, &v) < 0)
                                return -EINVAL;
                        if (v > ints[i].max)
                                return -ERANGE;
                        *ret_raw = v;
                }
                return 0;
        }
        return -ENOENT;
}
