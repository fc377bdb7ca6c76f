"""instructor in its OpenAI modes against gallama."""

from __future__ import annotations

import sys
from pathlib import Path

import instructor
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from models import Person

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.TOOLS_STRICT, instructor.Mode.JSON_SCHEMA])
def test_response_model(base_url, mode):
    client = instructor.from_openai(openai.OpenAI(base_url=base_url, api_key="test", max_retries=0), mode=mode)
    person = client.chat.completions.create(model="smol", response_model=Person, max_retries=0, max_tokens=300,
                                            temperature=0, messages=[{"role": "user", "content": "Describe a person."}])
    assert isinstance(person, Person)


def test_partial_streaming(base_url):
    client = instructor.from_openai(openai.OpenAI(base_url=base_url, api_key="test", max_retries=0),
                                    mode=instructor.Mode.TOOLS)
    partials = list(client.chat.completions.create_partial(
        model="smol", response_model=Person, max_tokens=300, max_retries=0, temperature=0,
        messages=[{"role": "user", "content": "Describe a person."}]))
    assert len(partials) > 2
    final = Person.model_validate(partials[-1].model_dump())
    assert final.name


def test_error(base_url):
    client = instructor.from_openai(openai.OpenAI(base_url=base_url, api_key="test", max_retries=0))
    with pytest.raises(Exception) as caught:
        client.chat.completions.create(model="no-such-model", response_model=Person, max_retries=0,
                                       messages=[{"role": "user", "content": "x"}])
    assert "no-such-model" in str(caught.value)
