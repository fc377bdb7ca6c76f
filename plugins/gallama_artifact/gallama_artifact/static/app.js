// gallama artifact UI: chat with the server (streaming) and show artifacts in a side panel.
// Plain JavaScript, no build step, no network access beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { history: [], artifacts: new Map(), active: null, busy: false };

// ------------------------------------------------------------------------------------ highlighting
const KEYWORDS = new Set(("False None True and as assert async await break case catch class const continue def " +
  "default del do elif else enum except export extends final finally fn for from func function go if impl " +
  "import in interface is lambda let loop match mod mut new nonlocal not null or package pass private " +
  "protected public raise return self static struct super switch this throw throws trait try type typeof " +
  "use var void while with yield int float double char boolean long short byte string bool true false " +
  "undefined print echo fi then done end begin").split(" "));
const TOKEN = new RegExp([
  String.raw`(\/\/[^\n]*|\/\*[\s\S]*?\*\/|#[^\n]*|--[^\n]*)`,                   // 1 comments
  String.raw`("(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|` + "`(?:\\\\.|[^`\\\\])*`)", // 2 strings
  String.raw`(\b\d+(?:\.\d+)?\b)`,                                              // 3 numbers
  String.raw`([A-Za-z_][A-Za-z0-9_]*)(?=\s*\()`,                                // 4 calls
  String.raw`([A-Za-z_][A-Za-z0-9_]*)`,                                         // 5 words
].join("|"), "g");

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function highlight(code, language) {
  const hashComments = /^(python|py|ruby|rb|bash|sh|shell|r|yaml|yml|perl|toml)$/i.test(language || "");
  let out = "", last = 0;
  code.replace(TOKEN, (match, com, str, num, call, word, offset) => {
    out += escapeHtml(code.slice(last, offset));
    last = offset + match.length;
    if (com !== undefined) {
      if (com.startsWith("#") && !hashComments) { out += escapeHtml(com); }
      else { out += `<span class="tok-com">${escapeHtml(com)}</span>`; }
    } else if (str !== undefined) out += `<span class="tok-str">${escapeHtml(str)}</span>`;
    else if (num !== undefined) out += `<span class="tok-num">${num}</span>`;
    else if (call !== undefined) out += KEYWORDS.has(call) ? `<span class="tok-kw">${call}</span>` : `<span class="tok-fn">${call}</span>`;
    else out += KEYWORDS.has(word) ? `<span class="tok-kw">${word}</span>` : word;
    return match;
  });
  return out + escapeHtml(code.slice(last));
}

// ------------------------------------------------------------------------------------------- panel
function renderPanel() {
  const tabs = $("tabs"), view = $("artifact-view"), panel = $("panel");
  tabs.innerHTML = "";
  panel.classList.toggle("empty", state.artifacts.size === 0);
  for (const [key, art] of state.artifacts) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = art.meta.title || art.meta.identifier;
    button.className = key === state.active ? "active" : "";
    button.onclick = () => { state.active = key; renderPanel(); };
    tabs.appendChild(button);
  }
  const art = state.artifacts.get(state.active);
  if (!art) { view.innerHTML = '<p class="muted">Artifacts appear here.</p>'; return; }
  const meta = art.meta;
  const body = meta.artifact_type === "code"
    ? `<pre><code class="language-${escapeHtml(meta.language || "")}">${highlight(art.content, meta.language)}</code></pre>`
    : `<div class="text-body">${escapeHtml(art.content)}</div>`;
  view.innerHTML = `<div class="artifact" data-identifier="${escapeHtml(meta.identifier)}" data-type="${escapeHtml(meta.artifact_type)}">
    <div class="artifact-head"><h2>${escapeHtml(meta.title || meta.identifier)}</h2>
    <span class="muted">${escapeHtml(meta.artifact_type)}${meta.language ? " · " + escapeHtml(meta.language) : ""}</span></div>
    ${body}</div>`;
}

function showArtifact(key) { state.active = key; renderPanel(); }

// -------------------------------------------------------------------------------------------- chat
function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  if (text) div.textContent = text;
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function setBusy(busy, status) {
  state.busy = busy;
  $("send").disabled = busy;
  $("status").textContent = status || "";
}

