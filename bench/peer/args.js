// Command-line options for peer.js and probe.js: `--name VALUE` or
// `--name=VALUE`, numbers (non-negative) and strings, -h/--help prints
// `usage` and exits 0; anything else is an error through die().
'use strict';

function parseOptions(argv, o, num, str, usage, die) {
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      v = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    if (a === '-h' || a === '--help') {
      process.stdout.write(usage.endsWith('\n') ? usage : usage + '\n');
      process.exit(0);
    }
    if (!(a in num) && !(a in str))
      die(`unknown option '${a}'`);
    if (v === undefined) {
      if (i + 1 >= argv.length)
        die(`${a} needs a value`);
      v = argv[++i];
    }
    if (a in str) {
      o[str[a]] = v;
    } else {
      if (!/^[0-9]+(\.[0-9]+)?$/.test(v))
        die(`${a}: '${v}' is not a non-negative number`);
      o[num[a]] = Number(v);
    }
  }
  return o;
}

module.exports = { parseOptions };
