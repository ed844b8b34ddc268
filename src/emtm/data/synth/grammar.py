"""The sentence grammar of the synthetic benchmark: actions (with their verbs), objects (with their
names), which pairs make sense, and the templates that turn an (action, object) into a sentence.

Every word a sentence can contain is in GloVe 6B (`vocabulary_words`, checked by the tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from emtm.data.text import tokenize

# --------------------------------------------------------------------------------------------
# Vocabulary tables: actions (with their verbs) and objects (with their names)


@dataclass(frozen=True)
class Verb:
    """One way to say an action: base, 3rd person, -ing and past forms, and a particle.

    A separable particle may also follow the object ("turns the light on").
    """

    base: str
    s: str
    ing: str
    past: str
    particle: str = ""
    separable: bool = False


@dataclass(frozen=True)
class Action:
    name: str
    verbs: tuple[Verb, ...]
    tag: str  # the affordance an object needs; "any" fits every object
    reverse_of: str | None = None  # same two phases, in the opposite order


@dataclass(frozen=True)
class Object:
    names: tuple[str, ...]
    tags: frozenset[str]
    countable: bool = True  # False: plural or mass noun, no "a"


# name | object tag | reverse of | verbs: "base s ing past +particle", "*" = separable particle
_ACTION_TABLE = """
open           | open  |             | open opens opening opened; open opens opening opened +up
close          | open  | open        | close closes closing closed; shut shuts shutting shut
pick up        | carry |             | pick picks picking picked +up*; grab grabs grabbing grabbed
put down       | carry | pick up     | put puts putting put +down*; set sets setting set +down*
turn on        | power |             | turn turns turning turned +on*; switch switches switching switched +on*
turn off       | power | turn on     | turn turns turning turned +off*;
                                       switch switches switching switched +off*
walk to        | any   |             | walk walks walking walked +to; walk walks walking walked +over to;
                                       go goes going went +to
walk away from | any   | walk to     | walk walks walking walked +away from;
                                       move moves moving moved +away from
sit down on    | seat  |             | sit sits sitting sat +down on; sit sits sitting sat +on;
                                       take takes taking took +a seat on
stand up from  | seat  | sit down on | stand stands standing stood +up from; get gets getting got +up from
put on         | wear  |             | put puts putting put +on*; slip slips slipping slipped +on*
take off       | wear  | put on      | take takes taking took +off*; remove removes removing removed
take out       | carry |             | take takes taking took +out*; pull pulls pulling pulled +out*
put away       | carry | take out    | put puts putting put +away*; store stores storing stored
look at        | any   |             | look looks looking looked +at; stare stares staring stared +at;
                                       watch watches watching watched
hold           | carry |             | hold holds holding held; hold holds holding held +onto
eat            | food  |             | eat eats eating ate; take takes taking took +a bite of
drink from     | drink |             | drink drinks drinking drank +from; sip sips sipping sipped +from
wash           | clean |             | wash washes washing washed; clean cleans cleaning cleaned;
                                       rinse rinses rinsing rinsed
fold           | fold  |             | fold folds folding folded; fold folds folding folded +up*
unfold         | fold  | fold        | unfold unfolds unfolding unfolded;
                                       spread spreads spreading spread +out*
throw          | carry |             | throw throws throwing threw; toss tosses tossing tossed
read           | read  |             | read reads reading read; look looks looking looked +through
play with      | play  |             | play plays playing played +with; fiddle fiddles fiddling fiddled +with
lie down on    | rest  |             | lie lies lying lay +down on; lie lies lying lay +on
fill           | fill  |             | fill fills filling filled; fill fills filling filled +up*
empty          | fill  | fill        | empty empties emptying emptied; empty empties emptying emptied +out*
plug in        | plug  |             | plug plugs plugging plugged +in*
unplug         | plug  | plug in     | unplug unplugs unplugging unplugged;
                                       disconnect disconnects disconnecting disconnected
wipe           | clean |             | wipe wipes wiping wiped; dust dusts dusting dusted;
                                       wipe wipes wiping wiped +off*
