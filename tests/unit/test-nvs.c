/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "basic/crc.h"
#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "flash/flash.h"
#include "nvs/nvs-internal.h"
#include "nvs/nvs.h"

#define NVS_VEC VECTORS_DIR "/nvs/"

static uint8_t *load(const char *path, size_t *size) {
        uint8_t *data = NULL;
        int r = read_full_file(path, 64 * 1024 * 1024, &data, size);
        cr_assert_eq(r, 0, "reading %s: %d", path, r);
        return data;
}

static void gen_compare(const char *name, const NvsXtsKeys *keys, const char *golden) {
        char csv[256], bin[256], err[512] = "";
        _cleanup_free_ uint8_t *img = NULL, *ref = NULL;
        size_t size = 0, ref_size = 0;

        snprintf(csv, sizeof csv, NVS_VEC "%s.csv", name);
        snprintf(bin, sizeof bin, NVS_VEC "%s.bin", golden);
        cr_assert_eq(nvs_generate_csv_file(csv, 0x6000, 2, keys, &img, &size, err, sizeof err), 0, "%s", err);
        ref = load(bin, &ref_size);
        cr_assert_eq(size, ref_size);
        for (size_t i = 0; i < size; i++)
                cr_assert_eq(img[i], ref[i], "%s: first difference at 0x%zx", golden, i);
}

/* ---- generator: golden vectors ---- */

Test(nvs_gen, golden_basic) { gen_compare("basic", NULL, "basic"); }
Test(nvs_gen, golden_types) { gen_compare("types", NULL, "types"); }
Test(nvs_gen, golden_files) { gen_compare("files", NULL, "files"); }

Test(nvs_gen, golden_basic_encrypted) {
        NvsXtsKeys keys;
        char err[256];
        cr_assert_eq(nvs_keys_read_file(NVS_VEC "basic-enc.keys.bin", &keys, err, sizeof err), 0, "%s", err);
        gen_compare("basic", &keys, "basic-enc");
}

static int gen_text(const char *csv, uint32_t size, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *img = NULL;
        size_t n = 0;
        return nvs_generate_csv_text(csv, strlen(csv), "t.csv", NVS_VEC, size, 2, NULL, &img, &n, err, errlen);
}

static void gen_fails(const char *csv, const char *needle) {
        char err[512] = "";
        cr_assert_lt(gen_text(csv, 0x6000, err, sizeof err), 0, "accepted: %s", csv);
        cr_assert(strstr(err, needle), "error '%s' does not mention '%s'", err, needle);
}

Test(nvs_gen, bad_csv_names_line_and_reason) {
        gen_fails("key,type,encoding,value\nns,namespace,,\nthiskeyiswaytoolong,data,u8,1\n", "t.csv:3:");
        gen_fails("key,type,encoding,value\nns,namespace,,\nthiskeyiswaytoolong,data,u8,1\n", "<= 15");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,data,u8,256\n", "not a valid u8");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,data,i8,-129\n", "t.csv:3:");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,data,u16,12x\n", "not a valid u16");
        gen_fails("key,type,encoding,value\nns,namespace,,\n# c\nk,data,hex2bin,abc\n", "t.csv:4:");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,data,hex2bin,zz\n", "not valid hex");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,data,base64,@@@@\n", "base64");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,data,float,1\n", "unsupported encoding");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,file,binary,no-such-file.bin\n", "no-such-file.bin");
        gen_fails("key,type,encoding,value\nk,data,u8,1\n", "before any namespace");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,blob,u8,1\n", "unknown type");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,data\n", "expected 4 fields");
        gen_fails("a,b,c\nns,namespace,,\n", "header");
        gen_fails("", "no header");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,data,string,\"unterminated\n", "unterminated");
        gen_fails("key,type,encoding,value\nns,namespace,,\nbig,file,binary,big.bin\n"
                  "big2,file,binary,big.bin\nbig3,file,binary,big.bin\n", "too small");
        gen_fails("key,type,encoding,value\nns,namespace,,\nk,data,blob_fill(4;0xFF),toolong\n", "exceeds");
}

