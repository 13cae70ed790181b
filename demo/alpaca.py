"""The demo's Alpaca-format records: (instruction, input, output)."""

RECORDS = [
    ("Give three tips for staying healthy.", "",
     "1. Eat a balanced diet with plenty of fruit, vegetables, whole grains and lean protein.\n2. Be physically "
     "active for at least 150 minutes a week.\n3. Sleep seven to nine hours a night on a regular schedule."),
    ("Translate the sentence into French.", "Where is the train station?", "Où est la gare ?"),
    ("Classify the sentiment of the review as positive or negative.",
     "The battery died after two days and support never answered.", "Negative"),
    ("Summarize the paragraph in one sentence.",
     "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make glucose. "
     "Oxygen is released as a by-product. The process takes place mainly in the chloroplasts of leaf cells.",
     "Plants use sunlight, water and carbon dioxide in their chloroplasts to make glucose, releasing oxygen."),
    ("Write a Python function that returns the factorial of n.", "",
     "def factorial(n: int) -> int:\n    if n < 0:\n        raise ValueError(\"n must be non-negative\")\n"
     "    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result"),
    ("Explain what an API is to a non-technical person.", "",
     "An API is like a restaurant menu for software: it lists what one program can ask another to do and how to "
     "ask. The program places an order in the agreed format and gets a result back, without needing to know how "
     "the kitchen works."),
    ("Convert the temperature from Celsius to Fahrenheit.", "25 degrees Celsius",
     "25 degrees Celsius is 77 degrees Fahrenheit (25 x 9/5 + 32 = 77)."),
    ("Name the largest planet in our solar system.", "",
     "Jupiter is the largest planet in our solar system; its mass is more than twice that of all the other "
     "planets combined."),
    ("Rewrite the sentence in the passive voice.", "The committee approved the new budget.",
     "The new budget was approved by the committee."),
    ("Generate a list of five names for a bakery.", "",
     "1. Rise & Shine\n2. The Flour Pot\n3. Crumb Corner\n4. Golden Crust\n5. Knead to Know"),
    ("Find the grammatical error in the sentence and correct it.", "Each of the students have a book.",
     "The verb should agree with \"each\", which is singular: \"Each of the students has a book.\""),
    ("Describe the water cycle in three steps.", "",
     "1. Evaporation: the sun heats water in oceans and lakes, turning it into vapor.\n2. Condensation: the vapor "
     "cools in the atmosphere and forms clouds.\n3. Precipitation: water falls back as rain or snow and collects "
     "in rivers, lakes and groundwater."),
    ("Calculate the area of a circle with the given radius.", "radius = 3 cm",
     "The area is pi x r^2 = 3.1416 x 9, about 28.27 square centimeters."),
    ("What is the difference between affect and effect?", "",
     "\"Affect\" is usually a verb meaning to influence (\"The rain affected the game\"). \"Effect\" is usually a "
     "noun meaning a result (\"The rain had an effect on the game\")."),
    ("Write a SQL query that counts the orders per customer.", "Table orders(id, customer_id, total)",
     "SELECT customer_id, COUNT(*) AS order_count\nFROM orders\nGROUP BY customer_id\nORDER BY order_count DESC;"),
    ("Suggest a title for the blog post.",
     "A post about saving money on groceries by planning meals, buying seasonal produce and cooking in batches.",
     "Spend Less, Eat Well: Meal Planning, Seasonal Produce and Batch Cooking"),
    ("Explain why the sky appears red at sunset.", "",
     "At sunset sunlight passes through much more of the atmosphere. Most of the short blue wavelengths are "
     "scattered out of the path, leaving the longer red and orange wavelengths to reach your eyes."),
    ("Identify the odd one out.", "apple, banana, carrot, cherry",
     "Carrot: it is a vegetable, while the others are fruits."),
    ("Give an example of a renewable energy source and explain how it works.", "",
     "Wind power: wind turns the blades of a turbine, which spin a generator that converts the motion into "
     "electricity. Wind is replenished naturally, so it does not run out."),
    ("Turn the list into a single sentence.", "milk, eggs, bread, coffee",
     "I need to buy milk, eggs, bread and coffee."),
    ("Write a short motivational quote about learning.", "",
     "Every expert was once a beginner who kept going."),
    ("Explain the difference between RAM and storage.", "",
     "RAM is fast, temporary memory that holds the programs and data in use right now and is cleared when the "
     "computer turns off. Storage (an SSD or hard drive) is slower but keeps files permanently."),
    ("Sort the numbers in ascending order.", "42, 7, 19, 3, 25", "3, 7, 19, 25, 42"),
    ("Provide a synonym for the word.", "happy", "Joyful."),
    ("Describe the main function of the heart.", "",
     "The heart pumps blood through the body: the right side sends blood to the lungs to pick up oxygen, and the "
     "left side pumps the oxygen-rich blood to the rest of the body."),
    ("Write a regular expression that matches a five-digit US ZIP code.", "", r"^\d{5}$"),
    ("Explain what inflation is.", "",
     "Inflation is the general rise in prices over time, which means each unit of money buys less than before. "
     "It is usually measured as the yearly percentage change in a consumer price index."),
    ("Create a haiku about the ocean.", "",
     "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time."),
    ("Extract the dates mentioned in the text.",
     "The conference runs from 14 March to 16 March, and the paper deadline is 1 February.",
     "14 March, 16 March, 1 February"),
    ("Recommend a book for someone who wants to learn about habits.", "",
     "\"Atomic Habits\" by James Clear explains how small, consistent changes add up, with practical methods for "
     "building good habits and breaking bad ones."),
]

# A record whose answer is missing: the demo quarantines it (empty assistant turn).
INCOMPLETE = [("List the primary colors.", "", "")]
