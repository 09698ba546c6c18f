#!/usr/bin/env python3
"""Scores a scanner's output against the corpus labels (see examples/corpus.rs).

usage: score.py CORPUS_DIR TOOL OUTPUT_FILE      TOOL: keyward | gitleaks | ripsecrets

A positive file counts as found (true positive) when the tool reports a finding on a line
of its planted secret; every other reported line (in any file) is a false positive. Lines
are counted once however many rules fire on them. For Keyward keys: how many planted keys
were reported with keyward=true, and how many near-miss files had anything reported.
"""
import json
import os
import re
import sys
from collections import Counter, defaultdict


def load_findings(tool, path, root):
    """(relative path, line, keyward flag) for each finding."""
    root = os.path.normpath(root) + os.sep
    out = []

    def rel(p):
        p = os.path.normpath(p)
        return p[len(root):] if p.startswith(root) else p

    text = open(path, encoding="utf-8", errors="replace").read()
    if tool == "keyward":
        for f in json.loads(text)["findings"]:
            out.append((rel(f["path"]), int(f["line"]), bool(f["keyward"])))
    elif tool == "gitleaks":
        for f in json.loads(text or "[]"):
            for line in range(int(f["StartLine"]), int(f["EndLine"]) + 1):
                out.append((rel(f["File"]), line, False))
                break
    elif tool == "ripsecrets":
        for line in text.splitlines():
            m = re.match(r"^(.*?):(\d+):", line)
            if m:
                out.append((rel(m.group(1)), int(m.group(2)), False))
    else:
        sys.exit(f"unknown tool {tool}")
    return out


def main():
    root, tool, output = sys.argv[1:4]
    labels = json.load(open(os.path.join(root, "labels.json")))["files"]
    by_path = {l["path"]: l for l in labels}
    findings = load_findings(tool, output, root)
    lines = defaultdict(set)
    keyward_lines = defaultdict(set)
    for p, line, kw in findings:
        lines[p].add(line)
        if kw:
            keyward_lines[p].add(line)

    tp = fn = fp = 0
    missed = Counter()
    false_pos = Counter()
    kw_total = kw_found = kw_flagged = 0
    near_total = near_reported = 0
    for l in labels:
        span = set(range(l["line"], l["end_line"] + 1))
        got = lines.get(l["path"], set())
        if l["positive"]:
            if got & span:
                tp += 1
            else:
                fn += 1
                missed[l["kind"]] += 1
            extra = got - span
            fp += len(extra)
            for _ in extra:
                false_pos["(extra line in positive file)"] += 1
            if l["kind"] == "keyward":
                kw_total += 1
                kw_found += bool(got & span)
                kw_flagged += bool(keyward_lines.get(l["path"], set()) & span)
        else:
            fp += len(got)
            for _ in got:
                false_pos[l["kind"]] += 1
            if l["kind"] == "near-miss":
                near_total += 1
                near_reported += bool(got)
    unknown = [p for p in lines if p not in by_path]
    fp += sum(len(lines[p]) for p in unknown)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    result = {
        "tool": tool,
        "true_positives": tp,
        "false_negatives": fn,
        "false_positives": fp,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "keyward_keys_found": f"{kw_found}/{kw_total}",
        "keyward_keys_flagged_keyward": f"{kw_flagged}/{kw_total}" if tool == "keyward" else "n/a",
        "near_misses_reported": f"{near_reported}/{near_total}",
        "missed_by_kind": dict(missed.most_common()),
        "false_positives_by_kind": dict(false_pos.most_common()),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
