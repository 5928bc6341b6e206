/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "cli/cli.h"
#include "fleet/pki.h"

static void pki_help(void) {
        printf("Usage: espfleet pki init DIR [--host NAME]... [--days N] [--force]\n\n"
               "Creates the fleet PKI in DIR:\n"
               "  %-28s ECDSA P-256 fleet CA (key mode 0600)\n"
               "  %-28s MQTT broker server cert, SANs localhost, 127.0.0.1 and each --host\n"
               "  %-28s OTA HTTPS server cert, same SANs\n"
               "  %-28s operator client cert (CN=operator) for mosquitto_pub/sub --cert/--key\n"
               "  %-28s RSA-3072 Secure Boot V2 signing key, and %s\n\n"
               "Options:\n"
               "  --host NAME   extra DNS name or IP address for the server certs (repeatable)\n"
               "  --days N      validity in days (default %u)\n"
               "  --force       replace an existing PKI (fleets made with the old one stop working)\n",
               "ca.crt, ca.key", "broker.crt, broker.key", "ota.crt, ota.key", "operator.crt, operator.key",
               PKI_SB_KEY, PKI_SB_PUBKEY, PKI_DEFAULT_DAYS);
}

static void print_created(const char *path, mode_t mode, void *userdata) {
        bool *first = userdata;
        if (*first)
                printf("Created the fleet PKI:\n");
        *first = false;
        printf("  %04o  %s\n", (unsigned) mode, path);
}

static int pki_init_main(int argc, char **argv) {
        static const struct option options[] = {
                { "host", required_argument, NULL, 'H' },
                { "days", required_argument, NULL, 'd' },
                { "force", no_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_free_ char **hosts = NULL;
        PkiOptions o = {};
        char err[512] = "";
        int c, r;

        hosts = calloc((size_t) argc, sizeof *hosts);
        if (!hosts)
                return log_error_errno(ENOMEM, "Out of memory."), 1;
        optind = 1;
        while ((c = getopt_long(argc, argv, "H:d:fh", options, NULL)) >= 0)
                switch (c) {
                case 'H':
                        hosts[o.n_hosts++] = optarg;
                        break;
                case 'd': {
                        uint32_t d;
                        if (safe_atou32(optarg, 10, &d) < 0 || d == 0) {
                                log_error("--days '%s' is not a positive number of days.", optarg);
                                return 2;
                        }
                        o.days = d;
                        break;
                }
                case 'f':
                        o.force = true;
                        break;
                case 'h':
                        pki_help();
                        return 0;
                default:
                        return 2;
                }
        if (optind + 1 != argc) {
                log_error("pki init takes exactly one DIR argument. See 'espfleet pki --help'.");
                return 2;
        }
        o.hosts = hosts;

        bool first = true;
        r = pki_init(argv[optind], &o, print_created, &first, err, sizeof err);
        if (r < 0) {
                log_error("pki init: %s", *err ? err : strerror(-r));
                return 1;
        }
        printf("Done. Keep %s, the server keys and %s secret; provision with\n"
               "  espfleet provision FLEETDIR --pki %s --count N\n",
               PKI_CA_KEY, PKI_SB_KEY, argv[optind]);
        return 0;
}

int verb_pki(int argc, char **argv) {
        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
                pki_help();
                return argc < 2 ? 2 : 0;
        }
        if (streq(argv[1], "init"))
                return pki_init_main(argc - 1, argv + 1);
        log_error("Unknown 'pki' command '%s'. See 'espfleet pki --help'.", argv[1]);
        return 2;
}
