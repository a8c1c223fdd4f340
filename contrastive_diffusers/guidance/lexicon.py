"""Word lists for the built-in prompt parser (:mod:`.parsing`): a data table, no logic.

Open word classes (nouns, most adjectives) are not listed: a word the lists do not know
is taken as a possible noun. The lists name what must *not* become an object: function
words, relation and frame nouns, verbs, adverbs, abstract nouns, plus the adjectives that
decide whether a phrase has a noun at all ("in blue" has none).
"""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


DETERMINERS = _words(
    """a an the this that these those some any each every another no other such
    my your his her its our their whose both all either neither half"""
)

NUMBERS = _words(
    """one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty hundred thousand dozen
    several many few multiple numerous various first second third single lots"""
)

PRONOUNS = _words(
    """i me you he him she it we us they them myself yourself himself herself itself
    ourselves themselves something someone somebody everything everyone everybody anything
    anyone nothing nobody none what who whom which whoever there here others ones"""
)

# Words after which a new clause may start (the subject of "is red" is that clause's first object).
CLAUSE_CONJUNCTIONS = _words(
    """while as but because when where whereas although though so yet since until unless
    then"""
)
# Relative pronouns: "a light that is green" binds "green" to the object just before.
RELATIVES = _words("that which who")
CONJUNCTIONS = _words("and or nor") | CLAUSE_CONJUNCTIONS | RELATIVES

PREPOSITIONS = _words(
    """on in at of with by for from to into onto over under above below behind beside besides
    between among amongst near nearby next inside outside through across along alongside
    around against past toward towards upon within without atop beneath underneath up down
    off out about like except during after before beyond via throughout amid amidst opposite
    than per including"""
)

# Copulas: an adjective after one binds to the subject ("the car is red").
COPULAS = _words(
    """is are was were be been being am 's 're looks look looked seems seem seemed appears
    appear appeared remains remain remained becomes become became stays stay"""
)
# Other auxiliaries end a noun phrase but bind nothing.
AUXILIARIES = COPULAS | _words(
    """'ve 'd 'll 'm do does did will would shall should may might must could can cannot
    not n't 't"""
)
# Modals that are also nouns ("a can of soup").
MODAL_NOUNS = _words("can cans")

ADVERBS = _words(
    """very just too also together almost only quite rather still ever even really again
    always never often once twice away back forth along ahead here now already soon
    well much more most less least slightly partly mostly nearly fully completely
    closely tightly brightly gently softly quietly slowly quickly randomly gracefully
    lazily ominously perfectly sideways upside apart alone aside overhead
    outdoors indoors upstairs downstairs underwater"""
)

# Nouns that name a place relative to something ("on top of", "at the bottom of"), never objects.
RELATION_NOUNS = _words(
    """top bottom left right side front back middle center centre corner edge rear
    foreground background midst underside inside outside end tip"""
)

# "a photo of ...": the frame around the objects, not an object.
FRAME_NOUNS = _words(
    """photo photograph photography picture pic image painting drawing illustration rendering
    render sketch portrait snapshot shot close-up closeup artwork watercolor watercolour
    poster view scene depiction print"""
)
FRAME_VERBS = _words("depicts shows features captures showing depicting featuring of")

# "a pair of shoes", "a group of friends": count the objects, are not one. Their
# attributes go to the counted noun ("a short blade of grass" -> short grass).
MEASURE_NOUNS = _words(
    """pair pairs couple group groups bunch bunches herd herds flock flocks pack packs set
    sets piece pieces slice slices blade blades lot number handful pile piles stack stacks
    row rows variety kind kinds type types sort sorts crowd swarm team array collection
    assortment cluster clusters series bit bits chunk chunks strip strips sheet sheets"""
)

# Nouns that name no drawable object ("taking their time", "in perfect harmony").
ABSTRACT_NOUNS = _words(
    """time times harmony meditation tranquility tranquillity comfort noise skills skill trick
    tricks story growth survival passage beauty innovation imagination possibilities
    possibility silence peace love life fun attention sound sounds music melody scent smell
    fragrance aroma warmth speed grace energy emotion emotions joy happiness sadness fear
    anger hope freedom moment idea ideas thought thoughts dream dreams memory memories
    feeling feelings mood atmosphere vibe style way manner contrast balance rhythm motion
    sweat effort care kindness friendship success victory purpose meaning journey
    adventure mystery wonder magic chaos order distance direction stories glow night
    daytime nighttime past future"""
)

COLORS = _words(
    """red blue green yellow white black brown pink purple orange gray grey silver gold golden
    beige tan violet cyan magenta turquoise teal navy maroon crimson scarlet lavender indigo
    ivory cream olive lime peach plum coral amber azure bronze copper khaki charcoal
    burgundy multicolored multicoloured colorful colourful"""
)
# Adjectives that are also things ("a brown orange", "a blue square"): a noun at the end
# of a phrase with a determiner or another attribute.
ADJECTIVE_NOUNS = _words(
    """orange lime olive peach plum gold silver bronze copper coral cream amber square
    squares solid solids"""
)

