/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "cli/cli.h"
#include "fleet/provision.h"

static void provision_help(void) {
        printf("Usage: espfleet provision FLEETDIR --pki PKIDIR --count N [OPTIONS]\n\n"
               "Makes sure devices FIRST..FIRST+N-1 exist in FLEETDIR (existing ones are kept).\n"
               "Per device: a locally administered MAC and id esp-XXXXXX, an eFuse file with a\n"
               "read-protected DS HMAC key, an RSA key that exists only as DS ciphertext, a\n"
               "certificate from the fleet CA, and a 4 MiB flash image with partition table,\n"
               "esp_secure_cert, NVS settings, otadata and a signed initial firmware in ota_0.\n"
               "Finished devices are listed in FLEETDIR/manifest.csv as they complete; after an\n"
               "interrupt (Ctrl-C, kill, crash) the same command finishes exactly the missing ones.\n"
               "On a terminal, a progress bar (done/total, rate, ETA) is drawn on stderr.\n\n"
               "Options:\n"
               "  --pki DIR                  PKI made by 'espfleet pki init' (required)\n"
               "  --count N                  number of devices (required)\n"
               "  --first-index K            index of the first device (default 0)\n"
               "  --shard I/N                make only the I-th of N equal slices of a fleet of --count\n"
               "                             devices (indexes COUNT*I/N .. COUNT*(I+1)/N-1); needs --seed\n"
               "  --seed S                   derive MACs and ids from S and the index: the same arguments\n"
               "                             give the same devices on any host (keys stay random)\n"
               "  --chip esp32c3|esp32s3     chip of a new fleet (default esp32c3)\n"
               "  --key-block 0..5           eFuse BLOCK_KEY for the DS HMAC key (default 1)\n"
               "  --development              leave the HMAC key readable (configure_ds development mode)\n"
               "  --nvs-encryption           encrypt NVS, HMAC scheme with an HMAC_UP eFuse key\n"
               "  --signed-apps-no-secure-boot  trust the running app's signing key instead of eFuse digests\n"
               "  --partition-table CSV      ESP-IDF partition CSV (default: the built-in table)\n"
               "  --firmware-version V       version of the initial firmware (default 1.0.0)\n"
               "  --rsa-bits N               device key size (default 2048)\n"
               "  --key-pool K               make only K RSA keys, in memory, and share them: device\n"
               "                             INDEX uses key INDEX mod K. MAC, id, certificate, HMAC key\n"
               "                             and DS ciphertext stay per device, but the devices of a pool\n"
               "                             share RSA keys: fine for load tests, not for security\n"
               "                             tests. A later run (a resume too) makes a new pool.\n"
               "  --jobs J                   worker processes (default: number of CPUs)\n"
               "  --private-key KEY.pem      replay: use this RSA key (like configure_ds.py --private-key; --count 1)\n"
               "  --secure-cert PART.bin     replay: esp_secure_cert partition from configure_esp_secure_cert.py\n"
               "  --hmac-key KEY.bin         replay: its 32-byte HMAC key (with --secure-cert)\n"
               "  --quiet                    print only errors (no progress bar)\n");
}

static int parse_uint(const char *opt, const char *s, uint32_t max, unsigned *ret) {
        uint32_t v;
        if (safe_atou32(s, 10, &v) < 0 || v > max) {
                log_error("%s '%s' is not a number from 0 to %u.", opt, s, max);
                return -EINVAL;
        }
        *ret = v;
        return 0;
}

