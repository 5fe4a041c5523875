#!/usr/bin/env python3
"""Checks platforms/tuning.tsv and turns it into C: a static const array of
tuning_row (src/opencl/tuning.h), so the library reads no file at run time.

usage: gen_tuning.py TABLE.tsv OUT.c      check, then write OUT.c
       gen_tuning.py --check TABLE.tsv    check only

On a bad table it writes nothing, prints one line per fault ("TABLE.tsv:LINE: ...") and exits 1;
a usage error exits 2. platforms/README.md describes the format."""
import os
import re
import sys

# column -> (min, max, must be a power of two): work-group sizes and tiles are powers of two.
INT_COLUMNS = {
    "wg_decode": (16, 1024, True),
    "wg_per_cu": (1, 64, False),
    "prefill_qt": (4, 256, True),
    "prefill_kt": (16, 256, True),
    "gemv_wg": (16, 1024, True),
    "gemv_rows": (1, 64, True),
    "max_split": (1, 256, False),
    "acc_local": (0, 1, False),
}
COLUMNS = ["name", "vendor", "device", "wg_decode", "wg_per_cu", "prefill_qt", "prefill_kt",
           "gemv_wg", "gemv_rows", "n_split", "max_split", "acc_local"]
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")   # fits dattn_device_info.tuning[64]


def check_pattern(text, what):
    """None if text is a valid vendor/device pattern, else the fault."""
    if text == "*":
        return None
    for ch in text:
        if not (" " <= ch <= "~"):
            return f"{what} '{text}': only printable ASCII is allowed"
        if ch in '"\\*':
            why = " ('*' only as the whole field)" if ch == "*" else ""
            return f"{what} '{text}': '{ch}' is not allowed{why}"
    for alt in text.split("|"):
        core = alt[1:] if alt.startswith("^") else alt
        core = core[:-1] if core.endswith("$") else core
        if not core.strip():
            return f"{what} '{text}': empty alternative"
        if "^" in core or "$" in core:
            return f"{what} '{text}': '^' and '$' only at the start and end of an alternative"
        if core != core.strip():
            return f"{what} '{text}': alternative '{alt}' starts or ends with a space"
    return None


def normalized(pattern):
    return "*" if pattern == "*" else "|".join(sorted(a.lower() for a in pattern.split("|")))


def parse(path, text):
    """(rows, errors); each row a dict with the columns plus 'line'."""
    errors, rows = [], []
    header = None
    seen_names, seen_keys = {}, {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in re.split(r"\t+", line.strip())]
        where = f"{path}:{number}"
        if header is None:
            unknown = [f for f in fields if f not in COLUMNS]
            missing = [c for c in COLUMNS if c not in fields]
            dup = sorted({f for f in fields if fields.count(f) > 1})
            if unknown or missing or dup:
                msg = []
                if unknown:
                    msg.append("unknown column(s) " + ", ".join(unknown))
                if missing:
                    msg.append("missing column(s) " + ", ".join(missing))
                if dup:
                    msg.append("repeated column(s) " + ", ".join(dup))
                errors.append(f"{where}: header: " + "; ".join(msg) +
                              " (expected, TAB-separated: " + " ".join(COLUMNS) + ")")
                return rows, errors
            header = fields
            continue
        if len(fields) != len(header):
            hint = " (TABs turned into spaces?)" if len(fields) < len(header) and "  " in line else ""
            errors.append(f"{where}: {len(fields)} fields, expected {len(header)}{hint}")
            continue
        row = dict(zip(header, fields))
        row["line"] = number
        label = row["name"]
        bad = []
        if not NAME_RE.match(label):
            bad.append(f"name '{label}': lowercase letters, digits, '.', '_', '-', at most 63")
        for key in ("vendor", "device"):
            fault = check_pattern(row[key], key)
            if fault:
                bad.append(fault)
        for key, (lo, hi, pow2) in INT_COLUMNS.items():
            v = row[key]
            if not re.fullmatch(r"[0-9]+", v):
                bad.append(f"{key} '{v}': not a whole number")
                continue
            n = int(v)
            if not lo <= n <= hi:
                bad.append(f"{key} = {n}: outside [{lo}, {hi}]")
            elif pow2 and n & (n - 1):
                bad.append(f"{key} = {n}: not a power of two")
            row[key] = n
        ns = row["n_split"]
        if ns == "auto":
            row["n_split"] = 0
        elif re.fullmatch(r"[0-9]+", ns) and int(ns) >= 1:
            row["n_split"] = int(ns)
            if isinstance(row["max_split"], int) and row["n_split"] > row["max_split"]:
                bad.append(f"n_split = {ns} exceeds max_split = {row['max_split']}")
        else:
            bad.append(f"n_split '{ns}': 'auto' or a whole number >= 1")
        if (isinstance(row["gemv_rows"], int) and isinstance(row["gemv_wg"], int)
                and row["gemv_rows"] > row["gemv_wg"]):
            bad.append(f"gemv_rows = {row['gemv_rows']} exceeds gemv_wg = {row['gemv_wg']}")
        if label.lower() in seen_names:
            bad.append(f"name '{label}' already used on line {seen_names[label.lower()]}")
        key = (normalized(row["vendor"]), normalized(row["device"]))
        if key in seen_keys:
            bad.append(f"vendor '{row['vendor']}' and device '{row['device']}' duplicate the row "
                       f"on line {seen_keys[key]} (which always wins)")
        seen_names.setdefault(label.lower(), number)
        seen_keys.setdefault(key, number)
        errors.extend(f"{where}: {label}: {b}" for b in bad)
        if not bad:
            rows.append(row)
    if header is None:
        errors.append(f"{path}: no header line (and so no rows)")
        return rows, errors
    defaults = [r for r in rows if r["vendor"] == "*" and r["device"] == "*"]
    if not errors and not defaults:
        errors.append(f"{path}: no default row (vendor '*', device '*'): every device needs one")
    return rows, errors


def c_row(r):
    def s(text):
        return '"' + text + '"'   # check_pattern and NAME_RE leave nothing to escape
    return (f"    {{.vendor = {s(r['vendor'])}, .device = {s(r['device'])}, .name = {s(r['name'])},\n"
            f"     .wg_decode = {r['wg_decode']}, .wg_per_cu = {r['wg_per_cu']}, "
            f".prefill_qt = {r['prefill_qt']}, .prefill_kt = {r['prefill_kt']},\n"
            f"     .gemv_wg = {r['gemv_wg']}, .gemv_rows = {r['gemv_rows']}, "
            f".n_split = {r['n_split']}, .max_split = {r['max_split']},\n"
            f"     .acc_local = {r['acc_local']}}},   /* line {r['line']} */")


def main(argv):
    check_only = len(argv) == 3 and argv[1] == "--check"
    if not check_only and len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[2] if check_only else argv[1]
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"gen_tuning: {path}: {e}", file=sys.stderr)
        return 1
    rows, errors = parse(path, text)
    if errors:
        for e in errors:
            print(f"gen_tuning: {e}", file=sys.stderr)
        print(f"gen_tuning: {path}: {len(errors)} fault(s); nothing written", file=sys.stderr)
        return 1
    if check_only:
        print(f"gen_tuning: {path}: {len(rows)} rows, ok")
        return 0
    out = [f"/* Generated by tools/gen_tuning.py from {os.path.basename(path)}: do not edit. */",
           '#include "tuning.h"', "", "const tuning_row tuning_rows[] = {"]
    out += [c_row(r) for r in rows]
    out += ["};", f"const int tuning_n_rows = {len(rows)};", ""]
    tmp = argv[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    os.replace(tmp, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
