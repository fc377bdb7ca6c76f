"""A streaming chat UI for a gallama server, with Streamlit.

    pip install streamlit openai
    gallama run                                   # in another terminal
    streamlit run examples/streamlit_chatbot.py

The sidebar holds the server URL (default: $GALLAMA_URL or http://127.0.0.1:8000), the model, sampling options, a
demo get_weather tool and the thinking-template and artifact options (these need the gallama-thinking and
gallama-artifact plugins on the server; without them the server answers 400 and the app says so).
"""

from __future__ import annotations

import json
import os

import openai
import streamlit as st

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "maxLength": 30},
                                      "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                       "required": ["city"]},
    },
}
THINKING_TEMPLATE = "brief"  # a template of gallama-thinking's library (cot, plan, brief) or an XML template
API_KEYS = {"role", "content", "tool_calls", "tool_call_id"}  # what history entries send back to the server


def get_weather(city: str, unit: str = "celsius") -> dict:
    """The demo tool: a made-up forecast."""
    return {"city": city, "temperature": 21 if unit == "celsius" else 70, "unit": unit, "sky": "sunny"}


@st.cache_data(ttl=10, show_spinner=False)
def chat_models(url: str) -> list[str]:
    cards = openai.OpenAI(base_url=url + "/v1", api_key="anything", max_retries=0, timeout=10).models.list().data
    return [m.id for m in cards if getattr(m, "kind", None) in (None, "chat")]


def stream_text(stream, calls: dict[int, dict], thinking: list[str]):
    """Yield the answer's text from a chat-completion stream; collect tool-call deltas and reasoning on the side.
    Artifact parts (gallama-artifact's ``artifact_meta``) are shown as fenced code blocks."""
    in_artifact = False
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        extra = delta.model_extra or {}
        if extra.get("reasoning_content"):
            thinking.append(extra["reasoning_content"])
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = call.id or entry["id"]
            if call.function is not None:
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
        meta = extra.get("artifact_meta") or {}
        if (meta.get("tag_type") == "artifact") != in_artifact:
            in_artifact = not in_artifact
            yield (f"\n\n**{meta.get('title') or meta.get('identifier')}**\n```{meta.get('language') or ''}\n"
                   if in_artifact else "\n```\n\n")
        if delta.content:
            yield delta.content
    if in_artifact:
        yield "\n```\n"


def show_tool_call(name: str, arguments: str) -> None:
    st.markdown(f"🛠️ Tool call: `{name}`")
    st.code(arguments, language="json")


def show_message(message: dict) -> None:
    if message["role"] == "tool":
        with st.chat_message("tool", avatar="🛠️"):
            st.markdown("Tool result")
            st.code(message["content"], language="json")
        return
    with st.chat_message(message["role"]):
        if message.get("thinking"):
            with st.expander("Thinking"):
                st.text(message["thinking"])
        if message.get("content"):
            st.markdown(message["content"])
        for call in message.get("tool_calls") or []:
            show_tool_call(call["function"]["name"], call["function"]["arguments"])


def explain_error(exc: openai.APIStatusError) -> None:
    error = exc.body if isinstance(exc.body, dict) else {}
    message = error.get("message") or str(exc)
    if error.get("code") == "plugin_not_installed":
        st.warning(f"This option needs a plugin the server does not have. The server says: {message}")
    else:
        st.error(f"The server answered {exc.status_code}: {message}")


def respond(client: openai.OpenAI, model: str, options: dict) -> None:
    """Stream the assistant's answer to the history; run the demo tool and answer again when it is called."""
    history = st.session_state.messages
    tool_choice = options.pop("tool_choice", None)
    for _ in range(3):  # a call, its result, the answer (a weak model may call once more)
        request = {"model": model, "stream": True, **options,
                   "messages": [{k: v for k, v in m.items() if k in API_KEYS} for m in history]}
        if tool_choice:
            request.update(tools=[WEATHER_TOOL], tool_choice=tool_choice)
        calls: dict[int, dict] = {}
        thinking: list[str] = []
        with st.chat_message("assistant"):
            try:
                text = st.write_stream(stream_text(client.chat.completions.create(**request), calls, thinking))
            except openai.APIStatusError as exc:
                explain_error(exc)
                return
            except openai.APIError as exc:  # connection lost, or an error event in the middle of the stream
                st.error(f"The request failed: {exc}")
                return
            if thinking:
                with st.expander("Thinking"):
                    st.text("".join(thinking))
            for call in calls.values():
                show_tool_call(call["name"], call["arguments"])
        text = text if isinstance(text, str) else ""
        message = {"role": "assistant", "content": text or (None if calls else ""),
                   "thinking": "".join(thinking) or None}
        if calls:
            message["tool_calls"] = [{"id": c["id"], "type": "function",
                                      "function": {"name": c["name"], "arguments": c["arguments"]}}
                                     for c in calls.values()]
        history.append(message)
        if not calls:
            return
        for call in message["tool_calls"]:
            try:
                result = get_weather(**json.loads(call["function"]["arguments"]))
            except (json.JSONDecodeError, TypeError) as exc:  # a call cut by max tokens
                result = {"error": f"bad arguments: {exc}"}
            history.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})
            show_message(history[-1])
        tool_choice = "none"  # now answer with the result


st.set_page_config(page_title="gallama chat", page_icon="🦙")
st.title("🦙 gallama chat")
st.session_state.setdefault("messages", [])

with st.sidebar:
    url = st.text_input("Server URL", os.environ.get("GALLAMA_URL", "http://127.0.0.1:8000"), key="url").rstrip("/")
    try:
        models = chat_models(url)
    except openai.APIError as exc:
        st.error(f"Cannot list the models of {url}: {exc}")
        st.stop()
    if not models:
        st.error(f"{url} has no chat model loaded.")
        st.stop()
    model = st.selectbox("Model", models, key="model")
    temperature = st.slider("Temperature", 0.0, 2.0, 0.7, 0.1, key="temperature")
    max_tokens = st.number_input("Max tokens", 1, 8192, 256, key="max_tokens")
    use_tool = st.checkbox("Offer a get_weather tool", key="tool")
    tool_choice = st.radio("tool_choice", ["auto", "required"], horizontal=True, key="tool_choice",
                           disabled=not use_tool)
    thinking = st.checkbox("Thinking template (gallama-thinking)", key="thinking")
    artifact = st.checkbox("Artifact mode (gallama-artifact)", key="artifact")
    if st.button("Clear the chat"):
        st.session_state.messages = []

for past in st.session_state.messages:
    show_message(past)

if prompt := st.chat_input("Ask something"):
    st.session_state.messages.append({"role": "user", "content": prompt})
    show_message(st.session_state.messages[-1])
    extra_body = {}
    if thinking:
        extra_body.update(thinking_template=THINKING_TEMPLATE, return_thinking="separate")
    if artifact:
        extra_body["artifact"] = "Fast"
    client = openai.OpenAI(base_url=url + "/v1", api_key="anything", max_retries=0)
    respond(client, model, {"temperature": temperature, "max_tokens": int(max_tokens), "extra_body": extra_body,
                            "tool_choice": tool_choice if use_tool else None})
