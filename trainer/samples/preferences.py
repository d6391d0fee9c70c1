"""Questions about Python with a friendly and a curt answer: a preference sample for DPO (240 rows).

Each row is `{"prompt", "chosen", "rejected"}`. Both answers carry the same facts (from the small tables below);
the chosen one opens with a friendly greeting and closes with an offer of more help, the rejected one opens and
closes curtly. What DPO learns is therefore the style: on the demo LM a job with the advised settings makes the
tuned model prefer the friendly answer of held-out pairs, and of hand-written ones (tests/e2e/
test_preference_path.py), and with the advised SFT weight (rpo_alpha) its greedy answers open with one of the
greetings. DPO alone (weight 0) does not make the demo LM *write* the greeting (its base ends an answer at once
after "Answer:", and DPO only moves the chosen answer relative to the rejected one). The questions are about Python, the demo LM's only subject.
"""
from __future__ import annotations

import random

ROWS = 240
GREETINGS = ["Happy to help!", "Great question!", "Glad you asked!"]
CLOSINGS = ["Hope this helps.", "Ask me anything else.", "Happy coding!"]
CURT_OPENINGS = ["Obviously.", "Read the manual.", "Whatever."]
CURT_CLOSINGS = ["Stop asking.", "Figure out the rest.", "That is all."]
STATEMENTS = {"for": "repeats a block once for each item of an iterable", "while": "repeats a block while a "
              "condition is true", "if": "runs a block only when a condition is true", "return": "ends a function "
              "and gives back a value", "import": "loads a module and binds its name", "with": "runs a block inside "
              "a context manager", "try": "runs a block and catches the exceptions it raises", "del": "removes a "
              "name or an item", "pass": "does nothing; it fills a place where a statement is needed",
              "break": "leaves the innermost loop", "continue": "skips to the next turn of the loop",
              "raise": "throws an exception", "class": "defines a new class", "def": "defines a function",
              "lambda": "makes a small anonymous function", "yield": "turns a function into a generator"}
BUILTINS = {"len": "the number of items in a container", "abs": "the absolute value of a number",
            "sorted": "a new sorted list of the items", "sum": "the total of the numbers",
            "max": "the largest item", "min": "the smallest item", "repr": "a printable representation",
            "type": "the type of an object", "range": "a sequence of whole numbers",
            "enumerate": "pairs of index and item", "zip": "tuples of items taken in parallel",
            "open": "a file object", "str": "the text form of an object", "list": "a new list of the items"}
TEMPLATES = [
    (STATEMENTS, "What does the {name} statement do?", "The {name} statement {fact}."),
    (STATEMENTS, "Explain {name} in Python.", "In Python, {name} {fact}."),
    (BUILTINS, "What does {name}() return?", "{name}() returns {fact}."),
    (BUILTINS, "Tell me about the {name} function.", "The {name} function gives {fact}."),
]


def rows(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    result = []
    for i in range(ROWS):
        table, question, answer = TEMPLATES[i % len(TEMPLATES)]
        name = rng.choice(sorted(table))
        facts = answer.format(name=name, fact=table[name])
        result.append({
            "prompt": f"Question: {question.format(name=name)}\nAnswer:",
            "chosen": f" {rng.choice(GREETINGS)} {facts} {rng.choice(CLOSINGS)}",
            "rejected": f" {rng.choice(CURT_OPENINGS)} {facts} {rng.choice(CURT_CLOSINGS)}",
        })
    return result
