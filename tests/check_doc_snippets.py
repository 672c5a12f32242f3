#!/usr/bin/env python3
"""Checks that the C++ shown in the documentation is the C++ the test suite compiles and runs.

Every ```cpp block of README.md and docs/api.md must equal, up to whitespace, one region of
tests/api_docs_test.cpp marked `// [docs:NAME]` ... `// [docs:end]`. Whitespace is normalised by
stripping each line, collapsing runs of blanks inside it and dropping empty lines, so a snippet may
be indented differently in the test than in the document. Every region must be shown somewhere, so
a snippet cannot silently drop out of the documents either.

Usage: check_doc_snippets.py SOURCE_DIR. Exit status 0 when all blocks match, 1 otherwise (with
one line per problem on stderr).
"""

import pathlib
import re
import sys

DOCUMENTS = ["README.md", "docs/api.md"]
SNIPPETS = "tests/api_docs_test.cpp"

BEGIN = re.compile(r"^\s*// \[docs:([A-Za-z0-9_-]+)\]\s*$")
END = re.compile(r"^\s*// \[docs:end\]\s*$")
FENCE = re.compile(r"^\s*```(\S*)\s*$")


def normalise(lines):
    out = []
    for line in lines:
        line = " ".join(line.split())
        if line:
            out.append(line)
    return "\n".join(out)


def regions(path):
    """NAME -> normalised text of each marked region; raises ValueError on bad markers."""
    found = {}
    name, body = None, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        begin = BEGIN.match(line)
        if begin and begin.group(1) != "end":
            if name is not None:
                raise ValueError(f"{path}:{number}: region '{begin.group(1)}' opens inside '{name}'")
            if begin.group(1) in found:
                raise ValueError(f"{path}:{number}: region '{begin.group(1)}' appears twice")
            name, body = begin.group(1), []
        elif END.match(line):
            if name is None:
                raise ValueError(f"{path}:{number}: [docs:end] without an open region")
            found[name] = normalise(body)
            name = None
        elif name is not None:
            body.append(line)
    if name is not None:
        raise ValueError(f"{path}: region '{name}' is never closed")
    return found


def cpp_blocks(path):
    """(line, normalised text) of every ```cpp block of a markdown file."""
    blocks = []
    inside, language, start, body = False, "", 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(line)
        if fence and not inside:
            inside, language, start, body = True, fence.group(1).lower(), number, []
        elif fence and inside and not fence.group(1):
            if language in ("cpp", "c++"):
                blocks.append((start, normalise(body)))
            inside = False
        elif inside:
            body.append(line)
    if inside:
        raise ValueError(f"{path}:{start}: code block never closed")
    return blocks


def main(argv):
    if len(argv) != 2:
        print("usage: check_doc_snippets.py SOURCE_DIR", file=sys.stderr)
        return 1
    root = pathlib.Path(argv[1])
    problems = []
    try:
        known = regions(root / SNIPPETS)
        by_text = {text: name for name, text in known.items()}
        shown = set()
        total = 0
        for document in DOCUMENTS:
            for line, text in cpp_blocks(root / document):
                total += 1
                if text in by_text:
                    shown.add(by_text[text])
                else:
                    first = text.splitlines()[0] if text else "(empty)"
                    problems.append(f"{document}:{line}: this cpp block equals no [docs:NAME] region of "
                                    f"{SNIPPETS} (first line: {first})")
        for name in sorted(set(known) - shown):
            problems.append(f"{SNIPPETS}: region '{name}' is shown in none of {', '.join(DOCUMENTS)}")
    except (OSError, ValueError) as error:
        problems.append(str(error))
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{total} cpp blocks match the compiled snippets of {SNIPPETS}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
