"""Word lists of ReVersion's steering loss: the basis of English prepositions it steers the
relation token towards (its positives), and the stop words whose tokens are never negatives.

Both are the lists the authors' code uses (``ziqihuangg/ReVersion``: 56 prepositions; the
classic English stop-word list of NLTK), as plain words: lists of English function words.
"""

from __future__ import annotations

#: ReVersion's basis of 56 English prepositions, single words.
PREPOSITIONS: tuple[str, ...] = tuple(
    """aboard about above across after against along alongside amid amidst among amongst anti
    around astride at atop before behind below beneath beside between beyond by down following
    from in including inside into near of off on onto opposite out outside over past regarding
    round through throughout to toward towards under underneath up upon versus with within""".split()
)

#: The classic English stop-word list (NLTK's, 127 words), as ReVersion excludes it from the negatives.
STOP_WORDS: tuple[str, ...] = tuple(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
    she her hers herself it its itself they them their theirs themselves what which who whom this
    that these those am is are was were be been being have has had having do does did doing a an
    the and but if or because as until while of at by for with about against between into through
    during before after above below to from up down in out on off over under again further then
    once here there when where why how all any both each few more most other some such no nor not
    only own same so than too very s t can will just don should now""".split()
)