Test(nvs_gen, size_rules) {
        char err[256];
        _cleanup_free_ uint8_t *img = NULL;
        size_t n = 0;
        const char *csv = "key,type,encoding,value\nns,namespace,,\nk,data,u8,1\n";

        cr_assert_eq(nvs_generate_csv_text(csv, strlen(csv), "t", NULL, 0x1001, 2, NULL, &img, &n, err, sizeof err),
                     -ESP_ERR_NVS_INVALID_LENGTH);
        /* < 0x3000: read-only image, only the used page is emitted */
        cr_assert_eq(nvs_generate_csv_text(csv, strlen(csv), "t", NULL, 0x2000, 2, NULL, &img, &n, err, sizeof err), 0);
        cr_assert_eq(n, 0x1000);
        free(img);
        img = NULL;
        cr_assert_eq(nvs_generate_csv_text(csv, strlen(csv), "t", NULL, 0x3000, 2, NULL, &img, &n, err, sizeof err), 0);
        cr_assert_eq(n, 0x3000);
        /* quoted fields, CRLF line ends and fill encodings */
        free(img);
        img = NULL;
        const char *csv2 = "key,type,encoding,value\r\nns,namespace,,\r\ns,data,string,\"a,\"\"b\"\r\n"
                           "f,data,blob_sz_fill(4;0xAA),hi\r\n";
        cr_assert_eq(nvs_generate_csv_text(csv2, strlen(csv2), "t", NULL, 0x3000, 2, NULL, &img, &n, err, sizeof err),
                     0, "%s", err);
        _cleanup_(nvs_closep) Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        cr_assert_eq(nvs_open_buffer(img, n, NULL, NVS_OPEN_READ_ONLY, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "ns", NVS_READONLY, &h), 0);
        char buf[16];
        size_t len = sizeof buf;
        cr_assert_eq(nvs_get_str(h, "s", buf, &len), 0);
        cr_assert_str_eq(buf, "a,\"b");
        uint8_t blob[16];
        len = sizeof blob;
        cr_assert_eq(nvs_get_blob(h, "f", blob, &len), 0);
        cr_assert_eq(len, 8);
        cr_assert_eq(memcmp(blob, "\x02\x00\x00\x00hi\xAA\xAA", 8), 0);
        nvs_handle_close(h);
}

/* ---- reading the golden images ---- */

static Nvs *open_golden(const char *name, const NvsXtsKeys *keys, uint8_t **ret_buf) {
        char path[256];
        size_t size = 0;
        Nvs *nvs = NULL;

        snprintf(path, sizeof path, NVS_VEC "%s.bin", name);
        *ret_buf = load(path, &size);
        cr_assert_eq(nvs_open_buffer(*ret_buf, size, keys, NVS_OPEN_READ_ONLY, &nvs), 0);
        cr_assert_eq(nvs_repair_count(nvs), 0, "golden image %s needed repairs", name);
        return nvs;
}

static void check_basic(Nvs *nvs) {
        NvsHandle *h = NULL;
        char *url = NULL;
        uint8_t use_url = 0;
        uint32_t interval = 0;

        cr_assert_eq(nvs_handle_open(nvs, "secure_esp", NVS_READONLY, &h), 0);
        cr_assert_eq(nvs_get_str_alloc(h, "url", &url), 0);
        cr_assert_str_eq(url, "https://192.168.0.10:8070/secure_esp.bin");
        cr_assert_eq(nvs_get_u8(h, "use_url", &use_url), 0);
        cr_assert_eq(use_url, 1);
        cr_assert_eq(nvs_get_u32(h, "interval", &interval), 0);
        cr_assert_eq(interval, 10000);
        cr_assert_eq(nvs_get_u16(h, "interval", &(uint16_t) { 0 }), -ESP_ERR_NVS_TYPE_MISMATCH);
        cr_assert_eq(nvs_get_u8(h, "nope", &use_url), -ESP_ERR_NVS_NOT_FOUND);
        cr_assert_eq(nvs_set_u8(h, "use_url", 0), -ESP_ERR_NVS_READ_ONLY);
        free(url);
        nvs_handle_close(h);
}

Test(nvs_read, golden_basic) {
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_(nvs_closep) Nvs *nvs = open_golden("basic", NULL, &buf);
        NvsPageInfo pi;

        check_basic(nvs);
        cr_assert_eq(nvs_page_count(nvs), 6);
        cr_assert_eq(nvs_page_info(nvs, 0, &pi), 0);
        cr_assert_eq(pi.state, NVS_PAGE_ACTIVE);
        cr_assert_eq(pi.seq, 0);
        cr_assert_eq(pi.written, 6);
        cr_assert_eq(nvs_page_info(nvs, 5, &pi), 0);
        cr_assert_eq(pi.state, NVS_PAGE_UNINITIALIZED);
}

Test(nvs_read, golden_basic_encrypted) {
        _cleanup_free_ uint8_t *buf = NULL;
        NvsXtsKeys keys;
        char err[256];

        cr_assert_eq(nvs_keys_read_file(NVS_VEC "basic-enc.keys.bin", &keys, err, sizeof err), 0);
        _cleanup_(nvs_closep) Nvs *nvs = open_golden("basic-enc", &keys, &buf);
        cr_assert(nvs_is_encrypted(nvs));
        check_basic(nvs);

        /* without the keys nothing decodes: every entry fails its CRC */
        _cleanup_(nvs_closep) Nvs *plain = NULL;
        NvsHandle *h = NULL;
        cr_assert_eq(nvs_open_buffer(buf, 0x6000, NULL, NVS_OPEN_READ_ONLY, &plain), 0);
        cr_assert_eq(nvs_handle_open(plain, "secure_esp", NVS_READONLY, &h), -ESP_ERR_NVS_NOT_FOUND);
}

