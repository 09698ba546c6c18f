// Keyward console: the copy button of a newly created key. Everything else works
// without script; htmx (loaded beside this file) refreshes charts and filters tables.
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source) return;
  var text = source.value !== undefined ? source.value : source.textContent;
  var done = function () {
    button.textContent = "Copied";
    button.setAttribute("aria-live", "polite");
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () {
      source.select && source.select();
    });
  } else if (source.select) {
    source.select();
    document.execCommand("copy");
    done();
  }
});
