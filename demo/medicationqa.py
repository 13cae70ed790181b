"""The demo's MedicationQA-style questions: (Question, Focus (Drug), Question Type, Answer, Section Title).

Written for sftflow in the layout of MedInfo2019-QA-Medications.xlsx; the answers are short summaries of
general, well-established medication information in the manner of MedlinePlus, not medical advice.
"""

URL = "https://medlineplus.gov/druginformation.html"
SEED_URL = "https://medlineplus.gov/druginfo/meds/a602009.html"  # the row quoted in the seed

PRECAUTIONS = "What special precautions should I follow?"
USE = "How should this medicine be used?"
SIDE_EFFECTS = "What side effects can this medication cause?"
WHY = "Why is this medication prescribed?"
STORAGE = "What should I know about storage and disposal of this medication?"
MISSED = "What should I do if I forget a dose?"
OTHER = "What other information should I know?"

ROWS = [
    ("how does rivatigmine and otc sleep medicine interact?", "rivastigmine", "Interaction",
     "Tell your doctor and pharmacist what prescription and nonprescription medications you take, especially "
     "antihistamines such as diphenhydramine or doxylamine, which are found in many over-the-counter sleep aids. "
     "These medicines have anticholinergic effects that work against rivastigmine and can worsen confusion in "
     "older adults, so your doctor may suggest a different way to treat sleep problems.", PRECAUTIONS),
    ("can i take ibuprofen with lisinopril?", "ibuprofen", "Interaction",
     "Nonsteroidal anti-inflammatory drugs such as ibuprofen can reduce the blood-pressure-lowering effect of "
     "ACE inhibitors like lisinopril and, especially in people who are dehydrated, older, or have kidney disease, "
     "can harm kidney function. Occasional short use may be acceptable, but ask your doctor or pharmacist first "
     "and do not take ibuprofen regularly without their advice.", PRECAUTIONS),
    ("what is the maximum amount of acetaminophen i can take in a day?", "acetaminophen", "Dose",
     "Adults should not take more than 4,000 mg of acetaminophen in 24 hours, and many labels advise 3,000 mg or "
     "less for self-treatment. Check every product you use, because acetaminophen is an ingredient in many cold, "
     "flu, and combination pain medicines. Taking too much can cause severe liver damage, and the risk is higher "
     "if you drink three or more alcoholic drinks a day.", USE),
    ("why does metformin upset my stomach?", "metformin", "Side effects",
     "Diarrhea, nausea, stomach upset, and a metallic taste are common when you start metformin. Taking it with "
     "meals and increasing the dose slowly helps, and an extended-release form may be easier to tolerate. Call "
     "your doctor if the symptoms are severe or return after they had settled, because that can be a sign of a "
     "rare but serious condition called lactic acidosis.", SIDE_EFFECTS),
    ("should metformin be taken with food?", "metformin", "Usage",
     "Yes. Regular metformin tablets are usually taken with meals two or three times a day, and extended-release "
     "tablets once a day with the evening meal. Swallow extended-release tablets whole; do not split, chew, or "
     "crush them.", USE),
    ("what foods should i avoid while taking warfarin?", "warfarin", "Interaction",
     "You do not need to avoid vitamin K rich foods such as leafy green vegetables, but keep the amount you eat "
     "about the same from week to week, because changes in vitamin K intake change how well warfarin works. Ask "
     "your doctor before using cranberry products, grapefruit, large amounts of alcohol, or herbal supplements "
     "such as ginkgo, garlic, or St. John's wort.", PRECAUTIONS),
    ("what happens if i miss a dose of warfarin?", "warfarin", "Usage",
     "Take the missed dose as soon as you remember that day. If you do not remember until the next day, skip the "
     "missed dose and continue your regular schedule. Never take a double dose to make up for a missed one, and "
     "tell your doctor about missed doses at your next INR check.", MISSED),
    ("how long does it take for sertraline to work?", "sertraline", "Information",
     "Some people notice better sleep, energy, or appetite within one to two weeks, but it usually takes four to "
     "eight weeks to feel the full benefit of sertraline for depression. Keep taking it even if you feel well, "
     "and do not stop suddenly: stopping abruptly can cause dizziness, irritability, and flu-like symptoms.", USE),
    ("can you drink alcohol while taking amoxicillin?", "amoxicillin", "Interaction",
     "Alcohol does not stop amoxicillin from working, and moderate drinking is not known to cause a dangerous "
     "interaction. Alcohol can add to side effects such as upset stomach and dizziness and may slow recovery from "
     "infection, so it is wise to limit it. Finish the full course even if you feel better.", OTHER),
    ("what is levothyroxine used for?", "levothyroxine", "Indication",
     "Levothyroxine is a man-made form of thyroid hormone used to treat hypothyroidism, a condition in which the "
     "thyroid gland does not produce enough hormone. It is also used with surgery and radioactive iodine to treat "
     "some types of thyroid cancer. It replaces the hormone the body normally makes; it does not cure the "
     "condition, so it is usually taken for life.", WHY),
    ("when is the best time to take levothyroxine?", "levothyroxine", "Usage",
     "Take levothyroxine once a day on an empty stomach, usually 30 to 60 minutes before breakfast, with a full "
     "glass of water. Take it at least 4 hours apart from calcium, iron, antacids, and some cholesterol medicines, "
     "which can reduce how much of it your body absorbs.", USE),
    ("does atorvastatin cause muscle pain?", "atorvastatin", "Side effects",
     "Muscle aches are one of the more common side effects of statins such as atorvastatin. Call your doctor right "
     "away if you have unexplained muscle pain, tenderness, or weakness, especially with fever, tiredness, or "
     "dark urine, because in rare cases statins cause a serious breakdown of muscle tissue.", SIDE_EFFECTS),
    ("can i eat grapefruit while taking atorvastatin?", "atorvastatin", "Interaction",
     "Large amounts of grapefruit juice (more than about 1.2 liters a day) can raise the level of atorvastatin in "
     "the blood and increase the risk of side effects. Ask your doctor how much grapefruit, if any, is safe for "
     "you while you take this medication.", PRECAUTIONS),
    ("what does lisinopril do?", "lisinopril", "Action",
     "Lisinopril is an angiotensin-converting enzyme (ACE) inhibitor. It decreases certain chemicals that tighten "
     "the blood vessels, so blood flows more smoothly and the heart can pump more efficiently. It is used to treat "
     "high blood pressure and heart failure and to improve survival after a heart attack.", WHY),
    ("why do i have a dry cough on lisinopril?", "lisinopril", "Side effects",
     "A persistent dry, tickling cough is a well-known side effect of ACE inhibitors such as lisinopril. It is not "
     "dangerous, but it can be bothersome and usually stops after the medicine is changed. Tell your doctor; do "
     "not stop taking lisinopril on your own. Get emergency help for swelling of the face, lips, tongue, or throat.",
     SIDE_EFFECTS),
    ("how should i store insulin?", "insulin glargine", "Storage and disposal",
     "Keep unopened insulin in the refrigerator and do not freeze it. An opened vial or pen in use can be kept at "
     "room temperature, away from heat and direct light, for the number of days stated in the product "
     "instructions (28 days for many insulins). Throw away insulin that has been frozen, overheated, or is past "
     "its expiration date.", STORAGE),
    ("what should i do if i take too much insulin?", "insulin", "Overdose",
     "Too much insulin can cause low blood sugar, with shakiness, sweating, fast heartbeat, confusion, or "
     "headache. Eat or drink a fast-acting source of sugar such as juice or glucose tablets, recheck your blood "
     "sugar after 15 minutes, and repeat if it is still low. If the person is unconscious or cannot swallow, call "
     "emergency services.", OTHER),
    ("is omeprazole safe to take long term?", "omeprazole", "Information",
     "Omeprazole is usually taken for a limited course, but some conditions need longer treatment under a doctor's "
     "care. Long-term use has been linked with low magnesium and vitamin B12 levels and a higher risk of bone "
     "fractures, so your doctor may check these and use the lowest dose for the shortest time that works.", OTHER),
    ("how do i use an albuterol inhaler?", "albuterol", "Usage",
     "Shake the inhaler, breathe out fully, place the mouthpiece in your mouth (or use a spacer), and press down "
     "once while breathing in slowly and deeply. Hold your breath for about 10 seconds, then breathe out. Wait "
     "about a minute before a second puff if one is prescribed, and prime the inhaler before first use.", USE),
    ("can amlodipine cause swollen ankles?", "amlodipine", "Side effects",
     "Yes. Swelling of the ankles, feet, or lower legs is a common side effect of amlodipine, especially at higher "
     "doses. Tell your doctor if it is bothersome or does not go away; the dose may be adjusted or another medicine "
     "used. Seek care right away for chest pain, fainting, or a very fast heartbeat.", SIDE_EFFECTS),
    ("what is prednisone prescribed for?", "prednisone", "Indication",
     "Prednisone is a corticosteroid used to reduce inflammation and calm the immune system in conditions such as "
     "severe allergic reactions, asthma, arthritis, lupus, inflammatory bowel disease, and some skin, blood, and "
     "kidney disorders. It is also used when the body does not make enough natural corticosteroids.", WHY),
    ("can i stop taking prednisone suddenly?", "prednisone", "Usage",
     "Do not stop prednisone suddenly if you have taken it for more than a few days. The body reduces its own "
     "steroid production during treatment, and stopping abruptly can cause weakness, tiredness, body aches, "
     "dizziness, and low blood pressure. Your doctor will tell you how to lower the dose gradually.", USE),
    ("what are the side effects of gabapentin?", "gabapentin", "Side effects",
     "Common side effects include drowsiness, dizziness, tiredness, unsteadiness, and swelling of the hands or "
     "feet. Avoid driving until you know how it affects you, and do not combine it with alcohol or opioids, which "
     "can slow breathing. Call your doctor about mood changes or thoughts of self-harm.", SIDE_EFFECTS),
    ("how long should i wait between doses of ibuprofen?", "ibuprofen", "Dose",
     "For adults using nonprescription ibuprofen, the usual dose is 200 to 400 mg every 4 to 6 hours as needed, "
     "with no more than 1,200 mg in 24 hours unless a doctor directs otherwise. Take it with food or milk if it "
     "upsets your stomach, and do not use it for more than 10 days for pain without talking to a doctor.", USE),
    ("does clopidogrel interact with omeprazole?", "clopidogrel", "Interaction",
     "Yes. Omeprazole and esomeprazole can reduce the activation of clopidogrel and may make it less effective at "
     "preventing clots. If you need a medicine for heartburn or ulcer protection while taking clopidogrel, ask "
     "your doctor which one is best for you.", PRECAUTIONS),
    ("how should alendronate be taken?", "alendronate", "Usage",
     "Take alendronate first thing in the morning, before any food, drink, or other medicine, with a full glass "
     "of plain water. Stay fully upright, sitting or standing, for at least 30 minutes afterwards and until after "
     "your first food of the day. This helps it reach the stomach and lowers the risk of irritating the "
     "esophagus.", USE),
    ("is montelukast used for rescue of asthma attacks?", "montelukast", "Usage",
     "No. Montelukast is taken regularly to prevent asthma symptoms and to treat allergies; it does not work "
     "quickly enough to treat a sudden attack. Keep a short-acting rescue inhaler such as albuterol for attacks. "
     "Tell your doctor about any mood or behavior changes while taking montelukast.", OTHER),
    ("does cetirizine make you sleepy?", "cetirizine", "Side effects",
     "Cetirizine causes less drowsiness than older antihistamines such as diphenhydramine, but some people do "
     "feel sleepy or tired. See how it affects you before you drive, and avoid alcohol, which can add to the "
     "drowsiness.", SIDE_EFFECTS),
    ("how should i get rid of unused medicines?", "medication disposal", "Storage and disposal",
     "The best way is a medicine take-back program, such as a pharmacy drop-off kiosk or a community take-back "
     "event. If none is available, mix the medicine with something unappealing such as used coffee grounds, seal "
     "it in a bag, and put it in the household trash. Flush only medicines on the FDA flush list.", STORAGE),
    ("can doxycycline be taken with milk?", "doxycycline", "Interaction",
     "Dairy products, antacids, calcium, iron, and magnesium supplements can bind doxycycline and reduce how much "
     "is absorbed. Take it with a full glass of water, and separate it from these products by a few hours as "
     "directed. Stay upright for a while after each dose, and protect your skin from the sun.", PRECAUTIONS),
]

# One row with no answer yet and one exact duplicate: the demo shows the quarantine and the duplicate count.
INCOMPLETE = [("what is the usual dose of hydrochlorothiazide?", "hydrochlorothiazide", "Dose", None, USE)]


def rows() -> list[tuple]:
    """Question | Focus (Drug) | Question Type | Answer | Section Title | URL, in sheet order."""
    table = [(q, drug, kind, answer, section, SEED_URL if drug == "rivastigmine" else URL)
             for q, drug, kind, answer, section in ROWS + INCOMPLETE]
    return table + [table[2]]