Test(nvs_read, golden_types) {
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_(nvs_closep) Nvs *nvs = open_golden("types", NULL, &buf);
        NvsHandle *h = NULL;
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;

        cr_assert_eq(nvs_handle_open(nvs, "ints", NVS_READONLY, &h), 0);
        cr_assert_eq(nvs_get_u8(h, "u8max", &u8), 0);
        cr_assert_eq(u8, 255);
        cr_assert_eq(nvs_get_i8(h, "i8min", &i8), 0);
        cr_assert_eq(i8, -128);
        cr_assert_eq(nvs_get_u16(h, "u16v", &u16), 0);
        cr_assert_eq(u16, 65535);
        cr_assert_eq(nvs_get_i16(h, "i16v", &i16), 0);
        cr_assert_eq(i16, -32768);
        cr_assert_eq(nvs_get_u32(h, "u32v", &u32), 0);
        cr_assert_eq(u32, UINT32_MAX);
        cr_assert_eq(nvs_get_i32(h, "i32v", &i32), 0);
        cr_assert_eq(i32, INT32_MIN);
        cr_assert_eq(nvs_get_u64(h, "u64v", &u64), 0);
        cr_assert_eq(u64, UINT64_MAX);
        cr_assert_eq(nvs_get_i64(h, "i64v", &i64), 0);
        cr_assert_eq(i64, INT64_MIN);
        /* the tool put 'again' in the newest namespace (strs), not in 'ints' */
        cr_assert_eq(nvs_get_u8(h, "again", &u8), -ESP_ERR_NVS_NOT_FOUND);
        nvs_handle_close(h);

        cr_assert_eq(nvs_handle_open(nvs, "strs", NVS_READONLY, &h), 0);
        char s[32];
        size_t len = 0;
        cr_assert_eq(nvs_get_str(h, "empty", NULL, &len), 0);
        cr_assert_eq(len, 1);
        len = sizeof s;
        cr_assert_eq(nvs_get_str(h, "hello", s, &len), 0);
        cr_assert_str_eq(s, "hello world");
        cr_assert_eq(len, 12);
        len = 4;
        cr_assert_eq(nvs_get_str(h, "hello", s, &len), -ESP_ERR_NVS_INVALID_LENGTH);
        cr_assert_eq(len, 12);
        uint8_t blob[16];
        len = sizeof blob;
        cr_assert_eq(nvs_get_blob(h, "hex", blob, &len), 0);
        cr_assert_eq(len, 8);
        cr_assert_eq(memcmp(blob, "\xde\xad\xbe\xef\x00\x11\x22\x33", 8), 0);
        len = sizeof blob;
        cr_assert_eq(nvs_get_blob(h, "b64", blob, &len), 0);
        cr_assert_eq(len, 10);
        cr_assert_eq(memcmp(blob, "Hello NVS!", 10), 0);
        cr_assert_eq(nvs_get_u8(h, "again", &u8), 0);
        cr_assert_eq(u8, 7);
        NvsType t;
        cr_assert_eq(nvs_find_key(h, "hex", &t), 0);
        cr_assert_eq(t, NVS_TYPE_BLOB_IDX);
        nvs_handle_close(h);

        NvsStats st;
        cr_assert_eq(nvs_get_stats(nvs, &st), 0);
        cr_assert_eq(st.namespace_count, 2);
        cr_assert_eq(st.total_entries, 6 * 126);
}

static int count_cb(const NvsEntryInfo *info, void *userdata) {
        unsigned *c = userdata;
        cr_assert(info->key[0]);
        cr_assert(info->type != NVS_TYPE_BLOB_DATA);
        (*c)++;
        return 0;
}

Test(nvs_read, golden_files_multi_page_blob) {
        _cleanup_free_ uint8_t *buf = NULL, *big = NULL, *blob1 = NULL, *cert = NULL;
        _cleanup_(nvs_closep) Nvs *nvs = open_golden("files", NULL, &buf);
        size_t big_size, blob1_size, cert_size, len;
        NvsHandle *h = NULL;
        uint8_t *data = NULL;
        char *s = NULL;
        uint16_t u16;

        big = load(NVS_VEC "big.bin", &big_size);
        blob1 = load(NVS_VEC "blob1.bin", &blob1_size);
        cert = load(NVS_VEC "cert.pem", &cert_size);

        cr_assert_eq(nvs_handle_open(nvs, "esp_ds_ns", NVS_READONLY, &h), 0);
        cr_assert_eq(nvs_get_u16(h, "esp_ds_rsa_len", &u16), 0);
        cr_assert_eq(u16, 2048);
        cr_assert_eq(nvs_get_blob_alloc(h, "big", &data, &len), 0);
        cr_assert_eq(len, big_size);
        cr_assert_eq(memcmp(data, big, len), 0);
        free(data);
        cr_assert_eq(nvs_get_blob_alloc(h, "blob1", &data, &len), 0);
        cr_assert_eq(len, blob1_size);
        cr_assert_eq(memcmp(data, blob1, len), 0);
        free(data);
        cr_assert_eq(nvs_get_str_alloc(h, "cert", &s), 0);
        cr_assert_str_eq(s, (char *) cert);
        free(s);
        nvs_handle_close(h);

        unsigned c = 0;
        cr_assert_eq(nvs_iterate(nvs, NULL, NVS_TYPE_ANY, count_cb, &c), 0);
        cr_assert_eq(c, 6);
        c = 0;
        cr_assert_eq(nvs_iterate(nvs, "esp_ds_ns", NVS_TYPE_BLOB_IDX, count_cb, &c), 0);
        cr_assert_eq(c, 3);

        NvsValue v;
        cr_assert_eq(nvs_get_value(nvs, "esp_ds_ns", "esp_ds_iv", &v), 0);
        cr_assert_eq(v.type, NVS_TYPE_BLOB_IDX);
        cr_assert_eq(v.size, 16);
        nvs_value_done(&v);
}

