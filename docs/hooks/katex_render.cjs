// Typesets TeX with KaTeX for docs/hooks/katex.py. Reads [[tex, display], ...] as JSON on stdin and
// writes, in the same order, {"html": ...} or {"error": ...} for each formula as JSON on stdout.
"use strict";

const katex = require("katex");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  input += chunk;
});
process.stdin.on("end", () => {
  const results = JSON.parse(input).map(([tex, display]) => {
    try {
      // htmlAndMathml (the default): the HTML is what a reader sees, the MathML what a screen
      // reader reads. A formula KaTeX cannot parse is an error, never red TeX on the page.
      return { html: katex.renderToString(tex, { displayMode: display, throwOnError: true }) };
    } catch (error) {
      return { error: String(error.message || error) };
    }
  });
  process.stdout.write(JSON.stringify(results));
});
