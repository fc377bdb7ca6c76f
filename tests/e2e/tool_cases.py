"""Tool schemas and prompts for the function-calling tests and benchmark (SmolLM2 is weak on purpose).

Free-text strings carry a maxLength: the grammar guarantees valid JSON, but a 135M model left free inside a
string can repeat itself until max_tokens cuts the call. Bounds are how a schema tells any model when to stop.
"""

from __future__ import annotations

WEATHER = {"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "maxLength": 60,
                     "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}}

EVENT = {"type": "function", "function": {
    "name": "create_event", "description": "Create a calendar event",
    "parameters": {"type": "object", "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 60},
        "location": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                    "room": {"type": "integer"}},
                     "required": ["city"]},
        "attendees": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 40}, "email": {"type": "string", "maxLength": 60}},
            "required": ["name"]}, "maxItems": 4}},
        "required": ["title", "location", "attendees"]}}}

THERMOSTAT = {"type": "function", "function": {
    "name": "set_thermostat", "description": "Set the thermostat",
    "parameters": {"type": "object", "properties": {
        "temperature": {"type": "number", "minimum": 5, "maximum": 30},
        "mode": {"type": "string", "enum": ["heat", "cool", "auto", "off"]},
        "hold_hours": {"type": "integer", "minimum": 0, "maximum": 48}},
        "required": ["temperature", "mode"]}}}

SHOPPING = {"type": "function", "function": {
    "name": "add_to_shopping_list", "description": "Add items to the shopping list",
    "parameters": {"type": "object", "properties": {
        "items": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 40}, "minItems": 1,
                  "maxItems": 6},
        "urgent": {"type": "boolean"}}, "required": ["items"]}}}

FLIGHTS = {"type": "function", "function": {
    "name": "search_flights", "description": "Search flights between two airports",
    "parameters": {"type": "object", "properties": {
        "origin": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "destination": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "date": {"type": "string", "pattern": "^2026-[0-1][0-9]-[0-3][0-9]$"},
        "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
        "cabin": {"type": "string", "enum": ["economy", "business", "first"]}},
        "required": ["origin", "destination"]}}}

TOOLS = [WEATHER, EVENT, THERMOSTAT, SHOPPING, FLIGHTS]

PROMPTS = {
    "get_current_weather": ["What's the weather like in Boston today?", "Is it raining in Paris?",
                            "How cold is it in Oslo in fahrenheit?", "Weather for Tokyo please, in celsius.",
                            "Do I need an umbrella in Seattle?", "Temperature in Cairo right now?"],
    "create_event": ["Schedule a team sync in Berlin room 4 with Ana and Bo.", "Create an event 'Launch' in Paris.",
                     "Book a dinner with Sam in Rome.", "Set up a 1:1 with Lee (lee@x.io) in London.",
                     "Plan a workshop in Madrid for Kim, Joe and Al.", "Add 'Standup' in NYC room 12, nobody invited."],
    "set_thermostat": ["Set the heating to 21 degrees.", "Cool the house to 18.", "Turn the thermostat off.",
                       "Heat to 23 for 3 hours.", "Auto mode at 20 please.", "Make it 25 degrees, cool mode."],
    "add_to_shopping_list": ["Add milk and eggs to my shopping list.", "I need bread, urgently.",
                             "Put apples, pears and plums on the list.", "Remember to buy coffee.",
                             "Shopping: rice, beans.", "Add dish soap and sponges, it's urgent."],
    "search_flights": ["Find flights from JFK to LAX.", "Flights SFO to SEA on 2026-05-03 for 2 people.",
                       "Business class from LHR to CDG.", "Any flights BOS to ORD?",
                       "Search first class MIA to ATL for 1 passenger.", "Flights from DEN to PHX on 2026-12-24."],
}
CASES = [(tool, prompt) for tool, prompts in PROMPTS.items() for prompt in prompts]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