/* ---- keys ---- */

Test(nvs_keys, partition_format_and_hmac) {
        static const uint8_t exp_e[32] = {
                0x81, 0x3a, 0x14, 0x12, 0x20, 0xdd, 0xb8, 0x19, 0xf4, 0xd7, 0x3d, 0x59, 0xfa, 0x30, 0x32, 0xab,
                0x9f, 0x59, 0x2c, 0xc2, 0x6a, 0x18, 0xcf, 0x1f, 0xde, 0x69, 0x2f, 0x71, 0x2b, 0x6a, 0x02, 0x5c,
        };
        static const uint8_t exp_t[32] = {
                0xb2, 0x0a, 0xd6, 0xb6, 0xdd, 0xd1, 0x65, 0x8a, 0x6e, 0x14, 0xd1, 0xb5, 0xb7, 0x26, 0xe4, 0x23,
                0x56, 0xad, 0xf4, 0xff, 0x2f, 0x68, 0xfc, 0xd8, 0x82, 0x6a, 0xc2, 0x90, 0x84, 0x08, 0xad, 0xdf,
        };
        uint8_t hmac_key[32], part[NVS_KEYS_PARTITION_SIZE];
        _cleanup_free_ uint8_t *golden = NULL;
        NvsXtsKeys k, k2;
        size_t size;

        /* HMAC-SHA256 with the §3.4 seeds; expected values from Python's hmac */
        for (unsigned i = 0; i < 32; i++)
                hmac_key[i] = (uint8_t) i;
        cr_assert_eq(nvs_keys_from_hmac(hmac_key, &k), 0);
        cr_assert_eq(memcmp(k.eky, exp_e, 32), 0);
        cr_assert_eq(memcmp(k.tky, exp_t, 32), 0);

        nvs_keys_serialize(&k, part);
        cr_assert_eq(le32_read(part + 64), esp_crc(part, 64));
        cr_assert_eq(part[68], 0xFF);
        cr_assert_eq(nvs_keys_parse(part, sizeof part, &k2), 0);
        cr_assert_eq(memcmp(&k, &k2, sizeof k), 0);

        /* the golden key file re-serialises to the same bytes */
        golden = load(NVS_VEC "basic-enc.keys.bin", &size);
        cr_assert_eq(size, NVS_KEYS_PARTITION_SIZE);
        cr_assert_eq(nvs_keys_parse(golden, size, &k2), 0);
        nvs_keys_serialize(&k2, part);
        cr_assert_eq(memcmp(part, golden, size), 0);

        part[3] ^= 1;
        cr_assert_eq(nvs_keys_parse(part, sizeof part, &k2), -ESP_ERR_NVS_CORRUPT_KEY_PART);
        memset(part, 0xFF, sizeof part);
        cr_assert_eq(nvs_keys_parse(part, sizeof part, &k2), -ESP_ERR_NVS_KEYS_NOT_INITIALIZED);
        cr_assert_eq(nvs_keys_parse(part, 10, &k2), -ESP_ERR_NVS_CORRUPT_KEY_PART);

        cr_assert_eq(nvs_keys_generate(&k), 0);
        cr_assert_neq(memcmp(k.eky, k.tky, 32), 0);
}

/* ---- read-write storage ---- */

static uint8_t *blank(size_t size) {
        uint8_t *b = malloc(size);
        cr_assert(b);
        memset(b, 0xFF, size);
        return b;
}

