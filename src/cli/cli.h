/* SPDX-License-Identifier: MIT */
#pragma once

/* Each `espfleet VERB …` lives in its own cli-VERB.c as a thin shell over the
 * modules. argv[0] is the verb itself. Returns the process exit status
 * (0 ok, 1 failure, 2 usage error), after printing a clear message. */
int verb_pki(int argc, char **argv);
int verb_provision(int argc, char **argv);
int verb_efuse(int argc, char **argv);
int verb_nvs(int argc, char **argv);
int verb_partition_table(int argc, char **argv);
int verb_image(int argc, char **argv);
int verb_flash(int argc, char **argv);
int verb_store(int argc, char **argv);
int verb_device(int argc, char **argv);
int verb_report(int argc, char **argv);
/* cli-status.c: clients of a running espfleetd's control socket */
int verb_status(int argc, char **argv);
int verb_top(int argc, char **argv);
int verb_command(int argc, char **argv);
