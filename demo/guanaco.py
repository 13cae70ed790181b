"""The demo's openassistant-guanaco-style conversations: lists of (human, assistant) turns.

`build_data.py` joins them as `### Human: … ### Assistant: …` text; every third record is written with no
space before the markers, as in the seed's example record.
"""

CONVERSATIONS = [
    [("What is the difference between a list and a tuple in Python?",
      "Both hold ordered sequences of items, but a list is mutable (you can append, remove or change items) and "
      "a tuple is immutable once created. Tuples are hashable when their items are, so they can be dictionary "
      "keys, and they signal that a collection is fixed, like the coordinates of a point."),
     ("When would I choose a tuple for performance?",
      "The speed difference is small: tuples are slightly faster to create and use a little less memory. Choose "
      "by meaning first: a tuple for a fixed record, a list for a collection that grows or changes.")],
    [("Can you explain what a hash table is?",
      "A hash table stores key-value pairs in an array. A hash function turns each key into an index, so looking "
      "up, inserting or deleting a key takes constant time on average. When two keys land on the same index (a "
      "collision), the table keeps both, for example in a small list at that slot or by probing the next free "
      "slot."),
     ("What happens when the table gets full?",
      "Before it gets full, usually when it is about two thirds occupied, the table allocates a larger array and "
      "re-inserts every entry. That resize is expensive, but it happens rarely enough that the average cost per "
      "insertion stays constant.")],
    [("How do vaccines train the immune system?",
      "A vaccine shows the immune system a harmless piece or version of a germ, such as a protein, an inactivated "
      "virus, or instructions (mRNA) to make a protein. The body produces antibodies and memory cells against it, "
      "so if the real germ arrives later the response is faster and stronger."),
     ("Why do some vaccines need boosters?",
      "Protection from some vaccines fades over time, and some germs change. A booster reminds the immune system "
      "and raises antibody levels again, as with tetanus every ten years or the yearly flu shot.")],
    [("Give me three tips to sleep better.",
      "1. Keep a regular schedule, going to bed and waking at the same time every day. 2. Keep the bedroom dark, "
      "quiet and cool, and put screens away an hour before bed. 3. Avoid caffeine after midday and heavy meals "
      "or alcohol late in the evening."),
     ("What if I still can't fall asleep after 20 minutes?",
      "Get up and do something calm in dim light, like reading a paper book, and go back to bed when you feel "
      "sleepy. Lying awake in bed teaches the brain to link the bed with being awake. If it happens most nights "
      "for weeks, talk to a doctor about insomnia treatment.")],
    [("What is the capital of Australia?",
      "The capital of Australia is Canberra. It was chosen as a compromise between Sydney and Melbourne and has "
      "been the seat of government since 1927.")],
    [("Explain gradient descent like I'm five.",
      "Imagine you are on a foggy hill and want to reach the bottom. You can't see far, so you feel which way the "
      "ground slopes under your feet and take a small step downhill. You keep doing that until the ground is flat. "
      "Gradient descent does the same with a model's error: it measures which way makes the error smaller and "
      "nudges the model a little in that direction, again and again."),
     ("What is the learning rate then?",
      "It is the size of each step. Steps that are too big can jump over the bottom and bounce around; steps that "
      "are too small take forever to get there."),
     ("How do people pick it?",
      "Usually by trying a few values on a log scale, such as 0.1, 0.01 and 0.001, and watching the loss. Many "
      "training recipes also start with a warm-up and then lower the learning rate over time.")],
    [("Write a haiku about autumn rain.",
      "Cold rain on maple,\nred leaves loosen one by one,\nthe gutter runs gold.")],
    [("How do I make a good cup of pour-over coffee?",
      "Use about 15 to 17 grams of water per gram of coffee, for example 20 g of medium-fine ground coffee and "
      "320 g of water just off the boil (about 93 to 96 degrees C). Rinse the paper filter, add the coffee, pour "
      "about twice its weight in water to let it bloom for 30 seconds, then pour the rest in slow circles. The "
      "whole brew should take about three minutes."),
     ("My coffee tastes sour. What should I change?",
      "Sour coffee is usually under-extracted. Grind a little finer, use slightly hotter water, or pour more "
      "slowly so the water stays in contact with the coffee longer.")],
    [("What's the difference between weather and climate?",
      "Weather is the state of the atmosphere at a place and time: today's rain, wind and temperature. Climate is "
      "the pattern of weather over a long period, usually 30 years or more, such as a region's average summer "
      "temperature or how often it has droughts.")],
    [("Can you help me write a polite email asking for a deadline extension?",
      "Subject: Request for a short extension on the project report\n\nDear Dr. Lee,\n\nI am writing to ask if I "
      "could have a three-day extension on the project report due this Friday. I was ill earlier this week and "
      "lost several days of work. I have completed the analysis and need the extra time to write it up properly. "
      "Would Monday be acceptable?\n\nThank you for considering my request.\n\nBest regards,\nSam"),
     ("Make it a bit shorter.",
      "Subject: Extension request for the project report\n\nDear Dr. Lee,\n\nBecause I was ill earlier this "
      "week, could I submit the project report on Monday instead of Friday? The analysis is done; I need the "
      "extra days to write it up.\n\nThank you,\nSam")],
    [("Why is the sky blue?",
      "Sunlight contains all colors. As it passes through the air, the short blue wavelengths are scattered by "
      "gas molecules much more than the longer red ones (Rayleigh scattering), so blue light reaches your eyes "
      "from every part of the sky. At sunset the light travels through more air, most of the blue is scattered "
      "away, and the sky looks orange and red.")],
    [("What does git rebase do?",
      "git rebase moves your commits so they start from a new base commit. For example, `git rebase main` on a "
      "feature branch replays your branch's commits on top of the latest main, giving a straight history without "
      "a merge commit."),
     ("Is it safe to rebase a branch others are using?",
      "Not without coordination: rebasing rewrites commit ids, so anyone who based work on the old commits will "
      "have diverging history. Rebase your own local or private branches freely; for shared branches prefer "
      "merging, or agree with the team first and use `git push --force-with-lease`.")],
    [("Suggest a simple vegetarian dinner with lentils.",
      "Try a red lentil dal: soften an onion, garlic and ginger in oil, stir in cumin, turmeric and a little "
      "chili, add one cup of rinsed red lentils, a can of chopped tomatoes and three cups of water, and simmer "
      "for 20 to 25 minutes until thick. Season with salt and lemon juice and serve with rice or flatbread."),
     ("Can I freeze the leftovers?",
      "Yes. Cool it quickly, freeze it in airtight containers for up to three months, and reheat it with a splash "
      "of water because it thickens in the freezer.")],
    [("How many bones are in the adult human body?",
      "An adult human skeleton usually has 206 bones. Babies are born with around 270 bony parts, and many fuse "
      "together during growth, for example in the skull and the base of the spine.")],
    [("What is the Pythagorean theorem?",
      "In a right triangle, the square of the hypotenuse (the side opposite the right angle) equals the sum of "
      "the squares of the other two sides: a^2 + b^2 = c^2. For example, a triangle with sides 3 and 4 has a "
      "hypotenuse of 5, because 9 + 16 = 25."),
     ("Does it work for other triangles?",
      "Not as it stands. For any triangle the law of cosines generalizes it: c^2 = a^2 + b^2 - 2ab cos(C). When "
      "the angle C is 90 degrees, cos(C) is 0 and you get the Pythagorean theorem back.")],
]

# A record whose reply never came: the demo quarantines it (no assistant turn).
UNANSWERED = [[("Tell me a joke about databases.", None)]]