carry          | carry |             | carry carries carrying carried
fix            | fix   |             | fix fixes fixing fixed; repair repairs repairing repaired
photograph     | any   |             | take takes taking took +a picture of;
                                       photograph photographs photographing photographed
point at       | any   |             | point points pointing pointed +at; point points pointing pointed +to
smell          | smell |             | smell smells smelling smelled; sniff sniffs sniffing sniffed
tidy           | clean |             | tidy tidies tidying tidied +up*;
                                       straighten straightens straightening straightened
"""

# names (synonyms split by "/") | tags (affordances) | "mass" for plural or mass nouns
_OBJECT_TABLE = """
door                | open clean
window              | open clean
box                 | open carry
cabinet/cupboard    | open clean
refrigerator/fridge | open clean
laptop/computer     | open carry power read play plug fix
book/notebook       | open carry read
phone/cellphone     | carry power read play plug fix
light/lamp          | power plug fix
television/tv       | power plug fix
cup/mug             | carry drink fill clean smell
glass               | carry drink fill clean
bottle              | carry drink fill smell
sandwich            | carry food smell
shoes/sneakers      | wear carry clean smell       | mass
jacket/coat         | wear fold carry
chair               | seat carry clean
sofa/couch          | seat rest clean
bed                 | seat rest
towel               | fold carry clean smell
blanket             | fold carry
bag/backpack        | open carry
drawer              | open clean
closet/wardrobe     | open clean
camera              | carry power play fix
bowl                | carry fill clean
plate               | carry clean
dishes              | carry clean                  | mass
clothes/laundry     | fold carry clean smell       | mass
hat/cap             | wear carry
glasses             | wear clean                   | mass
shirt/sweater       | wear fold clean smell
pillow              | carry
paper/newspaper     | carry read fold
picture/photo       | carry
mirror              | clean
table               | clean
floor               | clean rest
apple               | carry food smell
broom               | carry
vacuum              | power carry plug
radio               | power carry play plug fix
toy                 | carry play
medicine            | carry                        | mass
groceries           | carry                        | mass
desk                | clean
shelf               | clean
food                | carry food smell             | mass
"""


def _parse_verb(spec: str) -> Verb:
    forms, _, particle = spec.partition("+")
    separable = particle.endswith("*")
    return Verb(*forms.split(), particle=particle.rstrip("*").strip(), separable=separable)


def _parse_actions(table: str) -> tuple[Action, ...]:
    rows: list[str] = []
    for line in table.strip().splitlines():
        if "|" in line:
            rows.append(line)
        else:  # a continuation of the verbs of the row above
            rows[-1] += " " + line.strip()
    actions = []
    for row in rows:
        name, tag, reverse, verbs = (field.strip() for field in row.split("|"))
        parsed = tuple(_parse_verb(v) for v in verbs.split(";") if v.strip())
        actions.append(Action(name, parsed, tag, reverse or None))
    return tuple(actions)


def _parse_objects(table: str) -> tuple[Object, ...]:
    objects = []
    for row in table.strip().splitlines():
        names, tags, *mass = (field.strip() for field in row.split("|"))
        objects.append(Object(tuple(names.split("/")), frozenset(tags.split()), countable=not mass))
    return tuple(objects)


ACTIONS = _parse_actions(_ACTION_TABLE)
OBJECTS = _parse_objects(_OBJECT_TABLE)
SUBJECTS = (
    ("a person", "their"), ("the person", "their"), ("person", "their"), ("someone", "their"),
    ("a man", "his"), ("the man", "his"), ("a woman", "her"), ("the woman", "her"),
    ("a boy", "his"), ("a girl", "her"),
)  # fmt: skip
# {s} {ing} {past} {base}: the verb phrase (verb + object) in that form.
TEMPLATES = (
    "{subj} {s}.", "{subj} {s}.", "{subj} is {ing}.", "{subj} {past}.", "{subj} {base}.",
    "{subj} goes over and {s}.", "{subj} starts {ing}.", "{subj} begins to {base}.",
    "{subj} then {s}.", "then {subj} {s}.", "{subj} {s} {adv}.", "{subj} {pre} {s}.",
    "{subj} is seen {ing}.", "{subj} {past} {adv}.", "{subj} tries to {base}.",
)  # fmt: skip
ADVERBS = ("quickly", "slowly", "carefully", "again")  # after the verb phrase
PRE_ADVERBS = ("quickly", "slowly", "carefully", "also")  # before the verb
_ARTICLES = ("the", "the", "a")
_MASS_ARTICLES = ("the", "the", "some")


def vocabulary_words() -> set[str]:
    """Every token a generated sentence can contain (for the 'all words are in GloVe' check)."""
    texts = [s for s, _ in SUBJECTS] + [p for _, p in SUBJECTS] + [*TEMPLATES, *ADVERBS, *PRE_ADVERBS]
    texts += ["an", *_ARTICLES, *_MASS_ARTICLES, "after before for the time", *ORDINALS]
    for action in ACTIONS:
        for verb in action.verbs:
            texts += [verb.base, verb.s, verb.ing, verb.past, verb.particle]
    for obj in OBJECTS:
        texts += list(obj.names)
    return {tok for text in texts for tok in tokenize(re.sub(r"\{\w+\}", " ", text))}


def compatible_pairs(n_actions: int, n_objects: int) -> list[tuple[int, int]]:
    """(action, object) index pairs that make sense, among the first n_actions and n_objects."""
    return [
        (a, o)
        for a in range(n_actions)
        for o in range(n_objects)
        if ACTIONS[a].tag == "any" or ACTIONS[a].tag in OBJECTS[o].tags
    ]


# --------------------------------------------------------------------------------------------
# Sentences

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")
QUERY_KINDS = ("single", "ordinal", "relational")
_ORDINAL_SUFFIX = re.compile(rf" for the (?:{'|'.join(ORDINALS)}) time\.$")
_RELATION_SUFFIX = re.compile(r" (?:after|before) \S+ing\b[^.]*\.$")


def query_kind(sentence: str) -> str:
    """How a sentence of the built-in benchmark names its event: 'single' (the event happens once),
    'ordinal' (a repeated event, "... for the second time.") or 'relational' (a repeated event named
    by a neighbour, "... after opening the door."), read back from what `disambiguate` appends."""
    if _ORDINAL_SUFFIX.search(sentence):
        return "ordinal"
    if _RELATION_SUFFIX.search(sentence):
        return "relational"
    return "single"


def verb_phrases(action: int, obj: int, rng: np.random.Generator, possessive: str) -> dict[str, str]:
    """The verb phrase of (action, object) in each verb form: base, s, ing, past."""
    verb = ACTIONS[action].verbs[int(rng.integers(len(ACTIONS[action].verbs)))]
    target = OBJECTS[obj]
    name = target.names[int(rng.integers(len(target.names)))]
    articles = (*(_ARTICLES if target.countable else _MASS_ARTICLES), possessive)
    article = articles[int(rng.integers(len(articles)))]
    if article == "a" and name[0] in "aeiou":
        article = "an"
    noun = f"{article} {name}"
    after = verb.separable and rng.random() < 0.4
    forms = {}
    for key in ("base", "s", "ing", "past"):
        head = getattr(verb, key)
        if not verb.particle:
            forms[key] = f"{head} {noun}"
        else:
            forms[key] = f"{head} {noun} {verb.particle}" if after else f"{head} {verb.particle} {noun}"
    return forms


def make_sentence(action: int, obj: int, rng: np.random.Generator, repeated: bool = False) -> str:
    """One description of (action, object), from a random template, verb, name and article. For a
    repeated event the adverb 'again' is replaced: disambiguate() says which instance is meant."""
    subject, possessive = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    forms = verb_phrases(action, obj, rng, possessive)
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    adverb, pre = ADVERBS[int(rng.integers(len(ADVERBS)))], PRE_ADVERBS[int(rng.integers(len(PRE_ADVERBS)))]
    if repeated and adverb == "again":
        adverb = "carefully"
    return template.format(subj=subject, adv=adverb, pre=pre, **forms)
