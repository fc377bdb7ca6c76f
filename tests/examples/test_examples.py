"""The examples users start from (`examples/`), run as users run them against a real `gallama run`: the notebook
executed headless with nbclient (any cell that raises fails the test), the Streamlit chatbot driven with
Streamlit's AppTest."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).parents[2] / "examples"


def installed(distribution: str) -> bool:
    try:
        version(distribution)
        return True
    except PackageNotFoundError:
        return False


def cell_text(cell) -> str:
    return "".join(o.get("text", "") if o.get("output_type") == "stream"
                   else "".join(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))


# ------------------------------------------------------------------------------------------ the notebook


@pytest.fixture(scope="module")
def executed_notebook(examples_server, gguf, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # module scope: set the environment the kernel inherits
        mp.setenv("GALLAMA_URL", examples_server)
        mp.setenv("GALLAMA_GGUF", gguf)
        nb = nbformat.read(EXAMPLES / "Examples_Notebook.ipynb", as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path_factory.mktemp("notebook"))}}).execute()
    return nb


def test_the_notebook_is_saved_without_outputs():
    nb = nbformat.read(EXAMPLES / "Examples_Notebook.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_the_notebook_runs_top_to_bottom(executed_notebook):
    code = [c for c in executed_notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)  # every cell ran (a cell that raises stops execute())
    errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors


def test_the_notebook_prints_what_each_feature_guarantees(executed_notebook):
    out = "\n".join(cell_text(c) for c in executed_notebook.cells if c.cell_type == "code")
    # function calling: parsed arguments (json.loads) of required, named and parallel calls
    assert "tool call: get_weather arguments: {'city': " in out
    assert "tool call: get_time arguments: {'city': " in out
    # format enforcement
    assert "full match: True" in out
    assert "| starts with it: True" in out
    assert "response_format json_schema: {'name': " in out
    # several models, mixture of agents, agent APIs
    assert "smol-copy is ready" in out and "smol-copy answered:" in out
    assert "'status': 'removed', 'model': 'smol-copy'" in out
    assert "usage (every call added up):" in out
    assert "tool_use input: {'city': " in out and "function_call: get_weather {'city': " in out
    # plugin sections: run with the plugin, skipped with the server's message naming it without
    skipped = [line for line in out.splitlines() if line.startswith("Skipped, the server says:")]
    for plugin, ran in (("gallama-thinking", "</reasoning>"), ("gallama-artifact", "'tag_type': 'artifact'")):
        if installed(plugin):
            assert ran in out
        else:
            assert any(plugin in line and "not installed" in line for line in skipped), skipped
    if not installed("gallama-embed"):
        assert "Skipped: no embedding model is loaded" in out


# ------------------------------------------------------------------------------------------ the Streamlit app


def chatbot(url: str) -> AppTest:
    at = AppTest.from_file(str(EXAMPLES / "streamlit_chatbot.py"), default_timeout=300)
    at.run()
    at.text_input(key="url").set_value(url).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="model").value == "SmolLM2-135M-Instruct"
    return at


def messages(at: AppTest, name: str) -> list[str]:
    return ["\n".join([m.value for m in block.markdown] + [c.value for c in block.code])
            for block in at.chat_message if block.name == name]


def test_the_chatbot_says_when_the_server_cannot_be_reached(monkeypatch):
    monkeypatch.setenv("GALLAMA_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    at = AppTest.from_file(str(EXAMPLES / "streamlit_chatbot.py"), default_timeout=60).run()
    assert not at.exception
    assert "Cannot list the models" in at.error[0].value


def test_the_chatbot_streams_an_answer(examples_env):
    at = chatbot(examples_env)
    at.number_input(key="max_tokens").set_value(40)
    at.chat_input[0].set_value("Hi").run()
    assert not at.exception, at.exception
    assert messages(at, "user") == ["Hi"]
    answers = messages(at, "assistant")
    assert len(answers) == 1 and answers[0].strip()
    assert at.session_state["messages"][-1]["role"] == "assistant"
    at.chat_input[0].set_value("And again?").run()  # the history is kept and shown again
    assert messages(at, "user") == ["Hi", "And again?"] and len(messages(at, "assistant")) == 2


def test_the_chatbot_shows_the_tool_call(examples_env):
    at = chatbot(examples_env)
    at.checkbox(key="tool").check().run()
    at.radio(key="tool_choice").set_value("required")
    at.number_input(key="max_tokens").set_value(80)
    at.chat_input[0].set_value("What's the weather in Paris?").run()
    assert not at.exception, at.exception
    shown = "\n".join(messages(at, "assistant"))
    assert "Tool call: `get_weather`" in shown
    call = next(m for m in at.session_state["messages"] if m.get("tool_calls"))["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and "city" in json.loads(call["function"]["arguments"])
    assert messages(at, "tool") and '"sky": "sunny"' in messages(at, "tool")[0]
    assert at.session_state["messages"][-1]["role"] == "assistant"  # answered again with the result


@pytest.mark.parametrize("option, plugin", [("thinking", "gallama-thinking"), ("artifact", "gallama-artifact")])
def test_the_chatbot_plugin_options(examples_env, option, plugin):
    at = chatbot(examples_env)
    at.checkbox(key=option).check()
    at.number_input(key="max_tokens").set_value(40)
    at.chat_input[0].set_value("Hi").run()
    assert not at.exception, at.exception
    if installed(plugin):
        assert not at.warning and at.session_state["messages"][-1]["role"] == "assistant"
        if option == "thinking":
            assert at.session_state["messages"][-1]["thinking"]
    else:
        assert plugin in at.warning[0].value and "plugin the server does not have" in at.warning[0].value