async function readError(response) {
  try { const body = await response.json(); return body.error ? body.error.message : JSON.stringify(body); }
  catch (e) { return `HTTP ${response.status}`; }
}

// Parts of the assistant message being streamed: [{meta, content, node}]
function startPart(bubble, parts, meta) {
  const part = { meta, content: "", node: null, key: null };
  if (meta.tag_type === "artifact") {
    let key = meta.identifier, n = 2;
    while (state.artifacts.has(key) && state.artifacts.get(key).done) key = `${meta.identifier} (${n++})`;
    part.key = key;
    state.artifacts.set(key, { meta, content: "", done: false });
    const card = document.createElement("span");
    card.className = "artifact-card streaming";
    card.dataset.identifier = meta.identifier;
    card.innerHTML = `<span class="kind">${escapeHtml(meta.artifact_type)}${meta.language ? " · " + escapeHtml(meta.language) : ""}</span><br><span class="title">${escapeHtml(meta.title || meta.identifier)}</span>`;
    card.onclick = () => showArtifact(key);
    bubble.appendChild(card);
    part.node = card;
    showArtifact(key);
  } else {
    const span = document.createElement("span");
    span.className = "text-part";
    bubble.appendChild(span);
    part.node = span;
  }
  parts.push(part);
  return part;
}

function sameMeta(a, b) { return a && b && JSON.stringify(a) === JSON.stringify(b); }

function assistantText(parts) {  // what the model said, in the artifact format, for the next turn
  return parts.map((p) => p.meta.tag_type === "artifact"
    ? `<artifact identifier="${p.meta.identifier}" type="${p.meta.artifact_type}" language="${p.meta.language}" title="${p.meta.title}">\n${p.content}\n</artifact>`
    : p.content).join("\n");
}

async function send(prompt) {
  state.history.push({ role: "user", content: prompt });
  addMessage("user", prompt);
  const bubble = addMessage("assistant", "");
  const parts = [];
  let current = null;
  setBusy(true, "generating…");
  const body = {
    model: $("model").value, messages: state.history, stream: true, artifact: $("mode").value,
    temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value),
  };
  if ($("prefix").value) body.leading_prompt = $("prefix").value;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(await readError(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", finished = false;
    while (!finished) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") { finished = true; break; }
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          const choice = chunk.choices && chunk.choices[0];
          if (!choice || !choice.delta) continue;
          const delta = choice.delta, meta = delta.artifact_meta;
          if (!delta.content || !meta) continue;
          if (!current || !sameMeta(current.meta, meta)) current = startPart(bubble, parts, meta);
          current.content += delta.content;
          if (current.key) {
            state.artifacts.get(current.key).content = current.content;
            if (state.active === current.key) renderPanel();
          } else {
            current.node.textContent = current.content + "\n";
          }
          bubble.scrollIntoView({ block: "end" });
        }
      }
    }
    for (const part of parts) {
      if (part.key) { state.artifacts.get(part.key).done = true; part.node.classList.remove("streaming"); }
    }
    state.history.push({ role: "assistant", content: assistantText(parts) });
    setBusy(false, "");
  } catch (error) {
    bubble.remove();
    addMessage("error", String(error.message || error));
    state.history.pop();
    setBusy(false, "");
  }
}

async function loadModels() {
  try {
    const response = await fetch("/v1/models");
    const list = await response.json();
    const select = $("model");
    for (const model of list.data.filter((m) => (m.kind || "chat") === "chat")) {
      const option = document.createElement("option");
      option.value = option.textContent = model.id;
      select.appendChild(option);
    }
    if (!select.options.length) $("status").textContent = "no chat model is loaded";
  } catch (error) {
    $("status").textContent = "could not list models: " + error;
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || state.busy) return;
  $("prompt").value = "";
  send(prompt);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});
$("clear").addEventListener("click", () => {
  state.history = []; state.artifacts.clear(); state.active = null;
  $("messages").innerHTML = ""; renderPanel();
});
loadModels();
