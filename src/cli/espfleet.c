/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "cli/cli.h"

static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *summary;
} verbs[] = {
        { "pki", verb_pki, "pki init DIR: fleet CA, broker/OTA server certs, operator cert, secure-boot key" },
        { "provision", verb_provision, "provision FLEETDIR --pki DIR --count N: per-device eFuse, DS key, flash image" },
        { "device", verb_device, "device list|show FLEETDIR [ID]: what a fleet holds" },
        { "efuse", verb_efuse, "efuse summary|burn|burn-key DEVICE …: the emulated eFuse" },
        { "nvs", verb_nvs, "nvs generate|dump|get|set|erase …: ESP-IDF NVS partitions" },
        { "partition-table", verb_partition_table, "partition-table gen|show …: ESP-IDF partition tables" },
        { "image", verb_image, "image build|sign|info|verify …: ESP app images and Secure Boot V2" },
        { "flash", verb_flash, "flash info|export DEVICE …: the emulated flash image" },
        { "store", verb_store, "store stat|gc FLEETDIR: the fleet's content-addressed sector store" },
        { "report", verb_report, "report html REPORT.json [-o OUT.html]: a run report as one HTML page" },
        { "status", verb_status, "status [DEVICE]: a running espfleetd's fleet, or one of its devices" },
        { "top", verb_top, "top: a live view of a running espfleetd" },
        { "command", verb_command, "command restart|power-cut|ota DEVICE…|--all|--range A-B: act on devices" },
};

static void help(void) {
        printf("Usage: espfleet VERB [ARGS…]\n\n"
               "Provision and inspect a fleet of emulated ESP32-C3/S3 devices.\n\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                printf("  %-16s %s\n", verbs[i].name, verbs[i].summary);
        printf("\nRun 'espfleet VERB --help' for a verb's options.\n"
               "A DEVICE is a device directory, or FLEETDIR/ID.\n");
}

int main(int argc, char **argv) {
        log_set_program("espfleet");

        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
                help();
                return argc < 2 ? 2 : 0;
        }
        if (streq(argv[1], "--version")) {
                printf("espfleet %s\n", ESPFLEET_VERSION);
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                if (!streq(verbs[i].name, argv[1]))
                        continue;
                return verbs[i].run(argc - 1, argv + 1);
        }
        log_error("Unknown verb '%s'. Run 'espfleet --help' for the list.", argv[1]);
        return 2;
}
