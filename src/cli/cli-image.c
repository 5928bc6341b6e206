/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>

#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "basic/parse-util.h"
#include "cli/cli.h"
#include "cli/cli-json.h"
#include "image/app-image.h"
#include "image/sbv2.h"

#define IMAGE_FILE_MAX (APP_IMAGE_MAX_LEN + 2 * SBV2_SECTOR_SIZE)

static void image_help(void) {
        printf("Usage: espfleet image COMMAND …\n\n"
               "ESP app images and Secure Boot V2 signatures.\n\n"
               "  build --version V [--secure-version N] [--project NAME] [--chip esp32c3|esp32s3]\n"
               "        [--size BYTES] [--behaviour ok|no-connect|boot-fail] [--no-secure-pad] -o FW.bin\n"
               "        Makes a valid unsigned app image (header, segments, esp_app_desc_t at 0x20,\n"
               "        checksum, SHA-256), padded for signing unless --no-secure-pad. --size is a\n"
               "        minimum (K/M suffixes allowed). --behaviour tells the emulated device what\n"
               "        to do when it runs the image.\n"
               "  sign --key KEY.pem FW.bin [-o OUT]\n"
               "        Appends a Secure Boot V2 signature sector (RSA-3072 -> version 2 block,\n"
               "        EC P-256 -> version 3 block); on a signed file, adds a block (max 3).\n"
               "        Without -o the file is replaced.\n"
               "  info FW.bin [--format text|json]\n"
               "        Header, app descriptor, hash validity and every signature block.\n"
               "  verify FW.bin (--key-digest HEX|FILE.bin)… | --key PEM\n"
               "        Checks hash and signature against trusted key digests (as in eFuse);\n"
               "        exits 1 with the reason on any mismatch.\n"
               "  keygen --type rsa3072|ecdsa256 -o KEY.pem [--force]\n"
               "        A new signing key (mode 0600); prints its key digest.\n");
}

static int read_input(const char *path, uint8_t **ret, size_t *ret_len) {
        int r = read_full_file(path, IMAGE_FILE_MAX, ret, ret_len);
        if (r == -EFBIG)
                return log_error_errno(r, "%s: larger than %u bytes, not an app image.", path, IMAGE_FILE_MAX);
        if (r < 0)
                return log_error_errno(r, "%s: cannot read: %m", path);
        return 0;
}

static void hexline(const uint8_t *d, size_t n, char *out) {
        hex_encode(d, n, out);
}

/* --- build --- */

static int image_build_main(int argc, char **argv) {
        static const struct option options[] = {
                { "version", required_argument, NULL, 'V' },
                { "secure-version", required_argument, NULL, 's' },
                { "project", required_argument, NULL, 'p' },
                { "chip", required_argument, NULL, 'c' },
                { "size", required_argument, NULL, 'S' },
                { "behaviour", required_argument, NULL, 'b' },
                { "behavior", required_argument, NULL, 'b' },
                { "no-secure-pad", no_argument, NULL, 'n' },
                { "output", required_argument, NULL, 'o' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        AppImageParams p = { .chip_id = ESP_CHIP_ID_ESP32C3, .secure_pad = true };
        _cleanup_free_ uint8_t *data = NULL;
        const char *out = NULL;
        char err[256] = "";
        size_t len;
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "o:h", options, NULL)) >= 0)
                switch (c) {
                case 'V':
                        p.version = optarg;
                        break;
                case 's':
                        if (safe_atou32(optarg, 10, &p.secure_version) < 0) {
                                log_error("--secure-version '%s' is not a number.", optarg);
                                return 2;
                        }
                        break;
                case 'p':
                        p.project_name = optarg;
                        break;
                case 'c':
                        r = esp_chip_id_from_string(optarg);
                        if (r != ESP_CHIP_ID_ESP32C3 && r != ESP_CHIP_ID_ESP32S3) {
                                log_error("--chip '%s': expected esp32c3 or esp32s3.", optarg);
                                return 2;
                        }
                        p.chip_id = (uint16_t) r;
                        break;
                case 'S':
                        if (parse_size(optarg, &p.size) < 0) {
                                log_error("--size '%s' is not a size in bytes (K/M suffixes allowed).", optarg);
                                return 2;
                        }
                        break;
                case 'b':
                        p.behaviour = app_behaviour_from_string(optarg);
                        if (p.behaviour < 0) {
                                log_error("--behaviour '%s': expected ok, no-connect or boot-fail.", optarg);
                                return 2;
                        }
                        break;
                case 'n':
                        p.secure_pad = false;
                        break;
                case 'o':
                        out = optarg;
                        break;
                case 'h':
                        image_help();
                        return 0;
                default:
                        return 2;
                }
        if (!p.version || !out || optind != argc) {
                log_error("image build needs --version V and -o FILE (and no other arguments). See 'espfleet image --help'.");
                return 2;
        }
        r = app_image_build(&p, &data, &len, err, sizeof err);
        if (r < 0) {
                log_error("image build: %s", *err ? err : esp_err_to_name(r));
                return r == -EINVAL || r == -ERANGE ? 2 : 1;
        }
        r = write_file_atomic(out, data, len, 0644);
        if (r < 0)
                return log_error_errno(r, "%s: cannot write: %m", out), 1;
        printf("%s: %s app image '%s' version %s (secure_version %u, behaviour %s), %zu bytes%s\n", out,
               esp_chip_id_to_string(p.chip_id), p.project_name ?: "espfleet-app", p.version, p.secure_version,
               app_behaviour_to_string(p.behaviour), len, p.secure_pad ? ", padded for Secure Boot V2" : "");
        return 0;
}

