// The review page. Everything from the data goes on screen through textContent, never as HTML.
"use strict";

const params = new URLSearchParams(location.search);
const reviewerQuery = params.get("reviewer") ? "?reviewer=" + encodeURIComponent(params.get("reviewer")) : "";
let state = null;
let at = 0;

const $ = (id) => document.getElementById(id);

function text(el, value) { el.textContent = value == null ? "" : String(value); }

async function load() {
  const res = await fetch("/api/state" + reviewerQuery, { cache: "no-store" });
  state = await res.json();
  text($("who"), `reviewer ${state.reviewer} · round ${state.round}` + (state.cross_check ? " · cross-check" : ""));
  const firstOpen = state.items.findIndex((item) => !state.decisions[item.image_id]);
  at = firstOpen >= 0 ? firstOpen : 0;  // resume where this reviewer stopped
  show();
}

function describe(decision) {
  if (!decision) return "none yet";
  if (decision.action === "reject") return `rejected: ${decision.reason}`;
  return `${decision.action === "edit" ? "edited" : "accepted"}: ${decision.text}`;
}

function show() {
  if ($("status").classList.contains("warn")) { text($("status"), ""); $("status").className = "muted"; }  // a warning is about the pair left
  text($("progress"), `${state.decided} / ${state.total} decided`);
  if (!state.items.length) { text($("status"), "nothing to review in this round"); return; }
  const item = state.items[at];
  text($("position"), `${at + 1} of ${state.items.length}`);
  text($("image-id"), item.image_id);
  $("image").hidden = !item.has_image;
  $("noimage").hidden = item.has_image;
  if (item.has_image) $("image").src = "/image/" + item.position;
  text($("alt"), item.alt_text);
  const others = (item.alt_texts || []).slice(1);
  $("more-alts-box").hidden = !others.length;
  $("more-alts").replaceChildren(...others.map((t) => { const li = document.createElement("li"); text(li, t); return li; }));
  showEvidence(item.evidence || {});
  text($("previous"), item.previous.text);
  const list = $("candidates");
  list.replaceChildren();
  const decision = state.decisions[item.image_id];
  item.candidates.forEach((cand, k) => {
    const li = document.createElement("li");
    const source = document.createElement("span");
    source.className = "source";
    text(source, `[${k + 1}] ${cand.source}`);
    const body = document.createElement("span");
    text(body, cand.text);
    const scores = document.createElement("span");
    scores.className = "scores";
    text(scores, Object.entries(cand.scores).map(([name, v]) => `${name} ${v}`).join(" · "));
    li.append(source, body, scores);
    if (decision && decision.caption_index === cand.index && decision.action !== "reject") li.className = "chosen";
    li.addEventListener("click", () => accept(k));
    list.append(li);
  });
  text($("decision"), describe(decision));
  closeForms();
}

function showEvidence(ev) {
  const rows = [];
  if (ev.size) rows.push(["size", `${ev.size[0]} × ${ev.size[1]} px`]);
  if (ev.labels && ev.labels.length) rows.push(["classifier", ev.labels.map((l) => l.p == null ? l.label : `${l.label} ${l.p.toFixed(2)}`).join(" · ")]);
  if (ev.ocr && ev.ocr.length) rows.push(["text in image", ev.ocr.map((t) => `"${t}"`).join(" ")]);
  if (ev.nsfw != null) rows.push(["nsfw", ev.nsfw.toFixed(2)]);
  if (ev.faces != null) rows.push(["faces", ev.faces]);
  if (!rows.length) rows.push(["", "no tags stored (run the taggers to see them here)"]);
  $("evidence").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); text(dt, k);
    const dd = document.createElement("dd"); text(dd, v);
    return [dt, dd];
  }));
}

function warn(message) {
  text($("status"), message);
  $("status").className = "muted warn";
}

function zoom(on) {
  const item = state && state.items[at];
  if (on && !(item && item.has_image)) return;
  if (on) $("zoom-image").src = $("image").src;
  $("zoom").hidden = !on;
}