int verb_provision(int argc, char **argv) {
        enum {
                ARG_PKI = 0x100,
                ARG_COUNT,
                ARG_FIRST,
                ARG_SHARD,
                ARG_SEED,
                ARG_CHIP,
                ARG_KEY_BLOCK,
                ARG_DEVELOPMENT,
                ARG_NVS_ENC,
                ARG_NO_SB,
                ARG_PARTITIONS,
                ARG_FW_VERSION,
                ARG_RSA_BITS,
                ARG_KEY_POOL,
                ARG_JOBS,
                ARG_PRIVATE_KEY,
                ARG_SECURE_CERT,
                ARG_HMAC_KEY,
                ARG_QUIET,
        };
        static const struct option options[] = {
                { "pki", required_argument, NULL, ARG_PKI },
                { "count", required_argument, NULL, ARG_COUNT },
                { "first-index", required_argument, NULL, ARG_FIRST },
                { "shard", required_argument, NULL, ARG_SHARD },
                { "seed", required_argument, NULL, ARG_SEED },
                { "chip", required_argument, NULL, ARG_CHIP },
                { "key-block", required_argument, NULL, ARG_KEY_BLOCK },
                { "development", no_argument, NULL, ARG_DEVELOPMENT },
                { "nvs-encryption", no_argument, NULL, ARG_NVS_ENC },
                { "signed-apps-no-secure-boot", no_argument, NULL, ARG_NO_SB },
                { "partition-table", required_argument, NULL, ARG_PARTITIONS },
                { "firmware-version", required_argument, NULL, ARG_FW_VERSION },
                { "rsa-bits", required_argument, NULL, ARG_RSA_BITS },
                { "key-pool", required_argument, NULL, ARG_KEY_POOL },
                { "jobs", required_argument, NULL, ARG_JOBS },
                { "private-key", required_argument, NULL, ARG_PRIVATE_KEY },
                { "secure-cert", required_argument, NULL, ARG_SECURE_CERT },
                { "hmac-key", required_argument, NULL, ARG_HMAC_KEY },
                { "quiet", no_argument, NULL, ARG_QUIET },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        ProvisionOptions o;
        bool have_count = false;
        char err[1024] = "";
        struct timespec t0, t1;
        unsigned u;
        int c, r;

        provision_options_init(&o);
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_PKI:
                        o.pki_dir = optarg;
                        break;
                case ARG_COUNT:
                        if (parse_uint("--count", optarg, 1000000, &o.count) < 0)
                                return 2;
                        have_count = true;
                        break;
                case ARG_FIRST:
                        if (parse_uint("--first-index", optarg, 0x7fffffff, &o.first_index) < 0)
                                return 2;
                        break;
                case ARG_SHARD:
                        if (shard_from_string(optarg, &o.shard) < 0) {
                                log_error("--shard '%s' is not I/N with 0 <= I < N <= %u.", optarg, SHARD_COUNT_MAX);
                                return 2;
                        }
                        break;
                case ARG_SEED:
                        o.seed = optarg;
                        break;
                case ARG_CHIP:
                        if (!streq(optarg, "esp32c3") && !streq(optarg, "esp32s3")) {
                                log_error("--chip '%s': esp32c3 or esp32s3.", optarg);
                                return 2;
                        }
                        o.chip = optarg;
                        break;
                case ARG_KEY_BLOCK:
                        if (parse_uint("--key-block", optarg, 5, &u) < 0)
                                return 2;
                        o.key_block = (int) u;
                        break;
                case ARG_DEVELOPMENT:
                        o.development = true;
                        break;
                case ARG_NVS_ENC:
                        o.nvs_encryption = true;
                        break;
                case ARG_NO_SB:
                        o.signed_apps_no_secure_boot = true;
                        break;
                case ARG_PARTITIONS:
                        o.partition_table = optarg;
                        break;
                case ARG_FW_VERSION:
                        o.firmware_version = optarg;
                        break;
                case ARG_RSA_BITS:
                        if (parse_uint("--rsa-bits", optarg, 4096, &o.rsa_bits) < 0)
                                return 2;
                        if (o.rsa_bits % 1024 != 0 || o.rsa_bits < 1024) {
                                log_error("--rsa-bits %u: 1024, 2048, 3072 or 4096.", o.rsa_bits);
                                return 2;
                        }
                        break;
                case ARG_KEY_POOL:
                        if (parse_uint("--key-pool", optarg, 1000000, &o.key_pool) < 0)
                                return 2;
                        if (o.key_pool == 0) {
                                log_error("--key-pool must be at least 1.");
                                return 2;
                        }
                        break;
                case ARG_JOBS:
                        if (parse_uint("--jobs", optarg, 1024, &o.jobs) < 0 || o.jobs == 0) {
                                if (o.jobs == 0)
                                        log_error("--jobs must be at least 1.");
                                return 2;
                        }
                        break;
                case ARG_PRIVATE_KEY:
                        o.private_key = optarg;
                        break;
                case ARG_SECURE_CERT:
                        o.secure_cert = optarg;
                        break;
                case ARG_HMAC_KEY:
                        o.hmac_key = optarg;
                        break;
                case ARG_QUIET:
                        o.quiet = true;
                        break;
                case 'h':
                        provision_help();
                        return 0;
                default:
                        return 2;
                }
        if (optind + 1 != argc) {
                log_error("provision takes exactly one FLEETDIR argument. See 'espfleet provision --help'.");
                return 2;
        }
        if (!o.pki_dir || !have_count) {
                log_error("provision needs --pki DIR and --count N. See 'espfleet provision --help'.");
                return 2;
        }
        o.fleet_dir = argv[optind];
        o.progress = !o.quiet && isatty(STDERR_FILENO);

        clock_gettime(CLOCK_MONOTONIC, &t0);
        r = provision_fleet(&o, err, sizeof err);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (r == -EINTR) {
                log_error("provision %s: %s; the devices finished so far are kept, run the same command again "
                          "to make the rest.", o.fleet_dir, err);
                return 1;
        }
        if (r < 0) {
                log_error("provision %s: %s", o.fleet_dir, *err ? err : strerror(-r));
                return 1;
        }
        unsigned first = o.first_index, n = o.count;
        if (shard_is_set(&o.shard))
                shard_range(&o.shard, o.count, &first, &n);
        if (!o.quiet)
                printf("%s: %d new device%s (indexes %u..%u requested, %u already present) in %.1f s\n",
                       o.fleet_dir, r, r == 1 ? "" : "s", first, first + n - 1, n - (unsigned) r,
                       (double) (t1.tv_sec - t0.tv_sec) + (double) (t1.tv_nsec - t0.tv_nsec) / 1e9);
        return 0;
}
