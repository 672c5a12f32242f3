#!/usr/bin/env python3
"""Paired comparison of the ShapesWorld runs of tools/run_shapesworld_results.sh against one
reference method (default: sharpened), with standard errors over the questions.

    tools/shapesworld_differences.py OUT [REFERENCE]

OUT is the script's output folder (eval/, answers/). For every model, split and method it prints
the accuracy and false-positive rate of the POPE splits (random, popular, adversarial), and the contrast split's false-positive rates
with the partner present and absent and their gap. Each value is the mean over the seeds. Its
standard error treats the questions (for the gap: the image pairs) as the sample, after averaging
each question's outcome over the seeds. The difference to REFERENCE is paired: it is computed per
question on the same questions, so what the two methods share cancels. Answers are read with
POPE's parser (first sentence; "no" if it has the word No, no or not).
"""
import collections
import glob
import json
import math
import os
import re
import sys


def says_no(text):
    first = text.split(".")[0].replace(",", "")
    return any(word in ("No", "no", "not") for word in first.split(" "))


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mean_se(values):
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def cell(values, percent=True):
    mean, se = mean_se(values)
    scale = 100.0 if percent else 1.0
    text = f"{scale * mean:.1f}"
    return f"{'0.0' if text == '-0.0' else text} ± {scale * se:.1f}"


def main():
    out = sys.argv[1]
    reference = sys.argv[2] if len(sys.argv) > 2 else "sharpened"
    questions = {}
    pope_splits = ("random", "popular", "adversarial")
    files = [(split, f"shapesworld_pope_{split}.jsonl") for split in pope_splits]
    for split, name in files + [("contrast", "shapesworld_contrast.jsonl")]:
        path = os.path.join(out, "eval", name)
        if os.path.exists(path):
            questions[split] = {str(q["question_id"]): q for q in read_jsonl(path)}
    # (model, split, method) -> question id -> list over seeds of "answered yes"
    yes = collections.defaultdict(lambda: collections.defaultdict(list))
    methods = []
    seeds = collections.defaultdict(set)
    pattern = re.compile(r"^(?P<model>.+?)\.(?P<method>[^.]+)\.seed(?P<seed>\d+)\.(?P<split>[a-z]+)\.jsonl$")
    for path in sorted(glob.glob(os.path.join(out, "answers", "*.jsonl"))):
        m = pattern.match(os.path.basename(path))
        if not m or m["split"] not in questions:
            continue
        key = (m["model"], m["split"], m["method"])
        if m["method"] not in methods:
            methods.append(m["method"])
        seeds[key].add(int(m["seed"]))
        for answer in read_jsonl(path):
            yes[key][str(answer["question_id"])].append(0.0 if says_no(answer["text"]) else 1.0)
    order = ["regular", "greedy", "sharpened", "cutoff-only", "vcd", "vcd-2", "agla", "agla-random-mask",
             "agla-released", "ritual", "icd", "m3id", "m3id-logits", "pai", "vacode", "agla+vcd"]
    methods.sort(key=lambda name: order.index(name) if name in order else len(order))
    models = sorted({key[0] for key in yes})

    def per_question(key, ids):
        answers = yes.get(key, {})
        if any(i not in answers for i in ids):
            return None  # an unfinished run
        return [sum(answers[i]) / len(answers[i]) for i in ids]

    def table(title, columns, model, split, *groups):
        """Prints a table's title and header; returns the reference's per_question for each group of ids."""
        print(title + ":\n")
        print("| " + " | ".join(["method", "seeds"] + columns) + " |")
        print("| --- |" + " ---: |" * (len(columns) + 1))
        return [per_question((model, split, reference), ids) for ids in groups]

    def runs(model, split, *groups):
        """(method, key, per_question for each group of ids) of every method whose run is finished."""
        for method in methods:
            key = (model, split, method)
            values = [per_question(key, ids) for ids in groups]
            if all(v is not None for v in values):
                yield method, key, values

    for model in models:
        print(f"\n### {model}\n")
        print(f"Mean over the seeds, ± standard error over the questions (percent); Δ = method − {reference}, "
              "paired on the same questions.\n")
        for split in (split for split in pope_splits if split in questions):
            qs = questions[split]
            negatives = [i for i, q in qs.items() if q["label"] == "no"]
            ids = list(qs)
            ref_fp, ref_ok = table(f"POPE {split} ({len(ids)} questions, {len(negatives)} negatives)",
                                   ["accuracy", "Δ accuracy", "FP rate", "Δ FP rate"], model, split, negatives, ids)
            for method, key, (fp, said) in runs(model, split, negatives, ids):
                ok = [s if qs[i]["label"] == "yes" else 1.0 - s for i, s in zip(ids, said)]
                row = [method, str(len(seeds[key])), cell(ok)]
                if ref_ok is not None:
                    ref_correct = [s if qs[i]["label"] == "yes" else 1.0 - s for i, s in zip(ids, ref_ok)]
                    row.append(cell([a - b for a, b in zip(ok, ref_correct)]))
                else:
                    row.append("–")
                row.append(cell(fp))
                row.append(cell([a - b for a, b in zip(fp, ref_fp)]) if ref_fp is not None else "–")
                print("| " + " | ".join(row) + " |")
            print()
        if "contrast" in questions:
            qs = questions["contrast"]
            pairs = collections.defaultdict(dict)
            for i, q in qs.items():
                pairs[q["pair_id"]][q["partner_present"]] = i
            pair_ids = sorted(p for p, sides in pairs.items() if True in sides and False in sides)
            present = [pairs[p][True] for p in pair_ids]
            absent = [pairs[p][False] for p in pair_ids]
            ref_p, ref_a = table(f"Within-class contrast ({len(pair_ids)} image pairs; all answers should be 'no')",
                                 ["FP, partner present", "FP, partner absent", "gap", "Δ gap"], model, "contrast",
                                 present, absent)
            ref_gap = [a - b for a, b in zip(ref_p, ref_a)] if ref_p is not None and ref_a is not None else None
            for method, key, (p, a) in runs(model, "contrast", present, absent):
                gap = [x - y for x, y in zip(p, a)]
                row = [method, str(len(seeds[key])), cell(p), cell(a), cell(gap)]
                row.append(cell([x - y for x, y in zip(gap, ref_gap)]) if ref_gap is not None else "–")
                print("| " + " | ".join(row) + " |")
            print()


if __name__ == "__main__":
    main()
