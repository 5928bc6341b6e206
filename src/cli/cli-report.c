/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>

#include "basic/fileio.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "cli/cli.h"
#include "metrics/report-html.h"

/* A report holds about 600 bytes per device; this is far beyond any fleet
 * one machine runs, and still well inside json-c's int lengths. */
#define REPORT_MAX_SIZE (UINT64_C(1) << 30)

DEFINE_TRIVIAL_CLEANUP_FUNC(json_tokener *, json_tokener_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

static void report_help(void) {
        printf("Usage: espfleet report html REPORT.json [-o OUT.html]\n\n"
               "Renders a run report, the JSON that espfleetd writes with --report, as one\n"
               "self-contained HTML page (inline CSS and SVG, no scripts, nothing fetched):\n"
               "the run's metadata and verdict, devices online and the connect rate over time,\n"
               "latency percentiles, OTA outcomes, counters, failure reasons, and the devices,\n"
               "failed and offline ones first (at most %d rows).\n\n"
               "Options:\n"
               "  -o, --output FILE   write the page to FILE (default: standard output)\n",
               REPORT_HTML_MAX_DEVICES);
}

/* JSON's whitespace (RFC 8259 §2). */
static bool is_json_space(uint8_t c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* 1-based line of byte `offset`, for the error message. */
static size_t line_of(const char *s, size_t offset) {
        size_t line = 1;

        for (size_t i = 0; i < offset && s[i]; i++)
                if (s[i] == '\n')
                        line++;
        return line;
}

/* Reads and parses REPORT.json; logs why not and returns the exit status. */
static int report_load(const char *path, json_object **ret) {
        _cleanup_(json_tokener_freep) json_tokener *tok = NULL;
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        enum json_tokener_error e;
        size_t size, end;
        int r;

        r = read_full_file(path, REPORT_MAX_SIZE, &data, &size);
        if (r == -EFBIG) {
                log_error("%s: larger than %" PRIu64 " MiB, not a run report.", path, REPORT_MAX_SIZE >> 20);
                return 1;
        }
        if (r < 0) {
                log_error_errno(r, "%s: cannot read: %m", path);
                return 1;
        }
        tok = json_tokener_new();
        if (!tok) {
                log_error_errno(ENOMEM, "Out of memory.");
                return 1;
        }
        /* With the trailing NUL, so that the tokener knows the input ends
         * there ("unexpected end of data" instead of "continue"). */
        o = json_tokener_parse_ex(tok, (const char *) data, (int) size + 1);
        e = json_tokener_get_error(tok);
        end = json_tokener_get_parse_end(tok);
        if (!o || e != json_tokener_success) {
                log_error("%s: not valid JSON: %s (line %zu)", path,
                          json_tokener_error_desc(e == json_tokener_success ? json_tokener_error_parse_eof : e),
                          line_of((const char *) data, end));
                return 1;
        }
        for (size_t i = end; i < size; i++)
                if (!is_json_space(data[i])) {
                        log_error("%s: not valid JSON: trailing data after the document (line %zu)",
                                  path, line_of((const char *) data, i));
                        return 1;
                }
        if (!json_object_is_type(o, json_type_object)) {
                log_error("%s: not a run report: the document is not a JSON object.", path);
                return 1;
        }
        *ret = TAKE_PTR(o);
        return 0;
}

static int html_main(int argc, char **argv) {
        static const struct option options[] = {
                { "output", required_argument, NULL, 'o' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_object_putp) json_object *report = NULL;
        _cleanup_fclose_ FILE *mem = NULL;
        _cleanup_free_ char *page = NULL;
        const char *output = NULL;
        size_t size = 0;
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "o:h", options, NULL)) >= 0)
                switch (c) {
                case 'o':
                        output = optarg;
                        break;
                case 'h':
                        report_help();
                        return 0;
                default:
                        return 2;
                }
        if (optind + 1 != argc) {
                log_error("report html takes exactly one REPORT.json. See 'espfleet report --help'.");
                return 2;
        }
        if (output && streq(output, "-"))
                output = NULL;

        r = report_load(argv[optind], &report);
        if (r != 0)
                return r;

        /* The whole page first: a failed render leaves no half-written file. */
        mem = open_memstream(&page, &size);
        if (!mem) {
                log_error_errno(errno, "Cannot render the page: %m");
                return 1;
        }
        r = report_html_write(mem, report);
        if (r < 0) {
                log_error_errno(r, "%s: cannot render the page: %m", argv[optind]);
                return 1;
        }
        if (fclose(TAKE_PTR(mem)) != 0) {
                log_error_errno(errno, "Cannot render the page: %m");
                return 1;
        }

        if (!output) {
                if (fwrite(page, 1, size, stdout) != size || fflush(stdout) != 0) {
                        log_error_errno(errno, "Cannot write the page to standard output: %m");
                        return 1;
                }
                return 0;
        }
        r = write_file_atomic(output, page, size, 0644);
        if (r < 0) {
                log_error_errno(r, "%s: cannot write: %m", output);
                return 1;
        }
        return 0;
}

int verb_report(int argc, char **argv) {
        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
                report_help();
                return argc < 2 ? 2 : 0;
        }
        if (streq(argv[1], "html"))
                return html_main(argc - 1, argv + 1);
        log_error("Unknown 'report' command '%s'. See 'espfleet report --help'.", argv[1]);
        return 2;
}
