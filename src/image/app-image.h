/* SPDX-License-Identifier: MIT */
#pragma once

/* ESP application images (esp-formats.md §5): build one in memory, parse one
 * (whole buffer or streamed in chunks of any size), and compare app versions.
 *
 * Layout of an image made here:
 *   24-byte header, then segments {load addr, length, data}:
 *     DROM  (load 0x3C000020): esp_app_desc_t at image offset 0x20, then the
 *            espfleet behaviour marker at 0x20 + 256, then some rodata;
 *     DRAM, IRAM (entry point), optional IROM filler to reach a target size,
 *     optional Secure Boot V2 padding segment (load address 0, zeros);
 *   zero padding so the checksum byte ends a 16-byte block, the checksum,
 *   the SHA-256 of everything before it (hash_appended = 1).
 * A signed image then has 0xFF up to the next 4 KiB boundary and one 4 KiB
 * signature sector (sbv2.h). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <errno.h>

#include "basic/macro.h"

#define APP_IMAGE_MAGIC 0xE9
#define APP_IMAGE_HEADER_LEN 24
#define APP_IMAGE_SEGMENT_HEADER_LEN 8
#define APP_IMAGE_MAX_SEGMENTS 16
#define APP_IMAGE_CHECKSUM_SEED 0xEF
#define APP_IMAGE_HASH_LEN 32
#define APP_IMAGE_MAX_LEN (16u * 1024u * 1024u)      /* largest app partition */
#define APP_IMAGE_SECTOR_SIZE 4096u                  /* SBv2 signature sector alignment */
#define APP_IMAGE_MMU_PAGE_SIZE 65536u               /* --secure-pad-v2 alignment */

#define APP_DESC_MAGIC 0xABCD5432u
#define APP_DESC_OFFSET 0x20
#define APP_DESC_LEN 256
#define APP_DESC_VERSION_MAX 31                     /* chars, NUL excluded */
#define APP_DESC_PROJECT_MAX 31

/* The espfleet behaviour marker, right after the app descriptor. */
#define APP_MARKER_OFFSET (APP_DESC_OFFSET + APP_DESC_LEN)
#define APP_MARKER_LEN 16

/* The ESP-IDF release the emulated firmware claims: the app descriptor's
 * idf_ver, and the banner of the emulated 2nd stage bootloader. */
#define APP_IDF_VERSION "v5.2.1"

/* esp_https_ota's IMAGE_HEADER_SIZE: all of the above fits in it (§8). */
#define APP_IMAGE_PEEK_LEN 1024

/* esp_chip_id_t values found in the image header (§5.1). */
#define ESP_CHIP_ID_ESP32 0
#define ESP_CHIP_ID_ESP32S2 2
#define ESP_CHIP_ID_ESP32C3 5
#define ESP_CHIP_ID_ESP32S3 9
#define ESP_CHIP_ID_ESP32C2 12
#define ESP_CHIP_ID_ESP32C6 13
#define ESP_CHIP_ID_ESP32H2 16

/* "esp32c3" -> 5, … ; -EINVAL for an unknown name. */
int esp_chip_id_from_string(const char *s);
/* 5 -> "esp32c3"; NULL for an id we do not know. */
const char *esp_chip_id_to_string(uint16_t id);

/* What the emulated device does when it runs the image (issue 5). */
typedef enum AppBehaviour {
        APP_BEHAVIOUR_OK,          /* boots and connects */
        APP_BEHAVIOUR_NO_CONNECT,  /* boots but never reaches the broker */
        APP_BEHAVIOUR_BOOT_FAIL,   /* fails to boot */
        _APP_BEHAVIOUR_MAX,
        _APP_BEHAVIOUR_INVALID = -EINVAL,
} AppBehaviour;

const char *app_behaviour_to_string(AppBehaviour b);   /* "ok", "no-connect", "boot-fail" */
AppBehaviour app_behaviour_from_string(const char *s);

/* esp_image_header_t (§5.1), decoded. */
typedef struct AppImageHeader {
        uint8_t segment_count;
        uint8_t spi_mode;
        uint8_t spi_speed_size;         /* low nibble speed, high nibble size */
        uint32_t entry_addr;
        uint8_t wp_pin;
        uint16_t chip_id;
        uint8_t min_chip_rev;           /* legacy */
        uint16_t min_chip_rev_full;
        uint16_t max_chip_rev_full;
        bool hash_appended;
} AppImageHeader;

/* esp_app_desc_t (§5.3), decoded; strings NUL-terminated. */
typedef struct AppDesc {
        uint32_t secure_version;
        char version[33];
        char project_name[33];
        char time[17];
        char date[17];
        char idf_ver[33];
        uint8_t app_elf_sha256[32];
        uint16_t min_efuse_blk_rev_full;
        uint16_t max_efuse_blk_rev_full;
        uint8_t mmu_page_size;          /* log2 */
        uint8_t spi_flash_mode;
} AppDesc;

typedef struct AppImageSegment {
        uint32_t load_addr;
        uint32_t offset;                /* image offset of the data (after the 8-byte header) */
        uint32_t length;
} AppImageSegment;

/* Result of a parse. Offsets are image offsets. */
typedef struct AppImageInfo {
        AppImageHeader header;
        AppDesc desc;
        bool has_desc;                  /* the descriptor was decoded (even if a later check failed) */
        AppBehaviour behaviour;         /* APP_BEHAVIOUR_OK when the image has no marker */
        bool has_marker;
        AppImageSegment segments[APP_IMAGE_MAX_SEGMENTS];
        unsigned n_segments;

        uint8_t checksum;               /* as stored (it was validated) */
        size_t image_len;               /* header through the appended hash: what the bootloader loads */
        uint8_t image_hash[32];         /* the appended SHA-256 (validated); computed one if not appended */

        /* Secure Boot V2 (§6.1): the signature sector starts at signed_len =
         * image_len rounded up to 4 KiB, and the signed digest is the SHA-256
         * of bytes [0, signed_len). */
        size_t signed_len;
        bool has_signed_digest;         /* the input reached signed_len */
        uint8_t signed_digest[32];
        bool has_signature_sector;      /* the input holds 4 KiB at signed_len */
        size_t total_len;               /* bytes seen */
} AppImageInfo;

