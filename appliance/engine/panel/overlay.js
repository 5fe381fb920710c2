// The stream overlay: the paper, read-only, styled by its address. In OBS: a browser source
// of 1920x1080 at http://NAME.local:5599/overlay?token=TOKEN (the panel shows the address).
//   size=32      the type, in pixels (it shrinks if 72 columns would not fit)
//   lines=10     how many lines show
//   ink=white    the type's colour (any CSS colour: ink=%23ffcc00 for #ffcc00)
//   shadow=black the glow that keeps it readable on any scene (shadow=transparent: none)
//   bg=transparent  a backing for the lines (bg=rgba(0,0,0,.5))
//   margin=48    pixels from the edges of the frame
//   marks=1      show which job each reply answers
"use strict";

function styleFromAddress(root, params) {
  const pixels = (name, min, max) => {
    const n = Number(params.get(name));
    if (params.has(name) && Number.isFinite(n) && n >= min && n <= max) {
      root.style.setProperty(`--${name}`, `${n}px`);
    }
  };
  pixels("size", 8, 200);
  pixels("margin", 0, 600);
  const lines = Number(params.get("lines"));
  if (Number.isInteger(lines) && lines >= 1 && lines <= 100) root.style.setProperty("--lines", lines);
  for (const [name, variable] of [["ink", "--ink"], ["shadow", "--shadow"], ["bg", "--bg"]]) {
    const colour = params.get(name);
    if (colour && CSS.supports("color", colour)) root.style.setProperty(variable, colour);
  }
  if (params.get("bg")) root.style.setProperty("--pad", ".4em .6em");
}

document.addEventListener("DOMContentLoaded", () => {
  const params = new URLSearchParams(location.search);
  styleFromAddress(document.documentElement, params);
  const sheet = document.getElementById("paper");
  sheet.classList.toggle("marks", params.get("marks") === "1");
  const token = params.get("token");
  const query = token ? `&token=${encodeURIComponent(token)}` : "";
  const paper = new PaperView(sheet, { query, keep: 120 });
  const problem = document.getElementById("problem");

  // Until the engine answers (it may be restarting, or the token is wrong): try again.
  async function begin() {
    try {
      await paper.load();
    } catch (e) {
      problem.textContent = `Teletype overlay: ${e.message}; trying again`;
      problem.hidden = false;
      setTimeout(begin, 5000);
      return;
    }
    problem.hidden = true;
    const source = paper.listen();
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) setTimeout(begin, 5000);
    };
  }
  begin();
});
