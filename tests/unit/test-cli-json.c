/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <string.h>

#include "cli/cli-json.h"

static void assert_string(json_object *o, const char *want, size_t want_len) {
        cr_assert_not_null(o);
        cr_assert(json_object_is_type(o, json_type_string));
        cr_assert_eq((size_t) json_object_get_string_len(o), want_len);
        cr_assert_eq(memcmp(json_object_get_string(o), want, want_len), 0);
}

Test(cli_json, bytes_are_latin1) {
        _cleanup_(json_object_putp) json_object *o = NULL, *empty = NULL;

        /* NUL, ASCII, 0x7F stay one byte; 0x80..0xFF become U+0080..U+00FF */
        o = cli_json_new_bytes("a\0\x7f\x80\xe9\xff", 6);
        assert_string(o, "a\0\x7f\xc2\x80\xc3\xa9\xc3\xbf", 9);
        cr_assert_str_eq(json_object_to_json_string_ext(o, CLI_JSON_FLAGS), "\"a\\u0000\x7f\xc2\x80\xc3\xa9\xc3\xbf\"");

        empty = cli_json_new_bytes(NULL, 0);
        assert_string(empty, "", 0);
}

typedef struct TextCase {
        /* inline: Criterion copies parameters into each test process */
        char in[8];
        char out[16];      /* the string json-c holds */
} TextCase;

/* RFC 3629 §4 and its §10 examples: well-formed input is kept, anything
 * else is taken byte by byte. */
static const TextCase text_cases[] = {
        { "plain", "plain" },
        { "", "" },
        { "n\xc3\xa9", "n\xc3\xa9" },                                   /* U+00E9 */
        { "\xe2\x82\xac", "\xe2\x82\xac" },                             /* U+20AC */
        { "\xef\xbb\xbf", "\xef\xbb\xbf" },                             /* U+FEFF */
        { "\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80" },                     /* U+1F600 */
        { "\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf" },                     /* U+10FFFF */
        { "b\xe9", "b\xc3\xa9" },                                       /* Latin-1 é */
        { "\xc0\xaf", "\xc3\x80\xc2\xaf" },                             /* overlong '/' */
        { "\xe0\x80\xaf", "\xc3\xa0\xc2\x80\xc2\xaf" },                 /* overlong, 3 bytes */
        { "\xed\xa0\x80", "\xc3\xad\xc2\xa0\xc2\x80" },                 /* surrogate U+D800 */
        { "\xf4\x90\x80\x80", "\xc3\xb4\xc2\x90\xc2\x80\xc2\x80" },     /* above U+10FFFF */
        { "\xf5\x80\x80\x80", "\xc3\xb5\xc2\x80\xc2\x80\xc2\x80" },     /* F5 never occurs */
        { "\xe2\x82", "\xc3\xa2\xc2\x82" },                             /* truncated */
        { "\xe2\x82x", "\xc3\xa2\xc2\x82x" },                           /* cut short by ASCII */
        { "\x80", "\xc2\x80" },                                         /* lone continuation */
};

ParameterizedTestParameters(cli_json, text) {
        return cr_make_param_array(TextCase, text_cases, ELEMENTSOF(text_cases));
}

ParameterizedTest(const TextCase *c, cli_json, text) {
        _cleanup_(json_object_putp) json_object *o = cli_json_new_text(c->in);

        assert_string(o, c->out, strlen(c->out));
}

Test(cli_json, adders_take_the_value) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(), *a = json_object_new_array();

        cr_assert_not_null(o);
        cr_assert_not_null(a);
        /* a failed constructor is -ENOMEM and adds nothing */
        cr_assert_eq(cli_json_add(o, "x", NULL), -ENOMEM);
        cr_assert_eq(cli_json_append(a, NULL), -ENOMEM);
        cr_assert_eq(json_object_object_length(o), 0);
        cr_assert_eq(json_object_array_length(a), 0);

        cr_assert_eq(cli_json_add(o, "n", json_object_new_uint64(UINT64_MAX)), 0);
        cr_assert_eq(cli_json_add_null(o, "none"), 0);
        cr_assert_eq(cli_json_append(a, json_object_new_boolean(1)), 0);
        cr_assert_eq(cli_json_add(o, "a", json_object_get(a)), 0);
        cr_assert_str_eq(json_object_to_json_string_ext(o, CLI_JSON_FLAGS),
                         "{\n  \"n\": 18446744073709551615,\n  \"none\": null,\n  \"a\": [\n    true\n  ]\n}");
}

Test(cli_json, print_layout, .init = cr_redirect_stdout) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

        cr_assert_eq(cli_json_add(o, "path", json_object_new_string("/dev/x \"q\"")), 0);
        cr_assert_eq(cli_json_add(o, "n", json_object_new_int64(-1)), 0);
        cr_assert_eq(cli_json_print(o), 0);
        fflush(stdout);
        cr_assert_stdout_eq_str("{\n  \"path\": \"/dev/x \\\"q\\\"\",\n  \"n\": -1\n}\n");
}
