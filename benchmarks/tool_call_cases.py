"""The cases of benchmarks/bench_tool_calls.py: 20 per category, tool schemas shaped like real APIs (free-text
strings carry no maxLength, as users write them).

Categories: ``simple`` (one tool, one call), ``multiple`` (one right tool among four), ``parallel`` (one tool,
several calls with different arguments), ``parallel_multiple`` (several tools, one call of each of several),
``irrelevance`` (tools are offered, none applies: the right answer is text).

An expected call is ``(name, {key: value})``: every listed key must be in the call's arguments; a string matches
when it is contained in the argument (case-insensitive, so "Paris" matches "Paris, France"), other values when
equal. Keys not listed are not checked.
"""

from __future__ import annotations

from typing import Any


def tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


S = {"type": "string"}


def s(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


WEATHER = tool("get_current_weather", "Get the current weather in a given location",
               {"location": s("The city, e.g. San Francisco, CA"),
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["location"])
EMAIL = tool("send_email", "Send an email",
             {"to": s("Recipient email address"), "subject": s("Subject line"), "body": s("The message"),
              "cc": {"type": "array", "items": S}}, ["to", "subject", "body"])
SEARCH = tool("search_web", "Search the web and return the top results",
              {"query": s("The search query"), "num_results": {"type": "integer", "minimum": 1, "maximum": 50}},
              ["query"])
EVENT = tool("create_calendar_event", "Create an event in the user's calendar",
             {"title": s("Event title"), "date": s("Date, YYYY-MM-DD"), "start_time": s("Start time, HH:MM"),
              "duration_minutes": {"type": "integer", "minimum": 1}, "attendees": {"type": "array", "items": S}},
             ["title", "date"])
FLIGHTS = tool("search_flights", "Search for flights between two airports or cities",
               {"origin": s("Departure city"), "destination": s("Arrival city"), "date": s("YYYY-MM-DD"),
                "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
                "cabin": {"type": "string", "enum": ["economy", "premium", "business", "first"]}},
               ["origin", "destination"])
STOCK = tool("get_stock_price", "Get the latest price of a stock", {"symbol": s("Ticker symbol, e.g. AAPL")},
             ["symbol"])
TRANSLATE = tool("translate_text", "Translate text into another language",
                 {"text": s("Text to translate"), "target_language": s("Language to translate into")},
                 ["text", "target_language"])
CURRENCY = tool("convert_currency", "Convert an amount of money from one currency to another",
                {"amount": {"type": "number"}, "from_currency": s("ISO code, e.g. USD"),
                 "to_currency": s("ISO code, e.g. EUR")}, ["amount", "from_currency", "to_currency"])
TIMER = tool("set_timer", "Start a countdown timer",
             {"minutes": {"type": "integer", "minimum": 1}, "label": s("What the timer is for")}, ["minutes"])
RESTAURANTS = tool("find_restaurants", "Find restaurants in a city",
                   {"city": S, "cuisine": s("e.g. Italian, Thai"),
                    "price": {"type": "string", "enum": ["cheap", "moderate", "expensive"]}}, ["city"])
MUSIC = tool("play_music", "Play a song", {"song": s("Song title"), "artist": s("Artist name")}, ["song"])
ISSUE = tool("create_github_issue", "Open an issue in a GitHub repository",
             {"repo": s("owner/name"), "title": S, "body": S, "labels": {"type": "array", "items": S}},
             ["repo", "title"])
DIRECTIONS = tool("get_directions", "Get directions between two places",
                  {"origin": S, "destination": S,
                   "mode": {"type": "string", "enum": ["driving", "walking", "transit", "bicycling"]}},
                  ["origin", "destination"])
REMINDER = tool("create_reminder", "Create a reminder", {"text": s("What to remember"), "time": s("When, e.g. 18:00")},
                ["text"])
LIGHTS = tool("set_lights", "Turn the lights of a room on or off",
              {"room": S, "state": {"type": "string", "enum": ["on", "off"]},
               "brightness": {"type": "integer", "minimum": 0, "maximum": 100}}, ["room", "state"])

ALL = [WEATHER, EMAIL, SEARCH, EVENT, FLIGHTS, STOCK, TRANSLATE, CURRENCY, TIMER, RESTAURANTS, MUSIC, ISSUE,
       DIRECTIONS, REMINDER, LIGHTS]


def _others(right: list[dict], count: int, seed: int) -> list[dict]:
    names = {t["function"]["name"] for t in right}
    pool = [t for t in ALL if t["function"]["name"] not in names]
    return [pool[(seed * 5 + k * 3) % len(pool)] for k in range(count)]


def _mixed(right: list[dict], total: int, seed: int) -> list[dict]:
    """The right tools among distractors, the right ones at a position that moves with the case."""
    tools = _others(right, total - len(right), seed)
    position = seed % (len(tools) + 1)
    return tools[:position] + right + tools[position:]


SIMPLE = [
    (WEATHER, "What's the weather like in Paris right now?", ("get_current_weather", {"location": "Paris"})),
    (WEATHER, "Is it hot in Cairo today? Tell me in celsius.",
     ("get_current_weather", {"location": "Cairo", "unit": "celsius"})),
    (EMAIL, "Email bob@example.com with the subject 'Lunch' and say I'm running 10 minutes late.",
     ("send_email", {"to": "bob@example.com", "subject": "Lunch"})),
    (SEARCH, "Search the web for the best hiking trails in Colorado.", ("search_web", {"query": "hiking"})),
    (EVENT, "Put 'Dentist appointment' in my calendar on 2025-03-14.",
     ("create_calendar_event", {"title": "Dentist", "date": "2025-03-14"})),
    (FLIGHTS, "Find me flights from Boston to Chicago.", ("search_flights", {"origin": "Boston", "destination": "Chicago"})),
    (STOCK, "What is Apple's stock price? The ticker is AAPL.", ("get_stock_price", {"symbol": "AAPL"})),
    (TRANSLATE, "Translate 'good morning' into Spanish.",
     ("translate_text", {"text": "good morning", "target_language": "Spanish"})),
    (CURRENCY, "Convert 100 USD to EUR.", ("convert_currency", {"amount": 100, "from_currency": "USD", "to_currency": "EUR"})),
    (TIMER, "Set a timer for 15 minutes.", ("set_timer", {"minutes": 15})),
    (RESTAURANTS, "Find Thai restaurants in Seattle.", ("find_restaurants", {"city": "Seattle", "cuisine": "Thai"})),
    (MUSIC, "Play Bohemian Rhapsody by Queen.", ("play_music", {"song": "Bohemian Rhapsody", "artist": "Queen"})),
    (ISSUE, "Open an issue in octo/app titled 'Login button broken'.",
     ("create_github_issue", {"repo": "octo/app", "title": "Login button"})),
    (DIRECTIONS, "How do I walk from the Louvre to the Eiffel Tower?",
     ("get_directions", {"origin": "Louvre", "destination": "Eiffel", "mode": "walking"})),
    (REMINDER, "Remind me to call mom at 18:00.", ("create_reminder", {"text": "mom", "time": "18:00"})),
    (LIGHTS, "Turn off the lights in the kitchen.", ("set_lights", {"room": "kitchen", "state": "off"})),
    (WEATHER, "Weather in Tokyo in fahrenheit, please.",
     ("get_current_weather", {"location": "Tokyo", "unit": "fahrenheit"})),
    (STOCK, "Check the share price of TSLA.", ("get_stock_price", {"symbol": "TSLA"})),
    (TIMER, "I need a 5 minute timer for the eggs.", ("set_timer", {"minutes": 5})),
    (LIGHTS, "Switch the bedroom lights on.", ("set_lights", {"room": "bedroom", "state": "on"})),
]

PARALLEL = [
    (WEATHER, "What's the weather in Paris and in London?",
     [("get_current_weather", {"location": "Paris"}), ("get_current_weather", {"location": "London"})]),
    (WEATHER, "Tell me the weather in Rome, Madrid and Berlin.",
     [("get_current_weather", {"location": city}) for city in ("Rome", "Madrid", "Berlin")]),
    (STOCK, "Get the stock prices of AAPL and MSFT.", [("get_stock_price", {"symbol": t}) for t in ("AAPL", "MSFT")]),
    (STOCK, "Prices for GOOG, AMZN and NVDA please.",
     [("get_stock_price", {"symbol": t}) for t in ("GOOG", "AMZN", "NVDA")]),
    (TIMER, "Set one timer for 10 minutes and another for 25 minutes.",
     [("set_timer", {"minutes": 10}), ("set_timer", {"minutes": 25})]),
    (LIGHTS, "Turn on the lights in the kitchen and in the living room.",
     [("set_lights", {"room": "kitchen", "state": "on"}), ("set_lights", {"room": "living room", "state": "on"})]),
    (TRANSLATE, "Translate 'thank you' into French and into German.",
     [("translate_text", {"text": "thank you", "target_language": lang}) for lang in ("French", "German")]),
    (CURRENCY, "Convert 50 USD to EUR and 50 USD to JPY.",
     [("convert_currency", {"amount": 50, "from_currency": "USD", "to_currency": c}) for c in ("EUR", "JPY")]),
    (SEARCH, "Search the web for 'python asyncio' and for 'rust tokio'.",
     [("search_web", {"query": "asyncio"}), ("search_web", {"query": "tokio"})]),
    (REMINDER, "Remind me to buy milk at 09:00 and to water the plants at 19:00.",
     [("create_reminder", {"text": "milk", "time": "09:00"}), ("create_reminder", {"text": "plants", "time": "19:00"})]),
    (RESTAURANTS, "Find Italian restaurants in Boston and sushi places in Denver.",
     [("find_restaurants", {"city": "Boston", "cuisine": "Italian"}),
      ("find_restaurants", {"city": "Denver", "cuisine": "sushi"})]),
    (FLIGHTS, "Look for flights from NYC to Miami and from NYC to Dallas.",
     [("search_flights", {"origin": "NYC", "destination": d}) for d in ("Miami", "Dallas")]),
    (WEATHER, "Is it raining in Oslo or in Stockholm?",
     [("get_current_weather", {"location": c}) for c in ("Oslo", "Stockholm")]),
    (MUSIC, "Play Yesterday by the Beatles, then Imagine by John Lennon.",
     [("play_music", {"song": "Yesterday"}), ("play_music", {"song": "Imagine"})]),
    (EMAIL, "Email alice@example.com and carol@example.com, subject 'Meeting', saying the meeting moved to 3pm.",
     [("send_email", {"to": a, "subject": "Meeting"}) for a in ("alice@example.com", "carol@example.com")]),
    (DIRECTIONS, "Give me driving directions from Austin to Houston and from Austin to Dallas.",
     [("get_directions", {"origin": "Austin", "destination": d, "mode": "driving"}) for d in ("Houston", "Dallas")]),
    (LIGHTS, "Turn off the lights in the garage, the hall and the office.",
     [("set_lights", {"room": r, "state": "off"}) for r in ("garage", "hall", "office")]),
    (TIMER, "Start timers for 3, 7 and 12 minutes.", [("set_timer", {"minutes": m}) for m in (3, 7, 12)]),
    (STOCK, "How are IBM and ORCL trading?", [("get_stock_price", {"symbol": t}) for t in ("IBM", "ORCL")]),
    (WEATHER, "Weather for Sydney and Melbourne in celsius.",
     [("get_current_weather", {"location": c, "unit": "celsius"}) for c in ("Sydney", "Melbourne")]),
]

PARALLEL_MULTIPLE = [
    ([WEATHER, STOCK], "What's the weather in Paris, and what is the AAPL stock price?",
     [("get_current_weather", {"location": "Paris"}), ("get_stock_price", {"symbol": "AAPL"})]),
    ([TIMER, LIGHTS], "Set a 20 minute timer and turn off the kitchen lights.",
     [("set_timer", {"minutes": 20}), ("set_lights", {"room": "kitchen", "state": "off"})]),
    ([MUSIC, LIGHTS], "Play Hey Jude and turn on the living room lights.",
     [("play_music", {"song": "Hey Jude"}), ("set_lights", {"room": "living room", "state": "on"})]),
    ([SEARCH, REMINDER], "Search the web for cheap flights to Lisbon and remind me to pack at 20:00.",
     [("search_web", {"query": "Lisbon"}), ("create_reminder", {"text": "pack", "time": "20:00"})]),
    ([CURRENCY, WEATHER], "Convert 200 EUR to USD and tell me the weather in New York.",
     [("convert_currency", {"amount": 200, "from_currency": "EUR", "to_currency": "USD"}),
      ("get_current_weather", {"location": "New York"})]),
    ([TRANSLATE, EMAIL], "Translate 'see you soon' into Italian, and email tom@example.com with subject 'Hi' saying hello.",
     [("translate_text", {"text": "see you soon", "target_language": "Italian"}),
      ("send_email", {"to": "tom@example.com", "subject": "Hi"})]),
    ([FLIGHTS, RESTAURANTS], "Find flights from Chicago to Denver and find Mexican restaurants in Denver.",
     [("search_flights", {"origin": "Chicago", "destination": "Denver"}),
      ("find_restaurants", {"city": "Denver", "cuisine": "Mexican"})]),
    ([STOCK, SEARCH], "Get the TSLA price and search the web for Tesla news.",
     [("get_stock_price", {"symbol": "TSLA"}), ("search_web", {"query": "Tesla"})]),
    ([EVENT, REMINDER], "Add 'Team offsite' to my calendar on 2025-06-02 and remind me to book a room at 10:00.",
     [("create_calendar_event", {"title": "offsite", "date": "2025-06-02"}),
      ("create_reminder", {"text": "room", "time": "10:00"})]),
    ([DIRECTIONS, WEATHER], "Directions from Berkeley to Oakland by bicycle, and the weather in Oakland.",
     [("get_directions", {"origin": "Berkeley", "destination": "Oakland", "mode": "bicycling"}),
      ("get_current_weather", {"location": "Oakland"})]),
    ([ISSUE, EMAIL], "Open an issue in acme/api titled 'Timeout on upload' and email dev@acme.com with subject 'Bug' about it.",
     [("create_github_issue", {"repo": "acme/api", "title": "Timeout"}), ("send_email", {"to": "dev@acme.com", "subject": "Bug"})]),
    ([TIMER, MUSIC], "Play Clair de Lune by Debussy and set a 30 minute timer.",
     [("play_music", {"song": "Clair de Lune"}), ("set_timer", {"minutes": 30})]),
    ([LIGHTS, WEATHER, STOCK], "Turn the bedroom lights off and check the weather in Lima.",
     [("set_lights", {"room": "bedroom", "state": "off"}), ("get_current_weather", {"location": "Lima"})]),
    ([CURRENCY, STOCK], "Convert 10 GBP to USD and get the price of NFLX.",
     [("convert_currency", {"amount": 10, "from_currency": "GBP", "to_currency": "USD"}), ("get_stock_price", {"symbol": "NFLX"})]),
    ([RESTAURANTS, DIRECTIONS], "Find cheap pizza places in Naples and give me walking directions from the station to the port.",
     [("find_restaurants", {"city": "Naples"}), ("get_directions", {"origin": "station", "destination": "port", "mode": "walking"})]),
    ([SEARCH, TRANSLATE], "Translate 'where is the library' into Japanese and search the web for Tokyo libraries.",
     [("translate_text", {"text": "library", "target_language": "Japanese"}), ("search_web", {"query": "librar"})]),
    ([WEATHER, TIMER, LIGHTS], "Weather in Dublin, a 45 minute timer, and the hall lights on.",
     [("get_current_weather", {"location": "Dublin"}), ("set_timer", {"minutes": 45}),
      ("set_lights", {"room": "hall", "state": "on"})]),
    ([REMINDER, MUSIC], "Remind me to stretch at 15:00 and play Let It Be.",
     [("create_reminder", {"text": "stretch", "time": "15:00"}), ("play_music", {"song": "Let It Be"})]),
    ([FLIGHTS, CURRENCY], "Search flights from London to Tokyo and convert 500 GBP to JPY.",
     [("search_flights", {"origin": "London", "destination": "Tokyo"}),
      ("convert_currency", {"amount": 500, "from_currency": "GBP", "to_currency": "JPY"})]),
    ([STOCK, WEATHER, EMAIL], "Get the AMZN price and the weather in Seattle.",
     [("get_stock_price", {"symbol": "AMZN"}), ("get_current_weather", {"location": "Seattle"})]),
]

IRRELEVANCE = [
    ([WEATHER, STOCK], "Tell me a joke about cats."),
    ([TIMER, LIGHTS], "Write a haiku about autumn leaves."),
    ([EMAIL, CURRENCY], "What is the square root of 144?"),
    ([FLIGHTS, MUSIC], "Explain what a black hole is in one sentence."),
    ([STOCK, REMINDER], "Hi! How are you today?"),
    ([WEATHER, DIRECTIONS], "What's a good name for a golden retriever puppy?"),
    ([TRANSLATE, TIMER], "Summarize the plot of Romeo and Juliet in two sentences."),
    ([LIGHTS, SEARCH], "What is 17 times 3?"),
    ([ISSUE, WEATHER], "Give me three tips for sleeping better."),
    ([CURRENCY, MUSIC], "Who wrote the novel Pride and Prejudice?"),
    ([EVENT, STOCK], "Write a short thank-you note to a teacher."),
    ([RESTAURANTS, TIMER], "What does the word 'ephemeral' mean?"),
    ([DIRECTIONS, EMAIL], "List the primary colors."),
    ([MUSIC, LIGHTS, TIMER], "Is a tomato a fruit or a vegetable?"),
    ([WEATHER, FLIGHTS], "Tell me a fun fact about octopuses."),
    ([STOCK, CURRENCY], "How many days are in a leap year?"),
    ([REMINDER, SEARCH, LIGHTS], "Write a limerick about a frog."),
    ([TRANSLATE, ISSUE], "What is the boiling point of water in Celsius?"),
    ([TIMER, WEATHER], "Thank you, that's all I needed!"),
    ([EMAIL, EVENT, MUSIC], "Describe the color blue to someone who cannot see."),
]

MULTIPLE = [(_mixed([tool_], 4, i), prompt, expected) for i, (tool_, prompt, expected) in enumerate(SIMPLE)]
MULTIPLE = [(tools, prompt.replace("Paris", "Vienna").replace("Boston", "Toronto"),
             (expected[0], {k: (v.replace("Paris", "Vienna").replace("Boston", "Toronto") if isinstance(v, str) else v)
                            for k, v in expected[1].items()}))
            for tools, prompt, expected in MULTIPLE]


def cases() -> dict[str, list[dict[str, Any]]]:
    """Every case as {"tools", "prompt", "expected": [(name, args), ...]} (empty: text is the right answer)."""
    return {
        "simple": [{"tools": [t], "prompt": p, "expected": [e]} for t, p, e in SIMPLE],
        "multiple": [{"tools": t, "prompt": p, "expected": [e]} for t, p, e in MULTIPLE],
        "parallel": [{"tools": [t], "prompt": p, "expected": e} for t, p, e in PARALLEL],
        "parallel_multiple": [{"tools": _mixed(t, len(t) + 1, i), "prompt": p, "expected": e}
                              for i, (t, p, e) in enumerate(PARALLEL_MULTIPLE)],
        "irrelevance": [{"tools": t, "prompt": p, "expected": []} for t, p in IRRELEVANCE],
    }