/* Parameters of app_image_build(). Zero-initialise, then set what you need. */
typedef struct AppImageParams {
        uint16_t chip_id;               /* ESP_CHIP_ID_ESP32C3 or ESP_CHIP_ID_ESP32S3 */
        const char *version;            /* required, 1..31 printable chars */
        uint32_t secure_version;
        const char *project_name;       /* NULL: "espfleet-app"; ≤ 31 chars */
        uint64_t size;                  /* 0: as small as possible; else the image is at least this
                                         * long (a filler data segment is added; rounded up to 16,
                                         * or to 64 KiB with secure_pad). Max APP_IMAGE_MAX_LEN. */
        AppBehaviour behaviour;
        bool secure_pad;                /* pad so that image + hash ends on a 64 KiB boundary
                                         * (elf2image --secure-pad-v2), ready to be signed */
} AppImageParams;

/* Builds a valid image (unsigned). Deterministic: the same parameters give
 * the same bytes. Returns 0, or -EINVAL/-ERANGE with a message in err. */
int app_image_build(const AppImageParams *p, uint8_t **ret_data, size_t *ret_len, char *err, size_t errlen);

/* Parses and validates a whole image held in memory (header, segments, app
 * descriptor, marker, checksum, appended hash; computes the SBv2 digest when
 * the buffer reaches signed_len). Bytes after image_len are allowed (padding,
 * signature sector, erased flash). Errors: -ESP_ERR_IMAGE_INVALID with a
 * message naming the problem (bad magic, truncated, checksum, hash, …); *ret
 * is filled with what was decoded before the error (ret->has_desc etc.). */
int app_image_parse(const uint8_t *data, size_t len, AppImageInfo *ret, char *err, size_t errlen);

/* The behaviour an image asks for, from its first bytes (≥ APP_MARKER_OFFSET
 * + APP_MARKER_LEN, e.g. the first 1024 bytes read from flash). No marker or
 * too short: APP_BEHAVIOUR_OK. Does not validate the image. */
AppBehaviour app_image_behaviour(const uint8_t *data, size_t len);

/* Streaming verifier (OTA): feed the image in chunks of any size; it keeps
 * only the first 1 KiB, two SHA-256 contexts and the 4 KiB signature sector.
 *
 *   app_image_verifier_new(max_len, &v);
 *   while (chunk) {
 *           r = app_image_verifier_feed(v, chunk, n, err, sizeof err);   <0: invalid, stop
 *           if (app_image_verifier_have_desc(v)) … check chip id / version first …
 *   }
 *   r = app_image_verifier_finish(v, &info, err, sizeof err);
 *   sector = app_image_verifier_signature_sector(v);   then sbv2_verify_sector(…, info.signed_digest, …)
 */
typedef struct AppImageVerifier AppImageVerifier;

/* max_len: refuse images whose image_len exceeds it (a partition size); 0 =
 * APP_IMAGE_MAX_LEN. */
int app_image_verifier_new(size_t max_len, AppImageVerifier **ret);
AppImageVerifier *app_image_verifier_free(AppImageVerifier *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(AppImageVerifier *, app_image_verifier_free);

/* Feeds bytes. Returns 0, or -ESP_ERR_IMAGE_INVALID (with a message) as soon
 * as the header or a segment header is bad; after an error every call fails
 * the same way. Bytes after the signature sector are counted and ignored. */
int app_image_verifier_feed(AppImageVerifier *v, const void *data, size_t len, char *err, size_t errlen);

/* True once the header, the first segment header, the app descriptor and the
 * marker have been fed (at the latest after APP_IMAGE_PEEK_LEN bytes). */
bool app_image_verifier_have_desc(const AppImageVerifier *v);
const AppImageHeader *app_image_verifier_header(const AppImageVerifier *v);   /* NULL before have_desc */
const AppDesc *app_image_verifier_desc(const AppImageVerifier *v);            /* NULL before have_desc */
AppBehaviour app_image_verifier_behaviour(const AppImageVerifier *v);
/* image_len (end of the appended hash) once all segment headers were seen, else 0. */
size_t app_image_verifier_image_len(const AppImageVerifier *v);
size_t app_image_verifier_bytes_fed(const AppImageVerifier *v);

/* Ends the stream: the image must be complete; validates the checksum and
 * the appended hash, and fills *ret like app_image_parse() would for the same
 * bytes. -ESP_ERR_IMAGE_INVALID with a message otherwise. */
int app_image_verifier_finish(AppImageVerifier *v, AppImageInfo *ret, char *err, size_t errlen);

/* The 4 KiB at signed_len, once fully fed (after finish: has_signature_sector); else NULL. */
const uint8_t *app_image_verifier_signature_sector(const AppImageVerifier *v);

/* Compares version strings as versions: a leading 'v'/'V' is ignored,
 * numeric dot-separated components compare numerically (missing ones are 0:
 * "1.2" = "1.2.0"), and a suffix after them ("-rc1", "-beta3-21-g…") is a
 * pre-release that sorts below the plain version; two suffixes compare by
 * dot-separated identifiers (numbers numerically, below words). "+build"
 * metadata is ignored. Returns <0, 0, >0. NULL sorts first. */
int app_version_compare(const char *a, const char *b);
