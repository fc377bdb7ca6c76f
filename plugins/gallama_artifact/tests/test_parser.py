"""The incremental artifact parser: any split of the text gives the same parts, tags never reach content."""

from __future__ import annotations

import pytest

from gallama_artifact.parser import ArtifactParser, parse_all

RAW = ('Quicksort sorts by partitioning.\n<artifact identifier="qs-py" type="code" language="python" '
       'title="Quicksort">\ndef qs(a):\n    return a if len(a) < 2 else a  # x < y\n</artifact>\n'
       'And a <b>story</b>:\n<artifact identifier="tale" type="self_contained_text" language="" title="A tale">'
       'Once upon a time.</artifact>\n')

EXPECTED = [
    {"artifact_meta": {"tag_type": "text"}, "content": "Quicksort sorts by partitioning."},
    {"artifact_meta": {"tag_type": "artifact", "artifact_type": "code", "identifier": "qs-py", "title": "Quicksort",
                       "language": "python"},
     "content": "def qs(a):\n    return a if len(a) < 2 else a  # x < y"},
    {"artifact_meta": {"tag_type": "text"}, "content": "And a <b>story</b>:"},
    {"artifact_meta": {"tag_type": "artifact", "artifact_type": "self_contained_text", "identifier": "tale",
                       "title": "A tale", "language": ""}, "content": "Once upon a time."},
]


def _parse_in_pieces(text: str, cuts: list[int]) -> list[dict]:
    parser = ArtifactParser()
    pieces = []
    start = 0
    for cut in [*cuts, len(text)]:
        pieces += parser.feed(text[start:cut])
        start = cut
    pieces += parser.finish()
    parts: dict[int, dict] = {}
    for piece in pieces:
        assert "<artifact" not in piece.content and "</artifact" not in piece.content, piece
        parts.setdefault(piece.part, {"artifact_meta": piece.meta, "content": ""})["content"] += piece.content
    return [parts[k] for k in sorted(parts)]


def test_whole_text():
    assert parse_all(RAW) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11])
def test_every_split_gives_the_same_parts(size):
    assert _parse_in_pieces(RAW, list(range(size, len(RAW), size))) == EXPECTED


def test_a_cut_anywhere_inside_a_tag():
    for cut in range(len(RAW)):
        assert _parse_in_pieces(RAW, [cut]) == EXPECTED, cut


def test_unterminated_artifact_is_closed_and_a_dangling_tag_dropped():
    text = 'Intro\n<artifact identifier="a" type="code" language="c" title="T">int x;'
    assert parse_all(text) == [EXPECTED[0] | {"content": "Intro"},
                               {"artifact_meta": {"tag_type": "artifact", "artifact_type": "code", "identifier": "a",
                                                  "title": "T", "language": "c"}, "content": "int x;"}]
    assert parse_all('Intro <artifact identifier="a" ty') == [{"artifact_meta": {"tag_type": "text"},
                                                               "content": "Intro"}]


def test_words_that_start_like_the_tag_are_text():
    assert parse_all("an <artifactual> word") == [{"artifact_meta": {"tag_type": "text"},
                                                   "content": "an <artifactual> word"}]


def test_grammars_compile_and_plans_become_tags():
    from gallama_core.pipeline.constraints import grammar_problem
    from gallama_artifact.grammar import fast_grammar, opening_tag, plan_grammar, planned_grammar

    assert grammar_problem(fast_grammar()) is None and grammar_problem(fast_grammar(True)) is None
    assert grammar_problem(plan_grammar(4)) is None
    plan = [{"tag_type": "text", "summary": "intro"},
            {"tag_type": "artifact", "artifact_type": "code", "identifier": "qs", "language": "python",
             "title": "Quicksort", "summary": "code"},
            {"tag_type": "artifact", "artifact_type": "weird", "identifier": "Bad Id!", "language": "c",
             "title": 'say "hi"', "summary": "more"}]
    grammar = planned_grammar(plan)
    assert grammar_problem(grammar) is None
    assert 'identifier=\\"qs\\" type=\\"code\\" language=\\"python\\" title=\\"Quicksort\\">' in grammar
    # invalid planned values fall back to valid ones, so the forced tag always parses
    assert opening_tag(plan[2]) == '<artifact identifier="artifact" type="code" language="c" title="Artifact">'
    assert parse_all(opening_tag(plan[1]) + "x</artifact>")[0]["artifact_meta"]["identifier"] == "qs"
