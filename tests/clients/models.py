"""Schemas the client tests share (bounded strings: SmolLM2 stops on time)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field


class Person(BaseModel):
    name: Annotated[str, Field(max_length=20)]
    age: Annotated[int, Field(ge=0, le=120)]


WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                  "required": ["city"]}


def weather(city: str) -> str:
    return f"It is sunny and 21 degrees celsius in {city}."