# Nouns that name what a thing is made of: before another noun they are its attribute
# ("a glass bowl", "a metal table": T2I-CompBench's texture words), not a compound noun.
MATERIALS = _words(
    """glass metal stone plastic leather fabric paper silk velvet marble rubber ceramic wood
    wool cotton denim linen lace steel iron gold silver brass copper bronze tin aluminum
    aluminium concrete brick clay porcelain crystal straw bamboo wicker cardboard fur felt
    suede granite"""
)
# ... except where the two words name one thing, not a thing made of something: "a paper
# towel" is no towel of paper ("a red towel" is not its contrast), nor "cotton candy" candy.
MATERIAL_COMPOUNDS = frozenset(
    tuple(compound.split("-"))
    for compound in _words(
        """paper-towel paper-towels paper-clip paper-clips tin-can tin-cans cotton-candy
        crystal-ball crystal-balls gold-fish iron-man felt-tip rubber-band rubber-bands"""
    )
)

# Adjectives that can never be a phrase's noun: with no noun after them, the phrase names
# no object ("dressed in black", "the tall, elegant giraffes" before the noun comes).
ADJECTIVES = COLORS | _words(
    """big small large little tiny huge giant enormous massive tall short long wide narrow
    thick thin fat slim high low deep shallow round square oval rectangular circular
    triangular spherical cubic conical cylindrical pyramidal pentagonal hexagonal oblong
    flat curved straight pointed old new young ancient modern antique vintage elderly
    wooden metallic fluffy furry wooly woolly
    woolen woollen silky silken velvety smooth rough soft hard shiny glossy matte dull sleek
    bright dark pale vivid bold hot cold warm cool wet dry damp clean dirty empty
    full open closed broken fresh ripe rotten raw cooked crunchy crispy sweet sour bitter
    spicy fragrant delicate intricate elegant majestic beautiful pretty ugly cute lovely
    happy sad angry calm quiet loud busy lush grassy rocky sandy snowy icy sunny cloudy
    rainy stormy foggy misty rugged jagged gnarled sheer powerful gentle strong weak heavy
    fast slow wild domestic male female solid striped spotted dotted checkered
    plaid patterned transparent translucent clear opaque golden sparkling glittering
    colored coloured multicolored chilled frozen frosty steamy juicy tasty delicious
    fancy plain simple ornate rustic cozy cosy sturdy fragile flimsy bulky
    refreshing soothing towering crumbling uninterested peaceful joyful stressed best
    italian french german chinese japanese english american mexican indian"""
)

# Words ending in -ing or -ed that are nouns, not verb forms.
ING_NOUNS = _words(
    """painting paintings building buildings clothing ceiling ceilings railing railings
    wedding evening morning ring rings string strings wing wings king kings thing things
    swing swings spring springs pudding icing frosting stuffing topping toppings sibling
    siblings duckling ducklings seedling seedlings dumpling dumplings sapling saplings
    earring earrings awning awnings bedding siding pudding stocking stockings stuffing
    drawing drawings sling ping-pong viking vikings lightning filling outing landing
    living-room dining-room parking-lot"""
)
ED_NOUNS = _words(
    "bed beds shed sheds sled sleds seed seeds bread thread steed reed weed weeds flowerbed sofabed seaweed tweed breed"
)

# Verbs that are not nouns in prompts: always end a noun phrase. Inflected forms are made
# by rule (parsing._verb_forms); irregular past forms are listed.
VERBS = _words(
    """sit stand lie lay hold carry wear eat ride walk jump swim sleep stare look read write
    talk speak chat laugh cry hang lean stretch sail drive pull push throw catch kick hit
    climb graze gallop flow contrast decorate provide keep bake pour serve display depict
    contain include have make take give bring get put perch nestle hide surround overlook
    feed hug kiss chase follow lead float grow bloom shine glow glisten drift blow loom jut
    batter stride reach nibble bend linger warm tell invite dance sing practice create
    study observe rush pace try receive feel pretend compete soak work gather fetch
    chug kneel greet offer scatter skate ski surf splash wade dive hunt roam wander explore
    stroll march cross enter exit leave arrive approach pass travel load unload fix repair
    build draw cheer shout scream yell bark roar chew bite lick sniff grab pick drop lift
    raise lower open close wash clean comb shave fold prepare mix stir chop peel grill fry
    roast celebrate balance perform sculpt knit sew dig mow rake sweep mop relax enjoy
    admire listen run fly swing paint play cook show cover fill tie dress"""
)
IRREGULAR_VERB_FORMS = _words(
    """sat stood lay lain lying laid held carried wore worn ate eaten rode ridden ran swam
    swum slept read wrote written spoke spoken hung leant leaned stretched drove driven
    threw thrown caught hit climbed grew grown shone blew blown strode strode bent told
    sang sung took taken gave given brought got gotten put hid hidden fed led fell fallen
    flew flown built drew drawn bit bitten dug swept made kept felt left went gone came
    come saw seen broke broken froze frozen wove woven shook shaken stuck struck spun
    swung thrust is has had does did says said tying dying lying sped fled slid lit sank
    sunk shot struck slept wept crept swept knelt dealt meant"""
)
# Verbs that are also nouns ("a leather watch", "a park bench"): a verb only where the
# phrase already has a noun and a new phrase or a preposition follows ("spatulas cook the eggs").
VERB_NOUNS = _words(
    """watch watches plant plants light lights sink sinks rest rests show shows cook cooks
    walk walks run runs play plays fly flies park parks stand stands fence fences face
    faces dress dresses drink drinks shower showers brush brushes hammer hammers cover
    covers frame frames case cases iron irons bat bats fish jump jumps kick kicks mark
    marks match matches point points sign signs paint paints smile smiles nap naps tie
    ties leaves place places set sets ride rides swing swings hand hands blooms line lines
    stop stops top tops train trains sail sails skate skates ski skis surf dive dives
    display displays shine float floats pose poses rock rocks land lands tee tees
    glow glows"""
)
