// The run list's runs over time: asked for once the list has loaded, so that finding the
// dots of a filter that matches few of millions of runs never slows the list itself. The
// answer is HTML the server escaped (a redirect - to the login page - is not put in).
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", async function () {
    const box = document.getElementById("djt-list-scatter");
    if (!box) return;
    try {
      const response = await fetch(box.dataset.src, {credentials: "same-origin"});
      box.innerHTML = response.ok && !response.redirected ? await response.text() : "";
    } catch (error) {
      box.textContent = "";  // the list stays as it is
    }
  });
})();
