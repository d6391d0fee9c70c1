"""Short instructions with computed answers: an alpaca-format instruction sample (400 rows).

Every answer is computed by the generator (sums, unit conversions, sorting, counting, reversing, case changes,
parity, plurals, opposites), so the data is correct by construction and a model can learn its regular patterns.
"""
from __future__ import annotations

import random

ROWS = 400
WORDS = ["river", "lamp", "garden", "cloud", "pencil", "window", "mountain", "coffee", "rocket", "violin", "forest",
         "bridge", "candle", "island", "market", "planet", "ticket", "yellow", "silver", "quiet", "summer", "winter",
         "orange", "castle", "button", "mirror", "shadow", "thunder", "harbor", "meadow"]
PLURALS = {"cat": "cats", "box": "boxes", "city": "cities", "child": "children", "mouse": "mice", "leaf": "leaves",
           "person": "people", "tooth": "teeth", "bus": "buses", "knife": "knives", "story": "stories",
           "foot": "feet", "goose": "geese", "wish": "wishes", "day": "days", "hero": "heroes"}
OPPOSITES = {"hot": "cold", "early": "late", "open": "closed", "happy": "sad", "full": "empty", "light": "dark",
             "fast": "slow", "strong": "weak", "rich": "poor", "up": "down", "inside": "outside", "old": "young",
             "loud": "quiet", "wet": "dry", "first": "last", "high": "low"}
UNITS = [("kilometres", "metres", 1000), ("metres", "centimetres", 100), ("kilograms", "grams", 1000),
         ("hours", "minutes", 60), ("minutes", "seconds", 60), ("litres", "millilitres", 1000),
         ("days", "hours", 24), ("weeks", "days", 7)]


def _add(rng):
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    return f"Add {a} and {b}.", "", f"{a} + {b} = {a + b}."


def _multiply(rng):
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    return "Multiply the two numbers.", f"{a} and {b}", f"{a} × {b} = {a * b}."


def _convert(rng):
    big, small, factor = rng.choice(UNITS)
    n = rng.randint(1, 50)
    return f"Convert {n} {big} to {small}.", "", f"{n} {big} is {n * factor} {small}."


def _celsius(rng):
    c = rng.randrange(-20, 101, 5)
    return f"Convert {c} degrees Celsius to Fahrenheit.", "", f"{c} °C is {c * 9 / 5 + 32:g} °F."


def _sort(rng):
    numbers = rng.sample(range(1, 100), rng.randint(3, 7))
    return ("Sort these numbers from smallest to largest.", ", ".join(map(str, numbers)),
            ", ".join(map(str, sorted(numbers))))


def _reverse(rng):
    words = rng.sample(WORDS, rng.randint(3, 6))
    return "Reverse the order of these words.", " ".join(words), " ".join(reversed(words))


def _count(rng):
    words = rng.sample(WORDS, rng.randint(2, 9))
    sentence = " ".join(words).capitalize() + "."
    return "How many words are in this sentence?", sentence, f"The sentence has {len(words)} words."


def _uppercase(rng):
    words = " ".join(rng.sample(WORDS, rng.randint(2, 5)))
    return "Rewrite the text in capital letters.", words, words.upper()


def _parity(rng):
    n = rng.randint(1, 10_000)
    return f"Is {n} even or odd?", "", f"{n} is {'even' if n % 2 == 0 else 'odd'}."


def _plural(rng):
    word = rng.choice(sorted(PLURALS))
    return f"What is the plural of \"{word}\"?", "", f"The plural of \"{word}\" is \"{PLURALS[word]}\"."


def _opposite(rng):
    word = rng.choice(sorted(OPPOSITES))
    return "Give the opposite of the word.", word, OPPOSITES[word]


def _largest(rng):
    numbers = rng.sample(range(1, 1000), rng.randint(3, 6))
    return "Which number is the largest?", ", ".join(map(str, numbers)), f"The largest number is {max(numbers)}."


def _initials(rng):
    words = rng.sample(WORDS, rng.randint(2, 5))
    return ("Write the first letter of each word.", " ".join(words),
            "".join(word[0] for word in words).upper())


TASKS = [_add, _multiply, _convert, _celsius, _sort, _reverse, _count, _uppercase, _parity, _plural, _opposite,
         _largest, _initials]


def rows(seed: int = 0) -> list[dict]:
    """ROWS distinct examples of randomly chosen tasks: [{"instruction", "input", "output"}]. Tasks with few
    distinct questions (plurals, opposites) stop appearing once exhausted, as duplicates are skipped."""
    rng = random.Random(seed)
    result, seen = [], set()
    while len(result) < ROWS:
        instruction, given, output = rng.choice(TASKS)(rng)
        if (instruction, given) not in seen:
            seen.add((instruction, given))
            result.append({"instruction": instruction, "input": given, "output": output})
    return result
