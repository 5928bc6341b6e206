#!/usr/bin/env python3
"""Renders a man page source (man/*.scd.in) into scdoc, filling it from the
programs themselves, so that a page and the --help texts and the config
table cannot drift apart:

  @VERBS@          the verb list of `espfleet --help`
  @VERB_HELP@      one section per verb with its `espfleet VERB --help`
  @DAEMON_HELP@    `espfleetd --help`
  @CONFIG_KEYS@    every key of `espfleetd --dump-config`, with its default,
                   its comment and whether a SIGHUP applies it

usage: render.py IN.scd.in OUT.scd ESPFLEET ESPFLEETD
It fails (exit 1, naming what) when a placeholder has nothing to fill it
with, a verb has no --help, or the config dump is not in the form it knows.
"""
import re
import subprocess
import sys


def run(*argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("render.py: '%s' exited %d: %s" % (" ".join(argv), p.returncode, p.stderr.strip()))
    return p.stdout


def escape(text):
    # scdoc: \, * and _ format; a line may not start with a period-less dot issue
    return re.sub(r"([\\*_])", r"\\\1", text)


def literal(text):
    # a literal block: no formatting inside; scdoc wants it indented as the fences
    lines = text.rstrip("\n").split("\n")
    return "```\n" + "\n".join(lines) + "\n```\n"


def verbs(espfleet):
    out = run(espfleet, "--help")
    vs = []
    for line in out.splitlines():
        m = re.match(r"^  ([a-z][a-z-]+)\s{2,}(.*)$", line)
        if m:
            vs.append((m.group(1), m.group(2)))
    if len(vs) < 5:
        sys.exit("render.py: found only %d verbs in 'espfleet --help'" % len(vs))
    return vs


def verb_list(espfleet):
    return "".join("*%s*\n\t%s\n\n" % (v, escape(d)) for v, d in verbs(espfleet))


def verb_help(espfleet):
    parts = []
    for v, _ in verbs(espfleet):
        text = run(espfleet, v, "--help")
        if "Usage:" not in text:
            sys.exit("render.py: 'espfleet %s --help' has no Usage: line" % v)
        parts.append("## espfleet %s\n\n%s" % (v, literal(text)))
    return "\n".join(parts)


def config_keys(espfleetd):
    out = run(espfleetd, "--dump-config")
    groups, comment, items = [], [], []
    for raw in out.splitlines():
        line = raw.strip()
        if not line:
            comment = []
            continue
        m = re.match(r"^([a-z_]+) = \{$", line)
        if m:
            groups.append(m.group(1))
            comment = []
            continue
        if line == "};":
            if not groups:
                sys.exit("render.py: unbalanced '};' in the config dump")
            groups.pop()
            continue
        m = re.match(r"^#([a-z_]+) = (.*);$", line)
        if m:
            key = ".".join(groups + [m.group(1)])
            text = " ".join(comment)
            restart = text.endswith("(restart)")
            if restart:
                text = text[: -len("(restart)")].rstrip()
            items.append((key, m.group(2), text, restart))
            comment = []
            continue
        if line.startswith("#"):
            comment.append(line.lstrip("#").strip())
            continue
        sys.exit("render.py: unexpected line in the config dump: %r" % raw)
    if groups or len(items) < 20:
        sys.exit("render.py: the config dump ended inside a group or held only %d keys" % len(items))
    # scenario.ramp.* are written in a scenario file as scenario = { ramp = … }
    out = []
    for key, default, text, restart in items:
        if text and text[-1] not in ".!?)":
            text += "."
        out.append("*%s* = %s\n\t%s %s\n" % (escape(key), escape(default), escape(text),
                                             "Takes effect at the next start." if restart
                                             else "A SIGHUP applies it."))
    return "\n".join(out)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    src, dst, espfleet, espfleetd = sys.argv[1:]
    text = open(src).read()
    fill = {
        "@VERBS@": lambda: verb_list(espfleet),
        "@VERB_HELP@": lambda: verb_help(espfleet),
        "@DAEMON_HELP@": lambda: literal(run(espfleetd, "--help")),
        "@CONFIG_KEYS@": lambda: config_keys(espfleetd),
    }
    for k, f in fill.items():
        if k in text:
            text = text.replace(k, f())
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        sys.exit("render.py: %s: unknown placeholder(s) %s" % (src, ", ".join(sorted(set(left)))))
    with open(dst, "w") as f:
        f.write(text)


main()
