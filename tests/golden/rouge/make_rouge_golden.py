"""Writes rouge_golden.json: jieba.cut tokens and ROUGE-1/2/L (x100, rounded to
4 decimals per example) for each case, computed exactly as LLaMA-Factory's
ComputeSimilarity does, with the real jieba and rouge-chinese.

Run from the repo root with jieba 0.42.1 (Debian's python3-jieba, or
`pip install jieba==0.42.1`) and rouge-chinese 1.0.3 (`pip install
rouge-chinese`) importable, e.g.
  PYTHONPATH=/path/to/jieba-and-rouge python3 tests/golden/rouge/make_rouge_golden.py
Read the output by eye before committing it.
"""
import json
import os

import jieba
from rouge_chinese import Rouge

HERE = os.path.dirname(os.path.abspath(__file__))
conala = json.load(open(os.path.join(HERE, "..", "..", "..", "..", "shared", "hub", "datasets", "conala", "raw", "conala-test.json")))

CASES = [
    ("whitespace-only line", "def f(x):\n    \n    return x", "def f(x):\n\n    return x + 1"),
    ("two whitespace-only lines", "a = 1\n \n\t\nb = 2", "a = 1\nb = 2"),
    ("question mark then newline", "What is it?\nIt is a cat.", "What is this?\nA cat."),
    ("question marks in a line", "Why? Why not?? ok", "why not? ok"),
    ("C++ C# AT&T", "I write C++ and C# at AT&T", "c++ and c# code at AT and T"),
    ("dictionary word inside a run", "abc++ x c#d AT&Tx", "abc++ c# AT&T"),
    ("six dots and ellipsis", "wait......ok……fine", "wait... ok fine"),
    ("CRLF and unicode spaces", "line one\r\nline\u3000two\xa0x", "line one\nline two x"),
    ("quotes after a question", "He said \u201cwhy?\u201d and left.", "He asked why and left."),
    ("numbers and percent", "It's 3.14-ish, 50% of v1.2.3", "it is 3.14 and 50 %"),
    ("empty prediction", "", "print(1)"),
    ("whitespace-only prediction", " \n\t ", "print(1)"),
    ("leading newline", "\nprint(x)", "print(x)\n"),
]
for i in range(0, 16, 2):
    CASES.append((f"conala test {i}: snippet vs next snippet", conala[i]["snippet"], conala[i + 1]["snippet"]))
    CASES.append((f"conala test {i}: intent vs snippet", conala[i]["rewritten_intent"] or conala[i]["intent"], conala[i]["snippet"]))

out = []
for name, pred, label in CASES:
    hypothesis = list(jieba.cut(pred))
    reference = list(jieba.cut(label))
    if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
        result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
    else:
        result = Rouge().get_scores(" ".join(hypothesis), " ".join(reference))[0]
    out.append({
        "name": name, "predict": pred, "label": label,
        "jieba_predict": hypothesis, "jieba_label": reference,
        **{k: round(v["f"] * 100, 4) for k, v in result.items()},
    })
with open(os.path.join(HERE, "rouge_golden.json"), "w", encoding="utf-8") as f:
    json.dump({"source": "jieba 0.42.1 + rouge-chinese (LLaMA-Factory ComputeSimilarity), tests/golden/rouge/make_rouge_golden.py", "cases": out}, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(len(out), "cases")
