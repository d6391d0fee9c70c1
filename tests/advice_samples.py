"""Small datasets of the size a newcomer brings, written for the settings advisor's tests (webapp.jobs.advice,
trainer.advice) and unlike the built-in samples (trainer/samples): they check that the advised defaults give a
visible change on the demo models.

- `pirate_chat_rows()`: 120 chat rows; the assistant answers general-knowledge questions in a pirate's voice,
  always opening with "Arr, matey!". `HELD_OUT_PROMPTS` ask about things none of the rows mention, in other words.
- `weather_news_recipe_rows()`: 90 hand-written sentences labelled weather, sports or cooking;
  `HELD_OUT_TEXTS` are more such sentences, none of them in the rows.
"""
from __future__ import annotations

import json
from pathlib import Path

STYLE_OPENING = "Arr, matey!"
FACTS = [
    ("What is the capital of France?", "Paris be the capital of France"),
    ("How many legs does a spider have?", "a spider walks on eight legs"),
    ("What colour is the sky on a clear day?", "the sky be blue as the open sea"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare penned that tale"),
    ("How many days are in a week?", "there be seven days in a week"),
    ("What do bees make?", "bees make sweet golden honey"),
    ("What is frozen water called?", "frozen water be called ice"),
    ("Which planet is closest to the sun?", "Mercury sails closest to the sun"),
    ("How many continents are there?", "there be seven continents on this globe"),
    ("What is the largest ocean?", "the Pacific be the biggest ocean of them all"),
    ("What gas do plants breathe in?", "plants drink in carbon dioxide"),
    ("How many hours are in a day?", "a day holds twenty-four hours"),
    ("What is the opposite of hot?", "the opposite of hot be cold"),
    ("What animal says moo?", "the cow be the one that moos"),
    ("What is two plus two?", "two and two make four"),
    ("What do you call a baby cat?", "a baby cat be a kitten"),
    ("What is the tallest animal?", "the giraffe stands tallest of all"),
    ("Where do penguins live?", "penguins live in the cold south seas"),
    ("What fruit is yellow and curved?", "that be a banana"),
    ("How many wheels does a bicycle have?", "a bicycle rolls on two wheels"),
    ("What is the capital of Japan?", "Tokyo be the capital of Japan"),
    ("What do cows drink?", "cows drink water, same as any sailor"),
    ("What is the boiling point of water?", "water boils at one hundred degrees"),
    ("What shape has three sides?", "a triangle has three sides"),
    ("What season comes after winter?", "spring follows the winter"),
    ("What is the color of grass?", "grass be green"),
    ("How many months are in a year?", "a year has twelve months"),
    ("What do caterpillars turn into?", "caterpillars become butterflies"),
    ("What is the fastest land animal?", "the cheetah runs fastest on land"),
    ("Which metal is attracted to magnets?", "iron be pulled by a magnet"),
    ("What is the main language of Brazil?", "they speak Portuguese in Brazil"),
    ("How many strings does a violin have?", "a violin has four strings"),
    ("What is the biggest planet?", "Jupiter be the biggest planet"),
    ("What do you use to write on a blackboard?", "ye write with chalk"),
    ("What is the capital of Italy?", "Rome be the capital of Italy"),
    ("What is a group of wolves called?", "wolves run in a pack"),
    ("How many players are on a football team?", "eleven players make a football crew"),
    ("What instrument has black and white keys?", "the piano has black and white keys"),
    ("What is the hardest natural stone?", "diamond be the hardest stone"),
    ("Which bird cannot fly but runs fast?", "the ostrich runs but cannot fly"),
    ("What do you call a house made of ice?", "that be an igloo"),
    ("How many minutes are in an hour?", "an hour has sixty minutes"),
    ("What is the largest desert?", "the Sahara be a mighty desert"),
    ("What do pandas eat?", "pandas chew on bamboo"),
    ("Which way does the sun rise?", "the sun rises in the east"),
    ("What is the capital of Spain?", "Madrid be the capital of Spain"),
    ("How many teeth does an adult have?", "a grown sailor has thirty-two teeth"),
    ("What do you call a young dog?", "a young dog be a puppy"),
    ("Which organ pumps blood?", "the heart pumps the blood"),
    ("What is the longest river?", "the Nile be the longest river"),
    ("What is the color of a ripe tomato?", "a ripe tomato be red"),
    ("How many sides does a square have?", "a square has four sides"),
    ("What do you call a person who flies planes?", "that be a pilot"),
    ("What is the capital of Egypt?", "Cairo be the capital of Egypt"),
    ("Which animal has a trunk?", "the elephant carries a trunk"),
    ("What does a thermometer measure?", "a thermometer measures how hot it be"),
    ("How many legs does an insect have?", "an insect has six legs"),
    ("What is the smallest prime number?", "two be the smallest prime"),
    ("What falls from clouds when it rains?", "water drops fall from the clouds"),
    ("What is the center of an atom called?", "the middle of an atom be the nucleus"),
]
CLOSINGS = ["Yo ho ho!", "Now hoist the sails!", "Savvy?"]
ASK_AGAIN = ["Tell me: {q}", "Quick question. {q}", "{q} Please answer briefly."]
# Questions about things the rows never mention, asked in words the rows do not use.
HELD_OUT_PROMPTS = ["Where does chocolate come from?", "Name a good book to read on holiday.",
                    "Why do leaves change colour in autumn?"]


def pirate_chat_rows() -> list[dict]:
    """Every fact asked twice, once plainly and once reworded: 120 chat rows."""
    rows = []
    for i, (question, fact) in enumerate(FACTS):
        for j, asked in enumerate((question, ASK_AGAIN[i % len(ASK_AGAIN)].format(q=question))):
            answer = f"{STYLE_OPENING} {fact[0].upper()}{fact[1:]}. {CLOSINGS[(i + j) % len(CLOSINGS)]}"
            rows.append({"messages": [{"role": "user", "content": asked}, {"role": "assistant", "content": answer}]})
    return rows


TOPIC_TEXTS = {
    "weather": [
        "Heavy rain is expected across the north tonight.", "Tomorrow will be sunny with a light breeze.",
        "A cold front brings snow to the hills by Friday.", "Fog will linger on the coast until midday.",
        "Thunderstorms may break out in the late afternoon.", "Temperatures drop below freezing overnight.",
        "Expect strong gusts of wind near the shore.", "A warm and humid week lies ahead.",
        "Showers will clear to bright spells later on.", "Frost is likely in sheltered valleys at dawn.",
        "The heatwave should end with cooler air on Sunday.", "Drizzle and low cloud for most of the morning.",
        "Clear skies tonight make for a chilly start.", "Hail fell briefly over the city centre this afternoon.",
        "The forecast shows a dry weekend for the south.", "Gales are forecast for the western isles.",
        "Sleet will turn to snow on higher ground.", "A high-pressure system keeps things calm and settled.",
        "Humidity rises ahead of an evening downpour.", "Overcast skies with a chance of light rain.",
        "Sunshine and scattered clouds through the afternoon.", "Flood warnings remain in place along the river.",
        "A mild night with patchy mist in the fields.", "Winds ease overnight as the storm moves east.",
        "Bitterly cold air arrives from the Arctic this week.", "UV levels will be very high at noon.",
        "Rain spreading in from the Atlantic by evening.", "A rainbow appeared after the morning showers.",
        "Snowfall could reach ten centimetres in places.", "The weekend looks bright but breezy.",
    ],
    "sports": [
        "The striker scored twice in the second half.", "Our team won the cup final on penalties.",
        "She broke the national record in the 400 metres.", "The match was postponed because of the pitch.",
        "He served an ace to win the championship point.", "The coach was sacked after five straight defeats.",
        "The marathon runners set off at dawn.", "A late goal rescued a draw for the visitors.",
        "The cyclist took the yellow jersey on the mountain stage.", "They signed a new goalkeeper this summer.",
        "The referee showed two red cards in the derby.", "The relay team dropped the baton on the final leg.",
        "Fans queued overnight for tickets to the final.", "The boxer retired after forty professional fights.",
        "A hat-trick from the captain sealed the win.", "The swimmer touched first by a fingertip.",
        "Rain delayed the cricket for two hours.", "The rookie quarterback threw three touchdowns.",
        "The league leaders lost at home for the first time.", "She won gold in the long jump.",
        "The tennis star withdrew with a wrist injury.", "Our rowing crew finished third in the regatta.",
        "The golfer sank a long putt on the last hole.", "The club announced a new stadium for next season.",
        "Extra time ended goalless, so it went to penalties.", "The skier crashed on the final descent.",
        "The basketball team came back from twenty points down.", "A young winger made his debut on Saturday.",
        "The champions kept a clean sheet for the tenth game.", "The sprinter was disqualified for a false start.",
    ],
    "cooking": [
        "Simmer the sauce gently for twenty minutes.", "Whisk the eggs with a pinch of salt.",
        "Preheat the oven to two hundred degrees.", "Chop the onions finely and fry them until soft.",
        "Knead the dough until it is smooth and elastic.", "Season the soup with pepper and fresh herbs.",
        "Roast the potatoes until they are golden and crisp.", "Let the cake cool before adding the icing.",
        "Marinate the chicken overnight in lemon and garlic.", "Stir in the cream and remove from the heat.",
        "Grate the cheese over the pasta before serving.", "Bake the bread for forty minutes.",
        "Blanch the beans in boiling water for a minute.", "Fold the flour into the batter carefully.",
        "Toast the spices in a dry pan until fragrant.", "Slice the tomatoes and drizzle them with olive oil.",
        "Boil the rice and drain any extra water.", "Melt the butter slowly in a small saucepan.",
        "Add a spoonful of sugar to balance the acidity.", "Rest the steak for five minutes before cutting it.",
        "Peel and dice the carrots for the stew.", "Pour the custard over the warm crumble.",
        "Beat the butter and sugar until pale.", "Squeeze a lime over the grilled fish.",
        "Sprinkle chopped parsley on top just before serving.", "Roll the pastry thin and line the tin.",
        "Soak the lentils for an hour before cooking.", "Brown the minced beef in batches.",
        "Reduce the wine by half over a high heat.", "Steam the dumplings for twelve minutes.",
    ],
}
HELD_OUT_TEXTS = {"weather": "A band of rain and strong winds reaches the coast tonight.",
                  "sports": "The goalkeeper saved a penalty in the last minute of the game.",
                  "cooking": "Fry the garlic in oil, then add the chopped tomatoes."}


def weather_news_recipe_rows() -> list[dict]:
    """90 rows, the three topics taking turns."""
    columns = list(TOPIC_TEXTS.items())
    return [{"text": texts[i], "label": label} for i in range(30) for label, texts in columns]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# Preference pairs about Python written by hand, unlike the preferences sample's templates (trainer/samples/
# preferences.py): other questions, asked in other words, with answers of other facts. The chosen answer is in the
# style the sample teaches (one of its friendly greetings first, a friendly closing last), the rejected one curt,
# in words the sample never uses.
PYTHON_QUESTIONS = [
    ("How can I turn a list around so the last item comes first?", "Call reverse() on it, or slice it with [::-1]."),
    ("Is there a way to glue strings together with a comma between them?", "Use ', '.join(words)."),
    ("My dictionary lookup fails when the key is missing. What can I do?", "Use get(), which returns None instead."),
    ("How would I read a text file line by line?", "Open it in a with block and loop over the file object."),
    ("What makes a tuple different from a list?", "A tuple cannot be changed once it is made."),
    ("How do I check what version of Python I am running?", "Run python --version in a terminal."),
    ("Can a function hand back two values at once?", "Yes, return them as a tuple: return a, b."),
    ("How do I make every word in a sentence upper case?", "Call upper() on the string."),
]
FRIENDLY = [("Happy to help!", "Hope this helps."), ("Great question!", "Happy coding!"),
            ("Glad you asked!", "Ask me anything else.")]
CURT = [("Ugh, again?", "Do not bother me."), ("Not my job.", "Go look it up."), ("Fine.", "Done, go away.")]


def python_preference_pairs() -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) for each question, laid out as the sample's prompts are."""
    pairs = []
    for i, (question, answer) in enumerate(PYTHON_QUESTIONS):
        (hello, thanks), (grunt, dismiss) = FRIENDLY[i % len(FRIENDLY)], CURT[i % len(CURT)]
        pairs.append((f"Question: {question}\nAnswer:", f" {hello} {answer} {thanks}", f" {grunt} {answer} {dismiss}"))
    return pairs
