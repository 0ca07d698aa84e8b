// Uploads each chosen or dropped photo on its own request, with a progress bar, then shows
// the labels the server answers. Everything is inserted as text, never as HTML.
"use strict";
(function () {
  const form = document.getElementById("upload");
  const input = document.getElementById("files");
  const drop = document.getElementById("drop");
  const results = document.getElementById("results");
  const template = document.getElementById("result");
  if (!form || !input) return;

  function show(item, answer) {
    const note = item.querySelector(".note");
    const list = item.querySelector(".tags");
    if (answer.error) {
      note.textContent = answer.error;
      note.classList.add("error");
      return;
    }
    const seconds = answer.seconds !== undefined ? " in " + Math.round(answer.seconds * 1000) + " ms" : "";
    note.textContent = answer.duplicate
      ? "Already known (duplicate content): its stored labels"
      : "Tagged" + seconds + "; stored in a few seconds";
    for (const tag of answer.tags) {
      const li = document.createElement("li");
      const name = tag.label_zh ? tag.label_zh + " (" + tag.label + ")" : tag.label;
      li.textContent = name + " — " + tag.probability.toFixed(1) + "%";
      list.appendChild(li);
    }
    const link = document.createElement("a");
    link.href = answer.page;
    link.textContent = "Open";
    note.append(" · ", link);
  }

  function send(file) {
    const item = template.content.firstElementChild.cloneNode(true);
    item.querySelector(".name").textContent = file.name;
    const thumb = item.querySelector(".thumb");
    thumb.addEventListener("error", () => { thumb.hidden = true; });  // not an image
    thumb.src = URL.createObjectURL(file);
    results.prepend(item);
    const bar = item.querySelector("progress");
    const data = new FormData();
    data.append("file", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", "/api/uploads");
    request.setRequestHeader("Accept", "application/json");
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) bar.value = (100 * event.loaded) / event.total;
    };
    request.onload = () => {
      bar.hidden = true;
      let answer;
      try { answer = JSON.parse(request.responseText); } catch (e) { answer = { error: "HTTP " + request.status }; }
      show(item, answer.uploads ? answer.uploads[0] : answer);
    };
    request.onerror = () => { bar.hidden = true; show(item, { error: "the upload failed: is tagger running?" }); };
    request.send(data);
  }

  input.addEventListener("change", () => { for (const file of input.files) send(file); input.value = ""; });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    for (const file of event.dataTransfer.files) send(file);
  });
})();