/* --- sign --- */

static int image_sign_main(int argc, char **argv) {
        static const struct option options[] = {
                { "key", required_argument, NULL, 'k' },
                { "output", required_argument, NULL, 'o' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_free_ uint8_t *data = NULL, *out_data = NULL;
        const char *key_path = NULL, *out = NULL, *in;
        Sbv2Block blocks[SBV2_MAX_BLOCKS];
        uint8_t kd[SBV2_KEY_DIGEST_LEN];
        char err[512] = "", hex[2 * SBV2_KEY_DIGEST_LEN + 1];
        AppImageInfo info;
        size_t len, out_len;
        struct stat st;
        int c, r, n;

        optind = 1;
        while ((c = getopt_long(argc, argv, "k:o:h", options, NULL)) >= 0)
                switch (c) {
                case 'k':
                        key_path = optarg;
                        break;
                case 'o':
                        out = optarg;
                        break;
                case 'h':
                        image_help();
                        return 0;
                default:
                        return 2;
                }
        if (!key_path || optind + 1 != argc) {
                log_error("image sign needs --key KEY.pem and one FW.bin. See 'espfleet image --help'.");
                return 2;
        }
        in = argv[optind];
        out = out ?: in;

        r = sbv2_load_key(key_path, true, &key, err, sizeof err);
        if (r < 0) {
                log_error("image sign: %s", err);
                return r == -EOPNOTSUPP ? 2 : 1;
        }
        if (read_input(in, &data, &len) < 0)
                return 1;
        /* An app image must be intact before we vouch for it, and its sector
         * must land where the bootloader looks: at image_len rounded up to 4 KiB. */
        if (len > 0 && data[0] == APP_IMAGE_MAGIC) {
                r = app_image_parse(data, len, &info, err, sizeof err);
                if (r < 0 && info.has_desc) {
                        log_error("%s: refusing to sign a broken app image: %s", in, err);
                        return 1;
                }
                if (r >= 0 && !sbv2_file_is_signed(data, len) && ALIGN_TO(len, SBV2_SECTOR_SIZE) != info.signed_len) {
                        log_error("%s: %zu bytes follow the %zu-byte app image; the signature would not sit at 0x%zx "
                                  "where the bootloader looks for it.", in, len - info.image_len, info.image_len,
                                  info.signed_len);
                        return 1;
                }
        }
        r = sbv2_sign_file(key, data, len, &out_data, &out_len, err, sizeof err);
        if (r < 0) {
                log_error("%s: %s", in, err);
                return 1;
        }
        if (stat(in, &st) < 0)
                st.st_mode = 0644;
        r = write_file_atomic(out, out_data, out_len, st.st_mode & 0777);
        if (r < 0)
                return log_error_errno(r, "%s: cannot write: %m", out), 1;

        n = sbv2_parse_sector(out_data + out_len - SBV2_SECTOR_SIZE, SBV2_SECTOR_SIZE, blocks, NULL, 0);
        (void) sbv2_key_digest(key, kd);
        hexline(kd, sizeof kd, hex);
        printf("%s: added signature block %d (%s, key digest %s); %d block%s in the sector, %zu bytes\n", out, n - 1,
               sbv2_key_type_to_string(sbv2_key_type(key, NULL, 0)), hex, n, n == 1 ? "" : "s", out_len);
        return 0;
}

/* --- info --- */

static void print_blocks(const uint8_t *sector, const uint8_t digest[SBV2_DIGEST_LEN]) {
        for (unsigned i = 0; i < SBV2_MAX_BLOCKS; i++) {
                const uint8_t *raw = sector + i * SBV2_BLOCK_SIZE;
                char err[256] = "", hex[2 * SBV2_KEY_DIGEST_LEN + 1];
                Sbv2Block b;

                if (raw[0] != SBV2_MAGIC) {
                        if (i == 0)
                                printf("  (no signature block)\n");
                        break;
                }
                if (sbv2_parse_block(raw, SBV2_BLOCK_SIZE, &b, err, sizeof err) < 0) {
                        printf("  block %u: invalid: %s\n", i, err);
                        continue;
                }
                hexline(b.key_digest, sizeof b.key_digest, hex);
                printf("  block %u: version %u (%s), CRC 0x%08x ok\n", i, b.version, sbv2_key_type_to_string(b.type),
                       b.crc);
                printf("    key digest: %s\n", hex);
                if (sbv2_block_verify(&b, digest, err, sizeof err) < 0)
                        printf("    signature:  INVALID: %s\n", err);
                else
                        printf("    signature:  verifies with its key\n");
        }
}

static json_object *json_hex(const uint8_t *d, size_t n) {
        char hex[2 * 64 + 1];

        assert(n <= 64);
        hexline(d, n, hex);
        return json_object_new_string(hex);
}

static json_object *json_chip_rev(uint16_t full) {
        char v[16];

        snprintf(v, sizeof v, "%u.%u", full / 100, full % 100);
        return json_object_new_string(v);
}

/* The signature blocks of a sector, as print_blocks() shows them. */
static int json_blocks(json_object *sig, const uint8_t *sector, const uint8_t digest[SBV2_DIGEST_LEN]) {
        _cleanup_(json_object_putp) json_object *blocks = json_object_new_array();

        if (!blocks)
                return -ENOMEM;
        for (unsigned i = 0; i < SBV2_MAX_BLOCKS; i++) {
                _cleanup_(json_object_putp) json_object *o = NULL;
                const uint8_t *raw = sector + i * SBV2_BLOCK_SIZE;
                char err[256] = "";
                Sbv2Block b;

                if (raw[0] != SBV2_MAGIC)
                        break;
                o = json_object_new_object();
                if (!o || cli_json_add(o, "index", json_object_new_uint64(i)) < 0)
                        return -ENOMEM;
                if (sbv2_parse_block(raw, SBV2_BLOCK_SIZE, &b, err, sizeof err) < 0) {
                        if (cli_json_add(o, "valid", json_object_new_boolean(false)) < 0 ||
                            cli_json_add(o, "error", json_object_new_string(err)) < 0)
                                return -ENOMEM;
                } else {
                        bool ok = sbv2_block_verify(&b, digest, err, sizeof err) >= 0;

                        if (cli_json_add(o, "version", json_object_new_uint64(b.version)) < 0 ||
                            cli_json_add(o, "key_type", json_object_new_string(sbv2_key_type_to_string(b.type))) < 0 ||
                            cli_json_add(o, "crc", json_object_new_uint64(b.crc)) < 0 ||
                            cli_json_add(o, "key_digest", json_hex(b.key_digest, sizeof b.key_digest)) < 0 ||
                            cli_json_add(o, "valid", json_object_new_boolean(ok)) < 0 ||
                            (ok ? cli_json_add_null(o, "error") : cli_json_add(o, "error", json_object_new_string(err))) < 0)
                                return -ENOMEM;
                }
                if (cli_json_append(blocks, TAKE_PTR(o)) < 0)
                        return -ENOMEM;
        }
        return cli_json_add(sig, "blocks", TAKE_PTR(blocks));
}

/* The same facts as the text, keyed; `error` is the parse error (or NULL). */
static int info_json(const char *path, const uint8_t *data, size_t len, const AppImageInfo *info, const char *error) {
        _cleanup_(json_object_putp) json_object *root = json_object_new_object(), *sig = NULL;
        bool is_app = len >= APP_IMAGE_HEADER_LEN && data[0] == APP_IMAGE_MAGIC;

        if (!root ||
            cli_json_add(root, "file", cli_json_new_text(path)) < 0 ||
            cli_json_add(root, "size", json_object_new_uint64(len)) < 0 ||
            cli_json_add(root, "valid", json_object_new_boolean(!error)) < 0 ||
            (error ? cli_json_add(root, "error", cli_json_new_text(error)) : cli_json_add_null(root, "error")) < 0)
                return -ENOMEM;

        if (is_app) {
                _cleanup_(json_object_putp) json_object *h = json_object_new_object(), *segs = json_object_new_array();
                const char *chip = esp_chip_id_to_string(info->header.chip_id);

                if (!h || !segs ||
                    cli_json_add(h, "chip_id", json_object_new_uint64(info->header.chip_id)) < 0 ||
                    (chip ? cli_json_add(h, "chip", json_object_new_string(chip)) : cli_json_add_null(h, "chip")) < 0 ||
                    cli_json_add(h, "segment_count", json_object_new_uint64(info->header.segment_count)) < 0 ||
                    cli_json_add(h, "entry_addr", json_object_new_uint64(info->header.entry_addr)) < 0 ||
                    cli_json_add(h, "spi_mode", json_object_new_uint64(info->header.spi_mode)) < 0 ||
                    cli_json_add(h, "spi_speed_size", json_object_new_uint64(info->header.spi_speed_size)) < 0 ||
                    cli_json_add(h, "min_chip_rev", json_chip_rev(info->header.min_chip_rev_full)) < 0 ||
                    cli_json_add(h, "max_chip_rev", json_chip_rev(info->header.max_chip_rev_full)) < 0 ||
                    cli_json_add(h, "hash_appended", json_object_new_boolean(info->header.hash_appended)) < 0)
                        return -ENOMEM;
                for (unsigned i = 0; i < info->n_segments; i++) {
                        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

                        if (!o ||
                            cli_json_add(o, "load_addr", json_object_new_uint64(info->segments[i].load_addr)) < 0 ||
                            cli_json_add(o, "offset", json_object_new_uint64(info->segments[i].offset)) < 0 ||
                            cli_json_add(o, "length", json_object_new_uint64(info->segments[i].length)) < 0 ||
                            cli_json_append(segs, TAKE_PTR(o)) < 0)
                                return -ENOMEM;
                }
                if (cli_json_add(h, "segments", TAKE_PTR(segs)) < 0 || cli_json_add(root, "header", TAKE_PTR(h)) < 0)
                        return -ENOMEM;
        } else if (cli_json_add_null(root, "header") < 0)
                return -ENOMEM;

        if (info->has_desc) {
                _cleanup_(json_object_putp) json_object *d = json_object_new_object();

                if (!d ||
                    cli_json_add(d, "version", cli_json_new_text(info->desc.version)) < 0 ||
                    cli_json_add(d, "secure_version", json_object_new_uint64(info->desc.secure_version)) < 0 ||
                    cli_json_add(d, "project_name", cli_json_new_text(info->desc.project_name)) < 0 ||
                    cli_json_add(d, "date", cli_json_new_text(info->desc.date)) < 0 ||
                    cli_json_add(d, "time", cli_json_new_text(info->desc.time)) < 0 ||
                    cli_json_add(d, "idf_ver", cli_json_new_text(info->desc.idf_ver)) < 0 ||
                    cli_json_add(d, "app_elf_sha256", json_hex(info->desc.app_elf_sha256, 32)) < 0 ||
                    cli_json_add(d, "behaviour", json_object_new_string(app_behaviour_to_string(info->behaviour))) < 0 ||
                    cli_json_add(d, "espfleet_marker", json_object_new_boolean(info->has_marker)) < 0 ||
                    cli_json_add(root, "app_desc", TAKE_PTR(d)) < 0)
                        return -ENOMEM;
        } else if (cli_json_add_null(root, "app_desc") < 0)
                return -ENOMEM;

        if (!error) {
                _cleanup_(json_object_putp) json_object *im = json_object_new_object();

                if (!im ||
                    cli_json_add(im, "length", json_object_new_uint64(info->image_len)) < 0 ||
                    cli_json_add(im, "checksum", json_object_new_uint64(info->checksum)) < 0 ||
                    cli_json_add(im, "sha256", json_hex(info->image_hash, 32)) < 0 ||
                    cli_json_add(root, "image", TAKE_PTR(im)) < 0)
                        return -ENOMEM;
        } else if (cli_json_add_null(root, "image") < 0)
                return -ENOMEM;

        /* the signature sector: that of a valid image, or of a signed blob that is no app */
        if (!error && info->has_signature_sector) {
                sig = json_object_new_object();
                if (!sig ||
                    cli_json_add(sig, "offset", json_object_new_uint64(info->signed_len)) < 0 ||
                    cli_json_add(sig, "signed_digest", json_hex(info->signed_digest, 32)) < 0 ||
                    json_blocks(sig, data + info->signed_len, info->signed_digest) < 0)
                        return -ENOMEM;
        } else if (error && !info->has_desc && sbv2_file_is_signed(data, len)) {
                uint8_t digest[32];

                if (EVP_Digest(data, len - SBV2_SECTOR_SIZE, digest, NULL, EVP_sha256(), NULL) == 1) {
                        sig = json_object_new_object();
                        if (!sig ||
                            cli_json_add(sig, "offset", json_object_new_uint64(len - SBV2_SECTOR_SIZE)) < 0 ||
                            cli_json_add(sig, "signed_digest", json_hex(digest, 32)) < 0 ||
                            json_blocks(sig, data + len - SBV2_SECTOR_SIZE, digest) < 0)
                                return -ENOMEM;
                }
        }
        if (sig ? cli_json_add(root, "signature", TAKE_PTR(sig)) < 0 : cli_json_add_null(root, "signature") < 0)
                return -ENOMEM;
        if (!error && !info->has_signature_sector &&
            cli_json_add(root, "trailing_bytes", json_object_new_uint64(info->total_len - info->image_len)) < 0)
                return -ENOMEM;
        return cli_json_print(root);
}

static int image_info_main(int argc, char **argv) {
        static const struct option options[] = {
                { "format", required_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_free_ uint8_t *data = NULL;
        char err[512] = "", hex[65];
        const char *path, *chip;
        AppImageInfo info;
        bool json = false;
        size_t len;
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "f:h", options, NULL)) >= 0)
                switch (c) {
                case 'f':
                        if (streq(optarg, "json"))
                                json = true;
                        else if (!streq(optarg, "text")) {
                                log_error("--format '%s' is not one of text, json.", optarg);
                                return 2;
                        }
                        break;
                case 'h':
                        image_help();
                        return 0;
                default:
                        return 2;
                }
        if (argc - optind != 1) {
                log_error("image info takes one FW.bin. See 'espfleet image --help'.");
                return 2;
        }
        path = argv[optind];
        if (read_input(path, &data, &len) < 0)
                return 1;

        r = app_image_parse(data, len, &info, err, sizeof err);
        if (json) {
                int k = info_json(path, data, len, &info, r < 0 ? err : NULL);
                if (k == -ENOMEM)
                        log_oom();
                return k < 0 || r < 0 ? 1 : 0;
        }
        printf("%s: %zu bytes\n", path, len);
        if (len >= APP_IMAGE_HEADER_LEN && data[0] == APP_IMAGE_MAGIC) {
                chip = esp_chip_id_to_string(info.header.chip_id);
                printf("Header:\n"
                       "  chip id:        %u (%s)\n"
                       "  segments:       %u\n"
                       "  entry:          0x%08x\n"
                       "  SPI mode/flash: %u / 0x%02x\n"
                       "  chip rev:       min %u.%u, max %u.%u\n"
                       "  hash appended:  %s\n",
                       info.header.chip_id, strna(chip), info.header.segment_count, info.header.entry_addr,
                       info.header.spi_mode, info.header.spi_speed_size, info.header.min_chip_rev_full / 100,
                       info.header.min_chip_rev_full % 100, info.header.max_chip_rev_full / 100,
                       info.header.max_chip_rev_full % 100, info.header.hash_appended ? "yes" : "no");
                for (unsigned i = 0; i < info.n_segments; i++)
                        printf("  segment %2u:     load 0x%08x, offset 0x%06x, %u bytes\n", i,
                               info.segments[i].load_addr, info.segments[i].offset, info.segments[i].length);
        }
        if (info.has_desc) {
                hexline(info.desc.app_elf_sha256, 32, hex);
                printf("App descriptor:\n"
                       "  version:        %s\n"
                       "  secure_version: %u\n"
                       "  project:        %s\n"
                       "  built:          %s %s\n"
                       "  IDF:            %s\n"
                       "  ELF SHA-256:    %s\n"
                       "  behaviour:      %s%s\n",
                       info.desc.version, info.desc.secure_version, info.desc.project_name, info.desc.date,
                       info.desc.time, info.desc.idf_ver, hex, app_behaviour_to_string(info.behaviour),
                       info.has_marker ? "" : " (no espfleet marker)");
        }
        if (r < 0) {
                printf("Image:            INVALID: %s\n", err);
                /* Not an app image: maybe a signed bootloader or other blob. */
                if (!info.has_desc && sbv2_file_is_signed(data, len)) {
                        uint8_t digest[32];
                        if (EVP_Digest(data, len - SBV2_SECTOR_SIZE, digest, NULL, EVP_sha256(), NULL) == 1) {
                                printf("Signature sector at 0x%zx:\n", len - SBV2_SECTOR_SIZE);
                                print_blocks(data + len - SBV2_SECTOR_SIZE, digest);
                        }
                }
                return 1;
        }
        hexline(info.image_hash, 32, hex);
        printf("Image:\n"
               "  length:         %zu bytes (through the appended hash)\n"
               "  checksum:       0x%02x valid\n"
               "  SHA-256:        %s valid\n",
               info.image_len, info.checksum, hex);
        if (info.has_signature_sector) {
                hexline(info.signed_digest, 32, hex);
                printf("Signature sector at 0x%zx (signed digest %s):\n", info.signed_len, hex);
                print_blocks(data + info.signed_len, info.signed_digest);
        } else if (info.total_len > info.image_len)
                printf("Signature:        no Secure Boot V2 sector (%zu bytes follow the image)\n",
                       info.total_len - info.image_len);
        else
                printf("Signature:        none (unsigned)\n");
        return 0;
}

/* --- verify --- */

static int parse_key_digest(const char *arg, uint8_t out[SBV2_KEY_DIGEST_LEN]) {
        _cleanup_free_ uint8_t *d = NULL;
        size_t len;
        int r;

        if (strlen(arg) == 2 * SBV2_KEY_DIGEST_LEN && hex_decode_fixed(arg, out, SBV2_KEY_DIGEST_LEN) >= 0)
                return 0;
        r = read_full_file(arg, 4096, &d, &len);
        if (r < 0) {
                log_error("--key-digest '%s' is neither 64 hex digits nor a readable file: %s", arg, strerror(-r));
                return -EINVAL;
        }
        if (len != SBV2_KEY_DIGEST_LEN) {
                log_error("--key-digest %s: %zu bytes, a key digest file holds exactly 32.", arg, len);
                return -EINVAL;
        }
        memcpy(out, d, SBV2_KEY_DIGEST_LEN);
        return 0;
}

static int image_verify_main(int argc, char **argv) {
        static const struct option options[] = {
                { "key-digest", required_argument, NULL, 'd' },
                { "key", required_argument, NULL, 'k' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        uint8_t trusted[SBV2_MAX_BLOCKS][SBV2_KEY_DIGEST_LEN];
        _cleanup_free_ uint8_t *data = NULL;
        char err[512] = "", hex[65];
        const char *path;
        AppImageInfo info;
        size_t n_trusted = 0, len;
        unsigned idx = 0;
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'd':
                        if (n_trusted >= ELEMENTSOF(trusted)) {
                                log_error("At most %zu trusted key digests (eFuse has 3 slots).", ELEMENTSOF(trusted));
                                return 2;
                        }
                        if (parse_key_digest(optarg, trusted[n_trusted]) < 0)
                                return 2;
                        n_trusted++;
                        break;
                case 'k': {
                        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
                        if (n_trusted >= ELEMENTSOF(trusted)) {
                                log_error("At most %zu trusted keys.", ELEMENTSOF(trusted));
                                return 2;
                        }
                        r = sbv2_load_key(optarg, false, &k, err, sizeof err);
                        if (r < 0) {
                                log_error("image verify: %s", err);
                                return 2;
                        }
                        if (sbv2_key_digest(k, trusted[n_trusted]) < 0) {
                                log_error("--key %s: cannot compute its key digest.", optarg);
                                return 1;
                        }
                        n_trusted++;
                        break;
                }
                case 'h':
                        image_help();
                        return 0;
                default:
                        return 2;
                }
        if (n_trusted == 0 || optind + 1 != argc) {
                log_error("image verify needs one FW.bin and --key-digest or --key. See 'espfleet image --help'.");
                return 2;
        }
        path = argv[optind];
        if (read_input(path, &data, &len) < 0)
                return 1;

        r = app_image_parse(data, len, &info, err, sizeof err);
        if (r < 0 && info.has_desc) {
                log_error("%s: %s", path, err);
                return 1;
        }
        if (r >= 0) {
                if (!info.has_signature_sector) {
                        log_error("%s: image is not signed (no signature sector at offset 0x%zx).", path, info.signed_len);
                        return 1;
                }
                r = sbv2_verify_sector(data + info.signed_len, SBV2_SECTOR_SIZE, info.signed_digest,
                                       (const uint8_t (*)[SBV2_KEY_DIGEST_LEN]) trusted, n_trusted, &idx, err, sizeof err);
        } else {
                /* Not an app image (a bootloader, a data blob): espsecure's view. */
                log_debug("%s is not an app image (%s); verifying it as a signed file", path, err);
                r = sbv2_verify_file(data, len, (const uint8_t (*)[SBV2_KEY_DIGEST_LEN]) trusted, n_trusted, &idx,
                                     err, sizeof err);
        }
        if (r < 0) {
                log_error("%s: signature verification failed: %s", path, err);
                return 1;
        }
        {
                Sbv2Block blocks[SBV2_MAX_BLOCKS];
                const uint8_t *sector = info.has_desc ? data + info.signed_len : data + len - SBV2_SECTOR_SIZE;
                if (sbv2_parse_sector(sector, SBV2_SECTOR_SIZE, blocks, NULL, 0) > (int) idx) {
                        hexline(blocks[idx].key_digest, 32, hex);
                        printf("%s: OK: signature block %u (%s, key digest %s) verifies\n", path, idx,
                               sbv2_key_type_to_string(blocks[idx].type), hex);
                } else
                        printf("%s: OK\n", path);
        }
        return 0;
}

/* --- keygen --- */

static int image_keygen_main(int argc, char **argv) {
        static const struct option options[] = {
                { "type", required_argument, NULL, 't' },
                { "output", required_argument, NULL, 'o' },
                { "force", no_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        Sbv2KeyType type = SBV2_KEY_RSA3072;
        uint8_t kd[SBV2_KEY_DIGEST_LEN];
        const char *out = NULL;
        bool force = false;
        char hex[65];
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "o:h", options, NULL)) >= 0)
                switch (c) {
                case 't':
                        type = sbv2_key_type_from_string(optarg);
                        if (type < 0) {
                                log_error("--type '%s': expected rsa3072 or ecdsa256.", optarg);
                                return 2;
                        }
                        break;
                case 'o':
                        out = optarg;
                        break;
                case 'f':
                        force = true;
                        break;
                case 'h':
                        image_help();
                        return 0;
                default:
                        return 2;
                }
        if (!out || optind != argc) {
                log_error("image keygen needs -o KEY.pem. See 'espfleet image --help'.");
                return 2;
        }
        if (!force && access(out, F_OK) == 0) {
                log_error("%s exists; refusing to replace a signing key (use --force).", out);
                return 1;
        }
        r = sbv2_generate_key(type, &key);
        if (r < 0)
                return log_error_errno(r, "Key generation failed: %s", esp_err_to_name(r)), 1;
        r = sbv2_save_private_key(key, out);
        if (r < 0)
                return log_error_errno(r, "%s: cannot write: %m", out), 1;
        r = sbv2_key_digest(key, kd);
        if (r < 0)
                return log_error_errno(r, "Cannot compute the key digest: %s", esp_err_to_name(r)), 1;
        hexline(kd, sizeof kd, hex);
        printf("%s: %s signing key (mode 0600)\nkey digest (SECURE_BOOT_DIGESTn): %s\n", out,
               sbv2_key_type_to_string(type), hex);
        return 0;
}

int verb_image(int argc, char **argv) {
        static const struct {
                const char *name;
                int (*run)(int argc, char **argv);
        } commands[] = {
                { "build", image_build_main },
                { "sign", image_sign_main },
                { "info", image_info_main },
                { "verify", image_verify_main },
                { "keygen", image_keygen_main },
        };

        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
                image_help();
                return argc < 2 ? 2 : 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(commands[i].name, argv[1]))
                        return commands[i].run(argc - 1, argv + 1);
        log_error("Unknown 'image' command '%s'. See 'espfleet image --help'.", argv[1]);
        return 2;
}