async function send(body) {
  $("status").className = "muted";
  text($("status"), "saving ...");
  const res = await fetch("/api/decision" + reviewerQuery, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const answer = await res.json();
  if (!res.ok) { text($("status"), "not saved: " + answer.error); return false; }
  state.decisions[answer.decision.image_id] = answer.decision;
  state.decided = answer.decided;
  text($("status"), "saved");
  return true;
}

async function accept(k) {
  const item = state.items[at];
  const cand = item.candidates[k];
  if (!cand) {  // a key with no candidate: say so, where the eye is
    warn(`no candidate ${k + 1}: this pair has ${item.candidates.length} (press 1–${item.candidates.length}, e to edit, r to reject)`);
    return;
  }
  if (await send({ image_id: item.image_id, action: "accept", caption_index: cand.index, text: cand.text })) next();
}

function chosenCandidate(item) {
  const decision = state.decisions[item.image_id];
  const byDecision = decision && item.candidates.find((c) => c.index === decision.caption_index);
  return byDecision || item.candidates.find((c) => c.index === item.previous.index) || item.candidates[0];
}

function openEditor() {
  const item = state.items[at];
  const decision = state.decisions[item.image_id];
  const start = decision && decision.action === "edit" ? decision.text : (chosenCandidate(item) || { text: item.previous.text }).text;
  $("edit-text").value = start;
  $("editor").hidden = false;
  $("edit-text").focus();
}

async function saveEdit() {
  const item = state.items[at];
  const base = chosenCandidate(item);
  if (await send({ image_id: item.image_id, action: "edit", caption_index: base ? base.index : null, text: $("edit-text").value })) next();
}

function openRejecter() { $("rejecter").hidden = false; $("reject-reason").value = ""; $("reject-reason").focus(); }

async function saveReject() {
  const item = state.items[at];
  if (await send({ image_id: item.image_id, action: "reject", reason: $("reject-reason").value })) next();
}

function closeForms() {
  $("editor").hidden = true;
  $("rejecter").hidden = true;
  // A hidden text box can keep the focus; it would swallow the next key.
  if (document.activeElement && document.activeElement.closest("#editor, #rejecter")) document.activeElement.blur();
}

function next() { if (at < state.items.length - 1) at += 1; show(); }
function prev() { if (at > 0) at -= 1; show(); }
function nextOpen() {
  const k = state.items.findIndex((item, i) => i > at && !state.decisions[item.image_id]);
  if (k >= 0) { at = k; show(); }
}

document.addEventListener("keydown", (event) => {
  const typing = (event.target.tagName === "TEXTAREA" || event.target.tagName === "INPUT") && !event.target.closest("[hidden]");
  if (typing) {
    if (event.key === "Escape") { closeForms(); event.preventDefault(); }
    else if (event.key === "Enter" && event.ctrlKey && event.target.id === "edit-text") { saveEdit(); event.preventDefault(); }
    else if (event.key === "Enter" && event.target.id === "reject-reason") { saveReject(); event.preventDefault(); }
    return;
  }
  if (!$("zoom").hidden) { zoom(false); event.preventDefault(); return; }  // any key closes the zoom
  if (/^[1-9]$/.test(event.key)) accept(Number(event.key) - 1);
  else if (event.key === "z") { zoom(true); event.preventDefault(); }
  else if (event.key === "e") { openEditor(); event.preventDefault(); }
  else if (event.key === "r") { openRejecter(); event.preventDefault(); }
  else if (event.key === "ArrowRight" || event.key === "j") next();
  else if (event.key === "ArrowLeft" || event.key === "k") prev();
  else if (event.key === "u") nextOpen();
});

window.addEventListener("DOMContentLoaded", () => {
  $("next").addEventListener("click", next);
  $("prev").addEventListener("click", prev);
  $("edit").addEventListener("click", openEditor);
  $("reject").addEventListener("click", openRejecter);
  $("save-edit").addEventListener("click", saveEdit);
  $("cancel-edit").addEventListener("click", closeForms);
  $("save-reject").addEventListener("click", saveReject);
  $("cancel-reject").addEventListener("click", closeForms);
  $("image").addEventListener("click", () => zoom(true));
  $("zoom").addEventListener("click", () => zoom(false));
  load();
});
