// The admin page's only script (the CSP allows no other, and no inline script): times
// shown in the reader's own time zone. Everything works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const node of document.querySelectorAll("time[datetime]")) {
    const when = new Date(node.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) {
      node.title = node.textContent;
      node.textContent = when.toLocaleString(document.documentElement.lang || undefined);
    }
  }
  const key = document.getElementById("new-key");
  if (key && window.getSelection) {
    const range = document.createRange();
    range.selectNodeContents(key);
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
  }
});