Test(nvs_rw, every_type_round_trip) {
        _cleanup_free_ uint8_t *buf = blank(0x6000);
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;

        cr_assert_eq(nvs_open_buffer(buf, 0x6000, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "missing", NVS_READONLY, &h), -ESP_ERR_NVS_NOT_FOUND);
        cr_assert_eq(nvs_handle_open(nvs, "namespace_too_long", NVS_READWRITE, &h), -ESP_ERR_NVS_KEY_TOO_LONG);
        cr_assert_eq(nvs_handle_open(nvs, "", NVS_READWRITE, &h), -ESP_ERR_NVS_INVALID_NAME);
        cr_assert_eq(nvs_handle_open(nvs, "app", NVS_READWRITE, &h), 0);

        cr_assert_eq(nvs_set_u8(h, "u8", 200), 0);
        cr_assert_eq(nvs_set_i8(h, "i8", -5), 0);
        cr_assert_eq(nvs_set_u16(h, "u16", 60000), 0);
        cr_assert_eq(nvs_set_i16(h, "i16", -30000), 0);
        cr_assert_eq(nvs_set_u32(h, "u32", 4000000000u), 0);
        cr_assert_eq(nvs_set_i32(h, "i32", -2000000000), 0);
        cr_assert_eq(nvs_set_u64(h, "u64", UINT64_C(0x1122334455667788)), 0);
        cr_assert_eq(nvs_set_i64(h, "i64", INT64_C(-1234567890123)), 0);
        cr_assert_eq(nvs_set_str(h, "str", "hello"), 0);
        cr_assert_eq(nvs_set_blob(h, "blob", "\x00\x01\x02", 3), 0);
        cr_assert_eq(nvs_set_blob(h, "empty", "", 0), 0);
        cr_assert_eq(nvs_set_u8(h, "sixteen_chars_ke", 1), -ESP_ERR_NVS_KEY_TOO_LONG);
        cr_assert_eq(nvs_set_u8(h, "", 1), -ESP_ERR_NVS_INVALID_NAME);
        char longstr[NVS_STR_MAX + 1];
        memset(longstr, 'x', sizeof longstr - 1);
        longstr[NVS_STR_MAX] = 0;
        cr_assert_eq(nvs_set_str(h, "long", longstr), -ESP_ERR_NVS_VALUE_TOO_LONG);
        longstr[NVS_STR_MAX - 1] = 0;
        cr_assert_eq(nvs_set_str(h, "long", longstr), 0);
        nvs_handle_close(h);
        nvs = nvs_close(nvs);

        /* everything survives a reopen, with no repairs */
        cr_assert_eq(nvs_open_buffer(buf, 0x6000, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_repair_count(nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "app", NVS_READWRITE, &h), 0);
        uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; uint64_t u64; int64_t i64;
        cr_assert_eq(nvs_get_u8(h, "u8", &u8), 0); cr_assert_eq(u8, 200);
        cr_assert_eq(nvs_get_i8(h, "i8", &i8), 0); cr_assert_eq(i8, -5);
        cr_assert_eq(nvs_get_u16(h, "u16", &u16), 0); cr_assert_eq(u16, 60000);
        cr_assert_eq(nvs_get_i16(h, "i16", &i16), 0); cr_assert_eq(i16, -30000);
        cr_assert_eq(nvs_get_u32(h, "u32", &u32), 0); cr_assert_eq(u32, 4000000000u);
        cr_assert_eq(nvs_get_i32(h, "i32", &i32), 0); cr_assert_eq(i32, -2000000000);
        cr_assert_eq(nvs_get_u64(h, "u64", &u64), 0); cr_assert_eq(u64, UINT64_C(0x1122334455667788));
        cr_assert_eq(nvs_get_i64(h, "i64", &i64), 0); cr_assert_eq(i64, INT64_C(-1234567890123));
        char *s = NULL;
        cr_assert_eq(nvs_get_str_alloc(h, "str", &s), 0);
        cr_assert_str_eq(s, "hello");
        free(s);
        cr_assert_eq(nvs_get_str_alloc(h, "long", &s), 0);
        cr_assert_eq(strlen(s), NVS_STR_MAX - 1);
        free(s);
        uint8_t b[8];
        size_t len = sizeof b;
        cr_assert_eq(nvs_get_blob(h, "blob", b, &len), 0);
        cr_assert_eq(len, 3);
        cr_assert_eq(memcmp(b, "\x00\x01\x02", 3), 0);
        len = sizeof b;
        cr_assert_eq(nvs_get_blob(h, "empty", b, &len), 0);
        cr_assert_eq(len, 0);
        cr_assert_eq(nvs_get_u8(h, "str", &u8), -ESP_ERR_NVS_TYPE_MISMATCH);
        cr_assert_eq(nvs_get_blob(h, "u8", b, &len), -ESP_ERR_NVS_TYPE_MISMATCH);

        /* another type replaces the key */
        cr_assert_eq(nvs_set_str(h, "u8", "now a string"), 0);
        cr_assert_eq(nvs_get_u8(h, "u8", &u8), -ESP_ERR_NVS_TYPE_MISMATCH);
        cr_assert_eq(nvs_erase_key(h, "u8"), 0);
        cr_assert_eq(nvs_erase_key(h, "u8"), -ESP_ERR_NVS_NOT_FOUND);
        cr_assert_eq(nvs_erase_key(h, "blob"), 0);
        cr_assert_eq(nvs_get_blob(h, "blob", b, &len), -ESP_ERR_NVS_NOT_FOUND);
        cr_assert_eq(nvs_commit(h), 0);

        /* a second namespace is separate; erase_all clears only its own */
        NvsHandle *h2 = NULL;
        cr_assert_eq(nvs_handle_open(nvs, "other", NVS_READWRITE, &h2), 0);
        cr_assert_eq(nvs_set_u8(h2, "u16", 9), 0);
        cr_assert_eq(nvs_erase_all(h), 0);
        cr_assert_eq(nvs_get_u16(h, "u16", &u16), -ESP_ERR_NVS_NOT_FOUND);
        cr_assert_eq(nvs_get_u8(h2, "u16", &u8), 0);
        cr_assert_eq(u8, 9);
        NvsStats st;
        cr_assert_eq(nvs_get_stats(nvs, &st), 0);
        cr_assert_eq(st.namespace_count, 2);
        nvs_handle_close(h2);
        nvs_handle_close(h);

        /* a read-only Nvs refuses read-write handles */
        nvs = nvs_close(nvs);
        cr_assert_eq(nvs_open_buffer(buf, 0x6000, NULL, NVS_OPEN_READ_ONLY, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "app", NVS_READWRITE, &h), -ESP_ERR_NVS_READ_ONLY);
        nvs_close(nvs);
}

/* Scans a plaintext image for a live BLOB_IDX of `key` and returns its chunkStart. */
static int raw_blob_chunk_start(const uint8_t *img, size_t size, const char *key) {
        int found = -1;
        for (size_t p = 0; p < size / NVS_PAGE_SIZE; p++) {
                const uint8_t *page = img + p * NVS_PAGE_SIZE;
                if (le32_read(page) == NVS_STATE_UNINITIALIZED)
                        continue;
                for (unsigned i = 0; i < NVS_ENTRIES_PER_PAGE; i++) {
                        const uint8_t *e = page + NVS_FIRST_ENTRY_OFFSET + i * NVS_ENTRY_SIZE;
                        if (nvs_bitmap_get(page + NVS_BITMAP_OFFSET, i) == NVS_ENTRY_WRITTEN &&
                            e[NVS_ITEM_TYPE] == NVS_TYPE_BLOB_IDX && streq((const char *) e + NVS_ITEM_KEY, key))
                                found = e[NVS_ITEM_DATA + 5];
                }
        }
        return found;
}

Test(nvs_rw, multi_page_blob_versions) {
        _cleanup_free_ uint8_t *buf = blank(0x8000), *data = NULL, *back = NULL;
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        size_t len;

        data = malloc(10000);
        for (size_t i = 0; i < 10000; i++)
                data[i] = (uint8_t) (i * 7 + 3);
        cr_assert_eq(nvs_open_buffer(buf, 0x8000, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "b", NVS_READWRITE, &h), 0);
        cr_assert_eq(nvs_set_u8(h, "small", 1), 0);
        cr_assert_eq(nvs_set_blob(h, "big", data, 10000), 0);
        cr_assert_eq(raw_blob_chunk_start(buf, 0x8000, "big"), 0x00);
        cr_assert_eq(nvs_get_blob_alloc(h, "big", &back, &len), 0);
        cr_assert_eq(len, 10000);
        cr_assert_eq(memcmp(back, data, len), 0);
        free(back);
        back = NULL;

        /* an update goes to the alternate chunk range */
        data[5000] ^= 0xFF;
        cr_assert_eq(nvs_set_blob(h, "big", data, 9000), 0);
        cr_assert_eq(raw_blob_chunk_start(buf, 0x8000, "big"), 0x80);
        data[1] ^= 0xFF;
        cr_assert_eq(nvs_set_blob(h, "big", data, 9500), 0);
        cr_assert_eq(raw_blob_chunk_start(buf, 0x8000, "big"), 0x00);
        nvs_handle_close(h);
        nvs = nvs_close(nvs);

        cr_assert_eq(nvs_open_buffer(buf, 0x8000, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_repair_count(nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "b", NVS_READONLY, &h), 0);
        cr_assert_eq(nvs_get_blob_alloc(h, "big", &back, &len), 0);
        cr_assert_eq(len, 9500);
        cr_assert_eq(memcmp(back, data, len), 0);
        /* too big for the partition */
        nvs_handle_close(h);
        cr_assert_eq(nvs_handle_open(nvs, "b", NVS_READWRITE, &h), 0);
        cr_assert_eq(nvs_set_blob(h, "huge", data, 0x8000), -ESP_ERR_NVS_VALUE_TOO_LONG);
        nvs_handle_close(h);
        nvs_close(nvs);
}

Test(nvs_rw, gc_under_many_updates) {
        /* 4 pages: three for data, one kept free for garbage collection */
        _cleanup_free_ uint8_t *buf = blank(0x4000);
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        uint32_t expect[20] = {};
        char key[16];

        cr_assert_eq(nvs_open_buffer(buf, 0x4000, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "gc", NVS_READWRITE, &h), 0);
        cr_assert_eq(nvs_set_str(h, "constant", "must survive every GC"), 0);
        for (unsigned n = 0; n < 3000; n++) {
                unsigned k = (n * 7) % 20;
                snprintf(key, sizeof key, "k%u", k);
                expect[k] = n + 1;
                cr_assert_eq(nvs_set_u32(h, key, n + 1), 0, "update %u", n);
                if (n % 50 == 0) {
                        snprintf(key, sizeof key, "s%u", k % 3);
                        char val[64];
                        snprintf(val, sizeof val, "string value number %u", n);
                        cr_assert_eq(nvs_set_str(h, key, val), 0);
                }
        }
        /* the pages went round: every page got used and sequence numbers moved on */
        NvsPageInfo pi;
        uint32_t max_seq = 0;
        unsigned free_pages = 0;
        for (unsigned p = 0; p < 4; p++) {
                cr_assert_eq(nvs_page_info(nvs, p, &pi), 0);
                max_seq = MAX(max_seq, pi.seq);
                free_pages += pi.state == NVS_PAGE_UNINITIALIZED;
        }
        cr_assert_gt(max_seq, 10);
        cr_assert_geq(free_pages, 1);
        nvs_handle_close(h);
        nvs = nvs_close(nvs);

        cr_assert_eq(nvs_open_buffer(buf, 0x4000, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_repair_count(nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "gc", NVS_READONLY, &h), 0);
        for (unsigned k = 0; k < 20; k++) {
                uint32_t v;
                snprintf(key, sizeof key, "k%u", k);
                cr_assert_eq(nvs_get_u32(h, key, &v), 0);
                cr_assert_eq(v, expect[k]);
        }
        char *s = NULL;
        cr_assert_eq(nvs_get_str_alloc(h, "constant", &s), 0);
        cr_assert_str_eq(s, "must survive every GC");
        free(s);
        nvs_handle_close(h);
        nvs_close(nvs);
}

Test(nvs_rw, fills_up_then_recovers) {
        _cleanup_free_ uint8_t *buf = blank(0x4000);
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        char key[16];
        unsigned n;
        int r = 0;

        cr_assert_eq(nvs_open_buffer(buf, 0x4000, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "fill", NVS_READWRITE, &h), 0);
        for (n = 0; n < 1000; n++) {
                snprintf(key, sizeof key, "key%u", n);
                r = nvs_set_u32(h, key, n);
                if (r < 0)
                        break;
        }
        cr_assert_eq(r, -ESP_ERR_NVS_NOT_ENOUGH_SPACE);
        /* 3 data pages of 126 entries, minus the namespace entry */
        cr_assert_eq(n, 3 * 126 - 1);
        cr_assert_eq(nvs_set_str(h, "more", "x"), -ESP_ERR_NVS_NOT_ENOUGH_SPACE);
        cr_assert_eq(nvs_set_blob(h, "blob", "abc", 3), -ESP_ERR_NVS_NOT_ENOUGH_SPACE);
        /* what is stored is intact, also after a reopen of a full partition */
        nvs_handle_close(h);
        nvs = nvs_close(nvs);
        cr_assert_eq(nvs_open_buffer(buf, 0x4000, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "fill", NVS_READWRITE, &h), 0);
        for (unsigned i = 0; i < n; i++) {
                uint32_t v;
                snprintf(key, sizeof key, "key%u", i);
                cr_assert_eq(nvs_get_u32(h, key, &v), 0);
                cr_assert_eq(v, i);
        }
        /* erase some keys: garbage collection makes room again */
        for (unsigned i = 0; i < 40; i++) {
                snprintf(key, sizeof key, "key%u", i * 3);
                cr_assert_eq(nvs_erase_key(h, key), 0);
        }
        cr_assert_eq(nvs_set_str(h, "more", "after erase"), 0);
        cr_assert_eq(nvs_set_blob(h, "blob", "abc", 3), 0);
        for (unsigned i = 0; i < 30; i++) {
                snprintf(key, sizeof key, "new%u", i);
                cr_assert_eq(nvs_set_u8(h, key, (uint8_t) i), 0);
        }
        uint32_t v;
        cr_assert_eq(nvs_get_u32(h, "key1", &v), 0);
        cr_assert_eq(v, 1);
        nvs_handle_close(h);
        nvs_close(nvs);
}

/* Found by fuzz-nvs (a timeout): a blob's first chunk skips a page with
 * less than 10 % of room, and garbage collection can hand the same little
 * room back for ever. Two pages nearly full, one free: the active page has
 * 5 entries left, and compacting either full page gives back no more. */
Test(nvs_rw, blob_without_room_for_a_first_chunk_gives_up, .timeout = 30) {
        _cleanup_free_ uint8_t *buf = blank(0x3000);
        uint8_t blob[1000];
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        NvsPageInfo pi;
        char key[16];
        uint8_t v;

        cr_assert_eq(nvs_open_buffer(buf, 0x3000, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "fill", NVS_READWRITE, &h), 0);
        /* page 0: the namespace and 125 keys; page 1: 120 keys */
        for (unsigned i = 0; i < 125 + 120; i++) {
                snprintf(key, sizeof key, "k%u", i);
                cr_assert_eq(nvs_set_u8(h, key, (uint8_t) i), 0, "%s", key);
        }
        cr_assert_eq(nvs_page_info(nvs, 1, &pi), 0);
        cr_assert_eq(pi.written, 120);

        memset(blob, 0x5A, sizeof blob);
        cr_assert_eq(nvs_set_blob(h, "blob", blob, sizeof blob), -ESP_ERR_NVS_NOT_ENOUGH_SPACE);
        /* nothing lost, and a small value still fits */
        for (unsigned i = 0; i < 125 + 120; i++) {
                snprintf(key, sizeof key, "k%u", i);
                cr_assert_eq(nvs_get_u8(h, key, &v), 0, "%s", key);
                cr_assert_eq(v, (uint8_t) i);
        }
        cr_assert_eq(nvs_get_blob(h, "blob", NULL, &(size_t) { 0 }), -ESP_ERR_NVS_NOT_FOUND);
        cr_assert_eq(nvs_set_u8(h, "small", 1), 0);
        nvs_handle_close(h);
        nvs_close(nvs);
}

Test(nvs_rw, encrypted_round_trip) {
        _cleanup_free_ uint8_t *buf = blank(0x5000);
        NvsXtsKeys keys, other;
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        char *s = NULL;

        cr_assert_eq(nvs_keys_generate(&keys), 0);
        cr_assert_eq(nvs_keys_generate(&other), 0);
        cr_assert_eq(nvs_open_buffer(buf, 0x5000, &keys, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "sec", NVS_READWRITE, &h), 0);
        for (unsigned i = 0; i < 300; i++)
                cr_assert_eq(nvs_set_str(h, "secret", i % 2 ? "value one" : "the other value"), 0);
        nvs_handle_close(h);
        nvs = nvs_close(nvs);
        cr_assert_null(memmem(buf, 0x5000, "value", 5), "plaintext found in an encrypted partition");

        cr_assert_eq(nvs_open_buffer(buf, 0x5000, &keys, NVS_OPEN_READ_ONLY, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "sec", NVS_READONLY, &h), 0);
        cr_assert_eq(nvs_get_str_alloc(h, "secret", &s), 0);
        cr_assert_str_eq(s, "value one");
        free(s);
        nvs_handle_close(h);
        nvs = nvs_close(nvs);

        cr_assert_eq(nvs_open_buffer(buf, 0x5000, &other, NVS_OPEN_READ_ONLY, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "sec", NVS_READONLY, &h), -ESP_ERR_NVS_NOT_FOUND);
        nvs_close(nvs);
}

Test(nvs_rw, set_from_text_and_values) {
        _cleanup_free_ uint8_t *buf = blank(0x3000);
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        NvsValue v;
        char err[128];

        cr_assert_eq(nvs_open_buffer(buf, 0x3000, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "t", NVS_READWRITE, &h), 0);
        cr_assert_eq(nvs_set_from_text(h, "a", "i16", "-300", err, sizeof err), 0);
        cr_assert_eq(nvs_set_from_text(h, "b", "u32", "0x10", err, sizeof err), 0);
        cr_assert_eq(nvs_set_from_text(h, "c", "hex2bin", "00ff", err, sizeof err), 0);
        cr_assert_eq(nvs_set_from_text(h, "d", "base64", "aGk=", err, sizeof err), 0);
        cr_assert_eq(nvs_set_from_text(h, "e", "string", "txt", err, sizeof err), 0);
        cr_assert_eq(nvs_set_from_text(h, "f", "u8", "256", err, sizeof err), -EINVAL);
        cr_assert(strstr(err, "not a valid u8"));
        cr_assert_eq(nvs_set_from_text(h, "f", "bogus", "1", err, sizeof err), -EINVAL);
        cr_assert_eq(nvs_get_value(nvs, "t", "a", &v), 0);
        cr_assert_eq(v.type, NVS_TYPE_I16);
        cr_assert_eq(v.i, -300);
        cr_assert_eq(nvs_get_value(nvs, "t", "b", &v), 0);
        cr_assert_eq(v.u, 16);
        cr_assert_eq(nvs_get_value(nvs, "t", "d", &v), 0);
        cr_assert_eq(v.size, 2);
        cr_assert_eq(memcmp(v.data, "hi", 2), 0);
        nvs_value_done(&v);
        cr_assert_eq(nvs_get_value(nvs, "t", "e", &v), 0);
        cr_assert_str_eq((char *) v.data, "txt");
        nvs_value_done(&v);
        nvs_handle_close(h);
        nvs_close(nvs);
}

Test(nvs_flash, region_backend) {
        char path[] = "/tmp/test-nvs-flash-XXXXXX";
        int fd = mkstemp(path);
        Flash *f = NULL;
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        uint32_t v = 0;

        cr_assert_geq(fd, 0);
        close(fd);
        unlink(path);
        cr_assert_eq(flash_open(path, FLASH_OPEN_CREATE, 0x10000, &f), 0);
        FlashRegion region = { .flash = f, .offset = 0x9000, .size = 0x6000 };
        cr_assert_eq(nvs_open_region(&region, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "secure_esp", NVS_READWRITE, &h), 0);
        cr_assert_eq(nvs_set_u32(h, "interval", 5000), 0);
        nvs_handle_close(h);
        nvs = nvs_close(nvs);
        f = flash_close(f);

        cr_assert_eq(flash_open(path, 0, 0, &f), 0);
        region.flash = f;
        cr_assert_eq(nvs_open_region(&region, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "secure_esp", NVS_READONLY, &h), 0);
        cr_assert_eq(nvs_get_u32(h, "interval", &v), 0);
        cr_assert_eq(v, 5000);
        nvs_handle_close(h);
        nvs = nvs_close(nvs);
        cr_assert_eq(nvs_erase_region(&region), 0);
        cr_assert_eq(nvs_open_region(&region, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "secure_esp", NVS_READONLY, &h), -ESP_ERR_NVS_NOT_FOUND);
        nvs_close(nvs);
        flash_close(f);
        unlink(path);
}
