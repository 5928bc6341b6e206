/* SPDX-License-Identifier: MIT */
/* Raw RSA key generation on all cores: the baseline of bench/provision.sh
 * (issue #16 item 4, "provisioning costs ≤ 1.1× raw RSA key generation for
 * the same count on all cores").
 *
 *   bench-rsagen [--bits 2048] [--jobs J] COUNT
 *
 * Forks J processes (default: one per online CPU, as `espfleet provision`
 * does), which share COUNT EVP_RSA_gen() calls between them, and waits for
 * all. Prints one line:
 *   "rsagen <count> <bits> <jobs> <wall seconds> <cpu seconds of the children>". */

#include <getopt.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "basic/macro.h"
#include "basic/parse-util.h"

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double tv_s(struct timeval tv) {
        return (double) tv.tv_sec + (double) tv.tv_usec / 1e6;
}

_noreturn_ static void child(unsigned n, unsigned bits) {
        for (unsigned i = 0; i < n; i++) {
                EVP_PKEY *k = EVP_RSA_gen(bits);
                if (!k)
                        _exit(1);
                EVP_PKEY_free(k);
        }
        _exit(0);
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "bits", required_argument, NULL, 'b' },
                { "jobs", required_argument, NULL, 'j' },
                {},
        };
        uint32_t count, bits = 2048, jobs = 0;
        struct rusage ru;
        double t0, t1;
        int c, failed = 0;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'b':
                        if (safe_atou32(optarg, 10, &bits) < 0 || bits < 1024 || bits > 8192) {
                                fprintf(stderr, "--bits '%s': 1024..8192\n", optarg);
                                return 2;
                        }
                        break;
                case 'j':
                        if (safe_atou32(optarg, 10, &jobs) < 0 || jobs == 0 || jobs > 1024) {
                                fprintf(stderr, "--jobs '%s': 1..1024\n", optarg);
                                return 2;
                        }
                        break;
                default:
                        return 2;
                }
        if (optind + 1 != argc || safe_atou32(argv[optind], 10, &count) < 0 || count == 0) {
                fprintf(stderr, "usage: bench-rsagen [--bits B] [--jobs J] COUNT\n");
                return 2;
        }
        if (jobs == 0) {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                jobs = cpus > 0 ? (uint32_t) cpus : 1;
        }
        jobs = MIN(jobs, count);

        t0 = now_s();
        for (uint32_t j = 0; j < jobs; j++) {
                pid_t pid = fork();
                if (pid < 0) {
                        perror("fork");
                        return 1;
                }
                if (pid == 0)
                        child(count / jobs + (j < count % jobs), bits);
        }
        for (uint32_t j = 0; j < jobs; j++) {
                int status;
                if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        failed = 1;
        }
        t1 = now_s();
        if (failed) {
                fprintf(stderr, "RSA-%u key generation failed\n", bits);
                return 1;
        }
        getrusage(RUSAGE_CHILDREN, &ru);
        printf("rsagen %u %u %u %.3f %.3f\n", count, bits, jobs, t1 - t0, tv_s(ru.ru_utime) + tv_s(ru.ru_stime));
        return 0;
}
