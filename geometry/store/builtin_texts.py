"""Which sample texts ship with protoscope, so that a run works with no data at all?

Ten paragraphs written for this project (no third-party prose is committed), each in a different
topic and register so that the built-in set is not one style repeated: description, recipe,
legal notice, physics, children's story, product review, letter, news report, dialogue, and
a field guide. Each has 180-260 words, which gives well over 200 tokens for a
SmolLM2-class BPE tokenizer: a capacity search climbs to prefixes of 128-256 tokens, and
`generated:` takes its contexts from the first ~32 tokens of these paragraphs.

Plain ASCII on purpose: every tokenizer handles it the same way and a report never has to
worry about encodings. The order is fixed; ids are `builtin-<slug>`.
"""

from __future__ import annotations

# (slug, paragraph). Order matters: generated contexts c00, c01, ... follow it.
PARAGRAPHS: tuple[tuple[str, str], ...] = (
    (
        "harbour-dawn",
        "The harbour wakes before the town does. At a quarter past five the water is the colour "
        "of cold slate, and the only sound is the slow knock of hulls against the tyres hung "
        "along the quay. A gull stands on one leg on the harbourmaster's roof, watching the "
        "fuel dock as if it expects a delivery. Then the first engine coughs somewhere near the "
        "breakwater, and a small blue trawler backs out of its berth, trailing a thin line of "
        "diesel smoke that hangs in the still air. Two men in orange overalls carry crates of "
        "ice down the ramp without speaking; they have done this so many times that words would "
        "only slow them down. On the far side of the basin, the cafe owner rolls up her shutter, "
        "sets three chairs outside, and looks at the sky the way sailors do, reading the thin "
        "cloud over the headland for wind. By six the light has turned from grey to a pale, "
        "washed gold. It catches the wet ropes, the rust on the bollards, the painted names on "
        "the bows: Margaret Ann, Good Intent, Second Chance. A boy on a bicycle arrives with a "
        "bag of bread rolls and leans against the railing to eat one, scattering crumbs that "
        "the gull finally decides are worth the trouble. Out past the lighthouse the trawler "
        "turns north, its wake spreading in long soft lines across the bay, and the harbour, "
        "having seen it off, settles back into its ordinary morning.",
    ),
    (
        "lentil-soup",
        "This red lentil soup feeds four people, costs very little, and takes about forty "
        "minutes from start to finish. You will need one large onion, two carrots, two cloves "
        "of garlic, a thumb of fresh ginger, two hundred grams of red lentils, one tin of "
        "chopped tomatoes, a litre of vegetable stock, a teaspoon of ground cumin, half a "
        "teaspoon of turmeric, a pinch of chilli flakes, olive oil, salt, and the juice of "
        "half a lemon. Start by rinsing the lentils in a sieve under cold water until the water "
        "runs mostly clear; this removes the dusty starch that would otherwise make the soup "
        "gluey. Peel and dice the onion and carrots, then soften them in two tablespoons of oil "
        "over a medium heat for about eight minutes, stirring now and then so nothing catches. "
        "Grate in the garlic and ginger and cook for one more minute, until the kitchen smells "
        "sweet and sharp at the same time. Add the cumin, turmeric and chilli, and stir for "
        "thirty seconds so the spices toast in the oil. Tip in the lentils, tomatoes and stock, "
        "bring everything to the boil, then lower the heat and let it simmer with the lid half "
        "on for twenty-five minutes. The lentils should collapse completely. Blend half of the "
        "soup if you like it smooth but with some texture, season with salt, and finish with "
        "the lemon juice just before serving. It keeps for three days in the fridge and "
        "freezes well.",
    ),
    (
        "parking-notice",
        "NOTICE TO ALL RESIDENTS AND VISITORS. With effect from the first day of next month, "
        "the parking area located behind Block C of the Elm Court estate shall be reserved "
        "exclusively for vehicles displaying a valid resident permit issued by the management "
        "company. Any vehicle parked in this area without such a permit, or parked in a manner "
        "that obstructs an access route, a fire exit, a refuse store or another bay, may be "
        "issued with a parking charge notice in the amount of sixty pounds. Where the charge is "
        "paid within fourteen days of the date of issue, it shall be reduced to thirty pounds. "
        "Vehicles that remain in breach of these terms for a continuous period exceeding "
        "seventy-two hours may be removed at the expense of the registered keeper, and the "
        "management company accepts no liability for any loss or damage arising from such "
        "removal, save where caused by its own negligence. Residents may apply for up to two "
        "permits per household by completing the form available from the site office, together "
        "with proof of address and the registration document of each vehicle. Visitor permits "
        "are valid for a maximum of forty-eight hours and must be displayed on the dashboard so "
        "that they are clearly legible from outside the vehicle. Nothing in this notice affects "
        "the statutory rights of any resident. Any appeal against a charge must be made in "
        "writing to the address below within twenty-eight days, stating the notice number and "
        "the grounds of the appeal.",
    ),
    (
        "physics-pendulum",
        "Why does a pendulum keep such regular time? Imagine a small, heavy ball hanging from a "
        "light string. When you pull it to one side and let go, gravity pulls it back towards "
        "the lowest point, but by the time it arrives it is moving, so it overshoots and climbs "
        "the other side until it stops and falls back again. The surprising part is that, for "
        "small swings, the time taken for one complete swing hardly depends on how far you "
        "pulled it. A wide swing travels further, but it also starts with a stronger pull back "
        "towards the middle, and the two effects almost exactly cancel. What does set the "
        "period is the length of the string and the strength of gravity. A longer pendulum "
        "swings more slowly: to double the period you must make the string four times as long, "
        "because the period grows with the square root of the length. The mass of the ball "
        "does not matter at all, which puzzles many people the first time they hear it. A "
        "heavier ball feels a larger force, but it also needs a larger force to get moving, "
        "and these two facts balance just as they do for falling objects. This is why "
        "clockmakers could adjust a clock by turning a small nut that raised or lowered the "
        "weight. For large swings the simple rule begins to fail, and the period slowly grows, "
        "so good clocks keep the swing small.",
    ),
    (
        "childrens-lantern",
        "Once upon a time, at the edge of a very tall forest, there lived a small fox called "
        "Pip who was afraid of the dark. Every evening, when the sun slid down behind the hills, "
        "Pip ran into his den and pulled his tail over his nose and waited for morning. One "
        "night, a firefly knocked politely on the door of the den. My name is Lumen, said the "
        "firefly, and I have lost my way home. Could you help me find the old oak by the "
        "river? Pip's ears went flat. The river was a long way off, and the path went right "
        "through the darkest part of the forest. But Lumen looked so small and tired that Pip "
        "took a deep breath and said yes. So they set off together, the firefly glowing softly "
        "just above the fox's head like a tiny lantern. The trees creaked, and an owl called, "
        "and once something rustled in the ferns, but each time Pip looked up, the little light "
        "was still there. Slowly he noticed things he had never seen before: silver moss on the "
        "stones, moths dancing over the path, and stars peeping through the leaves. When they "
        "reached the old oak, a hundred fireflies rose up to greet Lumen, and the whole tree "
        "shone like a birthday cake. Pip walked home alone that night, and he was surprised to "
        "find that he was humming. The dark, he decided, was only the day with its eyes closed.",
    ),
    (
        "kettle-review",
        "I bought this kettle to replace one that had started to rattle and smell of hot "
        "plastic, and after three months of daily use I am mostly happy with it. The good news "
        "first. It is genuinely quick: a full litre of cold water reaches the boil in a little "
        "under three minutes, and a single mug takes about fifty seconds. The temperature "
        "settings are the real reason I chose it, and they work well. Green tea at eighty "
        "degrees no longer tastes bitter, and the keep warm button is handy on slow mornings. "
        "The handle stays cool, the lid opens with one thumb, and the water window is easy to "
        "read even from across the kitchen. Now the less good news. The base is larger than it "
        "needs to be, so it takes up more of the counter than my old one. The beep at the end "
        "of each boil is loud and cannot be turned off, which my partner, who gets up later "
        "than I do, has mentioned more than once. The filter in the spout is also fiddly to "
        "remove for cleaning, and in a hard water area you will need to descale it every few "
        "weeks to stop white flakes from floating in your tea. Build quality feels solid, with "
        "no wobble in the lid hinge so far. Overall I would give it four stars out of five: a "
        "fast, well designed kettle with a couple of small annoyances that the makers could "
        "easily fix in the next model.",
    ),
    (
        "letter-allotment",
        "Dear Aunt Ruth, thank you so much for the seeds you sent in the spring. I have been "
        "meaning to write for weeks, but the allotment has taken every spare hour, and I wanted "
        "to wait until I had something to report. Well, now I do. The runner beans climbed to "
        "the top of the canes by the middle of July and have not stopped since; I have given "
        "bags of them to the neighbours on both sides and to the postman, who now greets me by "
        "name. The tomatoes were slower, because we had that cold, wet June, but the yellow "
        "ones you recommended are finally ripening, and they taste like sunshine. The "
        "courgettes, as you warned me, are out of control. I found one hiding under the leaves "
        "last Sunday that was the size of a small dog. The only real failure has been the "
        "carrots, which the slugs found before I did. Next year I will try the sandy bed by "
        "the shed, as you suggested. Dad came to visit in August and spent a whole afternoon "
        "rebuilding the compost bins, grumbling happily the entire time, and I think it was the "
        "best day he has had since Mum died. How is your knee? I hope the new exercises are "
        "helping and that you are not climbing ladders to reach the apples again. I will bring "
        "you a jar of green tomato chutney when I come at Christmas. With much love, Clare.",
    ),
    (
        "news-bridge",
        "The Millbrook footbridge reopened to the public on Saturday morning, eighteen months "
        "after it was closed when engineers found serious corrosion in its steel supports. "
        "Several hundred people gathered on both banks of the river for the opening, which was "
        "marked by a short speech from the chair of the town council and a performance by the "
        "primary school choir. The bridge, first built in the nineteen sixties, links the "
        "residential streets on the east bank with the railway station and the high street. "
        "During the closure, pedestrians faced a detour of nearly two kilometres via the road "
        "bridge, and local traders said that footfall had fallen by as much as a third. The "
        "repair work cost just over four million pounds, around half a million more than first "
        "estimated, which the council blamed on rising material prices and the discovery of "
        "further damage once the old deck had been removed. The new structure keeps the "
        "original arch but has a wider deck, lighting along its full length, and a gentler "
        "ramp on the western side for wheelchair users and cyclists. Speaking at the ceremony, "
        "one resident who has crossed the bridge every day for forty years said she had "
        "missed it more than she expected. A council spokesperson said that the structure will "
        "now be inspected every six months, and that a full report on the causes of the "
        "corrosion will be published before the end of the year.",
    ),
    (
        "dialogue-platform",
        "Excuse me, is this the platform for the train to the coast? It was, said the woman on "
        "the bench, until about ten minutes ago. They moved it to platform four. The young man "
        "looked at the board and groaned. Four is on the other side of the bridge, isn't it? "
        "It is. But you have time. It is running late anyway, twenty minutes at least. He sat "
        "down beside her, dropping a heavy rucksack at his feet. Are you going to the coast "
        "too? No, she said, I am waiting for my sister. She is coming the other way, from the "
        "city, and she always takes the slow train because she says the fast one makes her "
        "feel sick. Does it? I have no idea. I think she likes the slow one because it stops "
        "at the village where we grew up, and she can look out of the window at the old house. "
        "He smiled. That is a good reason. Where are you headed, then? To see my grandfather. "
        "He is ninety-one and has decided he wants to learn to sail, so I am supposed to talk "
        "him out of it. And will you? She raised an eyebrow. Probably not, he admitted. I will "
        "most likely end up buying him a life jacket. She laughed, and the announcement crackled "
        "overhead, and he picked up his bag and wished her sister a pleasant journey.",
    ),
    (
        "field-guide-heron",
        "The grey heron is one of the easiest large birds to recognise and one of the hardest "
        "to approach. Standing almost a metre tall, it has a long neck, a dagger-shaped yellow "
        "bill, pale grey upperparts and a white head with a black stripe that ends in a thin "
        "crest. In flight the neck is folded back into an S shape, the legs trail well beyond "
        "the tail, and the broad wings beat slowly and deeply, which helps to separate it from "
        "cranes and storks at a distance. Herons feed mainly on fish, but they will also take "
        "frogs, small mammals and even young birds. The usual hunting method is to stand "
        "perfectly still in shallow water, sometimes for many minutes, before striking with a "
        "sudden thrust of the head. They breed in colonies called heronries, usually at the "
        "tops of tall trees, and the large stick nests are often reused and added to year "
        "after year. Nesting begins unusually early, sometimes in February, so a visit to a "
        "heronry on a cold late winter morning can be rewarded with courtship displays and "
        "loud, croaking calls. The best places to look are slow rivers, lakes, marshes and "
        "estuaries, though herons also visit garden ponds, much to the dismay of people who "
        "keep ornamental fish. Watch for the bird from a distance and move slowly; a heron that "
        "has been disturbed will rise with a harsh call and may not return for hours.",
    ),
)
